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


@pytest.fixture(autouse=True)
def _restore_the_package_logger():
    """``cli.main`` gives the ``nmc_dataset`` logger its own handler and stops propagation, and a
    tool's logging configuration can disable it; undo both after each test so that ``caplog`` sees
    warnings whatever ran before."""
    import logging

    log = logging.getLogger("nmc_dataset")
    handlers, propagate, level = list(log.handlers), log.propagate, log.level
    yield
    log.handlers[:] = handlers
    log.propagate = propagate
    log.setLevel(level)
    # a tool configured with logging.config (import-linter does) disables every logger it does
    # not name, ours included: none of ours is ever meant to be disabled
    for name, child in logging.root.manager.loggerDict.items():
        if (name == "nmc_dataset" or name.startswith("nmc_dataset.")) and isinstance(child, logging.Logger):
            child.disabled = False
