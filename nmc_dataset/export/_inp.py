"""Solver-ready tetrahedral meshes: second order, boundary and interface sets, orientations, provenance.

* :func:`second_order` — C3D10 / ``tetra10`` connectivity from a linear tet mesh (one mid-edge
  node per unique edge, at the edge midpoint: the boundary is piecewise linear, so the geometry is
  unchanged).
* :func:`mesh_faces` — the particle's outer faces and every grain-boundary face, as
  ``(element, local face)`` pairs, sorted by grain pair.
* :func:`write_inp` — an Abaqus / CalculiX input deck: nodes written ``%.12e`` (19 characters:
  CalculiX reads at most 20 per field), one ELSET ``grain_k`` per grain, NSETs and element-based
  SURFACEs for the outer surface and for every grain pair, one ``*ORIENTATION`` plus a
  ``*SOLID SECTION`` per grain, units and provenance in a ``**`` header.

Local face numbers follow Abaqus' tetrahedron convention (the same for C3D4 and C3D10, corner
nodes 1-4): S1 = (1, 2, 3), S2 = (1, 4, 2), S3 = (2, 4, 3), S4 = (3, 4, 1).
"""

from __future__ import annotations

import json

import numba
import numpy as np

from nmc_dataset._util import atomic_path
from nmc_dataset.errors import InputError
from nmc_dataset.export._textrows import _put_int, id_sci_rows_bytes, numbered_rows_bytes

# faces opposite corner 0..3 (oriented away from that corner for a positive tet) and their Abaqus
# face numbers
_OPPOSITE = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
_ABAQUS_FACE = np.array([3, 4, 2, 1])
# edges of a tetra10 in meshio / VTK / Abaqus order (nodes 5..10)
TET10_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrices of unit quaternions ``(w, x, y, z)`` (active: ``v' = R v``), shape (N, 3, 3)."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=1),
        ],
        axis=1,
    )


