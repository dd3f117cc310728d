"""All self-intersections of a triangle surface, found at once.

A tet mesher (gmsh's HXT) stops at the first place where the boundary it must recover intersects
itself, so a surface with ``k`` intersections costs ``k`` meshing attempts. :func:`self_intersections`
finds every intersecting pair of triangles in one pass:

* candidate pairs: each triangle's axis-aligned bounding box is entered into the cells of a
  uniform grid (cell = the median box extent) that it overlaps; two triangles are a candidate
  when their boxes overlap, and the pair is tested only in the cell holding the lower corner of
  the boxes' overlap (so each pair once, without a set of pairs);
* exact tests on the candidates, by signs of 3x3 determinants (``orient3d``): two triangles
  that share no vertex intersect when an edge of one crosses the other (for triangles not in
  one plane, the intersection segment ends on an edge of one of them); triangles sharing one
  vertex ``v`` intersect beyond ``v`` when the edge of one opposite ``v`` crosses the other.
  Triangles sharing an edge (folds) are left to the orientation check of the coarsening;
  coplanar overlaps are not reported (they do not occur on smoothed surfaces in floating point).

An edge ``pq`` crosses triangle ``abc`` when ``p`` and ``q`` are not strictly on one side of its
plane (``orient3d(a, b, c, p) orient3d(a, b, c, q) <= 0``, not both zero) and the three signs of
``orient3d(p, q, a, b)``, ``orient3d(p, q, b, c)``, ``orient3d(p, q, c, a)`` agree (zeros
count as either sign: touching is reported). The slow twin
(:func:`nmc_dataset.testing._export.self_intersections_bruteforce`) tests every pair of triangles
by another construction (segment–plane points and barycentric coordinates).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _orient(a0, a1, a2, b0, b1, b2, c0, c1, c2, d0, d1, d2):
    """det[b - a, c - a, d - a] (six times the signed volume of the tet abcd)."""
    bx, by, bz = b0 - a0, b1 - a1, b2 - a2
    cx, cy, cz = c0 - a0, c1 - a1, c2 - a2
    dx, dy, dz = d0 - a0, d1 - a1, d2 - a2
    return bx * (cy * dz - cz * dy) - by * (cx * dz - cz * dx) + bz * (cx * dy - cy * dx)


@numba.njit(cache=True)
def _seg_crosses_tri(v, p, q, a, b, c):
    """Does segment ``v[p] v[q]`` meet triangle ``v[a] v[b] v[c]`` (touching included, coplanar not)?"""
    P, Q, A, B, C = v[p], v[q], v[a], v[b], v[c]
    d1 = _orient(A[0], A[1], A[2], B[0], B[1], B[2], C[0], C[1], C[2], P[0], P[1], P[2])
    d2 = _orient(A[0], A[1], A[2], B[0], B[1], B[2], C[0], C[1], C[2], Q[0], Q[1], Q[2])
    if (d1 > 0 and d2 > 0) or (d1 < 0 and d2 < 0) or (d1 == 0 and d2 == 0):
        return False
    s1 = _orient(P[0], P[1], P[2], Q[0], Q[1], Q[2], A[0], A[1], A[2], B[0], B[1], B[2])
    s2 = _orient(P[0], P[1], P[2], Q[0], Q[1], Q[2], B[0], B[1], B[2], C[0], C[1], C[2])
    s3 = _orient(P[0], P[1], P[2], Q[0], Q[1], Q[2], C[0], C[1], C[2], A[0], A[1], A[2])
    return (s1 >= 0 and s2 >= 0 and s3 >= 0) or (s1 <= 0 and s2 <= 0 and s3 <= 0)


@numba.njit(cache=True)
def _tri_pair_intersects(v, f, i, j):
    """Do faces ``i`` and ``j`` intersect other than in the vertices they share (see module notes)?"""
    shared = 0
    si = -1
    sj = -1
    for a in range(3):
        for b in range(3):
            if f[i, a] == f[j, b]:
                shared += 1
                si, sj = a, b
    if shared == 0:
        for a in range(3):
            if _seg_crosses_tri(v, f[i, a], f[i, (a + 1) % 3], f[j, 0], f[j, 1], f[j, 2]):
                return True
            if _seg_crosses_tri(v, f[j, a], f[j, (a + 1) % 3], f[i, 0], f[i, 1], f[i, 2]):
                return True
        return False
    if shared == 1:
        if _seg_crosses_tri(v, f[i, (si + 1) % 3], f[i, (si + 2) % 3], f[j, 0], f[j, 1], f[j, 2]):
            return True
        return _seg_crosses_tri(v, f[j, (sj + 1) % 3], f[j, (sj + 2) % 3], f[i, 0], f[i, 1], f[i, 2])
    return False


@numba.njit(cache=True)
def _grid_intersections(v, f, cell, only):
    nf = f.shape[0]
    lo = np.empty((nf, 3))
    hi = np.empty((nf, 3))
    for i in range(nf):
        for d in range(3):
            a, b, c = v[f[i, 0], d], v[f[i, 1], d], v[f[i, 2], d]
            lo[i, d] = min(a, min(b, c))
            hi[i, d] = max(a, max(b, c))
    org = np.empty(3)
    for d in range(3):
        org[d] = lo[:, d].min()
    i0 = np.empty((nf, 3), dtype=np.int64)
    i1 = np.empty((nf, 3), dtype=np.int64)
    n = np.zeros(3, dtype=np.int64)
    for i in range(nf):
        for d in range(3):
            i0[i, d] = int(np.floor((lo[i, d] - org[d]) / cell))
            i1[i, d] = int(np.floor((hi[i, d] - org[d]) / cell))
            if i1[i, d] + 1 > n[d]:
                n[d] = i1[i, d] + 1
    tot = 0
    for i in range(nf):
        tot += (i1[i, 0] - i0[i, 0] + 1) * (i1[i, 1] - i0[i, 1] + 1) * (i1[i, 2] - i0[i, 2] + 1)
    keys = np.empty(tot, dtype=np.int64)
    who = np.empty(tot, dtype=np.int64)
    e = 0
    for i in range(nf):
        for x in range(i0[i, 0], i1[i, 0] + 1):
            for y in range(i0[i, 1], i1[i, 1] + 1):
                for z in range(i0[i, 2], i1[i, 2] + 1):
                    keys[e] = (x * n[1] + y) * n[2] + z
                    who[e] = i
                    e += 1
    n_cells = n[0] * n[1] * n[2]
    if n_cells <= 4 * tot + 1024:  # counting sort by cell (linear; the cells are few enough)
        start = np.zeros(n_cells + 1, dtype=np.int64)
        for e in range(tot):
            start[keys[e] + 1] += 1
        for c in range(n_cells):
            start[c + 1] += start[c]
        order = np.empty(tot, dtype=np.int64)
        for e in range(tot):
            order[start[keys[e]]] = e
            start[keys[e]] += 1
    else:
        order = np.argsort(keys, kind="mergesort")
    out = np.empty((64, 2), dtype=np.int64)
    m = 0
    s = 0
    while s < tot:
        t = s
        k = keys[order[s]]
        while t < tot and keys[order[t]] == k:
            t += 1
        cz = k % n[2]
        cy = (k // n[2]) % n[1]
        cx = k // (n[1] * n[2])
        for u in range(s, t):
            a = who[order[u]]
            for w in range(u + 1, t):
                b = who[order[w]]
                if not (only[a] or only[b]):
                    continue
                ok = True
                for d in range(3):
                    if lo[a, d] > hi[b, d] or lo[b, d] > hi[a, d]:
                        ok = False
                        break
                if not ok:
                    continue
                # test the pair only in the cell of the lower corner of the boxes' overlap
                if max(i0[a, 0], i0[b, 0]) != cx or max(i0[a, 1], i0[b, 1]) != cy or max(i0[a, 2], i0[b, 2]) != cz:
                    continue
                if _tri_pair_intersects(v, f, a, b):
                    if m == out.shape[0]:
                        grown = np.empty((2 * m, 2), dtype=np.int64)
                        grown[:m] = out
                        out = grown
                    out[m, 0] = min(a, b)
                    out[m, 1] = max(a, b)
                    m += 1
        s = t
    return out[:m]


def self_intersections(
    vertices: np.ndarray, faces: np.ndarray, cell: float | None = None, only: np.ndarray | None = None
) -> np.ndarray:
    """Every pair of triangles of a surface that intersect (other than in shared vertices/edges).

    Parameters
    ----------
    vertices : (V, 3) float array
        Vertex positions.
    faces : (F, 3) int array
        Triangles (vertex ids).
    cell : float, optional
        Grid cell size for the candidate pairs (default: the median bounding-box extent of the
        triangles).
    only : (F,) bool array, optional
        Report only pairs with at least one of these triangles (e.g. those a repair changed,
        when the others are known to be free of intersections among themselves).

    Returns
    -------
    (K, 2) int64 array
        Face ids ``i < j`` of each intersecting pair, sorted.
    """
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if len(f) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if cell is None:
        p = v[f]
        ext = (p.max(axis=1) - p.min(axis=1)).max(axis=1)
        cell = float(np.median(ext))
        if not cell > 0:
            cell = float(ext.max()) or 1.0
    mask = np.ones(len(f), dtype=np.bool_) if only is None else np.ascontiguousarray(only, dtype=np.bool_)
    out = _grid_intersections(v, f, float(cell), mask)
    if len(out):
        out = out[np.lexsort((out[:, 1], out[:, 0]))]
    return out


__all__ = ["self_intersections"]
