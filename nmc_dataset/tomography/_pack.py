"""Electrode assembly: multi-scale particles packed without overlap into a box, plus carbon-binder.

Method
------
1. **Particles.** Particle ``k`` is drawn from ``SeedSequence(seed, spawn_key=(PACK_STREAM, k))`` with
   :func:`nmc_dataset.particles._assemble.make_particle` (shell from the shell model, grains from the
   grain model, each from its own child stream). Shells are drawn first (the same numbers
   ``make_particle`` draws) until their summed volume ``V_k = (4π/3)·mean_u R_k(u)³`` is closest to
   ``solid_fraction · L³``.
2. **Packing** ("grow and relax", a collective rearrangement in the spirit of Jodrey & Tory 1985 and
   Lubachevsky & Stillinger 1990, for star-shaped bodies): all particles start at random positions,
   scaled by ``s0 = (0.25/φ)^(1/3)``; every relaxation iteration pushes each overlapping pair apart
   along the line of centres by its overlap depth; when no pair overlaps, ``s`` grows by a step
   (halved after a failed step) until ``s = 1``. Orientations stay as drawn. The overlap depth of a
   pair is the largest penetration of one body's surface points into the other, both bodies
   described by their radius functions on a cube-map table of directions (the centre line plus
   a cap of 162 surface directions facing the partner). A skin of ``skin_vox`` voxels keeps the
   tabulated bodies apart; the voxel labels are then checked exactly (a voxel centre inside two
   shells is an overlap) and the count is reported (``overlap_voxels``; 0 without necks).
   With ``neck_um > 0`` bodies may interpenetrate up to that depth (sintered necks); voxels inside
   two shells go to the one whose surface is farther away along the radius (smaller ``|x−c|/R``).
   If the relaxation stalls (jamming) at ``s = 1`` and the fraction that relaxes clean is within
   ``shake_reach`` of the request, the packing is shaken (shrink 1 %, relax clean, regrow at half the
   step; up to 3 times). Still jammed, an :class:`~nmc_dataset.errors.InputError` names the largest
   fraction reached.
3. **Boundaries.** ``periodic=True``: the box tiles space (minimum-image contacts, labels wrap
   around). ``periodic=False``: hard walls, every particle lies entirely inside the box.
4. **Voxels.** Each particle is voxelised on the box lattice (voxel centres ``(i + ½)·h``) by the
   exact inside-shell test and the GBPD hard labels of :mod:`nmc_dataset.particles._voxelize`,
   evaluated at the particle's sub-voxel offset. Local grain ``g`` of particle ``k`` becomes the
   global grain id ``grain_offset[k] + g``. With workers, the particles are drawn and their grains
   selected while the main process packs, then voxelised and written in index order
   (:class:`_ParticlePipeline`): the same bytes as one process.
5. **Carbon-binder** (volume fraction ``f_b`` of the box, taken from the pore space):
   ``bridge``: pore voxels ordered by the gap ``w = d₁ + d₂`` between their nearest and
   second-nearest particle (radial gaps ``|x−c_k| − R_k(u)``, so the binder first fills the necks
   and narrow gaps between particles, where it sits in real electrodes); ``coating``: pore voxels
   ordered by their Euclidean distance to the active material (a uniform layer). The first
   ``round(f_b·N)`` voxels become phase 2. The rest is pore (or solid electrolyte, a label of the
   file: ``electrolyte``).
"""

from __future__ import annotations

import dataclasses
import time

import numba
import numpy as np
from scipy.spatial import cKDTree

from nmc_dataset._util import item_seed, log
from nmc_dataset.errors import InputError
from nmc_dataset.particles._assemble import make_particle
from nmc_dataset.particles._voxelize import (
    Grid,
    _cubemap_bins,
    _cubemap_centres,
    gbpd_grid_labels,
    shell_grid,
    shell_mask,
)
from nmc_dataset.shells._harmonics import icosphere, radius, sh_basis
from nmc_dataset.tomography._edt import distance_to
from nmc_dataset.tomography._fast import label_sizes

#: Stream number of ``_util.item_seed`` for the particles of a packed electrode.
PACK_STREAM = 11
#: Stream number for the packing positions.
POSITION_STREAM = 12
BINDER_MODES = ("bridge", "coating")
#: A jammed packing is trimmed (its last particles taken out) down to this much below the request.
FRACTION_TOLERANCE = 0.02
ELECTROLYTES = ("none", "liquid", "solid")
_CUBE_BINS = 48
#: the cap test runs for pairs whose centre-line gap is below this fraction of their distance
_GATE = 0.15


class OffsetGrid(Grid):
    """A :class:`Grid` shifted by a sub-voxel offset (µm, ``x, y, z``) from the anchored lattice."""

    def __init__(self, shape, index_lo, voxel_size_um, offset_um):
        super().__init__(shape, index_lo, voxel_size_um)
        object.__setattr__(self, "offset_um", np.asarray(offset_um, dtype=np.float64))

    @property
    def origin_um(self) -> np.ndarray:
        return super().origin_um + self.offset_um

    def axis_coords_um(self, axis: str) -> np.ndarray:
        return super().axis_coords_um(axis) + self.offset_um["xyz".index(axis)]


@dataclasses.dataclass
class Electrode:
    """A packed electrode volume (axes ``z, y, x``) and its particle table."""

    phase: np.ndarray
    particle: np.ndarray
    grain: np.ndarray
    table: dict
    voxel_size_um: float
    info: dict
    #: per-grain table (``id``, ``particle``, ``orientation_wxyz``; row ``g − 1`` = global grain ``g``),
    #: ``None`` when the grains have no crystal orientations
    grains: dict | None = None


# --------------------------------------------------------------------------- shapes
def _shell_children(ss: np.random.SeedSequence):
    return [np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (i,), pool_size=ss.pool_size) for i in range(2)]


def particle_seed(seed: int, k: int) -> np.random.SeedSequence:
    """SeedSequence of particle ``k`` of an electrode packed with ``seed``."""

    return item_seed(seed, k, PACK_STREAM)


def draw_shells(shell_model, seed: int, target_volume_um3: float, max_particles: int = 200_000):
    """Shell coefficients (µm) of particles ``0, 1, ...`` until their volume is closest to the target.

    Returns ``(coeffs_um (N, K), volumes_um3 (N,))``; draws the same numbers as ``make_particle``.
    """

    dirs, _ = icosphere(3)
    coeffs, vols, total = [], [], 0.0
    k = 0
    while total < target_volume_um3:
        if k >= max_particles:
            raise InputError(
                f"the box needs more than {max_particles} particles; use a smaller box or larger particles", "--box-um"
            )
        shell_ss, _ = _shell_children(particle_seed(seed, k))
        c = np.asarray(shell_model.sample_coefficients(1, np.random.default_rng(shell_ss)), np.float64).reshape(-1)
        c = c * float(shell_model.voxel_size_um)
        v = 4.0 * np.pi / 3.0 * float(np.mean(np.asarray(radius(c, dirs)) ** 3))
        coeffs.append(c)
        vols.append(v)
        total += v
        k += 1
    if len(vols) > 1 and abs(total - vols[-1] - target_volume_um3) < abs(total - target_volume_um3):
        coeffs.pop()
        vols.pop()
    return np.array(coeffs), np.array(vols)


