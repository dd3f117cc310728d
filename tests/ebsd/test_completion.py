"""Tests of nmc_dataset.ebsd._completion: bridging fragments across unindexed gaps, shape-aware filling,
and the completed map against the truth of synthetic scans."""

import itertools

import numpy as np
import pytest

from nmc_dataset.ebsd._completion import bridge_fragments, bridge_pairs, complete_grains, shape_fill
from nmc_dataset.ebsd._morphology import grain_descriptors
from nmc_dataset.ebsd._orientation import euler_to_quat, qmul, random_quaternions, rotvec_to_quat, symmetry_ops
from nmc_dataset.ebsd._reconstruct import dilate_grains, label_by_misorientation, reconstruct_grains
from nmc_dataset.synthetic._ebsd import INSTRUMENTS, radial_teacher_gbpd, slice_labels, synthetic_scan
from nmc_dataset.testing import adjusted_rand_index


def _slow_bridge_pairs(labels, gap_px):
    """Slow twin: every pixel pair within reach, every shortest 4-path checked one by one."""
    ny, nx = labels.shape
    out = set()
    reach = gap_px + 1
    for y, x in zip(*np.nonzero(labels)):
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                if abs(dy) + abs(dx) > reach or (dy, dx) == (0, 0):
                    continue
                v, u = y + dy, x + dx
                if not (0 <= v < ny and 0 <= u < nx) or labels[v, u] == 0 or labels[v, u] == labels[y, x]:
                    continue
                steps = [(int(np.sign(dy)), 0)] * abs(dy) + [(0, int(np.sign(dx)))] * abs(dx)
                for order in set(itertools.permutations(steps)):
                    py, px, ok = y, x, True
                    for s in order[:-1]:
                        py, px = py + s[0], px + s[1]
                        ok &= labels[py, px] == 0
                    if ok:
                        a, b = sorted((int(labels[y, x]), int(labels[v, u])))
                        out.add((a, b))
                        break
    return sorted(out)


@pytest.mark.parametrize("gap", [0, 1, 3])
def test_bridge_pairs_matches_slow_twin_on_random_maps(gap):
    rng = np.random.default_rng(gap)
    for _ in range(3):
        lab = rng.integers(1, 6, size=(14, 17))
        lab[rng.uniform(size=lab.shape) < 0.45] = 0
        got = [tuple(p) for p in bridge_pairs(lab, gap).tolist()]
        assert got == _slow_bridge_pairs(lab, gap)


def test_bridge_pairs_needs_an_open_path():
    lab = np.zeros((5, 12), np.int64)
    lab[:, 0:3] = 1
    lab[:, 6:9] = 2  # three empty columns between 1 and 2
    assert bridge_pairs(lab, 3).tolist() == [[1, 2]]
    assert bridge_pairs(lab, 2).tolist() == []
    lab[:, 4] = 3  # a third grain in the gap blocks the bridge 1-2
    assert bridge_pairs(lab, 3).tolist() == [[1, 3], [2, 3]]


def _two_fragments(rng, same: bool):
    """A grain cut by a 2-px unindexed gap (or two grains of different orientation)."""
    lab = np.zeros((8, 14), np.int64)
    lab[:, :6] = 1
    lab[:, 8:] = 2
    qa = random_quaternions(rng, 1)[0]
    qb = qa if same else random_quaternions(rng, 1)[0]
    quat = np.where((lab == 1)[..., None], qa, qb)
    quat = qmul(rotvec_to_quat(rng.normal(scale=np.radians(0.5), size=lab.shape + (3,))), quat)
    return lab, quat


def test_bridge_fragments_merges_only_agreeing_orientations():
    rng = np.random.default_rng(3)
    ops = {1: symmetry_ops("-3m")}
    lab, quat = _two_fragments(rng, same=True)
    phase = np.ones(lab.shape, np.int64)
    merged = bridge_fragments(lab, quat, phase, ops, np.radians(5))
    assert set(np.unique(merged)) == {0, 1}
    lab, quat = _two_fragments(rng, same=False)
    assert set(np.unique(bridge_fragments(lab, quat, phase, ops, np.radians(5)))) == {0, 1, 2}
    # a symmetry-equivalent orientation is the same crystal: it merges
    lab, quat = _two_fragments(rng, same=True)
    quat[lab == 2] = qmul(symmetry_ops("-3m")[3], quat[lab == 2])
    assert set(np.unique(bridge_fragments(lab, quat, phase, ops, np.radians(5)))) == {0, 1}
    # different phases never merge
    phase[lab == 2] = 2
    ops[2] = symmetry_ops("-3m")
    assert set(np.unique(bridge_fragments(lab, quat, phase, ops, np.radians(5)))) == {0, 1, 2}


def _slow_shape_fill_step(lab, current, mask, reach):
    """Slow twin of one shape_fill iteration: per pixel, per candidate, the ellipse distance."""
    d = grain_descriptors(current, (0.0, 0.0))
    mom = {
        int(k): (
            d["centroid_x_px"][i],
            d["centroid_y_px"][i],
            d["axis1_x"][i],
            d["axis1_y"][i],
            d["eig1_px2"][i],
            max(d["eig2_px2"][i], 1 / 12),
        )
        for i, k in enumerate(d["label"])
    }
    out = current.copy()
    ny, nx = lab.shape
    for y, x in zip(*np.nonzero(mask & (lab == 0))):
        best, best_d = None, np.inf
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                g = int(lab[min(max(y + dy, 0), ny - 1), min(max(x + dx, 0), nx - 1)])
                if g == 0:
                    continue
                cx, cy, ax, ay, l1, l2 = mom[g]
                u = (x - cx) * ax + (y - cy) * ay
                v = -(x - cx) * ay + (y - cy) * ax
                dist = u * u / (4 * l1) + v * v / (4 * l2)
                if dist < best_d - 1e-12:
                    best, best_d = g, dist
        if best is not None:
            out[y, x] = best
    return out


