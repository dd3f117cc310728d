"""Slow twins of nmc_dataset.export."""

from __future__ import annotations

import numpy as np
import trimesh


def int_rows_reference(rows, sep: str = " ") -> str:
    """Slow twin of :func:`int_rows`.

    Parameters
    ----------
    rows : (n, m) int array
        Rows to write.
    sep : str, default " "
        Separator between entries.

    Returns
    -------
    str
        One line per row, each ending in a newline.
    """
    a = np.asarray(rows, dtype=np.int64)
    return "".join(sep.join(map(str, r)) + "\n" for r in a.tolist())


def write_grains_glb_trimesh(path, grain_meshes) -> None:
    """Slow twin: ``(k, trimesh.Trimesh)`` pairs as a trimesh scene exported to GLB.

    Parameters
    ----------
    path : path-like
        GLB file to write.
    grain_meshes : iterable of (int, trimesh.Trimesh)
        Grain label and its surface.
    """

    scene = trimesh.Scene()
    for k, m in grain_meshes:
        scene.add_geometry(m, node_name=f"grain_{k}", geom_name=f"grain_{k}")
    with open(path, "wb") as fh:
        fh.write(scene.export(file_type="glb"))


def _segment_meets_triangle(p, q, tri) -> bool:
    """Segment pq meets triangle ``tri`` (3, 3): the point where it crosses the triangle's plane,
    inside the triangle by barycentric coordinates (touching included, coplanar segments not)."""
    a, b, c = tri
    n = np.cross(b - a, c - a)
    dp, dq = float(np.dot(n, p - a)), float(np.dot(n, q - a))
    if dp * dq > 0 or (dp == 0 and dq == 0):
        return False
    x = p + (dp / (dp - dq)) * (q - p)
    nn = float(np.dot(n, n))
    # barycentric coordinates of x from the sub-triangle areas (signed along n)
    wa = float(np.dot(np.cross(c - b, x - b), n)) / nn
    wb = float(np.dot(np.cross(a - c, x - c), n)) / nn
    wc = 1.0 - wa - wb
    tol = 1e-12
    return wa >= -tol and wb >= -tol and wc >= -tol


def self_intersections_bruteforce(vertices, faces) -> np.ndarray:
    """Slow twin of :func:`nmc_dataset.export._intersect.self_intersections`: every pair of faces.

    Pairs sharing no vertex intersect when an edge of one meets the other; pairs sharing one
    vertex when the edge of one opposite it meets the other; pairs sharing an edge are not tested.

    Parameters
    ----------
    vertices : (V, 3) float array
        Vertex positions.
    faces : (F, 3) int array
        Triangles.

    Returns
    -------
    (K, 2) int64 array
        Face ids ``i < j`` of the intersecting pairs, sorted.
    """
    v = np.asarray(vertices, dtype=float)
    f = np.asarray(faces, dtype=np.int64)
    out = []
    for i in range(len(f)):
        for j in range(i + 1, len(f)):
            common = set(f[i].tolist()) & set(f[j].tolist())
            if len(common) >= 2:
                continue
            if common:
                (s,) = common
                ei = [[x for x in f[i].tolist() if x != s]]
                ej = [[x for x in f[j].tolist() if x != s]]
            else:
                ei = [[f[i, k], f[i, (k + 1) % 3]] for k in range(3)]
                ej = [[f[j, k], f[j, (k + 1) % 3]] for k in range(3)]
            hit = any(_segment_meets_triangle(v[p], v[q], v[f[j]]) for p, q in ei) or any(
                _segment_meets_triangle(v[p], v[q], v[f[i]]) for p, q in ej
            )
            if hit:
                out.append((i, j))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _patch_structure(vertices, faces, pairs):
    """Per vertex its set of grain pairs; the curve components (edges used by >= 3 faces,
    grouped by their set of pairs) with the junction vertices (>= 4 pairs) they touch."""
    vp = {}
    ef = {}
    for f, (a, b) in zip(faces.tolist(), pairs.tolist()):
        pr = (min(a, b), max(a, b))
        for i in range(3):
            vp.setdefault(f[i], set()).add(pr)
            e = (min(f[i], f[(i + 1) % 3]), max(f[i], f[(i + 1) % 3]))
            ef.setdefault(e, []).append(pr)
    curves = {}
    for e, prs in ef.items():
        if len(prs) >= 3:
            curves.setdefault(frozenset(prs), []).append(e)
    return vp, ef, curves