class _Shapes:
    """Radius functions of all particles on a cube-map table of directions (µm)."""

    def __init__(self, coeffs_um: np.ndarray):

        L = round(np.sqrt(coeffs_um.shape[1])) - 1
        centres = _cubemap_centres(_CUBE_BINS).reshape(-1, 3)
        self.table = coeffs_um @ sh_basis(L, centres).T  # (N, B)
        self.caps = []  # (directions, radii): 162 for the relaxation, 642 for ``fine`` checks
        for sub in (2, 3):
            dirs = np.asarray(icosphere(sub)[0])
            self.caps.append((dirs, self.table[:, _cubemap_bins(dirs, _CUBE_BINS)]))
        self.cap_dirs, self.cap_r = self.caps[0]
        self.tmax = self.table.max(axis=1)  # largest tabulated radius (exact bound of every table lookup)
        self.rmax = self.tmax * 1.02
        # extents along +-x, +-y, +-z (for walls)
        pts = self.table[:, :, None] * centres[None]
        self.lo = pts.min(axis=1) * 1.02
        self.hi = pts.max(axis=1) * 1.02

    def head(self, m: int) -> "_Shapes":
        """The shapes of particles ``0 .. m − 1``."""
        out = object.__new__(_Shapes)
        arrays = (self.table, self.tmax, self.rmax, self.lo, self.hi)
        out.table, out.tmax, out.rmax, out.lo, out.hi = (a[:m] for a in arrays)
        out.caps = [(d, r[:m]) for d, r in self.caps]
        out.cap_dirs, out.cap_r = out.caps[0]
        return out

    def lookup(self, idx: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``R_idx(u)`` for particle indices ``idx`` (P,) and directions ``u`` (P, 3) (nearest bin)."""
        return self.table[idx, _cubemap_bins(u, _CUBE_BINS)]


@numba.njit(cache=True)
def _bin(px, py, pz, n):
    """Cube-map bin of direction ``p`` (same rule as ``voxelize._cubemap_bins``)."""
    ax, ay, az = abs(px), abs(py), abs(pz)
    if ax >= ay and ax >= az:
        m, face, u, v = ax, 0 + (px < 0), py, pz
    elif ay >= az:
        m, face, u, v = ay, 2 + (py < 0), px, pz
    else:
        m, face, u, v = az, 4 + (pz < 0), px, py
    if m <= 0:
        m = 1.0
    i = min(max(int((u / m + 1.0) * 0.5 * n), 0), n - 1)
    j = min(max(int((v / m + 1.0) * 0.5 * n), 0), n - 1)
    return (face * n + i) * n + j


@numba.njit(cache=True, parallel=True)
def _penetration_nb(table, cap_dirs, cap_r, s, pad, ii, jj, d, n, gate, tmax):
    P = len(ii)
    out = np.empty(P)
    C = cap_dirs.shape[0]
    for p in numba.prange(P):  # pairs are independent: the same result for any thread count
        dist = np.sqrt(d[p, 0] ** 2 + d[p, 1] ** 2 + d[p, 2] ** 2)
        ux, uy, uz = d[p, 0] / dist, d[p, 1] / dist, d[p, 2] / dist
        depth = s * table[ii[p], _bin(ux, uy, uz, n)] + s * table[jj[p], _bin(-ux, -uy, -uz, n)] + 2 * pad - dist
        if depth < -gate * dist:  # far from contact along the centre line: no cap can reach
            out[p] = depth
            continue
        for side in range(2):
            a, b, sg = (ii[p], jj[p], 1.0) if side == 0 else (jj[p], ii[p], -1.0)
            for c in range(C):
                ex, ey, ez = cap_dirs[c, 0], cap_dirs[c, 1], cap_dirs[c, 2]
                if (ex * ux + ey * uy + ez * uz) * sg <= 0.3:
                    continue
                ra = s * cap_r[a, c] + pad
                qx, qy, qz = ra * ex - sg * d[p, 0], ra * ey - sg * d[p, 1], ra * ez - sg * d[p, 2]
                r = np.sqrt(qx * qx + qy * qy + qz * qz)
                if s * tmax[b] + pad - r <= depth:  # not even b's largest radius reaches: max unchanged
                    continue
                pen = s * table[b, _bin(qx, qy, qz, n)] + pad - r
                depth = max(depth, pen)
        out[p] = depth
    return out


def _penetration(sh: _Shapes, s: float, pad: float, i, j, d, fine: bool = False):
    """Overlap depth (µm) of bodies ``i`` and ``j`` (scaled by ``s``, inflated by ``pad``); ``d = c_j − c_i``.

    The largest of: the centre-line overlap ``s·R_i(u) + s·R_j(−u) + 2·pad − |d|`` and the
    penetration of each body's surface points (the 162-direction cap facing the partner) into
    the other body (642 directions with ``fine``).
    """
    cap_dirs, cap_r = sh.caps[int(fine)]
    depth = _penetration_nb(
        sh.table,
        cap_dirs,
        cap_r,
        float(s),
        float(pad),
        i.astype(np.int64),
        j.astype(np.int64),
        np.ascontiguousarray(d, dtype=np.float64),
        _CUBE_BINS,
        _GATE,
        sh.tmax,
    )
    u = d / np.maximum(np.linalg.norm(d, axis=1), 1e-12)[:, None]
    return depth, u


def _penetration_reference(sh: _Shapes, s: float, pad: float, i, j, d):
    """Slow twin of :func:`_penetration` (numpy, the same rule)."""
    dist = np.linalg.norm(d, axis=1)
    u = d / np.maximum(dist, 1e-12)[:, None]
    depth = s * sh.lookup(i, u) + s * sh.lookup(j, -u) + 2 * pad - dist
    near = depth >= -_GATE * dist
    line = depth.copy()
    e = sh.cap_dirs[None, :, :]
    for a, b, sign in ((i, j, 1.0), (j, i, -1.0)):
        facing = (e @ (sign * u)[:, :, None])[..., 0] > 0.3
        pts = (s * sh.cap_r[a] + pad)[:, :, None] * e - (sign * d)[:, None, :]
        r = np.linalg.norm(pts, axis=2)
        rb = s * sh.table[np.repeat(b, e.shape[1]), _cubemap_bins(pts.reshape(-1, 3), _CUBE_BINS)].reshape(r.shape)
        depth = np.maximum(depth, np.where(facing, rb + pad - r, -np.inf).max(axis=1))
    return np.where(near, depth, line), u


_SHIFTS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])


def _other_images(i, j, d, reach, L):
    """Add the pairs' other periodic images within ``reach`` (a box narrower than two particles
    lets one pair touch through two images; the minimum image alone would miss the second)."""
    dd = d[:, None, :] + L * _SHIFTS[None, :, :]
    p, t = np.nonzero(np.linalg.norm(dd, axis=2) < reach[:, None])
    return (
        np.concatenate([i, i[p]]),
        np.concatenate([j, j[p]]),
        np.concatenate([d, dd[p, t]]),
        np.concatenate([reach, reach[p]]),
    )


def _relax(x, sh, s, L, periodic, pad, max_iter, rng, tol=0.0, fine=False, extra=None):
    """Push overlapping pairs apart until no depth exceeds ``tol``; returns (converged, iterations, max depth).

    ``extra``: ``(keys, values)``, sorted pair keys ``i·N + j`` (``i < j``) and the extra separation
    (µm) each of those pairs must keep (added to its overlap depth; from the exact voxel check).
    """

    n = len(x)
    depth_max = np.inf
    e_max = float(extra[1].max()) if extra is not None and len(extra[0]) else 0.0
    cut = 2 * s * sh.rmax.max() + 2 * pad + e_max
    jitter = 1e-3 * s * sh.rmax.mean()
    push_extra = 3e-3 * s * sh.rmax.mean()  # separate a little beyond contact: fewer re-overlaps
    pairs, since = None, 0
    for it in range(max_iter):
        if periodic:
            x %= L
        if pairs is None or since >= 10:  # neighbour list with a margin, rebuilt every 10 iterations
            tree = cKDTree(x, boxsize=L) if periodic else cKDTree(np.clip(x, 0, L))
            pairs = tree.query_pairs(cut * 1.15, output_type="ndarray")
            since = 0
        since += 1
        move = np.zeros_like(x)
        depth_max = 0.0
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            d = x[j] - x[i]
            if periodic:
                d -= L * np.round(d / L)
            reach = s * (sh.rmax[i] + sh.rmax[j]) + 2 * pad + e_max
            if periodic and L < 2 * reach.max():
                i, j, d, reach = _other_images(i, j, d, reach, L)
            keep = np.linalg.norm(d, axis=1) < reach
            i, j, d = i[keep], j[keep], d[keep]
            if len(i):
                depth, u = _penetration(sh, s, pad, i, j, d, fine)
                if e_max > 0:
                    depth += _pair_values(extra, i * n + j)
                hit = depth > tol
                if hit.any():
                    depth_max = float(depth[hit].max())
                    hit = depth > 0
                    step = (0.5 * depth[hit] + push_extra)[:, None] * u[hit]
                    np.add.at(move, i[hit], -step)
                    np.add.at(move, j[hit], step)
        if not periodic:
            lo = x + s * sh.lo - pad
            hi = x + s * sh.hi + pad
            push = np.where(lo < 0, -lo, 0.0) + np.where(hi > L, L - hi, 0.0)
            wall = float(np.abs(push).max()) if n else 0.0
            if wall > tol:
                depth_max = max(depth_max, wall)
            move += push
        if depth_max <= tol:
            return True, it, depth_max
        moving = (np.abs(move).sum(axis=1) > 0)[:, None]
        x += move + rng.normal(0, jitter, x.shape) * moving  # jitter breaks symmetric deadlocks
    return False, max_iter, depth_max


def pack_centres(
    coeffs_um: np.ndarray,
    box_um: float,
    *,
    periodic: bool,
    pad_um: float,
    rng,
    grow_iter: int = 100,
    final_iter: int = 3000,
    growth: float = 0.005,
    shakes: int = 3,
    shake_shrink: float = 0.01,
    shake_reach: float = 0.04,
    min_fraction: float | None = None,
):
    """Positions (µm, ``x, y, z``) of particles packed without overlap (see module docs).

    Growth steps of ``growth`` (relative size) each relax for at most ``grow_iter`` iterations down
    to a residual overlap of 1 % of the mean radius; at full size the relaxation runs to zero
    overlap (``final_iter``). If that fails (jamming), up to ``shakes`` times the bodies shrink by
    ``shake_shrink`` (relative size), relax to zero overlap there and grow again with half the
    previous step; only when the fraction relaxed clean from the jammed state is within
    ``shake_reach`` of the request (further away a shake cannot bridge the gap and the error comes
    at once). Still jammed (and within that reach) with ``min_fraction`` given, the last particles (highest indices) are
    taken out of the jammed packing one at a time, each time relaxing the rest, while the remaining
    particles' fraction stays ``>= min_fraction`` (a jammed packing relaxes into the room a
    particle leaves). Returns ``(centres (M, 3),
    stats)`` of the first ``M <= N`` particles (``stats["trimmed"] = N − M``); raises
    :class:`InputError` when the packing still jams, naming the largest fraction that was reached
    without overlap.
    """
    sh = _Shapes(coeffs_um)
    n = len(coeffs_um)
    L = float(box_um)
    vols = 4 * np.pi / 3 * np.mean(sh.table**3, axis=1)
    phi = vols.sum() / L**3
    s = min(1.0, (0.25 / phi) ** (1 / 3))
    x = rng.uniform(0, L, (n, 3))
    if not periodic:
        x = np.clip(x, -s * sh.lo.min(axis=0) + pad_um, L - s * sh.hi.max(axis=0) - pad_um)
    ok, its, _ = _relax(x, sh, s, L, periodic, pad_um, final_iter, rng)
    if not ok:
        raise InputError(
            f"could not place the particles even at fraction {phi * s**3:.3f}; the box is too small for them",
            "--box-um",
        )
    total_its, steps = its, 0
    s_clean = s
    rmean = float(sh.rmax.mean())

    def grow(s, step):
        # grow from size s to full size by factors (1 + step), relaxing loosely at each, then strictly
        nonlocal total_its, steps
        while s < 1.0:
            steps += 1
            s = min(1.0, s * (1 + step))
            _, its, _ = _relax(x, sh, s, L, periodic, pad_um, grow_iter, rng, tol=0.01 * rmean * s)
            total_its += its
        # at full size the contact test uses the fine cap (642 directions): the coarse one misses
        # contacts between its directions, which the exact voxel check would then have to separate
        ok, its, _ = _relax(x, sh, 1.0, L, periodic, pad_um, final_iter, rng, fine=True)
        total_its += its
        return ok

    ok = grow(s, growth)
    n_shakes = 0

    def largest_clean(lo):
        # bisect the largest size that relaxes to zero overlap from here (at least ``lo``)
        hi = 1.0
        for _ in range(6):
            mid = 0.5 * (lo + hi)
            clean, _, _ = _relax(x.copy(), sh, mid, L, periodic, pad_um, final_iter // 4, rng, fine=True)
            lo, hi = (mid, hi) if clean else (lo, mid)
        return lo

    if not ok:
        s_clean = largest_clean(s_clean)
        # shaking gains a few hundredths of the fraction near jamming; far beyond, report at once
        near = phi * (1.0 - s_clean**3) <= shake_reach
        while not ok and near and n_shakes < shakes:
            # shake: step back to a size that relaxes clean, then grow again more slowly, so that the
            # bodies rearrange collectively instead of locking into the first jammed arrangement
            n_shakes += 1
            s = 1.0 - shake_shrink
            clean, its, _ = _relax(x, sh, s, L, periodic, pad_um, final_iter, rng, fine=True)
            total_its += its
            if clean:
                s_clean = max(s_clean, s)
            ok = grow(s, growth / 2**n_shakes)
        m = n
        while not ok and near and min_fraction is not None and m > 1 and vols[: m - 1].sum() / L**3 >= min_fraction:
            # trim: the jammed packing relaxes into the room the last particle leaves
            m -= 1
            ok, its, _ = _relax(x[:m], sh.head(m), 1.0, L, periodic, pad_um, final_iter // 3, rng, fine=True)
            total_its += its
        if ok:
            x = x[:m]
        else:
            if n_shakes:
                s_clean = largest_clean(s_clean)
            raise InputError(
                f"the requested active fraction {phi:.3f} is not reachable: the packing jammed, the "
                f"maximum reached without overlap is {phi * s_clean**3:.3f}",
                "--solid-fraction",
            )
    return x % L if periodic else x, {
        "relax_iterations": int(total_its),
        "growth_steps": int(steps),
        "shakes": int(n_shakes),
        "trimmed": int(n - len(x)),
        "analytic_fraction": float(vols[: len(x)].sum() / L**3),
    }


# --------------------------------------------------------------------------- exact voxel check
def _pair_values(extra, keys):
    """Values of ``extra = (sorted keys, values)`` at ``keys`` (0 where a key is absent)."""
    k, v = extra
    if not len(k):
        return np.zeros(len(keys))
    pos = np.minimum(np.searchsorted(k, keys), len(k) - 1)
    return np.where(k[pos] == keys, v[pos], 0.0)


def _shell_block(coeffs_um, centre_um, h):
    """Exact inside-shell mask of a shell centred at ``centre_um`` on the box lattice.

    Returns ``(mask (z, y, x) bool, start, grid)``: ``start`` is the box index (x, y, z) of local
    voxel ``[0, 0, 0]`` (unwrapped), ``grid`` the particle-centred lattice at the sub-voxel offset.
    The same lattice and test as :func:`_voxelize_at`, so its mask is the particle's voxels.
    """
    g0 = shell_grid(coeffs_um, h, pad=3)
    c_idx = np.floor(np.asarray(centre_um) / h - 0.5 + 0.5).astype(np.int64)  # nearest box voxel (x, y, z)
    offset = (c_idx + 0.5) * h - np.asarray(centre_um)
    grid = OffsetGrid(g0.shape, g0.index_lo, h, offset)
    return shell_mask(coeffs_um, grid), c_idx + np.asarray(g0.index_lo), grid


def _shell_block_task(args):
    """Worker: :func:`_shell_block`."""
    return _shell_block(*args)


def _radial_depth(coeffs_um, grid, local_zyx):
    """``R(u) − |x − c|`` (µm, exact SH radius) at local voxels ``(k, j, i)`` of a particle's lattice."""
    kk, jj, ii = local_zyx
    pts = np.stack([grid.axis_coords_um("x")[ii], grid.axis_coords_um("y")[jj], grid.axis_coords_um("z")[kk]], 1)
    r = np.linalg.norm(pts, axis=1)
    u = pts / np.maximum(r, 1e-12)[:, None]
    return np.asarray(radius(coeffs_um, u)).reshape(-1) - r


