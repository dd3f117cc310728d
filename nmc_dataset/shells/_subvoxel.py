"""Sub-voxel radius functions: the threshold crossing of the smoothed grey value along each ray.

The nearest-voxel radius of :func:`~nmc_dataset.shells._radius.ray_radius` is quantised to the
voxel grid and, on grey data, inherits the segmentation's heavy smoothing (σ = 1.8) and the
Otsu threshold (below mid-grey on blurred data: particles come out too large). On particles of
~10 voxels radius both bias the shape degrees. :func:`measure_particles_subvoxel` measures
instead, for every particle and every ray ``c + s u`` from its centre of mass:

1. the smoothed profile ``g(s)``: the grey volume smoothed with a small Gaussian (``sigma``,
   default 1 voxel) and interpolated trilinearly (``scipy.ndimage.map_coordinates``), sampled
   every 0.25 voxel within ``±(1.5 + 2σ)`` of the nearest-voxel radius;
2. the level ``T = (p + b) / 2`` midway between the particle's own grey level ``p`` (median of
   its voxels 2 erosions inside) and the local background ``b`` (median of the crop's voxels
   2 erosions outside the threshold mask), so that intensity drifts and the Otsu offset
   do not shift the surface;
3. the radius: the downward crossing of ``T`` nearest to the nearest-voxel radius, linearly
   interpolated between samples. Rays that leave the particle into a *touching* particle (the
   grey value stays high across the contact) and segmented (binary / label) input use the
   particle's own indicator, smoothed the same way, crossing 0.5 instead.

Blur and its correction
-----------------------
Both profiles are the true body blurred by a Gaussian of some total ``σ_t`` (scanner PSF and
``sigma``; for the indicator, ``sigma`` and the voxel sampling). The mid-level set of a blurred
indicator is, to first order, the body moved by mean-curvature flow for a time ``t = σ_t² / 2``
(Merriman, Bence & Osher 1992; Evans 1993). On a sphere of radius ``R`` that shrinks the radius
as ``R² → R² − 2σ_t²`` and damps a degree-``l`` perturbation by ``exp(−σ_t² (l(l+1) − 2) / (2R²))``
(``l = 1``, a translation, is not damped). ``σ_t`` is measured from the data: for a blurred edge of
contrast ``C`` the largest slope of the profile is ``C / (√(2π) σ_t)``; the median slope at the
crossings over all rays gives ``σ_t`` (reported). With ``correct_blur`` (default) the fitted
coefficients are corrected by the inverse: ``a_00 → √(4π) √(R² + 2σ_t²)`` and
``a_lm → a_lm exp(σ_t² (l(l+1) − 2) / (2R²))``, the factor capped at :data:`MAX_GAIN`.

The degree-wise factor is the linear theory of small perturbations of a sphere. An elongated
body's degrees 4, 6, 8 are not independent perturbations: they are fixed by its degrees 0 and 2
(the harmonics of an ellipsoid) and the blur damps them with those, not by their own factor
(which over-corrects them: +6 % at l = 4, +8 % at l = 6 on the ellipsoid closed loop). So degrees
``l >= 3`` are corrected about each particle's ellipsoid: with ``e(·)`` the harmonics of the
ellipsoid whose degrees 0 and 2 equal those of a coefficient vector
(:func:`~nmc_dataset.shells._ellipsoid.fit_ellipsoids`), ``a_l → e_l(a_corr) + g_l (a_l − e_l(a))``
— the ellipsoid of the corrected degrees 0 and 2 plus the corrected residual. Odd degrees and
nearly spherical particles (``e_l ≈ 0`` for ``l >= 4``) keep the plain factor.

Noise and its correction
------------------------
Grey noise moves every ray's crossing by the noise of the smoothed profile over the edge slope:
``σ_r = n ν(σ) √(2π) σ_t / C`` (``n / C`` the particle's noise over its contrast, from the MAD of
its background; ``ν(σ)`` the noise factor of the smoothing, :func:`~nmc_dataset.shells._sigma_rule.noise_factor`).
Neighbouring rays see the same smoothed noise: white noise smoothed with σ has the covariance
``σ_r² exp(−d²/(4σ²))`` along the surface (correlation area ``4πσ²``), so a coefficient of degree
``l`` of a particle of radius ``R`` (orthonormal harmonics, ``a_lm = ∫ r Y_lm dΩ``) carries the noise
variance

    N_l = g_l² σ_r² (4πσ² / R²) exp(−l(l+1) σ² / R²)

(the Gaussian covariance's spectrum on the sphere), ``g_l`` the blur correction of that degree.
That is several times the ``σ_fit² 4π / n_rays`` of independent rays: the fit residual misses the
smooth part of the noise, which lies in the fitted degrees. Squared coefficients add the noise to
the particle's roughness, most visibly where the true degree carries little (the odd degrees of
an ellipsoid). With ``correct_noise`` (default, grey input) every degree ``l >= 2`` of every
particle is scaled by ``√(max(1 − N_l / P_l, 0.1))``, ``P_l`` the particle's mean squared
coefficient of degree ``l``: its power becomes an unbiased estimate of the noise-free power
(spectral subtraction; Boll 1979), particle by particle, so rough and smooth particles keep their
own roughness; a noise-dominated degree keeps 10 % of its power (a finite log roughness for the
mixtures). ``l = 1`` is left alone: centring on the centre of mass removes its noise with it.
The formula assumes white noise (correlated CT noise is underestimated) and is
stored with the measurement (``noise_fraction``: median ``N_l / P_l`` per degree).

Resolution
----------
A particle is *too small for the degree* when the correction at ``l = L`` exceeds 2, i.e.
``R < σ_t sqrt((L(L+1) − 2) / (2 ln 2))``, or when a degree-``L`` wave along its equator spans
fewer than 4 voxels (``2πR / L < 4``). The share of such particles is reported and a warning
logged when it exceeds 10 %.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from nmc_dataset._util import log, progress
from nmc_dataset.shells._ellipsoid import ellipsoid_coefficients, fit_ellipsoids
from nmc_dataset.shells._harmonics import n_coeffs, random_rotations
from nmc_dataset.shells._radius import ParticleCoefficients, _inside, fit_setup, ray_radius, star_fraction
from nmc_dataset.shells._sigma_rule import noise_factor

__all__ = ["MAX_GAIN", "MeasurementInfo", "blur_gain", "coefficient_noise", "measure_particles_subvoxel", "too_small"]

#: cap of the blur correction of one coefficient.
MAX_GAIN = 3.0
#: least share of a degree's measured power the noise correction keeps (a noise-dominated degree
#: keeps a small, finite roughness: the mixtures model log roughness).
_MIN_KEEP = 0.1
_STEP = 0.25


def blur_gain(L: int, R, sigma_t: float) -> np.ndarray:
    """Per-coefficient blur correction factors ``(n, (L+1)**2)`` for mean radii ``R`` (l = 0 column: 1)."""
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    ls = np.concatenate([np.full(2 * l + 1, l) for l in range(L + 1)])
    g = np.exp(sigma_t**2 * np.maximum(ls * (ls + 1) - 2, 0)[None, :] / (2 * R[:, None] ** 2))
    g[:, 0] = 1.0
    return np.minimum(g, MAX_GAIN)


def coefficient_noise(L: int, R, sigma: float, sigma_t: float, cnr) -> np.ndarray:
    """Noise variance ``N_l`` of every coefficient before the blur correction, ``(n, (L+1)**2)`` (see above).

    Parameters
    ----------
    L : int
        SH degree.
    R : array_like (n,)
        Mean radii (voxels).
    sigma : float
        Smoothing σ of the measurement (voxels).
    sigma_t : float
        Measured total blur (voxels).
    cnr : array_like (n,) or float
        Contrast over noise standard deviation of each particle.

    Returns
    -------
    (n, (L+1)**2) float array
        Variance (voxels²) per coefficient; multiply by the blur gain squared after the correction.
    """
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    cnr = np.broadcast_to(np.asarray(cnr, dtype=np.float64), R.shape)
    sr2 = (noise_factor(sigma) * np.sqrt(2 * np.pi) * sigma_t / cnr) ** 2
    ls = np.concatenate([np.full(2 * l + 1, l) for l in range(L + 1)])
    return (sr2 * 4 * np.pi * sigma**2 / R**2)[:, None] * np.exp(-ls * (ls + 1) * sigma**2 / R[:, None] ** 2)


def _ellipsoid_consistent(raw: np.ndarray, corrected: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Blur correction of degrees ``l >= 3`` about each particle's ellipsoid (see the module docstring)."""
    A_raw, ok_raw = fit_ellipsoids(raw)
    A_cor, ok_cor = fit_ellipsoids(corrected)
    L = round(np.sqrt(raw.shape[1])) - 1
    e_raw, e_cor = ellipsoid_coefficients(A_raw, L), ellipsoid_coefficients(A_cor, L)
    out = corrected.copy()
    ok = ok_raw & ok_cor
    out[ok, 9:] = e_cor[ok, 9:] + gain[ok, 9:] * (raw[ok, 9:] - e_raw[ok, 9:])
    return out


