"""Edge-collapse decimation of the coarse conforming surface: every constraint kept, checked by an
independent slow twin (Python sets) on random noisy volumes and on a particle."""

import numpy as np
import pytest

from nmc_dataset.export import _collapse as col
from nmc_dataset.export import _decimate as decimate
from nmc_dataset.export import _meshes as meshes
from nmc_dataset.export._intersect import self_intersections
from nmc_dataset.testing._export import decimation_violations
from tests.particles.fixtures import teacher_particle


def _noisy_voronoi(seed, n=16):
    """A ball of Voronoi grains, a random fraction of voxels relabelled (thin, tangled grains)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 25))
    c = rng.uniform(0, n, (k, 3))
    zyx = np.stack(np.mgrid[:n, :n, :n], axis=-1).astype(float)
    lab = (((zyx[..., None, :] - c) ** 2).sum(-1).argmin(-1) + 1).astype(np.int32)
    m = rng.random(lab.shape) < rng.uniform(0, 0.12)
    lab[m] = rng.integers(0, k + 1, int(m.sum()))
    lab[np.linalg.norm(zyx - n / 2 + 0.5, axis=-1) > n / 2 - 1] = 0
    return lab, k


def _coarse(seed):
    lab, k = _noisy_voronoi(seed)
    lab, _ = meshes.clean_labels(lab)
    s = meshes.grain_surface_mesh(lab, np.zeros(3), 1.0, k, (seed % 3) * 4)
    h = (1.5, 2.5, 4.0)[seed % 3]
    return decimate.repair_self_intersections(s, decimate.coarsen_surface(s, h)), h


@pytest.mark.parametrize("seed", range(8))
def test_random_surfaces_keep_every_constraint(seed):
    c, h = _coarse(seed)
    params = {"tol": 0.3, "vol_tol": 0.03} if seed % 2 else {}
    d = col.decimate_surface(c, h, min_elements_per_grain=(None, 20)[seed % 2], **params)
    vol_tol = params.get("vol_tol", col.DEFAULTS["vol_tol"])
    assert decimation_violations(c, d, d.source, vol_tol=vol_tol + 1e-9, min_shape=col.DEFAULTS["min_shape"]) == []
    assert len(self_intersections(d.vertices, d.faces)) == 0
    assert len(d.faces) <= len(c.faces)
    # the output's vertices are input vertices that did not move
    np.testing.assert_array_equal(d.vertices, c.vertices[d.source])
    np.testing.assert_array_equal(d.rep[d.source], np.arange(len(d.source)))


def test_random_surfaces_shrink():
    before = after = 0
    for seed in range(8):
        c, h = _coarse(seed)
        before += len(c.faces)
        after += len(col.decimate_surface(c, h).faces)
    assert after < 0.9 * before  # noisy grains: many short curves and junctions, ~18 % fewer


def test_checker_finds_each_violation():
    """The slow twin is not vacuous: it reports an open grain, a changed vertex class, a moved
    junction, a joined curve and a volume change."""
    c, h = _coarse(1)
    d = col.decimate_surface(c, h)
    src = d.source
    assert decimation_violations(c, d, src) == []
    open_ = meshes.GrainSurface(d.vertices, d.faces[1:], d.pairs[1:], d.n_grains)
    assert any("used" in m for m in decimation_violations(c, open_, src))
    # a junction removed: collapse it blindly into a neighbour
    patch = decimate._patch_ids(d.pairs)
    _, count = decimate._signatures(d.faces, patch, len(d.vertices))
    j = int(np.flatnonzero(count >= 4)[0])
    nb = int(d.faces[(d.faces == j).any(axis=1)][0][d.faces[(d.faces == j).any(axis=1)][0] != j][0])
    f = np.where(d.faces == j, nb, d.faces)
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    blind = meshes.GrainSurface(d.vertices, f[keep], d.pairs[keep], d.n_grains)
    msgs = decimation_violations(c, blind, src)
    assert any("junction" in m for m in msgs) and any("pairs" in m or "curves" in m for m in msgs)
    # a grain's volume changed
    moved = meshes.GrainSurface(d.vertices * 1.05, d.faces, d.pairs, d.n_grains)
    assert any("volumes" in m for m in decimation_violations(c, moved, src, vol_tol=0.01))


def test_locked_vertices_stay():
    c, h = _coarse(2)
    everything = col.decimate_surface(c, h, locked=np.ones(len(c.vertices), dtype=bool))
    np.testing.assert_array_equal(everything.source[everything.faces], c.faces)
    lk = c.vertices[:, 0] < np.median(c.vertices[:, 0])
    part = col.decimate_surface(c, h, locked=lk)
    assert len(part.faces) < len(c.faces)
    kept = {frozenset(f) for f in part.source[part.faces].tolist()}
    for f in c.faces[(lk[c.faces]).all(axis=1)].tolist():
        assert frozenset(f) in kept


@pytest.fixture(scope="module")
def particle():
    from nmc_dataset.particles._voxelize import voxelize

    p = teacher_particle(seed=9, radius_um=1.0)
    vol = voxelize(p, 0.05)
    lab, _ = meshes.clean_labels(vol.labels)
    s = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, p.n_grains, 8)
    vox = np.bincount(vol.labels.ravel(), minlength=p.n_grains + 1)[1:] * vol.voxel_size_um**3
    return p, s, vox


def test_particle_fewer_triangles_and_tets_same_grains(particle):
    p, s, vox = particle
    tm0, c0 = decimate.tet_mesh_coarsened(s, 0.15, decimate=False)
    tm, c = decimate.tet_mesh_coarsened(s, 0.15)
    assert len(c.faces) < 0.8 * len(c0.faces) and len(tm.tets) < 0.8 * len(tm0.tets)
    assert c.stats["triangles_coarse"] == len(c0.faces) and c.stats["triangles_after"] == len(c.faces)
    assert {tuple(r) for r in np.unique(np.sort(c.pairs, axis=1), axis=0).tolist()} == {
        tuple(r) for r in np.unique(np.sort(s.pairs, axis=1), axis=0).tolist()
    }
    present = vox > 0
    assert set(np.unique(tm.grain)) == set(np.flatnonzero(present) + 1)
    # the tets fill the decimated surface grain by grain, within a few % of the voxel volumes
    v = decimate.grain_volumes(c.vertices, c.faces, c.pairs, p.n_grains)
    np.testing.assert_allclose(tm.grain_volumes(p.n_grains)[present], v[present], rtol=1e-6)
    rel = np.abs(v[present] / vox[present] - 1)
    assert np.median(rel) < 0.03 and rel.max() < 0.25
    assert (tm.quality() > 0).all()


def test_particle_small_grains_stay_finer(particle):
    p, s, _ = particle
    c = decimate.repair_self_intersections(s, decimate.coarsen_surface(s, 0.2, min_elements_per_grain=40))
    plain = col.decimate_surface(c, 0.2)
    fine = col.decimate_surface(c, 0.2, min_elements_per_grain=40)
    assert len(fine.faces) > len(plain.faces)
    assert decimation_violations(c, fine, fine.source, vol_tol=0.01 + 1e-9) == []
    per_grain = np.bincount(fine.pairs[fine.pairs > 0], minlength=p.n_grains + 1)
    per_grain_plain = np.bincount(plain.pairs[plain.pairs > 0], minlength=p.n_grains + 1)
    small = np.argsort(decimate.grain_volumes(c.vertices, c.faces, c.pairs, p.n_grains))[:5] + 1
    # greedy order: a grain may end a few triangles either way, the small ones together keep more
    assert per_grain[small].sum() > 1.1 * per_grain_plain[small].sum()
    assert (per_grain[small] >= 0.85 * per_grain_plain[small]).all()


def test_bad_options():
    c, h = _coarse(0)
    with pytest.raises(TypeError, match="unknown"):
        col.collapse_edges(c, h, tolerance=1)
    from nmc_dataset.errors import InputError

    with pytest.raises(InputError):
        col.collapse_edges(c, 0)


def _non_delaunay_flat_edges(s, flat_cos=0.9):
    """Interior patch edges whose opposite angles sum past pi on nearly flat triangle pairs
    (Python loop over an edge dictionary)."""
    edges = {}
    for i, f in enumerate(s.faces.tolist()):
        for k in range(3):
            edges.setdefault(frozenset((f[k], f[(k + 1) % 3])), []).append(i)
    n = 0
    patch = decimate._patch_ids(s.pairs)
    for e, fs in edges.items():
        if len(fs) != 2 or patch[fs[0]] != patch[fs[1]]:
            continue
        p, q = sorted(e)
        ang, nrm = 0.0, []
        for f in fs:
            r = (set(s.faces[f].tolist()) - e).pop()
            a, b = s.vertices[p] - s.vertices[r], s.vertices[q] - s.vertices[r]
            ang += np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
            x = s.vertices[s.faces[f]]
            nn = np.cross(x[1] - x[0], x[2] - x[0])
            nrm.append(nn / np.linalg.norm(nn) * (1 if s.pairs[f, 0] == s.pairs[fs[0], 0] else -1))
        n += ang > np.pi + 1e-9 and abs(nrm[0] @ nrm[1]) >= flat_cos
    return n


def test_delaunay_flips_keep_the_constraints():
    c, h = _coarse(5)
    d = col.decimate_surface(c, h, flips=False)
    f = col.delaunay_flips(d, vol_ref=decimate.grain_volumes(c.vertices, c.faces, c.pairs, c.n_grains), vol_tol=0.01)
    assert f.stats["flips"] > 0
    assert _non_delaunay_flat_edges(f) < 0.5 * _non_delaunay_flat_edges(d)
    assert decimation_violations(c, f, f.source, vol_tol=0.01 + 1e-9) == []
    np.testing.assert_array_equal(f.vertices, d.vertices)
    lk = np.ones(len(d.vertices), dtype=bool)
    assert col.delaunay_flips(d, locked=lk).stats["flips"] == 0