def voxel_contacts(coeffs_um, blocks, n, periodic, pairs=None):
    """Pairs of particles whose voxels share a voxel centre, with their depth there.

    Parameters
    ----------
    coeffs_um : (N, K) float array
        Shell coefficients (µm).
    blocks : list of (mask, start, grid)
        Each particle's exact voxels on the box lattice (:func:`_shell_block`).
    n : int
        Box edge in voxels.
    periodic : bool
        Periodic box (blocks meet across the faces).
    pairs : (P, 2) int array, optional
        Candidate pairs (default: every pair whose blocks overlap).

    Returns
    -------
    dict
        ``(i, j) -> (voxels, depth_um)`` for ``i < j`` with at least one shared voxel centre:
        the number of shared voxels and the largest neck depth over them,
        ``max_x (R_i(u_i) − |x − c_i|) + (R_j(u_j) − |x − c_j|)`` (the thickness of the lens the two
        shells share, measured along the radii; ≈ the interpenetration depth of the surfaces).
    """
    starts = np.array([b[1] for b in blocks], dtype=np.int64)
    shapes = np.array([b[0].shape[::-1] for b in blocks], dtype=np.int64)  # x, y, z
    if pairs is None:
        ctr = starts + shapes / 2.0
        half = shapes.max() / 2.0
        tree = cKDTree(ctr % n, boxsize=n) if periodic else cKDTree(ctr)
        pairs = tree.query_pairs(2 * half * np.sqrt(3) + 1, output_type="ndarray")
    shifts = (-n, 0, n) if periodic else (0,)
    out = {}
    for i, j in pairs:
        i, j = (int(i), int(j)) if i < j else (int(j), int(i))
        mi, si, gi = blocks[i]
        mj, sj, gj = blocks[j]
        per_axis = []
        for a in range(3):
            opts = []
            for t in shifts:
                lo = max(si[a], sj[a] + t)
                hi = min(si[a] + shapes[i, a], sj[a] + t + shapes[j, a])
                if hi > lo:
                    opts.append((lo, hi, t))
            if not opts:
                break
            per_axis.append(opts)
        if len(per_axis) < 3:
            continue
        count, depth = 0, -np.inf
        for ox in per_axis[0]:
            for oy in per_axis[1]:
                for oz in per_axis[2]:
                    box = (oz, oy, ox)  # z, y, x
                    ai = tuple(slice(b[0] - si[2 - q], b[1] - si[2 - q]) for q, b in enumerate(box))
                    aj = tuple(slice(b[0] - sj[2 - q] - b[2], b[1] - sj[2 - q] - b[2]) for q, b in enumerate(box))
                    both = mi[ai] & mj[aj]
                    if not both.any():
                        continue
                    loc = np.nonzero(both)
                    li = tuple(loc[q] + ai[q].start for q in range(3))
                    lj = tuple(loc[q] + aj[q].start for q in range(3))
                    d = _radial_depth(coeffs_um[i], gi, li) + _radial_depth(coeffs_um[j], gj, lj)
                    count += len(d)
                    depth = max(depth, float(d.max()))
        if count:
            out[(i, j)] = (count, depth)
    return out