def too_small(L: int, R, sigma_t: float) -> np.ndarray:
    """Which mean radii are too small to measure degree ``L`` (see the module docstring)."""
    R = np.asarray(R, dtype=np.float64)
    r_blur = sigma_t * np.sqrt(max(L * (L + 1) - 2, 0) / (2 * np.log(2.0)))
    return (R < r_blur) | (2 * np.pi * R / max(L, 1) < 4.0)


@dataclasses.dataclass
class MeasurementInfo:
    """What the sub-voxel measurement found (stored in the model's ``source.measurement``)."""

    method: str
    sigma_vox: float
    blur_sigma_vox: float
    corrected: bool
    indicator_ray_fraction: float
    no_crossing_fraction: float
    too_small_fraction: float
    too_small_radius_vox: float
    contrast_to_noise: float | None
    noise_corrected: bool = False
    noise_fraction: list | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _profiles(field, c, u, r0, offsets):
    """Trilinear samples of ``field`` along rays ``c + (r0 + offsets) u``: shape (P, S)."""
    s = r0[:, None] + offsets[None, :]
    pts = c[None, None, :] + s[..., None] * u[:, None, :]
    coords = np.stack([pts[..., 2].ravel(), pts[..., 1].ravel(), pts[..., 0].ravel()])
    vals = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
    return s, vals.reshape(s.shape)


