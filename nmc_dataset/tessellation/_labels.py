"""Exact hard labels of a GBPD on points and grids: pruned, compiled kernels.

The result equals the brute-force argmin over all seeds (:func:`nmc_dataset.testing.hard_labels_bruteforce`),
ties to the lowest index, at a cost that grows with the number of *competing* cells per box instead
of all cells.
"""

from __future__ import annotations

import itertools

import numba as _nb
import numpy as np
from scipy.spatial import cKDTree

from nmc_dataset.tessellation._gbpd import GBPD, _grid_origin, power_distances


def _resolve_numba(use_numba: bool | None) -> bool:
    """``None`` or ``True``: the compiled kernels; ``False``: the numpy version of the same algorithm."""
    return True if use_numba is None else bool(use_numba)


# --------------------------------------------------------------------------- exact pruned kernels
# Why the pruning is exact. Let f_i(x) = |x - s_i|^2_{M_i} - r_i and B an axis-aligned box.
# Lower bound: write q_k for row k of Q_i. Over B the linear function t_k(x) = q_k . (x - s_i)
# ranges over [c_k - h_k, c_k + h_k] (c_k its value at the box centre, h_k = sum_j |q_kj| w_j with
# w the half widths), so with lo_k = min |t_k| on that interval
#     LB_i(B) = sum_k d_k lo_k^2 - r_i  <=  f_i(x)   for all x in B.
# Upper bound: f_i is convex, so its maximum over a box is at one of the 8 corners. For any cells,
# U(B) = max over the octants O of B of min_i max_{corners of O} f_i  >=  min_j f_j(x) for every
# x in B (x lies in some octant O, where min_j f_j(x) <= f_i(x) <= max_O f_i for every i). So a
# cell with LB_i(B) > U(B) can win nowhere in B and is dropped. Boxes are grouped into coarse
# boxes C with U(C) = max of U(B) over their boxes (valid on C); only cells with LB_i(C) <= U(C)
# are tested on the boxes of C (LB_i(C) <= LB_i(B)). Those are found among the cells within
# h_C + sqrt((U(C) + r_i) / dmin_i) of C's centre (a k-d tree query; M_i >= dmin_i I), or tested
# directly when dmin_i is so small that this radius is useless. Inside a box the list is refined
# the same way on sub-boxes, and per point the cells are visited in increasing LB and the scan
# stops once the LB exceeds the best power distance found (ties: lowest index, as the brute
# force). All comparisons carry a relative slack of 1e-9 so that rounding can only keep cells.
# Rows: on a grid every row segment {x in [xa, xb], y, z fixed} of a sub-box gets its own list.
# With M = Q^T D Q, u = x - s_x, dy = y - s_y, dz = z - s_z and beta = M_xy dy + M_xz dz,
#     f_i = M_xx (u + beta / M_xx)^2 + q_S(dy, dz) - r_i,
# q_S the quadratic form of the Schur complement S = M_yz,yz - m m^T / M_xx (m = (M_xy, M_xz)):
# a parabola in x, whose exact minimum (at x* = s_x - beta / M_xx clamped to the segment) and
# maximum (at an end) over the segment are a lower bound and, over the cells, an upper bound of
# the winner there. Rounding of both forms is below a few 1e-16 of D_max |x - s|^2 + |r|, so the
# row bounds are widened by 1e-9 of that; the scan of a point stops as above.
_SLACK = 1e-9
_ROW_SLACK = 1e-9


def _box_bounds_py(lo, hi, s, q, d, r):
    """Numpy (vectorised over boxes x cells) LB/UB of the note above: lo/hi (B, 3); s, d (C, 3); q (C, 3, 3)."""
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    c = np.einsum("ckj,bcj->bck", q, mid[:, None, :] - s[None, :, :])
    h = np.einsum("ckj,bj->bck", np.abs(q), half)
    a, b = c - h, c + h
    mn = np.where((a <= 0) & (b >= 0), 0.0, np.minimum(np.abs(a), np.abs(b)))
    mx = np.maximum(np.abs(a), np.abs(b))
    return (mn * mn * d[None]).sum(-1) - r[None], (mx * mx * d[None]).sum(-1) - r[None]


@_nb.njit(cache=True, inline="always")
def _bounds_one(lo0, lo1, lo2, hi0, hi1, hi2, S, Q, D, R, i):  # pragma: no cover - compiled
    m0 = 0.5 * (lo0 + hi0) - S[i, 0]
    m1 = 0.5 * (lo1 + hi1) - S[i, 1]
    m2 = 0.5 * (lo2 + hi2) - S[i, 2]
    w0 = 0.5 * (hi0 - lo0)
    w1 = 0.5 * (hi1 - lo1)
    w2 = 0.5 * (hi2 - lo2)
    lb = 0.0
    ub = 0.0
    for k in range(3):
        c = Q[i, k, 0] * m0 + Q[i, k, 1] * m1 + Q[i, k, 2] * m2
        h = abs(Q[i, k, 0]) * w0 + abs(Q[i, k, 1]) * w1 + abs(Q[i, k, 2]) * w2
        a = c - h
        b = c + h
        aa = abs(a)
        bb = abs(b)
        if a <= 0.0 and b >= 0.0:
            mn = 0.0
        else:
            mn = min(aa, bb)
        mx = max(aa, bb)
        lb += D[i, k] * mn * mn
        ub += D[i, k] * mx * mx
    return lb - R[i], ub - R[i]