def clear_voxel_overlaps(
    coeffs_um, centres, box_um, h, *, periodic, pad_um, neck_um=0.0, rng, rounds=12, max_iter=3000, blocks_of=None
):
    """Move packed particles apart until their exact voxels meet only in the requested necks.

    The packer's contact test works on tabulated radius functions and a sparse cap of surface
    directions, so two bodies it sees apart can still share voxel centres where their exact
    shells meet. Here every particle is voxelised exactly (:func:`_shell_block`, the voxels it
    will have in the box) and every pair sharing voxel centres is measured
    (:func:`voxel_contacts`): without necks any shared voxel, with necks a neck depth beyond
    ``neck_um``, is a violation. A violating pair must then keep the measured excess plus half a
    voxel more separation in the packer's own depth; the relaxation runs with those pair
    separations and the moved particles are voxelised again, until no pair violates.

    Parameters
    ----------
    coeffs_um : (N, K) float array
        Shell coefficients (µm).
    centres : (N, 3) float array
        Packed centres (µm, ``x, y, z``); not modified.
    box_um : float
        Box edge (µm), a whole number of voxels.
    h : float
        Voxel edge (µm).
    periodic : bool
        Periodic box or hard walls.
    pad_um : float
        The packer's skin (``pack_centres``' ``pad_um``).
    neck_um : float
        Allowed neck depth (µm), 0 for none.
    rng : numpy.random.Generator
        Jitter of the relaxation.
    rounds : int
        Voxel checks at most.
    max_iter : int
        Relaxation iterations per round.
    blocks_of : callable, optional
        ``blocks_of(coeffs (M, K), centres (M, 3), h)`` -> the :func:`_shell_block` of each, in order
        (e.g. computed by worker processes); default: in this process.

    Returns
    -------
    centres : (N, 3) float array
        The moved centres.
    blocks : list of (mask, start, grid)
        Each particle's exact voxels at those centres.
    stats : dict
        ``voxel_rounds`` (checks made), ``voxel_pairs_separated`` (pairs that had to move apart),
        ``voxel_moved`` (particles moved).

    Raises
    ------
    InputError
        When the relaxation cannot separate the pairs (a packing at its jamming limit).
    """
    x = np.array(centres, dtype=np.float64)
    L = float(box_um)
    N = len(x)
    n = round(L / h)
    sh = _Shapes(coeffs_um)
    if blocks_of is None:

        def blocks_of(cs, xs, h):
            return [_shell_block(c, xx, h) for c, xx in zip(cs, xs)]

    blocks = blocks_of(coeffs_um, x, h)
    extra = {}
    moved = np.zeros(N, dtype=bool)
    for r in range(rounds):
        contacts = voxel_contacts(coeffs_um, blocks, n, periodic)
        bad = {ij: depth - neck_um for ij, (_, depth) in contacts.items() if neck_um <= 0 or depth > neck_um}
        if not bad:
            return (
                (x % L if periodic else x),
                blocks,
                {
                    "voxel_rounds": r + 1,
                    "voxel_pairs_separated": len(extra),
                    "voxel_moved": int(moved.sum()),
                },
            )
        for (i, j), excess in bad.items():
            key = i * N + j
            extra[key] = extra.get(key, 0.0) + max(excess, 0.0) + 0.5 * h
        keys = np.array(sorted(extra), dtype=np.int64)
        vals = np.array([extra[k] for k in keys])
        before = x.copy()
        ok, _, _ = _relax(x, sh, 1.0, L, periodic, pad_um, max_iter, rng, fine=True, extra=(keys, vals))
        if not ok:
            break
        if periodic:
            x %= L
        changed = np.flatnonzero(np.any(x != before, axis=1))
        moved[changed] = True
        for k, b in zip(changed, blocks_of(coeffs_um[changed], x[changed], h)):
            blocks[k] = b
    phi = 4 * np.pi / 3 * np.mean(sh.table**3, axis=1).sum() / L**3
    raise InputError(
        f"the requested active fraction {phi:.3f} is not reachable: the packing jammed while separating "
        f"the particles' voxels (exact contacts), no packing without overlap at this fraction",
        "--solid-fraction",
    )


