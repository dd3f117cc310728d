"""Shared test fixtures."""

import os

# One BLAS thread: tests run small products where threading only adds contention (and noise).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A fixed-seed generator so failures reproduce."""
    return np.random.default_rng(12345)
