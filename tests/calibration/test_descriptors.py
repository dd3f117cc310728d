"""3D grain statistics (fast vs plain twin, known ellipsoids) and 2D section helpers."""

import numpy as np
import pytest

from nmc_dataset import testing
from nmc_dataset.calibration import _descriptors as De
from nmc_dataset.errors import InputError
from nmc_dataset.tessellation._gbpd import GBPD
from nmc_dataset.tessellation._labels import hard_labels_grid


def _ellipsoid(shape, centre_xyz, axes, semi):
    """Label 1 inside the ellipsoid with unit axes (rows of ``axes``) and semi-axes ``semi``."""
    zz, yy, xx = np.indices(shape)
    p = np.stack([xx, yy, zz], -1) - np.asarray(centre_xyz, float)
    q = p @ np.asarray(axes, float).T / np.asarray(semi, float)
    return (np.sum(q * q, -1) <= 1).astype(np.int64)


def test_known_ellipsoids():
    shape = (40, 40, 60)
    # major axis along x at centroid x = +15 from the volume's centre: points at the centre
    origin = (-29.5, -19.5, -19.5)
    e = _ellipsoid(shape, (44.5, 19.5, 19.5), np.eye(3), (12, 5, 4))
    s = De.grain_stats_3d(e, origin_px=origin, min_voxels=1)
    assert s["volume_px"][0] == pytest.approx(4 / 3 * np.pi * 12 * 5 * 4, rel=0.03)
    # solid ellipsoid: variance along a semi-axis a is a^2 / 5
    assert s["eig1_px2"][0] == pytest.approx(144 / 5, rel=0.05)
    assert s["eig3_px2"][0] == pytest.approx(16 / 5, rel=0.08)
    assert s["radial_alignment"][0] == pytest.approx(1.0, abs=1e-3)
    assert s["elongation"][0] == pytest.approx(1 - 4 / 12, abs=0.03)
    # the same ellipsoid turned tangential (major axis along y): alignment ~ 0
    t = _ellipsoid(shape, (44.5, 19.5, 19.5), [[0, 1, 0], [1, 0, 0], [0, 0, 1]], (12, 5, 4))
    assert De.grain_stats_3d(t, origin_px=origin, min_voxels=1)["radial_alignment"][0] < 1e-3


def test_fast_matches_plain_twin_and_border_filter(rng):
    n = 60
    g = GBPD(rng.uniform(-15, 15, (n, 3)), rng.uniform(0.3, 2, (n, 3)), rng.uniform(1, 10, n), rng.uniform(0, np.pi, n))
    lab = hard_labels_grid(g, (24, 26, 28)) + 1
    origin = (-13.5, -12.5, -11.5)
    fast = De.grain_stats_3d(lab, origin_px=origin, exclude_border=False, min_voxels=1)
    slow = testing.grain_stats_3d_reference(lab, origin_px=origin)
    np.testing.assert_array_equal(fast["label"], slow["label"])
    for k in ("volume_px", "eig1_px2", "eig3_px2", "radial_alignment"):
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-9, atol=1e-9)
    inner = De.grain_stats_3d(lab, origin_px=origin)
    touching = set(
        np.unique(
            np.concatenate(
                [
                    lab[0].ravel(),
                    lab[-1].ravel(),
                    lab[:, 0].ravel(),
                    lab[:, -1].ravel(),
                    lab[:, :, 0].ravel(),
                    lab[:, :, -1].ravel(),
                ]
            )
        )
    )
    assert set(inner["label"]) == set(fast["label"]) - touching


def test_section_descriptors_and_sections_of_a_gbpd(rng):
    n = 400
    s = rng.uniform(-45, 45, (n, 3))
    g = GBPD(s, np.column_stack([np.full(n, 0.15), np.ones((n, 2))]), rng.uniform(1, 10, n), rng.uniform(0, np.pi, n))
    lab, c = De.gbpd_section_labels(g, 30.0)
    d = De.section_descriptors(lab, c)
    assert set(d) == set(De.DESCRIPTORS_2D)
    assert d["area_px"].sum() == (lab > 0).sum()
    # radial cells: in a central section alpha concentrates near 0 (mean well below pi/4)
    assert np.nanmean(d["alpha_rad"]) < 0.5
    secs = De.model_sections(lambda r, lo, hi: g, rng, 2, 30.0, height_px=10.0)
    lab2, _ = secs[0]
    assert (lab2 > 0).sum() == pytest.approx(np.pi * (900 - 100), rel=0.05)