# --------------------------------------------------------------------------- voxels
#: The models of the running pack in a worker process (set once by :func:`_init_worker`, so that the
#: grain model, a torch network, is not pickled with every task).
_MODELS: dict = {}


def _init_worker(shell_model, grain_model):
    _MODELS["shell"], _MODELS["grain"] = shell_model, grain_model


def _draw_particle(args):
    """Worker: draw particle ``k`` (shell + grains) and select its grains (does not need its position)."""
    seed, k, spacing_px, ids = args
    return make_particle(
        _MODELS["shell"],
        _MODELS["grain"],
        particle_seed(seed, k),
        particle_id=k + 1,
        spacing_px=spacing_px,
        shell_model_id=ids[0],
        grain_model_id=ids[1],
    )


def _voxelize_at(p, centre_um, h, block=None):
    """Voxelise particle ``p`` on the box lattice at its sub-voxel offset: ``(local labels, start, grid)``.

    ``block``: its :func:`_shell_block` at ``centre_um``, if already computed.
    """
    mask, start, grid = _shell_block(p.coeffs_um, centre_um, h) if block is None else block
    lab = gbpd_grid_labels(p.grains, grid, p.pixel_size_um, mask)
    local = np.zeros(grid.shape, dtype=np.uint32)
    local[mask] = (lab[mask] + 1).astype(np.uint32)
    return local, start, grid


def _voxelize_task(args):
    """Worker: :func:`_voxelize_at` of one drawn particle."""
    return _voxelize_at(*args)


#: Modules a fork server imports once for all workers (a spawned worker imports them itself: ~5 CPU-s,
#: half of it torch, which the grain model's network needs).
_WORKER_PRELOAD = ["nmc_dataset.tomography._pack", "nmc_dataset.calibration._generator"]


