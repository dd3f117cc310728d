"""Discretisation of a multi-scale particle into a grain-label volume.

Grid convention
---------------
A :class:`Grid` is a lattice anchored at the particle centre: voxel ``[k, j, i]`` (axes z, y, x)
has its centre at ``origin_um + voxel_size_um * (i, j, k)`` where ``origin_um`` (x, y, z) is an
integer multiple of the voxel size. Two volumes of one particle at the same voxel size therefore
share voxel centres, and the particle centre (the shell's star point) is always a voxel centre.

Labels: ``0`` = outside the shell, ``k`` (1..n) = the particle's ``k``-th kept grain
(``Particle.grains`` row ``k - 1``). ``uint16`` when the particle has fewer than 65535 grains,
``uint32`` otherwise.

Inside-shell test: a voxel centre ``p`` is inside iff ``|p| <= R(p / |p|)`` with ``R`` the
analytic spherical-harmonic radius function (the centre itself is inside). The fast path
(:func:`shell_mask`) decides most voxels from rigorous per-direction-bin bounds of ``R`` and
evaluates ``R`` exactly only for the few voxels near the surface; the slow twin
:func:`voxelize_reference` evaluates it at every voxel. Both give identical masks. Grain labels come from the
GBPD's exact hard labels (``nmc_dataset.tessellation._labels.hard_labels_grid``) restricted to the
inside-shell mask.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from nmc_dataset.errors import ResourceError
from nmc_dataset.shells._harmonics import icosphere, radius
from nmc_dataset.tessellation._labels import hard_labels_grid

#: Bytes per voxel at peak during :func:`voxelize` (int64 labels from the GBPD kernel, the
#: inside mask, the final uint16/uint32 volume, slab temporaries).
BYTES_PER_VOXEL = 24
#: Fixed overhead of the estimate (interpreter, libraries, seeds).
BASE_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel lattice anchored at the particle centre.

    Parameters
    ----------
    shape : tuple of int
        ``(nz, ny, nx)``.
    index_lo : tuple of 3 int
        Lattice index ``(i, j, k)`` (x, y, z) of voxel ``[0, 0, 0]``.
    voxel_size_um : float
        Edge length of a voxel in µm.
    """

    shape: tuple
    index_lo: tuple
    voxel_size_um: float

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "index_lo", tuple(int(i) for i in self.index_lo))
        object.__setattr__(self, "voxel_size_um", float(self.voxel_size_um))

    @property
    def origin_um(self) -> np.ndarray:
        """Centre of voxel ``[0, 0, 0]`` as ``(x, y, z)`` in µm."""
        return np.asarray(self.index_lo, dtype=np.float64) * self.voxel_size_um

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def axis_coords_um(self, axis: str) -> np.ndarray:
        """Voxel-centre coordinates along ``'x'``, ``'y'`` or ``'z'`` (1D, µm).

        Parameters
        ----------
        axis : {"x", "y", "z"}
            The axis.

        Returns
        -------
        (n,) float array
            Coordinates in µm, relative to the particle centre.
        """
        a = "xyz".index(axis)
        n = self.shape[2 - a]
        return (int(self.index_lo[a]) + np.arange(n, dtype=np.float64)) * self.voxel_size_um


def lattice_grid(lo_um, hi_um, voxel_size_um: float, pad: int = 2) -> Grid:
    """The smallest anchored lattice covering the box ``[lo_um, hi_um]`` plus ``pad`` voxels."""
    h = float(voxel_size_um)
    lo = np.floor(np.asarray(lo_um, dtype=np.float64) / h).astype(np.int64) - int(pad)
    hi = np.ceil(np.asarray(hi_um, dtype=np.float64) / h).astype(np.int64) + int(pad)
    n = hi - lo + 1
    return Grid(shape=(int(n[2]), int(n[1]), int(n[0])), index_lo=lo, voxel_size_um=h)