def check_orientations(orientations, n_grains: int):
    """``None`` or a float64 (n_grains, 4) array of unit quaternions (row ``k - 1`` = grain ``k``)."""

    if orientations is None:
        return None
    q = np.asarray(orientations, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 4 or q.shape[0] < n_grains:
        raise InputError(
            f"orientations must be an (n_grains, 4) array of quaternions (w, x, y, z) with "
            f"n_grains >= {n_grains}, got shape {q.shape}"
        )
    norm = np.linalg.norm(q, axis=1)
    if not np.all(np.isfinite(q)) or np.any(np.abs(norm - 1) > 1e-6):
        raise InputError("orientations must be finite unit quaternions (w, x, y, z)")
    return q


@numba.njit(cache=True)
def _sort_buckets(count, ids, keys):
    """Stable insertion sort on ``keys`` of each bucket ``count[i]:count[i + 1]`` (the buckets of a
    counting sort: a few entries each), ``ids`` moved along; in place."""
    for i in range(count.shape[0] - 1):
        for p in range(count[i] + 1, count[i + 1]):
            e, k = ids[p], keys[p]
            q = p - 1
            while q >= count[i] and keys[q] > k:
                ids[q + 1] = ids[q]
                keys[q + 1] = keys[q]
                q -= 1
            ids[q + 1] = e
            keys[q + 1] = k


@numba.njit(cache=True)
def _number_edges(tets, edges, nn):
    """Unique edges ``(a < b)`` of the tets in lexicographic order (a counting sort on ``a``, then
    an insertion sort of each bucket on ``b``) and the number of each tet edge among them."""
    ne = 6 * tets.shape[0]
    count = np.zeros(nn + 1, np.int64)
    for t in range(tets.shape[0]):
        for j in range(6):
            count[min(tets[t, edges[j, 0]], tets[t, edges[j, 1]]) + 1] += 1
    for i in range(nn):
        count[i + 1] += count[i]
    fill = count[:-1].copy()
    eid = np.empty(ne, np.int64)
    other = np.empty(ne, np.int64)
    for t in range(tets.shape[0]):
        for j in range(6):
            a, b = tets[t, edges[j, 0]], tets[t, edges[j, 1]]
            if a > b:
                a, b = b, a
            p = fill[a]
            eid[p] = 6 * t + j
            other[p] = b
            fill[a] = p + 1
    _sort_buckets(count, eid, other)
    n_uniq = 0
    for i in range(nn):
        for p in range(count[i], count[i + 1]):
            if p == count[i] or other[p] != other[p - 1]:
                n_uniq += 1
    uniq = np.empty((n_uniq, 2), np.int64)
    inv = np.empty(ne, np.int64)
    k = -1
    for i in range(nn):
        for p in range(count[i], count[i + 1]):
            if p == count[i] or other[p] != other[p - 1]:
                k += 1
                uniq[k, 0] = i
                uniq[k, 1] = other[p]
            inv[eid[p]] = k
    return uniq, inv


def second_order(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic tets (10 nodes, meshio/VTK/Abaqus order) from linear ones.

    Returns
    -------
    points : (P + E, 3) array
        The corner nodes first (same indices), then one node per unique edge at its midpoint
        (edges in lexicographic order of their sorted node pair).
    tets10 : (T, 10) int array
    """
    tets = np.ascontiguousarray(tets, dtype=np.int64)
    nn = int(tets.max()) + 1 if len(tets) else 1
    uniq, inv = _number_edges(tets, TET10_EDGES, nn)
    mid = 0.5 * (points[uniq[:, 0]] + points[uniq[:, 1]])
    t10 = np.concatenate([tets, len(points) + inv.reshape(-1, 6)], axis=1)
    return np.concatenate([points, mid]), t10


@numba.njit(cache=True)
def _pair_faces(tets, grain, nn):
    """The faces of all tets, sorted by their sorted node triple (a counting sort on the smallest
    node, then an insertion sort of each bucket on the other two; ties in the order of
    ``4 element + corner``), and their pairing: faces used once (outer) and the pairs of
    consecutive equal faces whose elements lie in different grains."""
    nt = tets.shape[0]
    nf = 4 * nt
    opp = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
    count = np.zeros(nn + 1, np.int64)
    for t in range(nt):
        for c in range(4):
            a = min(tets[t, opp[c, 0]], tets[t, opp[c, 1]], tets[t, opp[c, 2]])
            count[a + 1] += 1
    for i in range(nn):
        count[i + 1] += count[i]
    # bucket order: face ids and their (middle, largest) node key, stored contiguously per bucket
    fid = np.empty(nf, np.int64)
    key = np.empty(nf, np.int64)
    fill = count[:-1].copy()
    for t in range(nt):
        for c in range(4):
            a, b, d = tets[t, opp[c, 0]], tets[t, opp[c, 1]], tets[t, opp[c, 2]]
            if a > b:
                a, b = b, a
            if b > d:
                b, d = d, b
            if a > b:
                a, b = b, a
            p = fill[a]
            fid[p] = 4 * t + c
            key[p] = b * nn + d
            fill[a] = p + 1
    _sort_buckets(count, fid, key)
    # equal neighbours: the same bucket and key
    paired = np.zeros(nf, np.bool_)
    n_cross = 0
    for i in range(nn):
        for p in range(count[i], count[i + 1] - 1):
            if key[p] == key[p + 1]:
                paired[p] = True
                paired[p + 1] = True
                if grain[fid[p] // 4] != grain[fid[p + 1] // 4]:
                    n_cross += 1
    n_outer = nf - paired.sum()
    outer = np.empty((n_outer, 2), np.int64)
    cross = np.empty((n_cross, 4), np.int64)
    i = j = 0
    for b in range(nn):
        for p in range(count[b], count[b + 1]):
            f = fid[p]
            if not paired[p]:
                outer[i, 0] = f // 4
                outer[i, 1] = f % 4
                i += 1
            elif p + 1 < count[b + 1] and key[p] == key[p + 1]:
                g = fid[p + 1]
                if grain[f // 4] != grain[g // 4]:
                    if grain[f // 4] > grain[g // 4]:
                        f, g = g, f
                    cross[j, 0] = f // 4
                    cross[j, 1] = f % 4
                    cross[j, 2] = g // 4
                    cross[j, 3] = g % 4
                    j += 1
    return outer, cross


def mesh_faces(tets: np.ndarray, grain: np.ndarray):
    """Outer and grain-boundary faces of a conforming tet mesh.

    Returns
    -------
    outer : (S, 2) int array
        ``(element, corner opposite the face)`` of every boundary face, by element.
    interfaces : dict
        ``(a, b) -> (F, 4) int array`` for every grain pair ``a < b`` in contact:
        ``(element in a, opposite corner, element in b, opposite corner)`` per shared face, by
        element in ``a``.
    """
    tets = np.ascontiguousarray(tets, dtype=np.int64)
    grain = np.ascontiguousarray(grain, dtype=np.int64)
    nn = int(tets.max()) + 1 if len(tets) else 1
    outer, rows = _pair_faces(tets, grain, nn)  # both in the order of the sorted faces
    a, b = grain[rows[:, 0]], grain[rows[:, 2]]
    ng = int(grain.max()) + 1 if len(grain) else 1
    if ng * ng * max(len(tets), 1) < 2**62:  # one key (a, b, element) and a stable sort
        key = np.argsort((a * ng + b) * len(tets) + rows[:, 0], kind="stable")
    else:
        key = np.lexsort((rows[:, 0], b, a))
    rows, a, b = rows[key], a[key], b[key]
    cut = np.flatnonzero((np.diff(a) != 0) | (np.diff(b) != 0)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(rows)]])
    interfaces = {(int(a[s]), int(b[s])): rows[s:e] for s, e in zip(starts, ends) if e > s}
    return outer[np.argsort(outer[:, 0], kind="stable")], interfaces


@numba.njit(cache=True)
def _fill_blocks(hdr, hoff, kind, start, end, ids, ec, tets, out):
    """Blocks of ``.inp`` lines: header bytes ``hdr[hoff[j]:hoff[j + 1]]``, then by ``kind[j]``:
    0: ``ids[start:end] + 1``, 16 per line; 1: the sorted distinct nodes (+ 1) of the faces
    ``ec[start:end]`` (``(element, opposite corner)``; with the mid-edge nodes of the face for
    10-node tets), 16 per line; 2: lines ``element + 1, S<Abaqus face>`` of those faces."""
    opp = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
    abq = np.array([3, 4, 2, 1])
    edges = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
    quad = tets.shape[1] == 10
    digits = np.empty(24, dtype=np.uint8)
    buf = np.empty(0, np.int64)
    n = 0
    for j in range(kind.size):
        for i in range(hoff[j], hoff[j + 1]):
            out[n] = hdr[i]
            n += 1
        s, e = start[j], end[j]
        if kind[j] == 2:
            for r in range(s, e):
                n = _put_int(out, n, ec[r, 0] + 1, digits)
                out[n] = 44
                out[n + 1] = 32
                out[n + 2] = 83  # ", S"
                n = _put_int(out, n + 3, abq[ec[r, 1]], digits)
                out[n] = 10
                n += 1
            continue
        if kind[j] == 0:
            vals = ids[s:e]
        else:
            per = 6 if quad else 3
            if buf.size < per * (e - s):
                buf = np.empty(2 * per * (e - s), np.int64)
            m = 0
            for r in range(s, e):
                t, c = ec[r, 0], ec[r, 1]
                for k in range(3):
                    buf[m] = tets[t, opp[c, k]]
                    m += 1
                if quad:
                    for k in range(6):
                        if edges[k, 0] != c and edges[k, 1] != c:
                            buf[m] = tets[t, 4 + k]
                            m += 1
            srt = np.sort(buf[:m])
            u = 0
            for k in range(m):
                if k == 0 or srt[k] != srt[k - 1]:
                    srt[u] = srt[k]
                    u += 1
            vals = srt[:u]
        for k in range(vals.size):
            if k % 16:
                out[n] = 44
                out[n + 1] = 32
                n += 2
            n = _put_int(out, n, vals[k] + 1, digits)
            if k % 16 == 15 or k == vals.size - 1:
                out[n] = 10
                n += 1
    return n


class _Blocks:
    """Collects the header and content of ``.inp`` line blocks for :func:`_fill_blocks`."""

    def __init__(self):
        self.headers, self.kind, self.start, self.end = [], [], [], []

    def add(self, header: str, kind: int, start: int, end: int):
        self.headers.append(header)
        self.kind.append(kind)
        self.start.append(start)
        self.end.append(end)

    def text(self, ids, ec, tets) -> np.ndarray:
        hb = [h.encode("ascii", errors="replace") for h in self.headers]
        hoff = np.zeros(len(hb) + 1, np.int64)
        np.cumsum([len(h) for h in hb], out=hoff[1:])
        hdr = np.frombuffer(b"".join(hb), dtype=np.uint8) if hb else np.zeros(0, np.uint8)
        kind, start, end = (np.asarray(v, dtype=np.int64) for v in (self.kind, self.start, self.end))
        per = np.where(kind == 2, 26, np.where(kind == 1, 23 * (6 if tets.shape[1] == 10 else 3), 23))
        size = int(hoff[-1] + (per * (end - start)).sum()) + 1
        out = np.empty(size, np.uint8)
        return out[: _fill_blocks(hdr, hoff, kind, start, end, ids, ec, tets, out)]


def provenance_lines(provenance: dict | None) -> list[str]:
    """Human-readable ``key: value`` lines (units first) for file headers."""
    prov = dict(provenance or {})
    lines = [
        "nmc-dataset tetrahedral mesh of a virtual NMC811 particle",
        (
            "units: coordinates in um (micrometres); a consistent set is um, uN, MPa "
            "(forces in uN, stresses and moduli in MPa)"
        ),
        (
            "frame: particle frame, origin at the particle centre; crystal orientations are the active "
            "rotation crystal -> particle frame"
        ),
    ]
    lines += [f"{k}: {v}" for k, v in prov.items()]
    lines.append("provenance_json: " + json.dumps(prov, sort_keys=True))
    return lines


def write_inp(
    path,
    points: np.ndarray,
    tets: np.ndarray,
    grain: np.ndarray,
    *,
    orientations=None,
    provenance: dict | None = None,
    material: str = "NMC811",
    sections: bool = True,
    faces=None,
) -> None:
    """Write an Abaqus / CalculiX input deck (atomically).

    Parameters
    ----------
    path : path-like
    points : (P, 3) float array
        µm.
    tets : (T, 4) or (T, 10) int array
        Positively oriented linear (C3D4) or quadratic (C3D10, meshio/Abaqus node order) tets.
    grain : (T,) int array
        Grain label ``k >= 1`` of each tet; ELSET ``grain_k``.
    orientations : (n_grains, 4) float array, optional
        Unit quaternions ``(w, x, y, z)`` (row ``k - 1`` = grain ``k``) of the active rotation
        crystal -> particle frame. Written as ``*ORIENTATION, NAME=OR_k, SYSTEM=RECTANGULAR`` with
        the rotated crystal x (a-axis) and y (in the a-b plane) axes as its two points.
    provenance : dict, optional
        Written as ``**`` comment lines (and one JSON line) at the top.
    material : str
        Material name of the ``*SOLID SECTION`` stubs: define ``*MATERIAL, NAME=<material>``
        (e.g. orthotropic elastic constants in the crystal frame) before including this file.
    sections : bool
        Write the per-grain ``*SOLID SECTION`` stubs (with ``ORIENTATION=OR_k`` when
        orientations are given).
    faces : tuple, optional
        This mesh's ``mesh_faces(tets[:, :4], grain)``, when the caller has it already.

    Notes
    -----
    Sets: NSET ``NALL``, ELSET ``EALL``; NSET ``N_OUTER`` and SURFACE ``S_OUTER`` (faces of the
    particle boundary); for every grain pair ``a < b`` in contact NSET ``N_GB_a_b`` (the
    interface nodes) and SURFACEs ``S_GB_a_b`` (faces of grain ``a``'s elements on the
    interface) and ``S_GB_b_a`` (the same interface seen from grain ``b``).
    """
    tets = np.ascontiguousarray(tets, dtype=np.int64)
    grain = np.asarray(grain, dtype=np.int64)
    etype = {4: "C3D4", 10: "C3D10"}[tets.shape[1]]
    ks = np.unique(grain)
    q = check_orientations(orientations, int(ks.max()) if len(ks) else 0)
    # ``faces``: this mesh's mesh_faces(tets[:, :4], grain), when the caller has it already
    outer, interfaces = mesh_faces(tets[:, :4], grain) if faces is None else faces
    parts = ["".join(f"** {line}\n" for line in provenance_lines(provenance))]
    parts.append("*NODE, NSET=NALL\n")
    parts.append(id_sci_rows_bytes(np.arange(1, len(points) + 1), np.asarray(points, float), 12, ", "))
    parts.append(f"*ELEMENT, TYPE={etype}, ELSET=EALL\n")
    # C3D10: 11 entries on one line (Abaqus and CalculiX read up to 16)
    parts.append(numbered_rows_bytes(tets, 1, 1, ", "))
    # the element sets, node sets and surfaces: one compiled pass over blocks of lines
    blocks = _Blocks()
    by_grain = np.argsort(grain, kind="stable")  # each grain's elements, ascending
    gstart = np.searchsorted(grain[by_grain], ks)
    gend = np.append(gstart[1:], len(grain))
    for k, a, b in zip(ks.tolist(), gstart.tolist(), gend.tolist()):
        blocks.add(f"*ELSET, ELSET=grain_{k}\n", 0, a, b)
    pairs = list(interfaces)
    rows = [interfaces[p] for p in pairs]
    ec = np.concatenate([outer] + [r[:, :2] for r in rows] + [r[:, 2:] for r in rows]).astype(np.int64)
    no = len(outer)
    if no:
        blocks.add("*NSET, NSET=N_OUTER\n", 1, 0, no)
        blocks.add("*SURFACE, NAME=S_OUTER, TYPE=ELEMENT\n", 2, 0, no)
    ni = sum(len(r) for r in rows)
    off = no
    for (a, b), r in zip(pairs, rows):
        e = off + len(r)
        blocks.add(f"*NSET, NSET=N_GB_{a}_{b}\n", 1, off, e)
        blocks.add(f"*SURFACE, NAME=S_GB_{a}_{b}, TYPE=ELEMENT\n", 2, off, e)
        blocks.add(f"*SURFACE, NAME=S_GB_{b}_{a}, TYPE=ELEMENT\n", 2, off + ni, e + ni)
        off = e
    parts.append(blocks.text(by_grain, np.ascontiguousarray(ec.reshape(-1, 2)), tets))
    if q is not None:
        R = quat_to_matrix(q[ks - 1])
        for k, r in zip(ks.tolist(), R):
            pa, pb = r[:, 0], r[:, 1]  # crystal x (a) and y axes in the particle frame
            parts.append(
                f"*ORIENTATION, NAME=OR_{k}, SYSTEM=RECTANGULAR\n" + ", ".join(f"{v:.12e}" for v in (*pa, *pb)) + "\n"
            )
    if sections:
        parts.append(f"** solid sections: define *MATERIAL, NAME={material} before including this file\n")
        for k in ks.tolist():
            ori = f", ORIENTATION=OR_{k}" if q is not None else ""
            parts.append(f"*SOLID SECTION, ELSET=grain_{k}, MATERIAL={material}{ori}\n")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for part in parts:  # text (non-ASCII as "?") and the compiled writers' byte arrays
            fh.write(part.encode("ascii", errors="replace") if isinstance(part, str) else memoryview(part))


def _tri_nodes(tets: np.ndarray, elem_corner: np.ndarray) -> np.ndarray:
    """Triangle (3 or 6 nodes, meshio order) of each ``(element, opposite corner)`` face, oriented
    away from the opposite corner."""
    tri = _OPPOSITE[elem_corner[:, 1]]
    corners = tets[elem_corner[:, 0][:, None], tri]
    if tets.shape[1] == 4:
        return corners
    lookup = np.full((4, 4), -1, dtype=np.int64)
    lookup[TET10_EDGES[:, 0], TET10_EDGES[:, 1]] = np.arange(6)
    lookup[TET10_EDGES[:, 1], TET10_EDGES[:, 0]] = np.arange(6)
    mids = [tets[elem_corner[:, 0], 4 + lookup[tri[:, i], tri[:, (i + 1) % 3]]] for i in range(3)]
    return np.concatenate([corners, np.stack(mids, axis=1)], axis=1)


def write_msh(
    path,
    points: np.ndarray,
    tets: np.ndarray,
    grain: np.ndarray,
    *,
    orientations=None,
    provenance: dict | None = None,
    faces=None,
    binary: bool = True,
) -> None:
    """Write a Gmsh MSH 2.2 file (atomically), binary (default) or ASCII.

    Physical groups: volume ``k`` named ``grain_k`` (its tets; elementary tag ``k``); surface 1
    named ``outer`` (the particle boundary, triangles facing outwards) and surface ``2 + i``
    named ``gb_a_b`` for the ``i``-th grain pair ``a < b`` (sorted; triangles facing out of
    ``a``). Units and provenance are in a ``$NmcProvenance`` section (one JSON line) and the
    orientations in a ``$NmcGrainOrientations`` section (a count line, then ``k w x y z`` per
    grain); Gmsh and meshio skip both as unknown sections. (No ``$ElementData``: meshio 5.3
    mis-splits element data over several element blocks.) Binary files hold the nodes as
    ``int32`` number + 3 ``float64`` and the elements as ``int32`` (Gmsh's binary MSH 2.2, one
    block of tets and one of triangles, 2 tags each); the sections above stay text.

    Parameters
    ----------
    path : path-like
        The ``.msh`` file.
    points : (P, 3) float array
        µm.
    tets : (T, 4) or (T, 10) int array
        Positively oriented linear or quadratic (meshio node order) tets.
    grain : (T,) int array
        Grain label ``k >= 1`` of each tet.
    orientations : (n_grains, 4) float array, optional
        Unit quaternions ``(w, x, y, z)`` per grain (row ``k - 1`` = grain ``k``).
    provenance : dict, optional
        Written as one JSON line.
    faces : tuple, optional
        This mesh's ``mesh_faces(tets[:, :4], grain)``, when the caller has it already.
    binary : bool
        Binary (exact doubles, ~1/3 of the size) or ASCII (``%.16e``) nodes and elements.
    """
    tets = np.asarray(tets, dtype=np.int64)
    grain = np.asarray(grain, dtype=np.int64)
    order = tets.shape[1] == 10
    ks = np.unique(grain)
    q = check_orientations(orientations, int(ks.max()) if len(ks) else 0)
    outer, interfaces = mesh_faces(tets[:, :4], grain) if faces is None else faces
    rows = np.concatenate([outer] + [r[:, :2] for r in interfaces.values()]) if interfaces else outer
    tris = _tri_nodes(tets, rows.reshape(-1, 2))
    counts = [len(outer)] + [len(r) for r in interfaces.values()]
    tphys = np.repeat(np.arange(1, len(counts) + 1), counts)
    names = ["outer"] + [f"gb_{a}_{b}" for a, b in interfaces]
    tet_nodes = tets[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]] if order else tets  # gmsh swaps the last two
    nt, ns = len(tets), len(tris)
    prov = {"units": "um", **(provenance or {})}
    out = [
        f"$MeshFormat\n2.2 {int(binary)} 8\n".encode(),
        np.array([1], "<i4").tobytes() + b"\n" if binary else b"",
        b"$EndMeshFormat\n",
        ("$NmcProvenance\n" + json.dumps(prov, sort_keys=True) + "\n$EndNmcProvenance\n").encode(
            "ascii", errors="replace"
        ),
        f"$PhysicalNames\n{len(names) + len(ks)}\n".encode(),
        "".join(
            [f'2 {i + 1} "{n}"\n' for i, n in enumerate(names)] + [f'3 {k} "grain_{k}"\n' for k in ks.tolist()]
        ).encode(),
        f"$EndPhysicalNames\n$Nodes\n{len(points)}\n".encode(),
    ]
    et, st = (11, 9) if order else (4, 2)
    node_ids = np.arange(1, len(points) + 1)
    if binary:
        if max(len(points), nt + ns, int(ks.max()) if len(ks) else 0, len(names)) >= 2**31:
            raise ValueError("binary MSH 2.2 numbers nodes and elements with int32: too many for one file")
        rec = np.empty(len(points), dtype=[("id", "<i4"), ("x", "<f8", (3,))])
        rec["id"], rec["x"] = node_ids, points
        out += [rec.tobytes(), b"\n"]
    else:
        out.append(id_sci_rows_bytes(node_ids, points, 16, " "))
    out.append(f"$EndNodes\n$Elements\n{nt + ns}\n".encode())
    if binary:
        for etype, first, tags, nodes in ((et, 1, grain, tet_nodes), (st, nt + 1, tphys, tris)):
            if len(nodes):
                block = np.empty((len(nodes), 3 + nodes.shape[1]), "<i4")
                block[:, 0] = np.arange(first, first + len(nodes))
                block[:, 1] = block[:, 2] = tags
                block[:, 3:] = nodes + 1
                out += [np.array([etype, len(block), 2], "<i4").tobytes(), memoryview(block).cast("B")]
        out.append(b"\n")
    else:
        for etype, first, tags, nodes in ((et, 1, grain, tet_nodes), (st, nt + 1, tphys, tris)):
            if len(nodes):
                full = np.column_stack([np.full(len(nodes), etype), np.full(len(nodes), 2), tags, tags, nodes + 1])
                out.append(numbered_rows_bytes(full, first, 0, " "))
    out.append(b"$EndElements\n")
    if q is not None:
        out.append(f"$NmcGrainOrientations\n{len(ks)}\n".encode())
        out.append(id_sci_rows_bytes(ks, q[ks - 1], 16, " "))
        out.append(b"$EndNmcGrainOrientations\n")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for part in out:
            fh.write(memoryview(part) if isinstance(part, np.ndarray) else part)


__all__ = [
    "TET10_EDGES",
    "check_orientations",
    "mesh_faces",
    "provenance_lines",
    "quat_to_matrix",
    "second_order",
    "write_inp",
    "write_msh",
]
