"""Surface and volume meshes of particles (shell surface, conforming grain surfaces, tet meshes).

* :func:`shell_surface_mesh` — the analytic shell as a watertight triangle mesh: the vertices of
  a subdivided icosahedron moved radially onto the SH radius ``R(u)`` (vertices lie exactly on the
  analytic surface; faces are oriented outwards).
* :func:`grain_surface_mesh` — the conforming multi-grain surface of a label volume with VTK's
  ``vtkSurfaceNets3D``: one shared vertex set, every triangle carries the two labels it separates
  (``pairs[f] = (a, b)``, 0 = outside); the triangle is oriented with its normal pointing *out of*
  ``a``. Each grain's closed surface is the set of triangles naming it.
* :func:`clean_labels` — a mesh-ready copy of a label volume (:mod:`.cleanup`): surface nets
  and tet meshers need every grain to be one face-connected piece without edge- or vertex-only
  contacts.
* :func:`tet_mesh` — a conforming tetrahedral mesh with gmsh (optional extra ``mesh``: gmsh is
  GPL): one volume (physical group ``k``, named ``grain_k``) per grain bounded by the shared
  surface-nets triangles, all tets positively oriented; :func:`write_tet_mesh` writes it with
  numpy, h5py and compiled formatters as ``.msh`` (binary Gmsh MSH 2.2), ``.inp``
  (Abaqus/CalculiX, C3D4 elements, one ELSET ``grain_k`` per grain), ``.xdmf`` + ``.h5``
  (FEniCS/dolfinx) and ``.vtu`` (ParaView), each with cell data ``grain``.

Coordinates are µm, ``(x, y, z)``, the particle centre at the origin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import meshio
import numba
import numpy as np
import trimesh

from nmc_dataset import __version__
from nmc_dataset._util import atomic_path, log
from nmc_dataset.errors import InputError, MissingExtraError
from nmc_dataset.export import _inp as inp_mod
from nmc_dataset.export._cleanup import clean_labels
from nmc_dataset.export._glb import write_grains_glb
from nmc_dataset.export._inp import quat_to_matrix
from nmc_dataset.shells._harmonics import icosphere, radius


# --------------------------------------------------------------------------- shell
def shell_surface_mesh(coeffs_um: np.ndarray, subdivisions: int = 6):
    """Watertight triangle mesh of an analytic shell (``trimesh.Trimesh``, µm).

    Parameters
    ----------
    coeffs_um : (K,) array
        SH coefficients of the radius function in µm.
    subdivisions : int
        Icosphere subdivisions (6: 40,962 vertices, 81,920 faces).

    Returns
    -------
    trimesh.Trimesh
        Vertices in µm, relative to the particle centre.
    """

    dirs, faces = icosphere(subdivisions)
    r = np.asarray(radius(np.asarray(coeffs_um, dtype=np.float64), dirs))
    if np.any(r <= 0):
        raise ValueError("the radius function is not positive everywhere")
    return trimesh.Trimesh(vertices=dirs * r[:, None], faces=np.asarray(faces), process=False)


# --------------------------------------------------------------------------- grain surfaces
@dataclasses.dataclass
class GrainSurface:
    """A conforming multi-grain surface mesh.

    Parameters
    ----------
    vertices : (V, 3) float array
        µm, (x, y, z).
    faces : (F, 3) int array
        Vertex indices of the triangles.
    pairs : (F, 2) int array
        The labels on both sides of each triangle; the normal points out of ``pairs[:, 0]``.
    n_grains : int
        Number of grains (labels ``1..n_grains``; 0 = outside).
    """

    vertices: np.ndarray
    faces: np.ndarray
    pairs: np.ndarray
    n_grains: int

    def grain_faces(self, k: int) -> np.ndarray:
        """Faces of grain ``k``'s closed surface, oriented outwards.

        Parameters
        ----------
        k : int
            Grain label.

        Returns
        -------
        (F_k, 3) int array
            Vertex indices of its triangles.
        """
        sel = (self.pairs == k).any(axis=1)
        f = self.faces[sel].copy()
        flip = self.pairs[sel, 1] == k
        f[flip] = f[flip][:, ::-1]
        return f

    def grain_mesh(self, k: int):
        """Grain ``k``'s closed surface as a ``trimesh.Trimesh`` (only its own vertices).

        Parameters
        ----------
        k : int
            Grain label.

        Returns
        -------
        trimesh.Trimesh
            The closed surface (µm).
        """

        f = self.grain_faces(k)
        used, inv = np.unique(f, return_inverse=True)
        return trimesh.Trimesh(self.vertices[used], inv.reshape(-1, 3), process=False)

    def outer_mesh(self):
        """The particle's outer surface (triangles facing the outside), ``trimesh.Trimesh``."""

        sel = (self.pairs == 0).any(axis=1)
        f = self.faces[sel].copy()
        flip = self.pairs[sel, 0] == 0
        f[flip] = f[flip][:, ::-1]
        used, inv = np.unique(f, return_inverse=True)
        return trimesh.Trimesh(self.vertices[used], inv.reshape(-1, 3), process=False)

    def to_trimesh(self):
        """The whole conforming mesh with face attributes ``label_a``, ``label_b``."""

        return trimesh.Trimesh(
            self.vertices,
            self.faces,
            process=False,
            face_attributes={
                "label_a": self.pairs[:, 0].astype(np.int32),
                "label_b": self.pairs[:, 1].astype(np.int32),
            },
        )