def shell_extent(coeffs_um: np.ndarray, subdivisions: int = 4):
    """Radius range and bounding box of a shell, sampled on an icosphere.

    Parameters
    ----------
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    subdivisions : int, default 4
        Icosphere subdivisions of the sampled directions (4 -> 2562).

    Returns
    -------
    rmin, rmax : float
        Smallest and largest sampled radius (µm).
    lo, hi : (3,) arrays
        Bounding box ``(x, y, z)`` of the sampled surface points.
    """

    dirs, _ = icosphere(subdivisions)
    r = np.asarray(radius(np.asarray(coeffs_um, dtype=np.float64), dirs))
    pts = dirs * r[:, None]
    return float(r.min()), float(r.max()), pts.min(axis=0), pts.max(axis=0)


def shell_grid(coeffs_um: np.ndarray, voxel_size_um: float, pad: int = 2) -> Grid:
    """The anchored lattice that encloses a shell with ``pad`` empty voxels around it.

    The sampled extent is enlarged by 2 % (the icosphere can miss a maximum between vertices).

    Parameters
    ----------
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    voxel_size_um : float
        Voxel edge length in µm.
    pad : int, default 2
        Empty voxels around the bounding box.

    Returns
    -------
    Grid
        Lattice anchored at the particle centre (lattice index 0 at the origin).
    """
    _, rmax, lo, hi = shell_extent(coeffs_um)
    slack = 0.02 * rmax
    return lattice_grid(lo - slack, hi + slack, voxel_size_um, pad)


# --------------------------------------------------------------------------- memory
def estimate_bytes(shape, n_grains: int = 0) -> int:
    """Peak memory estimate of :func:`voxelize` for a grid of ``shape`` and ``n_grains`` seeds."""
    return int(np.prod([int(s) for s in shape], dtype=np.float64) * BYTES_PER_VOXEL + BASE_BYTES + 200 * int(n_grains))


def available_bytes() -> int:
    """Physical memory available now (``/proc/meminfo`` MemAvailable, else total RAM)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30


def check_memory(shape, n_grains: int = 0, max_memory_gib: float | None = None, where=None) -> int:
    """Raise :class:`ResourceError` (estimate in GiB) if a volume would not fit; else return bytes.

    Parameters
    ----------
    shape : tuple of int
        Grid shape.
    n_grains : int
        Number of GBPD seeds involved.
    max_memory_gib : float, optional
        Limit; default 80 % of the memory available now.
    where : str, optional
        Named in the error (e.g. the option that set the voxel size).

    Returns
    -------
    int
        Estimated bytes the volume needs.
    """
    need = estimate_bytes(shape, n_grains)
    limit = 0.8 * available_bytes() if max_memory_gib is None else float(max_memory_gib) * 2**30
    if need > limit:
        shp = "x".join(str(int(s)) for s in shape)
        raise ResourceError(
            f"a {shp}-voxel volume needs about {need / 2**30:.3g} GiB but only {limit / 2**30:.3g} GiB "
            f"is allowed; use a larger voxel size (or raise the memory limit)",
            where,
        )
    return need


# --------------------------------------------------------------------------- GBPD labels on a grid
def gbpd_grid_labels(g, grid: Grid, pixel_size_um: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Hard GBPD labels (seed index, int64) of the voxel centres of ``grid``; ``-1`` outside ``mask``.

    The GBPD is in pixels of size ``pixel_size_um``; voxel centres are converted to pixels.
    Uses :func:`nmc_dataset.tessellation.hard_labels_grid` (exact, fast).

    Parameters
    ----------
    g : GBPD
        Grain tessellation in pixels.
    grid : Grid
        The voxel grid.
    pixel_size_um : float
        µm per GBPD pixel.
    mask : (Z, Y, X) bool array, optional
        Voxels to label; the others get -1.

    Returns
    -------
    (Z, Y, X) int64 array
        Seed index per voxel.
    """

    origin_px = grid.origin_um / float(pixel_size_um)
    spacing_px = grid.voxel_size_um / float(pixel_size_um)
    out = hard_labels_grid(g, grid.shape, origin=origin_px, spacing=spacing_px, mask=mask)
    return np.asarray(out, dtype=np.int64).reshape(grid.shape)


def grid_points_px(grid: Grid, pixel_size_um: float, index=None) -> np.ndarray:
    """Voxel centres ``(x, y, z)`` in pixels, for all voxels or the flat indices ``index``."""
    origin_px = grid.origin_um / float(pixel_size_um)
    spacing_px = grid.voxel_size_um / float(pixel_size_um)
    if index is None:
        index = np.arange(grid.n_voxels)
    k, j, i = np.unravel_index(index, grid.shape)
    return origin_px[None, :] + spacing_px * np.stack([i, j, k], axis=1).astype(np.float64)


