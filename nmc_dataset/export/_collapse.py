"""Constrained edge-collapse decimation of a conforming multi-grain surface.

Vertex clustering (:mod:`nmc_dataset.export._decimate`) leaves coarse edges of ~0.55 h (median)
on patch interiors and ~0.4 h along boundary curves: cells cut patches and curves into pieces
smaller than a cell. :func:`collapse_edges` then removes vertices by *half-edge collapses*
``u -> v`` (``u`` disappears, its triangles are re-attached to ``v``, which does not move), the
shortest edges first, in passes, until no edge shorter than ``lo * h`` can be collapsed. Since
no surviving vertex moves, every candidate's length is known in advance and the passes are plain
sorts instead of a priority queue with updates.

A collapse is accepted only when all of these hold (checked locally, on the triangles around
``u`` and ``v`` after a tentative collapse, which is rolled back otherwise):

* classes: a junction vertex (>= 4 grain-pair patches around it) never moves; a vertex inside
  one patch collapses along an edge of that patch; a boundary-curve vertex only slides along
  its curve (the edge ``uv`` carries exactly the patches of ``u``); every vertex around keeps
  its set of patches, so interfaces, curves and junctions survive topologically, and every patch
  keeps a triangle (same grain pairs);
* topology: for every grain (and the outside), the triangles around ``v`` form one closed fan in
  which each edge is used once in each direction (the link condition of Dey et al., *Topology
  preserving edge contraction*, 1999, for each grain's closed surface): a common neighbour of
  ``u`` and ``v`` is the third vertex of a triangle of ``uv``, and an edge ``vw`` that absorbs
  ``uw`` keeps its set of patches (two curves between the same two vertices would become one
  edge); no triangle may appear twice. (Since ``uv`` carries all of ``u``'s patches, no grain or
  patch is pinched at ``v``.)
* geometry: no triangle turns by more than ``acos(turn_cos)`` from its current normal or
  ``acos(flip_cos)`` from the normal it had in the input, none has a shape
  ``4 sqrt(3) A / sum l^2`` below ``min_shape``, no new edge is longer than ``hi * h``;
  ``u`` lies within ``tol * h`` of the new triangles' planes (and of the new curve segment),
  accumulated along each vertex's collapses;
* volume: the change of each grain's enclosed volume, ``dV_g = -(1/6) sum_f s_g det(a - v,
  b - v, c - v)`` over ``u``'s triangles ``abc`` (``s_g = +-1`` by which side of the triangle
  ``g`` is on; the triangles of ``uv`` vanish and those at ``v`` have zero volume seen from
  ``v``), summed over the collapses, stays within ``vol_tol`` of the grain's volume.

Self-intersections (distant parts of the surface crossing) are not tested per collapse: the
result is checked by :func:`~nmc_dataset.export._intersect.self_intersections`, the collapses
that made the intersecting triangles are locked and the decimation is redone
(:func:`decimate_surface`).

The slow twin :func:`nmc_dataset.testing._export.decimation_violations` checks a result's
invariants independently (Python dicts and sets: per-grain edge uses, vertex pair sets, curve
pieces and their junctions, volumes, shapes).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from nmc_dataset.errors import InputError
from nmc_dataset.export._decimate import _changed_faces, _patch_ids, grain_volumes
from nmc_dataset.export._intersect import self_intersections
from nmc_dataset.export._meshes import GrainSurface

_MAXS = 512  # largest star (triangles around a vertex) a collapse may touch
_BUCKETS = 4  # length classes below lo * h, shortest first


@numba.njit(cache=True)
def _cross(ax, ay, az, bx, by, bz):
    return ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx


@numba.njit(cache=True)
def _face_geom(V, a, b, c):
    """Normal (unnormalised) and shape 4 sqrt(3) A / sum l^2 of triangle abc."""
    ux, uy, uz = V[b, 0] - V[a, 0], V[b, 1] - V[a, 1], V[b, 2] - V[a, 2]
    wx, wy, wz = V[c, 0] - V[a, 0], V[c, 1] - V[a, 1], V[c, 2] - V[a, 2]
    nx, ny, nz = _cross(ux, uy, uz, wx, wy, wz)
    l2 = ux * ux + uy * uy + uz * uz + wx * wx + wy * wy + wz * wz
    l2 += (wx - ux) ** 2 + (wy - uy) ** 2 + (wz - uz) ** 2
    area2 = np.sqrt(nx * nx + ny * ny + nz * nz)
    shape = 2.0 * np.sqrt(3.0) * area2 / l2 if l2 > 0 else 0.0
    return nx, ny, nz, shape


@numba.njit(cache=True)
def _star(F, falive, pool, vstart, vlen, x, out):
    """Alive faces around ``x`` into ``out``; returns their number (-1: more than ``len(out)``)."""
    m = 0
    for k in range(vstart[x], vstart[x] + vlen[x]):
        f = pool[k]
        if falive[f]:
            if m == out.shape[0]:
                return -1
            out[m] = f
            m += 1
    return m


@numba.njit(cache=True)
def _fan_ok(F, P, faces, m, x, ins, outs):
    """For every label on the faces ``faces[:m]`` around ``x``: its faces form one closed fan,
    each edge at ``x`` used once in each direction (outward orientation of that label)."""
    for i in range(m):
        f = faces[i]
        for s in range(2):
            g = P[f, s]
            # only the first face (side) of each label starts a check
            first = True
            for j in range(i + 1):
                for t in range(2):
                    if (j < i or t < s) and P[faces[j], t] == g:
                        first = False
            if not first:
                continue
            # collect (in, out) neighbours of x in g's faces
            cnt = 0
            for j in range(m):
                fj = faces[j]
                for t in range(2):
                    if P[fj, t] != g:
                        continue
                    k = 0
                    while F[fj, k] != x:
                        k += 1
                    nxt, prv = F[fj, (k + 1) % 3], F[fj, (k + 2) % 3]
                    if t == 1:
                        nxt, prv = prv, nxt
                    ins[cnt] = prv
                    outs[cnt] = nxt
                    cnt += 1
            # no neighbour twice on either side, and one cycle through all of them
            for a in range(cnt):
                for b in range(a + 1, cnt):
                    if outs[a] == outs[b] or ins[a] == ins[b]:
                        return False
            cur = 0
            steps = 0
            while True:
                nxtf = -1
                for b in range(cnt):
                    if ins[b] == outs[cur]:
                        nxtf = b
                        break
                if nxtf < 0:
                    return False
                cur = nxtf
                steps += 1
                if cur == 0 or steps > cnt:
                    break
            if steps != cnt:
                return False
    return True


@numba.njit(cache=True)
def _patch_set(F, falive, pool, vstart, vlen, patch, x, out):
    """Sorted distinct patches of the alive faces around ``x`` into ``out``; returns the count."""
    m = 0
    for k in range(vstart[x], vstart[x] + vlen[x]):
        f = pool[k]
        if not falive[f]:
            continue
        p = patch[f]
        seen = False
        for i in range(m):
            if out[i] == p:
                seen = True
                break
        if not seen and m < out.shape[0]:
            out[m] = p
            m += 1
    out[:m].sort()
    return m


@numba.njit(cache=True)
def _edge_patches(F, patch, faces, m, x, y, out):
    """Distinct patches of the faces among ``faces[:m]`` holding both ``x`` and ``y``."""
    n = 0
    for i in range(m):
        f = faces[i]
        if (F[f, 0] == x or F[f, 1] == x or F[f, 2] == x) and (F[f, 0] == y or F[f, 1] == y or F[f, 2] == y):
            p = patch[f]
            seen = False
            for k in range(n):
                if out[k] == p:
                    seen = True
            if not seen and n < out.shape[0]:
                out[n] = p
                n += 1
    return n


@numba.njit(cache=True)
def _point_plane(V, p, a, b, c):
    nx, ny, nz, _ = _face_geom(V, a, b, c)
    nn = np.sqrt(nx * nx + ny * ny + nz * nz)
    if nn == 0:
        return np.inf
    return abs((V[p, 0] - V[a, 0]) * nx + (V[p, 1] - V[a, 1]) * ny + (V[p, 2] - V[a, 2]) * nz) / nn


@numba.njit(cache=True)
def _point_segment(V, p, a, b):
    dx, dy, dz = V[b, 0] - V[a, 0], V[b, 1] - V[a, 1], V[b, 2] - V[a, 2]
    px, py, pz = V[p, 0] - V[a, 0], V[p, 1] - V[a, 1], V[p, 2] - V[a, 2]
    dd = dx * dx + dy * dy + dz * dz
    t = 0.0 if dd == 0 else min(max((px * dx + py * dy + pz * dz) / dd, 0.0), 1.0)
    return np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2 + (pz - t * dz) ** 2)


@numba.njit(cache=True)
def _try_collapse(
    u,
    v,
    V,
    F,
    P,
    patch,
    falive,
    pool,
    vstart,
    vlen,
    valive,
    movable,
    npatch,
    n0,
    hv,
    err,
    dvol,
    vol0,
    pcount,
    prm,
    W,
    WF,
    B,
):
    """Collapse ``u -> v`` if every check passes (see the module notes); returns success."""
    hi, tol, vol_tol, flip_cos, turn_cos, min_shape = prm[1], prm[2], prm[3], prm[4], prm[5], prm[6]
    if not (valive[u] and valive[v] and movable[u]):
        return False
    su, sv, isE, ep, glab, ring = W[0], W[1], W[2], W[3], W[4], W[5]
    nb_, nsv, sw, ins, outs, tmp = W[6], W[7], W[8], W[9], W[10], W[11]
    gdv = WF
    mu = _star(F, falive, pool, vstart, vlen, u, su)
    mv = _star(F, falive, pool, vstart, vlen, v, sv)
    if mu < 0 or mv < 0 or mu + mv > _MAXS:
        return False
    # the faces of the edge uv
    ne = 0
    isE[:mu] = 0
    for i in range(mu):
        f = su[i]
        if F[f, 0] == v or F[f, 1] == v or F[f, 2] == v:
            isE[i] = 1
            ne += 1
    if ne < 2:
        return False
    # class: the edge carries exactly u's patches (inside a patch: its two triangles)
    nep = 0
    for i in range(mu):
        if isE[i]:
            p = patch[su[i]]
            seen = False
            for j in range(nep):
                if ep[j] == p:
                    seen = True
            if not seen:
                ep[nep] = p
                nep += 1
    if nep != npatch[u] or (npatch[u] == 1 and ne != 2):
        return False
    # link condition: a common neighbour of u and v is a third vertex of a triangle of uv
    for i in range(mu):
        if isE[i]:
            continue
        fu = su[i]
        for k in range(3):
            w = F[fu, k]
            if w == u:
                continue
            common = False
            for j in range(mv):
                fv = sv[j]
                if F[fv, 0] == w or F[fv, 1] == w or F[fv, 2] == w:
                    common = True
                    break
            if common:
                opp = False
                for j in range(mu):
                    fe = su[j]
                    if isE[j] and (F[fe, 0] == w or F[fe, 1] == w or F[fe, 2] == w):
                        opp = True
                        break
                if not opp:
                    return False
    # every patch keeps a triangle
    for k in range(nep):
        gone = 0
        for i in range(mu):
            if isE[i] and patch[su[i]] == ep[k]:
                gone += 1
        if pcount[ep[k]] - gone < 1:
            return False
    hloc = min(hv[u], hv[v])
    # geometry of the re-attached faces, the distance of u to them, the volume change per label
    maxd = 0.0
    for i in range(mu):
        if isE[i]:
            continue
        f = su[i]
        a, b, c = F[f, 0], F[f, 1], F[f, 2]
        ox, oy, oz, _ = _face_geom(V, a, b, c)
        na, nb, nc = v if a == u else a, v if b == u else b, v if c == u else c
        nx, ny, nz, shape = _face_geom(V, na, nb, nc)
        nn = np.sqrt(nx * nx + ny * ny + nz * nz)
        if nn == 0 or shape < min_shape:
            return False
        on = np.sqrt(ox * ox + oy * oy + oz * oz)
        if (nx * ox + ny * oy + nz * oz) < turn_cos * nn * on:
            return False
        iz = np.sqrt(n0[f, 0] ** 2 + n0[f, 1] ** 2 + n0[f, 2] ** 2)
        if (nx * n0[f, 0] + ny * n0[f, 1] + nz * n0[f, 2]) < flip_cos * nn * iz:
            return False
        for w in (na, nb, nc):
            if w != v:
                d2 = (V[w, 0] - V[v, 0]) ** 2 + (V[w, 1] - V[v, 1]) ** 2 + (V[w, 2] - V[v, 2]) ** 2
                if d2 > (hi * hloc) ** 2:
                    return False
        d = _point_plane(V, u, na, nb, nc)
        if d > maxd:
            maxd = d
            if err[u] + maxd > tol * hloc:
                return False
    if npatch[u] > 1:  # a curve vertex: its distance to the new curve segments
        for i in range(mu):
            if isE[i]:
                continue
            f = su[i]
            for k in range(3):
                w = F[f, k]
                if w == u or w == v:
                    continue
                # is uw a curve edge (>= 3 faces)?
                nuw = 0
                for j in range(mu):
                    fj = su[j]
                    if F[fj, 0] == w or F[fj, 1] == w or F[fj, 2] == w:
                        nuw += 1
                if nuw >= 3:
                    d = _point_segment(V, u, v, w)
                    if d > maxd:
                        maxd = d
    if err[u] + maxd > tol * hloc or err[v] > tol * hloc:
        return False
    # volume change per label, seen from v (faces at v have zero volume)
    gdv[: 2 * mu] = 0.0
    ng = 0
    for i in range(mu):
        if isE[i]:
            continue
        f = su[i]
        a, b, c = F[f, 0], F[f, 1], F[f, 2]
        ax, ay, az = V[a, 0] - V[v, 0], V[a, 1] - V[v, 1], V[a, 2] - V[v, 2]
        bx, by, bz = V[b, 0] - V[v, 0], V[b, 1] - V[v, 1], V[b, 2] - V[v, 2]
        cx, cy, cz = V[c, 0] - V[v, 0], V[c, 1] - V[v, 1], V[c, 2] - V[v, 2]
        x1, y1, z1 = _cross(bx, by, bz, cx, cy, cz)
        det = ax * x1 + ay * y1 + az * z1
        for s in range(2):
            g = P[f, s]
            k = 0
            while k < ng and glab[k] != g:
                k += 1
            if k == ng:
                glab[ng] = g
                ng += 1
            gdv[k] += (-det if s == 0 else det) / 6.0
    for k in range(ng):
        g = glab[k]
        if g > 0 and abs(dvol[g] + gdv[k]) > vol_tol * abs(vol0[g]):
            return False
    # patch sets before of v and of the third vertices of uv's triangles (the vertices that lose
    # triangles; the other neighbours of u keep theirs, re-attached)
    nr = 0
    ring[nr] = v
    nr += 1
    for i in range(mu):
        if not isE[i]:
            continue
        f = su[i]
        w = F[f, 0] + F[f, 1] + F[f, 2] - u - v
        seen = False
        for j in range(nr):
            if ring[j] == w:
                seen = True
                break
        if not seen:
            ring[nr] = w
            nr += 1
    before = B
    for j in range(nr):
        c_ = _patch_set(F, falive, pool, vstart, vlen, patch, ring[j], tmp)
        nb_[j] = c_
        before[j, :c_] = tmp[:c_]
    # tentative collapse
    for i in range(mu):
        f = su[i]
        if isE[i]:
            falive[f] = False
        else:
            for k in range(3):
                if F[f, k] == u:
                    F[f, k] = v
    ok = True
    # the new star of v: v's own alive faces and u's re-attached ones
    m = 0
    for j in range(mv):
        if falive[sv[j]]:
            nsv[m] = sv[j]
            m += 1
    m0 = m
    for i in range(mu):
        if not isE[i]:
            nsv[m] = su[i]
            m += 1
    # no face twice (same three vertices; one of them re-attached)
    for i in range(m0, m):
        if not ok:
            break
        fi = nsv[i]
        for j in range(m):
            if j == i:
                continue
            fj = nsv[j]
            same = 0
            for a in range(3):
                for b in range(3):
                    if F[fi, a] == F[fj, b]:
                        same += 1
            if same == 3:
                ok = False
                break
    if ok:
        ok = _fan_ok(F, P, nsv, m, v, ins, outs)
    if ok:
        # an edge vw that absorbs uw (w opposite to uv) keeps the patches it had: two curves
        # between the same vertices must not become one edge
        ea, eb = B[B.shape[0] - 2], B[B.shape[0] - 1]
        for i in range(mu):
            if not isE[i] or not ok:
                continue
            f = su[i]
            w = F[f, 0] + F[f, 1] + F[f, 2] - u - v
            na = _edge_patches(F, patch, nsv, m, v, w, ea)
            nb = _edge_patches(F, patch, sv, mv, v, w, eb)
            if na != nb:
                ok = False
            for t in range(na):
                hit = False
                for r in range(nb):
                    if eb[r] == ea[t]:
                        hit = True
                if not hit:
                    ok = False
    if ok:
        # the fans and patch sets of those vertices (their stars still list the re-attached faces)
        valive[u] = False
        for j in range(nr):
            w = ring[j]
            if w == v:
                c_ = 0
                for k in range(m):
                    p = patch[nsv[k]]
                    seen = False
                    for t in range(c_):
                        if tmp[t] == p:
                            seen = True
                    if not seen and c_ < 32:
                        tmp[c_] = p
                        c_ += 1
                tmp[:c_].sort()
            else:
                mw = _star(F, falive, pool, vstart, vlen, w, sw)
                if mw < 0 or not _fan_ok(F, P, sw, mw, w, ins, outs):
                    ok = False
                    break
                c_ = _patch_set(F, falive, pool, vstart, vlen, patch, w, tmp)
            if c_ != nb_[j]:
                ok = False
                break
            for t in range(c_):
                if tmp[t] != before[j, t]:
                    ok = False
            if not ok:
                break
        valive[u] = True
    if not ok:
        return _rollback(F, falive, su, isE, mu, u, v)
    # commit: volumes, errors, patch counts, v's face list
    for k in range(ng):
        dvol[glab[k]] += gdv[k]
    for i in range(mu):
        if isE[i]:
            pcount[patch[su[i]]] -= 1
    err[v] = max(err[v], err[u] + maxd)
    valive[u] = False
    return True


@numba.njit(cache=True)
def _rollback(F, falive, su, isE, mu, u, v):
    """Undo a tentative collapse: faces of uv alive again; re-attached faces point at u again
    (a re-attached face held u, not v, before: v was not among its vertices)."""
    for i in range(mu):
        f = su[i]
        if isE[i]:
            falive[f] = True
        else:
            for k in range(3):
                if F[f, k] == v:
                    F[f, k] = u
    return False


@numba.njit(cache=True)
def _attempt(
    u,
    v,
    V,
    F,
    P,
    patch,
    falive,
    pool,
    vstart,
    vlen,
    vcap,
    top,
    valive,
    movable,
    npatch,
    n0,
    hv,
    err,
    dvol,
    vol0,
    pcount,
    prm,
    W,
    WF,
    B,
    rep,
    nxt_dirty,
):
    """:func:`_try_collapse` and, on success, ``v``'s face list extended by ``u``'s (``pool``
    grows when needed; ``top[0]`` is its used length) and the vertices around ``v`` marked."""
    if not _try_collapse(
        u,
        v,
        V,
        F,
        P,
        patch,
        falive,
        pool,
        vstart,
        vlen,
        valive,
        movable,
        npatch,
        n0,
        hv,
        err,
        dvol,
        vol0,
        pcount,
        prm,
        W,
        WF,
        B,
    ):
        return False, pool
    n = 0
    for k in range(vstart[v], vstart[v] + vlen[v]):
        if falive[pool[k]]:
            n += 1
    for k in range(vstart[u], vstart[u] + vlen[u]):
        if falive[pool[k]]:
            n += 1
    if n > vcap[v]:
        if top[0] + 2 * n > pool.shape[0]:
            grown = np.empty(2 * pool.shape[0] + 2 * n, dtype=np.int64)
            grown[: top[0]] = pool[: top[0]]
            pool = grown
        for k in range(vlen[v]):
            pool[top[0] + k] = pool[vstart[v] + k]
        vstart[v] = top[0]
        vcap[v] = 2 * n
        top[0] += 2 * n
    w = vstart[v]
    for k in range(vstart[v], vstart[v] + vlen[v]):
        if falive[pool[k]]:
            pool[w] = pool[k]
            w += 1
    for k in range(vstart[u], vstart[u] + vlen[u]):
        if falive[pool[k]]:
            pool[w] = pool[k]
            w += 1
    vlen[v] = w - vstart[v]
    vlen[u] = 0
    rep[u] = v
    for k in range(vstart[v], vstart[v] + vlen[v]):
        f = pool[k]
        nxt_dirty[F[f, 0]] = True
        nxt_dirty[F[f, 1]] = True
        nxt_dirty[F[f, 2]] = True
    return True, pool


@numba.njit(cache=True)
def _collapse_kernel(V, F0, P, patch, npatch, locked, hv, vol0, prm, max_passes, replay):
    """Passes of shortest-first half-edge collapses (see the module notes), after replaying the
    collapses ``replay`` (rows ``u, v``) in their order, each checked again. Returns the faces,
    their alive mask, each vertex's representative (itself or the vertex it collapsed into),
    the volume change per label, the collapses per pass and the collapses made, in order."""
    nv = V.shape[0]
    nf = F0.shape[0]
    F = F0.copy()
    falive = np.ones(nf, dtype=np.bool_)
    deg = np.zeros(nv, dtype=np.int64)
    for f in range(nf):
        for k in range(3):
            deg[F[f, k]] += 1
    vstart = np.zeros(nv, dtype=np.int64)
    vcap = 2 * deg + 4
    tot = 0
    for x in range(nv):
        vstart[x] = tot
        tot += vcap[x]
    pool = np.empty(2 * tot, dtype=np.int64)
    top = np.array([tot])
    vlen = np.zeros(nv, dtype=np.int64)
    for f in range(nf):
        for k in range(3):
            x = F[f, k]
            pool[vstart[x] + vlen[x]] = f
            vlen[x] += 1
    valive = deg > 0
    movable = (npatch < 4) & ~locked
    n0 = np.empty((nf, 3))
    for f in range(nf):
        nx, ny, nz, _ = _face_geom(V, F[f, 0], F[f, 1], F[f, 2])
        n0[f, 0], n0[f, 1], n0[f, 2] = nx, ny, nz
    pcount = np.zeros(patch.max() + 1, dtype=np.int64)
    for f in range(nf):
        pcount[patch[f]] += 1
    err = np.zeros(nv)
    dvol = np.zeros(vol0.shape[0])
    rep = np.arange(nv)
    lo = prm[0]
    done_per_pass = np.zeros(max_passes, dtype=np.int64)
    W = np.zeros((12, 4 * _MAXS), dtype=np.int64)
    WF = np.zeros(4 * _MAXS)
    B = np.zeros((4 * _MAXS, 32), dtype=np.int64)
    dirty = np.ones(nv, dtype=np.bool_)  # vertices whose star changed in the last pass
    nxt_dirty = np.zeros(nv, dtype=np.bool_)
    seq = np.empty((nv, 2), dtype=np.int64)
    n_seq = 0
    if replay.shape[0]:
        # the collapses of an earlier run in its order, re-checked; then passes around the
        # vertices whose collapse was dropped (locked) or refused
        dirty[:] = False
        for i in range(replay.shape[0]):
            u, v = replay[i, 0], replay[i, 1]
            if locked[u] or locked[v]:
                dirty[u] = dirty[v] = True
                continue
            ok, pool = _attempt(
                u,
                v,
                V,
                F,
                P,
                patch,
                falive,
                pool,
                vstart,
                vlen,
                vcap,
                top,
                valive,
                movable,
                npatch,
                n0,
                hv,
                err,
                dvol,
                vol0,
                pcount,
                prm,
                W,
                WF,
                B,
                rep,
                nxt_dirty,
            )
            if ok:
                seq[n_seq, 0], seq[n_seq, 1] = u, v
                n_seq += 1
            else:
                dirty[u] = dirty[v] = True
        nxt_dirty[:] = False
        for f in range(nf):  # the neighbours of the marked vertices too
            if falive[f] and (dirty[F[f, 0]] or dirty[F[f, 1]] or dirty[F[f, 2]]):
                nxt_dirty[F[f, 0]] = nxt_dirty[F[f, 1]] = nxt_dirty[F[f, 2]] = True
        dirty[:] = nxt_dirty
        nxt_dirty[:] = False
    for ps in range(max_passes):
        keys = np.empty(3 * nf, dtype=np.int64)
        m = 0
        for f in range(nf):
            if not falive[f]:
                continue
            for k in range(3):
                a, b = F[f, k], F[f, (k + 1) % 3]
                if dirty[a] or dirty[b]:
                    keys[m] = min(a, b) * nv + max(a, b)
                    m += 1
        keys = np.unique(keys[:m])
        L = np.empty(len(keys))
        for i in range(len(keys)):
            a, b = keys[i] // nv, keys[i] % nv
            d = np.sqrt(((V[a] - V[b]) ** 2).sum())
            L[i] = d / min(hv[a], hv[b])
        # shortest first in _BUCKETS classes of length, each in vertex order (the keys are sorted):
        # a strict length order visits the mesh at random, ~2x slower from cache misses
        bucket = np.empty(len(keys), dtype=np.int64)
        for i in range(len(keys)):
            bucket[i] = min(int(L[i] / lo * _BUCKETS), _BUCKETS) if L[i] < lo else _BUCKETS
        order = np.argsort(bucket, kind="mergesort")
        done = 0
        for i in order:
            if L[i] >= lo:
                break
            a, b = keys[i] // nv, keys[i] % nv
            if locked[a] or locked[b]:
                continue
            for t in range(2):
                u, v = (a, b) if (t == 0) == (npatch[a] <= npatch[b]) else (b, a)
                ok, pool = _attempt(
                    u,
                    v,
                    V,
                    F,
                    P,
                    patch,
                    falive,
                    pool,
                    vstart,
                    vlen,
                    vcap,
                    top,
                    valive,
                    movable,
                    npatch,
                    n0,
                    hv,
                    err,
                    dvol,
                    vol0,
                    pcount,
                    prm,
                    W,
                    WF,
                    B,
                    rep,
                    nxt_dirty,
                )
                if ok:
                    seq[n_seq, 0], seq[n_seq, 1] = u, v
                    n_seq += 1
                    done += 1
                    break
        done_per_pass[ps] = done
        dirty[:] = nxt_dirty
        nxt_dirty[:] = False
        if done == 0:
            break
    # final representatives (follow the collapse chains)
    for x in range(nv):
        r = x
        while rep[r] != r:
            r = rep[r]
        rep[x] = r
    return F, falive, rep, dvol, done_per_pass, seq[:n_seq].copy()


def vertex_sizes(surface, h_um: float, min_elements_per_grain: int | None = None) -> np.ndarray:
    """Target edge length at each vertex: ``h_um``, or the smaller size of a small grain at it.

    With ``min_elements_per_grain = n`` a grain of volume ``V`` gets ``h_k = (6 sqrt(2) V / n)^(1/3)``
    (the edge of ``n`` regular tets of its volume) and a vertex the smallest ``h_k`` of its grains.

    Parameters
    ----------
    surface : GrainSurface
        The conforming surface.
    h_um : float
        Target edge length (µm).
    min_elements_per_grain : int, optional
        Tets wanted at least per grain.

    Returns
    -------
    (V,) float array
        µm per vertex.
    """
    verts, faces, pairs, ng = surface.vertices, surface.faces, surface.pairs, surface.n_grains
    hv = np.full(len(verts), float(h_um))
    if min_elements_per_grain:
        vol = np.abs(grain_volumes(verts, faces, pairs, ng))
        hg = np.minimum(np.cbrt(6 * np.sqrt(2) * vol / float(min_elements_per_grain)), h_um)
        hf = np.minimum(
            np.where(pairs[:, 0] > 0, hg[np.maximum(pairs[:, 0], 1) - 1], h_um),
            np.where(pairs[:, 1] > 0, hg[np.maximum(pairs[:, 1], 1) - 1], h_um),
        )
        np.minimum.at(hv, faces.ravel(), np.repeat(hf, 3))
    return np.maximum(hv, 1e-12)


# measured on a 476-grain particle at h = 0.15 µm (docs/meshes.md): tol 0.1 removed a quarter of
# the triangles, 0.2 nearly half; hi 1.6 or tol 0.25-0.3 a few % more but ~3-4x as many tets below
# quality 0.01; min_shape 0.2 (the clustering's check: 0.1) costs 0.3 % more triangles and gives
# 15 % fewer tets below quality 0.1
DEFAULTS = {
    "lo": 0.8,
    "hi": 1.4,
    "tol": 0.2,
    "vol_tol": 0.01,
    "flip_cos": 0.2,
    "turn_cos": 0.5,
    "min_shape": 0.2,
}


def _classes(surface):
    """Per face its patch id, per vertex the number of distinct patches around it."""
    faces = np.asarray(surface.faces, dtype=np.int64)
    patch = _patch_ids(surface.pairs).astype(np.int64)
    n_p = int(patch.max()) + 1
    vp = np.unique(faces.ravel() * n_p + np.repeat(patch, 3))
    return patch, np.bincount(vp // n_p, minlength=len(surface.vertices)).astype(np.int64)


def collapse_edges(
    surface,
    h_um: float,
    min_elements_per_grain: int | None = None,
    locked=None,
    max_passes: int = 8,
    replay=None,
    _classes_cache=None,
    **params,
):
    """Constrained shortest-first half-edge collapses of a conforming surface (module notes).

    Parameters
    ----------
    surface : GrainSurface
        A conforming surface (e.g. the result of :func:`~nmc_dataset.export._decimate.coarsen_surface`).
    h_um : float
        Target edge length (µm).
    min_elements_per_grain : int, optional
        Smaller target lengths on small grains (:func:`vertex_sizes`).
    locked : bool array, optional
        Vertices that neither move nor receive a collapse (their triangles stay as they are).
    max_passes : int, default 8
        Passes over the edges shorter than ``lo * h`` (each sorted by length).
    replay : (K, 2) int array, optional
        Collapses ``u -> v`` of an earlier run on ``surface`` (its ``sequence``), replayed in
        their order and each checked again (those at locked vertices dropped) before the passes,
        which then start around the dropped and refused ones: a rerun with more locked vertices
        at a fraction of the cost.
    _classes_cache : tuple, optional
        ``(patch per face, patches per vertex)`` of ``surface`` when already computed.
    **params
        Overrides of :data:`DEFAULTS`: ``lo`` (collapse edges shorter than ``lo h``), ``hi`` (no
        new edge longer than ``hi h``), ``tol`` (distance of a removed vertex from the new
        triangles, in ``h``, accumulated), ``vol_tol`` (volume change per grain, relative),
        ``flip_cos``, ``turn_cos`` (least cosine of a triangle's normal against its input and
        current normal), ``min_shape`` (least triangle shape).

    Returns
    -------
    GrainSurface
        Its ``source`` attribute holds each output vertex's id in ``surface``, ``rep`` each
        input vertex's output vertex and ``sequence`` the collapses made (rows ``u, v``, in
        order); ``stats``: triangles before/after, collapses per pass, the largest relative
        volume change of a grain.
    """
    if not (h_um and h_um > 0):
        raise InputError(f"the mesh size must be > 0 µm, got {h_um}", "--mesh-size-um")
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters {sorted(unknown)}")
    prm = {**DEFAULTS, **params}
    verts = np.ascontiguousarray(surface.vertices, dtype=np.float64)
    faces = np.ascontiguousarray(surface.faces, dtype=np.int64)
    pairs = np.ascontiguousarray(surface.pairs, dtype=np.int64)
    nv, ng = len(verts), surface.n_grains
    if len(faces) == 0:
        out = GrainSurface(verts, faces, pairs, ng)
        out.source = out.rep = np.arange(nv)
        out.face_ids = np.arange(len(faces))
        out.stats = dict(getattr(surface, "stats", {}))
        return out
    patch, npatch = _classes(surface) if _classes_cache is None else _classes_cache
    lk = np.zeros(nv, dtype=bool) if locked is None else np.asarray(locked, dtype=bool).copy()
    hv = vertex_sizes(surface, h_um, min_elements_per_grain)
    vol0 = np.r_[0.0, grain_volumes(verts, faces, pairs, ng)]
    p = np.array(
        [prm[k] for k in ("lo", "hi", "tol", "vol_tol", "flip_cos", "turn_cos", "min_shape")], dtype=np.float64
    )
    rp = np.zeros((0, 2), dtype=np.int64) if replay is None else np.ascontiguousarray(replay, dtype=np.int64)
    F, falive, rep, dvol, per_pass, seq = _collapse_kernel(
        verts, faces, pairs, patch, npatch, lk, hv, vol0, p, int(max_passes), rp
    )
    f = F[falive]
    used, inv = np.unique(f, return_inverse=True)
    out = GrainSurface(verts[used], inv.reshape(-1, 3), pairs[falive], ng)
    pos = np.full(nv, -1, dtype=np.int64)
    pos[used] = np.arange(len(used))
    out.source = used
    out.rep = pos[rep]
    out.sequence = seq
    out.face_ids = np.flatnonzero(falive)
    rel = np.abs(dvol[1:]) / np.maximum(np.abs(vol0[1:]), 1e-300)
    out.stats = {
        **getattr(surface, "stats", {}),
        "triangles_coarse": len(faces),
        "triangles_after": int(falive.sum()),
        "collapses_per_pass": [int(x) for x in per_pass if x],
        "collapse_volume_change_max": float(rel.max()) if len(rel) else 0.0,
    }
    return out


def decimate_surface(
    surface,
    h_um: float,
    min_elements_per_grain: int | None = None,
    locked=None,
    max_rounds: int = 10,
    ring: int = 1,
    flips: bool = True,
    **params,
):
    """:func:`collapse_edges`, then lock the collapses around every self-intersection and redo.

    Each round finds all intersecting triangle pairs of the result at once
    (:func:`~nmc_dataset.export._intersect.self_intersections`); every input vertex that
    collapsed into a vertex of them, and ``ring`` rings of input neighbours, is locked, and the
    decimation is redone from ``surface`` (replaying the previous round's collapses, each checked
    again, then passes around those dropped). Locked triangles are the input's, so if ``surface`` has
    no intersections the rounds end with none (after ``max_rounds``: ``surface`` is returned).

    Parameters
    ----------
    surface : GrainSurface
        A conforming surface without self-intersections.
    h_um : float
        Target edge length (µm).
    min_elements_per_grain : int, optional
        Smaller target lengths on small grains.
    locked : bool array, optional
        Vertices kept as they are from the start.
    max_rounds : int, default 10
        Rounds of decimation and intersection check.
    ring : int, default 1
        Rings of input neighbours locked with the vertices of intersecting triangles.
    flips : bool, default True
        Flip nearly flat edges to the Delaunay diagonal after the collapses
        (:func:`delaunay_flips`, before the intersection check).
    **params
        Passed to :func:`collapse_edges`.

    Returns
    -------
    GrainSurface
        ``stats`` add ``decimation_rounds``, ``decimation_intersections`` (pairs found per round),
        ``decimate_cpu_s`` and ``decimate_intersect_cpu_s``.
    """
    c0 = time.process_time()
    nv = len(surface.vertices)
    lk = np.zeros(nv, dtype=bool) if locked is None else np.asarray(locked, dtype=bool).copy()
    found, t_x = [], 0.0
    out = surface
    classes = _classes(surface) if len(surface.faces) else None
    prev = x = None
    prm_vol_tol = params.get("vol_tol", DEFAULTS["vol_tol"])
    vol_in = grain_volumes(surface.vertices, surface.faces, surface.pairs, surface.n_grains) if flips else None
    for _ in range(max_rounds):
        out = collapse_edges(
            surface,
            h_um,
            min_elements_per_grain,
            locked=lk,
            replay=None if out is surface else out.sequence,
            _classes_cache=classes,
            **params,
        )
        if flips:
            out = delaunay_flips(out, vol_tol=prm_vol_tol, vol_ref=vol_in, locked=lk[out.source])
        t = time.process_time()
        # after the first round only the triangles that changed (and those of the pairs found)
        # can intersect
        only = None if prev is None else _changed_faces(prev, out, prev.face_ids[x.ravel()])
        x = self_intersections(out.vertices, out.faces, only=only)
        prev = out
        t_x += time.process_time() - t
        found.append(len(x))
        if len(x) == 0:
            break
        bad_out = np.zeros(len(out.vertices), dtype=bool)
        bad_out[out.faces[x.ravel()].ravel()] = True
        new = bad_out[out.rep]  # input vertices that collapsed into a vertex of an intersecting triangle
        for _ in range(ring):
            new = new.copy()
            new[surface.faces[new[surface.faces].any(axis=1)].ravel()] = True
        if not (new & ~lk).any():  # the intersections are the input's own
            break
        lk |= new
    else:  # pragma: no cover - the locks did not end the intersections: the input as it is
        out = GrainSurface(surface.vertices, surface.faces, surface.pairs, surface.n_grains)
        out.stats = dict(getattr(surface, "stats", {}))
        out.source = out.rep = np.arange(nv)
        out.face_ids = np.arange(len(surface.faces))
    out.stats = {
        **out.stats,
        "decimation_rounds": len(found),
        "decimation_intersections": found,
        "decimate_cpu_s": time.process_time() - c0,
        "decimate_intersect_cpu_s": t_x,
    }
    return out


@numba.njit(cache=True)
def _det(V, a, b, c):
    """det[a, b, c] of the positions (six times the signed volume of the tet 0abc)."""
    x1, y1, z1 = _cross(V[b, 0], V[b, 1], V[b, 2], V[c, 0], V[c, 1], V[c, 2])
    return V[a, 0] * x1 + V[a, 1] * y1 + V[a, 2] * z1


@numba.njit(cache=True)
def _angle_at(V, o, a, b):
    """The angle at ``o`` of the triangle o a b."""
    ax, ay, az = V[a, 0] - V[o, 0], V[a, 1] - V[o, 1], V[a, 2] - V[o, 2]
    bx, by, bz = V[b, 0] - V[o, 0], V[b, 1] - V[o, 1], V[b, 2] - V[o, 2]
    cx, cy, cz = _cross(ax, ay, az, bx, by, bz)
    return np.arctan2(np.sqrt(cx * cx + cy * cy + cz * cz), ax * bx + ay * by + az * bz)


@numba.njit(cache=True)
def _flip_pass(V, F, P, patch, vol0, dvol, flat_cos, vol_tol, locked):
    """One pass of Delaunay edge flips inside patches (see :func:`delaunay_flips`); returns the
    number of flips. Faces and vertices touched by a flip wait for the next pass."""
    nv, nf = V.shape[0], F.shape[0]
    # edges (sorted keys) -> faces
    keys = np.empty(3 * nf, dtype=np.int64)
    who = np.empty(3 * nf, dtype=np.int64)
    for f in range(nf):
        for k in range(3):
            a, b = F[f, k], F[f, (k + 1) % 3]
            keys[3 * f + k] = min(a, b) * nv + max(a, b)
            who[3 * f + k] = f
    order = np.argsort(keys)
    # vertex -> faces
    deg = np.zeros(nv + 1, dtype=np.int64)
    for f in range(nf):
        for k in range(3):
            deg[F[f, k] + 1] += 1
    for x in range(nv):
        deg[x + 1] += deg[x]
    vf = np.empty(3 * nf, dtype=np.int64)
    fill = deg[:-1].copy()
    for f in range(nf):
        for k in range(3):
            vf[fill[F[f, k]]] = f
            fill[F[f, k]] += 1
    touched = locked.copy()  # locked vertices never take part
    n = 0
    i = 0
    while i < 3 * nf:
        j = i
        while j < 3 * nf and keys[order[j]] == keys[order[i]]:
            j += 1
        if j - i == 2:
            f1, f2 = who[order[i]], who[order[i + 1]]
            p, q = keys[order[i]] // nv, keys[order[i]] % nv
            if patch[f1] == patch[f2] and not (touched[p] or touched[q]):
                # orient: f1 = (p, q, r1) as stored; f2 seen from f1's side holds q -> p
                k1 = 0
                while k1 < 3 and not (F[f1, k1] == p and F[f1, (k1 + 1) % 3] == q):
                    k1 += 1
                if k1 == 3:  # the stored order is q -> p: swap the names
                    p, q = q, p
                    k1 = 0
                    while not (F[f1, k1] == p and F[f1, (k1 + 1) % 3] == q):
                        k1 += 1
                r1 = F[f1, (k1 + 2) % 3]
                r2 = F[f2, 0] + F[f2, 1] + F[f2, 2] - p - q
                same_side = P[f2, 0] == P[f1, 0]
                ok = not (touched[r1] or touched[r2]) and r1 != r2
                if ok:  # r1 r2 must not be an edge already
                    for t in range(deg[r1], deg[r1 + 1]):
                        g = vf[t]
                        if F[g, 0] == r2 or F[g, 1] == r2 or F[g, 2] == r2:
                            ok = False
                            break
                if ok:  # Delaunay: the angles opposite pq sum to more than pi
                    ok = _angle_at(V, r1, p, q) + _angle_at(V, r2, p, q) > np.pi + 1e-9
                if ok:  # nearly flat, and both new triangles face the same way as the old ones
                    n1x, n1y, n1z, s1 = _face_geom(V, p, q, r1)
                    n2x, n2y, n2z, s2 = _face_geom(V, q, p, r2)
                    m1x, m1y, m1z, t1 = _face_geom(V, r1, p, r2)
                    m2x, m2y, m2z, t2 = _face_geom(V, r2, q, r1)
                    l1 = np.sqrt(n1x * n1x + n1y * n1y + n1z * n1z)
                    l2 = np.sqrt(n2x * n2x + n2y * n2y + n2z * n2z)
                    k1n = np.sqrt(m1x * m1x + m1y * m1y + m1z * m1z)
                    k2n = np.sqrt(m2x * m2x + m2y * m2y + m2z * m2z)
                    if l1 == 0 or l2 == 0 or k1n == 0 or k2n == 0:
                        ok = False
                    else:
                        ok = (
                            (n1x * n2x + n1y * n2y + n1z * n2z) >= flat_cos * l1 * l2
                            and (m1x * n1x + m1y * n1y + m1z * n1z) >= flat_cos * k1n * l1
                            and (m2x * n1x + m2y * n1y + m2z * n1z) >= flat_cos * k2n * l1
                            and min(t1, t2) > min(s1, s2)
                        )
                if ok:  # the volume change of the grain the triangles face out of (the other: minus)
                    dv = (_det(V, r1, p, r2) + _det(V, r2, q, r1) - _det(V, p, q, r1) - _det(V, q, p, r2)) / 6.0
                    g0, g1 = P[f1, 0], P[f1, 1]
                    if g0 > 0 and abs(dvol[g0] + dv) > vol_tol * abs(vol0[g0]):
                        ok = False
                    if g1 > 0 and abs(dvol[g1] - dv) > vol_tol * abs(vol0[g1]):
                        ok = False
                    if ok:
                        dvol[g0] += dv
                        dvol[g1] -= dv
                if ok:
                    F[f1, 0], F[f1, 1], F[f1, 2] = r1, p, r2
                    F[f2, 0], F[f2, 1], F[f2, 2] = r2, q, r1
                    if not same_side:  # f2 is stored seen from the other grain: keep its pairs
                        F[f2, 0], F[f2, 1], F[f2, 2] = r1, q, r2
                    touched[p] = touched[q] = touched[r1] = touched[r2] = True
                    n += 1
        i = j
    return n


def delaunay_flips(
    surface, flat_cos: float = 0.9, vol_tol: float = 0.002, max_passes: int = 4, vol_ref=None, locked=None
):
    """Flip nearly flat edges inside patches to the Delaunay diagonal (fewer boundary slivers).

    An edge ``pq`` with exactly two triangles ``pqr1``, ``qpr2`` of one patch becomes ``r1 r2`` when
    the angles at ``r1`` and ``r2`` sum to more than pi (the quad's Delaunay diagonal), the two
    triangles are within ``acos(flat_cos)`` of each other, both new ones face within that of
    the old, the worse shape improves, ``r1 r2`` is not an edge yet and each grain's volume
    stays within ``vol_tol`` of its reference volume. A tet mesher must keep a
    non-Delaunay diagonal of four nearly coplanar boundary points as an edge, which leaves a
    flat tet (a sliver) that it cannot remove.

    Parameters
    ----------
    surface : GrainSurface
        A conforming surface.
    flat_cos : float, default 0.9
        Least cosine between the two triangles' normals (and the new against the old).
    vol_tol : float, default 0.002
        Largest relative difference of a grain's volume from ``vol_ref`` after the flips.
    max_passes : int, default 4
        Passes (vertices of a flip wait for the next pass).
    vol_ref : (n_grains,) float array, optional
        Reference grain volumes (default: those of ``surface``), e.g. of a surface it was
        decimated from, so that both changes together stay within ``vol_tol``.
    locked : bool array, optional
        Vertices whose triangles are not flipped.

    Returns
    -------
    GrainSurface
        Same vertices and pairs; ``stats`` add ``flips``.
    """
    verts = np.ascontiguousarray(surface.vertices, dtype=np.float64)
    F = np.ascontiguousarray(surface.faces, dtype=np.int64).copy()
    pairs = np.ascontiguousarray(surface.pairs, dtype=np.int64)
    ng = surface.n_grains
    if len(F) == 0:
        return surface
    patch = _patch_ids(pairs).astype(np.int64)
    lk = np.zeros(len(verts), dtype=bool) if locked is None else np.asarray(locked, dtype=bool)
    now = grain_volumes(verts, F, pairs, ng)
    ref = now if vol_ref is None else np.asarray(vol_ref, dtype=np.float64)
    vol0 = np.r_[0.0, ref]
    dvol = np.r_[0.0, now - ref]
    total = 0
    for _ in range(max_passes):
        n = _flip_pass(verts, F, pairs, patch, vol0, dvol, float(flat_cos), float(vol_tol), lk)
        total += n
        if n == 0:
            break
    out = GrainSurface(surface.vertices, F, surface.pairs, ng)
    for k in ("source", "rep", "sequence", "face_ids"):
        if hasattr(surface, k):
            setattr(out, k, getattr(surface, k))
    out.stats = {**getattr(surface, "stats", {}), "flips": int(total)}
    return out
