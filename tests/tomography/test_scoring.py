"""Segmentation scores on constructed cases with known answers, and fast paths against slow twins."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from nmc_dataset.tomography._scoring import (
    _dense_ids,
    confusion,
    inner_surfaces,
    instance_scores,
    phase_topology,
    score_segmentation,
    surface_distances,
)


def _ball(shape, centre, r):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r * r


def test_slabs_give_known_dice_iou_and_surface_distance():
    truth = np.zeros((16, 16, 16), np.uint8)
    pred = np.zeros_like(truth)
    truth[:8] = 1
    pred[:12] = 1
    s = score_segmentation(pred, truth, voxel_size_um=0.5)
    nmc, pore = s["phases"]["nmc"], s["phases"]["pore"]
    assert nmc["dice"] == pytest.approx(2 * 8 / 20) and nmc["iou"] == pytest.approx(8 / 12)
    assert pore["dice"] == pytest.approx(2 * 4 / 12) and pore["iou"] == pytest.approx(4 / 8)
    assert s["voxel_accuracy"] == pytest.approx(12 / 16)
    # binder is absent from both: perfect, and not part of the mean
    assert s["phases"]["binder"]["dice"] == 1.0
    assert s["mean_dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    # surfaces are the planes z = 7 and z = 11 (the volume faces are not surfaces): 4 voxels = 2 µm
    for name in ("nmc", "pore"):
        b = s["phases"][name]["boundary"]
        assert b["assd_um"] == pytest.approx(2.0) and b["hd95_um"] == pytest.approx(2.0)
        assert b["max_um"] == pytest.approx(2.0)
    assert s["phases"]["binder"]["boundary"]["assd_um"] is None
    assert "particles" not in s


def test_confusion_matches_a_loop(rng):
    t = rng.integers(0, 3, (6, 7, 8))
    p = rng.integers(0, 3, (6, 7, 8))
    cm = confusion(t, p, 3)
    for i in range(3):
        for j in range(3):
            assert cm[i, j] == np.sum((t == i) & (p == j))


def test_inner_surfaces_match_erosion_per_label(rng):
    lab = ndimage.zoom(rng.integers(0, 3, (5, 5, 5)), 3, order=0)
    surf = inner_surfaces(lab)
    struct = ndimage.generate_binary_structure(3, 1)
    slow = np.zeros_like(surf)
    for v in np.unique(lab):
        m = lab == v
        slow |= m & ~ndimage.binary_erosion(m, struct, border_value=1)
    assert np.array_equal(surf, slow)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random((14, 15, 16)), 1.5) > 0.5
    b = ndimage.gaussian_filter(rng.random((14, 15, 16)), 1.5) > 0.5
    sa, sb = inner_surfaces(a) & a, inner_surfaces(b) & b
    d_ab, d_ba = surface_distances(sa, sb, spacing=0.3)
    pa, pb = np.argwhere(sa), np.argwhere(sb)
    full = cdist(pa, pb) * 0.3
    assert np.allclose(d_ab, full.min(axis=1))
    assert np.allclose(d_ba, full.min(axis=0))


def test_euler_characteristic_and_components_of_known_shapes():
    shape = (24, 24, 24)
    ball = _ball(shape, (12, 12, 12), 6)
    assert phase_topology(ball)["components"] == 1 and phase_topology(ball)["euler"] == 1
    hollow = ball & ~_ball(shape, (12, 12, 12), 3)  # one cavity: chi = 1 - 0 + 1
    assert phase_topology(hollow)["euler"] == 2
    torus = np.zeros(shape, bool)
    torus[10:14, 4:20, 4:20] = True
    torus[10:14, 8:16, 8:16] = False  # one tunnel: chi = 1 - 1 + 0
    t = phase_topology(torus)
    assert t["components"] == 1 and t["euler"] == 0
    three = _ball(shape, (5, 5, 5), 3) | _ball(shape, (17, 17, 17), 3) | _ball(shape, (5, 17, 5), 3)
    t = phase_topology(three)
    assert t["components"] == 3 and t["euler"] == 3
    assert not any(t["percolates"].values())


def _bridged_slabs(bridge: bool):
    """NMC slabs below and above a pore plane z = 6; an optional one-voxel NMC bridge through it."""
    phase = np.ones((16, 16, 16), np.uint8)
    phase[6] = 0
    if bridge:
        phase[6, 8, 8] = 1
    return phase


def test_a_one_voxel_bridge_that_breaks_percolation_is_detected():
    truth, pred = _bridged_slabs(True), _bridged_slabs(False)
    s = score_segmentation(pred, truth)
    t, p = s["phases"]["nmc"]["topology"]["truth"], s["phases"]["nmc"]["topology"]["pred"]
    assert t["percolates"] == {"z": True, "y": True, "x": True}
    assert p["percolates"] == {"z": False, "y": True, "x": True}
    assert (t["components"], p["components"]) == (1, 2)
    assert t["percolating_fraction"]["z"] == 1.0 and p["percolating_fraction"]["z"] == 0.0
    # one wrong voxel: accuracy barely moves, topology does
    assert s["voxel_accuracy"] == pytest.approx(1 - 1 / 16**3)
    # the pore plane: the bridge punches a hole in it (a tunnel), never a z path
    tp = s["phases"]["pore"]["topology"]
    assert tp["truth"]["euler"] == 0 and tp["pred"]["euler"] == 1
    assert not tp["truth"]["percolates"]["z"] and tp["truth"]["percolates"]["y"]


def test_a_one_voxel_bridge_that_creates_percolation_is_detected():
    s = score_segmentation(_bridged_slabs(True), _bridged_slabs(False))
    t, p = s["phases"]["nmc"]["topology"]["truth"], s["phases"]["nmc"]["topology"]["pred"]
    assert not t["percolates"]["z"] and p["percolates"]["z"]


def test_edge_contact_is_not_a_face_connection():
    phase = np.zeros((8, 8, 8), bool)
    phase[:4, 3, 3] = True
    phase[4:, 4, 4] = True  # meets the first column along an edge only
    t = phase_topology(phase)
    assert t["components"] == 2 and not t["percolates"]["z"]


def test_instances_merge_split_and_match():
    truth = np.zeros((10, 10, 20), np.uint32)
    truth[2:8, 2:8, 2:10] = 1
    truth[2:8, 2:8, 10:18] = 2
    merged = np.where(truth > 0, 7, 0).astype(np.uint32)
    q = instance_scores(truth, merged)
    assert (q["merged_pred"], q["merged_truth"], q["split_truth"], q["matched"]) == (1, 2, 0, 0)
    assert q["merge_ids"] == [7]
    q = instance_scores(merged, truth)  # the same pair read the other way is a split
    assert (q["split_truth"], q["split_pieces"], q["merged_pred"]) == (1, 2, 0)
    assert q["split_ids"] == [7]
    perm = np.array([0, 5, 3], np.uint32)[truth]
    q = instance_scores(truth, perm)
    assert q["matched"] == 2 and q["f1"] == 1.0 and q["mean_matched_iou"] == 1.0
    assert q["split_truth"] == q["merged_pred"] == q["missed"] == q["false"] == 0


def _slow_instance_scores(truth, pred):
    t_ids = [v for v in np.unique(truth) if v]
    p_ids = [v for v in np.unique(pred) if v]
    matched, pieces, absorbed, ious = 0, {t: 0 for t in t_ids}, {p: 0 for p in p_ids}, []
    for t in t_ids:
        mt = truth == t
        for p in p_ids:
            mp = pred == p
            o = np.sum(mt & mp)
            if not o:
                continue
            iou = o / np.sum(mt | mp)
            if iou > 0.5:
                matched += 1
                ious.append(iou)
            if o > 0.5 * mp.sum():
                pieces[t] += 1
            if o > 0.5 * mt.sum():
                absorbed[p] += 1
    return {
        "n_truth": len(t_ids),
        "n_pred": len(p_ids),
        "matched": matched,
        "split_truth": sum(v >= 2 for v in pieces.values()),
        "split_pieces": sum(v for v in pieces.values() if v >= 2),
        "merged_pred": sum(v >= 2 for v in absorbed.values()),
        "merged_truth": sum(v for v in absorbed.values() if v >= 2),
        "mean_matched_iou": float(np.mean(ious)) if ious else 0.0,
    }


def _voronoi(rng, shape, n):
    seeds = rng.random((n, 3)) * np.array(shape)
    grid = np.indices(shape).reshape(3, -1).T
    lab = np.argmin(cdist(grid, seeds), axis=1).reshape(shape) + 1
    lab[rng.random(shape) < 0.05] = 0
    return lab.astype(np.uint32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_instance_scores_match_brute_force_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = _voronoi(rng, (12, 12, 12), 9)
    pred = _voronoi(rng, (12, 12, 12), int(rng.integers(4, 16)))
    fast, slow = instance_scores(truth, pred), _slow_instance_scores(truth, pred)
    for k, v in slow.items():
        assert fast[k] == pytest.approx(v), k
    # huge, sparse ids take the sorting path and give the same answer
    big = np.where(pred > 0, pred.astype(np.int64) * 10**9 + 17, 0)
    assert instance_scores(truth, big)["matched"] == fast["matched"]
    assert instance_scores(truth, big)["split_pieces"] == fast["split_pieces"]


def test_dense_ids_paths_agree(rng):
    lab = rng.integers(0, 5, 200) * 3
    a = _dense_ids(lab)
    b = _dense_ids(np.where(lab > 0, lab + 10**10, 0))
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert list(a[0]) == sorted(set(lab) | {0})


def test_a_perfect_segmentation_scores_perfectly():
    from nmc_dataset.tomography._phantom import phantom_ct_arrays

    a = phantom_ct_arrays(3, size=40, n_particles=30, mean_radius_vox=5)
    s = score_segmentation(a["phase"], a["phase"], a["particle"], a["particle"])
    assert s["mean_dice"] == 1.0 and s["voxel_accuracy"] == 1.0
    for v in s["phases"].values():
        assert v["boundary"]["assd_um"] in (0.0, None)
        assert v["topology"]["truth"] == v["topology"]["pred"]
    q = s["particles"]
    assert q["f1"] == 1.0 and q["matched"] == q["n_truth"] == int(a["particle"].max())


@pytest.mark.parametrize(
    ("band", "far_band", "max_far"), [(0, 0, 10**9), (1, 0, 10**9), (2, 4, 10**9), (5, 0, 10**9), (1, 3, 0), (0, 0, 0)]
)
def test_every_search_path_gives_the_brute_force_distances(band, far_band, max_far, rng):
    # ball search only, ball + tree, two balls + tree, distance transform for the far voxels
    a = ndimage.gaussian_filter(rng.random((20, 18, 16)), 2.0) > 0.55
    b = ndimage.gaussian_filter(rng.random((20, 18, 16)), 2.0) > 0.5
    b[:, :, :6] = False  # far voxels: a surface only on one side
    sa, sb = inner_surfaces(a) & a, inner_surfaces(b) & b
    full = cdist(np.argwhere(sa), np.argwhere(sb))
    d_ab, d_ba = surface_distances(sa, sb, band=band, far_band=far_band, max_far=max_far)
    assert np.allclose(d_ab, full.min(axis=1)) and np.allclose(d_ba, full.min(axis=0))
