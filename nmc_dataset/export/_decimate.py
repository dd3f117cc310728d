"""Coarsening a conforming multi-grain surface without re-voxelising.

:func:`coarsen_surface` clusters the vertices of a :class:`~.meshes.GrainSurface` on a grid of
cell size ``h`` (vertex clustering, Rossignac & Borrel 1993), constrained so that the grain
topology survives:

* a vertex is classified by the set of grain-pair patches around it (its *signature*): inside
  one interface patch, on a boundary curve (2-3 patches: a triple line or the rim of an
  interface on the particle surface) or at a junction of curves (4 or more patches); only
  vertices of the same signature in the same cell merge, and only those of one connected piece
  (joined by edges between such vertices: two pieces of a patch meeting in a cell would pinch
  the surface), so interfaces, their boundary curves and the curves' end points stay where they
  are, topologically; junctions never move; with ``connected`` (the default) the vertices of
  a boundary curve are clustered along the curve instead: the curve edges (used by >= 3
  faces) between vertices of one signature form chains, each cut into ``max(1, round(L / h))``
  pieces of equal arc length (a branching chain keeps its cell clusters); cell clusters split
  a curve wherever it crosses a cell face, about 1.5x as many pieces;
* a merged vertex sits at the mean of its members; triangles that lose a vertex vanish;
* the result is checked and repaired locally: every grain's surface must stay a closed,
  consistently oriented 2-manifold, no triangle may turn over (its normal against the original
  normal), every grain pair keeps at least one triangle; the vertices around any violation are
  restored to their original positions (un-clustered) and the check repeats;
* :func:`repair_self_intersections` then finds every pair of intersecting triangles at once
  and un-clusters the vertices around them (a tet mesher stops at the first intersection).

Because clustering only merges vertices of the same patch, the shared triangles stay shared: the
coarse surface is conforming, every grain keeps its neighbours (the same grain pairs), and its
volume changes only by the small cut-off of the merged vertices (reported per grain by
:func:`grain_volumes`). ``min_elements_per_grain`` lowers ``h`` locally for small grains (a
grain of volume ``V`` gets ``h_k = (6 sqrt(2) V / n)^(1/3)``, the edge of ``n`` regular tets of
its volume), so that the tet mesher, which grades the interior from the boundary sizes, gives
them at least about that many tets.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nmc_dataset.errors import InputError
from nmc_dataset.export._meshes import GrainSurface, tet_mesh

_FLIP_COS = 0.2  # a coarse triangle turned by more than ~78° from its original normal is a violation
_MIN_SHAPE = 0.1  # a coarse triangle of a worse shape 4 sqrt(3) A / sum l^2 (1: equilateral) is a violation
_FIXED_COUNT = 4  # vertices with this many patches around them (junctions of curves) never move


def grain_volumes(vertices: np.ndarray, faces: np.ndarray, pairs: np.ndarray, n_grains: int) -> np.ndarray:
    """Volume enclosed by each grain's closed surface (divergence theorem), ``1..n_grains``."""
    p = vertices[faces]
    v6 = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2]))  # 6 x signed tet volume to origin
    out = np.zeros(n_grains + 1)
    np.add.at(out, pairs[:, 0], v6)  # the normal points out of pairs[:, 0]
    np.add.at(out, pairs[:, 1], -v6)
    return out[1:] / 6.0


def _patch_ids(pairs):
    lo = np.sort(pairs, axis=1)
    base = int(lo.max()) + 1 if len(lo) else 1
    return np.unique(lo[:, 0] * base + lo[:, 1], return_inverse=True)[1].ravel()


