"""Homogeneous Poisson seeds for the grain generator (docs/method.md#generator).

A marked Poisson process on ``W = window x [0, 1]^2 x [0, pi]``: positions uniform in a box
window (EBSD pixels, particle centre at the origin), two noise numbers ``n_i`` uniform in
``[0, 1]^2`` and a roll angle ``gamma_i`` uniform in ``[0, pi]``. The number of points is
Poisson with mean ``intensity * volume``.

Only seeds near a cutout matter (docs/method.md#cutouts): :func:`roi_window` shrinks the window to the
neighbourhood of a region of interest, and :func:`poisson_seeds_near` draws there. Restricting
the window is exact for the process *inside* the smaller window (a Poisson process restricted
to a subset is the Poisson process of that subset); whether the tessellation near the ROI is
unchanged depends on the margin: with markers in ``[d_min, d_max]`` and offsets in
``[r_min, r_max]`` a margin of a few mean seed spacings is ample in practice.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PoissonSeeds:
    """Points of the marked Poisson process.

    Parameters
    ----------
    positions : (N, d) float array
        Seed positions ``(x, y[, z])``.
    noise : (N, 2) float array
        Noise marks in ``[0, 1]^2`` (generator input).
    roll : (N,) float array
        Roll angles in ``[0, pi]``.
    """

    positions: np.ndarray
    noise: np.ndarray
    roll: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def dim(self) -> int:
        """Spatial dimension."""
        return int(self.positions.shape[1])

    def subset(self, index) -> "PoissonSeeds":
        """The seeds selected by ``index`` (boolean mask or integer array).

        Parameters
        ----------
        index : bool array or int array
            Seeds to keep.

        Returns
        -------
        PoissonSeeds
            Positions, noise and roll of the selection.
        """
        return PoissonSeeds(self.positions[index], self.noise[index], self.roll[index])


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo = np.atleast_1d(np.asarray(lo, dtype=np.float64))
    hi = np.atleast_1d(np.asarray(hi, dtype=np.float64))
    if lo.shape != hi.shape or lo.ndim != 1 or len(lo) not in (2, 3):
        raise ValueError(f"lo and hi must both have 2 or 3 entries, got {lo.shape} and {hi.shape}")
    if np.any(~(hi >= lo)):
        raise ValueError(f"empty window: lo={lo.tolist()} hi={hi.tolist()}")
    return lo, hi


def poisson_seeds(rng: np.random.Generator, intensity: float, lo, hi) -> PoissonSeeds:
    """Draw the marked Poisson process in the box ``[lo, hi]``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    intensity : float
        Mean number of points per unit volume (``mu``, points per pixel^d), >= 0.
    lo, hi : (d,) array-like
        Window corners ``(x, y[, z])``, d = 2 or 3.

    Returns
    -------
    PoissonSeeds
        Positions, noise marks and roll angles.

    Examples
    --------
    >>> import numpy as np
    >>> s = poisson_seeds(np.random.default_rng(0), 0.0018, [-128] * 3, [128] * 3)
    >>> abs(len(s) - 0.0018 * 256**3) < 5 * np.sqrt(0.0018 * 256**3)
    True
    """
    lo, hi = _box(lo, hi)
    if not intensity >= 0:
        raise ValueError(f"intensity must be >= 0, got {intensity}")
    n = int(rng.poisson(float(intensity) * float(np.prod(hi - lo))))
    positions = lo + (hi - lo) * rng.random((n, len(lo)))
    noise = rng.random((n, 2))
    roll = np.pi * rng.random(n)
    return PoissonSeeds(positions, noise, roll)


def roi_window(roi_points, margin: float, lo=None, hi=None) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of a region of interest grown by ``margin``, clipped to ``[lo, hi]``.

    Parameters
    ----------
    roi_points : (P, d) array
        Points of the region of interest, e.g. the 32 x 32 grid of a cutout (in 3D: in the
        plane z = 0).
    margin : float
        Distance added on every side (>= 0).
    lo, hi : (d,) array-like, optional
        The full window to clip to (e.g. ``[-128]*3``, ``[128]*3``).

    Returns
    -------
    (lo, hi) : two (d,) arrays
        The window corners.
    """
    pts = np.asarray(roi_points, dtype=np.float64)
    pts = pts.reshape(-1, pts.shape[-1])
    if len(pts) == 0:
        raise ValueError("empty region of interest")
    if margin < 0:
        raise ValueError("margin must be >= 0")
    wlo, whi = pts.min(0) - margin, pts.max(0) + margin
    if lo is not None:
        wlo = np.maximum(wlo, np.asarray(lo, dtype=np.float64))
    if hi is not None:
        whi = np.minimum(whi, np.asarray(hi, dtype=np.float64))
    whi = np.maximum(whi, wlo)
    return wlo, whi


def poisson_seeds_near(
    rng: np.random.Generator, intensity: float, roi_points, margin: float, lo=None, hi=None
) -> PoissonSeeds:
    """Poisson seeds in the neighbourhood of a region of interest (see :func:`roi_window`).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    intensity : float
        Expected seeds per unit volume (area in 2D) of the window.
    roi_points : (P, d) array
        Points of the region of interest.
    margin : float
        Distance added on every side of their bounding box (>= 0).
    lo, hi : (d,) array-like, optional
        The full window to clip to.

    Returns
    -------
    PoissonSeeds
        The seeds in the grown, clipped bounding box.
    """
    wlo, whi = roi_window(roi_points, margin, lo, hi)
    return poisson_seeds(rng, intensity, wlo, whi)
