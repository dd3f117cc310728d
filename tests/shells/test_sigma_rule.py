"""The smoothing-σ rule of the sub-voxel measurement: its noise factor against filtered noise, its optimum."""

import numpy as np
import pytest
from scipy import ndimage

from nmc_dataset.shells._sigma_rule import SIGMA_RANGE, noise_factor, sigma_error, suggest_sigma


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0, 1.5, 2.0])
def test_noise_factor_is_that_of_scipys_gaussian_filter(sigma):
    x = np.random.default_rng(0).standard_normal((72, 72, 72))
    inner = ndimage.gaussian_filter(x, sigma)[12:-12, 12:-12, 12:-12]  # away from the reflecting border
    assert inner.std() == pytest.approx(noise_factor(sigma), rel=0.03)
    if sigma >= 1:
        assert noise_factor(sigma) == pytest.approx((8 * np.pi**1.5 * sigma**3) ** -0.5, rel=0.01)


def test_rule_minimises_the_error_and_grows_with_particle_size():
    got = [suggest_sigma(1.5, 1.0, np.full(5, r), 9)["suggested_sigma_vox"] for r in (6, 10, 20, 40)]
    assert got == sorted(got) and got[0] < 1.0 < got[2] and got[-1] == SIGMA_RANGE[1]
    rule = suggest_sigma(1.5, 1.0, [9.0, 10.0, 11.0], 9)
    assert rule["psf_sigma_vox"] == pytest.approx(np.sqrt(1.5**2 - 1.0))
    assert rule["suggested_sigma_vox"] == pytest.approx(1.0, abs=0.15)  # the default suits R ~ 10, L = 9
    assert rule["error_ratio"] > 0.98
    # the suggestion is the minimum of E on a fine grid (brute force)
    fine = np.linspace(*SIGMA_RANGE, 501)
    e = sigma_error(fine, rule["psf_sigma_vox"], 10.0, 9)
    assert abs(fine[np.argmin(e)] - rule["suggested_sigma_vox"]) <= 0.05
    # a lower degree needs less resolution: a wider kernel
    assert suggest_sigma(1.5, 1.0, [10.0], 5)["suggested_sigma_vox"] > rule["suggested_sigma_vox"]
