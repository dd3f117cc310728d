"""3D grain statistics (fast vs plain twin, known ellipsoids) and 2D section helpers."""

import numpy as np
import pytest

from nmc_dataset import testing
from nmc_dataset.calibration import _descriptors as De
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
