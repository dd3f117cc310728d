"""The fused kNN + network-input kernel against its plain twins (all distances; scipy cKDTree)."""

import numpy as np
import pytest

from nmc_dataset.calibration._generator import neighbour_inputs, neighbour_inputs_reference, poisson_seed_set
from nmc_dataset.calibration._knn import box_mask, knn, knn_inputs
from nmc_dataset.tessellation._gbpd import radial_frames
from nmc_dataset.testing import knn_reference


def _poisson(rng, mu, half):
    ss = poisson_seed_set(rng, mu, [-half] * 3, [half] * 3)
    return ss.positions, ss.noise, ss.roll


@pytest.mark.parametrize("mu, half, kappa", [(0.0018, 40.0, 12), (0.02, 15.0, 5), (0.0005, 60.0, 20), (0.003, 25.0, 1)])
def test_knn_equals_brute_force(rng, mu, half, kappa):
    """Exact neighbour lists (same order, ties by index) and squared distances, several
    intensities, boxes and kappa values, every seed queried (border seeds included)."""
    pts, _, _ = _poisson(rng, mu, half)
    nb, d2 = knn(pts, kappa)
    nb_ref, d2_ref = knn_reference(pts, kappa)
    np.testing.assert_array_equal(nb, nb_ref)
    np.testing.assert_array_equal(d2, d2_ref)


@pytest.mark.parametrize("cell_fraction, radius_factor", [(0.3, 1.2), (3.0, 1.2), (1.3, 0.0), (1.3, 0.5), (0.7, 3.0)])
def test_knn_tuning_never_changes_the_result(rng, cell_fraction, radius_factor):
    """Cell size and gather radius are speed knobs only; radius 0 runs the incremental search
    for every seed, 0.5 makes almost every seed fall back to it."""
    pts, _, _ = _poisson(rng, 0.002, 35.0)
    which = rng.random(len(pts)) < 0.5
    nb, d2 = knn(pts, 12, which, cell_fraction=cell_fraction, radius_factor=radius_factor)
    nb_ref, d2_ref = knn_reference(pts, 12, which)
    np.testing.assert_array_equal(nb, nb_ref)
    np.testing.assert_array_equal(d2, d2_ref)


def test_knn_degenerate_patterns(rng):
    """Exact duplicates (more than kappa at one spot), an integer lattice (many equal distances:
    ties by index), a flat set (z = 0) and dense clusters in a sparse background (the gather
    radius from the mean density is far too big in the cluster and too small outside; in the
    larger one the candidates exceed the ranking limit)."""
    base = rng.uniform(-20, 20, (300, 3))
    dup = np.concatenate([base, base[:40], np.repeat(base[:1], 20, axis=0)])
    lattice = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    flat = np.column_stack([rng.uniform(-30, 30, (400, 2)), np.zeros(400)])
    cluster = np.concatenate([rng.uniform(-100, 100, (300, 3)), rng.normal(0, 0.5, (300, 3))])
    crowd = np.concatenate([rng.uniform(-100, 100, (100, 3)), rng.normal(0, 0.3, (1200, 3))])  # > _RANK_MAX
    for pts in (dup, lattice, flat, cluster, crowd, base[:13]):
        for kappa in (1, 12):
            nb, d2 = knn(pts, kappa)
            nb_ref, d2_ref = knn_reference(pts, kappa)
            np.testing.assert_array_equal(nb, nb_ref)
            np.testing.assert_array_equal(d2, d2_ref)


def test_knn_which_forms_and_groups(rng):
    pts, _, _ = _poisson(rng, 0.004, 20.0)
    n = len(pts)
    group = rng.integers(0, 3, n) * 7  # sparse, non-consecutive labels
    mask = rng.random(n) < 0.3
    idx = np.flatnonzero(mask)
    rep = np.r_[idx[:5], idx[:5], idx[-1]]  # repeated and unordered indices
    for which in (None, mask, idx, rep, np.array([], dtype=int)):
        nb, d2 = knn(pts, 12, which, group=group)
        nb_ref, d2_ref = knn_reference(pts, 12, which, group=group)
        np.testing.assert_array_equal(nb, nb_ref)
        np.testing.assert_array_equal(d2, d2_ref)
        assert np.all(group[nb] == group[np.arange(n)[which] if which is not None else np.arange(n)][:, None])


def test_inputs_equal_ckdtree_reference(rng):
    """The fused kernel reproduces the cKDTree + radial_frames + einsum path: identical
    neighbour sets and inputs equal within float32 rounding (tolerance 1 float32 ulp of
    numbers of order 1-3; in practice they are bit-identical)."""
    from scipy.spatial import cKDTree

    for mu, half, kappa, scale in [(0.0018, 45.0, 12, 10.0), (0.01, 20.0, 8, 3.0)]:
        pos, noise, roll = _poisson(rng, mu, half)
        which = box_mask(pos, [-half / 2] * 3, [half / 2] * 3)
        x, nb = knn_inputs(pos, noise, roll, which, kappa=kappa, input_scale_px=scale, return_neighbours=True)
        ref = neighbour_inputs_reference(pos, noise, roll, which, kappa=kappa, input_scale_px=scale)
        idx = np.flatnonzero(which)
        _, nb_tree = cKDTree(pos).query(pos[idx], k=kappa + 1)
        np.testing.assert_array_equal(nb, nb_tree[:, 1:])
        assert x.dtype == np.float32 and x.shape == (len(idx), 5 * kappa)
        np.testing.assert_allclose(x, ref, rtol=2e-7, atol=2e-7)
        # and the public entry point is the kernel
        np.testing.assert_array_equal(neighbour_inputs(pos, noise, roll, which, kappa=kappa, input_scale_px=scale), x)


