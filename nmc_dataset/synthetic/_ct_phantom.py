"""Known-truth CT phantoms for the shell pipeline (docs/method.md#validation: closed-loop validation).

Shells are drawn from a known :class:`~nmc_dataset.shells._model.ShellModel`, placed without
overlap (and away from the border) in a volume, voxelised (a voxel belongs to a particle when
its centre lies inside the shell) and rendered as a grey-value CT: particle and background
levels, a Gaussian point-spread blur and additive Gaussian noise. The result carries the
true labels, centres and coefficients, so a fit of the volume can be compared with the truth.

Example
-------
>>> import numpy as np
>>> from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model
>>> ph = make_ct_phantom(reference_shell_model(mean_radius_vox=6), shape=(48, 48, 48), n_particles=4,
...                      rng=np.random.default_rng(0))
>>> ph.volume.shape, ph.volume.dtype, ph.n_particles
((48, 48, 48), dtype('float32'), 4)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from nmc_dataset._util import log
from nmc_dataset.shells._harmonics import fit_coefficients, icosphere, radius, random_rotations, sh_basis
from nmc_dataset.shells._model import DegreeLaw, ShellModel

__all__ = [
    "TRUTH_KINDS",
    "CTPhantom",
    "make_ct_phantom",
    "reference_shell_model",
    "render_shells",
    "truth_coefficients",
]

#: shell populations of :func:`truth_coefficients`.
TRUTH_KINDS = ("independent", "heterogeneous", "size_roughness", "ellipsoid")


def _radii(n, rng, r_median, r_range, sigma=0.45):
    r = np.exp(np.log(r_median) + sigma * rng.standard_normal(4 * n + 16))
    r = r[(r >= r_range[0]) & (r <= r_range[1])]
    while r.size < n:
        r = np.concatenate([r, _radii(n, rng, r_median, r_range, sigma)])
    return r[:n]


def _relative_roughness(R, eps, degree, rng):
    """Coefficients ``a_lm = R · eps · (l/2)^-2 · N(0, 1)`` for l >= 2, ``0.02 R eps / 0.1`` for l = 1."""
    n = R.size
    c = np.zeros((n, (degree + 1) ** 2))
    c[:, 0] = R * np.sqrt(4 * np.pi)
    for l in range(1, degree + 1):
        amp = R * eps * ((l / 2.0) ** -2 if l >= 2 else 0.2)
        c[:, l * l : (l + 1) ** 2] = amp[:, None] * rng.standard_normal((n, 2 * l + 1))
    return c


def truth_coefficients(
    kind: str, n: int, rng: np.random.Generator, *, degree: int = 9, r_median: float = 12.0, r_range=(6.0, 40.0)
) -> np.ndarray:
    """SH coefficients (voxels) of ``n`` star-shaped shells from a known population.

    ``kind`` is one of :data:`TRUTH_KINDS`; mean radii ``R`` are log-normal (median ``r_median``,
    σ of the log 0.45) restricted to ``r_range``, except for ``independent``:

    * ``independent`` -- the paper's model: :func:`reference_shell_model` with mean radius
      ``r_median`` and σ of log a_00 0.45 (coefficients independent of each other and of size),
      ``a_00`` restricted to ``r_range``;
    * ``heterogeneous`` -- 70 % smooth particles (relative roughness ε = 0.035) and 30 % rough
      ones (ε = 0.14): ``a_lm = R ε (l/2)^-2 N(0, 1)``;
    * ``size_roughness`` -- the same spectrum with ε growing with size, 0.02 at ``r_range[0]`` to
      0.14 at ``r_range[1]``;
    * ``ellipsoid`` -- ellipsoids with semi-axes ``R (1, b, c)``, ``b, c ~ U(0.6, 1)``, randomly
      oriented, projected on degree ``degree`` (least squares on 2562 directions), plus a small
      roughness (ε = 0.02).

    Shells whose radius is not positive on 2562 directions are redrawn.

    Parameters
    ----------
    kind : str
        One of :data:`TRUTH_KINDS`.
    n : int
        Number of shells.
    rng : numpy.random.Generator
        Source of the draws.
    degree : int, default 9
        SH degree L.
    r_median : float, default 12.0
        Median mean radius (voxels).
    r_range : tuple of 2 floats, default (6.0, 40.0)
        Range of the mean radii (voxels).

    Returns
    -------
    (n, (L+1)**2) float array
        Coefficients in voxels.
    """

    if kind not in TRUTH_KINDS:
        raise ValueError(f"kind must be one of {TRUTH_KINDS}")
    if kind == "independent":
        m = reference_shell_model(r_median, degree=degree, sigma0=0.45)
        got = np.zeros((0, (degree + 1) ** 2))
        while got.shape[0] < n:  # a_00 restricted to the radius range: still independent of the rest
            c = m.sample_coefficients(2 * int(n) + 16, rng)
            R = c[:, 0] / np.sqrt(4 * np.pi)
            got = np.concatenate([got, c[(R >= r_range[0]) & (R <= r_range[1])]])
        return got[:n]
    v, _ = icosphere(4)
    B = sh_basis(degree, v)
    out = np.zeros((0, (degree + 1) ** 2))
    lo, hi = r_range
    while out.shape[0] < n:
        k = int(n - out.shape[0])
        R = _radii(k, rng, r_median, r_range)
        if kind == "heterogeneous":
            eps = np.where(rng.random(k) < 0.3, 0.14, 0.035)
            c = _relative_roughness(R, eps, degree, rng)
        elif kind == "size_roughness":
            eps = 0.02 + 0.12 * (R - lo) / (hi - lo)
            c = _relative_roughness(R, eps, degree, rng)
        else:
            axes = np.column_stack([np.ones(k), rng.uniform(0.6, 1.0, k), rng.uniform(0.6, 1.0, k)])
            axes *= (R / np.cbrt(axes.prod(axis=1)))[:, None]  # same volume as the ball of radius R
            rots = random_rotations(k, rng)
            w = np.einsum("kij,pj->kpi", rots, v)  # directions in each body frame
            r = 1.0 / np.sqrt(np.sum((w / axes[:, None, :]) ** 2, axis=-1))
            c = fit_coefficients(degree, v, r) + _relative_roughness(R, np.full(k, 0.02), degree, rng)
            c[:, 0] = fit_coefficients(degree, v, r)[:, 0]
        ok = (c @ B.T).min(axis=1) > 0.5
        out = np.concatenate([out, c[ok]])
    return out[:n]


def reference_shell_model(
    mean_radius_vox: float = 10.0,
    voxel_size_um: float = 0.128,
    degree: int = 9,
    sigma0: float = 0.08,
    df: float = 5.0,
    shape_scale: float = 0.10,
) -> ShellModel:
    """A plausible shell model with known per-degree laws (the paper's families).

    * ``a_00`` log-normal: ``mu = log(mean_radius_vox · √(4π)) − sigma0²/2`` (mean radius
      ``mean_radius_vox``), ``sigma = sigma0``;
    * ``l >= 1`` Student's t (location 0, ``df``) with scale
      ``shape_scale · mean_radius_vox · (l/2)^-2`` for ``l >= 2`` and ``0.03 · mean_radius_vox``
      for ``l = 1`` (a centred particle has little ``l = 1`` content).

    With the defaults particles have radii of about 8-12 voxels and aspect ratios of ~1.1-1.5.

    Parameters
    ----------
    mean_radius_vox : float, default 10.0
        Mean particle radius in voxels.
    voxel_size_um : float, default 0.128
        µm per voxel recorded in the model.
    degree : int, default 9
        SH degree L.
    sigma0 : float, default 0.08
        σ of ``log a_00``.
    df : float, default 5.0
        Degrees of freedom of the Student's t laws of ``l >= 1``.
    shape_scale : float, default 0.10
        Scale of the ``l >= 2`` laws relative to the mean radius at ``l = 2``.

    Returns
    -------
    ShellModel
        An ``independent`` model with ``degree + 1`` laws.
    """
    a0 = mean_radius_vox * np.sqrt(4 * np.pi)
    laws = [DegreeLaw(0, "lognormal", {"mu": float(np.log(a0) - sigma0**2 / 2), "sigma": float(sigma0)})]
    for l in range(1, degree + 1):
        scale = 0.03 * mean_radius_vox if l == 1 else shape_scale * mean_radius_vox * (l / 2.0) ** -2
        laws.append(DegreeLaw(l, "t", {"df": float(df), "scale": float(scale)}))
    return ShellModel(
        degree=degree,
        voxel_size_um=voxel_size_um,
        laws=laws,
        source={"kind": "reference_shell_model", "mean_radius_vox": mean_radius_vox},
    )


@dataclasses.dataclass
class CTPhantom:
    """A rendered phantom and its truth.

    Parameters
    ----------
    volume : ndarray (Z, Y, X)
        Grey values (float32, or uint16 when asked).
    labels : ndarray of int32 (Z, Y, X)
        True particle labels 1..n (0 background).
    coefficients : ndarray (n, K)
        True SH coefficients (voxels) about each particle's centre.
    centers_xyz : ndarray (n, 3)
        Shell centres (x, y, z) in voxel index coordinates.
    model : ShellModel
        The model the shells were drawn from.
    voxel_size_um : float
        µm per voxel recorded with the phantom.
    """

    volume: np.ndarray
    labels: np.ndarray
    coefficients: np.ndarray
    centers_xyz: np.ndarray
    model: ShellModel
    voxel_size_um: float

    @property
    def n_particles(self) -> int:
        return int(self.coefficients.shape[0])


#: σ (voxels) of the unit voxel's box filter (variance 1/12): the edge width of the partial-volume render.
_BOX_SIGMA = 1.0 / np.sqrt(12.0)


def render_shells(
    shape, coefficients: np.ndarray, centers_xyz: np.ndarray, occupancy: np.ndarray | None = None
) -> np.ndarray:
    """Label volume of star-shaped shells: voxel centre ``p`` is in shell ``i`` if ``|p−c_i| <= r_i(u)``.

    Earlier shells win where shells overlap. With ``occupancy`` the voxels' partial-volume
    fractions are written too: ``Φ((r_i(u) − |p − c_i|) / σ_box)`` with ``σ_box = 1/√12`` (the
    second moment of the unit voxel, a Gaussian stand-in for the box average), capped by what
    earlier shells left. A voxel grid's binary indicator instead moves the surface by up to half a
    voxel depending on where it falls in the grid (a staircase the blur does not remove), which
    the sub-voxel measurement would read as roughness.

    Parameters
    ----------
    shape : (Z, Y, X) tuple of int
        Volume shape in voxels.
    coefficients : (n, K) float array
        SH coefficients (voxels) of each shell about its centre.
    centers_xyz : (n, 3) float array
        Shell centres ``(x, y, z)`` in voxel index coordinates.

    occupancy : (Z, Y, X) float32 array, optional
        Zeros on entry; receives the partial-volume fractions (0..1).

    Returns
    -------
    (Z, Y, X) int32 array
        Labels ``1..n`` (shell ``i`` -> ``i + 1``), 0 = background.
    """
    labels = np.zeros(tuple(shape), dtype=np.int32)
    c = np.asarray(coefficients, dtype=np.float64)
    L = int(round(np.sqrt(c.shape[1]))) - 1
    v, _ = icosphere(4)
    rmax = (c @ sh_basis(L, v).T).max(axis=1) + 1.0
    for i, (a, ctr) in enumerate(zip(c, np.asarray(centers_xyz, dtype=np.float64))):
        lo = np.maximum(np.floor(ctr - rmax[i]).astype(int), 0)
        hi = np.minimum(np.ceil(ctr + rmax[i]).astype(int) + 1, np.array(shape)[::-1])
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.mgrid[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        rel = np.stack([xx - ctr[0], yy - ctr[1], zz - ctr[2]], axis=-1).reshape(-1, 3)
        d = np.linalg.norm(rel, axis=1)
        safe = np.where(d > 0, d, 1.0)
        dirs = np.where(d[:, None] > 0, rel / safe[:, None], np.array([0.0, 0.0, 1.0]))
        r = radius(a, dirs)  # one shell, many directions: the fused kernel (no (P, K) basis)
        inside = (d <= r).reshape(zz.shape)
        view = labels[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        view[inside & (view == 0)] = i + 1
        if occupancy is not None:
            occ = occupancy[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
            f = ndtr((r - d) / _BOX_SIGMA).reshape(zz.shape).astype(np.float32)
            occ += np.minimum(f, 1.0 - occ)
    return labels


def make_ct_phantom(
    model: ShellModel | None = None,
    *,
    coefficients: np.ndarray | None = None,
    shape=(256, 256, 256),
    n_particles: int = 300,
    rng: np.random.Generator | None = None,
    gap_vox: float = 4.0,
    border_vox: float = 4.0,
    background: float = 0.2,
    particle: float = 0.8,
    blur_sigma: float = 1.0,
    noise_sigma: float = 0.08,
    dtype: str = "float32",
    max_tries: int = 5000,
    partial_volume: bool = False,
) -> CTPhantom:
    """Draw shells from ``model``, place them without overlap and render a noisy grey CT volume.

    Parameters
    ----------
    model : ShellModel, optional
        Source of the shells (default :func:`reference_shell_model`).
    coefficients : ndarray (m, K), optional
        Use these shells instead of drawing from ``model`` (e.g. from :func:`truth_coefficients`);
        ``n_particles`` of them are placed.
    shape : (Z, Y, X)
        Volume shape in voxels.
    n_particles : int
        Shells to place; fewer are placed (with a log message) if random sequential placement
        fails ``max_tries`` times in a row.
    rng : numpy.random.Generator
        Source of the shells and placements (default: a fresh generator).
    gap_vox : float
        Minimum gap between the bounding spheres of two shells (keeps them apart after blur);
        negative values let the bounding spheres overlap, so that particles touch (the earlier,
        larger shell keeps the shared voxels).
    border_vox : float
        Minimum distance of a bounding sphere to the volume border (no shell touches it).
    background, particle : float
        Grey levels before blur and noise.
    blur_sigma : float
        Gaussian PSF σ (voxels); 0 disables.
    noise_sigma : float
        Additive Gaussian noise σ (grey units).
    dtype : {"float32", "uint16"}
        ``uint16`` maps grey value g to ``round(clip(g, 0, 1) · 65535)``.
    max_tries : int, default 5000
        Random placements tried per shell before it is given up.
    partial_volume : bool, default False
        Grey values from the voxels' partial-volume fractions (see :func:`render_shells`) instead
        of the binary labels; the labels are the same.

    Returns
    -------
    CTPhantom
        The volume and its truth.
    """
    rng = np.random.default_rng() if rng is None else rng
    shape = tuple(int(s) for s in shape)
    if coefficients is not None:
        coeffs = np.asarray(coefficients, dtype=np.float64)[: max(int(n_particles), 1)]
        degree = round(np.sqrt(coeffs.shape[1])) - 1
        if model is None:
            model = ShellModel(degree=degree, voxel_size_um=0.128, laws=[], source={"kind": "given coefficients"})
    else:
        model = reference_shell_model() if model is None else model
        coeffs = model.sample_coefficients(max(int(n_particles), 1), rng)
        degree = model.degree
    v, _ = icosphere(4)
    rmax = (coeffs @ sh_basis(degree, v).T).max(axis=1) + 0.5
    order = np.argsort(-rmax)  # big ones first: random sequential placement packs better
    size_xyz = np.array(shape[::-1], dtype=np.float64)
    centers, kept = [], []
    for i in order:
        lo = rmax[i] + border_vox
        hi = size_xyz - 1 - rmax[i] - border_vox
        if np.any(hi <= lo):
            continue
        for _ in range(max_tries):
            c = lo + rng.random(3) * (hi - lo)
            if centers:
                d = np.linalg.norm(np.asarray(centers) - c, axis=1)
                if np.any(d < rmax[kept] + rmax[i] + gap_vox):
                    continue
            centers.append(c)
            kept.append(i)
            break
    if len(kept) < n_particles:
        log.info("ct phantom: placed %d of %d shells (volume too full)", len(kept), n_particles)
    kept = np.asarray(kept, dtype=np.int64)
    coeffs = coeffs[kept]
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    if partial_volume:
        occ = np.zeros(shape, dtype=np.float32)
        labels = render_shells(shape, coeffs, centers, occupancy=occ)
        vol = (np.float32(background) + np.float32(particle - background) * occ).astype(np.float32)
    else:
        labels = render_shells(shape, coeffs, centers)
        vol = np.where(labels > 0, np.float32(particle), np.float32(background)).astype(np.float32)
    if blur_sigma > 0:
        vol = ndimage.gaussian_filter(vol, blur_sigma, output=np.float32, mode="nearest")
    if noise_sigma > 0:
        vol += rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(noise_sigma)
    if dtype == "uint16":
        vol = np.rint(np.clip(vol, 0, 1) * 65535).astype(np.uint16)
    elif dtype != "float32":
        raise ValueError("dtype must be 'float32' or 'uint16'")
    return CTPhantom(
        volume=vol,
        labels=labels,
        coefficients=coeffs,
        centers_xyz=centers,
        model=model,
        voxel_size_um=model.voxel_size_um,
    )
