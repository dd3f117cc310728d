"""Meshes: analytic shell surface, conforming grain surfaces, tet meshes, and a real FEM use."""

import json

import numpy as np
import pytest

from nmc_dataset.export import _meshes as meshes
from nmc_dataset.export._hdf5 import read_label_volume
from nmc_dataset.export._tables import read_particles
from nmc_dataset.tessellation._connectivity import count_disconnected
from tests.particles.fixtures import teacher_particle


@pytest.fixture(scope="module")
def cleaned():
    from nmc_dataset.particles._voxelize import voxelize

    p = teacher_particle(seed=9, radius_um=0.7)
    vol = voxelize(p, 0.05)
    lab, changed = meshes.clean_labels(vol.labels)
    return p, vol, lab, changed


def _edges_face_count(faces):
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return counts


def test_shell_surface_is_exact_and_watertight():
    from nmc_dataset.shells._harmonics import radius, vertex_weights

    p = teacher_particle(seed=1, radius_um=1.0)
    m = meshes.shell_surface_mesh(p.coeffs_um, subdivisions=6)
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    r = np.linalg.norm(m.vertices, axis=1)
    np.testing.assert_allclose(r, radius(p.coeffs_um, m.vertices / r[:, None]), rtol=1e-12)
    exact = float(vertex_weights(6) @ r**3) / 3
    assert abs(m.volume / exact - 1) < 1e-3  # inscribed polyhedron: error ~ edge² ~ 1e-4


def test_clean_labels_makes_grains_manifold(cleaned):
    _p, vol, lab, changed = cleaned
    assert count_disconnected(lab.astype(np.int64) - 1) == 0
    again, more = meshes.clean_labels(lab)
    assert more == 0 and np.array_equal(again, lab)
    assert 0 < changed < 0.02 * (vol.labels > 0).sum()
    assert lab.dtype == vol.labels.dtype


@pytest.mark.parametrize("smoothing", [0, 8])
def test_grain_surfaces_conform(cleaned, smoothing):
    p, vol, lab, _ = cleaned
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, smoothing)
    present = np.unique(lab[lab > 0])
    assert set(np.unique(s.pairs[s.pairs > 0])) == set(present)
    for k in present:
        m = s.grain_mesh(int(k))
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0, k
        assert (_edges_face_count(m.faces) == 2).all()  # no non-manifold edges
    assert s.outer_mesh().is_watertight
    # every interface triangle separates exactly the two labels it names: the voxels around its
    # centroid (the 2x2x2 dual cell) contain both, and each triangle is listed once
    assert (s.pairs[:, 0] != s.pairs[:, 1]).all()
    assert len(np.unique(np.sort(s.faces, axis=1), axis=0)) == len(s.faces)
    c = s.vertices[s.faces].mean(axis=1)
    base = np.floor((c - vol.origin_um) / vol.voxel_size_um).astype(int)
    for f in range(0, len(c), 7):
        i, j, k = base[f]
        block = lab[max(k - 1, 0) : k + 3, max(j - 1, 0) : j + 3, max(i - 1, 0) : i + 3]
        assert s.pairs[f, 0] in block and s.pairs[f, 1] in block


