"""Virtual CT of a labelled electrode: parallel-beam projection, detector physics, FBP reconstruction.

Geometry and forward model
--------------------------
Parallel beam, rotation axis ``z`` (the volume's first axis), ``N_θ`` angles ``θ_a = π a / N_θ``.
The sample is the labelled box in air. A slice ``μ(x, y)`` (1/µm, from the phase labels and
:mod:`nmc_dataset.tomography._xray`) is projected on a detector line ``t = x cos θ + y sin θ``
(centred on the box) by the *strip-integral* projector: a square pixel of side ``h`` projects to a
trapezoid (the convolution of boxes of widths ``h|cos θ|`` and ``h|sin θ|``) whose integral over
each detector bin is the pixel's weight there, exact for piecewise-constant label images.
The projections are computed on the label grid (pitch ``h``, so labels are *supersampled* by the
binning factor ``s`` relative to the output), then, per projection image ``(z, t)``:

1. ``I = I₀ · exp(−∫μ)``  (Beer–Lambert, monochromatic);
2. propagation phase contrast (optional), the transport-of-intensity / Paganin form for a
   homogeneous object: ``I_z = I − c ∇²I`` with ``c = z δ / μ`` (Paganin et al., J. Microsc. 206,
   2002); the option ``phase_contrast = γ = c / d²`` gives it per output pixel ``d``;
3. detector blur: Gaussian point-spread function of full width at half maximum ``psf_um``;
4. binning ``s × s`` fine pixels into one detector pixel of the output size ``d = s h``;
5. photon noise: counts ``~ Poisson(N₀ · g_{v,u} · I / I₀)`` with ``N₀ = photons`` per pixel in the
   flat field and per-pixel gains ``g = 1 + rings · ξ`` (``ξ`` standard normal, fixed over the scan:
   an imperfect flat-field correction, which draws ring artefacts), then ``p = −ln(counts / N₀)``;
6. filtered back-projection: the Ram-Lak ramp filter (spatial-domain kernel, Kak & Slaney 1988
   eq. 3.61, as ``skimage.transform.iradon``'s ``ramp``) and linear-interpolation back-projection,
   ``f(x, y) = (π / N_θ) Σ_θ q_θ(x cos θ + y sin θ)``, on the output grid.

The projector and back-projector are numba kernels (threads over angles / rows, the slice
axis innermost); their slow twins are numpy loops (``project_reference``, ``backproject_reference``),
and ``skimage.transform.radon`` / ``iradon`` check the conventions in the tests.

Noise of the reconstruction (used by the tests and reported): with independent detector noise
of variance ``σ_p²`` the FBP pixel variance is ``σ_f² ≈ π² σ_p² / (12 N_θ d²) · κ`` where ``1/12`` is
the energy of the Ram-Lak kernel and ``κ ≈ 2/3`` the variance kept by linear interpolation;
``σ_p² = 1 / (N₀ T)`` for a transmission ``T``.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from scipy import ndimage

from nmc_dataset.errors import InputError
from nmc_dataset.tomography._xray import delta, phase_attenuation, phase_materials

#: Acquisition presets; every value can be overridden by an explicit option.
PRESETS = {
    "lab-nanoct": {
        "description": "lab nano-CT (Zeiss Xradia Ultra-like): quasi-monochromatic Cr Kα 5.4 keV, absorption "
        "contrast, photon-starved, ~2-3 detector pixels of blur",
        "energy_kev": 5.4,
        "photons": 2000.0,
        "psf_um": 0.15,
        "rings": 0.01,
        "phase_contrast": 0.0,
        "binning": 2,
    },
    "synchrotron": {
        "description": "synchrotron micro-CT (TOMCAT/ID19-like): monochromatic 20 keV, bright, propagation "
        "phase contrast at a short distance, weak rings",
        "energy_kev": 20.0,
        "photons": 20000.0,
        "psf_um": 0.6,
        "rings": 0.003,
        "phase_contrast": 0.3,
        "binning": 4,
    },
}
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# --------------------------------------------------------------------------- projector
@numba.njit(cache=True)
def _trapezoid_cdf(t, a1, a2):
    """CDF at ``t`` of the sum of two centred uniform variables of widths ``a1 >= a2``."""
    w = a1 + a2
    s = t + 0.5 * w
    if s <= 0.0:
        return 0.0
    if s >= w:
        return 1.0
    if a2 < 1e-9 * a1:
        return s / a1
    if s <= a2:
        return s * s / (2.0 * a1 * a2)
    if s <= a1:
        return (s - 0.5 * a2) / a1
    r = w - s
    return 1.0 - r * r / (2.0 * a1 * a2)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _project(vol, thetas, n_det, out):
    """Strip-integral projections of ``vol`` (ny, nx, nz; pixel units) into ``out`` (n_ang, n_det, nz)."""
    ny, nx, nz = vol.shape
    cy = 0.5 * (ny - 1)
    cx = 0.5 * (nx - 1)
    cd = 0.5 * (n_det - 1)
    for a in numba.prange(len(thetas)):
        c = math.cos(thetas[a])
        s = math.sin(thetas[a])
        a1 = max(abs(c), abs(s))
        a2 = min(abs(c), abs(s))
        half = 0.5 * (a1 + a2)
        for iy in range(ny):
            for ix in range(nx):
                t = (ix - cx) * c + (iy - cy) * s + cd
                k0 = math.floor(t - half + 0.5)
                k1 = math.floor(t + half + 0.5)
                for k in range(k0, k1 + 1):
                    if k < 0 or k >= n_det:
                        continue
                    wgt = _trapezoid_cdf(k + 0.5 - t, a1, a2) - _trapezoid_cdf(k - 0.5 - t, a1, a2)
                    if wgt <= 0.0:
                        continue
                    for z in range(nz):
                        out[a, k, z] += wgt * vol[iy, ix, z]


def detector_size(n: int) -> int:
    """Detector bins that cover an ``n × n`` slice at every angle (its diagonal), same parity as ``n``."""
    m = math.ceil(n * math.sqrt(2.0)) + 2
    return m + ((m - n) % 2)


def project(volume: np.ndarray, thetas: np.ndarray, n_det: int | None = None, pixel_um: float = 1.0) -> np.ndarray:
    """Parallel-beam projections of a volume (``z, y, x``), rotation axis ``z``.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Attenuation per unit length (e.g. 1/µm).
    thetas : (n_ang,) array
        Angles in radians; ``t = x cos θ + y sin θ`` with ``x`` the column and ``y`` the row
        offset from the slice centre.
    n_det : int, optional
        Detector bins of pitch ``pixel_um`` (default :func:`detector_size`).
    pixel_um : float
        Pixel (and bin) size; line integrals are in ``volume`` units × µm.

    Returns
    -------
    (n_ang, nz, n_det) float32 array
    """
    v = np.ascontiguousarray(np.transpose(np.asarray(volume, dtype=np.float32), (1, 2, 0)))
    n_det = detector_size(max(v.shape[:2])) if n_det is None else int(n_det)
    out = np.zeros((len(thetas), n_det, v.shape[2]), dtype=np.float32)
    _project(v, np.asarray(thetas, dtype=np.float64), n_det, out)
    return np.ascontiguousarray(np.transpose(out, (0, 2, 1))) * np.float32(pixel_um)


# --------------------------------------------------------------------------- FBP
def ramp_filter(n_det: int) -> np.ndarray:
    """Fourier response of the Ram-Lak filter (spatial kernel ``1/4, −1/(πk)²`` for odd ``k``), padded length."""
    size = max(64, int(2 ** math.ceil(math.log2(2 * n_det))))
    k = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1.0 / (np.pi * k) ** 2
    return np.real(np.fft.fft(f))


def filter_sinogram(sino: np.ndarray) -> np.ndarray:
    """Ramp-filter projections ``(n_ang, nz, n_det)`` along the detector axis (zero padded)."""
    n_det = sino.shape[-1]
    H = ramp_filter(n_det)
    size = len(H)
    F = np.fft.rfft(sino, n=size, axis=-1)
    F *= H[: size // 2 + 1].astype(np.complex64 if sino.dtype == np.float32 else np.complex128)
    return np.fft.irfft(F, n=size, axis=-1)[..., :n_det].astype(np.float32)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _backproject(q, thetas, n, out):
    """Linear-interpolation back-projection of ``q`` (n_ang, n_det, nz) onto ``out`` (n, n, nz)."""
    n_ang, n_det, nz = q.shape
    c0 = 0.5 * (n - 1)
    cd = 0.5 * (n_det - 1)
    for iy in numba.prange(n):
        for a in range(n_ang):
            c = math.cos(thetas[a])
            s = math.sin(thetas[a])
            for ix in range(n):
                t = (ix - c0) * c + (iy - c0) * s + cd
                k = math.floor(t)
                w = t - k
                if k < 0 or k + 1 >= n_det:
                    continue
                for z in range(nz):
                    out[iy, ix, z] += (1.0 - w) * q[a, k, z] + w * q[a, k + 1, z]


def fbp(sino: np.ndarray, thetas: np.ndarray, n: int, pixel_um: float = 1.0) -> np.ndarray:
    """Filtered back-projection of ``sino`` (n_ang, nz, n_det; line integrals) onto ``(nz, n, n)`` pixels."""
    q = filter_sinogram(np.asarray(sino, dtype=np.float32))
    qt = np.ascontiguousarray(np.transpose(q, (0, 2, 1)))
    out = np.zeros((n, n, sino.shape[1]), dtype=np.float32)
    _backproject(qt, np.asarray(thetas, dtype=np.float64), int(n), out)
    out *= np.float32(np.pi / (len(thetas) * pixel_um))
    return np.ascontiguousarray(np.transpose(out, (2, 0, 1)))


# --------------------------------------------------------------------------- the instrument
def resolve_settings(preset: str | None, **overrides) -> dict:
    """Acquisition settings: a preset's values with every non-``None`` override applied, validated.

    Parameters
    ----------
    preset : str or None
        A key of :data:`PRESETS`; None uses ``lab-nanoct`` (and records no preset).
    **overrides
        Settings to replace (``energy_kev``, ``photons``, ``psf_um``, ``rings``, ``phase_contrast``, ``binning``,
        ``projections``); None values are ignored.

    Returns
    -------
    dict
        The settings, with ``preset`` and ``projections`` (None = chosen later).

    Raises
    ------
    InputError
        For an unknown preset or a value out of range.
    """
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})", "--preset")
    base = dict(PRESETS[preset or "lab-nanoct"])
    base.pop("description")
    base["preset"] = preset
    base["projections"] = None
    for k, v in overrides.items():
        if v is not None:
            base[k] = v
    if not (np.isfinite(base["photons"]) and base["photons"] > 0):
        raise InputError(f"the photon count must be > 0, got {base['photons']}", "--photons")
    for k in ("psf_um", "rings", "phase_contrast"):
        if not (np.isfinite(base[k]) and base[k] >= 0):
            raise InputError(f"must be >= 0, got {base[k]}", "--" + k.replace("_", "-"))
    if int(base["binning"]) != base["binning"] or base["binning"] < 1:
        raise InputError(f"binning must be a positive integer, got {base['binning']}", "--binning")
    base["binning"] = int(base["binning"])
    if base["projections"] is not None and int(base["projections"]) < 2:
        raise InputError(f"need at least 2 projections, got {base['projections']}", "--projections")
    return base


def _bin(a: np.ndarray, s: int, axes) -> np.ndarray:
    """Mean over blocks of ``s`` along ``axes`` (lengths must be multiples of ``s``)."""
    if s == 1:
        return a
    shape, red = [], []
    for ax, m in enumerate(a.shape):
        if ax in axes:
            shape += [m // s, s]
            red.append(len(shape) - 1)
        else:
            shape.append(m)
    red = tuple(red)
    return a.reshape(shape).mean(axis=red, dtype=np.float64).astype(np.float32)


def _laplacian_2d(a: np.ndarray) -> np.ndarray:
    """5-point Laplacian (pixel units) over the last two axes of ``(n_ang, nz, n_det)``, edge-replicated."""
    b = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return (b[:, :-2, 1:-1] + b[:, 2:, 1:-1] + b[:, 1:-1, :-2] + b[:, 1:-1, 2:] - 4 * a).astype(np.float32)


def resample_labels(phase, particle, grain, s: int):
    """Labels on the CT grid: phase by majority of each ``s³`` block; particle and grain from the block's
    central voxel, or its largest label where the block is NMC by majority but the centre is not.

    Parameters
    ----------
    phase : (Z, Y, X) uint8 array
        Phase labels on the fine grid (0 pore, 1 NMC, 2 binder).
    particle, grain : (Z, Y, X) int arrays
        Particle and grain labels on the fine grid.
    s : int
        Block edge (fine voxels per CT voxel); trailing voxels that do not fill a block are dropped.

    Returns
    -------
    phase, particle, grain : ndarrays of shape ``(Z // s, Y // s, X // s)``
        Labels on the CT grid (copies when ``s == 1``); particle and grain are 0 where the phase is not NMC.
    """
    if s == 1:
        return phase.copy(), particle.copy(), grain.copy()
    n = [m // s for m in phase.shape]
    ph = phase[: n[0] * s, : n[1] * s, : n[2] * s]
    blocks = ph.reshape(n[0], s, n[1], s, n[2], s)
    counts = np.stack([(blocks == k).sum(axis=(1, 3, 5)) for k in range(3)])
    out_phase = np.argmax(counts, axis=0).astype(np.uint8)
    c = s // 2
    res = []
    for lab in (particle, grain):
        lab = lab[: n[0] * s, : n[1] * s, : n[2] * s]
        centre = lab[c::s, c::s, c::s].copy()
        bmax = lab.reshape(n[0], s, n[1], s, n[2], s).max(axis=(1, 3, 5))
        fill = (out_phase == 1) & (centre == 0)
        centre[fill] = bmax[fill]
        centre[out_phase != 1] = 0
        res.append(centre)
    return out_phase, res[0], res[1]


def render_ct(
    phase: np.ndarray,
    voxel_size_um: float,
    *,
    settings: dict,
    electrolyte: str = "none",
    seed: int = 0,
    return_gains: bool = False,
    fractions=None,
    gain_seed: int | None = None,
):
    """Render the CT of a phase-label volume (see module docs).

    Parameters
    ----------
    phase : (nz, ny, nx) uint8 array
        0 pore / electrolyte, 1 NMC, 2 carbon-binder; ``ny == nx``.
    voxel_size_um : float
        Label voxel size ``h``.
    settings : dict
        From :func:`resolve_settings`.
    electrolyte : {"none", "liquid", "solid"}
        What fills phase 0.
    seed : int
        Noise and gain errors.
    return_gains : bool
        Also return the detector gain map ``(nz/s, n_det)`` that drew the rings.
    fractions : (nmc, binder) pair of float arrays like ``phase``, optional
        Partial-volume fractions of NMC and binder per voxel (the rest is phase 0); used instead
        of the labels for the attenuation, ``μ = μ₀ + (μ₁ − μ₀) f₁ + (μ₂ − μ₀) f₂``.
    gain_seed : int, optional
        Seed of the detector gain map alone (the photon noise keeps ``seed``): one detector over a
        time series has the same gain errors, hence the same rings, in every scan.

    Returns
    -------
    ct : (nz/s, n/s, n/s) float32 array
        Reconstructed attenuation (1/µm).
    imaging : dict
        Every imaging parameter (materials, μ and δ per phase, geometry, seeds).
    """

    t0 = time.perf_counter()
    h = float(voxel_size_um)
    s = settings["binning"]
    nz, ny, nx = phase.shape
    if ny != nx:
        raise InputError(f"slices must be square (y = x), got {ny} x {nx}")
    if nx // s < 8 or nz // s < 1:
        raise InputError(f"binning {s} leaves fewer than 8 CT voxels per slice ({nx} labels)", "--binning")
    mu = phase_attenuation(settings["energy_kev"], electrolyte)
    mats = phase_materials(electrolyte)
    deltas = [delta(mats[k], settings["energy_kev"]) for k in range(3)]
    n_out, nz_out = nx // s, nz // s
    n = n_out * s
    if fractions is None:
        vol = mu.astype(np.float32)[phase[: nz_out * s, :n, :n]]
    else:
        f1, f2 = (np.asarray(f, np.float32)[: nz_out * s, :n, :n] for f in fractions)
        vol = np.float32(mu[0]) + np.float32(mu[1] - mu[0]) * f1 + np.float32(mu[2] - mu[0]) * f2
    n_det_out = detector_size(n_out)
    n_det = n_det_out * s
    n_ang = int(settings["projections"] or math.ceil(math.pi / 2 * n_out))
    thetas = np.arange(n_ang) * (math.pi / n_ang)
    p = project(vol, thetas, n_det, pixel_um=h)  # (n_ang, nz, n_det) line integrals
    del vol
    t_proj = time.perf_counter() - t0
    I = np.exp(-p)
    del p
    gamma = float(settings["phase_contrast"])
    if gamma > 0:
        lap = _laplacian_2d(I)
        I = I - np.float32(gamma * s * s) * lap
        del lap
    sigma_px = settings["psf_um"] / FWHM_PER_SIGMA / h
    if sigma_px > 0:
        I = ndimage.gaussian_filter(I, sigma=(0, sigma_px, sigma_px), mode="nearest", truncate=4.0)
    I = _bin(I, s, (1, 2))
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(21,)))
    n0 = float(settings["photons"])
    grng = rng if gain_seed is None else np.random.default_rng(np.random.SeedSequence(int(gain_seed), spawn_key=(22,)))
    gain = (1.0 + settings["rings"] * grng.standard_normal(I.shape[1:])).astype(np.float32)
    counts = rng.poisson(np.clip(I, 0, None) * (n0 * gain)[None]).astype(np.float32)
    sino = -np.log(np.maximum(counts, 0.5) / np.float32(n0))
    del counts, I
    ct = fbp(sino, thetas, n_out, pixel_um=h * s)
    t_all = time.perf_counter() - t0
    d_out = h * s
    imaging = {
        "preset": settings.get("preset"),
        "energy_kev": float(settings["energy_kev"]),
        "photons": n0,
        "psf_fwhm_um": float(settings["psf_um"]),
        "rings": float(settings["rings"]),
        "phase_contrast": gamma,
        "binning": s,
        "voxel_size_um": d_out,
        "label_voxel_size_um": h,
        "projections": n_ang,
        "angles": "uniform over [0, pi)",
        "geometry": "parallel beam, rotation axis z",
        "detector_pixels": n_det_out,
        "projector": "strip-integral (numba)",
        "reconstruction": "FBP, Ram-Lak",
        "electrolyte": electrolyte,
        "seed": int(seed),
        "units": "1/um",
        "attenuation_per_um": {str(k): float(mu[k]) for k in range(3)},
        "delta": {str(k): float(deltas[k]) for k in range(3)},
        "materials": {str(k): mats[k].to_json() for k in range(3)},
        "paganin_distance_mm": (gamma * d_out**2 * mu[1] / deltas[1] * 1e-3) if gamma > 0 else 0.0,
        "seconds": {"projection": round(t_proj, 3), "total": round(t_all, 3)},
        "database": "xraydb",
    }
    return (ct, imaging, gain) if return_gains else (ct, imaging)


__all__ = [
    "PRESETS",
    "detector_size",
    "fbp",
    "filter_sinogram",
    "project",
    "ramp_filter",
    "render_ct",
    "resample_labels",
    "resolve_settings",
]