def _components(edges):
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    comp = {}
    for a, _ in edges:
        comp.setdefault(find(a), set())
    for a, b in edges:
        comp[find(a)].update((a, b))
    return list(comp.values())


def decimation_violations(before, after, source, vol_tol=None, min_shape=None) -> list[str]:
    """Independent check of a decimated conforming surface against its input (slow twin of the
    collapse checks): Python dicts and sets, no code shared with the decimation.

    Checked: every grain's surface closed and consistently oriented (each edge used once in each
    direction by its outward faces); the same grain pairs; every output vertex with the same set
    of grain pairs as the input vertex it is; every junction (>= 4 pairs) kept; the boundary
    curves (edges used by >= 3 faces, grouped by their pairs) in the same connected pieces
    joining the same junctions; no triangle twice; optionally the grain volumes within
    ``vol_tol`` (relative) and every new triangle's shape ``4 sqrt(3) A / sum l^2 >= min_shape``.

    Parameters
    ----------
    before, after : GrainSurface
        Input and decimated surface.
    source : (V_after,) int array
        For each output vertex, its vertex id in ``before``.
    vol_tol : float, optional
        Largest relative change of a grain's enclosed volume.
    min_shape : float, optional
        Least shape of a triangle not in ``before``.

    Returns
    -------
    list of str
        One line per violation (empty: none).
    """
    out = []
    src = [int(s) for s in source]
    fa = [[src[i] for i in f] for f in after.faces.tolist()]
    # grains closed and oriented
    use = {}
    for f, (a, b) in zip(fa, after.pairs.tolist()):
        for g, ff in ((a, f), (b, f[::-1])):
            if g == 0:
                continue
            for i in range(3):
                use.setdefault((g, ff[i], ff[(i + 1) % 3]), 0)
                use[(g, ff[i], ff[(i + 1) % 3])] += 1
    for (g, x, y), n in use.items():
        if n != 1 or use.get((g, y, x), 0) != 1:
            out.append(f"grain {g}: edge {x}-{y} used {n} times, back {use.get((g, y, x), 0)}")
            break
    seen, twice = set(), set()
    for f in before.faces.tolist():
        (twice if frozenset(f) in seen else seen).add(frozenset(f))
    seen = set()
    for f in fa:
        k = frozenset(f)
        if len(k) < 3 or (k in seen and k not in twice):
            out.append(f"triangle {f} degenerate or twice")
        seen.add(k)
    vb, _, cb = _patch_structure(before.vertices, before.faces, before.pairs)
    va, _, ca = _patch_structure(after.vertices, np.array(fa).reshape(-1, 3), after.pairs)
    if {p for s in vb.values() for p in s} != {p for s in va.values() for p in s}:
        out.append("grain pairs differ")
    for x, s in va.items():
        if s != vb[x]:
            out.append(f"vertex {x}: pairs {sorted(s)} were {sorted(vb[x])}")
    junctions = {x for x, s in vb.items() if len(s) >= 4}
    if not junctions <= set(va):
        out.append(f"{len(junctions - set(va))} junction vertices removed")

    def curve_pieces(curves):
        return sorted(
            (sorted(map(sorted, k)), sorted(c & junctions)) for k, es in curves.items() for c in _components(es)
        )

    if curve_pieces(cb) != curve_pieces(ca):
        out.append("boundary curves joined or split differently")
    if vol_tol is not None:
        from nmc_dataset.export._decimate import grain_volumes

        v0 = grain_volumes(before.vertices, before.faces, before.pairs, before.n_grains)
        v1 = grain_volumes(after.vertices, after.faces, after.pairs, after.n_grains)
        bad = np.abs(v1 - v0) > vol_tol * np.abs(v0) + 1e-12
        if bad.any():
            out.append(f"{int(bad.sum())} grain volumes changed by more than {vol_tol}")
    if min_shape is not None:
        old = {frozenset(f) for f in before.faces.tolist()}
        for f, pf in zip(fa, after.vertices[after.faces]):
            if frozenset(f) in old:
                continue
            a, b, c = pf
            l2 = ((a - b) ** 2).sum() + ((b - c) ** 2).sum() + ((c - a) ** 2).sum()
            shape = 2 * np.sqrt(3) * np.linalg.norm(np.cross(b - a, c - a)) / l2
            if shape < min_shape - 1e-12:
                out.append(f"new triangle {f} of shape {shape:.3f}")
                break
    return out