def test_tet_mesh_volumes_orientation_and_files(cleaned, tmp_path):
    import meshio

    p, vol, lab, _ = cleaned
    voxel_vol = np.bincount(lab.ravel(), minlength=p.n_grains + 1)[1:] * vol.voxel_size_um**3
    present = voxel_vol > 0
    # unsmoothed dual surface: tets fill exactly the voxel volume of each grain (up to VTK's
    # float32 vertex coordinates: rtol 1e-6)
    tm0 = meshes.tet_mesh(meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 0))
    np.testing.assert_allclose(tm0.grain_volumes(p.n_grains)[present], voxel_vol[present], rtol=1e-6)
    # smoothed: within a few % per grain (smoothing rounds the voxel corners), 1.5 % in total
    tm = meshes.tet_mesh(meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8))
    assert (tm.signed_volumes() > 0).all()
    tv = tm.grain_volumes(p.n_grains)
    rel = np.abs(tv[present] / voxel_vol[present] - 1)
    assert np.median(rel) < 0.03 and rel.max() < 0.1
    assert abs(tv.sum() / voxel_vol.sum() - 1) < 0.015
    # the outer faces taken from the input surface equal the tets' boundary faces (slow twin), oriented
    for m_ in (tm0, tm):

        def canon(f):
            f = np.asarray(f)
            r = np.argmin(f, axis=1)[:, None]
            return {tuple(row) for row in np.take_along_axis(f, (r + np.arange(3)) % 3, axis=1).tolist()}

        assert canon(m_.outer) == canon(meshes._outer_faces(m_.tets))
    files = meshes.write_tet_mesh(tm, tmp_path, "p")
    for f in files:
        if f.suffix == ".h5":
            continue
        m = meshio.read(f)
        assert len(m.points) == len(tm.points)
        tets = np.concatenate([c.data for c in m.cells if c.type == "tetra"])
        assert len(tets) == len(tm.tets)
        q = m.points[tets]
        vols = np.einsum("ij,ij->i", np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]), q[:, 3] - q[:, 0])
        assert (vols > 0).all()  # still positively oriented after the round trip
        if f.suffix in (".vtu", ".xdmf"):
            np.testing.assert_array_equal(np.concatenate(m.cell_data["grain"]), tm.grain)
        if f.suffix == ".inp":
            assert sorted(m.cell_sets) == sorted(["EALL"] + [f"grain_{k}" for k in np.unique(tm.grain)])
            k = int(tm.grain[0])
            np.testing.assert_array_equal(m.cell_sets[f"grain_{k}"][0], np.flatnonzero(tm.grain == k))
        if f.suffix == ".msh":
            got = np.concatenate([d for c, d in zip(m.cells, m.cell_data["gmsh:physical"]) if c.type == "tetra"])
            np.testing.assert_array_equal(got, tm.grain)
            assert sorted(k for k, v in m.field_data.items() if v[1] == 3) == sorted(
                f"grain_{k}" for k in np.unique(tm.grain)
            )
    text = (tmp_path / "p.inp").read_text()
    assert text.count("*ELSET") == len(np.unique(tm.grain))


def test_generated_meshes_reopen(generated):
    import meshio
    import trimesh

    parts = read_particles(generated)
    for p in parts:
        stem = f"particle_{p.particle_id:06d}"
        shell = trimesh.load(generated / "surfaces" / f"{stem}_shell.stl")
        assert shell.is_watertight
        ply = trimesh.load(generated / "surfaces" / f"{stem}_grains.ply", process=False)
        glb = trimesh.load(generated / "surfaces" / f"{stem}_grains.glb")
        assert len(glb.geometry) >= 0.9 * p.n_grains
        assert all(g.is_watertight for g in glb.geometry.values())
        assert len(ply.faces) > 0
        m = meshio.read(generated / "volume_meshes" / f"{stem}.vtu")
        vol = read_label_volume(generated / "voxels.h5", p.particle_id)
        tv = _tet_volumes(m)
        assert (tv > 0).all()
        # the tet mesh was coarsened (--mesh-size-um 0.1: re-voxelised at 0.1 µm); its volume
        # matches the 0.05 µm voxel volume within the coarse discretisation (~ area * h / 4)
        total_vox = (vol.labels > 0).sum() * vol.voxel_size_um**3
        assert abs(tv.sum() / total_vox - 1) < 0.06


def _tet_volumes(m):
    t = m.cells_dict["tetra"]
    p = m.points[t]
    return np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0]) / 6


def test_steady_diffusion_on_exported_tet_mesh(generated):
    """scikit-fem on the exported mesh: (1) constant coefficient, u = x on the boundary -> u = x
    inside to round-off (P1 reproduces linear fields; a non-conforming mesh with cracks between
    grains would not); (2) grain-wise diffusivities in {1, 10}: the effective diffusivity
    (energy / volume for a unit affine boundary gradient) lies within the Wiener bounds
    (harmonic <= D_eff <= arithmetic volume mean)."""
    import meshio
    import skfem
    from skfem.helpers import dot, grad

    m = meshio.read(generated / "volume_meshes" / "particle_000000.msh")
    tets = m.cells_dict["tetra"]
    grain = np.concatenate([d for c, d in zip(m.cells, m.cell_data["gmsh:physical"]) if c.type == "tetra"])
    mesh = skfem.MeshTet(m.points.T.copy(), tets.T.copy())
    basis = skfem.Basis(mesh, skfem.ElementTetP1())
    bnd = mesh.boundary_nodes()
    x = mesh.p[0]

    @skfem.BilinearForm
    def lap(u, v, w):
        return w["kappa"] * dot(grad(u), grad(v))

    kappa = np.ones((mesh.t.shape[1], basis.X.shape[1]))  # per element, per quadrature point
    A = lap.assemble(basis, kappa=kappa)
    u = skfem.solve(*skfem.condense(A, basis.zeros(), x=x.copy(), D=bnd))
    assert np.abs(u - x).max() < 1e-8 * np.abs(x).max()

    rng = np.random.default_rng(0)
    per_grain = rng.choice([1.0, 10.0], size=int(grain.max()) + 1)
    kt = per_grain[grain]
    A = lap.assemble(basis, kappa=kt[:, None] * np.ones_like(kappa))
    u = skfem.solve(*skfem.condense(A, basis.zeros(), x=x.copy(), D=bnd))
    p = mesh.p.T[mesh.t.T]
    vt = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0]) / 6
    V = vt.sum()
    d_eff = float(u @ (A @ u)) / V
    arith = float(vt @ kt) / V
    harm = V / float(vt @ (1 / kt))
    assert harm * (1 - 1e-9) <= d_eff <= arith * (1 + 1e-9)
    assert harm < d_eff < arith  # strictly inside for a real two-phase microstructure


