"""Tests of nmc_dataset.ebsd._reconstruct: misorientation graph labelling, masks, ARI."""

from collections import deque

import numpy as np
import pytest

from nmc_dataset.ebsd._orientation import perturb, qmul, random_quaternions, symmetry_ops
from nmc_dataset.ebsd._reconstruct import (
    dilate_grains,
    label_by_misorientation,
    particle_mask,
    reconstruct_grains,
    relabel_by_first_appearance,
)
from nmc_dataset.testing import adjusted_rand_index, contingency, misorientation_angle_bruteforce


def test_ari_hand_computed_case():
    a = [0, 0, 0, 1, 1, 1]
    b = [0, 0, 1, 1, 2, 2]
    # contingency [[2, 1, 0], [0, 1, 2]]: sum C(nij,2) = 2, rows 3+3 = 6, cols 1+1+1 = 3, C(6,2) = 15
    # E = 6*3/15 = 1.2, max = (6+3)/2 = 4.5, ARI = (2 - 1.2)/(4.5 - 1.2) = 0.8/3.3
    assert contingency(a, b).tolist() == [[2, 1, 0], [0, 1, 2]]
    assert adjusted_rand_index(a, b) == pytest.approx(0.8 / 3.3, abs=1e-12)
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_index(b, a), abs=1e-12)


def test_ari_invariances(rng):
    a = rng.integers(0, 30, 5000)
    perm = rng.permutation(30) + 100
    assert adjusted_rand_index(a, perm[a]) == pytest.approx(1.0)
    assert abs(adjusted_rand_index(a, rng.integers(0, 30, 5000))) < 0.01
    assert adjusted_rand_index([1, 1], [2, 2]) == 1.0


def _slow_labels(quat, phase, valid, ops, thr, min_px):
    """Plain flood fill with the all-pairs brute-force misorientation: the slow twin."""
    ny, nx = phase.shape
    lab = np.zeros((ny, nx), np.int64)
    nxt = 0
    for y0 in range(ny):
        for x0 in range(nx):
            if not valid[y0, x0] or lab[y0, x0]:
                continue
            nxt += 1
            lab[y0, x0] = nxt
            todo = deque([(y0, x0)])
            while todo:
                y, x = todo.popleft()
                for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                    v, u = y + dy, x + dx
                    if 0 <= v < ny and 0 <= u < nx and valid[v, u] and not lab[v, u] and phase[v, u] == phase[y, x]:
                        ang = misorientation_angle_bruteforce(quat[y, x], quat[v, u], ops[phase[y, x]])[0]
                        if ang < thr:
                            lab[v, u] = nxt
                            todo.append((v, u))
    return relabel_by_first_appearance(lab, min_px)


def _blocky_map(rng, shape=(24, 28), n=8, noise_deg=1.5, group="-3m"):
    seeds = rng.uniform(0, 1, (n, 2)) * shape
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    truth = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, -1) + 1
    gq = random_quaternions(rng, n + 1)
    ops = symmetry_ops(group)
    q = perturb(gq[truth], rng, np.radians(noise_deg))
    q = qmul(ops[rng.integers(0, len(ops), size=shape)], q)  # symmetric descriptions, as instruments report
    return truth, q


def test_fast_labelling_equals_flood_fill_twin(rng):
    for _ in range(3):
        truth, q = _blocky_map(rng)
        phase = np.where(rng.uniform(size=truth.shape) < 0.1, 2, 1)  # two phases interleaved
        valid = rng.uniform(size=truth.shape) > 0.1
        ops = {1: symmetry_ops("-3m"), 2: symmetry_ops("m-3m")}
        for thr_deg, min_px in ((5.0, 1), (3.0, 4)):
            fast = label_by_misorientation(q, phase, valid, ops, np.radians(thr_deg), min_px)
            slow = _slow_labels(q, phase, valid, ops, np.radians(thr_deg), min_px)
            assert np.array_equal(fast, slow)


def test_labelling_recovers_voronoi_grains(rng):
    truth, q = _blocky_map(rng, shape=(60, 60), n=20, noise_deg=0.5)
    valid = np.ones(truth.shape, bool)
    lab = label_by_misorientation(q, np.ones(truth.shape, int), valid, {1: symmetry_ops("-3m")}, np.radians(5))
    assert adjusted_rand_index(lab, truth) > 0.99
    # with symmetry ignored, the symmetric descriptions shatter every grain
    lab1 = label_by_misorientation(q, np.ones(truth.shape, int), valid, {1: symmetry_ops("1")}, np.radians(5))
    assert lab1.max() > 10 * truth.max()


def test_relabel_sequential_and_small_grains():
    lab = np.array([[5, 5, 0, 9], [2, 5, 9, 9], [2, 0, 0, 7]])
    out = relabel_by_first_appearance(lab, min_size=2)
    assert out.tolist() == [[1, 1, 0, 2], [3, 1, 2, 2], [3, 0, 0, 0]]


