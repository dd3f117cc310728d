"""The compiled integer-table formatter equals Python's formatting (its slow twin) byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from nmc_dataset.export._textrows import id_sci_rows, int_rows
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


@pytest.mark.parametrize("precision", [12, 16, 6, 0])
def test_id_sci_rows_equals_python(precision):
    """``%.{p}e`` written by the compiled formatter equals Python's, including exact ties (values
    with few binary digits round half to even), powers of ten, signed zeros and magnitudes
    outside the compiled range (formatted by Python)."""
    rng = np.random.default_rng(precision)
    n = 20_000
    vals = np.concatenate(
        [
            rng.uniform(-10, 10, n),
            rng.normal(size=n) * 10.0 ** rng.integers(-30, 30, n),
            np.round(rng.uniform(-10, 10, n), 3),
            rng.integers(-(2**20), 2**20, n) * 2.0 ** -rng.integers(0, 40, n),  # many exact ties
            [0.0, -0.0, 1e-10, 9.9999999999995e-11, 1e13, 9.9999999999995e12, 0.5, 0.125, 2.5e-5],
            [1e300, 5e-324, 1.7e308, 0.1, 9.9999999999995, 9.99999999999949, 9.999999999999951, -1e-300],
        ]
    )
    rows = vals[: len(vals) // 3 * 3].reshape(-1, 3)
    ids = rng.integers(-5, 10**9, len(rows))
    want = "".join(f"{i}, " + ", ".join(f"{v:.{precision}e}" for v in r) + "\n" for i, r in zip(ids, rows.tolist()))
    assert id_sci_rows(ids, rows, precision, ", ") == want
    assert id_sci_rows(ids[:0], rows[:0], precision) == ""
    with pytest.raises(ValueError, match="non-finite"):
        id_sci_rows([1], [[np.nan]])


@pytest.mark.parametrize("seed", range(3))
def test_numbered_rows_equal_int_rows(seed):
    """Numbered lines (element connectivity) equal ``int_rows`` of the table with a number column."""
    from nmc_dataset.export._textrows import numbered_rows_bytes

    rng = np.random.default_rng(seed)
    rows = rng.integers(-(10 ** rng.integers(1, 18)), 10**12, (int(rng.integers(0, 200)), int(rng.integers(1, 11))))
    first, add = int(rng.integers(-5, 10**9)), int(rng.integers(-3, 3))
    want = int_rows_reference(np.column_stack([first + np.arange(len(rows)), rows + add]), ", ")
    assert numbered_rows_bytes(rows, first, add, ", ").tobytes().decode() == want