def grain_surface_mesh(
    labels: np.ndarray,
    origin_um,
    voxel_size_um: float,
    n_grains: int | None = None,
    smoothing_iterations: int = 8,
    constraint_scale: float = 0.25,
) -> GrainSurface:
    """Conforming surface mesh of a label volume with ``vtkSurfaceNets3D``.

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        0 = outside; usually :func:`clean_labels` output.
    origin_um : (3,) array
        Centre ``(x, y, z)`` of voxel ``[0, 0, 0]``.
    voxel_size_um : float
        Voxel edge length in µm.
    n_grains : int, optional
        Labels ``1..n_grains`` are meshed (default: the maximum label).
    smoothing_iterations : int
        Constrained smoothing passes (0 = staircase-like dual surface).
    constraint_scale : float
        How far (in voxels) smoothing may move a vertex from its voxel-cell centre (VTK's
        ConstraintScale); 0.25 keeps the surfaces free of self-intersections in our tests (0.5 did not).

    Returns
    -------
    GrainSurface
        Vertices in µm; empty when no grain has a voxel.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    labels = np.asarray(labels)
    n = int(labels.max()) if n_grains is None else int(n_grains)
    nz, ny, nx = labels.shape
    h = float(voxel_size_um)
    img = vtkImageData()
    img.SetDimensions(nx, ny, nz)
    img.SetSpacing(h, h, h)
    img.SetOrigin(*(float(o) for o in origin_um))
    arr = numpy_to_vtk(np.ascontiguousarray(labels.ravel(), dtype=np.int32), deep=True)
    arr.SetName("labels")
    img.GetPointData().SetScalars(arr)
    sn = vtkSurfaceNets3D()
    sn.SetInputData(img)
    sn.SetBackgroundLabel(0)
    sn.SetOutputMeshTypeToTriangles()
    sn.SetNumberOfIterations(int(smoothing_iterations))
    sn.SetSmoothing(int(smoothing_iterations) > 0)
    sn.SetConstraintScale(float(constraint_scale))
    present = np.flatnonzero(np.bincount(labels.ravel().astype(np.int64), minlength=n + 1)[1:]) + 1
    sn.SetNumberOfLabels(len(present))
    for i, k in enumerate(present):
        sn.SetLabel(i, float(k))
    sn.Update()
    out = sn.GetOutput()
    if out.GetNumberOfCells() == 0:
        return GrainSurface(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 2), np.int64), n)
    verts = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    faces = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    pairs = vtk_to_numpy(out.GetCellData().GetArray("BoundaryLabels")).astype(np.int64).reshape(-1, 2)
    return GrainSurface(verts, faces, pairs, n)


def write_surfaces(folder, stem: str, surface: GrainSurface | None = None, shell=None) -> list[Path]:
    """Write surface meshes for one particle into ``folder``.

    Files: ``<stem>_shell.stl`` (analytic shell), ``<stem>_grains.ply`` (conforming mesh, face
    properties ``label_a``/``label_b``), ``<stem>_grains.glb`` (one node per grain, for viewers),
    ``<stem>_grains.vtp`` (ParaView; cell data ``BoundaryLabels``).

    Parameters
    ----------
    folder : path-like
        Existing output folder.
    stem : str
        File name prefix (e.g. the particle id).
    surface : GrainSurface, optional
        Conforming grain surface (µm); skipped when None or empty.
    shell : trimesh.Trimesh, optional
        Analytic shell surface; skipped when None.

    Returns
    -------
    list of Path
        Files written.
    """
    folder = Path(folder)
    written = []
    if shell is not None:
        p = folder / f"{stem}_shell.stl"
        with atomic_path(p) as tmp:
            shell.export(tmp, file_type="stl")
        written.append(p)
    if surface is not None and len(surface.faces):
        p = folder / f"{stem}_grains.ply"
        with atomic_path(p) as tmp:  # numpy-written (trimesh's export of to_trimesh(): the slow twin)
            _write_ply(tmp, surface)
        written.append(p)
        ks, local, verts_of, vstart, starts, _ = _grain_blocks(surface)
        p = folder / f"{stem}_grains.glb"
        with atomic_path(p) as tmp:  # numpy-written GLB (a trimesh scene of every grain: the slow twin)
            write_grains_glb(tmp, ks, surface.vertices[verts_of], vstart, local, np.append(starts, len(local)))
        written.append(p)
        p = folder / f"{stem}_grains.vtp"
        with atomic_path(p) as tmp:
            _write_vtp(tmp, surface)
        written.append(p)
    return written


def _grain_meshes(surface: GrainSurface):
    """``(k, trimesh.Trimesh)`` of every grain's closed surface (outwards), grouping the faces
    by grain once (``grain_mesh`` per grain scans all faces)."""

    ks, local, verts_of, vstart, starts, ends = _grain_blocks(surface)
    for i, k in enumerate(ks.tolist()):
        a, b = starts[i], ends[i]
        yield k, trimesh.Trimesh(surface.vertices[verts_of[vstart[i] : vstart[i + 1]]], local[a:b], process=False)


def _grain_blocks(surface: GrainSurface):
    """Every grain's closed surface (outwards) as blocks: grain labels ``ks``, faces with
    per-grain vertex numbers ``local`` (grain ``i``: rows ``starts[i]:ends[i]``) and the grains'
    vertex ids ``verts_of`` (grain ``i``: ``vstart[i]:vstart[i + 1]``). Per grain, its faces as
    side ``pairs[:, 0]`` in face order, then (reversed) those as side ``pairs[:, 1]``."""
    faces = np.ascontiguousarray(surface.faces, dtype=np.int64)
    pairs = np.ascontiguousarray(surface.pairs, dtype=np.int64)
    n = int(pairs.max()) + 1 if len(pairs) else 1
    f, counts = _group_by_grain(faces, pairs, n)
    ks = np.flatnonzero(counts[1:]) + 1
    ends = np.cumsum(counts)[ks] - counts[0]
    starts = ends - counts[ks]
    local, verts_of, vstart = _local_numbering(f, starts, ends, len(surface.vertices))
    return ks, local, verts_of, vstart, starts, ends


@numba.njit(cache=True)
def _group_by_grain(faces, pairs, n):
    """Faces of every grain ``k >= 1``, grouped by ``k`` (a stable counting sort of the faces on
    side 0 and the reversed faces on side 1); returns them and the count per label."""
    counts = np.zeros(n, np.int64)
    for i in range(faces.shape[0]):
        counts[pairs[i, 0]] += 1
        counts[pairs[i, 1]] += 1
    fill = np.empty(n, np.int64)
    acc = 0
    for k in range(1, n):
        fill[k] = acc
        acc += counts[k]
    out = np.empty((acc, 3), np.int64)
    for side in range(2):
        for i in range(faces.shape[0]):
            k = pairs[i, side]
            if k > 0:
                r = fill[k]
                if side == 0:
                    out[r, 0], out[r, 1], out[r, 2] = faces[i, 0], faces[i, 1], faces[i, 2]
                else:
                    out[r, 0], out[r, 1], out[r, 2] = faces[i, 2], faces[i, 1], faces[i, 0]
                fill[k] = r + 1
    return out, counts


def _write_ply(path, surface: GrainSurface) -> None:
    """Binary little-endian PLY of the conforming surface with face properties ``label_a`` and
    ``label_b``: the bytes trimesh writes for ``surface.to_trimesh()`` (float32 vertices, a uchar
    count and int32 indices per face), written with numpy (trimesh hashed and copied the arrays)."""
    nv, nf = len(surface.vertices), len(surface.faces)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment https://github.com/mikedh/trimesh\n"
        f"element vertex {nv}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {nf}\nproperty list uchar int vertex_indices\nproperty int label_a\n"
        "property int label_b\nend_header\n"
    )
    rec = np.empty(nf, dtype=[("n", "u1"), ("v", "<i4", (3,)), ("ab", "<i4", (2,))])
    rec["n"] = 3
    rec["v"] = surface.faces
    rec["ab"] = surface.pairs
    with open(path, "wb") as fh:
        fh.write(header.encode())
        fh.write(memoryview(np.ascontiguousarray(surface.vertices, dtype="<f4")).cast("B"))
        fh.write(memoryview(rec).cast("B"))


@numba.njit(cache=True)
def _local_numbering(f, starts, ends, nv):
    """Per block ``f[starts[i]:ends[i]]`` of faces: vertices numbered in order of appearance.
    Returns (local faces, the blocks' vertex lists concatenated, their offsets)."""
    scratch = np.full(nv, -1, dtype=np.int64)
    local = np.empty_like(f)
    verts = np.empty(f.size, dtype=np.int64)
    vstart = np.zeros(len(starts) + 1, dtype=np.int64)
    n = 0
    for i in range(len(starts)):
        first = n
        for r in range(starts[i], ends[i]):
            for c in range(3):
                v = f[r, c]
                if scratch[v] < 0:
                    scratch[v] = n - first
                    verts[n] = v
                    n += 1
                local[r, c] = scratch[v]
        for j in range(first, n):
            scratch[verts[j]] = -1
        vstart[i + 1] = n
    return local, verts[:n], vstart


_VTK_TYPES = {"uint8": "UInt8", "int32": "Int32", "int64": "Int64", "float64": "Float64"}


def _write_vtk_xml(path, vtk_type: str, piece: dict, sections, field=()) -> None:
    """A VTK XML file (``vtk_type`` PolyData or UnstructuredGrid) with raw appended binary data,
    in the layout of VTK's XML writers (appended, raw, uncompressed), written with numpy.

    ``piece``: the ``<Piece>`` attributes; ``sections``: ``(tag, [(name, array, extra), ...])`` in
    file order (``extra``: more attributes, e.g. ``IdType``); ``field``: ``(name, array)`` of
    ``<FieldData>``. The optional RangeMin/RangeMax attributes are left out (VTK's norms of every
    tuple took most of its writing time)."""
    blocks, lines = [], []

    def array(name, a, extra, indent, tuples=False):
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        comps = a.shape[1] if a.ndim == 2 else 1
        attrs = f' type="{_VTK_TYPES[a.dtype.name]}"{extra} Name="{name}"'
        attrs += f' NumberOfTuples="{len(a)}"' if tuples else (f' NumberOfComponents="{comps}"' if comps > 1 else "")
        lines.append((indent, attrs, len(blocks)))
        blocks.append(a)

    for name, a in field:
        array(name, a, "", 6, tuples=True)
    n_field = len(blocks)
    for _tag, arrays in sections:
        for name, a, extra in arrays:
            array(name, a, extra, 8)
    wide = max(a.nbytes for a in blocks) >= 2**32
    head = np.dtype("<u8" if wide else "<u4")
    offsets = np.cumsum([0] + [head.itemsize + a.nbytes for a in blocks])
    version, header = ("1.0", "UInt64") if wide else ("0.1", "UInt32")

    def render(i):
        indent, attrs, k = lines[i]
        return " " * indent + f'<DataArray{attrs} format="appended" offset="{offsets[k]}"/>\n'

    out = [f'<VTKFile type="{vtk_type}" version="{version}" byte_order="LittleEndian" header_type="{header}">\n']
    out.append(f"  <{vtk_type}>\n")
    if field:
        out += ["    <FieldData>\n", *(render(i) for i in range(n_field)), "    </FieldData>\n"]
    out.append("    <Piece" + "".join(f' {k}="{v}"' for k, v in piece.items()) + ">\n")
    i = n_field
    for tag, arrays in sections:
        out.append(f"      <{tag}>\n")
        for _ in arrays:
            out.append(render(i))
            i += 1
        out.append(f"      </{tag}>\n")
    out.append(f'    </Piece>\n  </{vtk_type}>\n  <AppendedData encoding="raw">\n   _')
    with open(path, "wb") as fh:
        fh.write("".join(out).encode())
        for a in blocks:
            fh.write(np.array([a.nbytes], head).tobytes())
            fh.write(memoryview(a).cast("B") if a.size else b"")
        fh.write(b"\n  </AppendedData>\n</VTKFile>\n")


def _write_vtp(path, surface: GrainSurface) -> None:
    """VTK XML PolyData of the conforming surface (Float64 points, Int64 connectivity and end
    offsets, Int32 cell data ``BoundaryLabels``), written with numpy (:func:`_write_vtk_xml`;
    ``testing.write_vtp_vtk``, VTK's writer, is the slow twin)."""
    conn = np.asarray(surface.faces, dtype=np.int64)
    empty = np.zeros(0, np.int64)
    cells = [(kind, [("connectivity", empty, ""), ("offsets", empty, "")]) for kind in ("Verts", "Lines", "Strips")]
    polys = [("connectivity", conn.ravel(), ' IdType="1"'), ("offsets", np.arange(3, conn.size + 1, 3), "")]
    _write_vtk_xml(
        path,
        "PolyData",
        {
            "NumberOfPoints": len(surface.vertices),
            "NumberOfVerts": 0,
            "NumberOfLines": 0,
            "NumberOfStrips": 0,
            "NumberOfPolys": len(conn),
        },
        [
            ("PointData", []),
            ("CellData", [("BoundaryLabels", np.asarray(surface.pairs, dtype=np.int32), "")]),
            ("Points", [("Points", np.asarray(surface.vertices, dtype=np.float64), "")]),
            *cells,
            ("Polys", polys),
        ],
    )


# --------------------------------------------------------------------------- tetrahedral meshes
@dataclasses.dataclass
class TetMesh:
    """A conforming tetrahedral mesh.

    Parameters
    ----------
    points : (P, 3) float array
        µm.
    tets : (T, 4) int array
        Positively oriented (``det[p1-p0, p2-p0, p3-p0] > 0``).
    grain : (T,) int array
        Grain label of each tet.
    outer : (S, 3) int array
        Boundary triangles of the particle (outward).
    """

    points: np.ndarray
    tets: np.ndarray
    grain: np.ndarray
    outer: np.ndarray

    def signed_volumes(self) -> np.ndarray:
        """Signed volume of each tet (µm³)."""
        p = self.points[self.tets]
        return np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0]) / 6.0

    def grain_volumes(self, n_grains: int) -> np.ndarray:
        """Volume of each grain ``1..n_grains`` (µm³).

        Parameters
        ----------
        n_grains : int
            Number of grains.

        Returns
        -------
        (n_grains,) float array
            Volumes in µm³.
        """
        return np.bincount(self.grain, weights=self.signed_volumes(), minlength=n_grains + 1)[1 : n_grains + 1]

    def quality(self, chunk: int = 1 << 20) -> np.ndarray:
        """Radius ratio ``3 r_in / r_circ`` of each tet (1: regular, 0: flat), gmsh's "gamma".

        ``r_in = 3 V / S`` (``S``: the area of the four faces) and ``r_circ = sqrt((aA + bB + cC)
        (aA + bB - cC)(aA - bB + cC)(-aA + bB + cC)) / (24 V)`` with ``a, A``, ``b, B``, ``c, C``
        the lengths of opposite edges.

        Parameters
        ----------
        chunk : int
            Tets per block (bounds the temporary memory).

        Returns
        -------
        (T,) float array
        """
        out = np.empty(len(self.tets))
        for s0 in range(0, len(self.tets), chunk):
            p = self.points[self.tets[s0 : s0 + chunk]]
            e = lambda i, j: np.linalg.norm(p[:, i] - p[:, j], axis=1)  # noqa: E731
            aA, bB, cC = e(0, 1) * e(2, 3), e(0, 2) * e(1, 3), e(0, 3) * e(1, 2)
            v = np.abs(np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0])) / 6
            area = sum(
                np.linalg.norm(np.cross(p[:, j] - p[:, i], p[:, k] - p[:, i]), axis=1) / 2
                for i, j, k in ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3))
            )
            prod = np.clip((aA + bB + cC) * (aA + bB - cC) * (aA - bB + cC) * (-aA + bB + cC), 0, None)
            r_circ = np.sqrt(prod) / np.maximum(24 * v, 1e-300)
            out[s0 : s0 + chunk] = np.where(v > 0, 3 * (3 * v / area) / np.maximum(r_circ, 1e-300), 0.0)
        return out

    def to_meshio(self):
        """A ``meshio.Mesh`` with tetra (+ outer triangle) cells and cell data ``grain``."""

        return meshio.Mesh(self.points, [("tetra", self.tets)], cell_data={"grain": [self.grain.astype(np.int32)]})