def _signatures(faces, patch, nv):
    """Per vertex: a signature id (same id = same set of patches around it) and the set size."""
    n_p = int(patch.max()) + 1
    vp = np.unique(faces.ravel().astype(np.int64) * n_p + np.repeat(patch, 3))  # (vertex, patch), sorted
    v, pt = vp // n_p, vp % n_p
    count = np.bincount(v, minlength=nv)
    rank = np.arange(len(v)) - np.repeat(np.cumsum(count) - count, count)
    # pack each vertex's sorted patch list into int64 words (``bits`` per patch id) and number the
    # distinct lists by one lexsort
    bits = max(int(n_p + 1).bit_length(), 1)
    per = max(63 // bits, 1)
    n_words = -(-int(count.max()) // per)
    words = np.zeros((n_words, nv), dtype=np.int64)
    for w in range(n_words):
        sel = (rank >= w * per) & (rank < (w + 1) * per)
        np.bitwise_or.at(words[w], v[sel], (pt[sel] + 1) << (bits * (rank[sel] - w * per)))
    order = np.lexsort(tuple(words[::-1]) + (count,))
    ws = words[:, order]
    new = np.ones(nv, dtype=bool)
    new[1:] = (ws[:, 1:] != ws[:, :-1]).any(axis=0) | (count[order][1:] != count[order][:-1])
    sig = np.empty(nv, dtype=np.int64)
    sig[order] = np.cumsum(new) - 1
    return sig, count


@numba.njit(cache=True)
def _open_edge_faces(f, pr, grains):
    """Faces (rows of ``f``) with an edge that is not used exactly twice, once per direction, by
    the outward faces of a checked grain (``grains[k]``), grain by grain: the compiled twin of
    the global edge sort in :func:`_bad_vertices` (``compiled=False``)."""
    nf = f.shape[0]
    ng = grains.shape[0]
    cnt = np.zeros(ng + 1, dtype=np.int64)
    for r in range(nf):
        for s in range(2):
            g = pr[r, s]
            if grains[g]:
                cnt[g + 1] += 1
    for g in range(ng):
        cnt[g + 1] += cnt[g]
    ent = np.empty(cnt[ng], dtype=np.int64)  # face * 2 + side, grouped by grain
    fill = cnt[:-1].copy()
    for r in range(nf):
        for s in range(2):
            g = pr[r, s]
            if grains[g]:
                ent[fill[g]] = r * 2 + s
                fill[g] += 1
    bad = np.zeros(nf, dtype=np.bool_)
    for g in range(ng):
        m = cnt[g + 1] - cnt[g]
        if m == 0:
            continue
        keys = np.empty(3 * m, dtype=np.int64)
        fwd = np.empty(3 * m, dtype=np.int64)
        who = np.empty(3 * m, dtype=np.int64)
        vmax = 0
        for e in range(m):
            r = ent[cnt[g] + e] // 2
            for i in range(3):
                if f[r, i] > vmax:
                    vmax = f[r, i]
        vmax += 1
        for e in range(m):
            code = ent[cnt[g] + e]
            r, s = code // 2, code % 2
            for i in range(3):
                u, v = f[r, i], f[r, (i + 1) % 3]
                if s == 1:  # the face seen from pairs[:, 1]: reversed
                    u, v = v, u
                k = 3 * e + i
                keys[k] = min(u, v) * vmax + max(u, v)
                fwd[k] = 1 if u < v else 0
                who[k] = r
        order = np.argsort(keys)
        a = 0
        while a < 3 * m:
            b = a
            tot = 0
            while b < 3 * m and keys[order[b]] == keys[order[a]]:
                tot += fwd[order[b]]
                b += 1
            if b - a != 2 or tot != 1:
                for j in range(a, b):
                    bad[who[order[j]]] = True
            a = b
    return bad


def _bad_vertices(vert, faces0, faces, pairs, keep_face, n_patches, patch, normal0, grains=None, compiled=True):
    """Vertices (original ids) around violations of the coarse mesh (``grains``: a mask over
    labels; check only the surfaces of these grains; ``compiled=False``: the edge check by one
    global numpy sort, the slow twin)."""
    alive = np.bincount(patch[keep_face], minlength=n_patches) > 0
    lost = faces0[~alive[patch]].ravel()
    if grains is None:
        grains = np.ones(int(pairs.max()) + 1, dtype=bool)
    grains = grains.copy()
    grains[0] = False
    keep_face = keep_face & (grains[pairs[:, 0]] | grains[pairs[:, 1]])
    f = faces[keep_face]
    pr = pairs[keep_face]
    f0 = faces0[keep_face]
    bad = []
    # flipped or collapsed triangles
    p = vert[f]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    cosang = np.einsum("ij,ij->i", n, normal0[keep_face]) / (
        np.linalg.norm(n, axis=1) * np.linalg.norm(normal0[keep_face], axis=1) + 1e-300
    )
    bad.append(f0[cosang < _FLIP_COS].ravel())
    if _MIN_SHAPE > 0:  # needle / cap triangles (shape 4 sqrt(3) A / sum l^2, 1 = equilateral)
        l2 = sum(((p[:, i] - p[:, (i + 1) % 3]) ** 2).sum(axis=1) for i in range(3))
        shape = 2 * np.sqrt(3) * np.linalg.norm(n, axis=1) / np.maximum(l2, 1e-300)
        bad.append(f0[shape < _MIN_SHAPE].ravel())
    # every grain's surface closed and consistently oriented: per grain, each undirected edge is
    # used by exactly two of its (outward) faces, once in each direction
    if compiled:
        bad.append(
            f0[
                _open_edge_faces(
                    np.ascontiguousarray(f, dtype=np.int64), np.ascontiguousarray(pr, dtype=np.int64), grains
                )
            ].ravel()
        )
        bad.append(lost)  # every patch keeps a triangle
        return np.unique(np.concatenate(bad))
    nvx = np.int64(len(vert))
    E, E0, G = [], [], []
    for side in (0, 1):
        sel = grains[pr[:, side]]
        ff = f[sel] if side == 0 else f[sel][:, ::-1]
        ff0 = f0[sel]
        for i, j in ((0, 1), (1, 2), (2, 0)):
            E.append(ff[:, [i, j]])
            E0.append(ff0)
            G.append(pr[sel, side])
    E, E0, G = np.concatenate(E), np.concatenate(E0), np.concatenate(G).astype(np.int64)
    lo, hi = np.minimum(E[:, 0], E[:, 1]), np.maximum(E[:, 0], E[:, 1])
    _, inv, cnt = np.unique((G * nvx + lo) * nvx + hi, return_inverse=True, return_counts=True)
    fwd = np.bincount(inv.ravel(), weights=(E[:, 0] < E[:, 1]).astype(float), minlength=len(cnt))
    badkey = (cnt != 2) | (fwd != 1)
    bad.append(E0[badkey[inv.ravel()]].ravel())
    bad.append(lost)  # every patch keeps a triangle
    return np.unique(np.concatenate(bad))


def coarsen_surface(
    surface,
    h_um: float,
    min_elements_per_grain: int | None = None,
    max_repairs: int = 30,
    keep_near=None,
    resume=None,
    keep_vertices=None,
    connected: bool = True,
):
    """A coarser conforming surface (same grains, same grain pairs); see the module notes.

    Parameters
    ----------
    surface : GrainSurface
    h_um : float
        Target edge length (µm): the clustering cell size.
    min_elements_per_grain : int, optional
        Make small grains' surfaces finer so that each grain gets about this many tets.
    max_repairs : int
        Rounds of local repair before the remaining clusters around violations are undone.
    keep_near : (M, 3) float array, optional
        Points (µm) around which (within ``2 h``) the surface is kept as it is (e.g. where a
        tet mesher found the coarse surface intersecting itself).
    resume : GrainSurface, optional
        An earlier result of this call with the same ``surface``, ``h_um`` and
        ``min_elements_per_grain``: its clustering is reused and its repairs are the starting
        point (for retries with more ``keep_near`` points), instead of redoing both.
    keep_vertices : int array, optional
        Vertex ids of ``resume`` (the coarse surface) whose clusters are undone: their fine
        vertices go back to where they were (e.g. the vertices of self-intersecting triangles).
    connected : bool, default True
        Merge only connected pieces of a cell's vertices of one signature (``False``: the whole
        cell, which pinches the surface where two pieces meet and needs more repairs).

    Returns
    -------
    GrainSurface
        With ``stats`` attribute: triangles before/after, vertices restored by repairs, grain
        pairs before/after.
    """

    if not (h_um and h_um > 0):
        raise InputError(f"the mesh size must be > 0 µm, got {h_um}", "--mesh-size-um")
    verts, faces, pairs, ng = surface.vertices, surface.faces, surface.pairs, surface.n_grains
    nv = len(verts)
    if len(faces) == 0:
        return surface
    plan = getattr(resume, "plan", None)
    if plan is not None and (
        plan["surface"] is not surface
        or plan["h_um"] != h_um
        or plan["min_elements_per_grain"] != min_elements_per_grain
        or plan["connected"] != connected
    ):
        raise ValueError("resume: a coarsening of another surface or with other options")
    if plan is None:
        plan = _coarsen_plan(surface, h_um, min_elements_per_grain, connected)
    patch, n_patches, fixed, cluster, normal0 = (plan[k] for k in ("patch", "n_patches", "fixed", "cluster", "normal0"))
    restored = plan["restored"].copy()
    if keep_near is not None and len(keep_near):
        from scipy.spatial import cKDTree

        near = cKDTree(verts).query_ball_point(np.asarray(keep_near, dtype=float), 2.0 * h_um)
        ids = np.unique(np.concatenate([np.asarray(i, dtype=np.int64) for i in near]))
        if len(ids):
            restored |= np.isin(cluster, np.unique(cluster[ids]))
    check = None  # first round: every grain; then the grains around the restored vertices
    if keep_vertices is not None and len(keep_vertices):
        if plan.get("out_cid") is None:
            raise ValueError("keep_vertices needs resume: the coarse surface the vertex ids refer to")
        codes = plan["out_cid"][np.asarray(keep_vertices, dtype=np.int64)]
        new = np.isin(cluster, np.unique(codes[codes >= 0])) & ~restored
        if keep_near is None or not len(keep_near):
            # the resumed surface passed the checks: only grains at a vertex whose cluster changed
            touched = np.isin(cluster, np.unique(cluster[new]))[faces].any(axis=1)
            check = np.zeros(ng + 1, dtype=bool)
            check[pairs[touched].ravel()] = True
        restored |= new
    for _ in range(max_repairs + 1):
        cid = np.where(restored, -1 - np.arange(nv), cluster)  # restored vertices: their own cluster
        uid, rep = np.unique(cid, return_inverse=True)
        rep = rep.ravel()
        cnt = np.bincount(rep, minlength=len(uid))
        pos = np.stack([np.bincount(rep, weights=verts[:, a], minlength=len(uid)) for a in range(3)], axis=1)
        pos /= cnt[:, None]
        fixed_ids = np.flatnonzero(fixed | restored)
        pos[rep[fixed_ids]] = verts[fixed_ids]
        fr = rep[faces]
        keep = (fr[:, 0] != fr[:, 1]) & (fr[:, 1] != fr[:, 2]) & (fr[:, 0] != fr[:, 2])
        bad = _bad_vertices(pos, faces, fr, pairs, keep, n_patches, patch, normal0, check)
        if len(bad) == 0:
            break
        # undo the clusters of the vertices around the violations (all members of their clusters)
        new = np.isin(cluster, np.unique(cluster[bad])) & ~restored
        restored |= new
        # next round: the grains having a face at a vertex whose cluster changed (the restored
        # vertices and the other members of their former clusters)
        moved = np.isin(cluster, np.unique(cluster[new]))
        touched = moved[faces].any(axis=1)
        grains = np.zeros(ng + 1, dtype=bool)
        grains[pairs[touched].ravel()] = True
        check = grains
    else:  # pragma: no cover - repairs did not finish: keep the original surface
        out = GrainSurface(verts, faces, pairs, ng)
        out.stats = {
            "triangles_before": len(faces),
            "triangles_after": len(faces),
            "restored_vertices": nv,
            "pairs_before": n_patches,
            "pairs_after": n_patches,
        }
        out.face_ids = np.arange(len(faces))
        return out
    f = fr[keep]
    used, inv = np.unique(f, return_inverse=True)
    out = GrainSurface(pos[used], inv.reshape(-1, 3), pairs[keep], ng)
    out.stats = {
        "triangles_before": len(faces),
        "triangles_after": int(keep.sum()),
        "restored_vertices": int(restored.sum()),
        "pairs_before": int(n_patches),
        "pairs_after": len(np.unique(patch[keep])),
    }
    out.plan = {**plan, "restored": restored, "out_cid": uid[used]}
    out.face_ids = np.flatnonzero(keep)  # the fine faces they are
    return out


@numba.njit(cache=True)
def _walk_chains(indptr, indices, verts, comp, n_comp, step):
    """Per vertex of a chain graph (degree <= 2): its segment along its chain, chains cut into
    ``round(L / step)`` pieces of equal arc length (``-1``: not in a regular chain)."""
    nv = len(comp)
    seg = np.full(nv, -1, dtype=np.int64)
    start = np.full(n_comp, -1, dtype=np.int64)
    bad = np.zeros(n_comp, dtype=np.bool_)
    for v in range(nv):
        c = comp[v]
        if c < 0:
            continue
        d = indptr[v + 1] - indptr[v]
        if d > 2:
            bad[c] = True
        if start[c] < 0 or d == 1:
            if start[c] < 0 or indptr[start[c] + 1] - indptr[start[c]] != 1:
                start[c] = v
    order = np.empty(nv, dtype=np.int64)
    arc = np.empty(nv)
    for c in range(n_comp):
        if bad[c] or start[c] < 0:
            continue
        prev, cur, m, s = -1, start[c], 0, 0.0
        hmin = step[start[c]]
        while cur >= 0:
            order[m] = cur
            arc[m] = s
            m += 1
            if step[cur] < hmin:
                hmin = step[cur]
            nxt = -1
            for k in range(indptr[cur], indptr[cur + 1]):
                w = indices[k]
                if w != prev and w != start[c] and seg[w] == -1:
                    nxt = w
                    break
            seg[cur] = -2  # visited
            if nxt >= 0:
                s += np.sqrt(((verts[nxt] - verts[cur]) ** 2).sum())
            prev, cur = cur, nxt
        length = arc[m - 1]
        n_seg = max(1, int(np.round(length / hmin)))
        for i in range(m):
            seg[order[i]] = min(int(arc[i] * n_seg / length), n_seg - 1) if length > 0 else 0
    return seg


def _chain_clusters(verts, faces, sig, count, fixed, cell_h, cluster):
    """Boundary-curve vertices clustered along their curves: the curve edges (used by >= 3
    faces) between vertices of one curve signature form chains, each cut into pieces of about the
    cell size in arc length (chains that branch keep their cell clusters)."""
    nv = len(verts)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    ue, n_use = np.unique(e[:, 0] * np.int64(nv) + e[:, 1], return_counts=True)
    a, b = ue[n_use >= 3] // nv, ue[n_use >= 3] % nv
    curve = (count >= 2) & ~fixed
    m = curve[a] & curve[b] & (sig[a] == sig[b])
    a, b = a[m], b[m]
    g = coo_matrix((np.ones(2 * len(a), dtype=np.int8), (np.r_[a, b], np.r_[b, a])), shape=(nv, nv)).tocsr()
    n_comp, comp = connected_components(g, directed=False)
    comp = np.where(curve, comp, -1).astype(np.int64)
    seg = _walk_chains(g.indptr.astype(np.int64), g.indices.astype(np.int64), verts, comp, n_comp, cell_h)
    sel = seg >= 0
    out = cluster.copy()
    if sel.any():
        new = np.unique(comp[sel] * np.int64(nv) + seg[sel], return_inverse=True)[1].ravel()
        out[sel] = int(cluster.max()) + 1 + new
    return np.unique(out, return_inverse=True)[1].ravel()


def _coarsen_plan(surface, h_um, min_elements_per_grain, connected=True):
    """What :func:`coarsen_surface` derives from the surface and the options alone: patches,
    vertex signatures, fixed junctions, the clusters and the original normals (``connected=False``:
    the clusters are the whole cells, not their connected pieces)."""
    verts, faces, pairs, ng = surface.vertices, surface.faces, surface.pairs, surface.n_grains
    nv = len(verts)
    patch = _patch_ids(pairs)
    n_patches = int(patch.max()) + 1
    sig, count = _signatures(faces, patch, nv)
    # local cell size: h, or finer around small grains (min_elements_per_grain)
    hv = np.full(nv, float(h_um))
    if min_elements_per_grain:
        vol = np.abs(grain_volumes(verts, faces, pairs, ng))
        hk = np.cbrt(6 * np.sqrt(2) * vol / float(min_elements_per_grain))
        hg = np.minimum(hk, h_um)
        hf = np.minimum(
            np.where(pairs[:, 0] > 0, hg[np.maximum(pairs[:, 0], 1) - 1], h_um),
            np.where(pairs[:, 1] > 0, hg[np.maximum(pairs[:, 1], 1) - 1], h_um),
        )
        np.minimum.at(hv, faces.ravel(), np.repeat(hf, 3))
    level = np.ceil(np.log2(h_um / np.maximum(hv, 1e-12))).astype(np.int64)  # h / 2**level <= hv
    cell_h = h_um / 2.0**level
    lo = verts.min(axis=0)
    cell = np.floor((verts - lo) / cell_h[:, None]).astype(np.int64)
    fixed = count >= _FIXED_COUNT  # junctions of curves stay
    cell -= cell.min(axis=0)
    span = cell.max(axis=0) + 1
    key = (((sig.astype(np.int64) * 64 + level) * span[0] + cell[:, 0]) * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    key[fixed] = -1 - np.arange(int(fixed.sum()))  # a cluster of their own
    if connected:
        # a cluster is a connected piece of the cell's vertices of one signature (merging two
        # pieces of a patch or curve that meet in a cell would pinch the surface)
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        e = e[key[e[:, 0]] == key[e[:, 1]]]
        g = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(nv, nv))
        cluster = connected_components(g, directed=False)[1].astype(np.int64)
        cluster = _chain_clusters(verts, faces, sig, count, fixed, cell_h, cluster)
    else:
        cluster = np.unique(key, return_inverse=True)[1].ravel()
    normal0 = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    return {
        "surface": surface,
        "h_um": h_um,
        "min_elements_per_grain": min_elements_per_grain,
        "connected": connected,
        "patch": patch,
        "n_patches": n_patches,
        "fixed": fixed,
        "cluster": cluster,
        "normal0": normal0,
        "restored": np.zeros(nv, dtype=bool),
    }


def _changed_faces(prev, new, also=None) -> np.ndarray:
    """Faces of ``new`` that are not in ``prev`` with the same corner positions (both carry
    ``face_ids``, persistent ids of their faces), or whose ids are in ``also``: the only faces
    a self-intersection can involve when ``prev``'s other faces had none among themselves."""
    n = int(max(prev.face_ids.max(initial=-1), new.face_ids.max(initial=-1))) + 1
    at = np.full(n, -1, dtype=np.int64)
    at[prev.face_ids] = np.arange(len(prev.face_ids))
    j = at[new.face_ids]
    changed = j < 0
    ok = ~changed
    same = (new.vertices[new.faces[ok]] == prev.vertices[prev.faces[j[ok]]]).all(axis=(1, 2))
    changed[np.flatnonzero(ok)[~same]] = True
    if also is not None and len(also):
        changed |= np.isin(new.face_ids, also)
    return changed


def repair_self_intersections(surface, coarse, max_rounds: int = 20, ring: int = 1):
    """Find every self-intersection of a coarsening of ``surface`` and undo the clusters around them.

    Each round finds all intersecting triangle pairs of the coarse surface at once
    (:func:`~nmc_dataset.export._intersect.self_intersections`), then restores the fine vertices
    of the clusters of their vertices and of ``ring`` rings of neighbouring vertices
    (``coarsen_surface(..., resume=coarse, keep_vertices=...)``, which re-checks the touched
    grains); rounds repeat until none is left (restored triangles are the fine surface's, so the
    rounds end where the fine surface is free of intersections).

    Parameters
    ----------
    surface : GrainSurface
        The fine surface.
    coarse : GrainSurface
        A result of :func:`coarsen_surface` on ``surface``.
    max_rounds : int, default 20
        Rounds of find and repair.
    ring : int, default 1
        Rings of neighbouring coarse vertices restored with those of the intersecting triangles.

    Returns
    -------
    GrainSurface
        The repaired coarse surface; its ``stats`` add ``intersections`` (pairs found in the
        first round), ``intersection_rounds``, ``intersections_left`` (0 unless the rounds ran
        out) and the finder's process-CPU seconds ``intersect_cpu_s``.
    """
    from nmc_dataset.export._intersect import self_intersections

    first, cpu, rounds = None, 0.0, 0
    h, mepg, conn = (coarse.plan[k] for k in ("h_um", "min_elements_per_grain", "connected"))
    prev = x = None
    while True:
        c0 = time.process_time()
        # after a repair only the changed triangles (and those of the pairs found) can intersect
        only = None if prev is None else _changed_faces(prev, coarse, prev.face_ids[x.ravel()])
        prev = coarse
        x = self_intersections(coarse.vertices, coarse.faces, only=only)
        cpu += time.process_time() - c0
        first = len(x) if first is None else first
        if len(x) == 0 or rounds == max_rounds:
            break
        rounds += 1
        vs = np.unique(coarse.faces[x.ravel()])
        for _ in range(ring):
            vs = np.unique(coarse.faces[np.isin(coarse.faces, vs).any(axis=1)])
        coarse = coarsen_surface(surface, h, mepg, resume=coarse, keep_vertices=vs, connected=conn)
    coarse.stats = {
        **coarse.stats,
        "intersections": first,
        "intersection_rounds": rounds,
        "intersections_left": len(x),
        "intersect_cpu_s": cpu,
    }
    return coarse


def tet_mesh_coarsened(
    surface,
    h_um: float,
    min_elements_per_grain: int | None = None,
    max_retries: int = 12,
    threads: int = 1,
    repair: bool = True,
    decimate: bool = True,
):
    """Coarsen ``surface``, repair all its self-intersections (:func:`repair_self_intersections`),
    decimate it by constrained edge collapses (:func:`~nmc_dataset.export._collapse.decimate_surface`)
    and tet-mesh it with gmsh; where gmsh still reports the boundary intersecting itself, keep the
    surface fine around the reported points and retry.

    Returns ``(TetMesh, coarse surface)`` (its ``stats`` also hold the wall and process-CPU
    seconds spent coarsening and in gmsh over all attempts, ``coarsen_s``, ``gmsh_s``,
    ``coarsen_cpu_s`` (with the repair of self-intersections and the decimation), ``gmsh_cpu_s``,
    ``attempts`` and ``intersections_found``, the pairs found before each attempt, and those of
    :func:`~nmc_dataset.export._collapse.decimate_surface`); raises ``RuntimeError`` when the
    retries run out.

    Parameters
    ----------
    surface : GrainSurface
        The fine conforming surface (µm).
    h_um : float
        Target element edge length in µm.
    min_elements_per_grain : int, optional
        Keep small grains' surfaces finer so that each grain gets about this many tets.
    max_retries : int, default 12
        Local repairs tried after gmsh reports self-intersections.
    threads : int, default 1
        gmsh threads.
    repair : bool, default True
        Find and repair the self-intersections before gmsh (``False``: only gmsh's reports, one
        per attempt).
    decimate : bool, default True
        Remove the clustering's short edges by constrained edge collapses (about half the
        triangles and tets; ``False``: the clustered surface as it is).

    Returns
    -------
    mesh : TetMesh
        The tet mesh (µm).
    coarse : GrainSurface
        The coarsened surface it fills.
    """

    keep = np.zeros((0, 3))
    spent = {"coarsen_s": 0.0, "gmsh_s": 0.0, "coarsen_cpu_s": 0.0, "gmsh_cpu_s": 0.0}
    c = None  # each retry resumes the previous coarsening (its clusters and repairs)
    found = []  # intersections found before each gmsh attempt
    for attempt in range(max_retries + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        c = coarsen_surface(surface, h_um, min_elements_per_grain, keep_near=keep, resume=c)
        if repair:
            c = repair_self_intersections(surface, c)
            found.append(c.stats["intersections"])
        d = c
        if decimate:
            from nmc_dataset.export._collapse import decimate_surface

            locked = None
            if len(keep):  # also kept as they are near gmsh's reports
                from scipy.spatial import cKDTree

                near = cKDTree(c.vertices).query_ball_point(keep, 2.0 * h_um)
                locked = np.zeros(len(c.vertices), dtype=bool)
                locked[np.concatenate([np.asarray(i, dtype=np.int64) for i in near])] = True
            d = decimate_surface(c, h_um, min_elements_per_grain, locked=locked)
        t1, c1 = time.perf_counter(), time.process_time()
        spent["coarsen_s"] += t1 - t0
        spent["coarsen_cpu_s"] += c1 - c0
        try:
            tm = tet_mesh(d, h_um, threads=threads)
            spent["gmsh_s"] += time.perf_counter() - t1
            spent["gmsh_cpu_s"] += time.process_time() - c1
            d.stats = {**getattr(d, "stats", {}), **spent, "attempts": attempt + 1, "intersections_found": found}
            c.plan = None  # the clustering of the fine surface is not needed any more
            d.plan = None
            return tm, d
        except RuntimeError as e:
            spent["gmsh_s"] += time.perf_counter() - t1
            spent["gmsh_cpu_s"] += time.process_time() - c1
            pts = getattr(e, "points", np.zeros((0, 3)))
            if len(pts) == 0:
                raise
            keep = np.concatenate([keep, pts])
    raise RuntimeError(f"gmsh could not mesh the coarsened surface after {max_retries} local repairs")


__all__ = ["coarsen_surface", "grain_volumes", "repair_self_intersections", "tet_mesh_coarsened"]