def test_particle_mask_fills_holes_and_keeps_largest():
    m = np.zeros((20, 20), bool)
    m[2:15, 2:15] = True
    m[6:9, 6:9] = False  # a hole (unindexed pixels inside the particle)
    m[18:20, 18:20] = True  # debris
    pm = particle_mask(m)
    assert pm[7, 7] and not pm[19, 19] and pm.sum() == 13 * 13


def test_reconstruct_synthetic_scan_in_memory(rng):
    from nmc_dataset.io._ebsd import NMC811, EbsdScan
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd, slice_labels, synthetic_scan

    g = radial_teacher_gbpd(rng, radius_px=40.0)
    s = slice_labels(g, 0.0, 40.0)
    sc = synthetic_scan(s.labels, s.mask, rng)
    scan = EbsdScan(
        path=None,
        format="ang",
        euler_rad=sc.euler_rad,
        phase=sc.phase,
        ci=sc.ci,
        iq=sc.iq,
        indexed=sc.phase > 0,
        step_um=(0.05, 0.05),
        phases={1: NMC811},
    )
    gm = reconstruct_grains(scan, min_ci=0.1, min_grain_px=5)
    sel = (gm.labels > 0) & (s.labels > 0)
    assert adjusted_rand_index(gm.labels[sel], s.labels[sel]) >= 0.95
    assert sel.sum() > 0.8 * s.mask.sum()
    assert np.array_equal(gm.mask, s.mask)
    np.testing.assert_allclose(gm.center_px, s.center_px, atol=0.5)
    # mean orientations match the true grain orientations (0.5 deg pixel noise)
    from nmc_dataset.ebsd._orientation import misorientation_angle

    for lab in range(1, gm.n_grains + 1, 7):
        true_lab = np.bincount(s.labels[gm.labels == lab]).argmax()
        ang = misorientation_angle(sc.grain_quat[true_lab], gm.mean_orientation[lab], "-3m")
        assert np.degrees(ang) < 0.5
    # given centre is used as is
    gm2 = reconstruct_grains(scan, center_px=(10.0, 12.0))
    assert gm2.center_px.tolist() == [10.0, 12.0]


def _slow_nearest_distance(labels, y, x):
    yy, xx = np.nonzero(labels)
    return float(np.sqrt(((yy - y) ** 2 + (xx - x) ** 2).min()))


@pytest.mark.parametrize("reach", [1.0, 2.0, np.inf])
def test_dilation_matches_plain_nearest_pixel_twin(rng, reach):
    labels = rng.integers(1, 6, (20, 23)) * (rng.random((20, 23)) < 0.3)
    mask = np.ones(labels.shape, bool)
    mask[:3] = False
    out = dilate_grains(labels, mask, reach)
    assert np.array_equal(out[labels > 0], labels[labels > 0])
    assert np.all(out[~mask & (labels == 0)] == 0)
    for y, x in zip(*np.nonzero(mask & (labels == 0))):
        d = _slow_nearest_distance(labels, y, x)
        if d > reach:
            assert out[y, x] == 0
        else:  # the label of one of the nearest assigned pixels (ties may go either way)
            yy, xx = np.nonzero(labels == out[y, x])
            assert np.sqrt(((yy - y) ** 2 + (xx - x) ** 2).min()) == pytest.approx(d)


def test_dilation_keeps_small_grains_that_lost_junction_pixels():
    from nmc_dataset.io._ebsd import NMC811, EbsdScan

    # a 2x3 grain (6 px) inside a large one; two of its pixels have a low CI
    euler = np.zeros((12, 12, 3))
    euler[4:6, 4:7] = [1.0, 0.6, 0.3]
    ci = np.full((12, 12), 0.9)
    ci[4, 4] = ci[5, 6] = 0.01
    scan = EbsdScan(
        path=None,
        format="ang",
        euler_rad=euler,
        phase=np.ones((12, 12), np.int64),
        ci=ci,
        iq=np.ones((12, 12)),
        indexed=np.ones((12, 12), bool),
        step_um=(0.05, 0.05),
        phases={1: NMC811},
    )
    plain = reconstruct_grains(scan, min_grain_px=5)
    dilated = reconstruct_grains(scan, min_grain_px=5, dilate_px=2)
    assert plain.n_grains == 1  # 4 confident pixels < 5: dropped
    assert dilated.n_grains == 2
    small = dilated.labels[4, 5]
    # the label image keeps the grain's own confident pixels; the fit fills the rest
    assert (dilated.labels == small).sum() == 4 and dilated.labels[4, 4] == 0
    assert np.isfinite(dilated.mean_orientation[small]).all()
    assert reconstruct_grains(scan, min_grain_px=5, dilate_px=0).labels.tolist() == plain.labels.tolist()
