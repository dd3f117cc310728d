"""Solver-ready tet meshes: second order, sets and surfaces, orientations, provenance; CalculiX vs scikit-fem."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from nmc_dataset import testing
from nmc_dataset.errors import InputError
from nmc_dataset.export import _inp as inp
from nmc_dataset.export import _meshes as meshes
from tests.particles.fixtures import teacher_particle

# orthotropic stiffness in the crystal frame (MPa), all nine constants distinct so that every
# rotation of the crystal changes the response
ORTHO = {
    "D1111": 260e3,
    "D1122": 100e3,
    "D2222": 230e3,
    "D1133": 90e3,
    "D2233": 80e3,
    "D3333": 180e3,
    "D1212": 70e3,
    "D1313": 55e3,
    "D2323": 50e3,
}


def _mesh(radius_um, voxel_um, mesh_size_um, seed=9):
    from nmc_dataset.particles._voxelize import voxelize

    p = teacher_particle(seed=seed, radius_um=radius_um)
    vol = voxelize(p, voxel_um)
    lab, _ = meshes.clean_labels(vol.labels)
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    return p, meshes.tet_mesh(s, mesh_size_um)


def _random_quats(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def small():
    p, tm = _mesh(0.6, 0.06, 0.15)
    assert len(np.unique(tm.grain)) >= 5
    return p, tm, _random_quats(p.n_grains)


def _faces_slow(tets, grain):
    """Slow twin of ``mesh_faces``: a dict from each sorted face to the (element, corner) using it."""
    seen = {}
    for e, t in enumerate(tets.tolist()):
        for c in range(4):
            key = tuple(sorted(t[:c] + t[c + 1 :]))
            seen.setdefault(key, []).append((e, c))
    outer, inter = set(), {}
    for users in seen.values():
        if len(users) == 1:
            outer.add(users[0])
        else:
            (e1, c1), (e2, c2) = users
            a, b = grain[e1], grain[e2]
            if a != b:
                if a > b:
                    (e1, c1, a), (e2, c2, b) = (e2, c2, b), (e1, c1, a)
                inter.setdefault((int(a), int(b)), set()).add((e1, c1, e2, c2))
    return outer, inter


def test_mesh_faces_matches_slow_twin(small):
    _, tm, _ = small
    rng = np.random.default_rng(3)
    for _ in range(3):  # random subsets of the mesh (open, ragged boundaries) and random grain labels
        keep = rng.random(len(tm.tets)) < rng.uniform(0.05, 0.2)
        tets = tm.tets[keep]
        grain = np.where(rng.random(keep.sum()) < 0.3, rng.integers(1, 6, keep.sum()), tm.grain[keep])
        outer, inter = inp.mesh_faces(tets, grain)
        so, si = _faces_slow(tets, grain)
        assert set(map(tuple, outer.tolist())) == so
        assert sorted(inter) == sorted(si)
        for k, rows in inter.items():
            assert set(map(tuple, rows.tolist())) == si[k]
    outer, _ = inp.mesh_faces(tm.tets, tm.grain)
    assert len(outer) == len(tm.outer)


def test_second_order_midpoints(small):
    _, tm, _ = small
    pts, t10 = inp.second_order(tm.points, tm.tets)
    np.testing.assert_array_equal(t10[:, :4], tm.tets)
    for j, (a, b) in enumerate(inp.TET10_EDGES):
        np.testing.assert_allclose(pts[t10[:, 4 + j]], 0.5 * (pts[t10[:, a]] + pts[t10[:, b]]))
    # one node per unique edge; Euler for a ball-like tet mesh: V - E + F - T = 1
    n_edges = len(pts) - len(tm.points)
    f = np.unique(np.sort(tm.tets[:, inp._OPPOSITE].reshape(-1, 3), axis=1), axis=0)
    assert len(tm.points) - n_edges + len(f) - len(tm.tets) == 1


def _node_field_widths(text):
    block = text.split("*NODE, NSET=NALL\n", 1)[1].split("*", 1)[0]
    return max(len(f.strip()) for line in block.splitlines() for f in line.split(",")[1:])


@pytest.mark.parametrize("order", [1, 2])
def test_files_read_back_with_sets_orientations_provenance(small, tmp_path, order):
    import gmsh
    import h5py
    import meshio

    _p, tm, q = small
    prov = {
        "particle_id": 9,
        "shell_model_id": "shell@v1:sha256:abc",
        "grain_model_id": "grain@v1:sha256:def",
        "voxel_size_um": 0.06,
    }
    files = meshes.write_tet_mesh(tm, tmp_path, "p", order=order, orientations=q, provenance=prov)
    ks = np.unique(tm.grain)
    outer, inter = inp.mesh_faces(tm.tets, tm.grain)
    ctype = "tetra" if order == 1 else "tetra10"
    npts = len(tm.points) if order == 1 else len(inp.second_order(tm.points, tm.tets)[0])

    # .inp: meshio reads nodes, elements, ELSETs, NSETs; the node fields fit CalculiX's 20 characters
    text = (tmp_path / "p.inp").read_text()
    assert _node_field_widths(text) <= 20
    header = json.loads(text.split("** provenance_json: ", 1)[1].split("\n", 1)[0])
    assert header == {**prov, "units": "um", "element_order": order, "tool": header["tool"]}
    assert header["tool"].startswith("nmc-dataset ") and text.startswith("** nmc-dataset")
    m = meshio.read(tmp_path / "p.inp")
    assert len(m.points) == npts and len(m.cells_dict[ctype]) == len(tm.tets)
    for k in ks:
        np.testing.assert_array_equal(m.cell_sets[f"grain_{k}"][0], np.flatnonzero(tm.grain == k))
    assert len([s for s in m.point_sets if s.startswith("N_GB_")]) == len(inter)
    corner_outer = np.unique(tm.tets[outer[:, 0][:, None], inp._OPPOSITE[outer[:, 1]]])
    assert set(corner_outer) <= set(m.point_sets["N_OUTER"])
    # surfaces: every S_GB_a_b face is a face of an element of grain a whose nodes lie in N_GB_a_b,
    # and the same nodes form a face of S_GB_b_a
    surf = dict(re.findall(r"\*SURFACE, NAME=(\S+), TYPE=ELEMENT\n((?:\d+, S\d\n)*)", text))
    assert len(surf) == 1 + 2 * len(inter)
    abaqus_face = {1: [0, 1, 2], 2: [0, 3, 1], 3: [1, 3, 2], 4: [2, 3, 0]}
    for a, b in list(inter)[:10]:
        sides = []
        for name, g in ((f"S_GB_{a}_{b}", a), (f"S_GB_{b}_{a}", b)):
            rows = [tuple(map(int, re.findall(r"\d+", ln))) for ln in surf[name].splitlines()]
            assert all(tm.grain[e - 1] == g for e, _ in rows)
            sides.append({tuple(sorted(tm.tets[e - 1][abaqus_face[s]])) for e, s in rows})
            assert set(np.concatenate([list(f) for f in sides[-1]])) <= set(m.point_sets[f"N_GB_{a}_{b}"])
        assert sides[0] == sides[1]
    rows = [tuple(map(int, re.findall(r"\d+", ln))) for ln in surf["S_OUTER"].splitlines()]
    assert {tuple(sorted(tm.tets[e - 1][abaqus_face[s]])) for e, s in rows} == {
        tuple(sorted(f)) for f in tm.outer.tolist()
    }
    # one *ORIENTATION per grain: its points are the rotated crystal x and y axes
    ori = dict(re.findall(r"\*ORIENTATION, NAME=OR_(\d+), SYSTEM=RECTANGULAR\n(.*)\n", text))
    assert sorted(map(int, ori)) == ks.tolist()
    R = inp.quat_to_matrix(q)
    for k in ks:
        vals = np.array(ori[str(k)].split(","), dtype=float)
        np.testing.assert_allclose(vals, np.concatenate([R[k - 1][:, 0], R[k - 1][:, 1]]), atol=1e-11)
        assert f"*SOLID SECTION, ELSET=grain_{k}, MATERIAL=NMC811, ORIENTATION=OR_{k}\n" in text

    # .msh: meshio and gmsh read it; physical volumes = grains, surfaces = outer + grain pairs
    m = meshio.read(tmp_path / "p.msh")
    tet_tags = np.concatenate([d for c, d in zip(m.cells, m.cell_data["gmsh:physical"]) if c.type == ctype])
    np.testing.assert_array_equal(tet_tags, tm.grain)
    assert sum(1 for v in m.field_data.values() if v[1] == 2) == 1 + len(inter)
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.open(str(tmp_path / "p.msh"))
        names = {gmsh.model.getPhysicalName(d, t) for d, t in gmsh.model.getPhysicalGroups()}
        assert {f"grain_{k}" for k in ks} | {"outer"} <= names
        assert sum(n.startswith("gb_") for n in names) == len(inter)
        types, tags, _ = gmsh.model.mesh.getElements(3)
        assert list(types) == [4 if order == 1 else 11] and len(tags[0]) == len(tm.tets)
        qual = gmsh.model.mesh.getElementQualities(tags[0], "minSICN")
        assert qual.min() > 0  # no inverted element, and the quadratic node order is gmsh's
        if order == 2:
            _, tri_tags, _ = gmsh.model.mesh.getElements(2)
            assert sum(len(t) for t in tri_tags) == len(outer) + sum(len(r) for r in inter.values())
    finally:
        gmsh.finalize()
    msh = (tmp_path / "p.msh").read_bytes().decode("latin-1")  # binary nodes/elements, text sections
    assert msh.startswith("$MeshFormat\n2.2 1 8\n")
    got = json.loads(msh.split("$NmcProvenance\n", 1)[1].split("\n", 1)[0])
    assert got["particle_id"] == 9 and got["units"] == "um" and got["element_order"] == order
    block = msh.split("$NmcGrainOrientations\n", 1)[1].split("$End", 1)[0].splitlines()
    table = np.array([ln.split() for ln in block[1:]], dtype=float)
    np.testing.assert_allclose(table[:, 1:], q[table[:, 0].astype(int) - 1], rtol=1e-15)

    # .vtu / .xdmf: cell data grain + orientation; provenance in field data / h5 attributes
    for f in ("p.vtu", "p.xdmf"):
        m = meshio.read(tmp_path / f)
        assert len(m.points) == npts
        np.testing.assert_array_equal(m.cell_data["grain"][0], tm.grain)
        np.testing.assert_allclose(m.cell_data["orientation_matrix"][0].reshape(-1, 3, 3), R[tm.grain - 1], atol=1e-15)
        np.testing.assert_allclose(m.cell_data["c_axis"][0], R[tm.grain - 1][:, :, 2], atol=1e-15)
    m = meshio.read(tmp_path / "p.vtu")
    np.testing.assert_allclose(m.cell_data["orientation_wxyz"][0], q[tm.grain - 1])
    vprov = json.loads(bytes(m.field_data["provenance_json"].astype(np.uint8)).decode())
    assert vprov["grain_model_id"] == prov["grain_model_id"] and vprov["units"] == "um"
    assert int(m.field_data["particle_id"][0]) == 9
    with h5py.File(tmp_path / "p.h5") as h:
        assert json.loads(h.attrs["nmc_provenance_json"])["shell_model_id"] == prov["shell_model_id"]
        assert h.attrs["voxel_size_um"] == 0.06
    assert "particle_id" in (tmp_path / "p.xdmf").read_text()
    assert {f.name for f in files} == {"p.msh", "p.inp", "p.vtu", "p.xdmf", "p.h5"}


def test_bad_order_and_orientations(small, tmp_path):
    _, tm, q = small
    with pytest.raises(InputError, match="element order"):
        meshes.write_tet_mesh(tm, tmp_path, "p", order=3)
    with pytest.raises(InputError, match="orientations"):
        meshes.write_tet_mesh(tm, tmp_path, "p", orientations=q[:, :3])
    with pytest.raises(InputError, match="unit quaternions"):
        meshes.write_tet_mesh(tm, tmp_path, "p", orientations=2 * q)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- CalculiX vs scikit-fem
def _stiffness(q):
    """Per-grain stiffness tensors in the particle frame: C'_ijkl = R_ia R_jb R_kc R_ld C_abcd."""
    C = np.zeros((3, 3, 3, 3))

    def put(i, j, k, l, v):
        for a, b in ((i, j), (j, i)):
            for c, d in ((k, l), (l, k)):
                C[a, b, c, d] = C[c, d, a, b] = v

    o = ORTHO
    put(0, 0, 0, 0, o["D1111"]), put(0, 0, 1, 1, o["D1122"]), put(1, 1, 1, 1, o["D2222"])
    put(0, 0, 2, 2, o["D1133"]), put(1, 1, 2, 2, o["D2233"]), put(2, 2, 2, 2, o["D3333"])
    put(0, 1, 0, 1, o["D1212"]), put(0, 2, 0, 2, o["D1313"]), put(1, 2, 1, 2, o["D2323"])
    R = inp.quat_to_matrix(q)
    return np.einsum("gia,gjb,gkc,gld,abcd->gijkl", R, R, R, R, C)