def _worker_context():
    """``forkserver`` where available (workers fork from a single-threaded server that imported the
    modules once; never fork the main process, whose numba/torch thread pools may run), else ``spawn``."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_WORKER_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


class _ParticlePipeline:
    """Draws and voxelises the particles of a pack, in index order, serially or in worker processes.

    The grain selection of every particle (most of its cost) does not depend on where it sits, so
    with workers it starts before the packing (:meth:`start`) and runs while the main process packs;
    the voxelisation follows once the centres are known (:meth:`voxelized`, a bounded window of
    tasks in flight, results yielded in index order). The per-particle work is the same functions in
    both modes, so the volumes do not depend on the worker count.
    """

    def __init__(self, shell_model, grain_model, seed, n, spacing_px, ids, workers):
        self.models = (shell_model, grain_model)
        self.draw_args = [(int(seed), k, float(spacing_px), ids) for k in range(n)]
        self.workers = int(workers)
        self.ex = None

    def start(self):
        if self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            self.ex = ProcessPoolExecutor(
                self.workers,
                mp_context=_worker_context(),
                initializer=_init_worker,
                initargs=self.models,
            )
            self.drawn = [self.ex.submit(_draw_particle, a) for a in self.draw_args]
        else:
            _init_worker(*self.models)
        return self

    def shell_blocks(self, coeffs_um, centres, h):
        """:func:`_shell_block` of each shell at its centre (in the workers, if any), in order."""
        args = [(c, x, h) for c, x in zip(coeffs_um, centres)]
        if self.ex is None:
            return [_shell_block_task(a) for a in args]
        return list(self.ex.map(_shell_block_task, args, chunksize=4))

    def voxelized(self, centres, h, blocks):
        """Yield ``(k, particle, local labels, start, grid)`` for ``k = 0, 1, ...`` (``blocks``: the shell
        masks of :func:`_shell_block` at ``centres``, released as they are used; the particles of the
        first ``len(centres)`` draws)."""
        n = len(centres)
        if self.ex is None:
            for k in range(n):
                p = _draw_particle(self.draw_args[k])
                block, blocks[k] = blocks[k], None
                yield (k, p, *_voxelize_at(p, centres[k], h, block))
            return
        window = 4 * self.workers  # voxelised blocks waiting in memory at most
        pending, nxt = {}, 0
        particles = {}
        for k in range(n):
            while nxt < n and nxt < k + window:
                particles[nxt] = self.drawn[nxt].result()
                self.drawn[nxt] = None
                block, blocks[nxt] = blocks[nxt], None
                pending[nxt] = self.ex.submit(_voxelize_task, (particles[nxt], centres[nxt], h, block))
                nxt += 1
            yield (k, particles.pop(k), *pending.pop(k).result())

    def close(self):
        if self.ex is not None:
            self.ex.shutdown(wait=True, cancel_futures=True)
            self.ex = None


def _box_indices(start, shape, n, periodic):
    """Per-axis box indices (z, y, x) of a local block, wrapped or clipped; plus the local slices."""
    idx, sel = [], []
    for a, m in zip((2, 1, 0), shape):
        r = start[a] + np.arange(m)
        if periodic:
            idx.append(r % n)
            sel.append(np.arange(m))
        else:
            ok = (r >= 0) & (r < n)
            idx.append(r[ok])
            sel.append(np.flatnonzero(ok))
    return idx, sel


def _normalised_radius(p, grid: Grid, kk, jj, ii):
    """``|x − c| / R(u)`` at local voxels ``(kk, jj, ii)`` of a particle."""

    pts = np.stack([grid.axis_coords_um("x")[ii], grid.axis_coords_um("y")[jj], grid.axis_coords_um("z")[kk]], 1)
    r = np.linalg.norm(pts, axis=1)
    u = pts / np.maximum(r, 1e-12)[:, None]
    return r / np.asarray(radius(p.coeffs_um, u)).reshape(-1)


def _scatter(particle, grain, k, local, start, grid, p, parts, n, periodic, offset) -> int:
    """Write particle ``k``'s local labels into the box volumes; returns its overlap voxels.

    A voxel centre already claimed by an earlier particle is an overlap: it goes to the particle
    whose surface is farther away along the radius (smaller ``|x − c| / R``; ties to the earlier
    one). ``parts[o] = (particle, grid, start)`` of the earlier particles ``o < k``.
    """
    idx, sel = _box_indices(start, local.shape, n, periodic)
    ix = np.ix_(*idx)
    loc = local[np.ix_(*sel)]
    cur_p = particle[ix]
    cur_g = grain[ix]
    mine = loc > 0
    clash = mine & (cur_p > 0)
    overlap = 0
    if clash.any():
        overlap = int(clash.sum())
        kk, jj, ii = np.nonzero(clash)
        own = _normalised_radius(p, grid, sel[0][kk], sel[1][jj], sel[2][ii])
        other_ids = cur_p[clash].astype(np.int64) - 1
        other = np.empty(len(kk))
        for o in np.unique(other_ids):
            m = other_ids == o
            op, og, ostart = parts[o]
            bz = idx[0][kk[m]]
            by = idx[1][jj[m]]
            bx = idx[2][ii[m]]
            lk, lj, li = ((b - ostart[a]) % n if periodic else b - ostart[a] for b, a in ((bz, 2), (by, 1), (bx, 0)))
            other[m] = _normalised_radius(op, og, lk, lj, li)
        lose = np.zeros(clash.shape, dtype=bool)
        lose[kk, jj, ii] = own >= other
        mine &= ~lose
    cur_p[mine] = k + 1
    cur_g[mine] = loc[mine].astype(np.uint32) + np.uint32(offset)
    particle[ix] = cur_p
    grain[ix] = cur_g
    return overlap


# --------------------------------------------------------------------------- binder
@numba.njit(cache=True, parallel=True)
def _gap_update(d1, d2, table, lo, shape, offset, h, start, periodic, width, nb):
    """Fold one particle's radial gap field (voxels) into the two-smallest fields ``d1 <= d2``."""
    n = d1.shape[0]
    for k in numba.prange(shape[0]):
        bz = start[2] + k
        if periodic:
            bz %= n
        elif bz < 0 or bz >= n:
            continue
        z = (lo[2] + k) * h + offset[2]
        for j in range(shape[1]):
            by = start[1] + j
            if periodic:
                by %= n
            elif by < 0 or by >= n:
                continue
            y = (lo[1] + j) * h + offset[1]
            for i in range(shape[2]):
                bx = start[0] + i
                if periodic:
                    bx %= n
                elif bx < 0 or bx >= n:
                    continue
                x = (lo[0] + i) * h + offset[0]
                r = np.sqrt(x * x + y * y + z * z)
                g = (r - table[_bin(x, y, z, nb)]) / h
                if g >= width:
                    continue
                if g < 0:
                    g = 0.0
                if g < d1[bz, by, bx]:
                    d2[bz, by, bx] = d1[bz, by, bx]
                    d1[bz, by, bx] = g
                elif g < d2[bz, by, bx]:
                    d2[bz, by, bx] = g