# --------------------------------------------------------------------------- inside the shell
def inside_shell(coeffs_um: np.ndarray, points_um: np.ndarray) -> np.ndarray:
    """Whether points ``(x, y, z)`` (µm) lie in the star-shaped shell: ``|p| <= R(p/|p|)``.

    Parameters
    ----------
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    points_um : (n, 3) float array
        Points ``(x, y, z)`` in µm, relative to the particle centre.

    Returns
    -------
    (n,) bool array
        True inside or on the shell (the centre itself is inside).
    """

    p = np.asarray(points_um, dtype=np.float64).reshape(-1, 3)
    r = np.sqrt(np.einsum("ij,ij->i", p, p))
    out = r == 0.0
    nz = ~out
    if nz.any():
        u = p[nz] / r[nz, None]
        out[nz] = r[nz] <= np.asarray(radius(np.asarray(coeffs_um, dtype=np.float64), u))
    return out


def radius_lipschitz(coeffs_um: np.ndarray) -> float:
    """A bound ``G`` on the surface gradient of the radius function: ``|R(u) - R(v)| <= G·angle(u, v)``.

    From the addition theorem ``sum_m |grad Y_lm|^2 = l(l+1)(2l+1)/(4π)`` and Cauchy–Schwarz per
    degree: ``G = sum_l ||a_l|| sqrt(l(l+1)(2l+1)/(4π))``.
    """
    c = np.asarray(coeffs_um, dtype=np.float64)
    L = int(round(np.sqrt(len(c)))) - 1
    return float(
        sum(
            np.linalg.norm(c[l * l : (l + 1) ** 2]) * np.sqrt(l * (l + 1) * (2 * l + 1) / (4 * np.pi))
            for l in range(1, L + 1)
        )
    )


def _cubemap_centres(n: int) -> np.ndarray:
    """Unit directions of the centres of an ``n x n`` bin grid on each of the 6 cube faces.

    Face ``2*a + (sign < 0)`` is the face ``x_a = ±1``; its bin ``(i, j)`` spans the two other
    coordinates (in increasing axis order) ``[-1 + 2i/n, -1 + 2(i+1)/n] x [...]``.
    Returns ``(6, n, n, 3)``.
    """
    t = -1.0 + (np.arange(n) + 0.5) * 2.0 / n
    out = np.empty((6, n, n, 3))
    for a in range(3):
        others = [k for k in range(3) if k != a]
        for sgn in (1.0, -1.0):
            f = 2 * a + (sgn < 0)
            out[f, :, :, a] = sgn
            out[f, :, :, others[0]] = t[:, None]
            out[f, :, :, others[1]] = t[None, :]
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _cubemap_bins(p: np.ndarray, n: int) -> np.ndarray:
    """Flat bin index (into ``_cubemap_centres(n).reshape(-1, 3)``) of the directions of points ``p``."""
    ap = np.abs(p)
    a = np.argmax(ap, axis=1)
    rows = np.arange(len(p))
    m = ap[rows, a]
    m = np.where(m > 0, m, 1.0)
    face = 2 * a + (p[rows, a] < 0)
    o0 = np.where(a == 0, 1, 0)
    o1 = np.where(a == 2, 1, 2)
    u = p[rows, o0] / m
    v = p[rows, o1] / m
    i = np.clip(((u + 1.0) * 0.5 * n).astype(np.int64), 0, n - 1)
    j = np.clip(((v + 1.0) * 0.5 * n).astype(np.int64), 0, n - 1)
    return (face * n + i) * n + j


