"""Compiled distance transform and Euler number against their library twins on random volumes."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from nmc_dataset.tomography._fast import edt_to, euler_number_6


@pytest.mark.parametrize("seed", range(4))
def test_edt_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(5, 23, 3))
    mask = rng.random(shape) < rng.choice([0.002, 0.02, 0.3])
    mask.flat[int(rng.integers(mask.size))] = True
    assert np.allclose(edt_to(mask), ndimage.distance_transform_edt(~mask))


def test_edt_of_an_empty_mask_is_infinite():
    assert np.isinf(edt_to(np.zeros((3, 4, 5), bool))).all()


@pytest.mark.parametrize("seed", range(5))
def test_euler_number_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(3, 25, 3))
    mask = ndimage.gaussian_filter(rng.random(shape), rng.choice([0.5, 1.0, 2.0])) > rng.uniform(0.4, 0.6)
    assert euler_number_6(mask) == euler_number(mask, connectivity=1)
