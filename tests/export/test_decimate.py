"""Coarsening the conforming surface: same grains and grain pairs, closed grains, volumes kept."""

import numpy as np
import pytest

from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.export import _decimate as decimate
from nmc_dataset.export import _meshes as meshes
from tests.particles.fixtures import teacher_particle


@pytest.fixture(scope="module")
def fine():
    from nmc_dataset.particles._voxelize import voxelize

    p = teacher_particle(seed=9, radius_um=1.0)
    vol = voxelize(p, 0.05)
    lab, _ = meshes.clean_labels(vol.labels)
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    vox = np.bincount(vol.labels.ravel(), minlength=p.n_grains + 1)[1:] * vol.voxel_size_um**3
    return p, vol, s, vox


def _pairs(s):
    return {tuple(r) for r in np.unique(np.sort(s.pairs, axis=1), axis=0).tolist()}


def test_coarse_surface_keeps_grains_pairs_and_volumes(fine):
    p, _, s, vox = fine
    c = decimate.coarsen_surface(s, 0.15)
    assert len(c.faces) < 0.5 * len(s.faces)
    assert _pairs(c) == _pairs(s) and c.stats["pairs_after"] == c.stats["pairs_before"]
    for k in np.unique(s.pairs[s.pairs > 0]):
        m = c.grain_mesh(int(k))
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0, k
    present = vox > 0
    v = decimate.grain_volumes(c.vertices, c.faces, c.pairs, p.n_grains)
    rel = np.abs(v[present] / vox[present] - 1)
    assert np.median(rel) < 0.03 and rel.max() < 0.2
    assert abs(v.sum() / vox.sum() - 1) < 0.02
    # no needles or caps made by the clustering: a triangle of shape 4 sqrt(3) A / sum l^2 < 0.1
    # has all three corners where fine vertices are (it is a fine triangle, restored)
    pc = c.vertices[c.faces]
    l2 = sum(((pc[:, i] - pc[:, (i + 1) % 3]) ** 2).sum(axis=1) for i in range(3))
    shape = 2 * np.sqrt(3) * np.linalg.norm(np.cross(pc[:, 1] - pc[:, 0], pc[:, 2] - pc[:, 0]), axis=1) / l2
    fine_pts = {tuple(r) for r in np.round(s.vertices, 9).tolist()}
    for f in c.faces[shape < 0.1]:
        assert all(tuple(r) in fine_pts for r in np.round(c.vertices[f], 9).tolist())
    # the volumes of a closed surface by the divergence theorem agree with trimesh's
    k = int(np.argmax(vox))
    assert abs(c.grain_mesh(k + 1).volume / v[k] - 1) < 1e-9


def test_tets_fill_the_coarse_surface(fine):
    p, _, s, vox = fine
    c = decimate.coarsen_surface(s, 0.2, min_elements_per_grain=40)
    tm = meshes.tet_mesh(c, 0.2)
    assert (tm.signed_volumes() > 0).all()
    present = vox > 0
    assert set(np.unique(tm.grain)) == set(np.flatnonzero(present) + 1)
    np.testing.assert_allclose(
        tm.grain_volumes(p.n_grains)[present],
        decimate.grain_volumes(c.vertices, c.faces, c.pairs, p.n_grains)[present],
        rtol=1e-6,
    )
    # small grains are kept finer (more tets than without the option)
    assert np.bincount(tm.grain)[1:][present].min() >= 10
    plain = decimate.coarsen_surface(s, 0.2)
    small = np.flatnonzero(present & (vox < np.median(vox[present]) / 4)) + 1
    n_plain = np.bincount(meshes.tet_mesh(plain, 0.2).grain, minlength=p.n_grains + 1)
    n_opt = np.bincount(tm.grain, minlength=p.n_grains + 1)
    assert len(small) and n_opt[small].sum() > n_plain[small].sum()


def test_bad_mesh_options(fine, tmp_path):
    from nmc_dataset.pipeline._generate import write_particle_meshes

    p, vol, s, _ = fine
    with pytest.raises(InputError, match="mesh size"):
        decimate.coarsen_surface(s, 0)
    with pytest.raises(RecipeError, match="larger than particle"):
        write_particle_meshes(p, vol, tmp_path, ("volume-mesh",), 5.0, 8)
    with pytest.raises(RecipeError, match="element-order"):
        write_particle_meshes(p, vol, tmp_path, ("volume-mesh",), 0.2, 8, element_order=3)
    assert not list(tmp_path.iterdir())