def test_detection_limit_drops_small_grains_and_their_chords():
    lab = np.zeros((12, 12), int)
    lab[1:9, 1:9] = 1  # 64 px
    lab[10, 1:4] = 2  # 3 px
    lab[1:3, 10] = 3  # 2 px
    full = De.section_descriptors(lab, (6.0, 6.0))
    cut = De.section_descriptors(lab, (6.0, 6.0), min_area_px=5)
    assert sorted(full["area_px"]) == [2, 3, 64] and cut["area_px"].tolist() == [64]
    # grain 1: 8 row chords + 8 column chords of length 8; grains 2 and 3 add 1 + 3 and 2 + 1 chords
    assert len(full["chord_px"]) == 16 + 4 + 3 and cut["chord_px"].tolist() == [8.0] * 16


def test_shell_statistics_and_depth_aware_model_sections():
    """3D statistics per shell of the centroid's normalised radius, and a depth-aware model's sections
    drawn for the particle radius asked for."""
    import torch

    from nmc_dataset.calibration._generator import GNet
    from nmc_dataset.calibration._model import GrainModel

    stats = {
        "centroid_x_px": np.array([1.0, 15.0, 25.0, 29.0, 45.0]),
        "centroid_y_px": np.zeros(5),
        "centroid_z_px": np.zeros(5),
        "volume_px": np.array([10.0, 20.0, 30.0, 50.0, 99.0]),
        "radial_alignment": np.array([np.nan, 0.5, 0.9, 0.7, 1.0]),
        "elongation": np.array([0.1, 0.2, 0.3, 0.5, 0.9]),
    }
    rows = De.shell_stats_3d(stats, 30.0)
    assert [r["n_grains"] for r in rows] == [1, 1, 2]  # the grain at 45 px lies outside the particle
    assert rows[0]["mean_radial_alignment"] is None and rows[1]["median_volume_px"] == 20.0
    assert rows[2]["median_volume_px"] == 40.0 and abs(rows[2]["mean_radial_alignment"] - 0.8) < 1e-12
    torch.manual_seed(0)
    net = GNet(hidden=(8,), depth_aware=True)
    with torch.no_grad():
        net.body[0].weight[:, -1].mul_(50)
    model = GrainModel(net, 0.002, 0.05, reference_radius_px=500.0)
    (a, _), (b, _) = (De.model_sections(model, np.random.default_rng(1), 1, r)[0] for r in (20.0, 20.0))
    np.testing.assert_array_equal(a, b)
    default = model.sample(np.random.default_rng(1), [-21, -21, -1], [21, 21, 1])
    asked = model.sample(np.random.default_rng(1), [-21, -21, -1], [21, 21, 1], radius=20.0)
    assert np.abs(default.diag - asked.diag).max() > 1e-3
    lab, _ = De.gbpd_section_labels(asked, 20.0)
    np.testing.assert_array_equal(a, lab)  # model_sections drew for R = 20, not the stored 500
    study = De.cut_height_study(model, np.random.default_rng(2), 20.0, (0.0, 0.5), 1)
    for h in study["heights"]:
        assert len(h["radial_bins"]) == 3
    # a section at half the radius holds no grain of the inner shell (its 3D radius is >= R/2)
    assert study["heights"][1]["radial_bins"][0]["n_grains"] == 0
    assert study["heights"][0]["radial_bins"][0]["n_grains"] > 0


def test_confident_pixel_criterion_on_a_hand_made_map():
    lab = np.zeros((12, 12), int)
    lab[1:9, 1:9] = 1  # 64 px
    lab[10, 1:8] = 2  # 7 px
    conf = lab > 0
    conf[10, 1:6] = False  # grain 2 keeps 2 confident pixels
    k3 = De.section_descriptors(lab, (6.0, 6.0), 5, conf, 3)
    k2 = De.section_descriptors(lab, (6.0, 6.0), 5, conf, 2)
    assert k3["area_px"].tolist() == [64] and sorted(k2["area_px"]) == [7, 64]
    assert len(k3["chord_px"]) == 16  # grain 2's chords leave with it
    # no confident map, or k = 0: the criterion is off
    for d in (De.section_descriptors(lab, (6.0, 6.0), 5, None, 3), De.section_descriptors(lab, (6.0, 6.0), 5, conf, 0)):
        assert sorted(d["area_px"]) == [7, 64]


