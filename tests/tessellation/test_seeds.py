"""Tests of the Poisson seed process and the ROI window."""

import numpy as np
import pytest
from scipy import stats

from nmc_dataset.tessellation._gbpd import GBPD
from nmc_dataset.tessellation._labels import hard_labels
from nmc_dataset.tessellation._seeds import PoissonSeeds, poisson_seeds, poisson_seeds_near, roi_window


def test_counts_are_poisson():
    """Mean and variance of the count equal mu * vol (dispersion index test, 600 windows)."""
    rng = np.random.default_rng(0)
    mu, lo, hi = 0.0018, [-10.0, -20.0, -15.0], [20.0, 15.0, 30.0]  # vol = 30*35*45 -> mean 85.05
    mean = mu * 30 * 35 * 45
    counts = np.array([len(poisson_seeds(rng, mu, lo, hi)) for _ in range(600)])
    # sample mean: sd = sqrt(mean / 600) ~ 0.38; allow 4 sd
    assert abs(counts.mean() - mean) < 4 * np.sqrt(mean / 600)
    # dispersion test: (n - 1) s^2 / mean ~ chi2(n - 1) for a Poisson count; two-sided 0.1 %
    stat = (len(counts) - 1) * counts.var(ddof=1) / mean
    p = stats.chi2.cdf(stat, len(counts) - 1)
    assert 0.0005 < p < 0.9995, (counts.var(ddof=1), mean)


def test_positions_uniform_and_marks_in_range():
    rng = np.random.default_rng(1)
    s = poisson_seeds(rng, 0.0018, [-128] * 3, [128] * 3)
    assert isinstance(s, PoissonSeeds) and s.dim == 3
    assert abs(len(s) - 0.0018 * 256**3) < 5 * np.sqrt(0.0018 * 256**3)
    assert s.positions.shape == (len(s), 3) and s.noise.shape == (len(s), 2) and s.roll.shape == (len(s),)
    assert (s.positions >= -128).all() and (s.positions <= 128).all()
    assert (s.noise >= 0).all() and (s.noise <= 1).all()
    assert (s.roll >= 0).all() and (s.roll <= np.pi).all()
    for k in range(3):  # Kolmogorov-Smirnov against the uniform law, 0.1 % level
        assert stats.kstest(s.positions[:, k], "uniform", args=(-128, 256)).pvalue > 1e-3
    assert stats.kstest(s.roll, "uniform", args=(0, np.pi)).pvalue > 1e-3
    assert stats.kstest(s.noise.ravel(), "uniform").pvalue > 1e-3
    sub = s.subset(s.positions[:, 0] > 0)
    assert len(sub) == (s.positions[:, 0] > 0).sum()


def test_2d_and_bad_windows():
    rng = np.random.default_rng(2)
    s = poisson_seeds(rng, 0.01, [0, 0], [50, 20])
    assert s.dim == 2 and abs(len(s) - 10) < 15
    assert len(poisson_seeds(rng, 0.0, [0, 0], [5, 5])) == 0
    with pytest.raises(ValueError):
        poisson_seeds(rng, 0.1, [0, 0], [-1, 5])
    with pytest.raises(ValueError):
        poisson_seeds(rng, 0.1, [0, 0, 0], [1, 1])
    with pytest.raises(ValueError):
        poisson_seeds(rng, -1.0, [0, 0], [1, 1])


def test_roi_window():
    yy, xx = np.mgrid[0:32, 0:32]
    roi = np.stack([xx.ravel() + 40.0, yy.ravel() - 16.0, np.zeros(32 * 32)], 1)  # cutout in z = 0
    lo, hi = roi_window(roi, 10.0)
    np.testing.assert_allclose(lo, [30, -26, -10])
    np.testing.assert_allclose(hi, [81, 25, 10])
    lo, hi = roi_window(roi, 100.0, [-128] * 3, [128] * 3)
    np.testing.assert_allclose(lo, [-60, -116, -100])
    np.testing.assert_allclose(hi, [128, 115, 100])
    s = poisson_seeds_near(np.random.default_rng(3), 0.0018, roi, 10.0, [-128] * 3, [128] * 3)
    assert ((s.positions >= [30, -26, -10]) & (s.positions <= [81, 25, 10])).all()
    with pytest.raises(ValueError):
        roi_window(np.zeros((0, 3)), 1.0)


def test_restricted_window_keeps_the_cutout_tessellation():
    """With markers in the generator's ranges, seeds within a 24-pixel margin (3 mean spacings) of a 32 x 32
    cutout give the same hard labels on the cutout as the seeds of the whole window."""
    rng = np.random.default_rng(4)
    s = poisson_seeds(rng, 0.0018, [-128] * 3, [128] * 3)
    n = len(s)
    diag = np.stack([rng.uniform(0.5, 10, n), rng.uniform(10, 50, n), rng.uniform(10, 50, n)], 1)
    g = GBPD(s.positions, diag, rng.uniform(1, 10, n), s.roll)
    yy, xx = np.mgrid[0:32, 0:32]
    roi = np.stack([xx.ravel() + 30.0, yy.ravel() - 16.0, np.zeros(32 * 32)], 1)
    lo, hi = roi_window(roi, 24.0, [-128] * 3, [128] * 3)
    inside = np.all((s.positions >= lo) & (s.positions <= hi), axis=1)
    full = hard_labels(g, roi)
    local = np.flatnonzero(inside)[hard_labels(g.subset(inside), roi)]
    np.testing.assert_array_equal(local, full)