def test_signatures_match_slow_twin():
    """Vertex signatures (packed patch lists, one lexsort) against Python sets."""
    rng = np.random.default_rng(0)
    for n_patches in (5, 40, 70000):  # the last needs 17-bit ids: 3 per word
        faces = rng.integers(0, 300, (2000, 3))
        patch = rng.integers(0, n_patches, 2000)
        sig, count = decimate._signatures(faces, patch, 300)
        sets = [set() for _ in range(300)]
        for f, p in zip(faces.tolist(), patch.tolist()):
            for v in f:
                sets[v].add(p)
        groups = {}
        for v, s_ in enumerate(sets):
            groups.setdefault(frozenset(s_), []).append(v)
        assert len({int(sig[g[0]]) for g in groups.values()}) == len(groups)
        assert all(len(set(sig[g].tolist())) == 1 for g in groups.values())
        np.testing.assert_array_equal(count, [len(s_) for s_ in sets])


@pytest.fixture(scope="module")
def crossing():
    """A particle whose plain coarse surface at 0.15 µm intersects itself (HXT: 'A segment and a
    facet intersect')."""
    from nmc_dataset.particles._voxelize import voxelize

    p = teacher_particle(seed=9, radius_um=1.6)
    vol = voxelize(p, 0.05)
    lab, _ = meshes.clean_labels(vol.labels)
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    return p, lab, s


@pytest.mark.slow  # ~16 s; the finder itself is checked against its brute-force twin in test_intersect.py
def test_all_self_intersections_repaired_at_once(crossing):
    """The finder reports every intersecting pair of the coarse surface (the fine one has none);
    one repair round leaves none, every grain closed and every grain pair kept."""
    from nmc_dataset.export._intersect import self_intersections

    p, lab, s = crossing
    assert len(self_intersections(s.vertices, s.faces)) == 0
    c = decimate.coarsen_surface(s, 0.15)
    x = self_intersections(c.vertices, c.faces)
    assert len(x) >= 2
    r = decimate.repair_self_intersections(s, c)
    st = r.stats
    assert st["intersections"] == len(x) and st["intersections_left"] == 0 and st["intersection_rounds"] >= 1
    assert len(self_intersections(r.vertices, r.faces)) == 0
    assert st["pairs_after"] == st["pairs_before"] and _pairs(r) == _pairs(s)
    # the repair is local: a few more triangles than the plain coarsening, far fewer than the fine surface
    assert len(c.faces) < len(r.faces) < len(c.faces) + 200 * len(x)
    for k in np.unique(s.pairs[s.pairs > 0])[::7]:
        m = r.grain_mesh(int(k))
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0, k
    with pytest.raises(ValueError, match="keep_vertices needs resume"):
        decimate.coarsen_surface(s, 0.15, keep_vertices=[0])