@_nb.njit(cache=True, inline="always")
def _power(x0, x1, x2, S, Q, D, R, i):  # pragma: no cover - compiled
    d0 = x0 - S[i, 0]
    d1 = x1 - S[i, 1]
    d2 = x2 - S[i, 2]
    l0 = Q[i, 0, 0] * d0 + Q[i, 0, 1] * d1 + Q[i, 0, 2] * d2
    l1 = Q[i, 1, 0] * d0 + Q[i, 1, 1] * d1 + Q[i, 1, 2] * d2
    l2 = Q[i, 2, 0] * d0 + Q[i, 2, 1] * d1 + Q[i, 2, 2] * d2
    return l0 * l0 * D[i, 0] + l1 * l1 * D[i, 1] + l2 * l2 * D[i, 2] - R[i]


@_nb.njit(cache=True, inline="always")
def _box_max(lo0, lo1, lo2, hi0, hi1, hi2, S, Q, D, R, i):  # pragma: no cover - compiled
    """max of f_i over a box: f_i is convex, so the max is at one of the 8 corners."""
    best = -np.inf
    for c in range(8):
        x0 = hi0 if c & 1 else lo0
        x1 = hi1 if c & 2 else lo1
        x2 = hi2 if c & 4 else lo2
        f = _power(x0, x1, x2, S, Q, D, R, i)
        if f > best:
            best = f
    return best


