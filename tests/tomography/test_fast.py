"""Compiled Euler number against its library twin on random volumes."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from nmc_dataset.tomography._fast import euler_number_6


@pytest.mark.parametrize("seed", range(5))
def test_euler_number_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(3, 25, 3))
    mask = ndimage.gaussian_filter(rng.random(shape), rng.choice([0.5, 1.0, 2.0])) > rng.uniform(0.4, 0.6)
    assert euler_number_6(mask) == euler_number(mask, connectivity=1)
