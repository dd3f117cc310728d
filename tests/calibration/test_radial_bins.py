"""Tests of nmc_dataset.calibration._radial_bins: descriptors per shell of normalised radius, and a depth trend
they detect where the pooled descriptors of the section hide it."""

import numpy as np
import pytest

from nmc_dataset.calibration import _descriptors as De
from nmc_dataset.calibration._radial_bins import (
    pooled_bins,
    radial_bin_descriptors,
    radial_bin_edges,
    radial_bin_summary,
)
from nmc_dataset.compare import distribution_distances
from nmc_dataset.synthetic._ebsd import depth_teacher_gbpd, radial_teacher_gbpd


def test_grains_go_to_the_shell_of_their_centroid():
    lab = np.zeros((61, 61), np.int64)
    c = (30.0, 30.0)
    lab[29:32, 29:32] = 1  # centre: rho 0
    lab[30, 45:50] = 2  # centroid x = 47 -> rho 17 / 30 = 0.57
    lab[10:12, 55:59] = 3  # rho ~ 0.99 (outer)
    lab[0, 0:3] = 4  # 3 px, below the detection limit
    bins = radial_bin_descriptors(lab, c, 30.0, bins=3, min_area_px=4)
    assert [len(b["area_px"]) for b in bins] == [1, 1, 1]
    assert bins[0]["area_px"].tolist() == [9.0] and bins[1]["area_px"].tolist() == [5.0]
    assert bins[2]["area_px"].tolist() == [8.0]
    # chords follow their grain: grain 2 has one row chord of 5 and five column chords of 1
    assert sorted(bins[1]["chord_px"].tolist()) == [1.0] * 5 + [5.0]
    assert sum(len(b["chord_px"]) for b in bins) == 6 + 6 + 6  # grain 4's chords are dropped
    np.testing.assert_allclose(radial_bin_edges(3), [0, 1 / 3, 2 / 3, 1])
    rows = radial_bin_summary(bins)
    assert rows[0]["n_grains"] == 1 and rows[0]["median_area_px"] == 9.0
    with pytest.raises(ValueError):
        radial_bin_descriptors(lab, c, 0.0)


def _sections(depth: bool, seed: int, n: int = 4, radius: float = 40.0):
    teacher = depth_teacher_gbpd if depth else radial_teacher_gbpd

    def draw(rng, lo, hi):
        return teacher(rng, radius_px=radius, margin_px=16.0)

    secs = De.model_sections(draw, np.random.default_rng(seed), n, radius)
    whole = De.pooled(De.section_descriptors(lab, c, 5) for lab, c in secs)
    return whole, pooled_bins(radial_bin_descriptors(lab, c, radius, min_area_px=5) for lab, c in secs)


def test_inner_shell_tells_a_depth_trend_from_a_uniform_teacher():
    """Teacher with equiaxed core grains vs the uniform radial teacher: the inner shell's η and α differ
    by several times the teacher-vs-teacher distance."""
    plain_a, bins_a = _sections(False, 1)
    plain_b, bins_b = _sections(False, 2)
    depth, bins_d = _sections(True, 3)
    for k in ("elongation", "alpha_rad"):
        noise = distribution_distances(bins_a[0][k], bins_b[0][k])["wasserstein1"]
        trend = distribution_distances(bins_a[0][k], bins_d[0][k])["wasserstein1"]
        assert trend > 3.0 * noise, (k, trend, noise)
    # the equiaxed core: rounder and no longer pointing at the centre
    assert np.median(bins_d[0]["elongation"]) < np.median(bins_a[0]["elongation"]) - 0.07
    assert np.nanmedian(bins_d[0]["alpha_rad"]) > np.nanmedian(bins_a[0]["alpha_rad"]) + 0.3
    # the outer shell, where both teachers are radial, stays alike
    out_noise = distribution_distances(bins_a[2]["elongation"], bins_b[2]["elongation"])["wasserstein1"]
    out_trend = distribution_distances(bins_a[2]["elongation"], bins_d[2]["elongation"])["wasserstein1"]
    assert out_trend < 3.0 * max(out_noise, 0.01)