@_nb.njit(cache=True)
def _nb_box_upper(blo, bhi, knn, S, Q, D, R):  # pragma: no cover - compiled
    """U(B) = max over the 8 octants O of B of min over the kNN cells of max_O f_i."""
    nb = blo.shape[0]
    k = knn.shape[1]
    out = np.empty(nb)
    vals = np.empty((k, 27))
    for b in range(nb):
        g0 = (blo[b, 0], 0.5 * (blo[b, 0] + bhi[b, 0]), bhi[b, 0])
        g1 = (blo[b, 1], 0.5 * (blo[b, 1] + bhi[b, 1]), bhi[b, 1])
        g2 = (blo[b, 2], 0.5 * (blo[b, 2] + bhi[b, 2]), bhi[b, 2])
        for t in range(k):
            i = knn[b, t]
            for c in range(27):
                vals[t, c] = _power(g0[c % 3], g1[(c // 3) % 3], g2[c // 9], S, Q, D, R, i)
        worst = -np.inf
        for o in range(8):
            ox = o & 1
            oy = (o >> 1) & 1
            oz = (o >> 2) & 1
            best = np.inf
            for t in range(k):
                m = -np.inf
                for c in range(8):
                    cx = ox + (c & 1)
                    cy = oy + ((c >> 1) & 1)
                    cz = oz + ((c >> 2) & 1)
                    v = vals[t, cx + 3 * cy + 9 * cz]
                    if v > m:
                        m = v
                if m < best:
                    best = m
            if best > worst:
                worst = best
        out[b] = worst + _SLACK * (abs(worst) + 1.0)
    return out


@_nb.njit(cache=True, inline="always")
def _fine_list(b, blo, bhi, bU, bcoarse, cstart, cidx, S, Q, D, R):  # pragma: no cover - compiled
    c = bcoarse[b]
    m = cstart[c + 1] - cstart[c]
    lbs = np.empty(m)
    ids = np.empty(m, dtype=np.int64)
    k = 0
    for t in range(cstart[c], cstart[c + 1]):
        i = cidx[t]
        lb, _ = _bounds_one(blo[b, 0], blo[b, 1], blo[b, 2], bhi[b, 0], bhi[b, 1], bhi[b, 2], S, Q, D, R, i)
        if lb - _SLACK * (abs(lb) + 1.0) <= bU[b]:
            lbs[k] = lb - _SLACK * (abs(lb) + 1.0)
            ids[k] = i
            k += 1
    order = np.argsort(lbs[:k])
    return ids[:k][order], lbs[:k][order]


@_nb.njit(cache=True, inline="always")
def _argmin_sorted(x0, x1, x2, ids, lbs, S, Q, D, R, guess):  # pragma: no cover - compiled
    besti = guess
    best = np.inf
    if guess >= 0:
        best = _power(x0, x1, x2, S, Q, D, R, guess)
    for t in range(ids.shape[0]):
        if lbs[t] > best:
            break
        i = ids[t]
        if i == guess:
            continue
        f = _power(x0, x1, x2, S, Q, D, R, i)
        if f < best or (f == best and i < besti):
            best = f
            besti = i
    return besti


@_nb.njit(cache=True, inline="always")
def _pack(ids, S, Q, D, R, RC):  # pragma: no cover - compiled
    """Copy the cells ``ids`` into one small contiguous (k, 23) array (s, Q row-major, D, r, row data)."""
    k = ids.shape[0]
    loc = np.empty((k, 23))
    for t in range(k):
        i = ids[t]
        for j in range(3):
            loc[t, j] = S[i, j]
            loc[t, 12 + j] = D[i, j]
            for m in range(3):
                loc[t, 3 + 3 * j + m] = Q[i, j, m]
        loc[t, 15] = R[i]
        for j in range(7):
            loc[t, 16 + j] = RC[i, j]
    return loc


@_nb.njit(cache=True, inline="always")
def _power_loc(x0, x1, x2, loc, t):  # pragma: no cover - compiled
    d0 = x0 - loc[t, 0]
    d1 = x1 - loc[t, 1]
    d2 = x2 - loc[t, 2]
    l0 = loc[t, 3] * d0 + loc[t, 4] * d1 + loc[t, 5] * d2
    l1 = loc[t, 6] * d0 + loc[t, 7] * d1 + loc[t, 8] * d2
    l2 = loc[t, 9] * d0 + loc[t, 10] * d1 + loc[t, 11] * d2
    return l0 * l0 * loc[t, 12] + l1 * l1 * loc[t, 13] + l2 * l2 * loc[t, 14] - loc[t, 15]


@_nb.njit(cache=True, inline="always")
def _row_list(xa, xb, y, z, loc, cand, m, tmp, rt, rlb):  # pragma: no cover - compiled
    """Cells of a sub-block list (positions ``0..m-1`` in ``loc``) that may win on the row segment
    ``{(x, y, z) : xa <= x <= xb}``, written to ``rt`` sorted by their lower bound ``rlb``; returns
    their count. Along the row f_t is the parabola ``M00 (x - x*)^2 + q_S(dy, dz) - r`` (the
    row-note above ``_box_bounds_py``), so its exact minimum and maximum over the segment are known.
    The candidates are ``cand[:m]`` (positions in ``loc``)."""
    U = np.inf
    for u in range(m):
        t = cand[u]
        sx = loc[t, 0]
        dy = y - loc[t, 1]
        dz = z - loc[t, 2]
        m00 = loc[t, 16]
        xs = sx - (loc[t, 17] * dy + loc[t, 18] * dz) / m00
        xc = min(max(xs, xa), xb)
        qs = loc[t, 19] * dy * dy + 2.0 * loc[t, 20] * dy * dz + loc[t, 21] * dz * dz - loc[t, 15]
        ea = xa - xs
        eb = xb - xs
        ec = xc - xs
        da = max(abs(xa - sx), abs(xb - sx))
        sl = _ROW_SLACK * (loc[t, 22] * (da * da + dy * dy + dz * dz) + abs(loc[t, 15]) + 1.0)
        tmp[u] = m00 * ec * ec + qs - sl
        hi = m00 * max(ea * ea, eb * eb) + qs + sl
        if hi < U:
            U = hi
    k = 0
    for u in range(m):
        t = cand[u]
        lb = tmp[u]
        if lb <= U:
            j = k
            while j > 0 and rlb[j - 1] > lb:
                rlb[j] = rlb[j - 1]
                rt[j] = rt[j - 1]
                j -= 1
            rlb[j] = lb
            rt[j] = t
            k += 1
    return k


@_nb.njit(cache=True, inline="always")
def _argmin_row(x0, x1, x2, ids, loc, rt, rlb, nr, gp):  # pragma: no cover - compiled
    """Position (in ``ids``) of the minimiser among a row list; ``gp`` is a first guess (or -1)."""
    bp = gp
    best = np.inf
    if gp >= 0:
        best = _power_loc(x0, x1, x2, loc, gp)
    for u in range(nr):
        if rlb[u] > best:
            break
        t = rt[u]
        if t == bp:
            continue
        f = _power_loc(x0, x1, x2, loc, t)
        if f < best or (f == best and ids[t] < ids[bp]):
            best = f
            bp = t
    return bp


@_nb.njit(cache=True, inline="always")
def _sub_list(lo0, lo1, lo2, hi0, hi1, hi2, ids, U, S, Q, D, R):  # pragma: no cover - compiled
    """Refine a block's candidate list (``ids``, sorted by their block bound) to a sub-box."""
    m = ids.shape[0]
    for t in range(min(m, 6)):  # tighten U with the most promising cells
        ub = _box_max(lo0, lo1, lo2, hi0, hi1, hi2, S, Q, D, R, ids[t])
        ub = ub + _SLACK * (abs(ub) + 1.0)
        if ub < U:
            U = ub
    lbs = np.empty(m)
    out = np.empty(m, dtype=np.int64)
    k = 0
    for t in range(m):
        lb, _ = _bounds_one(lo0, lo1, lo2, hi0, hi1, hi2, S, Q, D, R, ids[t])
        lb = lb - _SLACK * (abs(lb) + 1.0)
        if lb <= U:
            lbs[k] = lb
            out[k] = ids[t]
            k += 1
    order = np.argsort(lbs[:k])
    return out[:k][order], lbs[:k][order]


@_nb.njit(cache=True, inline="always")
def _bounds_loc(lo0, lo1, lo2, hi0, hi1, hi2, loc, t):  # pragma: no cover - compiled
    """Lower bound of cell ``t`` of a packed list over a box (``_bounds_one``'s LB, widened by the slack)."""
    m0 = 0.5 * (lo0 + hi0) - loc[t, 0]
    m1 = 0.5 * (lo1 + hi1) - loc[t, 1]
    m2 = 0.5 * (lo2 + hi2) - loc[t, 2]
    w0 = 0.5 * (hi0 - lo0)
    w1 = 0.5 * (hi1 - lo1)
    w2 = 0.5 * (hi2 - lo2)
    lb = 0.0
    for k in range(3):
        q0 = loc[t, 3 + 3 * k]
        q1 = loc[t, 4 + 3 * k]
        q2 = loc[t, 5 + 3 * k]
        c = q0 * m0 + q1 * m1 + q2 * m2
        h = abs(q0) * w0 + abs(q1) * w1 + abs(q2) * w2
        if c - h > 0.0:
            lb += loc[t, 12 + k] * (c - h) * (c - h)
        elif c + h < 0.0:
            lb += loc[t, 12 + k] * (c + h) * (c + h)
    lb -= loc[t, 15]
    return lb - _SLACK * (abs(lb) + 1.0)


@_nb.njit(cache=True, parallel=True)
def _nb_label_grid(
    out,
    mask,
    use_mask,
    bs,
    sub,
    nsb,
    nbx,
    nby,
    nbz,
    ox,
    oy,
    oz,
    sp,
    fU,
    blo,
    bhi,
    bU,
    bcoarse,
    cstart,
    cidx,
    S,
    Q,
    D,
    R,
    RC,
):  # pragma: no cover - compiled
    """Per block: its list (packed); per sub-box of the block: the cells whose box bound is within
    the sub-box's U; per z-plane of the sub-box: the same on the plane; per row: ``_row_list``;
    per point: the scan of ``_argmin_row`` (starting from the previous point's winner)."""
    nz, ny, nx = out.shape
    nbox = nbx * nby * nbz
    for b in _nb.prange(nbox):
        if not np.isfinite(bU[b]):
            continue
        bz = b // (nbx * nby)
        by = (b // nbx) % nby
        bx = b % nbx
        ids, _ = _fine_list(b, blo, bhi, bU, bcoarse, cstart, cidx, S, Q, D, R)
        mb = ids.shape[0]
        loc = _pack(ids, S, Q, D, R, RC)
        sc = np.empty(mb, dtype=np.int64)
        pc = np.empty(mb, dtype=np.int64)
        tmp = np.empty(mb)
        rt = np.empty(mb, dtype=np.int64)
        rlb = np.empty(mb)
        gp = -1
        for sz in range(bz * bs, min(nz, (bz + 1) * bs), sub):
            ez = min(nz, (bz + 1) * bs, sz + sub)
            for sy in range(by * bs, min(ny, (by + 1) * bs), sub):
                ey = min(ny, (by + 1) * bs, sy + sub)
                for sx in range(bx * bs, min(nx, (bx + 1) * bs), sub):
                    ex = min(nx, (bx + 1) * bs, sx + sub)
                    U = fU[
                        bz * nsb + (sz - bz * bs) // sub,
                        by * nsb + (sy - by * bs) // sub,
                        bx * nsb + (sx - bx * bs) // sub,
                    ]
                    if not np.isfinite(U):  # masked out
                        continue
                    x0 = ox + sp * sx
                    y0 = oy + sp * sy
                    x1 = ox + sp * (ex - 1)
                    y1 = oy + sp * (ey - 1)
                    ns = 0
                    for t in range(mb):
                        if _bounds_loc(x0, y0, oz + sp * sz, x1, y1, oz + sp * (ez - 1), loc, t) <= U:
                            sc[ns] = t
                            ns += 1
                    for iz in range(sz, ez):
                        z = oz + sp * iz
                        npl = 0
                        for u in range(ns):  # the cells that may win on this plane of the sub-box
                            if _bounds_loc(x0, y0, z, x1, y1, z, loc, sc[u]) <= U:
                                pc[npl] = sc[u]
                                npl += 1
                        for iy in range(sy, ey):
                            y = oy + sp * iy
                            a = sx
                            e = ex - 1
                            if use_mask:
                                while a <= e and not mask[iz, iy, a]:
                                    a += 1
                                while e >= a and not mask[iz, iy, e]:
                                    e -= 1
                                if a > e:
                                    continue
                            nr = _row_list(ox + sp * a, ox + sp * e, y, z, loc, pc, npl, tmp, rt, rlb)
                            for ix in range(a, e + 1):
                                if use_mask and not mask[iz, iy, ix]:
                                    continue
                                gp = _argmin_row(ox + sp * ix, y, z, ids, loc, rt, rlb, nr, gp)
                                out[iz, iy, ix] = ids[gp]


@_nb.njit(cache=True, parallel=True)
def _nb_label_points(out, pts, bstart, blo, bhi, bU, bcoarse, cstart, cidx, S, Q, D, R):  # pragma: no cover
    nbox = bstart.shape[0] - 1
    for b in _nb.prange(nbox):
        ids, lbs = _fine_list(b, blo, bhi, bU, bcoarse, cstart, cidx, S, Q, D, R)
        guess = -1
        for p in range(bstart[b], bstart[b + 1]):
            guess = _argmin_sorted(pts[p, 0], pts[p, 1], pts[p, 2], ids, lbs, S, Q, D, R, guess)
            out[p] = guess


#: Below this many points the compiled kernels run on one thread (thread start-up costs more).
_PARALLEL_MIN_POINTS = 1 << 20


class _numba_threads:
    """Context manager: small jobs run the numba kernels on one thread (restored afterwards)."""

    def __init__(self, npoints: int):
        self.one = npoints < _PARALLEL_MIN_POINTS

    def __enter__(self):
        if self.one:
            self.saved = _nb.get_num_threads()
            _nb.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.one:
            _nb.set_num_threads(self.saved)
        return False


def _as3d(g: GBPD):
    """Seeds, frames, diagonals and offsets padded to 3D (a 2D GBPD gets a zero z and a unit third axis)."""
    q = g.frames()
    if g.dim == 3:
        return g.seeds, np.ascontiguousarray(q), g.diag, g.offsets
    n = g.n
    s = np.zeros((n, 3))
    s[:, :2] = g.seeds
    q3 = np.zeros((n, 3, 3))
    q3[:, :2, :2] = q
    q3[:, 2, 2] = 1.0
    d = np.ones((n, 3))
    d[:, :2] = g.diag
    return s, q3, d, g.offsets


def _row_data(q, d):
    """Per cell ``(M_xx, M_xy, M_xz, S_yy, S_yz, S_zz, D_max)``: the row parabolas of the note above
    ``_box_bounds_py`` (M = Q^T D Q, S its Schur complement on (y, z))."""
    m = np.einsum("nki,nk,nkj->nij", q, d, q)
    mxx = m[:, 0, 0]
    out = np.empty((len(q), 7))
    out[:, 0] = mxx
    out[:, 1] = m[:, 0, 1]
    out[:, 2] = m[:, 0, 2]
    out[:, 3] = m[:, 1, 1] - m[:, 0, 1] * m[:, 0, 1] / mxx
    out[:, 4] = m[:, 1, 2] - m[:, 0, 1] * m[:, 0, 2] / mxx
    out[:, 5] = m[:, 2, 2] - m[:, 0, 2] * m[:, 0, 2] / mxx
    out[:, 6] = d.max(axis=1)
    return out


def _sub_box_upper(shape3, mask3, bs, sb, org3, spacing, s, q, d, r):
    """U of every sub-box of a grid (blocks of ``bs`` points split into sub-boxes of ``sb``), NaN
    where a sub-box is empty or masked out; shape ``(nbz * nsb, nby * nsb, nbx * nsb)``.

    Bounds from small boxes are tight (a cell's largest power distance over a box grows with the
    box), so the blocks take the largest U of their sub-boxes rather than bounds of their own."""
    nsb = -(-bs // sb)
    starts, ends, valid = [], [], []
    for n in shape3[::-1]:  # x, y, z
        nb = -(-n // bs)
        st = (np.arange(nb)[:, None] * bs + np.arange(nsb)[None, :] * sb).ravel()
        en = np.minimum(st + sb, np.repeat(np.minimum((np.arange(nb) + 1) * bs, n), nsb))
        starts.append(st)
        ends.append(en)
        valid.append(np.flatnonzero(st < en))
    fU = np.full((len(starts[2]), len(starts[1]), len(starts[0])), np.nan)
    vx, vy, vz = valid
    if mask3 is not None:  # the valid sub-boxes tile each axis in order
        m = np.logical_or.reduceat(mask3, starts[2][vz], axis=0)
        m = np.logical_or.reduceat(m, starts[1][vy], axis=1)
        live = np.logical_or.reduceat(m, starts[0][vx], axis=2)
    else:
        live = np.ones((len(vz), len(vy), len(vx)), dtype=bool)
    kz, ky, kx = np.nonzero(live)
    if len(kz) == 0:
        return fU
    iz, iy, ix = vz[kz], vy[ky], vx[kx]
    lo = org3 + spacing * np.stack([starts[0][ix], starts[1][iy], starts[2][iz]], 1)
    hi = org3 + spacing * (np.stack([ends[0][ix], ends[1][iy], ends[2][iz]], 1) - 1)
    fU[iz, iy, ix] = _upper_bounds(lo, hi, s, q, d, r)
    return fU


def _upper_bounds(blo, bhi, s, q, d, r, k=8):
    """U(B) per box from the ``k`` seeds nearest each box centre (valid upper bounds; inf for none)."""

    k = min(k, len(s))
    _, knn = cKDTree(s).query(0.5 * (blo + bhi), k=k)
    knn = np.asarray(knn, dtype=np.int64).reshape(len(blo), k)
    return _nb_box_upper(blo, bhi, knn, s, q, d, r)


def _coarse_prefilter(clo, chi, cU, s, d, r, reach: float = 48.0, classes: int = 8):
    """Cells that may pass ``LB_i(C) <= U(C)``, found with k-d trees (a superset; the exact test follows).

    The true minimum of f_i over C is at least ``dmin_i * max(0, |s_i - m_C| - h_C)^2 - r_i``
    (``M_i >= dmin_i I``; m_C the centre, h_C the half diagonal of C), so a cell that can win in C
    lies within ``h_C + sqrt((U(C) + r_i) / dmin_i)`` of m_C. Cells whose ``dmin`` would make that
    radius exceed ``reach`` (at the 95th percentile of U) are returned apart as ``extra`` (they are
    tested against every box); the others are grouped by ``dmin`` into geometric classes with one
    radius each (the class's smallest ``dmin`` and largest ``r``).

    Returns
    -------
    start, idx : CSR arrays of candidate cells per coarse box
    extra : int64 array of cells to test against every box
    """

    nc = len(clo)
    live_idx = np.flatnonzero(np.isfinite(cU))
    m = 0.5 * (clo + chi)
    h = 0.5 * np.linalg.norm(chi - clo, axis=1)
    dmin = d.min(1)
    if len(live_idx) == 0:
        return np.zeros(nc + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    u95 = float(np.percentile(cU[live_idx], 95)) + float(r.max())
    tau = max(u95, 1e-12) / reach**2
    extra = np.flatnonzero(dmin < tau)
    good = np.flatnonzero(dmin >= tau)
    boxes, cells = [], []
    if len(good):
        lo_d, hi_d = float(dmin[good].min()), float(dmin[good].max())
        edges = np.geomspace(lo_d, hi_d * (1 + 1e-12), classes + 1) if hi_d > lo_d else np.array([lo_d, np.inf])
        cls = np.clip(np.searchsorted(edges, dmin[good], side="right") - 1, 0, len(edges) - 2)
        for k in range(len(edges) - 1):
            grp = good[cls == k]
            if len(grp) == 0:
                continue
            tree = cKDTree(s[grp])
            dm = float(dmin[grp].min())
            rmax = float(r[grp].max())
            hl = h[live_idx]
            rad = hl + np.sqrt(np.maximum(cU[live_idx] + rmax, 0.0) / dm) * (1 + _SLACK) + 1e-9 * (1 + hl)
            hits = tree.query_ball_point(m[live_idx], rad, return_sorted=False)
            lengths = np.fromiter((len(x) for x in hits), dtype=np.int64, count=len(hits))
            flat = np.fromiter(itertools.chain.from_iterable(hits), dtype=np.int64, count=int(lengths.sum()))
            boxes.append(np.repeat(live_idx, lengths))
            cells.append(grp[flat])
    boxes = np.concatenate(boxes) if boxes else np.zeros(0, np.int64)
    cells = np.concatenate(cells) if cells else np.zeros(0, np.int64)
    order = np.argsort(boxes, kind="stable")
    start = np.searchsorted(boxes[order], np.arange(nc + 1)).astype(np.int64)
    return start, np.ascontiguousarray(cells[order]), extra


@_nb.njit(cache=True)
def _nb_filter_candidates(clo, chi, cU, pstart, pidx, extra, S, Q, D, R):  # pragma: no cover - compiled
    nc = clo.shape[0]
    keep = np.zeros(pidx.shape[0], dtype=np.bool_)
    keep_extra = np.zeros((nc, extra.shape[0]), dtype=np.bool_)
    for c in range(nc):
        if not np.isfinite(cU[c]):
            continue
        for t in range(pstart[c], pstart[c + 1]):
            lb, _ = _bounds_one(clo[c, 0], clo[c, 1], clo[c, 2], chi[c, 0], chi[c, 1], chi[c, 2], S, Q, D, R, pidx[t])
            keep[t] = lb - _SLACK * (abs(lb) + 1.0) <= cU[c]
        for t in range(extra.shape[0]):
            lb, _ = _bounds_one(clo[c, 0], clo[c, 1], clo[c, 2], chi[c, 0], chi[c, 1], chi[c, 2], S, Q, D, R, extra[t])
            keep_extra[c, t] = lb - _SLACK * (abs(lb) + 1.0) <= cU[c]
    return keep, keep_extra


def _coarse_candidates(clo, chi, cU, s, q, d, r):
    """Cells with ``LB_i(C) <= U(C)`` per coarse box C (a superset of the possible winners), as CSR
    arrays (start, idx); cells are ordered by index within a box."""
    pstart, pidx, extra = _coarse_prefilter(clo, chi, cU, s, d, r)
    nc = len(clo)
    box = np.repeat(np.arange(nc), np.diff(pstart))
    keep, keep_extra = _nb_filter_candidates(clo, chi, cU, pstart, pidx, extra, s, q, d, r)
    eb, et = np.nonzero(keep_extra)
    boxes = np.concatenate([box[keep], eb])
    cells = np.concatenate([pidx[keep], extra[et]])
    order = np.lexsort((cells, boxes))
    start = np.searchsorted(boxes[order], np.arange(nc + 1)).astype(np.int64)
    return start, np.ascontiguousarray(cells[order])


def _label_box_numpy(pts, b, blo, bhi, bU, bcoarse, cstart, cidx, s, q, d, r):
    """Plain twin of the compiled per-box kernel: exact argmin over the box's surviving cells."""
    c = bcoarse[b]
    cand = cidx[cstart[c] : cstart[c + 1]]
    lb, _ = _box_bounds_py(blo[b : b + 1], bhi[b : b + 1], s[cand], q[cand], d[cand], r[cand])
    cand = np.sort(cand[lb[0] - _SLACK * (np.abs(lb[0]) + 1.0) <= bU[b]])
    diff = pts[:, None, :] - s[cand][None]
    local = np.einsum("nij,pnj->pni", q[cand], diff)
    f = np.einsum("pni,ni->pn", local * local, d[cand]) - r[cand][None, :]
    return cand[np.argmin(f, axis=1)]


def _coarse_of(bidx3: np.ndarray, group: int):
    """Coarse-box id of each box (boxes given by integer (B, 3) indices), grouping ``group``^3 boxes."""
    key = bidx3 // group
    _, inv = np.unique(key, axis=0, return_inverse=True)
    return np.asarray(inv, dtype=np.int64).reshape(-1)


def _coarse_boxes(blo, bhi, bU, bcoarse):
    """Coarse boxes (hull of their boxes) and U(C) = max U(B) over their boxes; NaN = nothing to label."""
    nc = int(bcoarse.max()) + 1 if len(bcoarse) else 0
    clo = np.full((nc, 3), np.inf)
    chi = np.full((nc, 3), -np.inf)
    cU = np.full(nc, -np.inf)
    live = np.isfinite(bU)
    np.minimum.at(clo, bcoarse[live], blo[live])
    np.maximum.at(chi, bcoarse[live], bhi[live])
    np.maximum.at(cU, bcoarse[live], bU[live])
    empty = ~np.isfinite(cU)
    clo[empty] = 0.0
    chi[empty] = 0.0
    cU[empty] = np.nan
    return clo, chi, cU


def _bucket_points(p3: np.ndarray, dim: int, nseeds: int, box_size: float | None):
    """Sort points into cubic buckets: (order, bstart, keys (B, 3), sorted points, box lo, box hi)."""
    npts = len(p3)
    lo, hi = p3.min(0), p3.max(0)
    if box_size is None:
        ext = np.maximum(hi - lo, 1e-9)[:dim]
        box_size = 2.0 * float(np.prod(ext) / max(nseeds, 1)) ** (1.0 / dim)
        box_size = max(box_size, float(ext.max()) / 512.0)
    bidx = np.floor((p3 - lo) / box_size).astype(np.int64)
    bidx[:, dim:] = 0
    nbx, nby = int(bidx[:, 0].max()) + 1, int(bidx[:, 1].max()) + 1
    key = (bidx[:, 2] * nby + bidx[:, 1]) * nbx + bidx[:, 0]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    first = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
    bstart = np.concatenate([first, [npts]]).astype(np.int64)
    kl = ks[first]
    keys = np.stack([kl % nbx, (kl // nbx) % nby, kl // (nbx * nby)], 1)
    ps = np.ascontiguousarray(p3[order])
    blo = np.minimum.reduceat(ps, bstart[:-1], axis=0)
    bhi = np.maximum.reduceat(ps, bstart[:-1], axis=0)
    return order, bstart, keys, ps, blo, bhi


def hard_labels(
    g: GBPD, points: np.ndarray, box_size: float | None = None, use_numba: bool | None = None
) -> np.ndarray:
    """Exact hard labels (index of the seed minimising the power distance) of arbitrary points.

    Points are bucketed into boxes; per box, cells that provably cannot win anywhere in it are
    dropped (bounds from the markers, see the note above ``_box_bounds_py`` in the source) and
    the exact argmin is taken over the rest. The result equals :func:`hard_labels_bruteforce`.

    Parameters
    ----------
    g : GBPD
        The diagram.
    points : (P, d) array
        Point coordinates ``(x, y[, z])`` in the GBPD's units.
    box_size : float, optional
        Bucket edge length; default: about twice the mean seed spacing of the points' extent.
    use_numba : bool, optional
        Use the compiled kernel (default: when numba is installed); ``False`` runs the numpy twin.

    Returns
    -------
    (P,) int64 array
        Cell index per point; ties go to the lowest index, as in :func:`hard_labels_bruteforce`.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != g.dim:
        points = points.reshape(-1, g.dim)
    npts = len(points)
    if npts == 0 or g.n == 0:
        if npts and not g.n:
            raise ValueError("a GBPD without seeds has no labels")
        return np.zeros(0, dtype=np.int64)
    if g.n <= 8 or npts <= 64:
        # tiny: every seed, no pruning (chunks bound the memory)
        return np.concatenate(
            [np.argmin(power_distances(g, points[a : a + 65536]), axis=1) for a in range(0, npts, 65536)]
        )
    use_numba = _resolve_numba(use_numba)
    s, q, d, r = _as3d(g)
    p3 = np.zeros((npts, 3))
    p3[:, : g.dim] = points
    order, bstart, keys, ps, blo, bhi = _bucket_points(p3, g.dim, g.n, box_size)
    out_sorted = np.empty(npts, dtype=np.int64)
    with _numba_threads(npts):
        bU = _upper_bounds(blo, bhi, s, q, d, r)
        bcoarse = _coarse_of(keys, 2)
        clo, chi, cU = _coarse_boxes(blo, bhi, bU, bcoarse)
        cstart, cidx = _coarse_candidates(clo, chi, cU, s, q, d, r)
        if use_numba:
            _nb_label_points(out_sorted, ps, bstart, blo, bhi, bU, bcoarse, cstart, cidx, s, q, d, r)
    if not use_numba:
        for b in range(len(keys)):
            sl = slice(bstart[b], bstart[b + 1])
            out_sorted[sl] = _label_box_numpy(ps[sl], b, blo, bhi, bU, bcoarse, cstart, cidx, s, q, d, r)
    out = np.empty(npts, dtype=np.int64)
    out[order] = out_sorted
    return out


def hard_labels_grid(
    g: GBPD,
    shape,
    origin=None,
    spacing: float = 1.0,
    mask=None,
    block: int = 16,
    coarse: int = 32,
    sub: int = 8,
    use_numba: bool | None = None,
) -> np.ndarray:
    """Exact hard labels of a regular grid.

    Parameters
    ----------
    g : GBPD
        A GBPD of the grid's dimension.
    shape : tuple of int
        Grid shape, indexed ``[(z,) y, x]``.
    origin : (d,) array, optional
        Coordinates ``(x, y[, z])`` of the grid point of index 0; by default the grid is centred on 0.
    spacing : float
        Distance between neighbouring grid points.
    mask : bool array of ``shape``, optional
        Label only these points; the others get -1.
    block : int
        Edge of the blocks (in grid points) that share one candidate list.
    coarse : int
        Edge (in grid points) of the coarse blocks whose candidates are found first.
    sub : int
        Edge of the sub-boxes of a block (at most ``block``): each gets its own upper bound (the
        block's bound is the largest of its sub-boxes') and, in the compiled kernel, its own
        candidate list, refined further per plane and per row.
    use_numba : bool, optional
        Use the compiled kernel (default: when numba is installed); ``False`` runs the numpy twin.

    Returns
    -------
    int64 array of ``shape``
        Cell indices, equal to :func:`hard_labels_bruteforce` of the grid points.

    Examples
    --------
    >>> import numpy as np
    >>> g = GBPD(np.array([[-5.0, 0.0], [5.0, 0.0]]), np.ones((2, 2)), np.zeros(2))
    >>> hard_labels_grid(g, (1, 4), origin=(-6.0, 0.0), spacing=4.0).tolist()
    [[0, 0, 1, 1]]
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != g.dim:
        raise ValueError(f"grid of dimension {len(shape)} for a {g.dim}D GBPD")
    if not spacing > 0:
        raise ValueError("spacing must be > 0")
    org = _grid_origin(shape, origin, spacing)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise ValueError(f"mask shape {mask.shape} differs from grid shape {shape}")
    out = np.full(shape, -1, dtype=np.int64)
    if out.size == 0 or (mask is not None and not mask.any()):
        return out
    if g.n == 0:
        raise ValueError("a GBPD without seeds has no labels")
    use_numba = _resolve_numba(use_numba)
    s, q, d, r = _as3d(g)
    shape3 = shape if g.dim == 3 else (1,) + shape
    org3 = np.zeros(3)
    org3[: g.dim] = org
    out3 = out.reshape(shape3)
    mask3 = None if mask is None else mask.reshape(shape3)
    nz, ny, nx = shape3
    bs = int(block)
    sb = max(1, min(int(sub), bs))
    nsb = -(-bs // sb)
    nbx, nby, nbz = -(-nx // bs), -(-ny // bs), -(-nz // bs)
    bz, by, bx = np.meshgrid(np.arange(nbz), np.arange(nby), np.arange(nbx), indexing="ij")
    bidx = np.stack([bx.ravel(), by.ravel(), bz.ravel()], 1)
    n3 = np.array([nx, ny, nz])
    blo = org3 + spacing * (bidx * bs)
    bhi = org3 + spacing * (np.minimum(n3, (bidx + 1) * bs) - 1)
    npts = out.size if mask is None else int(mask.sum())
    with _numba_threads(npts):
        fU = _sub_box_upper(shape3, mask3, bs, sb, org3, float(spacing), s, q, d, r)
        fin = np.where(np.isfinite(fU), fU, -np.inf)
        bU = fin.reshape(nbz, nsb, nby, nsb, nbx, nsb).max(axis=(1, 3, 5)).ravel()
        live = np.isfinite(bU)
        bU[~live] = np.nan
        grp = max(1, int(round(coarse / bs)))
        ncx, ncy = -(-nbx // grp), -(-nby // grp)
        bcoarse = (bidx[:, 2] // grp) * (ncx * ncy) + (bidx[:, 1] // grp) * ncx + bidx[:, 0] // grp
        clo, chi, cU = _coarse_boxes(blo, bhi, bU, bcoarse)
        cstart, cidx = _coarse_candidates(clo, chi, cU, s, q, d, r)
        if use_numba:
            m = mask3 if mask3 is not None else np.zeros((1, 1, 1), dtype=bool)
            _nb_label_grid(
                out3,
                m,
                mask3 is not None,
                bs,
                sb,
                nsb,
                nbx,
                nby,
                nbz,
                float(org3[0]),
                float(org3[1]),
                float(org3[2]),
                float(spacing),
                fU,
                blo,
                bhi,
                bU,
                bcoarse,
                cstart,
                cidx,
                s,
                q,
                d,
                r,
                _row_data(q, d),
            )
            return out
    for b in np.flatnonzero(live):
        x0, y0, z0 = bidx[b] * bs
        sl = (slice(z0, z0 + bs), slice(y0, y0 + bs), slice(x0, x0 + bs))
        zz, yy, xx = np.meshgrid(*[np.arange(t.start, min(t.start + bs, n)) for t, n in zip(sl, shape3)], indexing="ij")
        pts = org3 + spacing * np.stack([xx, yy, zz], -1).reshape(-1, 3)
        sel = np.ones(len(pts), bool) if mask3 is None else mask3[sl].ravel()
        lab = np.full(len(pts), -1, dtype=np.int64)
        if sel.any():
            lab[sel] = _label_box_numpy(pts[sel], b, blo, bhi, bU, bcoarse, cstart, cidx, s, q, d, r)
        out3[sl] = lab.reshape(xx.shape)
    return out


def near_candidates(g: GBPD, points: np.ndarray, margin: float, box_size: float | None = None) -> np.ndarray:
    """Every cell whose power distance at a point is within ``margin`` of the minimum there.

    An exact candidate set for :func:`soft_assign`: the cells left out have soft weight at most
    ``exp(-margin / beta)`` relative to the winner (e.g. ``margin = 30 * beta``: < 1e-13).
    Found with the same provable pruning as :func:`hard_labels` (bounds raised by ``margin``),
    then an exact test per point.

    Parameters
    ----------
    g : GBPD
        The diagram.
    points : (P, d) array
        Point coordinates ``(x, y[, z])`` in the GBPD's units.
    margin : float
        >= 0, in units of the power distance.
    box_size : float, optional
        Bucket edge length (as in :func:`hard_labels`).

    Returns
    -------
    (P, K) int64 array
        Per point the qualifying cells sorted by power distance (the hard label first; ties by
        index), padded with -1; K is the largest count.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, g.dim)
    if not margin >= 0:
        raise ValueError("margin must be >= 0")
    npts = len(points)
    if npts == 0:
        return np.zeros((0, 0), dtype=np.int64)
    if g.n == 0:
        raise ValueError("a GBPD without seeds has no labels")
    s, q, d, r = _as3d(g)
    p3 = np.zeros((npts, 3))
    p3[:, : g.dim] = points
    order, bstart, keys, ps, blo, bhi = _bucket_points(p3, g.dim, g.n, box_size)
    with _numba_threads(npts):
        bU = _upper_bounds(blo, bhi, s, q, d, r) + float(margin) * (1 + _SLACK)
        bcoarse = _coarse_of(keys, 2)
        clo, chi, cU = _coarse_boxes(blo, bhi, bU, bcoarse)
        cstart, cidx = _coarse_candidates(clo, chi, cU, s, q, d, r)
    rows: list = [None] * len(keys)
    kmax = 1
    for b in range(len(keys)):
        c = bcoarse[b]
        cand = cidx[cstart[c] : cstart[c + 1]]
        lb, _ = _box_bounds_py(blo[b : b + 1], bhi[b : b + 1], s[cand], q[cand], d[cand], r[cand])
        cand = np.sort(cand[lb[0] - _SLACK * (np.abs(lb[0]) + 1.0) <= bU[b]])
        pts = ps[bstart[b] : bstart[b + 1]]
        diff = pts[:, None, :] - s[cand][None]
        local = np.einsum("nij,pnj->pni", q[cand], diff)
        f = np.einsum("pni,ni->pn", local * local, d[cand]) - r[cand][None, :]
        srt = np.argsort(f, axis=1, kind="stable")  # cand is sorted, so ties keep index order
        fs = np.take_along_axis(f, srt, 1)
        keep = fs <= fs[:, :1] + margin
        ids = np.where(keep, cand[srt], -1)
        kmax = max(kmax, int(keep.sum(1).max()))
        rows[b] = ids
    out_sorted = np.full((npts, kmax), -1, dtype=np.int64)
    for b, ids in enumerate(rows):
        k = min(kmax, ids.shape[1])
        out_sorted[bstart[b] : bstart[b + 1], :k] = ids[:, :k]
    out = np.empty_like(out_sorted)
    out[order] = out_sorted
    return out