@contextlib.contextmanager
def _captured_stdout():
    """Capture what C code writes to file descriptor 1 (gmsh's HXT prints its errors there)."""

    box = {}
    sys.stdout.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            yield box
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def _require_gmsh():
    try:
        import gmsh
    except ImportError:
        raise MissingExtraError("tet meshes", "mesh", "gmsh") from None
    return gmsh


def tet_mesh(
    surface: GrainSurface,
    mesh_size_um: float | None = None,
    algorithm: str = "hxt",
    optimize: bool = True,
    threads: int = 1,
    optimize_threshold: float = 0.1,
) -> TetMesh:
    """Tetrahedralise every grain of a conforming surface mesh with gmsh.

    The surface triangles are kept as they are (one discrete gmsh surface per grain pair, shared
    by both grains, so the volume mesh is conforming); each grain becomes a volume and a physical
    group. The interior mesh size grows from the boundary up to ``mesh_size_um``.

    Parameters
    ----------
    surface : GrainSurface
        The conforming multi-grain surface (µm) to fill.
    mesh_size_um : float, optional
        Largest tet edge inside grains (default: no limit beyond the boundary's sizes).
    algorithm : {"hxt", "delaunay"}
        gmsh's 3D algorithm (HXT: fast; Delaunay: the classic one).
    optimize : bool
        gmsh's tet quality optimisation.
    optimize_threshold : float
        Tets below this quality are optimised (gmsh's ``Mesh.OptimizeThreshold``). gmsh's default
        0.3 made the optimisation ~90 % of the meshing time (5x the rest) on a 476-grain particle;
        0.1 leaves the minimum quality where it was (bounded by the boundary triangles).
    threads : int
        Threads for HXT.

    Returns
    -------
    TetMesh
        Points in µm, one grain label per tet.

    Raises
    ------
    MissingExtraError
        If gmsh (the ``mesh`` extra) is not installed.
    RuntimeError
        If gmsh cannot mesh the surfaces.
    """
    gmsh = _require_gmsh()
    faces, pairs, verts = surface.faces, surface.pairs, surface.vertices
    lo_hi = np.sort(pairs, axis=1)
    base = int(lo_hi.max()) + 1
    key1d = lo_hi[:, 0] * base + lo_hi[:, 1]
    ukeys, inv = np.unique(key1d, return_inverse=True)
    uniq = np.stack([ukeys // base, ukeys % base], axis=1)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    initialized = gmsh.isInitialized()
    if not initialized:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", int(__import__("os").environ.get("NMC_GMSH_VERBOSE", "0")))
        gmsh.model.add("particle")
        # one discrete surface per grain pair, loaded from an MSH 4.1 file written with numpy
        # (adding thousands of surfaces through the API costs ~1 ms per call)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nmc-gmsh-") as td:
            path = Path(td) / "surfaces.msh"
            _write_surface_msh_binary(path, verts, faces, order, bounds)
            gmsh.merge(str(path))
        grains = np.unique(uniq[uniq > 0])
        by_grain: dict[int, list[int]] = {int(k): [] for k in grains}
        for s, (a, b) in enumerate(uniq):
            for k in (a, b):
                if k > 0:
                    by_grain[int(k)].append(s + 1)
        for k in grains:
            loop = gmsh.model.geo.addSurfaceLoop(by_grain[int(k)])
            gmsh.model.geo.addVolume([loop], int(k))
        gmsh.model.geo.synchronize()
        for k in grains:
            gmsh.model.addPhysicalGroup(3, [int(k)], int(k), name=f"grain_{int(k)}")
        outer_s = [s + 1 for s, (a, b) in enumerate(uniq) if a == 0 or b == 0]
        if outer_s:
            gmsh.model.addPhysicalGroup(2, outer_s, name="outer")
        gmsh.option.setNumber("Mesh.Algorithm3D", 10 if algorithm == "hxt" else 1)
        gmsh.option.setNumber("General.NumThreads", int(threads))
        gmsh.option.setNumber("Mesh.Optimize", 1 if optimize else 0)
        gmsh.option.setNumber("Mesh.OptimizeThreshold", float(optimize_threshold))
        gmsh.option.setNumber("Mesh.Renumber", 0)  # keep the surface nodes' tags (vertex + 1)
        if mesh_size_um:
            gmsh.option.setNumber("Mesh.MeshSizeMax", float(mesh_size_um))
        try:
            with _captured_stdout() as out:
                gmsh.model.mesh.generate(3)
        except Exception as e:  # noqa: BLE001 (gmsh raises plain Exception)
            err = RuntimeError(f"gmsh could not mesh the grains: {e}")
            # HXT prints where the boundary intersects itself ("... intersect at point (x,y,z)")
            num = r"([-+0-9.eE]+)"
            err.points = np.array(
                [
                    [float(v) for v in m]
                    for m in re.findall(rf"intersect at point \({num},{num},{num}\)", out.get("text", ""))
                ]
            ).reshape(-1, 3)
            raise err from None
        node_tags, coords, _ = gmsh.model.mesh.getNodes()
        index = np.zeros(int(node_tags.max()) + 1, dtype=np.int64)
        index[node_tags.astype(np.int64)] = np.arange(len(node_tags))
        pts = coords.reshape(-1, 3)
        tets, lab = [], []
        for k in grains:
            types, _, enodes = gmsh.model.mesh.getElements(3, int(k))
            for t, en in zip(types, enodes):
                if t == 4:  # 4-node tetrahedron
                    tt = index[np.asarray(en, dtype=np.int64)].reshape(-1, 4)
                    tets.append(tt)
                    lab.append(np.full(len(tt), int(k), dtype=np.int64))
    finally:
        gmsh.clear()
        if not initialized:
            gmsh.finalize()
    tets = np.concatenate(tets) if tets else np.zeros((0, 4), np.int64)
    lab = np.concatenate(lab) if lab else np.zeros(0, np.int64)
    # drop nodes no tet uses and number the others in order (a linear pass, not a sort)
    keep = np.zeros(len(pts), dtype=bool)
    keep[tets.ravel()] = True
    remap = np.cumsum(keep) - 1
    pts = pts[keep]
    tets = remap[tets]
    mesh = TetMesh(pts, tets, lab, np.zeros((0, 3), np.int64))
    neg = mesh.signed_volumes() < 0
    if neg.any():
        tets[neg] = tets[neg][:, [0, 2, 1, 3]]
    # the particle boundary: gmsh keeps the merged surface triangles and their node tags (vertex + 1),
    # so the outer faces are the input's, turned to face outwards (:func:`_outer_faces` is the slow twin)
    sel = (pairs == 0).any(axis=1)
    of = faces[sel].copy()
    flip = pairs[sel, 0] == 0
    of[flip] = of[flip][:, ::-1]
    mesh.outer = remap[index[of + 1]] if len(of) else np.zeros((0, 3), np.int64)
    return mesh


def _write_surface_msh(path, verts, faces, order, bounds) -> None:
    """MSH 4.1 (ASCII) with discrete surface ``s + 1`` = triangles ``faces[order[bounds[s]:bounds[s+1]]]``."""
    ns = len(bounds) - 1
    fs = faces[order]
    surf_of_face = np.repeat(np.arange(ns), np.diff(bounds))
    # each node belongs to the first surface that uses it
    owner = np.full(len(verts), ns, dtype=np.int64)
    np.minimum.at(owner, fs.ravel(), np.repeat(surf_of_face, 3))
    used = np.flatnonzero(owner < ns)
    node_order = used[np.argsort(owner[used], kind="stable")]
    node_bounds = np.searchsorted(owner[node_order], np.arange(ns + 1))
    lo = np.full((ns, 3), np.inf)
    hi = np.full((ns, 3), -np.inf)
    for a in range(3):
        pa = verts[fs[:, :].ravel(), a].reshape(-1, 3)
        np.minimum.at(lo[:, a], surf_of_face, pa.min(axis=1))
        np.maximum.at(hi[:, a], surf_of_face, pa.max(axis=1))
    out = ["$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Entities\n", f"0 0 {ns} 0\n"]
    out += [f"{s + 1} " + " ".join(repr(float(v)) for v in (*lo[s], *hi[s])) + " 0 0\n" for s in range(ns)]
    out.append("$EndEntities\n$Nodes\n")
    n_nodes = len(node_order)
    out.append(f"{ns} {n_nodes} 1 {len(verts)}\n")
    for s in range(ns):
        nd = node_order[node_bounds[s] : node_bounds[s + 1]]
        out.append(f"2 {s + 1} 0 {len(nd)}\n")
        if len(nd):
            out.append("\n".join(map(str, nd + 1)) + "\n")
            out.append("\n".join(" ".join(repr(float(c)) for c in row) for row in verts[nd]) + "\n")
    out.append("$EndNodes\n$Elements\n")
    out.append(f"{ns} {len(fs)} 1 {len(fs)}\n")
    tags = np.arange(1, len(fs) + 1)
    for s in range(ns):
        a, b = bounds[s], bounds[s + 1]
        out.append(f"2 {s + 1} 2 {b - a}\n")
        block = np.column_stack([tags[a:b], fs[a:b] + 1])
        out.append("\n".join(" ".join(map(str, row)) for row in block.tolist()) + "\n")
    out.append("$EndElements\n")
    Path(path).write_text("".join(out))


def _surface_msh_layout(verts, faces, order, bounds):
    """Per discrete surface: its triangles, the nodes it owns (each node belongs to the first
    surface using it) and its bounding box."""
    ns = len(bounds) - 1
    fs = faces[order]
    surf_of_face = np.repeat(np.arange(ns), np.diff(bounds))
    owner = np.full(len(verts), ns, dtype=np.int64)
    np.minimum.at(owner, fs.ravel(), np.repeat(surf_of_face, 3))
    used = np.flatnonzero(owner < ns)
    node_order = used[np.argsort(owner[used], kind="stable")]
    node_bounds = np.searchsorted(owner[node_order], np.arange(ns + 1))
    lo = np.full((ns, 3), np.inf)
    hi = np.full((ns, 3), -np.inf)
    for a in range(3):
        pa = verts[fs.ravel(), a].reshape(-1, 3)
        np.minimum.at(lo[:, a], surf_of_face, pa.min(axis=1))
        np.maximum.at(hi[:, a], surf_of_face, pa.max(axis=1))
    return fs, node_order, node_bounds, lo, hi


def _write_surface_msh_binary(path, verts, faces, order, bounds) -> None:
    """Binary MSH 4.1 twin of :func:`_write_surface_msh` (same entities, nodes and elements):
    numpy writes the blocks as raw little-endian arrays (the ASCII file's number formatting took
    ~2 s per 100k triangles)."""
    ns = len(bounds) - 1
    fs, node_order, node_bounds, lo, hi = _surface_msh_layout(verts, faces, order, bounds)
    u8, i4, f8 = np.dtype("<u8"), np.dtype("<i4"), np.dtype("<f8")
    ent = np.zeros(ns, dtype=[("tag", i4), ("box", f8, 6), ("nphys", u8), ("nbound", u8)])
    ent["tag"] = np.arange(1, ns + 1)
    ent["box"] = np.concatenate([lo, hi], axis=1)
    parts = [
        b"$MeshFormat\n4.1 1 8\n",
        np.array([1], i4).tobytes(),
        b"\n$EndMeshFormat\n$Entities\n",
        np.array([0, 0, ns, 0], u8).tobytes(),
        ent.tobytes(),
        b"\n$EndEntities\n$Nodes\n",
        np.array([ns, len(node_order), 1, len(verts)], u8).tobytes(),
    ]
    head = np.dtype([("dim", i4), ("tag", i4), ("param", i4), ("n", u8)])
    xyz = np.ascontiguousarray(verts, dtype=f8)
    for s in range(ns):
        nd = node_order[node_bounds[s] : node_bounds[s + 1]]
        parts.append(np.array([(2, s + 1, 0, len(nd))], head).tobytes())
        parts.append((nd + 1).astype(u8).tobytes())
        parts.append(xyz[nd].tobytes())
    parts += [b"\n$EndNodes\n$Elements\n", np.array([ns, len(fs), 1, len(fs)], u8).tobytes()]
    block = np.column_stack([np.arange(1, len(fs) + 1), fs + 1]).astype(u8)
    for s in range(ns):
        a, b = bounds[s], bounds[s + 1]
        parts.append(np.array([(2, s + 1, 2, b - a)], head).tobytes())
        parts.append(block[a:b].tobytes())
    parts.append(b"\n$EndElements\n")
    Path(path).write_bytes(b"".join(parts))


def _outer_faces(tets: np.ndarray) -> np.ndarray:
    """Boundary triangles of a (positively oriented) tet mesh, oriented outwards."""
    # faces opposite each vertex, oriented so that the normal points away from that vertex
    f = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 3, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 1]]])
    key = np.sort(f, axis=1).astype(np.int64)
    n = int(tets.max()) + 1 if len(tets) else 1
    k1 = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]
    _, idx, counts = np.unique(k1, return_index=True, return_counts=True)
    return f[idx[counts == 1]]