def shell_mask(coeffs_um: np.ndarray, grid: Grid, slab: int = 16, bins: int | None = None) -> np.ndarray:
    """Inside-shell mask of the voxel centres of ``grid`` (fast path, bool ``grid.shape``).

    The radius function is evaluated at the centres of cube-map direction bins; with the
    rigorous Lipschitz bound ``G`` of :func:`radius_lipschitz` and the bins' angular radius
    ``ρ``, every direction ``u`` of a bin satisfies ``|R(u) - R(centre)| <= G·ρ``. Voxels whose
    distance from the centre lies outside that interval are decided at once; only the others
    get the exact test of :func:`inside_shell` (so the result equals :func:`shell_mask_reference`
    exactly). The bin count balances bin evaluations against undecided voxels.

    Parameters
    ----------
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    grid : Grid
        The voxel grid.
    slab : int, default 16
        z-planes processed at a time (bounds the temporary memory).
    bins : int, optional
        Cube-map bins per face edge; default chosen from the shell's size, roughness and the voxel size (8..384).

    Returns
    -------
    (Z, Y, X) bool array
        Voxels whose centre lies inside the shell.
    """

    c = np.asarray(coeffs_um, dtype=np.float64)
    h = grid.voxel_size_um
    G = radius_lipschitz(c)
    r_mean = abs(c[0]) / np.sqrt(4 * np.pi)
    if bins is None:
        area = 4 * np.pi * r_mean**2
        bins = int(np.clip(round((area * max(G, 1e-12) * 2.86 / (12 * h**3)) ** (1 / 3)), 8, 384))
    n = int(bins)
    rc = np.asarray(radius(c, _cubemap_centres(n).reshape(-1, 3)))
    # angle between a direction of a bin and its centre <= chord <= planar half-diagonal sqrt(2)/n
    # (the gnomonic back-projection is 1-Lipschitz); 1.001 covers chord -> angle and rounding
    delta = G * 1.001 * np.sqrt(2.0) / n + 1e-9 * r_mean
    r_lo = rc - delta
    r_hi = rc + delta
    lo2 = np.where(r_lo > 0, r_lo, 0.0) ** 2
    hi2 = r_hi**2
    band_lo2 = float(lo2.min())
    band_hi2 = float(hi2.max())
    x = grid.axis_coords_um("x")
    y = grid.axis_coords_um("y")
    z = grid.axis_coords_um("z")
    xy2 = (y * y)[:, None] + (x * x)[None, :]
    out = np.empty(grid.shape, dtype=bool)
    for k0 in range(0, grid.shape[0], slab):
        zz = z[k0 : k0 + slab]
        r2 = (zz * zz)[:, None, None] + xy2[None]
        m = r2 < band_lo2
        band = (~m) & (r2 <= band_hi2)
        if band.any():
            kk, jj, ii = np.nonzero(band)
            pts = np.stack([x[ii], y[jj], zz[kk]], axis=1)
            rr = r2[kk, jj, ii]
            b = _cubemap_bins(pts, n)
            res = rr < lo2[b]
            undecided = (~res) & (rr <= hi2[b])
            if undecided.any():
                res[undecided] = inside_shell(c, pts[undecided])
            m[kk, jj, ii] = res
        out[k0 : k0 + slab] = m
    return out


# --------------------------------------------------------------------------- particles
def label_dtype(n_grains: int):
    """``uint16`` for fewer than 65535 grains, else ``uint32``.

    Parameters
    ----------
    n_grains : int
        Number of grains of the volume.

    Returns
    -------
    numpy dtype class
        ``numpy.uint16`` or ``numpy.uint32``.
    """
    return np.uint16 if n_grains < 65535 else np.uint32


@dataclasses.dataclass(frozen=True)
class VoxelVolume:
    """A particle's label volume.

    Parameters
    ----------
    labels : (nz, ny, nx) uint16/uint32 array
        0 outside the shell, ``k`` = kept grain ``k - 1``.
    grid : Grid
        Where the voxels are.
    particle_id : int
        Index of the particle in its run.
    orientations_wxyz : (n, 4) float array or None
        The particle's per-grain crystal orientations (row ``k - 1`` for label ``k``; see
        :class:`~nmc_dataset.particles._assemble.Particle`), carried along for the exports.
    """

    labels: np.ndarray
    grid: Grid
    particle_id: int = 0
    orientations_wxyz: np.ndarray | None = None

    @property
    def voxel_size_um(self) -> float:
        return self.grid.voxel_size_um

    @property
    def origin_um(self) -> np.ndarray:
        return self.grid.origin_um