def test_grain_meshes_match_grain_mesh(cleaned):
    """The grouped per-grain meshes of the GLB (compiled local numbering) against grain_mesh."""
    p, vol, lab, _ = cleaned
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    got = dict(meshes._grain_meshes(s))
    assert sorted(got) == sorted(np.unique(s.pairs[s.pairs > 0]).tolist())
    for k, m in got.items():
        r = s.grain_mesh(k)
        np.testing.assert_array_equal(
            np.sort(m.vertices[m.faces].reshape(-1, 9), axis=0), np.sort(r.vertices[r.faces].reshape(-1, 9), axis=0)
        )
        assert m.is_watertight and abs(m.volume - r.volume) < 1e-12


def test_binary_surface_msh_equals_ascii(cleaned, tmp_path):
    """gmsh reads the binary MSH 4.1 surface file (fast path) as the ASCII one (slow twin): same
    node tags and coordinates, same entities, same triangles per entity."""
    import gmsh

    p, vol, lab, _ = cleaned
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    lo_hi = np.sort(s.pairs, axis=1)
    base = int(lo_hi.max()) + 1
    inv = np.unique(lo_hi[:, 0] * base + lo_hi[:, 1], return_inverse=True)[1].ravel()
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(int(inv.max()) + 2))
    got = []
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        for fn, name in ((meshes._write_surface_msh, "a.msh"), (meshes._write_surface_msh_binary, "b.msh")):
            fn(tmp_path / name, s.vertices, s.faces, order, bounds)
            gmsh.clear()
            gmsh.merge(str(tmp_path / name))
            tags, xyz, _ = gmsh.model.mesh.getNodes()
            ents = gmsh.model.getEntities(2)
            els = [gmsh.model.mesh.getElements(2, t)[2][0].tolist() for _, t in ents]
            got.append((tags, xyz, ents, els))
    finally:
        gmsh.finalize()
    (ta, xa, ea, la), (tb, xb, eb, lb) = got
    assert len(ea) == len(bounds) - 1 and ea == eb and la == lb
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(xa, xb)


def test_glb_writer_equals_trimesh_scene(cleaned, tmp_path):
    """The numpy-written per-grain GLB reads back in trimesh exactly as the trimesh-exported scene
    of the same grain meshes (slow twin): same node names, vertices and faces per grain."""
    import trimesh

    from nmc_dataset.testing import write_grains_glb_trimesh

    p, vol, lab, _ = cleaned
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    meshes.write_surfaces(tmp_path, "p", s)
    write_grains_glb_trimesh(tmp_path / "twin.glb", meshes._grain_meshes(s))
    fast = trimesh.load(tmp_path / "p_grains.glb", process=False)
    slow = trimesh.load(tmp_path / "twin.glb", process=False)
    assert sorted(fast.geometry) == sorted(slow.geometry) and len(fast.geometry) == len(np.unique(s.pairs[s.pairs > 0]))
    assert sorted(fast.graph.nodes_geometry) == sorted(slow.graph.nodes_geometry)
    for name, g in slow.geometry.items():
        f = fast.geometry[name]
        np.testing.assert_array_equal(f.vertices, g.vertices)
        np.testing.assert_array_equal(f.faces, g.faces)
        assert f.is_watertight and f.volume > 0