TET_FORMATS = ("msh", "inp", "xdmf", "vtu")


def _cell_fields(grain: np.ndarray, orientations, quaternions: bool) -> dict:
    """Cell data: ``grain`` and, when orientations are given, ``orientation_matrix`` (9 components,
    row-major rotation crystal -> particle frame), ``c_axis`` (its third column) and, where the
    format allows 4 components (``quaternions``), ``orientation_wxyz``."""

    out = {"grain": grain.astype(np.int32)}
    if orientations is not None:
        q = np.asarray(orientations, dtype=np.float64)
        R = quat_to_matrix(q)  # per grain, then copied to its tets (row by row the same numbers)
        out["orientation_matrix"] = R.reshape(-1, 9)[grain - 1]
        out["c_axis"] = np.ascontiguousarray(R[:, :, 2])[grain - 1]
        if quaternions:
            out["orientation_wxyz"] = q[grain - 1]
    return out


def _write_vtu(path, points, tets, fields: dict, provenance: dict) -> None:
    """VTK XML UnstructuredGrid of the tet mesh, written with numpy (:func:`_write_vtk_xml`;
    ``testing.write_vtu_vtk``, VTK's writer, is the slow twin): cell data ``fields``, field data
    ``provenance_json`` (UTF-8 bytes) and the scalar provenance entries."""
    npc = tets.shape[1]
    field = [("provenance_json", np.frombuffer(json.dumps(provenance, sort_keys=True).encode(), dtype=np.uint8))]
    if provenance.get("particle_id") is not None:
        field.append(("particle_id", np.array([provenance["particle_id"]], dtype=np.int64)))
    for k in ("voxel_size_um", "mesh_size_um"):
        if provenance.get(k) is not None:
            field.append((k, np.array([provenance[k]], dtype=np.float64)))
    cell_type = 10 if npc == 4 else 24  # VTK_TETRA / VTK_QUADRATIC_TETRA (meshio's node order)
    _write_vtk_xml(
        path,
        "UnstructuredGrid",
        {"NumberOfPoints": len(points), "NumberOfCells": len(tets)},
        [
            ("PointData", []),
            ("CellData", [(name, data, "") for name, data in fields.items()]),
            ("Points", [("Points", np.asarray(points, dtype=np.float64), "")]),
            (
                "Cells",
                [
                    ("connectivity", np.asarray(tets, dtype=np.int64).ravel(), ' IdType="1"'),
                    ("offsets", np.arange(npc, npc * len(tets) + 1, npc, dtype=np.int64), ""),
                    ("types", np.full(len(tets), cell_type, dtype=np.uint8), ""),
                ],
            ),
        ],
        field,
    )


