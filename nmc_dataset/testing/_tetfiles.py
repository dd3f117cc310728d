"""Slow twins of the label clean-up kernels (per-voxel union-find, every block mask checked) and of
the tet-mesh writers of :mod:`nmc_dataset.export._inp`: the former numpy / Python
writers (one ``np.savetxt`` or f-string per line, a lexsort of all faces, a set scan per grain),
kept to check the compiled writers byte for byte (``.inp``) or as read back by meshio and gmsh
(the ASCII ``.msh`` against the binary one)."""

from __future__ import annotations

import io
import json

import numba as nb
import numpy as np

from nmc_dataset._util import atomic_path
from nmc_dataset.export._inp import (
    _ABAQUS_FACE,
    _OPPOSITE,
    TET10_EDGES,
    check_orientations,
    provenance_lines,
    quat_to_matrix,
)
from nmc_dataset.export._textrows import int_rows


def second_order_reference(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow twin of ``_inp.second_order`` (a row-wise ``np.unique`` of the edges): quadratic tets
    (10 nodes, meshio/VTK/Abaqus order) from linear ones.

    Parameters
    ----------
    points : (P, 3) float array
        Nodes.
    tets : (T, 4) int array
        Linear tets.

    Returns
    -------
    points : (P + E, 3) array
        The corner nodes first (same indices), then one node per unique edge at its midpoint.
    tets10 : (T, 10) int array
    """
    e = np.sort(tets[:, TET10_EDGES].reshape(-1, 2), axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    mid = 0.5 * (points[uniq[:, 0]] + points[uniq[:, 1]])
    t10 = np.concatenate([tets, len(points) + inv.reshape(-1, 6)], axis=1)
    return np.concatenate([points, mid]), t10


def mesh_faces_reference(tets: np.ndarray, grain: np.ndarray):
    """Slow twin of ``_inp.mesh_faces`` (a lexsort / int64-key argsort of all faces): outer and
    grain-boundary faces of a conforming tet mesh.

    Parameters
    ----------
    tets : (T, 4) int array
        Linear tets (or the corners of quadratic ones).
    grain : (T,) int array
        Grain of each tet.

    Returns
    -------
    outer : (S, 2) int array
        ``(element, corner opposite the face)`` of every boundary face.
    interfaces : dict
        ``(a, b) -> (F, 4) int array`` for every grain pair ``a < b`` in contact:
        ``(element in a, opposite corner, element in b, opposite corner)`` per shared face.
    """
    nt = len(tets)
    f = np.sort(tets[:, _OPPOSITE].reshape(-1, 3), axis=1)
    elem = np.repeat(np.arange(nt), 4)
    corner = np.tile(np.arange(4), nt)
    nn = int(f.max()) + 1 if len(f) else 1
    if nn < 2**21:  # one int64 key per face: one sort instead of a 3-key lexsort (same order)
        order = np.argsort((f[:, 0] * nn + f[:, 1]) * nn + f[:, 2], kind="stable")
    else:
        order = np.lexsort((f[:, 2], f[:, 1], f[:, 0]))
    fs = f[order]
    same = np.all(fs[1:] == fs[:-1], axis=1)
    first = np.flatnonzero(same)  # order[first] and order[first + 1] share a face
    paired = np.zeros(len(fs), dtype=bool)
    paired[first] = paired[first + 1] = True
    single = order[~paired]
    outer = np.stack([elem[single], corner[single]], axis=1)
    i, j = order[first], order[first + 1]
    gi, gj = grain[elem[i]], grain[elem[j]]
    cross = gi != gj
    i, j, gi, gj = i[cross], j[cross], gi[cross], gj[cross]
    swap = gi > gj
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    a, b = np.minimum(gi, gj), np.maximum(gi, gj)
    rows = np.stack([elem[i], corner[i], elem[j], corner[j]], axis=1)
    key = np.lexsort((rows[:, 0], b, a))
    rows, a, b = rows[key], a[key], b[key]
    cut = np.flatnonzero((np.diff(a) != 0) | (np.diff(b) != 0)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(rows)]])
    interfaces = {(int(a[s]), int(b[s])): rows[s:e] for s, e in zip(starts, ends) if e > s}
    return outer[np.argsort(outer[:, 0], kind="stable")], interfaces


def _id_lines_reference(ids) -> str:
    """1-based ids, 16 per line (the Abaqus limit for set data lines)."""
    ids = np.asarray(ids, dtype=np.int64) + 1
    m = len(ids) // 16 * 16
    return int_rows(ids[:m].reshape(-1, 16), ", ") + (int_rows(ids[m:].reshape(1, -1), ", ") if len(ids) > m else "")


def _surface_lines_reference(elem_corner) -> str:
    e = elem_corner[:, 0] + 1
    s = _ABAQUS_FACE[elem_corner[:, 1]]
    return int_rows(np.column_stack([e, s]), ", S")  # "element, S<face>" lines


def write_inp_reference(
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
    """Slow twin of :func:`nmc_dataset.export._inp.write_inp`: an Abaqus / CalculiX input deck.

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
        ``mesh_faces_reference(tets[:, :4], grain)``, when the caller has it.

    Notes
    -----
    Sets: NSET ``NALL``, ELSET ``EALL``; NSET ``N_OUTER`` and SURFACE ``S_OUTER`` (faces of the
    particle boundary); for every grain pair ``a < b`` in contact NSET ``N_GB_a_b`` (the
    interface nodes) and SURFACEs ``S_GB_a_b`` (faces of grain ``a``'s elements on the
    interface) and ``S_GB_b_a`` (the same interface seen from grain ``b``).
    """
    tets = np.asarray(tets, dtype=np.int64)
    grain = np.asarray(grain, dtype=np.int64)
    etype = {4: "C3D4", 10: "C3D10"}[tets.shape[1]]
    ks = np.unique(grain)
    q = check_orientations(orientations, int(ks.max()) if len(ks) else 0)
    # ``faces``: this mesh's mesh_faces_reference(tets[:, :4], grain), when the caller has it already
    outer, interfaces = mesh_faces_reference(tets[:, :4], grain) if faces is None else faces
    nodes_of_face = tets[:, :4]  # corner nodes of faces; mid-edge nodes are added for C3D10
    parts = ["".join(f"** {line}\n" for line in provenance_lines(provenance))]
    node_ids = np.arange(1, len(points) + 1)
    parts.append("*NODE, NSET=NALL\n")
    parts.append(
        "".join(
            f"{i}, {x:.12e}, {y:.12e}, {z:.12e}\n"
            for i, (x, y, z) in zip(node_ids.tolist(), np.asarray(points, float).tolist())
        )
    )
    parts.append(f"*ELEMENT, TYPE={etype}, ELSET=EALL\n")
    conn = tets + 1
    # C3D10: 11 entries on one line (Abaqus and CalculiX read up to 16)
    parts.append(int_rows(np.column_stack([np.arange(1, len(tets) + 1), conn]), ", "))
    for k in ks.tolist():
        parts.append(f"*ELSET, ELSET=grain_{k}\n" + _id_lines_reference(np.flatnonzero(grain == k)))

    def face_nodes(ec):
        n = np.unique(nodes_of_face[ec[:, 0][:, None], _OPPOSITE[ec[:, 1]]])
        if etype == "C3D10":  # mid-edge nodes of the face: the edges not touching the opposite corner
            edges_ok = ~(TET10_EDGES[None, :, :] == ec[:, 1][:, None, None]).any(axis=2)
            n = np.union1d(n, tets[ec[:, 0], 4:][edges_ok])
        return n

    if len(outer):
        parts.append("*NSET, NSET=N_OUTER\n" + _id_lines_reference(face_nodes(outer)))
        parts.append("*SURFACE, NAME=S_OUTER, TYPE=ELEMENT\n" + _surface_lines_reference(outer))
    for (a, b), rows in interfaces.items():
        parts.append(f"*NSET, NSET=N_GB_{a}_{b}\n" + _id_lines_reference(face_nodes(rows[:, :2])))
        parts.append(f"*SURFACE, NAME=S_GB_{a}_{b}, TYPE=ELEMENT\n" + _surface_lines_reference(rows[:, :2]))
        parts.append(f"*SURFACE, NAME=S_GB_{b}_{a}, TYPE=ELEMENT\n" + _surface_lines_reference(rows[:, 2:]))
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
    with atomic_path(path) as tmp, open(tmp, "w", encoding="ascii", errors="replace") as fh:
        fh.writelines(parts)


def _tri_nodes_reference(tets: np.ndarray, elem_corner: np.ndarray) -> np.ndarray:
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


def _num_lines_reference(rows: np.ndarray, fmt: str) -> str:

    buf = io.StringIO()
    np.savetxt(buf, rows, fmt=fmt)
    return buf.getvalue()


def write_msh_reference(
    path,
    points: np.ndarray,
    tets: np.ndarray,
    grain: np.ndarray,
    *,
    orientations=None,
    provenance: dict | None = None,
    faces=None,
) -> None:
    """Slow twin of :func:`nmc_dataset.export._inp.write_msh`: a Gmsh MSH 2.2 ASCII file.

    Physical groups: volume ``k`` named ``grain_k`` (its tets; elementary tag ``k``); surface 1
    named ``outer`` (the particle boundary, triangles facing outwards) and surface ``2 + i``
    named ``gb_a_b`` for the ``i``-th grain pair ``a < b`` (sorted; triangles facing out of
    ``a``). Units and provenance are in a ``$NmcProvenance`` section (one JSON line) and the
    orientations in a ``$NmcGrainOrientations`` section (a count line, then ``k w x y z`` per
    grain); Gmsh and meshio skip both as unknown sections. (No ``$ElementData``: meshio 5.3
    mis-splits element data over several element blocks.)

    Parameters
    ----------
    path : path-like
        The ``.msh`` file.
    points : (P, 3) float array
        Nodes.
    tets : (T, 4) or (T, 10) int array
        Tets (meshio node order).
    grain : (T,) int array
        Grain of each tet.
    orientations : (n_grains, 4) float array, optional
        Quaternions per grain.
    provenance : dict, optional
        One JSON line.
    faces : tuple, optional
        ``mesh_faces_reference(tets[:, :4], grain)``, when the caller has it.
    """
    tets = np.asarray(tets, dtype=np.int64)
    grain = np.asarray(grain, dtype=np.int64)
    order = tets.shape[1] == 10
    ks = np.unique(grain)
    q = check_orientations(orientations, int(ks.max()) if len(ks) else 0)
    # ``faces``: this mesh's mesh_faces_reference(tets[:, :4], grain), when the caller has it already
    outer, interfaces = mesh_faces_reference(tets[:, :4], grain) if faces is None else faces
    tris = [_tri_nodes_reference(tets, outer)]
    tphys = [np.ones(len(outer), dtype=np.int64)]
    names = ["outer"]
    for i, ((a, b), rows) in enumerate(interfaces.items()):
        tris.append(_tri_nodes_reference(tets, rows[:, :2]))
        tphys.append(np.full(len(rows), 2 + i, dtype=np.int64))
        names.append(f"gb_{a}_{b}")
    tris, tphys = np.concatenate(tris), np.concatenate(tphys)
    tet_nodes = tets[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]] if order else tets  # gmsh swaps the last two
    nt, ns = len(tets), len(tris)
    prov = {"units": "um", **(provenance or {})}
    out = [
        "$MeshFormat\n2.2 0 8\n$EndMeshFormat\n",
        "$NmcProvenance\n" + json.dumps(prov, sort_keys=True) + "\n$EndNmcProvenance\n",
        f"$PhysicalNames\n{len(names) + len(ks)}\n",
    ]
    out += [f'2 {i + 1} "{n}"\n' for i, n in enumerate(names)]
    out += [f'3 {k} "grain_{k}"\n' for k in ks.tolist()]
    out.append("$EndPhysicalNames\n$Nodes\n" + f"{len(points)}\n")
    out.append(_num_lines_reference(np.column_stack([np.arange(1, len(points) + 1), points]), "%d %.16e %.16e %.16e"))
    out.append(f"$EndNodes\n$Elements\n{nt + ns}\n")
    et, st = (11, 9) if order else (4, 2)
    tet_rows = np.column_stack([np.arange(1, nt + 1), np.full(nt, et), np.full(nt, 2), grain, grain, tet_nodes + 1])
    out.append(int_rows(tet_rows, " "))
    tri_rows = np.column_stack(
        [np.arange(nt + 1, nt + ns + 1), np.full(ns, st), np.full(ns, 2), tphys, tphys, tris + 1]
    )
    if ns:
        out.append(int_rows(tri_rows, " "))
    out.append("$EndElements\n")
    if q is not None:
        out.append(f"$NmcGrainOrientations\n{len(ks)}\n")
        out.append(_num_lines_reference(np.column_stack([ks, q[ks - 1]]), "%d %.16e %.16e %.16e %.16e"))
        out.append("$EndNmcGrainOrientations\n")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="ascii", errors="replace") as fh:
        fh.writelines(out)


# --------------------------------------------------------------------------- label clean-up
@nb.njit(cache=True)
def block_bad_reference(lab, z, y, x, table):
    """Slow twin of ``_cleanup._block_bad``: every corner's label mask is checked (also repeated ones).

    Parameters
    ----------
    lab : (nz, ny, nx) int array
        Labels.
    z, y, x : int
        Lowest corner of the 2x2x2 block.
    table : (256,) bool array
        ``CONNECTED``.

    Returns
    -------
    bool
        The block has a vertex-only contact.
    """
    c = (
        lab[z, y, x],
        lab[z, y, x + 1],
        lab[z, y + 1, x],
        lab[z, y + 1, x + 1],
        lab[z + 1, y, x],
        lab[z + 1, y, x + 1],
        lab[z + 1, y + 1, x],
        lab[z + 1, y + 1, x + 1],
    )
    if (
        c[0] == c[1]
        and c[0] == c[2]
        and c[0] == c[3]
        and c[0] == c[4]
        and c[0] == c[5]
        and c[0] == c[6]
        and c[0] == c[7]
    ):
        return False
    for n in range(8):
        mask = 0
        for o in range(8):
            if c[o] == c[n]:
                mask |= 1 << o
        if not table[mask] or not table[255 ^ mask]:
            return True
    return False


@nb.njit(cache=True)
def _find_reference(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@nb.njit(cache=True)
def components_reference(lab):
    """Slow twin of ``_cleanup._components_runs``: union-find over every voxel.

    Parameters
    ----------
    lab : (nz, ny, nx) int array
        Labels, 0 = outside.

    Returns
    -------
    comp : (nz ny nx,) int64 array
        Component of each voxel (-1 outside), numbered in scan order.
    sizes, labels : int64 arrays
        Per component.
    """
    flat = lab.ravel()
    nz, ny, nx = lab.shape
    n = flat.size
    parent = np.arange(n)
    for i in range(n):
        if flat[i] == 0:
            continue
        x = i % nx
        y = (i // nx) % ny
        z = i // (nx * ny)
        for j, ok in ((i + 1, x + 1 < nx), (i + nx, y + 1 < ny), (i + nx * ny, z + 1 < nz)):
            if ok and flat[j] == flat[i]:
                a, b = _find_reference(parent, i), _find_reference(parent, j)
                if a != b:
                    if a < b:
                        parent[b] = a
                    else:
                        parent[a] = b
    comp = np.full(n, -1, dtype=np.int64)
    sizes = []
    labels = []
    for i in range(n):
        if flat[i] != 0:
            r = _find_reference(parent, i)
            if r == i:
                comp[i] = len(sizes)
                sizes.append(0)
                labels.append(np.int64(flat[i]))
            else:
                comp[i] = comp[r]  # r < i: already numbered
            sizes[comp[i]] += 1
    return comp, np.array(sizes, dtype=np.int64), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- grain surface files
def grain_blocks_reference(faces, pairs):
    """Slow twin of ``_meshes._grain_blocks``' grouping: the faces of each grain (reversed on side
    1) by a stable argsort of the labels.

    Parameters
    ----------
    faces : (F, 3) int array
        Triangles.
    pairs : (F, 2) int array
        Labels on both sides.

    Returns
    -------
    ks : int array
        Grain labels present.
    grouped : (2F', 3) int array
        The faces of grain ``ks[i]`` in rows ``starts[i]:ends[i]``.
    starts, ends : int arrays
    """
    f = np.concatenate([faces, faces[:, ::-1]])
    g = np.concatenate([pairs[:, 0], pairs[:, 1]])
    inside = g > 0
    f, g = f[inside], g[inside]
    order = np.argsort(g, kind="stable")
    f, g = f[order], g[order]
    ks, starts = np.unique(g, return_index=True)
    ends = np.append(starts[1:], len(g))
    return ks, f, starts, ends


def write_ply_trimesh(path, surface) -> None:
    """Slow twin of ``_meshes._write_ply``: trimesh's binary PLY export of ``surface.to_trimesh()``.

    Parameters
    ----------
    path : path-like
        The ``.ply`` file.
    surface : GrainSurface
        The conforming surface.
    """
    surface.to_trimesh().export(path, file_type="ply", encoding="binary")


def write_vtp_vtk(path, surface) -> None:
    """Slow twin of ``_meshes._write_vtp``: VTK's ``vtkXMLPolyDataWriter`` (appended raw binary).

    Parameters
    ----------
    path : path-like
        The ``.vtp`` file.
    surface : GrainSurface
        The conforming surface.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(surface.vertices), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(surface.faces) + 1, 3, dtype=np.int64)
    cells.SetData(
        numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(surface.faces.ravel(), dtype=np.int64), deep=True),
    )
    pd = vtkPolyData()
    pd.SetPoints(pts)
    pd.SetPolys(cells)
    lab = numpy_to_vtk(np.ascontiguousarray(surface.pairs, dtype=np.int32), deep=True)
    lab.SetName("BoundaryLabels")
    pd.GetCellData().AddArray(lab)
    w = vtkXMLPolyDataWriter()
    w.SetFileName(str(path))
    w.SetInputData(pd)
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()  # raw binary
    w.SetCompressorTypeToNone()  # zlib took ~20x the time of the surface itself
    if not w.Write():  # pragma: no cover
        raise OSError(f"VTK could not write {path}")


