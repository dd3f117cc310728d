"""Yardstick grain architectures for closed loops: the synthetic radial teacher and isotropic Laguerre cells.

Each is a sampler ``(rng, lo, hi) -> GBPD`` like a fitted grain model's, so descriptors and
benchmarks treat them alike.
"""

from __future__ import annotations

import numpy as np

from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd
from nmc_dataset.tessellation._gbpd import GBPD
from nmc_dataset.tessellation._seeds import poisson_seeds


def teacher_sampler(radius_px: float, **teacher_kwargs):
    """A sampler ``(rng, lo, hi) -> GBPD`` drawing the synthetic radial teacher (``radial_teacher_gbpd``)
    in a ball covering the box (the closed loop's known truth).

    Parameters
    ----------
    radius_px : float
        Smallest radius (pixels) of the teacher particle; a larger one is drawn when the box needs it.
    **teacher_kwargs
        Further keywords of ``radial_teacher_gbpd``.

    Returns
    -------
    callable
        ``draw(rng, lo, hi) -> GBPD``.
    """

    def draw(rng, lo, hi):
        r = float(np.max(np.abs(np.concatenate([np.ravel(lo), np.ravel(hi)])))) * np.sqrt(3) + 16.0
        return radial_teacher_gbpd(rng, radius_px=max(r, radius_px), **teacher_kwargs)

    return draw


def laguerre_sampler(intensity: float, offset_range=(1.0, 10.0), margin_px: float = 16.0):
    """Isotropic Laguerre cells (``M_i = I``, ``r_i ~ U(offset_range)``) of a Poisson process: the
    baseline of earlier particle models, with the intensity given (match it to the data).

    Parameters
    ----------
    intensity : float
        Seeds per pixel³ of the Poisson process.
    offset_range : tuple of 2 floats, default (1.0, 10.0)
        Range of the uniform power offsets ``r_i``.
    margin_px : float, default 16.0
        Margin (pixels) added around the requested box where seeds are drawn.

    Returns
    -------
    callable
        ``draw(rng, lo, hi) -> GBPD``.
    """

    def draw(rng, lo, hi):
        ss = poisson_seeds(rng, intensity, np.asarray(lo, float) - margin_px, np.asarray(hi, float) + margin_px)
        n = len(ss)
        return GBPD(ss.positions, np.ones((n, 3)), rng.uniform(*offset_range, n), ss.roll)

    return draw