class _GapFields:
    """Radial gaps (voxels) to the nearest and second-nearest particle, ``inf`` beyond ``width_vox``,
    folded in one particle at a time (:meth:`add`; the two-smallest fold is order-free)."""

    def __init__(self, n, h, periodic, width_vox):
        self.n, self.h, self.periodic, self.width = int(n), float(h), bool(periodic), float(width_vox)
        self.d1 = np.full((n, n, n), np.inf, dtype=np.float32)
        self.d2 = np.full((n, n, n), np.inf, dtype=np.float32)
        self.centres = _cubemap_centres(_CUBE_BINS).reshape(-1, 3)
        self.basis = {}

    def add(self, p, grid, start):
        n, w = self.n, int(np.ceil(self.width))
        L = p.degree
        if L not in self.basis:
            self.basis[L] = sh_basis(L, self.centres).T
        table = p.coeffs_um @ self.basis[L]
        shape = np.array([s + 2 * w for s in grid.shape], dtype=np.int64)
        lo = np.asarray(grid.index_lo, dtype=np.int64) - w
        start = np.asarray(start, dtype=np.int64) - w
        offset = np.asarray(grid.offset_um, np.float64)
        # threads run over the block's z rows; a block taller than a periodic box goes in slabs of at
        # most n rows, so no two concurrent rows wrap onto one box row (the two-smallest fold is
        # order-free, so the fields equal a serial pass)
        for k0 in range(0, int(shape[0]), n):
            sub = shape.copy()
            sub[0] = min(n, shape[0] - k0)
            lo_k, start_k = lo.copy(), start.copy()
            lo_k[2] += k0
            start_k[2] += k0
            _gap_update(
                self.d1, self.d2, table, lo_k, sub, offset, self.h, start_k, self.periodic, self.width, _CUBE_BINS
            )


def _gap_fields(parts, n, h, periodic, width_vox):
    """Radial gaps (voxels) to the nearest and second-nearest particle, ``inf`` beyond ``width_vox``."""

    f = _GapFields(n, h, periodic, width_vox)
    for p, grid, start in parts:
        f.add(p, grid, start)
    return f.d1, f.d2


#: First width (voxels) of the gap fields of ``bridge`` binder (doubled while too few pore voxels lie within it).
_BRIDGE_WIDTH = 16.0


def place_binder(phase, mode, fraction, *, parts=None, h=None, periodic=True, gaps=None):
    """Turn the first ``round(fraction·N)`` pore voxels (in the order of ``mode``) into binder (2).

    ``gaps``: the ``bridge`` gap fields of ``parts`` at the first width, if already folded.
    """

    n_target = round(fraction * phase.size)
    pore = phase == 0
    n_pore = int(pore.sum())
    if n_target > n_pore:
        raise InputError(f"binder fraction {fraction} exceeds the pore fraction {n_pore / phase.size:.3f}", "--binder")
    if n_target == 0:
        return phase, {}
    if mode == "coating":
        solid = phase == 1
        if periodic:  # wrap by a margin so that distances cross the faces
            m = min(phase.shape[0], 32)
            d = distance_to(np.pad(solid, m, mode="wrap"))[m:-m, m:-m, m:-m]
        else:
            d = distance_to(solid)
        key = d[pore]
    else:
        width = _BRIDGE_WIDTH
        while True:
            if gaps is not None and width == gaps.width and gaps.d1 is not None:
                d1, d2 = gaps.d1, gaps.d2
                gaps.d1 = gaps.d2 = None  # freed below, before the selection
            else:
                d1, d2 = _gap_fields(parts, phase.shape[0], h, periodic, width)
            key = (d1 + d2)[pore].astype(np.float64) + 1e-3 * d1[pore]
            if np.isfinite(key).sum() >= n_target or width > phase.shape[0]:
                break
            width *= 2
        del d1, d2
    flat = np.flatnonzero(pore.ravel())
    order = np.argpartition(key, n_target - 1)[:n_target] if n_target < len(key) else np.arange(len(key))
    out = phase.copy().ravel()
    out[flat[order]] = 2
    kth = float(np.max(key[order]))
    return out.reshape(phase.shape), {"binder_threshold_vox": kth}