def _disc_fit(sid, rng, size=71):
    """A SectionFit of a 2D radial GBPD in a disc."""
    from nmc_dataset.calibration._fit2d import SectionFit

    n = 250
    c = (size - 1) / 2
    g = GBPD(
        rng.uniform(-c - 10, c + 10, (n, 2)), np.column_stack([np.full(n, 0.2), np.ones(n)]), rng.uniform(1, 10, n)
    )
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= (c - 2) ** 2
    return SectionFit(sid, g, 0.05, 0.99, mask, np.array([c, c]), np.arange(1, n + 1))


def test_comparison_at_the_instrument_limit(tmp_path):
    """Measured sections that lost pixels: the loss is calibrated and applied to the other side's
    sections; without lost pixels (or with the limit off) both sides are as before, and
    describe-grains records the limit (detection_limit.json) only when it applies."""
    import dataclasses
    import json

    from nmc_dataset.calibration._fit2d import write_tessellations
    from nmc_dataset.calibration._generator import GNet
    from nmc_dataset.calibration._model import GrainModel
    from nmc_dataset.ebsd._detection import simulate_confident
    from nmc_dataset.synthetic._yardsticks import teacher_sampler

    rng = np.random.default_rng(4)
    fits = [_disc_fit("a", rng), _disc_fit("b", rng)]
    lossy = [
        dataclasses.replace(f, confident=simulate_confident(f.label_image(), f.mask, (1.0, 0.02, 0.01), rng))
        for f in fits
    ]
    sims = De.model_sections(teacher_sampler(30.0), np.random.default_rng(1), 2, 30.0)
    state = np.random.default_rng(9).bit_generator.state

    def run(f, k):
        r = np.random.default_rng(9)
        out = De.compare_at_limit(f, sims, r, 5, k)
        return out, r.bit_generator.state

    (m0, s0, l0), st0 = run(fits, 3)
    (m1, s1, l1), st1 = run(lossy, 0)
    (m2, s2, l2), _ = run(lossy, 3)
    assert not l0.active and not l1.active and st0 == state and st1 == state  # nothing drawn
    for key in De.DESCRIPTORS_2D:
        np.testing.assert_array_equal(m0[key], m1[key])
        np.testing.assert_array_equal(s0[key], s1[key])
    assert l2.active and l2.rates[0] > 0.9 and l2.min_confident_px == 3
    assert len(m2["area_px"]) < len(m0["area_px"])  # grains of < 3 confident px left out
    assert len(s2["area_px"]) < len(s0["area_px"])  # the other side lost its junction-only grains too
    # describe-grains writes the limit it applied
    model = GrainModel(gnet=GNet(hidden=(8,)), intensity_per_px3=0.0018, pixel_size_um=0.05).write(tmp_path / "gm")
    tess = write_tessellations(lossy, tmp_path / "lossy")
    De.describe_grains(model, tess, tmp_path / "rep", samples=2, radius_px=30.0, heights=(0.0,))
    lim = json.loads((tmp_path / "rep" / "detection_limit.json").read_text())
    assert lim["active"] and lim["min_confident_px"] == 3 and lim["measured_low_ci_rates"]["junction"] > 0.9
    # the radial shells and the cut-height study are at the same limit: fewer grains on both
    # sides of the shells than with the limit off, and the study records the limit it drew
    De.describe_grains(model, tess, tmp_path / "off", samples=2, radius_px=30.0, heights=(0.0,), min_confident_px=0)

    def shells(rep, side):
        rows = json.loads((tmp_path / rep / "radial_bins.json").read_text())["shells"]
        return sum(r[side]["n_grains"] for r in rows)

    for side in ("measured", "model"):
        assert 0 < shells("rep", side) < shells("off", side)
    study = json.loads((tmp_path / "rep" / "cut_height.json").read_text())
    assert study["detection_limit"]["active"] and study["min_area_px"] == 5
    off = json.loads((tmp_path / "off" / "cut_height.json").read_text())
    assert off["detection_limit"] is None
    assert study["heights"][0]["n_grains"] < off["heights"][0]["n_grains"]
    with pytest.raises(InputError, match="--min-confident-px"):
        De.describe_grains(model, tess, tmp_path / "r_bad", min_confident_px=-1, samples=2)