def _crossing(s, g, level, r0):
    """Downward crossing of ``level`` nearest to ``r0`` per ray; NaN where there is none; and the slope."""
    above = g >= level[:, None] if np.ndim(level) else g >= level
    down = above[:, :-1] & ~above[:, 1:]
    lv = level[:, None] if np.ndim(level) else level
    g0, g1 = g[:, :-1], g[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (g0 - lv) / (g0 - g1)
    pos = s[:, :-1] + frac * (s[:, 1:] - s[:, :-1])
    dist = np.where(down, np.abs(pos - r0[:, None]), np.inf)
    j = np.argmin(dist, axis=1)
    rows = np.arange(s.shape[0])
    ok = np.isfinite(dist[rows, j])
    r = np.where(ok, pos[rows, j], np.nan)
    slope = np.where(ok, (g0[rows, j] - g1[rows, j]) / (s[rows, j + 1] - s[rows, j]), np.nan)
    return r, slope


def measure_particles_subvoxel(
    labels: np.ndarray,
    grey: np.ndarray | None = None,
    degree: int = 9,
    rng: np.random.Generator | None = None,
    *,
    sigma: float = 1.0,
    otsu_threshold: float | None = None,
    correct_blur: bool = True,
    correct_noise: bool = True,
    subdivisions: int = 3,
    progress_desc: str = "sub-voxel radius+SH",
    only=None,
) -> tuple[ParticleCoefficients, MeasurementInfo]:
    """Sub-voxel radius functions and SH coefficients of every labelled particle.

    Parameters
    ----------
    labels : ndarray of int (Z, Y, X)
        Particle labels, 0 = background.
    grey : ndarray (Z, Y, X), optional
        The grey volume the labels were segmented from; ``None`` for segmented input (each
        particle's own indicator is used).
    degree : int
        SH degree L.
    rng : numpy.random.Generator
        Draws the per-particle rotations (as :func:`~nmc_dataset.shells._radius.measure_particles`,
        so both measurements see the same directions for the same seed).
    sigma : float
        Gaussian σ (voxels) of the measurement smoothing (default 1: white noise drops ~7x while
        the blur it adds is corrected).
    otsu_threshold : float, optional
        The segmentation's threshold (on the σ = 1.8 smoothed volume); it separates the voxels
        used for the background level. Default: the midpoint of the grey range in the crop.
    correct_blur : bool
        Undo the blur's degree-wise damping (see the module docstring).
    correct_noise : bool
        Subtract each particle's noise power from every degree (grey input; see the module docstring).
    subdivisions : int
        Icosphere of the ray directions (3: 642).
    progress_desc : str, default "sub-voxel radius+SH"
        Label of the progress bar.
    only : sequence of int, optional
        Measure only these labels (the pilot of the automatic σ; no too-small warning); default all.

    Returns
    -------
    ParticleCoefficients, MeasurementInfo
        The per-particle coefficients (voxels) and a summary of the measurement.
    """
    if not sigma > 0:
        raise ValueError("sigma must be > 0")
    rng = np.random.default_rng() if rng is None else rng
    u, B, pinv, objs, ids = fit_setup(labels, degree, subdivisions)
    if only is not None:
        keep = {int(i) for i in only}
        ids = [i for i in ids if i in keep]
    n, K = len(ids), n_coeffs(degree)
    coeffs = np.zeros((n, K))
    cent = np.zeros((n, 3))
    vol = np.zeros(n, dtype=np.int64)
    star = np.zeros(n)
    rms = np.zeros(n)
    rots = random_rotations(n, rng)
    w = 1.5 + 2.0 * sigma
    offsets = np.arange(-w, w + 1e-9, _STEP)
    margin = int(np.ceil(w + 3 * sigma)) + 2
    slopes_rel, n_ind, n_none, cnr = [], 0, 0, []
    cnr_p = np.full(n, np.nan)
    for k, lab in enumerate(progress(ids, total=n, desc=progress_desc, unit="particle")):
        sl = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, dim)) for s, dim in zip(objs[lab - 1], labels.shape)
        )
        lab_crop = labels[sl]
        own = lab_crop == lab
        zz, yy, xx = np.nonzero(own)
        c = np.array([xx.mean(), yy.mean(), zz.mean()])
        v = u @ rots[k]
        r0 = ray_radius(own, c, v)
        # the label just outside each ray's nearest-voxel exit: 0 = background, else a touching particle
        exit_lab = np.zeros(v.shape[0], dtype=lab_crop.dtype)
        exit_pts = c[None] + (r0 + 0.5)[:, None] * v
        idx = np.rint(exit_pts).astype(np.int64)
        inb = _inside(np.ones(lab_crop.shape, dtype=bool), exit_pts)
        exit_lab[inb] = lab_crop[idx[inb, 2], idx[inb, 1], idx[inb, 0]]
        ind = ndimage.gaussian_filter(own.astype(np.float32), sigma, mode="constant")
        s, g_ind = _profiles(ind, c, v, r0, offsets)
        r_ind, sl_ind = _crossing(s, g_ind, 0.5, r0)
        r = r_ind
        use_grey = np.zeros(v.shape[0], dtype=bool)
        if grey is not None:
            raw = np.asarray(grey[sl], dtype=np.float32)
            g = ndimage.gaussian_filter(np.nan_to_num(raw, nan=float(np.nanmedian(raw))), sigma, mode="nearest")
            thr = otsu_threshold if otsu_threshold is not None else 0.5 * (float(np.nanmin(g)) + float(np.nanmax(g)))
            core = ndimage.binary_erosion(own, iterations=2)
            p_level = float(np.nanmedian(raw[core])) if np.any(core) else float(np.nanmedian(raw[own]))
            bg = g < thr
            sel = ndimage.binary_erosion(bg, iterations=2, border_value=1)
            b_level = (
                float(np.nanmedian(raw[sel]))
                if np.any(sel)
                else float(np.nanmedian(raw[bg]))
                if np.any(bg)
                else float(np.nanmin(raw))
            )
            C = p_level - b_level
            if C > 0:
                if np.sum(sel) > 20:
                    mad = float(np.nanmedian(np.abs(raw[sel] - b_level))) * 1.4826
                    if mad > 0:
                        cnr.append(C / mad)
                        cnr_p[k] = C / mad
                level = 0.5 * (p_level + b_level)
                s, g_grey = _profiles(g, c, v, r0, offsets)
                r_grey, sl_grey = _crossing(s, g_grey, level, r0)
                use_grey = (exit_lab == 0) & np.isfinite(r_grey)
                r = np.where(use_grey, r_grey, r_ind)
                slopes_rel.append(sl_grey[use_grey] / C)
        else:
            slopes_rel.append(sl_ind[np.isfinite(sl_ind)])
        none = ~np.isfinite(r)
        r = np.where(none, r0, r)
        n_none += int(none.sum())
        n_ind += int((~use_grey).sum())
        a = pinv @ r
        coeffs[k] = a
        rms[k] = float(np.sqrt(np.mean((B @ a - r) ** 2)))
        cent[k] = c + np.array([sl[2].start, sl[1].start, sl[0].start])
        vol[k] = zz.size
        star[k] = star_fraction(own, c)
    slopes = np.concatenate(slopes_rel) if slopes_rel else np.zeros(0)
    slopes = slopes[np.isfinite(slopes) & (slopes > 0)]
    sigma_t = float(1.0 / (np.sqrt(2 * np.pi) * np.median(slopes))) if slopes.size else float(sigma)
    R = coeffs[:, 0] / np.sqrt(4 * np.pi)
    gain = blur_gain(degree, R, sigma_t) if correct_blur and n else np.ones((n, K))
    if correct_blur and n:
        raw = coeffs.copy()
        coeffs[:, 1:] *= gain[:, 1:]
        coeffs[:, 0] = np.sqrt(4 * np.pi) * np.sqrt(R**2 + 2 * sigma_t**2)
        if degree >= 4:
            coeffs = _ellipsoid_consistent(raw, coeffs, gain)
    noise_frac = None
    do_noise = bool(correct_noise and grey is not None and n and cnr)
    if do_noise:
        # particles without a background estimate of their own take the median contrast/noise
        cp = np.where(np.isfinite(cnr_p), cnr_p, float(np.median(cnr)))
        Rc = coeffs[:, 0] / np.sqrt(4 * np.pi)
        noise = coefficient_noise(degree, Rc, float(sigma), sigma_t, cp) * gain**2
        noise_frac = [0.0, 0.0]  # l = 1 is the centring residue: centring removes its noise
        for l in range(2, degree + 1):
            sl_l = slice(l * l, (l + 1) ** 2)
            P = np.mean(coeffs[:, sl_l] ** 2, axis=1)
            Nl = noise[:, l * l]
            with np.errstate(divide="ignore", invalid="ignore"):
                keep = np.where(P > 0, np.sqrt(np.clip(1.0 - Nl / P, _MIN_KEEP, 1.0)), 1.0)
            coeffs[:, sl_l] *= keep[:, None]
            noise_frac.append(float(np.median(np.minimum(Nl / np.maximum(P, 1e-300), 1.0))))
    small = too_small(degree, R, sigma_t) if n else np.zeros(0, dtype=bool)
    r_small = float(
        max(
            sigma_t * np.sqrt(max(degree * (degree + 1) - 2, 0) / (2 * np.log(2.0))), 4.0 * max(degree, 1) / (2 * np.pi)
        )
    )
    n_rays = max(n * u.shape[0], 1)
    info = MeasurementInfo(
        method="subvoxel",
        sigma_vox=float(sigma),
        blur_sigma_vox=sigma_t,
        corrected=bool(correct_blur),
        indicator_ray_fraction=n_ind / n_rays,
        no_crossing_fraction=n_none / n_rays,
        too_small_fraction=float(small.mean()) if n else 0.0,
        too_small_radius_vox=r_small,
        contrast_to_noise=float(np.median(cnr)) if cnr else None,
        noise_corrected=do_noise,
        noise_fraction=noise_frac,
    )
    if n and info.too_small_fraction > 0.1 and only is None:
        log.warning(
            "warning: %.0f %% of the particles (mean radius < %.1f voxels) are too small to resolve "
            "degree %d at a blur of %.2f voxels; their high degrees are unreliable (fit a lower --degree)",
            100 * info.too_small_fraction,
            r_small,
            degree,
            sigma_t,
        )
    pc = ParticleCoefficients(
        label=np.asarray(ids, dtype=np.int64),
        coeffs=coeffs,
        centroid_xyz=cent,
        volume_voxels=vol,
        star_volume_fraction=star,
        fit_rms=rms,
        degree=int(degree),
    )
    return pc, info
