"""Shared test fixtures."""

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng():
    """A fixed-seed generator so failures reproduce."""
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep torch to the 2 cores CI has (and deterministic)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