def write_vtu_vtk(path, points, tets, fields: dict, provenance: dict) -> None:
    """Slow twin of ``_meshes._write_vtu``: VTK's ``vtkXMLUnstructuredGridWriter`` (appended raw).

    Parameters
    ----------
    path : path-like
        The ``.vtu`` file.
    points : (P, 3) float array
        Nodes.
    tets : (T, 4) or (T, 10) int array
        Cells.
    fields : dict
        Cell data.
    provenance : dict
        Field data ``provenance_json`` and scalar entries.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkUnstructuredGrid
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    npc = tets.shape[1]
    grid = vtkUnstructuredGrid()
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(points, dtype=np.float64), deep=True))
    grid.SetPoints(pts)
    cells = vtkCellArray()
    offsets = np.arange(0, npc * len(tets) + 1, npc, dtype=np.int64)
    cells.SetData(
        numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(tets.ravel(), dtype=np.int64), deep=True),
    )
    grid.SetCells(10 if npc == 4 else 24, cells)  # VTK_TETRA / VTK_QUADRATIC_TETRA (meshio's node order)
    for name, data in fields.items():
        arr = numpy_to_vtk(np.ascontiguousarray(data), deep=True)
        arr.SetName(name)
        grid.GetCellData().AddArray(arr)
    fd = grid.GetFieldData()
    meta = {"provenance_json": np.frombuffer(json.dumps(provenance, sort_keys=True).encode(), dtype=np.uint8)}
    for k in ("particle_id",):
        if provenance.get(k) is not None:
            meta[k] = np.array([provenance[k]], dtype=np.int64)
    for k in ("voxel_size_um", "mesh_size_um"):
        if provenance.get(k) is not None:
            meta[k] = np.array([provenance[k]], dtype=np.float64)
    for name, data in meta.items():
        arr = numpy_to_vtk(data, deep=True)
        arr.SetName(name)
        fd.AddArray(arr)
    w = vtkXMLUnstructuredGridWriter()
    w.SetFileName(str(path))
    w.SetInputData(grid)
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()
    w.SetCompressorTypeToNone()
    if not w.Write():  # pragma: no cover
        raise OSError(f"VTK could not write {path}")


def write_xdmf_meshio(xdmf_path, h5_path, points, cells, cell_type: str, fields: dict, provenance: dict) -> None:
    """Slow twin of ``_meshes._write_xdmf``: meshio's XDMF writer (gzip level 4), then the
    provenance attributes and XML comment added as the former writer did.

    Parameters
    ----------
    xdmf_path, h5_path : path-like
        The ``.xdmf`` file and the ``.h5`` beside it (same stem).
    points : (P, 3) float array
        Nodes.
    cells : (T, 4) or (T, 10) int array
        Cells.
    cell_type : str
        ``tetra`` or ``tetra10``.
    fields : dict
        Cell data.
    provenance : dict
        Root attributes and XML comment.
    """
    from pathlib import Path

    import h5py
    import meshio

    from nmc_dataset.export._meshes import _xml_comment

    m = meshio.Mesh(points, [(cell_type, cells)], cell_data={k: [v] for k, v in fields.items()})
    meshio.write(xdmf_path, m, file_format="xdmf")
    with h5py.File(h5_path, "a") as f:
        f.attrs["nmc_provenance_json"] = json.dumps(provenance, sort_keys=True)
        for key, val in provenance.items():
            if isinstance(val, (int, float, str)) and not isinstance(val, bool):
                f.attrs[key] = val
    text = Path(xdmf_path).read_text()
    comment = _xml_comment("nmc-dataset provenance (units um): " + json.dumps(provenance, sort_keys=True))
    Path(xdmf_path).write_text(text + "\n" + comment)


__all__ = [
    "block_bad_reference",
    "components_reference",
    "grain_blocks_reference",
    "mesh_faces_reference",
    "second_order_reference",
    "write_inp_reference",
    "write_msh_reference",
    "write_ply_trimesh",
    "write_vtp_vtk",
    "write_vtu_vtk",
    "write_xdmf_meshio",
]