def _skfem_top_force(points, tets, grain, q, U, outer, top):
    """Reaction force on the ``top`` nodes with ``U`` prescribed on ``outer``, scikit-fem P1/P2."""
    import skfem
    from skfem.helpers import sym_grad

    nc = int(tets[:, :4].max()) + 1
    mesh = skfem.MeshTet(points[:nc].T.copy(), tets[:, :4].T.copy())
    elem = skfem.ElementTetP1() if tets.shape[1] == 4 else skfem.ElementTetP2()
    # quadrature exact for the stiffness on straight-edged tets (degree 2p - 2)
    basis = skfem.Basis(mesh, skfem.ElementVector(elem), intorder=2 * (tets.shape[1] == 10))
    dofs = basis.nodal_dofs
    if tets.shape[1] == 10:  # our mid-edge node of each skfem edge
        ed = np.sort(tets[:, inp.TET10_EDGES].reshape(-1, 2), axis=1)
        lut = dict(zip(map(tuple, ed.tolist()), tets[:, 4:].ravel().tolist()))
        node_of_edge = np.array([lut[tuple(e)] for e in np.sort(mesh.edges.T, axis=1).tolist()])
        full = np.zeros((3, len(points)), dtype=np.int64)
        full[:, :nc] = dofs
        full[:, node_of_edge] = basis.edge_dofs
        dofs = full
    Ce = np.moveaxis(_stiffness(q)[grain - 1].reshape(-1, 9, 9), 0, -1)[..., None]  # (9, 9, elements, 1)

    @skfem.BilinearForm
    def a(u, v, w):
        eu, ev = (np.asarray(sym_grad(z)) for z in (u, v))
        eu, ev = eu.reshape(9, *eu.shape[2:]), ev.reshape(9, *ev.shape[2:])
        return np.einsum("i...,ij...,j...->...", ev, w["C"], eu)  # eps(v) : C : eps(u)

    K = a.assemble(basis, C=Ce)
    x = basis.zeros()
    for d in range(3):
        x[dofs[d]] = U[:, d]
    u = skfem.solve(
        *skfem.condense(K, basis.zeros(), x=x, D=dofs[:, outer].ravel()),
        solver=skfem.solver_iter_pcg(rtol=1e-13, maxiter=20000),
    )
    f = K @ u
    return np.array([f[dofs[d, top]].sum() for d in range(3)])