def test_inputs_groups_equal_reference(rng):
    parts = [_poisson(rng, 0.003, 20.0) for _ in range(3)]
    pos = np.concatenate([p[0] for p in parts])
    noise = np.concatenate([p[1] for p in parts])
    roll = np.concatenate([p[2] for p in parts])
    group = np.concatenate([np.full(len(p[0]), b) for b, p in enumerate(parts)])
    inner = box_mask(pos, [-10] * 3, [10] * 3)
    x = neighbour_inputs(pos, noise, roll, inner, kappa=12, group=group)
    ref = neighbour_inputs_reference(pos, noise, roll, inner, kappa=12, group=group)
    np.testing.assert_allclose(x, ref, rtol=2e-7, atol=2e-7)


def test_frames_special_positions_match_radial_frames(rng):
    """Seeds at the origin (frame e1), on the negative x axis (the 180-degree flip about e2)
    and just off it: the kernel's frame is gbpd.radial_frames' (same sign conventions)."""
    pts = np.concatenate(
        [[[0.0, 0.0, 0.0], [-5.0, 0.0, 0.0], [-5.0, 1e-10, 0.0], [3.0, -4.0, 12.0]], rng.uniform(-10, 10, (60, 3))]
    )
    noise = rng.random((len(pts), 2))
    roll = rng.uniform(0, np.pi, len(pts))
    x, nb = knn_inputs(pts, noise, roll, np.arange(4), kappa=6, input_scale_px=1.0, return_neighbours=True)
    q = radial_frames(pts[:4], roll[:4])
    for r in range(4):
        v = (pts[nb[r]] - pts[r]) @ q[r].T
        np.testing.assert_allclose(x[r].reshape(6, 5)[:, :3], v, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(x[r].reshape(6, 5)[:, 3:], noise[nb[r]].astype(np.float32))


def test_errors_are_value_errors(rng):
    pos, noise, roll = _poisson(rng, 0.003, 15.0)
    bad = pos.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        knn_inputs(bad, noise, roll)
    with pytest.raises(ValueError, match="kappa"):
        knn(pos, 12, group=np.r_[np.zeros(len(pos) - 5, int), np.ones(5, int)])
    with pytest.raises(ValueError, match="noise"):
        knn_inputs(pos, noise[:, :1], roll)
    with pytest.raises(ValueError, match="mask"):
        knn(pos, 12, np.ones(len(pos) + 1, bool))
    with pytest.raises(ValueError):
        knn(pos[:, :2], 12)
    with pytest.raises(ValueError):
        neighbour_inputs(pos[:12], noise[:12], roll[:12], kappa=12)


def test_box_mask_equals_numpy(rng):
    pts = rng.uniform(-5, 5, (1000, 3))
    pts[:10] = np.round(pts[:10])  # points exactly on the faces
    lo, hi = np.array([-2.0, -3.0, -1.0]), np.array([2.0, 4.0, 1.0])
    np.testing.assert_array_equal(box_mask(pts, lo, hi), np.all((pts >= lo) & (pts <= hi), axis=1))


@pytest.mark.parametrize("cell_fraction", [0.3, 1.5, 4.0])
def test_gather_box_equals_brute_force(rng, cell_fraction):
    """The kernel's gather step (every point within r of a box) against all distances: it must
    return each point within r exactly once and nothing beyond r + its rounding slack."""
    from nmc_dataset.calibration import _knn as K

    pts = rng.uniform(-40, 40, (3000, 3))
    gid = np.zeros(len(pts), dtype=np.int64)
    gr = K._build_grid(pts, gid, 12, cell_fraction)
    cap = len(pts) + 1
    bufs = [np.empty(cap), np.empty(cap), np.empty(cap), np.empty(cap, dtype=np.int64)]
    for _ in range(40):
        lo = rng.uniform(-45, 40, 3)
        hi = lo + rng.uniform(0, 8, 3) * (rng.random() < 0.7)  # some boxes are single points
        r = rng.uniform(0.5, 25)
        m = K._gather_box(*lo, *hi, r, 0, gr.spos, gr.gorg, gr.gh, gr.gdim, gr.gbase, gr.cstart, *bufs)
        got = gr.sidx[bufs[3][:m]]
        dist = np.linalg.norm(np.maximum(np.maximum(lo - pts, pts - hi), 0.0), axis=1)
        assert len(np.unique(got)) == m
        assert set(np.flatnonzero(dist <= r)) <= set(got.tolist())
        assert np.all(dist[got] <= r + 1e-5)