def test_shape_fill_matches_slow_twin_and_keeps_assigned_pixels():
    rng = np.random.default_rng(5)
    seeds = rng.uniform(0, 30, (9, 2))
    yy, xx = np.mgrid[0:30, 0:30]
    truth = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + 0.3 * (xx[..., None] - seeds[:, 1]) ** 2, -1) + 1
    lab = np.where(rng.uniform(size=truth.shape) < 0.25, 0, truth)
    mask = np.ones(truth.shape, bool)
    mask[:3] = False
    got = shape_fill(lab, mask, reach_px=3, iterations=2)
    slow = _slow_shape_fill_step(lab, _slow_shape_fill_step(lab, dilate_grains(lab, mask, np.inf), mask, 3), mask, 3)
    # the moment sums differ in rounding only: the labels agree except for exact ties (none expected)
    assert (got == slow).mean() > 0.999
    keep = lab > 0
    assert (got[keep] == lab[keep]).all()
    assert (got[mask] > 0).all() and (got[~mask] == dilate_grains(lab, mask, np.inf)[~mask]).all()


def _teacher_scan(seed, instrument, radius=36.0):
    rng = np.random.default_rng(seed)
    g = radial_teacher_gbpd(rng, radius_px=radius, margin_px=16.0)
    truth = slice_labels(g, 0.0, radius, normal=rng.normal(size=3))
    p = INSTRUMENTS[instrument]
    scan = synthetic_scan(
        truth.labels,
        truth.mask,
        rng,
        noise_deg=p["noise_deg"],
        junction_low_ci=p["low_ci"][0],
        boundary_low_ci=p["low_ci"][1],
        random_low_ci=p["low_ci"][2],
        misindex_fraction=p["misindex_fraction"],
    )
    return truth, scan


@pytest.mark.parametrize("instrument", ["default", "harsh"])
def test_completed_map_is_closer_to_the_truth_than_nearest_filling(instrument):
    """Closed loop on a teacher section: the completed map keeps more true grains, assigns the lost
    pixels better than nearest-pixel filling and restores the grains' elongation."""
    ops = {1: symmetry_ops("-3m")}
    thr = np.radians(5)
    ari_new, ari_old, n_new, n_old, n_true, d_eta_new, d_eta_old = [], [], 0, 0, 0, [], []
    for seed in range(2):
        truth, scan = _teacher_scan(seed, instrument)
        quat = euler_to_quat(scan.euler_rad.reshape(-1, 3)).reshape(scan.euler_rad.shape[:-1] + (4,))
        valid = truth.mask & (scan.ci >= 0.1)
        regions = label_by_misorientation(quat, scan.phase, valid, ops, thr, 1)
        new = complete_grains(regions, quat, scan.phase, truth.mask, ops, thr, min_grain_px=5)
        old = dilate_grains(label_by_misorientation(quat, scan.phase, valid, ops, thr, 5), truth.mask, np.inf)
        m = truth.mask
        ari_new.append(adjusted_rand_index(new[m], truth.labels[m]))
        ari_old.append(adjusted_rand_index(old[m], truth.labels[m]))
        sizes = np.bincount(truth.labels[m])
        n_true += int((sizes[1:] >= 5).sum())
        n_new += int(new.max())
        n_old += int(old.max())
        dt = grain_descriptors(np.where(m, truth.labels, 0), truth.center_px)
        eta_t = dict(zip(dt["label"], dt["elongation"]))
        for lab, d_eta in ((new, d_eta_new), (old, d_eta_old)):
            d = grain_descriptors(lab, truth.center_px)
            for g, e, a in zip(d["label"], d["elongation"], d["area_px"]):
                t = np.bincount(truth.labels[lab == g]).argmax()
                if a >= 20:
                    d_eta.append(e - eta_t[t])
    assert (lab[truth.mask] > 0).all()
    assert np.mean(ari_new) > np.mean(ari_old) + 0.005
    assert abs(n_new - n_true) < abs(n_old - n_true)
    # nearest-pixel filling cuts the tips of elongated grains (rounder); the completed map does not
    assert np.mean(d_eta_old) < -0.01
    assert abs(np.mean(d_eta_new)) < 0.6 * abs(np.mean(d_eta_old))


def test_reconstruct_grains_fill_options(tmp_path):
    from nmc_dataset.io._ebsd import read_ebsd, write_ang

    truth, scan = _teacher_scan(7, "default", radius=24.0)
    p = write_ang(tmp_path / "s.ang", scan.euler_rad, scan.ci, scan.iq, scan.phase, 0.05)
    s = read_ebsd(p)
    gm = reconstruct_grains(s, min_grain_px=5, fill="shape")
    assert (gm.labels[gm.mask] > 0).all()
    assert np.isfinite(gm.mean_orientation[1:]).all()  # every grain keeps confident pixels
    none = reconstruct_grains(s, min_grain_px=5)
    assert (none.labels[none.mask] == 0).any()
    with pytest.raises(ValueError, match="dilate_px"):
        reconstruct_grains(s, fill="shape", dilate_px=2)
    with pytest.raises(ValueError, match="fill"):
        reconstruct_grains(s, fill="watershed")