def test_tet_quality_equals_gmsh_gamma():
    """The radius ratio of each tet equals gmsh's own "gamma" quality of the same elements."""
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("box")
        gmsh.model.occ.addBox(0, 0, 0, 1, 0.5, 0.3)
        gmsh.model.occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.2)
        gmsh.option.setNumber("Mesh.Optimize", 0)
        gmsh.model.mesh.generate(3)
        tags, coords, _ = gmsh.model.mesh.getNodes()
        index = np.zeros(int(tags.max()) + 1, dtype=np.int64)
        index[tags.astype(np.int64)] = np.arange(len(tags))
        _, etags, enodes = gmsh.model.mesh.getElements(3)
        gamma = np.asarray(gmsh.model.mesh.getElementQualities(etags[0], "gamma"))
    finally:
        gmsh.finalize()
    tets = index[enodes[0].astype(np.int64)].reshape(-1, 4)
    tm = meshes.TetMesh(coords.reshape(-1, 3), tets, np.ones(len(tets), np.int64), np.zeros((0, 3), np.int64))
    q = tm.quality(chunk=100)
    assert len(q) > 100 and gamma.min() < 0.6
    np.testing.assert_allclose(q, gamma, atol=1e-9)
    flat = meshes.TetMesh(
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float), np.array([[0, 1, 2, 3]]), [1], []
    )
    assert flat.quality()[0] == 0


@pytest.mark.parametrize("seed", range(3))
def test_surface_file_writers_equal_slow_twins(tmp_path, seed):
    """On random conforming-surface-like inputs: the compiled grouping of faces by grain equals
    the argsort twin, the numpy PLY is trimesh's export byte for byte, and the streamed GLB file
    equals ``grains_glb_bytes``."""
    from nmc_dataset import testing
    from nmc_dataset.export._glb import grains_glb_bytes

    rng = np.random.default_rng(seed)
    nv, nf = int(rng.integers(3, 400)), int(rng.integers(1, 900))
    verts = rng.normal(size=(nv, 3)) * 10.0 ** rng.uniform(-3, 3)
    faces = rng.integers(0, nv, (nf, 3))
    pairs = np.sort(rng.integers(0, int(rng.integers(2, 40)), (nf, 2)), axis=1)
    pairs[:, 1] += pairs[:, 0] == pairs[:, 1]
    pairs = np.where(rng.random((nf, 1)) < 0.5, pairs, pairs[:, ::-1])
    s = meshes.GrainSurface(verts, faces, pairs, int(pairs.max()))
    ks, local, verts_of, vstart, starts, ends = meshes._grain_blocks(s)
    ks_ref, grouped, st_ref, en_ref = testing.grain_blocks_reference(faces, pairs)
    np.testing.assert_array_equal(ks, ks_ref)
    np.testing.assert_array_equal(starts, st_ref)
    np.testing.assert_array_equal(ends, en_ref)
    for i in range(len(ks)):  # local numbering maps back to the grouped faces
        np.testing.assert_array_equal(
            verts_of[vstart[i] : vstart[i + 1]][local[starts[i] : ends[i]]], grouped[starts[i] : ends[i]]
        )
    meshes._write_ply(tmp_path / "a.ply", s)
    testing.write_ply_trimesh(tmp_path / "b.ply", s)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    meshes.write_surfaces(tmp_path, "p", s)
    want = grains_glb_bytes(ks, s.vertices[verts_of], vstart, local, np.append(starts, len(local)))
    assert (tmp_path / "p_grains.glb").read_bytes() == want