_XDMF_TOPOLOGY = {"tetra": "Tetrahedron", "tetra10": "Tetrahedron_10"}
_XDMF_DTYPE = {"int32": ("Int", 4), "int64": ("Int", 8), "float64": ("Float", 8)}


def _write_xdmf(xdmf_path, h5_path, points, cells, cell_type: str, fields: dict, provenance: dict) -> None:
    """XDMF 3 + HDF5 of the tet mesh with h5py: the XML meshio writes (datasets ``data0`` ... in
    the order points, cells, cell data; ``testing.write_xdmf_meshio`` is the slow twin), the
    provenance as an XML comment after it and as root attributes of the ``.h5``. Datasets are
    chunked by rows (64k) and compressed with gzip level 1 (meshio: level 4 in column chunks,
    2-3x the time)."""
    import h5py

    h5_name = Path(h5_path).name
    items = []

    def item(a, dims=None):
        dt, prec = _XDMF_DTYPE[a.dtype.name]
        dims = " ".join(map(str, a.shape)) if dims is None else dims
        items.append(a)
        return (
            f'<DataItem DataType="{dt}" Dimensions="{dims}" Format="HDF" Precision="{prec}">'
            f"{h5_name}:/data{len(items) - 1}</DataItem>"
        )

    points = np.asarray(points, dtype=np.float64)
    cells = np.asarray(cells, dtype=np.int64)
    xml = [
        '<Xdmf Version="3.0"><Domain><Grid Name="Grid">',
        f'<Geometry GeometryType="XYZ">{item(points)}</Geometry>',
        f'<Topology TopologyType="{_XDMF_TOPOLOGY[cell_type]}" NumberOfElements="{len(cells)}" '
        f'NodesPerElement="{cells.shape[1]}">{item(cells)}</Topology>',
    ]
    for name, a in fields.items():
        a = np.asarray(a)
        kind = "Scalar" if a.ndim == 1 else {3: "Vector", 9: "Tensor"}.get(a.shape[1], "Matrix")
        xml.append(f'<Attribute Name="{name}" AttributeType="{kind}" Center="Cell">{item(a)}</Attribute>')
    xml.append("</Grid></Domain></Xdmf>")
    prov = json.dumps(provenance, sort_keys=True)
    with h5py.File(h5_path, "w") as f:
        for i, a in enumerate(items):
            chunks = (min(len(a), 1 << 16), *a.shape[1:]) if len(a) else None
            opts = {"compression": "gzip", "compression_opts": 1} if len(a) else {}
            f.create_dataset(f"data{i}", data=a, chunks=chunks, **opts)
        f.attrs["nmc_provenance_json"] = prov
        for key, val in provenance.items():
            if isinstance(val, (int, float, str)) and not isinstance(val, bool):
                f.attrs[key] = val
    Path(xdmf_path).write_text(
        "".join(xml) + "\n" + _xml_comment("nmc-dataset provenance (units um): " + prov), encoding="utf-8"
    )


