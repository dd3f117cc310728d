"""The compiled integer-table formatter equals Python's formatting (its slow twin) byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from nmc_dataset.export._textrows import int_rows
from nmc_dataset.testing import int_rows_reference


@pytest.mark.parametrize("seed", range(6))
def test_int_rows_equals_python(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(0, 300)), int(rng.integers(1, 12)))
    hi = [10, 1000, 2**31, 2**62][seed % 4]
    rows = rng.integers(-hi if seed % 2 else 0, hi, size=shape)
    rows.flat[:1] = 0
    for sep in (" ", ", ", ", S"):
        assert int_rows(rows, sep) == int_rows_reference(rows, sep)


def test_int_rows_edges():
    assert int_rows(np.zeros((0, 4), int)) == ""
    extreme = np.array([[np.iinfo(np.int64).max, np.iinfo(np.int64).min + 1, 0, 7]])
    assert int_rows(extreme, ", ") == int_rows_reference(extreme, ", ")
    with pytest.raises(ValueError):
        int_rows(np.arange(3))