def test_numpy_vtp_reads_back_as_vtk_written_one(cleaned, tmp_path):
    """The numpy-written VTP reads back in VTK's XML reader (ParaView's) exactly as the file of
    ``vtkXMLPolyDataWriter`` (slow twin): points, triangles, BoundaryLabels."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    from nmc_dataset import testing

    p, vol, lab, _ = cleaned
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    meshes._write_vtp(tmp_path / "a.vtp", s)
    testing.write_vtp_vtk(tmp_path / "b.vtp", s)
    got = []
    for name in ("a.vtp", "b.vtp"):
        r = vtkXMLPolyDataReader()
        r.SetFileName(str(tmp_path / name))
        r.Update()
        out = r.GetOutput()
        got.append(
            (
                vtk_to_numpy(out.GetPoints().GetData()).copy(),
                vtk_to_numpy(out.GetPolys().GetConnectivityArray()).copy(),
                vtk_to_numpy(out.GetPolys().GetOffsetsArray()).copy(),
                vtk_to_numpy(out.GetCellData().GetArray("BoundaryLabels")).copy(),
            )
        )
    for x, y in zip(*got):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(got[0][0], s.vertices)
    np.testing.assert_array_equal(got[0][1].reshape(-1, 3), s.faces)
    np.testing.assert_array_equal(got[0][3], s.pairs)


def _read_vtk_xml(path):
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLGenericDataObjectReader

    r = vtkXMLGenericDataObjectReader()
    r.SetFileName(str(path))
    r.Update()
    out = r.GetOutput()
    cells = out.GetCells() if hasattr(out, "GetCells") else out.GetPolys()
    got = {
        "points": vtk_to_numpy(out.GetPoints().GetData()),
        "connectivity": vtk_to_numpy(cells.GetConnectivityArray()),
        "offsets": vtk_to_numpy(cells.GetOffsetsArray()),
    }
    if hasattr(out, "GetCellTypes"):
        got["types"] = vtk_to_numpy(out.GetCellTypes())
    for data, prefix in ((out.GetCellData(), "cell:"), (out.GetFieldData(), "field:")):
        for i in range(data.GetNumberOfArrays()):
            got[prefix + data.GetArrayName(i)] = vtk_to_numpy(data.GetAbstractArray(i))
    return {k: np.array(v) for k, v in got.items()}


@pytest.mark.parametrize("order", [1, 2])
def test_numpy_vtu_reads_back_as_vtk_written_one(tmp_path, order):
    """The numpy-written VTU reads back in VTK's XML reader exactly as the file of
    ``vtkXMLUnstructuredGridWriter`` (slow twin), and in meshio: nodes, cells, cell and field data."""
    import meshio

    from nmc_dataset import testing
    from nmc_dataset.export import _inp as inp

    rng = np.random.default_rng(order)
    pts = rng.normal(size=(60, 3))
    tets = rng.integers(0, 60, (90, 4))
    if order == 2:
        pts, tets = inp.second_order(pts, tets)
    grain = rng.integers(1, 6, len(tets))
    q = rng.normal(size=(5, 4))
    fields = meshes._cell_fields(grain, q / np.linalg.norm(q, axis=1, keepdims=True), True)
    prov = {"particle_id": 3, "voxel_size_um": 0.05, "mesh_size_um": 0.15, "note": "µm"}
    meshes._write_vtu(tmp_path / "a.vtu", pts, tets, fields, prov)
    testing.write_vtu_vtk(tmp_path / "b.vtu", pts, tets, fields, prov)
    a, b = _read_vtk_xml(tmp_path / "a.vtu"), _read_vtk_xml(tmp_path / "b.vtu")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    m = meshio.read(tmp_path / "a.vtu")
    np.testing.assert_array_equal(m.points, pts)
    np.testing.assert_array_equal(m.cells_dict["tetra" if order == 1 else "tetra10"], tets)
    for k, v in fields.items():
        np.testing.assert_array_equal(m.cell_data[k][0], v)
    assert bytes(m.field_data["provenance_json"].astype(np.uint8)).decode() == json.dumps(prov, sort_keys=True)


@pytest.mark.parametrize("order", [1, 2])
def test_h5py_xdmf_equals_meshio_written_one(tmp_path, order):
    """The h5py-written XDMF + HDF5 has meshio's XML (text equal) and the same datasets and
    attributes as meshio's files (slow twin); meshio reads it back."""
    import h5py
    import meshio

    from nmc_dataset import testing
    from nmc_dataset.export import _inp as inp

    rng = np.random.default_rng(order)
    pts = rng.normal(size=(70, 3))
    tets = rng.integers(0, 70, (120, 4))
    if order == 2:
        pts, tets = inp.second_order(pts, tets)
    grain = rng.integers(1, 6, len(tets))
    q = rng.normal(size=(5, 4))
    fields = meshes._cell_fields(grain, q / np.linalg.norm(q, axis=1, keepdims=True), False)
    prov = {"particle_id": 3, "voxel_size_um": 0.05, "mesh_size_um": 0.15, "model": "a--b"}
    ctype = "tetra" if order == 1 else "tetra10"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    meshes._write_xdmf(tmp_path / "a/p.xdmf", tmp_path / "a/p.h5", pts, tets, ctype, fields, prov)
    testing.write_xdmf_meshio(tmp_path / "b/p.xdmf", tmp_path / "b/p.h5", pts, tets, ctype, fields, prov)
    assert (tmp_path / "a/p.xdmf").read_text() == (tmp_path / "b/p.xdmf").read_text()
    with h5py.File(tmp_path / "a/p.h5") as fa, h5py.File(tmp_path / "b/p.h5") as fb:
        assert sorted(fa) == sorted(fb)
        for k in fa:
            assert fa[k].dtype == fb[k].dtype
            np.testing.assert_array_equal(fa[k][()], fb[k][()])
        assert dict(fa.attrs) == dict(fb.attrs)
    m = meshio.read(tmp_path / "a/p.xdmf")
    np.testing.assert_array_equal(m.points, pts)
    np.testing.assert_array_equal(m.cells_dict[ctype], tets)
    for k, v in fields.items():
        np.testing.assert_array_equal(m.cell_data[k][0], v)