def _xml_comment(text: str) -> str:
    return "<!-- " + text.replace("--", "- -") + " -->"


def write_tet_mesh(
    mesh: TetMesh,
    folder,
    stem: str,
    formats=TET_FORMATS,
    *,
    order: int = 1,
    orientations=None,
    provenance: dict | None = None,
    material: str = "NMC811",
) -> list[Path]:
    """Write a tet mesh in solver formats.

    Parameters
    ----------
    mesh : TetMesh
        The tetrahedral mesh (µm).
    folder : path-like
        Existing output folder.
    stem : str
        File names ``<stem>.<fmt>`` (and ``<stem>.h5`` beside the ``.xdmf``).
    formats : iterable of str
        Subset of ``msh`` (binary Gmsh MSH 2.2, see :func:`.inp.write_msh`; physical volumes ``grain_k``,
        physical surfaces ``outer`` and ``gb_a_b``), ``inp`` (Abaqus / CalculiX, see
        :func:`.inp.write_inp`: ELSETs ``grain_k``, NSETs/SURFACEs of the outer surface and of every
        grain pair, ``*ORIENTATION`` + ``*SOLID SECTION`` per grain), ``xdmf`` (+ ``.h5``,
        FEniCS/dolfinx, ParaView) and ``vtu`` (ParaView).
    order : {1, 2}
        Element order: linear (C3D4, ``tetra``) or quadratic (C3D10, ``tetra10``; mid-edge nodes at
        the edge midpoints).
    orientations : (n_grains, 4) float array, optional
        Unit quaternions ``(w, x, y, z)`` per grain (row ``k - 1`` = grain ``k``), the active
        rotation crystal -> particle frame. Cell data ``orientation_wxyz`` and ``c_axis`` (the
        crystal c-axis, i.e. the rotated z-axis) in ``.vtu``/``.xdmf``, ``orientation_matrix`` in
        ``.msh``, ``*ORIENTATION`` in ``.inp``.
    provenance : dict, optional
        Particle id, model ids, voxel size, tool version ...: written into every file (``.inp``
        header comments, ``.msh`` ``$NmcProvenance`` section, ``.vtu`` field data, ``.xdmf``
        comment and ``.h5`` root attributes), with the units (µm).
    material : str
        Material name of the ``.inp`` solid sections.

    Returns
    -------
    list of Path
        Files written.

    Raises
    ------
    InputError
        For an element order other than 1 or 2, or malformed orientations.
    """

    if order not in (1, 2):
        raise InputError(
            f"the element order must be 1 (linear tets) or 2 (quadratic tets), got {order!r}", "--element-order"
        )
    formats = tuple(formats)
    bad = [f for f in formats if f not in TET_FORMATS]
    if bad:
        raise ValueError(f"unknown tet mesh format {bad[0]!r} (known: {', '.join(TET_FORMATS)})")
    grain = mesh.grain.astype(np.int64)
    q = inp_mod.check_orientations(orientations, int(grain.max()) if len(grain) else 0)

    prov = {"units": "um", "element_order": int(order), "tool": f"nmc-dataset {__version__}", **(provenance or {})}
    points, tets = (mesh.points, mesh.tets) if order == 1 else inp_mod.second_order(mesh.points, mesh.tets)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    cell_type = "tetra" if order == 1 else "tetra10"
    faces = inp_mod.mesh_faces(tets[:, :4], grain) if {"msh", "inp"} & set(formats) else None  # for both
    for fmt in formats:
        path = folder / f"{stem}.{fmt}"
        if fmt == "msh":
            inp_mod.write_msh(path, points, tets, grain, orientations=q, provenance=prov, faces=faces)
        elif fmt == "inp":
            inp_mod.write_inp(
                path, points, tets, grain, orientations=q, provenance=prov, material=material, faces=faces
            )
        elif fmt == "vtu":
            with atomic_path(path) as tmp:
                _write_vtu(tmp, points, tets, _cell_fields(grain, q, True), prov)
        elif fmt == "xdmf":
            # the .xdmf names <stem>.h5 inside: write both under the final names in a temporary
            # folder, then move them in (h5 first)
            with tempfile.TemporaryDirectory(dir=folder, prefix=f".{stem}.xdmf.") as td:
                x, h = Path(td) / f"{stem}.xdmf", Path(td) / f"{stem}.h5"
                _write_xdmf(x, h, points, tets, cell_type, _cell_fields(grain, q, False), prov)
                shutil.move(str(h), folder / f"{stem}.h5")
                shutil.move(str(x), path)
            written.append(folder / f"{stem}.h5")
        written.append(path)
    log.debug("wrote %s", ", ".join(str(p) for p in written))
    return written


__all__ = [
    "TET_FORMATS",
    "GrainSurface",
    "TetMesh",
    "clean_labels",
    "grain_surface_mesh",
    "shell_surface_mesh",
    "tet_mesh",
    "write_surfaces",
    "write_tet_mesh",
]