def _ccx_top_force(folder, points, outer, top, U):
    o = ORTHO
    lines = [
        "** orthotropic NMC-like crystal, MPa",
        "*MATERIAL, NAME=NMC811",
        "*ELASTIC, TYPE=ORTHO",
        (
            f"{o['D1111']}, {o['D1122']}, {o['D2222']}, {o['D1133']}, {o['D2233']}, {o['D3333']}, "
            f"{o['D1212']}, {o['D1313']}"
        ),
        f"{o['D2323']}, 0.",
        "*INCLUDE, INPUT=part.inp",
        "*NSET, NSET=TOP",
    ]
    lines += [", ".join(map(str, (top[i : i + 16] + 1).tolist())) for i in range(0, len(top), 16)]
    lines += ["*STEP", "*STATIC", "*BOUNDARY"]
    lines += [f"{n + 1}, {d + 1}, {d + 1}, {U[n, d]:.12e}" for n in outer.tolist() for d in range(3)]
    lines += ["*NODE PRINT, NSET=TOP, TOTALS=ONLY", "RF", "*END STEP"]
    (folder / "job.inp").write_text("\n".join(lines) + "\n")
    r = subprocess.run(["ccx", "-i", "job"], check=False, cwd=folder, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "*ERROR" not in r.stdout, r.stdout[-2000:]
    dat = (folder / "job.dat").read_text()
    return np.array(dat.split("total force (fx,fy,fz) for set TOP")[1].split("\n")[2].split(), dtype=float)


@pytest.mark.skipif(
    shutil.which("ccx") is None,
    reason="CalculiX (ccx) is not on PATH: apt-get install calculix-ccx to run the solver check",
)
@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_calculix_reaction_force_matches_scikit_fem(small, tmp_path, order):
    """CalculiX solves the exported deck unchanged (its ELSETs, *ORIENTATIONs and *SOLID SECTIONs,
    a user material defined before the *INCLUDE) and its reaction force on the upper half of the
    particle, under an affine displacement of the outer surface, equals scikit-fem's on the same
    mesh with the rotated orthotropic stiffness of each grain (C3D4 = P1, C3D10 = P2 with straight
    edges)."""
    import meshio

    if order == 1:
        p, tm, q = small
    else:  # a coarser particle keeps the quadratic solve short
        p, tm = _mesh(0.5, 0.1, 0.25)
        q = _random_quats(p.n_grains, seed=1)
    meshes.write_tet_mesh(
        tm,
        tmp_path,
        "part",
        formats=("inp",),
        order=order,
        orientations=q,
        provenance={"particle_id": int(p.particle_id)},
    )
    m = meshio.read(tmp_path / "part.inp")
    pts = m.points
    tets = m.cells_dict["tetra" if order == 1 else "tetra10"]
    grain = np.zeros(len(tets), dtype=np.int64)
    for name, (idx,) in m.cell_sets.items():
        if name.startswith("grain_"):
            grain[idx] = int(name.split("_")[1])
    outer = m.point_sets["N_OUTER"]
    top = outer[pts[outer, 2] > 0]
    U = np.zeros_like(pts)  # 1 % axial strain, lateral contraction and a small shear
    U[:, 2] = 0.01 * pts[:, 2]
    U[:, 0] = -0.003 * pts[:, 0] + 0.002 * pts[:, 1]
    f_ccx = _ccx_top_force(tmp_path, pts, outer, top, U)
    f_fem = _skfem_top_force(pts, tets, grain, q, U, outer, top)
    assert f_fem[2] > 100  # µN: a real load (E ~ 2e5 MPa, 1 % strain, ~0.5 µm² section)
    np.testing.assert_allclose(f_ccx, f_fem, rtol=1e-5, atol=1e-5 * abs(f_fem[2]))
    # the orientations matter: the same deck with the crystals all aligned gives another force
    f_aligned = _skfem_top_force(pts, tets, grain, np.tile([1.0, 0, 0, 0], (len(q), 1)), U, outer, top)
    assert abs(f_aligned[2] / f_fem[2] - 1) > 1e-3


# --------------------------------------------------------------------------- compiled writers vs slow twins
def _random_submesh(tm, rng, order):
    """A random part of the mesh (ragged boundary) with random grain labels, linear or quadratic."""
    keep = rng.random(len(tm.tets)) < rng.uniform(0.2, 0.9)
    tets = tm.tets[keep]
    grain = np.where(rng.random(keep.sum()) < 0.2, rng.integers(1, tm.grain.max() + 1, keep.sum()), tm.grain[keep])
    pts = tm.points * rng.choice([1.0, 1e-9, 3e4])  # coordinates also outside the compiled range
    if order == 2:
        pts, tets = testing.second_order_reference(pts, tets)
    return pts, tets, grain


@pytest.mark.parametrize("seed", range(3))
def test_compiled_writers_equal_slow_twins(small, tmp_path, seed):
    """The compiled face pairing, second-order edges and ``.inp`` / ASCII ``.msh`` writers give the
    former numpy writers' results byte for byte; the binary ``.msh`` reads back (meshio) as the
    ASCII one."""
    import meshio

    _, tm, q = small
    rng = np.random.default_rng(seed)
    pts10, t10 = inp.second_order(tm.points, tm.tets)
    ref = testing.second_order_reference(tm.points, tm.tets)
    np.testing.assert_array_equal(t10, ref[1])
    np.testing.assert_array_equal(pts10, ref[0])
    for order in (1, 2):
        pts, tets, grain = _random_submesh(tm, rng, order)
        outer, inter = inp.mesh_faces(tets[:, :4], grain)
        o_ref, i_ref = testing.mesh_faces_reference(tets[:, :4], grain)
        np.testing.assert_array_equal(outer, o_ref)
        assert list(inter) == list(i_ref)
        for k in inter:
            np.testing.assert_array_equal(inter[k], i_ref[k])
        prov = {"particle_id": seed, "note": "µm, -- and ünïcode"}
        ori = q if seed != 1 else None
        inp.write_inp(tmp_path / "a.inp", pts, tets, grain, orientations=ori, provenance=prov)
        testing.write_inp_reference(tmp_path / "b.inp", pts, tets, grain, orientations=ori, provenance=prov)
        assert (tmp_path / "a.inp").read_bytes() == (tmp_path / "b.inp").read_bytes()
        inp.write_msh(tmp_path / "a.msh", pts, tets, grain, orientations=ori, provenance=prov, binary=False)
        testing.write_msh_reference(tmp_path / "b.msh", pts, tets, grain, orientations=ori, provenance=prov)
        assert (tmp_path / "a.msh").read_bytes() == (tmp_path / "b.msh").read_bytes()
        inp.write_msh(tmp_path / "c.msh", pts, tets, grain, orientations=ori, provenance=prov)
        ma, mc = meshio.read(tmp_path / "b.msh"), meshio.read(tmp_path / "c.msh")
        np.testing.assert_array_equal(ma.points, mc.points)
        assert [c.type for c in ma.cells] == [c.type for c in mc.cells]
        for ca, cc in zip(ma.cells, mc.cells):
            np.testing.assert_array_equal(ca.data, cc.data)
        for key in ("gmsh:physical", "gmsh:geometrical"):
            for da, dc in zip(ma.cell_data[key], mc.cell_data[key]):
                np.testing.assert_array_equal(da, dc)
        assert {k: v.tolist() for k, v in ma.field_data.items()} == {k: v.tolist() for k, v in mc.field_data.items()}
        text_c = (tmp_path / "c.msh").read_bytes()
        for sec in (b"$NmcProvenance", b"$NmcGrainOrientations"):
            assert (sec in text_c) == (sec in (tmp_path / "b.msh").read_bytes())
