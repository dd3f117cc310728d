"""Compiled kernels of the scores (Euler number, label sizes) against their library twins on random volumes."""

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


def test_label_sizes_equals_bincount_on_random_volumes():
    from nmc_dataset.tomography._fast import label_sizes

    rng = np.random.default_rng(3)
    for dtype in (np.int32, np.uint32, np.uint8, np.int64):
        for shape in ((7, 5, 9), (1, 1, 1), (0, 4, 4)):
            lab = rng.integers(0, 40, shape).astype(dtype)
            ref = np.bincount(lab.ravel()) if lab.size else np.zeros(1, np.int64)
            assert np.array_equal(label_sizes(lab), ref)
        lab = rng.integers(0, 40, (6, 6, 6)).astype(dtype)[:, ::2]  # a non-contiguous view
        assert np.array_equal(label_sizes(lab), np.bincount(lab.ravel()))
    with pytest.raises(ValueError):
        label_sizes(np.array([[-1, 2]]))
