"""Exact k-nearest-neighbour search on a uniform cell grid, fused with the generator's inputs.

The generator ``G`` (docs/method.md#generator, :mod:`nmc_dataset.calibration._generator`) needs, for every seed
``s_i`` that gets markers, its ``kappa`` nearest neighbours ``s_ij`` (the seed itself excluded),
the radial frame ``Q_i`` (:func:`nmc_dataset.tessellation._labels.radial_frames`) and the network input
row ``(Q_i (s_i1 - s_i) / scale, n_i1, ..., Q_i (s_ikappa - s_i) / scale, n_ikappa)``.
:func:`knn_inputs` computes all of it in one compiled pass (numba, parallel over blocks of grid
cells), writing the float32 rows directly.

Algorithm. The seeds are bucketed (counting sort) into a uniform grid of cubic cells, edge
``CELL_FRACTION`` x the expected ``kappa``-th neighbour distance ``d_k = (3 kappa / (4 pi
rho))^(1/3)``; the points of one row of cells (fixed y, z) are contiguous in memory. Per cell
holding queried seeds, every point within ``r0 = RADIUS_FACTOR * d_k`` of the cell's box is
copied once into small contiguous buffers (structure of arrays). Per queried seed of the cell:

1. squared distances to all gathered points (a vectorised loop);
   in the same loop, how many lie within each radius of a ladder ``(0.80, 0.86, 0.92, 1) r0``;
2. branch-free compaction of the points within the smallest radius of the ladder that holds
   more than ``kappa`` points (the seed itself is one of them), so that only one compaction
   pass runs and few more than ``kappa`` candidates remain (a fixed pair of radii, 0.92 r0
   then r0, timed ~6 % slower);
3. if at least ``kappa`` remain, their rank by ``(squared distance, index)`` (a vectorised
   count) places the ``kappa`` best, nearest first. Any point not kept is farther than the
   radius, hence farther than every kept one: the result is **exact**;
4. otherwise (fewer than ``kappa`` points within ``r0``: ~2 % of the seeds of a Poisson
   pattern, more in sparse or clustered ones; or more than ``_RANK_MAX`` candidates, where the
   quadratic ranking would be slow) an incremental exact search runs: Chebyshev blocks of cells
   around the seed until ``kappa`` points are found, then every row of cells within the current
   ``kappa``-th distance (which only shrinks), insertion into a sorted list.

Branchy per-candidate code (insertion sort, short unpredictable loops) was 3-4x slower here
than this gather / compact / rank scheme (branch mispredictions dominate at ~50 candidates).

Exactness: neighbours are ordered by squared Euclidean distance (float64, ``dx*dx + dy*dy +
dz*dz``), ties broken by the lower seed index; the seed itself is never its own neighbour (an
exact duplicate of it is, at distance 0). Cell gaps carry a small slack so that rounding can
only make the search visit more points, never fewer. The slow twins are :func:`knn_reference`
(all distances, stable sort) and :func:`nmc_dataset.calibration._generator.neighbour_inputs_reference`
(scipy's cKDTree) for the inputs.

Groups: independent realisations stacked in one array (``group``) get one grid each; a seed
only sees neighbours of its own group.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

try:  # numba is a dependency; without it the reference twins below still work
    import numba as _nb
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _nb = None

#: Default cell edge as a fraction of the expected kappa-th neighbour distance
#: ``(3 kappa / (4 pi rho))^(1/3)`` (speed only; 1.3-1.6 timed best at mu = 0.0018, kappa = 12,
#: with the gather radius below the cell edge so that 3 x 3 x 3 cells suffice).
CELL_FRACTION = 1.5
#: Gather radius as a fraction of the expected kappa-th neighbour distance (speed only).
RADIUS_FACTOR = 1.2
#: Above this many candidates within the radius the quadratic ranking gives way to the incremental search.
_RANK_MAX = 512
#: A point's neighbours are sought within the first of these fractions of the gather radius that
#: holds enough points (squared; the last is the gather radius itself).
_LADDER = (0.80**2, 0.86**2, 0.92**2, 1.0)
#: Grid cells per parallel task.
_CELLS_PER_TASK = 64


# --------------------------------------------------------------------------- plain twin


# --------------------------------------------------------------------------- public API
def knn(
    points: np.ndarray,
    kappa: int,
    which=None,
    group=None,
    *,
    cell_fraction: float = CELL_FRACTION,
    radius_factor: float = RADIUS_FACTOR,
):
    """Exact ``kappa`` nearest neighbours (self excluded) of the points ``which``.

    Parameters
    ----------
    points : (N, 3) array
        All points that may be neighbours.
    kappa : int
        Neighbours per query (>= 1).
    which : index array or boolean mask, optional
        The query points (default: all).
    group : (N,) int array, optional
        Independent realisations: a point only sees neighbours of its own group.
    cell_fraction : float
        Grid cell edge over the expected ``kappa``-th neighbour distance (speed only).
    radius_factor : float
        Gather radius over the expected ``kappa``-th neighbour distance (speed only;
        ``<= 0``: the incremental search for every seed).

    Returns
    -------
    nb : (n, kappa) int64 array
        Neighbour indices, nearest first (ties: lower index first).
    d2 : (n, kappa) float64 array
        Their squared distances.

    Raises
    ------
    ValueError
        Non-finite points, bad shapes, or a queried point whose group has fewer than
        ``kappa + 1`` points.
    """
    points, idx, gid, kappa = _check(points, which, group, kappa)
    uniq, qrow, inv = _query_rows(idx, len(points))
    nq = len(uniq)
    nb = np.empty((nq, kappa), dtype=np.int64)
    d2 = np.empty((nq, kappa))
    if nq:
        gr = _build_grid(points, gid, kappa, cell_fraction)
        _nb_batched(
            gr.spos,
            gr.snoise,
            gr.sroll,
            gr.sidx,
            gid,
            qrow,
            gr.gorg,
            gr.gh,
            gr.gdk,
            gr.gdim,
            gr.gbase,
            gr.cstart,
            kappa,
            float(radius_factor),
            1.0,
            False,
            _NO_OUT,
            nb,
            d2,
            False,
        )
    return (nb, d2) if inv is None else (nb[inv], d2[inv])


def knn_inputs(
    seeds: np.ndarray,
    noise: np.ndarray,
    roll: np.ndarray,
    which=None,
    *,
    kappa: int = 12,
    input_scale_px: float = 10.0,
    group=None,
    cell_fraction: float = CELL_FRACTION,
    radius_factor: float = RADIUS_FACTOR,
    return_neighbours: bool = False,
):
    """The generator's network inputs of the seeds ``which``, from an exact kNN (see module doc).

    Parameters
    ----------
    seeds, noise, roll : arrays (N, 3), (N, 2), (N,)
        All seeds that may be neighbours, their noise marks and roll angles.
    which : index array or boolean mask, optional
        The seeds whose inputs are wanted (default: all).
    kappa : int
        Number of nearest neighbours (the seed itself excluded).
    input_scale_px : float
        Displacements are divided by this.
    group : (N,) int array, optional
        Independent realisations stacked in one array: seeds only see neighbours of their own group.
    cell_fraction : float
        Grid cell edge over the expected ``kappa``-th neighbour distance (speed only).
    radius_factor : float
        Gather radius over the expected ``kappa``-th neighbour distance (speed only;
        ``<= 0``: the incremental search for every seed).
    return_neighbours : bool
        Also return the (n, kappa) int64 neighbour indices.

    Returns
    -------
    (n, 5 kappa) float32 array [, (n, kappa) int64 array]
        Per neighbour ``j`` (nearest first): ``Q_i (s_ij - s_i) / input_scale_px`` then ``n_ij``.

    Raises
    ------
    ValueError
        Non-finite seeds, mismatched shapes, or a queried seed whose group has fewer than
        ``kappa + 1`` seeds.
    """
    seeds, idx, gid, kappa = _check(seeds, which, group, kappa)
    n = len(seeds)
    noise = np.ascontiguousarray(noise, dtype=np.float64)
    roll = np.ascontiguousarray(roll, dtype=np.float64).reshape(-1)
    if noise.shape != (n, 2) or roll.shape != (n,):
        raise ValueError(f"noise must be ({n}, 2) and roll ({n},), got {noise.shape} and {roll.shape}")
    if not input_scale_px > 0:
        raise ValueError("input_scale_px must be > 0")
    uniq, qrow, inv = _query_rows(idx, n)
    nq = len(uniq)
    out = np.empty((nq, 5 * kappa), dtype=np.float32)
    nbo = np.empty((nq if return_neighbours else 0, kappa), dtype=np.int64)
    if nq:
        gr = _build_grid(seeds, gid, kappa, cell_fraction, noise, roll)
        _nb_batched(
            gr.spos,
            gr.snoise,
            gr.sroll,
            gr.sidx,
            gid,
            qrow,
            gr.gorg,
            gr.gh,
            gr.gdk,
            gr.gdim,
            gr.gbase,
            gr.cstart,
            kappa,
            float(radius_factor),
            float(input_scale_px),
            True,
            out,
            nbo,
            _NO_D2,
            bool(return_neighbours),
        )
    if inv is not None:
        out = out[inv]
        nbo = nbo[inv] if return_neighbours else nbo
    return (out, nbo) if return_neighbours else out


# --------------------------------------------------------------------------- checks, grid
def _as_index(which, n: int) -> np.ndarray:
    if which is None:
        return np.arange(n, dtype=np.int64)
    w = np.asarray(which)
    if w.dtype == bool:
        if w.shape != (n,):
            raise ValueError(f"boolean mask of shape {w.shape} for {n} seeds")
        return np.flatnonzero(w).astype(np.int64)
    return np.arange(n, dtype=np.int64)[w].reshape(-1)


def _query_rows(idx: np.ndarray, n: int):
    """(distinct queries, their output row per point (-1: not queried), expansion or None)."""
    qrow = np.full(n, -1, dtype=np.int64)
    qrow[idx] = np.arange(len(idx))
    if np.array_equal(qrow[idx], np.arange(len(idx))):
        return idx, qrow, None
    uniq, inv = np.unique(idx, return_inverse=True)  # repeated queries: compute each once
    qrow[:] = -1
    qrow[uniq] = np.arange(len(uniq))
    return uniq, qrow, inv.reshape(-1)


def _check(points, which, group, kappa):
    if _nb is None:  # pragma: no cover
        raise ImportError("nmc_dataset.calibration._knn needs numba")
    points = np.ascontiguousarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    kappa = int(kappa)
    if kappa < 1:
        raise ValueError("kappa must be >= 1")
    if not np.isfinite(points).all():
        raise ValueError("seed positions must be finite")
    n = len(points)
    idx = _as_index(which, n)
    if group is None:
        gid = np.zeros(n, dtype=np.int64)
        counts = np.array([n])
    else:
        group = np.asarray(group).reshape(-1)
        if group.shape != (n,):
            raise ValueError(f"group must have {n} entries, got {group.shape}")
        if group.dtype.kind in "iu" and n and group.min() >= 0 and group.max() < 4 * n + 16:
            gid = group.astype(np.int64)
        else:
            gid = np.unique(group, return_inverse=True)[1].astype(np.int64).reshape(-1)
        counts = np.bincount(gid) if n else np.zeros(0, dtype=np.int64)
    if len(idx) and counts[gid[idx]].min() < kappa + 1:
        raise ValueError(f"need at least kappa + 1 = {kappa + 1} seeds in every queried group")
    return points, idx, gid, kappa


_NO_MARKS = (np.zeros((0, 2)), np.zeros(0))
_NO_OUT = np.zeros((0, 0), dtype=np.float32)
_NO_D2 = np.zeros((0, 0))


class Grid(NamedTuple):
    """Cell grids of the point groups, points counting-sorted by cell (rows of cells contiguous).

    Per group ``g``: origin ``gorg[g]``, cell edge ``gh[g]``, expected kappa-th neighbour
    distance ``gdk[g]``, cells per axis ``gdim[g]`` (x, y, z) and global id ``gbase[g]`` of its
    first cell; cell ``c`` holds sorted slots ``cstart[c]:cstart[c + 1]``; slot ``t`` is point
    ``sidx[t]`` at ``spos[t]`` with marks ``snoise[t]``, ``sroll[t]`` (empty when not given).
    """

    gorg: np.ndarray
    gh: np.ndarray
    gdk: np.ndarray
    gdim: np.ndarray
    gbase: np.ndarray
    cstart: np.ndarray
    sidx: np.ndarray
    spos: np.ndarray
    snoise: np.ndarray
    sroll: np.ndarray


def _build_grid(points, gid, kappa, cell_fraction, noise=None, roll=None):
    """The cell grid of the points (see :class:`Grid`)."""
    if not cell_fraction > 0:
        raise ValueError("cell_fraction must be > 0")
    ngroups = int(gid.max()) + 1 if len(gid) else 1
    gorg, gh, gdk, gdim, gbase, ncell = _nb_grid_shape(points, gid, ngroups, kappa, float(cell_fraction))
    if noise is None:
        noise, roll = _NO_MARKS
    cstart, sidx, spos, snoise, sroll = _nb_grid_fill(points, gid, gorg, gh, gdim, gbase, ncell, noise, roll)
    return Grid(gorg, gh, gdk, gdim, gbase, cstart, sidx, spos, snoise, sroll)


if _nb is not None:

    @_nb.njit(cache=True)
    def _nb_grid_shape(P, gid, G, kappa, frac):  # pragma: no cover - compiled
        """Per group: origin, cell edge, cell counts per axis and the first cell's global id."""
        lo = np.full((G, 3), np.inf)
        hi = np.full((G, 3), -np.inf)
        cnt = np.zeros(G, dtype=np.int64)
        for i in range(P.shape[0]):
            g = gid[i]
            cnt[g] += 1
            for a in range(3):
                v = P[i, a]
                if v < lo[g, a]:
                    lo[g, a] = v
                if v > hi[g, a]:
                    hi[g, a] = v
        gh = np.ones(G)
        gdk = np.ones(G)
        gdim = np.ones((G, 3), dtype=np.int64)
        gbase = np.zeros(G, dtype=np.int64)
        tot = 0
        for g in range(G):
            gbase[g] = tot
            if cnt[g] == 0:
                for a in range(3):
                    lo[g, a] = 0.0
                tot += 1
                continue
            ext = np.empty(3)
            emax = 0.0
            for a in range(3):
                ext[a] = hi[g, a] - lo[g, a]
                emax = max(emax, ext[a])
            floor_ext = max(emax * 1e-3, 1e-9)
            vol = 1.0
            for a in range(3):
                vol *= max(ext[a], floor_ext)
            # expected kappa-th neighbour distance of a Poisson process with this density
            dk = (3.0 * kappa * vol / (4.0 * np.pi * cnt[g])) ** (1.0 / 3.0)
            gdk[g] = dk
            h = max(frac * dk, 1e-12 * (emax + 1.0))
            while True:
                ncells = 1.0
                for a in range(3):
                    ncells *= math.floor(ext[a] / h) + 1.0
                if ncells <= 4.0 * cnt[g] + 64.0:
                    break
                h *= 1.25
            gh[g] = h
            c = 1
            for a in range(3):
                gdim[g, a] = int(math.floor(ext[a] / h)) + 1
                c *= gdim[g, a]
            tot += c
        return lo, gh, gdk, gdim, gbase, tot

    @_nb.njit(cache=True, inline="always")
    def _cell(v, o, h, nd):  # pragma: no cover - compiled
        c = math.floor((v - o) / h)
        if c < 0:
            return 0
        if c > nd - 1:
            return nd - 1
        return int(c)

    @_nb.njit(cache=True)
    def _nb_grid_fill(P, gid, gorg, gh, gdim, gbase, ncell, noise, roll):  # pragma: no cover - compiled
        """Counting sort of the points by cell: cstart (CSR), sorted ids, positions, noise and roll.

        ``noise``/``roll`` may be empty (then so are their sorted copies).
        """
        n = P.shape[0]
        key = np.empty(n, dtype=np.int64)
        cstart = np.zeros(ncell + 1, dtype=np.int64)
        for i in range(n):
            g = gid[i]
            h = gh[g]
            cx = _cell(P[i, 0], gorg[g, 0], h, gdim[g, 0])
            cy = _cell(P[i, 1], gorg[g, 1], h, gdim[g, 1])
            cz = _cell(P[i, 2], gorg[g, 2], h, gdim[g, 2])
            k = gbase[g] + (cz * gdim[g, 1] + cy) * gdim[g, 0] + cx
            key[i] = k
            cstart[k + 1] += 1
        for c in range(ncell):
            cstart[c + 1] += cstart[c]
        fill = cstart[:-1].copy()
        sidx = np.empty(n, dtype=np.int64)
        spos = np.empty((n, 3))
        has_marks = noise.shape[0] == n and n > 0
        m = n if has_marks else 0
        snoise = np.empty((m, 2))
        sroll = np.empty(m)
        for i in range(n):
            t = fill[key[i]]
            fill[key[i]] += 1
            sidx[t] = i
            spos[t, 0] = P[i, 0]
            spos[t, 1] = P[i, 1]
            spos[t, 2] = P[i, 2]
            if has_marks:
                snoise[t, 0] = noise[i, 0]
                snoise[t, 1] = noise[i, 1]
                sroll[t] = roll[i]
        return cstart, sidx, spos, snoise, sroll

    @_nb.njit(cache=True, inline="always")
    def _scan(a, b, i, px, py, pz, sidx, spos, bd, bt, k):  # pragma: no cover - compiled
        """Offer the sorted points a..b-1 to the best list (bd: squared distances, bt: sorted slots),
        ordered by (squared distance, original index); point i (the query) is skipped."""
        for t in range(a, b):
            dx = spos[t, 0] - px
            dy = spos[t, 1] - py
            dz = spos[t, 2] - pz
            d2 = dx * dx + dy * dy + dz * dz
            worst = bd[k - 1]
            if d2 > worst:
                continue
            j = sidx[t]
            if j == i or (d2 == worst and j > sidx[bt[k - 1]]):
                continue
            p = k - 1
            while p > 0 and (bd[p - 1] > d2 or (bd[p - 1] == d2 and sidx[bt[p - 1]] > j)):
                bd[p] = bd[p - 1]
                bt[p] = bt[p - 1]
                p -= 1
            bd[p] = d2
            bt[p] = t

    @_nb.njit(cache=True, inline="always")
    def _gap(v, lo, h, c, eps):  # pragma: no cover - compiled
        """Distance from v to the cell interval [lo + c h, lo + (c + 1) h], minus a rounding slack."""
        a = lo + c * h
        b = a + h
        g = 0.0
        if v < a:
            g = a - v
        elif v > b:
            g = v - b
        g -= eps
        return g if g > 0.0 else 0.0

    @_nb.njit(cache=True)
    def _query(t0, sidx, spos, g, gorg, gh, gdim, gbase, cstart, k, bd, bt):  # pragma: no cover - compiled
        """Exact kNN of the point in sorted slot t0 (group g) into (bd, bt); see the module doc.

        bt[k - 1] stays -1 when the group has fewer than k other points."""
        i = sidx[t0]
        px = spos[t0, 0]
        py = spos[t0, 1]
        pz = spos[t0, 2]
        ox = gorg[g, 0]
        oy = gorg[g, 1]
        oz = gorg[g, 2]
        h = gh[g]
        nx = gdim[g, 0]
        ny = gdim[g, 1]
        nz = gdim[g, 2]
        base = gbase[g]
        for m in range(k):
            bd[m] = np.inf
            bt[m] = -1
        cx = _cell(px, ox, h, nx)
        cy = _cell(py, oy, h, ny)
        cz = _cell(pz, oz, h, nz)
        # 1. Chebyshev blocks of radius R = 1, 2, ... around the own cell until k points are found
        R = 0
        while True:
            R += 1
            x0 = max(cx - R, 0)
            x1 = min(cx + R, nx - 1)
            for z in range(max(cz - R, 0), min(cz + R, nz - 1) + 1):
                for y in range(max(cy - R, 0), min(cy + R, ny - 1) + 1):
                    row = base + (z * ny + y) * nx
                    if R == 1 or abs(z - cz) == R or abs(y - cy) == R:
                        _scan(cstart[row + x0], cstart[row + x1 + 1], i, px, py, pz, sidx, spos, bd, bt, k)
                    else:  # only the two new cells of this row
                        if cx - R >= 0:
                            _scan(cstart[row + cx - R], cstart[row + cx - R + 1], i, px, py, pz, sidx, spos, bd, bt, k)
                        if cx + R <= nx - 1:
                            _scan(cstart[row + cx + R], cstart[row + cx + R + 1], i, px, py, pz, sidx, spos, bd, bt, k)
            if bd[k - 1] < np.inf:
                break
            if (
                cx - R <= 0
                and cy - R <= 0
                and cz - R <= 0
                and cx + R >= nx - 1
                and cy + R >= ny - 1
                and cz + R >= nz - 1
            ):
                return  # the whole group was scanned
        # 2. every other cell within the current k-th distance (which only shrinks)
        ex = 1e-9 * h + 1e-15 * (abs(ox) + abs(px))
        ey = 1e-9 * h + 1e-15 * (abs(oy) + abs(py))
        ez = 1e-9 * h + 1e-15 * (abs(oz) + abs(pz))
        r = math.sqrt(bd[k - 1])
        z0 = _cell(pz - r - ez, oz, h, nz)
        z1 = _cell(pz + r + ez, oz, h, nz)
        y0 = _cell(py - r - ey, oy, h, ny)
        y1 = _cell(py + r + ey, oy, h, ny)
        for z in range(z0, z1 + 1):
            gz = _gap(pz, oz, h, z, ez)
            gz2 = gz * gz
            if gz2 > bd[k - 1]:
                continue
            inz = abs(z - cz) <= R
            for y in range(y0, y1 + 1):
                gy = _gap(py, oy, h, y, ey)
                g2 = gz2 + gy * gy
                worst = bd[k - 1]
                if g2 > worst:
                    continue
                r = math.sqrt(worst - g2) + ex
                xa = _cell(px - r, ox, h, nx)
                xb = _cell(px + r, ox, h, nx)
                row = base + (z * ny + y) * nx
                if inz and abs(y - cy) <= R:  # skip the cells of step 1
                    if xa <= cx - R - 1:
                        _scan(
                            cstart[row + xa],
                            cstart[row + min(xb, cx - R - 1) + 1],
                            i,
                            px,
                            py,
                            pz,
                            sidx,
                            spos,
                            bd,
                            bt,
                            k,
                        )
                    if xb >= cx + R + 1:
                        _scan(
                            cstart[row + max(xa, cx + R + 1)],
                            cstart[row + xb + 1],
                            i,
                            px,
                            py,
                            pz,
                            sidx,
                            spos,
                            bd,
                            bt,
                            k,
                        )
                else:
                    _scan(cstart[row + xa], cstart[row + xb + 1], i, px, py, pz, sidx, spos, bd, bt, k)

    @_nb.njit(cache=True)
    def _slack(g, gorg, gh, gdim):  # pragma: no cover - compiled
        """Rounding slack of group g's grid: a point's cell index may be off at a cell face."""
        h = gh[g]
        return 1e-7 * h + 1e-12 * (
            abs(gorg[g, 0]) + abs(gorg[g, 1]) + abs(gorg[g, 2]) + h * (gdim[g, 0] + gdim[g, 1] + gdim[g, 2])
        )

    @_nb.njit(cache=True)
    def _gather_box(
        lx, ly, lz, hx, hy, hz, r, g, spos, gorg, gh, gdim, gbase, cstart, bx, by, bz, bt
    ):  # pragma: no cover - compiled
        """Copy (SoA) every point of group g within r (+ slack) of the box [l, h] into bx, by, bz
        (slots bt). Returns the count, or -(an upper bound of it) when the buffers are too small."""
        h = gh[g]
        ox = gorg[g, 0]
        oy = gorg[g, 1]
        oz = gorg[g, 2]
        nx = gdim[g, 0]
        ny = gdim[g, 1]
        nz = gdim[g, 2]
        base = gbase[g]
        eps = _slack(g, gorg, gh, gdim)
        re = r + eps
        r2 = re * re
        cap = bx.shape[0]
        m = 0
        for z in range(_cell(lz - re, oz, h, nz), _cell(hz + re, oz, h, nz) + 1):
            gz = max(oz + z * h - hz, lz - (oz + (z + 1) * h), 0.0)
            gz = max(gz - eps, 0.0)
            gz2 = gz * gz
            if gz2 > r2:
                continue
            for y in range(_cell(ly - re, oy, h, ny), _cell(hy + re, oy, h, ny) + 1):
                gy = max(oy + y * h - hy, ly - (oy + (y + 1) * h), 0.0)
                gy = max(gy - eps, 0.0)
                g2 = gz2 + gy * gy
                if g2 > r2:
                    continue
                rx = math.sqrt(r2 - g2) + eps
                row = base + (z * ny + y) * nx
                a = cstart[row + _cell(lx - rx, ox, h, nx)]
                b = cstart[row + _cell(hx + rx, ox, h, nx) + 1]
                if m + (b - a) > cap or cap < 0:  # too small: only count
                    m += b - a
                    cap = -1
                    continue
                for t in range(a, b):  # keep the points within r of the box (branch-free)
                    x = spos[t, 0]
                    y_ = spos[t, 1]
                    z_ = spos[t, 2]
                    dx = max(lx - x, x - hx, 0.0)
                    dy = max(ly - y_, y_ - hy, 0.0)
                    dz = max(lz - z_, z_ - hz, 0.0)
                    bx[m] = x
                    by[m] = y_
                    bz[m] = z_
                    bt[m] = t
                    m += dx * dx + dy * dy + dz * dz <= r2
        return m if cap >= 0 else -m

    @_nb.njit(cache=True)
    def _gather(c, g, spos, gorg, gh, gdim, gbase, cstart, r0, bx, by, bz, bt):  # pragma: no cover - compiled
        """Every point of group g within r0 of cell c's box (see _gather_box)."""
        h = gh[g]
        nx = gdim[g, 0]
        ny = gdim[g, 1]
        cc = c - gbase[g]
        eps = _slack(g, gorg, gh, gdim)
        lx = gorg[g, 0] + (cc % nx) * h - eps  # the cell box, grown by the slack
        ly = gorg[g, 1] + ((cc // nx) % ny) * h - eps
        lz = gorg[g, 2] + (cc // (nx * ny)) * h - eps
        return _gather_box(
            lx,
            ly,
            lz,
            lx + h + 2 * eps,
            ly + h + 2 * eps,
            lz + h + 2 * eps,
            r0,
            g,
            spos,
            gorg,
            gh,
            gdim,
            gbase,
            cstart,
            bx,
            by,
            bz,
            bt,
        )

    @_nb.njit(cache=True)
    def _select(
        t0, px, py, pz, r02, m, bx, by, bz, bt, dd, cd, ct, rk, eqc, sidx, k, bd, bkt
    ):  # pragma: no cover - compiled
        """The k best (squared distance, index) among the m gathered points (slot t0 excluded).

        Tries the radii of the ladder (_LADDER x the squared gather radius r02) that hold enough
        points in turn: keeps the points within the radius (branch-free) and, if at least k
        remain, ranks them (every point farther than the radius is farther than all
        of them, so the k best are exact). Returns 1 (done), 0 (no radius holds k points) or -1
        (more than _RANK_MAX points: the quadratic ranking would be slow)."""
        # squared distances, and how many points lie within each radius of the ladder (vectorised)
        t1 = _LADDER[0] * r02
        t2 = _LADDER[1] * r02
        t3 = _LADDER[2] * r02
        t4 = _LADDER[3] * r02
        c1 = 0
        c2 = 0
        c3 = 0
        c4 = 0
        for u in range(m):
            dx = bx[u] - px
            dy = by[u] - py
            dz = bz[u] - pz
            d2 = dx * dx + dy * dy + dz * dz
            dd[u] = d2
            c1 += d2 <= t1
            c2 += d2 <= t2
            c3 += d2 <= t3
            c4 += d2 <= t4
        for j in range(4):
            cnt = (c1, c2, c3, c4)[j]
            if cnt <= k:  # the seed itself is among them: fewer than k others
                continue
            r2 = (t1, t2, t3, t4)[j]
            n = 0
            for u in range(m):
                d2 = dd[u]
                t = bt[u]
                cd[n] = d2
                ct[n] = t
                n += (d2 <= r2) & (t != t0)
            if n < k:
                continue
            if n > _RANK_MAX:
                return -1
            for a in range(n):
                rk[a] = 0
                eqc[a] = 0
            for b in range(n):  # rank of a = number of (d2, index) pairs before it (vectorised over a)
                db = cd[b]
                for a in range(n):
                    rk[a] += db < cd[a]
                    eqc[a] += db == cd[a]
            for a in range(n):
                rank = rk[a]
                if eqc[a] > 1:  # equal distances (a counts itself once): break ties by index
                    ja = sidx[ct[a]]
                    for b in range(n):
                        if cd[b] == cd[a] and sidx[ct[b]] < ja:
                            rank += 1
                if rank < k:
                    bd[rank] = cd[a]
                    bkt[rank] = ct[a]
            return 1
        return 0

    @_nb.njit(cache=True, inline="always")
    def _emit_inputs(q, t0, spos, snoise, sroll, sidx, k, scale, bt, out, nbo, want_nb):  # pragma: no cover
        """Radial frame of slot t0 (as gbpd.radial_frames) and its float32 input row q."""
        px = spos[t0, 0]
        py = spos[t0, 1]
        pz = spos[t0, 2]
        # Q = R(e1, roll) (2 a a^T - I) with a = (s/|s| + e1) normalised (e2 when s/|s| = -e1)
        nrm = math.sqrt(px * px + py * py + pz * pz)
        if nrm > 1e-12:
            u0 = px / nrm
            u1 = py / nrm
            u2 = pz / nrm
        else:
            u0, u1, u2 = 1.0, 0.0, 0.0
        a0 = u0 + 1.0
        a1 = u1
        a2 = u2
        an = math.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
        if an < 1e-9:
            a0, a1, a2 = 0.0, 1.0, 0.0
        else:
            a0 /= an
            a1 /= an
            a2 /= an
        f00 = 2.0 * a0 * a0 - 1.0
        f01 = 2.0 * a0 * a1
        f02 = 2.0 * a0 * a2
        f10 = 2.0 * a1 * a0
        f11 = 2.0 * a1 * a1 - 1.0
        f12 = 2.0 * a1 * a2
        f20 = 2.0 * a2 * a0
        f21 = 2.0 * a2 * a1
        f22 = 2.0 * a2 * a2 - 1.0
        cg = math.cos(sroll[t0])
        sg = math.sin(sroll[t0])
        q10 = cg * f10 - sg * f20
        q11 = cg * f11 - sg * f21
        q12 = cg * f12 - sg * f22
        q20 = sg * f10 + cg * f20
        q21 = sg * f11 + cg * f21
        q22 = sg * f12 + cg * f22
        for m in range(k):
            s = bt[m]
            dx = spos[s, 0] - px
            dy = spos[s, 1] - py
            dz = spos[s, 2] - pz
            o = 5 * m
            out[q, o] = (f00 * dx + f01 * dy + f02 * dz) / scale
            out[q, o + 1] = (q10 * dx + q11 * dy + q12 * dz) / scale
            out[q, o + 2] = (q20 * dx + q21 * dy + q22 * dz) / scale
            out[q, o + 3] = snoise[s, 0]
            out[q, o + 4] = snoise[s, 1]
            if want_nb:
                nbo[q, m] = sidx[s]

    @_nb.njit(cache=True)
    def _block(
        blk,
        spos,
        snoise,
        sroll,
        sidx,
        gid,
        qrow,
        gorg,
        gh,
        gdk,
        gdim,
        gbase,
        cstart,
        k,
        rfac,
        scale,
        inputs,
        out,
        nbo,
        d2o,
        want_nb,
    ):  # pragma: no cover - compiled
        """The cells of one parallel task: gather the points within r0 = rfac * d_k of each cell
        once, then per queried point of the cell select its k nearest among them (exact when >= k
        lie within r0, else the incremental search) and write the input row (inputs) or (nbo, d2o).

        Numba note: keep this loop lean; extra (even unexecuted) code here, e.g. an inlined retry
        path, made the whole kernel ~1.5x slower."""
        ncell = cstart.shape[0] - 1
        bx, by, bz, bt, dd, cd, ct, rk, eqc = _buffers(256)
        bd = np.empty(k)
        bkt = np.empty(k, dtype=np.int64)
        for c in range(blk * _CELLS_PER_TASK, min(ncell, (blk + 1) * _CELLS_PER_TASK)):
            a = cstart[c]
            b = cstart[c + 1]
            nq = 0
            for t in range(a, b):
                nq += qrow[sidx[t]] >= 0
            if nq == 0:
                continue
            g = gid[sidx[a]]
            r0 = rfac * gdk[g]
            m = -1
            if r0 > 0:
                m = _gather(c, g, spos, gorg, gh, gdim, gbase, cstart, r0, bx, by, bz, bt)
                if m < 0:
                    bx, by, bz, bt, dd, cd, ct, rk, eqc = _buffers(-m + 64)
                    m = _gather(c, g, spos, gorg, gh, gdim, gbase, cstart, r0, bx, by, bz, bt)
            for t0 in range(a, b):
                q = qrow[sidx[t0]]
                if q < 0:
                    continue
                status = -1
                if r0 > 0:
                    x0 = spos[t0, 0]
                    y0 = spos[t0, 1]
                    z0 = spos[t0, 2]
                    status = _select(t0, x0, y0, z0, r0 * r0, m, bx, by, bz, bt, dd, cd, ct, rk, eqc, sidx, k, bd, bkt)
                if status != 1:  # the incremental search (~2 % of a Poisson pattern's seeds; more in sparse,
                    # clustered or degenerate ones). Gathering again around the seed with a larger radius
                    # timed slower, and so did any inlined retry code here (numba codegen of the hot loop).
                    _query(t0, sidx, spos, g, gorg, gh, gdim, gbase, cstart, k, bd, bkt)
                if inputs:
                    _emit_inputs(q, t0, spos, snoise, sroll, sidx, k, scale, bkt, out, nbo, want_nb)
                else:
                    for u in range(k):
                        nbo[q, u] = sidx[bkt[u]] if bkt[u] >= 0 else -1
                        d2o[q, u] = bd[u]

    @_nb.njit(cache=True)
    def _buffers(cap):  # pragma: no cover - compiled
        """Gather buffers (bx, by, bz, bt) of size cap and selection buffers of size cap + 1."""
        return (
            np.empty(cap),
            np.empty(cap),
            np.empty(cap),
            np.empty(cap, dtype=np.int64),
            np.empty(cap + 1),
            np.empty(cap + 1),
            np.empty(cap + 1, dtype=np.int64),
            np.empty(cap + 1, dtype=np.int64),
            np.empty(cap + 1, dtype=np.int64),
        )

    @_nb.njit(cache=True, parallel=True)
    def _nb_batched(
        spos,
        snoise,
        sroll,
        sidx,
        gid,
        qrow,
        gorg,
        gh,
        gdk,
        gdim,
        gbase,
        cstart,
        k,
        rfac,
        scale,
        inputs,
        out,
        nbo,
        d2o,
        want_nb,
    ):  # pragma: no cover - compiled
        """All queried points, in parallel over blocks of ``_CELLS_PER_TASK`` grid cells (see _block)."""
        nblock = (cstart.shape[0] - 1 + _CELLS_PER_TASK - 1) // _CELLS_PER_TASK
        for blk in _nb.prange(nblock):
            _block(
                blk,
                spos,
                snoise,
                sroll,
                sidx,
                gid,
                qrow,
                gorg,
                gh,
                gdk,
                gdim,
                gbase,
                cstart,
                k,
                rfac,
                scale,
                inputs,
                out,
                nbo,
                d2o,
                want_nb,
            )


def box_mask(points: np.ndarray, lo, hi) -> np.ndarray:
    """``lo <= p <= hi`` on every axis, per point.

    Parameters
    ----------
    points : (N, 3) float array
        Points.
    lo, hi : (3,) array-like
        Box corners.

    Returns
    -------
    (N,) bool array
    """
    points = np.asarray(points, dtype=np.float64)
    return np.all((points >= np.asarray(lo, dtype=np.float64)) & (points <= np.asarray(hi, dtype=np.float64)), axis=1)