@pytest.mark.slow
def test_intersections_found_by_gmsh_are_kept_fine(crossing):
    """gmsh stops at an intersection of the plain coarse surface; after the repair it meshes every
    grain in one attempt; without the repair the retries on gmsh's reports get there too."""
    p, lab, s = crossing
    with pytest.raises(RuntimeError) as e:
        meshes.tet_mesh(decimate.coarsen_surface(s, 0.15), 0.15)
    assert len(e.value.points) >= 1
    for repair in (True, False):
        tm, c = decimate.tet_mesh_coarsened(s, 0.15, repair=repair)
        assert c.stats["attempts"] == 1 if repair else c.stats["attempts"] > 1
        assert c.stats["pairs_after"] == c.stats["pairs_before"]
        assert len(np.unique(tm.grain)) == len(np.unique(lab[lab > 0]))
        assert (tm.signed_volumes() > 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_compiled_edge_check_equals_numpy(fine, seed):
    """The per-grain compiled edge check finds the same violating vertices as the global numpy
    sort (slow twin), on random clusterings of the fine surface and random subsets of grains."""
    s = fine[2]
    rng = np.random.default_rng(seed)
    patch = decimate._patch_ids(s.pairs)
    n0 = np.cross(
        s.vertices[s.faces[:, 1]] - s.vertices[s.faces[:, 0]], s.vertices[s.faces[:, 2]] - s.vertices[s.faces[:, 0]]
    )
    h = rng.uniform(0.04, 0.3)
    cell = np.floor((s.vertices - s.vertices.min(0) + rng.uniform(0, h, 3)) / h).astype(np.int64)
    rep = np.unique((cell[:, 0] * 4096 + cell[:, 1]) * 4096 + cell[:, 2], return_inverse=True)[1].ravel()
    pos = np.stack([np.bincount(rep, weights=s.vertices[:, a]) for a in range(3)], 1) / np.bincount(rep)[:, None]
    fr = rep[s.faces]
    keep = (fr[:, 0] != fr[:, 1]) & (fr[:, 1] != fr[:, 2]) & (fr[:, 0] != fr[:, 2])
    grains = None if seed == 0 else rng.random(s.n_grains + 1) < 0.5
    args = (pos, s.faces, fr, s.pairs, keep, int(patch.max()) + 1, patch, n0, grains)
    fast = decimate._bad_vertices(*args, compiled=True)
    slow = decimate._bad_vertices(*args, compiled=False)
    assert len(slow) > 0
    np.testing.assert_array_equal(fast, slow)


def _pieces(nv, edges, same):
    """Connected pieces (breadth-first search) of the graph of ``edges`` joining vertices with
    ``same[a] == same[b]``."""
    nbr = [set() for _ in range(nv)]
    for a, b in edges.tolist():
        if same[a] == same[b]:
            nbr[a].add(b)
            nbr[b].add(a)
    piece = np.full(nv, -1)
    n = 0
    for v0 in range(nv):
        if piece[v0] >= 0:
            continue
        piece[v0], todo = n, [v0]
        while todo:
            for w in nbr[todo.pop()]:
                if piece[w] < 0:
                    piece[w] = n
                    todo.append(w)
        n += 1
    return piece


def test_clusters_are_connected_pieces_of_cells(fine):
    """Inside patches, each cluster is one connected piece (breadth-first search over the fine
    edges) of a cell's vertices of one signature; on boundary curves, each cluster is connected
    along the curve and there are fewer than the cells give; fewer repairs than whole cells."""
    s = fine[2]
    nv = len(s.vertices)
    plan = decimate._coarsen_plan(s, 0.15, None)
    conn = plan["cluster"]
    cells = decimate._coarsen_plan(s, 0.15, None, connected=False)["cluster"]
    _, count = decimate._signatures(s.faces, plan["patch"], nv)
    edges = np.concatenate([s.faces[:, [0, 1]], s.faces[:, [1, 2]], s.faces[:, [2, 0]]])
    inner = count == 1
    piece = _pieces(nv, edges, cells)
    # the same partition of the patch-interior vertices
    u_conn, u_piece = np.unique(conn[inner]), np.unique(piece[inner])
    assert len(u_conn) == len(u_piece) == len(np.unique(conn[inner] * (piece.max() + 1) + piece[inner]))
    assert len(u_piece) > len(np.unique(cells[inner]))
    curve = (count >= 2) & (count < 4)
    assert len(np.unique(conn[curve])) < len(np.unique(cells[curve]))
    # a curve cluster is connected through the fine edges among its members
    along = _pieces(nv, edges, conn)
    assert len(np.unique(along[curve])) == len(np.unique(conn[curve]))
    assert (
        decimate.coarsen_surface(s, 0.15).stats["restored_vertices"]
        < decimate.coarsen_surface(s, 0.15, connected=False).stats["restored_vertices"]
    )


def test_resumed_coarsening(fine):
    """Resuming a coarsening reproduces it exactly without new points, keeps the surface fine
    around new points (and stays closed, with every grain pair), and refuses another surface."""
    p, vol, s, vox = fine
    c = decimate.coarsen_surface(s, 0.15)
    again = decimate.coarsen_surface(s, 0.15, resume=c)
    np.testing.assert_array_equal(again.vertices, c.vertices)
    np.testing.assert_array_equal(again.faces, c.faces)
    pt = s.vertices[len(s.vertices) // 2][None, :]
    r = decimate.coarsen_surface(s, 0.15, keep_near=pt, resume=c)
    fresh = decimate.coarsen_surface(s, 0.15, keep_near=pt)
    assert r.stats["restored_vertices"] >= fresh.stats["restored_vertices"] > c.stats["restored_vertices"]
    assert r.stats["pairs_after"] == r.stats["pairs_before"]
    d = np.linalg.norm(s.vertices - pt, axis=1) < 0.15  # fine vertices near the point are kept
    assert np.isin(np.round(s.vertices[d], 9), np.round(r.vertices, 9)).all(axis=1).all()
    assert (
        len(
            decimate._bad_vertices(
                r.vertices,
                r.faces,
                r.faces,
                r.pairs,
                np.ones(len(r.faces), bool),
                int(decimate._patch_ids(r.pairs).max()) + 1,
                decimate._patch_ids(r.pairs),
                np.cross(
                    r.vertices[r.faces[:, 1]] - r.vertices[r.faces[:, 0]],
                    r.vertices[r.faces[:, 2]] - r.vertices[r.faces[:, 0]],
                ),
            )
        )
        == 0
    )
    with pytest.raises(ValueError, match="another surface"):
        decimate.coarsen_surface(c, 0.15, resume=c)