def particle_grid(particle, voxel_size_um: float, pad: int = 2) -> Grid:
    """The lattice used to voxelise ``particle`` at ``voxel_size_um``.

    Parameters
    ----------
    particle : Particle
        The particle (its ``coeffs_um`` set the extent).
    voxel_size_um : float
        Voxel edge length in µm.
    pad : int, default 2
        Empty voxels around the shell's bounding box.

    Returns
    -------
    Grid
        As :func:`shell_grid`.
    """
    return shell_grid(particle.coeffs_um, voxel_size_um, pad)


def voxelize(particle, voxel_size_um: float, *, pad: int = 2, max_memory_gib: float | None = None) -> VoxelVolume:
    """Label volume of a particle (fast path).

    Parameters
    ----------
    particle : Particle
        From :func:`nmc_dataset.particles._assemble.make_particle` or read back from params.
    voxel_size_um : float
        Voxel edge length in µm.
    pad : int
        Empty voxels around the shell's bounding box.
    max_memory_gib : float, optional
        Refuse (``ResourceError``) if the estimate exceeds this; default 80 % of free memory.

    Returns
    -------
    VoxelVolume
        Labels 0 outside the shell, ``k`` = grain ``k``.
    """
    if not voxel_size_um > 0:
        raise ValueError("voxel_size_um must be > 0")
    grid = particle_grid(particle, voxel_size_um, pad)
    check_memory(grid.shape, particle.grains.n, max_memory_gib, where="voxel_size_um")
    mask = shell_mask(particle.coeffs_um, grid)
    lab = gbpd_grid_labels(particle.grains, grid, particle.pixel_size_um, mask)
    return VoxelVolume(
        _to_labels(lab, mask, particle.grains.n),
        grid,
        particle.particle_id,
        getattr(particle, "orientations_wxyz", None),
    )


