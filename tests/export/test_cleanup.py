"""Label clean-up: compiled kernels vs the same code in Python, an independent checker, and
volumes on which the earlier rule-based clean-up cycled forever."""

import numpy as np
import pytest

from nmc_dataset.export import _cleanup as cleanup


def _voronoi_noise(seed, n=24, noise=None):
    """A ball of Voronoi grains with a fraction of voxels set to random labels (0 included)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 30))
    c = rng.uniform(0, n, (k, 3))
    zyx = np.stack(np.mgrid[:n, :n, :n], axis=-1).astype(float)
    lab = (((zyx[..., None, :] - c) ** 2).sum(-1).argmin(-1) + 1).astype(np.int32)
    m = rng.random(lab.shape) < (rng.uniform(0, 0.3) if noise is None else noise)
    lab[m] = rng.integers(0, k + 1, int(m.sum()))
    lab[np.linalg.norm(zyx - n / 2 + 0.5, axis=-1) > n / 2 - 1] = 0
    return lab


def test_compiled_matches_python_on_random_volumes():
    rng = np.random.default_rng(0)
    for t in range(12):
        shape = tuple(int(v) for v in rng.integers(3, 11, 3))
        lab = rng.integers(0, int(rng.integers(2, 6)), shape).astype(np.int32)
        if t % 3 == 0:
            lab = _voronoi_noise(t, n=10)
        a, ca = cleanup.clean_labels(lab)
        b, cb = cleanup.clean_labels(lab, compiled=False)
        np.testing.assert_array_equal(a, b)
        assert ca == cb
        assert cleanup.defects(a) == {"fragments": 0, "edge_contacts": 0, "vertex_contacts": 0}


def test_checker_finds_each_defect():
    lab = np.zeros((4, 4, 4), dtype=np.int32)
    lab[1, 1, 1] = lab[1, 2, 2] = 1  # edge-only contact (and two fragments)
    d = cleanup.defects(lab)
    assert d["edge_contacts"] >= 1 and d["fragments"] == 1
    lab = np.zeros((4, 4, 4), dtype=np.int32)
    lab[1, 1, 1] = lab[2, 2, 2] = 1  # vertex-only contact
    d = cleanup.defects(lab)
    assert d["vertex_contacts"] >= 1 and d["edge_contacts"] == 0
    lab = np.ones((4, 4, 4), dtype=np.int32)
    assert cleanup.defects(lab) == {"fragments": 0, "edge_contacts": 0, "vertex_contacts": 0}


@pytest.mark.parametrize("seed", [11, 1, 2, 3, 4])
def test_converges_where_rules_cycled(seed):
    """Seed 11: the earlier clean-up (fixed rules per 2x2 / 2x2x2 block, visited in parity
    classes) flipped one voxel back and forth between two grains forever here and raised
    'label clean-up did not converge'."""
    import trimesh  # noqa: F401  (grain meshes below)

    from nmc_dataset.export._meshes import grain_surface_mesh

    lab = _voronoi_noise(seed)
    out, changed = cleanup.clean_labels(lab)
    assert cleanup.defects(out) == {"fragments": 0, "edge_contacts": 0, "vertex_contacts": 0}
    assert 0 < changed
    again, more = cleanup.clean_labels(out)
    assert more == 0 and np.array_equal(again, out)
    s = grain_surface_mesh(out, np.zeros(3), 1.0, int(out.max()), 0)
    for k in np.unique(out[out > 0]):
        m = s.grain_mesh(int(k))
        assert m.is_watertight and m.is_winding_consistent, k


def test_run_components_and_block_check_equal_slow_twins():
    """The union-find over runs along x gives the per-voxel union-find's components (same
    numbering, sizes, labels), and the block check that skips repeated labels the full one."""
    from nmc_dataset import testing

    rng = np.random.default_rng(5)
    for t in range(10):
        shape = tuple(int(v) for v in rng.integers(1, 14, 3))
        lab = rng.integers(0, int(rng.integers(2, 5)), shape).astype(np.int32)
        if t % 2:
            lab = _voronoi_noise(t, n=12)
        start, length, comp, sizes, labels = cleanup._components_runs(lab)
        c_ref, s_ref, l_ref = testing.components_reference(lab)
        per_voxel = np.full(lab.size, -1)
        for a, n, c in zip(start, length, comp):
            per_voxel[a : a + n] = c
        np.testing.assert_array_equal(per_voxel, c_ref)
        np.testing.assert_array_equal(sizes, s_ref)
        np.testing.assert_array_equal(labels, l_ref)
    blocks = rng.integers(0, rng.integers(1, 9, 4000)[:, None], (4000, 8)).astype(np.int32)
    for b in blocks:
        cube = b.reshape(2, 2, 2)
        assert cleanup._block_bad(cube, 0, 0, 0, cleanup.CONNECTED) == testing.block_bad_reference(
            cube, 0, 0, 0, cleanup.CONNECTED
        )


@pytest.mark.parametrize("noise", [0.05, 0.2, 0.4, 0.6])
def test_noisy_volumes_converge(noise):
    """At 40 % noise this volume cycled between fragments and descent until the last resort gave
    up with 'did not converge': the last resort filled cubes only around bad blocks, and there
    were none, only fragments; it now fills around the fragments' voxels."""
    lab = _voronoi_noise(22, n=16, noise=noise)
    out, changed = cleanup.clean_labels(lab)
    assert changed > 0
    assert cleanup.defects(out) == {"fragments": 0, "edge_contacts": 0, "vertex_contacts": 0}
