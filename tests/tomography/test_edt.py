"""The compiled distance transform against scipy's on random volumes."""

import numpy as np
import pytest
from scipy import ndimage

from nmc_dataset.tomography._edt import distance_to


@pytest.mark.parametrize(
    "shape,p", [((7, 9, 11), 0.1), ((20, 30, 25), 0.02), ((33, 17, 40), 0.001), ((1, 5, 64), 0.05)]
)
def test_equals_scipy_on_random_volumes(shape, p):
    f = np.random.default_rng(sum(shape)).random(shape) < p
    f.flat[0] = True
    assert np.allclose(distance_to(f, squared=True), ndimage.distance_transform_edt(~f) ** 2, rtol=0, atol=1e-9)
    assert np.allclose(distance_to(f), ndimage.distance_transform_edt(~f))


def test_empty_feature_set_is_infinitely_far():
    assert np.isinf(distance_to(np.zeros((3, 4, 5), bool))).all()