# --------------------------------------------------------------------------- the whole electrode
def pack_electrode(
    shell_model,
    grain_model,
    *,
    box_um: float,
    solid_fraction: float,
    voxel_size_um: float,
    binder: tuple | None = ("bridge", 0.08),
    electrolyte: str = "none",
    periodic: bool = True,
    neck_um: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    spacing_px: float = 2.0,
    model_ids=("", ""),
) -> Electrode:
    """Pack particles of the two models into a cubic box and label every voxel.

    Parameters
    ----------
    shell_model : nmc_dataset.shells._model.ShellModel
        Source of the particle shells.
    grain_model : nmc_dataset.calibration._model.GrainModel
        Source of the grain architectures.
    box_um : float
        Edge of the cubic box (µm); rounded to whole voxels.
    solid_fraction : float
        Target active-material (NMC) volume fraction of the box.
    voxel_size_um : float
        Voxel edge (µm).
    binder : (mode, fraction) or None
        ``("bridge" | "coating", volume fraction of the box)``.
    electrolyte : {"none", "liquid", "solid"}
        What fills the pore phase (recorded for the CT simulator).
    periodic : bool
        Periodic box (True) or hard walls.
    neck_um : float
        Allowed interpenetration depth of touching particles (sintered necks), µm.
    seed : int
        Root seed; particle ``k`` draws from its own stream of it.
    workers : int
        Processes drawing and voxelising particles (the result does not depend on it).
    spacing_px : float
        Assembly lattice of the grain selection (grain-model pixels; see ``particles.assemble``).
    model_ids : (str, str)
        Shell and grain model ids stored in the table.

    Returns
    -------
    Electrode
        Phase, particle and grain label volumes (axes ``z, y, x``) and the particle table.
    """
    t0 = time.perf_counter()
    h = float(voxel_size_um)
    if not (np.isfinite(h) and h > 0):
        raise InputError(f"must be > 0, got {voxel_size_um}", "--voxel-size-um")
    if not (np.isfinite(box_um) and box_um > 0):
        raise InputError(f"must be > 0, got {box_um}", "--box-um")
    if not 0 < solid_fraction < 1:
        raise InputError(f"must be in (0, 1), got {solid_fraction}", "--solid-fraction")
    if electrolyte not in ELECTROLYTES:
        raise InputError(f"unknown electrolyte {electrolyte!r} (one of {', '.join(ELECTROLYTES)})", "--electrolyte")
    if neck_um < 0:
        raise InputError(f"must be >= 0, got {neck_um}", "--neck-um")
    if binder is not None:
        mode, frac = binder
        if mode not in BINDER_MODES:
            raise InputError(f"unknown binder mode {mode!r} (one of {', '.join(BINDER_MODES)})", "--binder")
        if not 0 <= frac < 1 or frac + solid_fraction >= 1:
            raise InputError(f"binder fraction must be in [0, 1 - solid fraction), got {frac}", "--binder")
    n = round(box_um / h)
    if n < 8:
        raise InputError(f"the box is only {n} voxels wide; use a larger box or a smaller voxel size", "--box-um")
    L = n * h
    # mean particle radius vs voxel size, before drawing the whole population
    r_mean = abs(shell_model.laws[0].mean()) / np.sqrt(4 * np.pi) * shell_model.voxel_size_um
    if r_mean < 3 * h:
        raise InputError(
            f"voxel size {h} µm is too coarse for particles of mean radius {r_mean:.3g} µm (need "
            f"at least 3 voxels per radius: <= {r_mean / 3:.3g} µm)",
            "--voxel-size-um",
        )
    coeffs, vols = draw_shells(shell_model, seed, solid_fraction * L**3)
    dmax = 2 * _Shapes(coeffs).rmax.max()
    if dmax + 8 * h >= L:
        raise InputError(
            f"the box ({L:.3g} µm) is too small for the largest particle ({dmax:.3g} µm + 8 voxels)", "--box-um"
        )
    log.info(
        "pack: %d particles (analytic fraction %.4f) in a %d³ box of %.3g µm", len(coeffs), vols.sum() / L**3, n, L
    )
    pipe = _ParticlePipeline(shell_model, grain_model, seed, len(coeffs), spacing_px, model_ids, workers).start()
    try:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(POSITION_STREAM,)))
        pad = 0.25 * h - 0.5 * neck_um
        centres, stats = pack_centres(
            coeffs, L, periodic=periodic, pad_um=pad, rng=rng, min_fraction=solid_fraction - FRACTION_TOLERANCE
        )
        coeffs, vols = coeffs[: len(centres)], vols[: len(centres)]
        t_relax = time.perf_counter() - t0
        centres, blocks, vstats = clear_voxel_overlaps(
            coeffs, centres, L, h, periodic=periodic, pad_um=pad, neck_um=neck_um, rng=rng
        )
        stats.update(vstats)
        t_pack = time.perf_counter() - t0
        particle = np.zeros((n, n, n), dtype=np.uint32)
        grain = np.zeros((n, n, n), dtype=np.uint32)
        offsets = np.zeros(len(coeffs), dtype=np.int64)
        n_grains = np.zeros(len(coeffs), dtype=np.int64)
        overlap_voxels, parts, particles = 0, [], []
        bridge = binder is not None and binder[0] == "bridge" and binder[1] > 0
        gaps = _GapFields(n, h, periodic, _BRIDGE_WIDTH) if bridge else None
        nxt = 0
        for k, p, local, start, grid in pipe.voxelized(centres, h, blocks):
            offsets[k] = nxt
            n_grains[k] = p.n_grains
            nxt += p.n_grains
            overlap_voxels += _scatter(particle, grain, k, local, start, grid, p, parts, n, periodic, offsets[k])
            parts.append((p, grid, start))
            particles.append(p)
            if gaps is not None:  # folded while the workers voxelise the next particles
                gaps.add(p, grid, start)
            del local
    finally:
        pipe.close()
    t_vox = time.perf_counter() - t0 - t_pack
    phase = (particle > 0).astype(np.uint8)
    active = float(phase.mean())
    info = {
        "n_particles": len(particles),
        "n_grains": int(nxt),
        "box_voxels": n,
        "box_um": L,
        "target_solid_fraction": float(solid_fraction),
        "solid_fraction": active,
        "periodic": bool(periodic),
        "neck_um": float(neck_um),
        "overlap_voxels": int(overlap_voxels),
        "electrolyte": electrolyte,
        "seed": int(seed),
        "spacing_px": float(spacing_px),
        **stats,
    }
    binder_info = {}
    if binder is not None and binder[1] > 0:
        phase, binder_info = place_binder(phase, binder[0], binder[1], parts=parts, h=h, periodic=periodic, gaps=gaps)
        gaps = None
        info["binder"] = {
            "mode": binder[0],
            "target_fraction": float(binder[1]),
            "fraction": float((phase == 2).mean()),
            **binder_info,
        }
    else:
        info["binder"] = {"mode": "none", "target_fraction": 0.0, "fraction": 0.0}
    info["pore_fraction"] = float((phase == 0).mean())
    t_all = time.perf_counter() - t0
    info["seconds"] = {
        "relax": round(t_relax, 3),
        "pack": round(t_pack, 3),
        "particles": round(t_vox, 3),
        "total": round(t_all, 3),
    }
    K = coeffs.shape[1]
    voxels = label_sizes(particle)  # compiled count (np.bincount converts the volume to 64 bit first)
    voxels = np.pad(voxels, (0, max(0, len(particles) + 1 - len(voxels))))
    table = {
        "id": np.arange(1, len(particles) + 1, dtype=np.int64),
        "center_um": centres[:, ::-1].copy(),  # z, y, x
        "coeffs_um": np.stack([p.coeffs_um for p in particles]).reshape(-1, K),
        "volume_um3": vols,
        "voxels": voxels[1:],
        "grain_id_offset": offsets,
        "n_grains": n_grains,
        "seed_spawn_key": np.array([particle_seed(seed, k).spawn_key for k in range(len(particles))], dtype=np.int64),
    }
    grains = None
    if particles and all(p.orientations_wxyz is not None for p in particles):
        grains = {
            "id": np.arange(1, nxt + 1, dtype=np.int64),
            "particle": np.repeat(table["id"], n_grains),
            "orientation_wxyz": np.concatenate([p.orientations_wxyz for p in particles]).astype(np.float64),
        }
        info["orientation_model_id"] = particles[0].orientation_model_id
    return Electrode(
        phase=phase, particle=particle, grain=grain, table=table, voxel_size_um=h, info=info, grains=grains
    )


__all__ = [
    "BINDER_MODES",
    "ELECTROLYTES",
    "PACK_STREAM",
    "Electrode",
    "draw_shells",
    "pack_centres",
    "clear_voxel_overlaps",
    "pack_electrode",
    "particle_seed",
    "place_binder",
]
