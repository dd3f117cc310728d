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
