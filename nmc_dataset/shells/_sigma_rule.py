"""A rule for the smoothing σ of the sub-voxel measurement, from the measured blur and particle size.

The sub-voxel radius is the crossing of the smoothed grey profile through mid-level. Smoothing
with a Gaussian of σ (voxels) trades noise for resolution:

* white noise of standard deviation ``n`` becomes ``n ν(σ)``, with ``ν(σ) = (Σ_i g_i²)^{3/2}`` for
  the discrete, normalised 1-D kernel ``g`` that ``scipy.ndimage.gaussian_filter`` applies along
  each axis (``ν ≈ (8π^{3/2} σ³)^{-1/2}`` for σ >~ 1);
* the edge of contrast ``C`` is blurred by ``σ_t = √(σ_psf² + σ²)`` (``σ_psf`` the scanner's own
  blur) and its slope at the crossing is ``C / (√(2π) σ_t)``; the crossing error of one ray is
  the noise over the slope, ``∝ ν(σ) σ_t / C``;
* the blur damps degree ``l`` by ``exp(−σ_t² (l(l+1) − 2) / (2R²))`` on a particle of radius ``R``;
  the correction undoes it and multiplies the noise of that degree by the same factor.

The error of a degree-``L`` coefficient after the correction is therefore, up to the factor
``n / C`` that does not depend on σ,

    E(σ) = ν(σ) · σ_t · exp(σ_t² (L(L+1) − 2) / (2 R²)),     σ_t² = σ_psf² + σ²,

and :func:`suggest_sigma` returns the σ in ``[0.5, 3]`` voxels minimising it for the median
particle radius. The contrast/noise ratio scales ``E`` but does not move its minimum. For
``σ_psf = 1.1``, ``R = 10``, ``L = 9`` (the closed-loop phantoms) the rule gives 1.1 (their
pilot, σ_psf 1.18 and R 10.5: 1.15; σ = 1 is within 1 % of the optimum there); ``R = 20`` gives
1.85 (25 % lower error than σ = 1), ``R = 40`` the cap 3, ``R = 6`` 0.75 (18 % lower error). The rule
is first order (white noise, a single Gaussian blur, mean-curvature damping) and does not see
false crossings at very low contrast/noise (below ~4 a larger σ is safer).

The automatic σ (:func:`auto_sigma`, the default of ``fit-shells``) needs ``σ_psf`` and the
median radius before the measurement: a *pilot* measures, with σ = 1, up to :data:`PILOT_PARTICLES`
particles spread evenly over the size ranks of the segmentation (every k-th label by voxel count,
fixed rotations of its own seed, so the main measurement's random draws are untouched); its
measured blur gives ``σ_psf`` and its median radius ``R``, and the rule's σ is used for all
particles. Same labels and grey values, same σ.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["PILOT_PARTICLES", "SIGMA_RANGE", "auto_sigma", "noise_factor", "sigma_error", "suggest_sigma"]

#: σ range searched (voxels).
SIGMA_RANGE = (0.5, 3.0)
#: particles measured by the pilot of :func:`auto_sigma`.
PILOT_PARTICLES = 64


@functools.lru_cache(maxsize=256)
def _nu(sigma: float, truncate: float = 4.0) -> float:
    r = int(truncate * sigma + 0.5)  # the radius scipy.ndimage.gaussian_filter uses
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return float(np.sum(g * g) ** 1.5)


def noise_factor(sigma: float) -> float:
    """Standard deviation of white noise after ``scipy.ndimage.gaussian_filter(sigma)`` in 3-D, per unit."""
    return _nu(round(float(sigma), 6))


def sigma_error(sigma, psf_sigma: float, radius: float, degree: int) -> np.ndarray:
    """``E(σ)`` of the module docstring (relative units) for one radius, vectorised over σ."""
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    st2 = float(psf_sigma) ** 2 + s**2
    k = max(int(degree) * (int(degree) + 1) - 2, 0)
    nu = np.array([noise_factor(v) for v in s])
    return nu * np.sqrt(st2) * np.exp(st2 * k / (2.0 * float(radius) ** 2))


def suggest_sigma(blur_sigma: float, sigma_used: float, radii, degree: int) -> dict:
    """The rule's σ for a measurement that used ``sigma_used`` and measured the total blur ``blur_sigma``.

    Parameters
    ----------
    blur_sigma : float
        Measured total blur ``σ_t`` (voxels) of that measurement.
    sigma_used : float
        Its smoothing σ; the scanner blur is ``σ_psf = √(max(σ_t² − σ², 0))``.
    radii : array_like
        Particle mean radii (voxels); their median enters the rule.
    degree : int
        SH degree L.

    Returns
    -------
    dict
        ``suggested_sigma_vox`` (rounded to 0.05), ``psf_sigma_vox``, ``median_radius_vox``,
        ``error_ratio`` (``E`` at the suggestion over ``E`` at ``sigma_used``; < 1 is better).
    """
    r = float(np.median(np.asarray(radii, dtype=np.float64)))
    psf = float(np.sqrt(max(float(blur_sigma) ** 2 - float(sigma_used) ** 2, 0.0)))
    grid = np.round(np.arange(SIGMA_RANGE[0], SIGMA_RANGE[1] + 1e-9, 0.05), 2)
    e = sigma_error(grid, psf, r, degree)
    best = float(grid[int(np.argmin(e))])
    ratio = float(e.min() / sigma_error(float(sigma_used), psf, r, degree)[0])
    return {
        "suggested_sigma_vox": best,
        "psf_sigma_vox": psf,
        "median_radius_vox": r,
        "error_ratio": ratio,
        "rule": "minimises noise(sigma) * sigma_t * exp(sigma_t^2 (L(L+1)-2) / (2 R_median^2))",
    }


def auto_sigma(labels: np.ndarray, grey: np.ndarray, degree: int, *, otsu_threshold: float | None = None) -> dict:
    """The rule's σ for a grey volume, from a pilot measurement (see the module docstring).

    Parameters
    ----------
    labels : ndarray of int (Z, Y, X)
        Particle labels, 0 = background.
    grey : ndarray (Z, Y, X)
        The grey volume the labels were segmented from.
    degree : int
        SH degree L.
    otsu_threshold : float, optional
        The segmentation's threshold (passed to the pilot measurement).

    Returns
    -------
    dict
        :func:`suggest_sigma`'s keys for the pilot (measured with σ = 1), plus ``pilot_particles``
        and ``pilot_blur_sigma_vox``; ``suggested_sigma_vox`` is the σ to use.
    """
    from nmc_dataset.shells._subvoxel import measure_particles_subvoxel

    counts = np.bincount(np.asarray(labels).ravel())
    ids = np.nonzero(counts)[0]
    ids = ids[ids > 0]
    by_size = ids[np.argsort(counts[ids], kind="stable")]
    k = min(PILOT_PARTICLES, by_size.size)
    pick = by_size[np.unique(np.round(np.linspace(0, by_size.size - 1, k)).astype(np.int64))]
    pc, mi = measure_particles_subvoxel(
        labels,
        grey,
        degree,
        np.random.default_rng(0),
        sigma=1.0,
        otsu_threshold=otsu_threshold,
        only=pick,
        progress_desc="sigma pilot",
    )
    rule = suggest_sigma(mi.blur_sigma_vox, 1.0, pc.coeffs[:, 0] / np.sqrt(4 * np.pi), degree)
    rule["pilot_particles"] = int(pick.size)
    rule["pilot_blur_sigma_vox"] = float(mi.blur_sigma_vox)
    return rule