def _to_labels(lab: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(lab.shape, dtype=label_dtype(n))
    out[mask] = (lab[mask] + 1).astype(out.dtype)
    return out


# --------------------------------------------------------------------------- fixed-size cubes
#: empty voxels around the shell in the N³ cubes
CUBE_PAD = 1


def cube_grid(coeffs_um: np.ndarray, n: int, pad: int = CUBE_PAD):
    """The N³ lattice (centred on the particle centre) that holds a shell with ``pad`` empty voxels.

    Parameters
    ----------
    coeffs_um : (K,) array
        Shell SH coefficients in µm.
    n : int
        Edge length in voxels (>= 2 * pad + 4).
    pad : int
        Empty voxels between the shell's bounding box (enlarged by 2 %) and the cube's faces.

    Returns
    -------
    Grid
        Shape ``(n, n, n)``, lattice indices ``-(n // 2) .. n - 1 - n // 2`` on every axis.
    """

    n = int(n)
    if n < 2 * pad + 4:
        raise ValueError(f"cube edge {n} too small for pad {pad}")
    _, rmax, lo, hi = shell_extent(coeffs_um)
    half = float(max(np.max(np.abs(lo)), np.max(np.abs(hi)))) + 0.02 * rmax
    lo_idx = -(n // 2)
    hi_idx = n - 1 + lo_idx  # the smaller side (odd n: equal)
    h = half / (min(-lo_idx, hi_idx) - pad)
    return Grid(shape=(n, n, n), index_lo=(lo_idx,) * 3, voxel_size_um=h)


def voxelize_cube(particle, n: int, pad: int = CUBE_PAD):
    """Label volume of ``particle`` on its fixed-shape ``n³`` cube (:func:`cube_grid`).

    Same labels as :func:`voxelize` (0 outside, ``k`` = grain
    ``k``), ``uint16`` (``uint32`` for 65535 grains or more).

    Parameters
    ----------
    particle : Particle
        The particle (shell coefficients in µm, grains in pixels).
    n : int
        Cube edge in voxels.
    pad : int, default CUBE_PAD
        Empty voxels between the shell's bounding box and the cube's faces.

    Returns
    -------
    VoxelVolume
    """

    grid = cube_grid(particle.coeffs_um, n, pad)
    mask = shell_mask(particle.coeffs_um, grid)
    lab = gbpd_grid_labels(particle.grains, grid, particle.pixel_size_um, mask)
    out = np.zeros(grid.shape, dtype=label_dtype(particle.grains.n))
    out[mask] = (lab[mask] + 1).astype(out.dtype)
    return VoxelVolume(out, grid, particle.particle_id)


# --------------------------------------------------------------------------- grain statistics
def grain_statistics(labels: np.ndarray, grid: Grid, n_grains: int) -> dict:
    """Per-grain statistics of a label volume (grains ``1..n_grains``).

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        Label volume, 0 outside the shell, ``k`` = grain ``k``.
    grid : Grid
        The grid of ``labels`` (voxel size and position in µm).
    n_grains : int
        Number of grains; labels above it are ignored.

    Returns
    -------
    dict of arrays (index ``k - 1`` for label ``k``)
        ``voxels`` (int64), ``volume_um3``, ``centroid_um`` (n, 3: x, y, z),
        ``principal_axes`` (n, 3, 3; rows are unit axes, largest second moment first),
        ``principal_sd_um`` (n, 3; standard deviations along those axes),
        ``touches_shell`` (bool: a voxel face-adjacent to the outside).
        Grains without voxels get zeros / NaN centroids.
    """
    n = int(n_grains)
    flat = labels.ravel().astype(np.int64)
    cnt = np.bincount(flat, minlength=n + 1)[1 : n + 1]
    h = grid.voxel_size_um
    x = grid.axis_coords_um("x")
    y = grid.axis_coords_um("y")
    z = grid.axis_coords_um("z")
    nz, ny, nx = grid.shape
    coords = {
        "x": np.broadcast_to(x[None, None, :], grid.shape),
        "y": np.broadcast_to(y[None, :, None], grid.shape),
        "z": np.broadcast_to(z[:, None, None], grid.shape),
    }
    sums = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for a in "xyz":
            sums[a] = np.bincount(flat, weights=coords[a].ravel(), minlength=n + 1)[1 : n + 1]
        c = np.stack([sums[a] / cnt for a in "xyz"], axis=1)
        cov = np.zeros((n, 3, 3))
        for p, a in enumerate("xyz"):
            for q, b in enumerate("xyz"):
                if q < p:
                    continue
                w = (coords[a] * coords[b]).ravel()
                s = np.bincount(flat, weights=w, minlength=n + 1)[1 : n + 1]
                cov[:, p, q] = cov[:, q, p] = s / cnt - c[:, p] * c[:, q]
    # a voxel's own second moment (h^2/12 per axis) makes single voxels non-degenerate
    cov += np.eye(3)[None] * (h * h / 12.0)
    cov[cnt == 0] = 0.0
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(-evals, axis=1)
    evals = np.take_along_axis(evals, order, axis=1)
    axes = np.take_along_axis(evecs, order[:, None, :], axis=2).transpose(0, 2, 1)
    touches = np.zeros(n + 1, dtype=bool)
    lab = labels
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        for u, v in ((a[1:], a[:-1]), (a[:-1], a[1:])):
            hit = (v == 0) & (u != 0)
            touches[np.unique(u[hit])] = True
        # grains on the grid border also touch (cannot happen with pad >= 1)
        touches[np.unique(a[0])] = True
        touches[np.unique(a[-1])] = True
    return {
        "voxels": cnt.astype(np.int64),
        "volume_um3": cnt * h**3,
        "centroid_um": c,
        "principal_axes": axes,
        "principal_sd_um": np.sqrt(np.clip(evals, 0, None)),
        "touches_shell": touches[1 : n + 1],
    }


def estimate_voxels(coeffs_um: np.ndarray, voxel_size_um: float, pad: int = 2) -> tuple:
    """Grid shape a shell would need at ``voxel_size_um`` (without allocating anything)."""
    return shell_grid(coeffs_um, voxel_size_um, pad).shape


__all__ = [
    "Grid",
    "VoxelVolume",
    "lattice_grid",
    "shell_grid",
    "shell_extent",
    "estimate_bytes",
    "check_memory",
    "gbpd_grid_labels",
    "inside_shell",
    "shell_mask",
    "voxelize",
    "grain_statistics",
    "label_dtype",
    "particle_grid",
    "estimate_voxels",
]
