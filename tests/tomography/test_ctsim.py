"""CT simulator: projector and FBP against their slow twins and scikit-image, and the instrument's
statistics (noise, blur, rings) measured on rendered volumes against the requested settings."""

import math

import numpy as np
import pytest
from scipy import ndimage, special
from skimage.transform import iradon, radon

from nmc_dataset import testing
from nmc_dataset.errors import InputError
from nmc_dataset.tomography import _ctsim as ctsim


def _smooth_disc_image(n, seed):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((n, n)), 1.5)
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    return img * (((yy - c) ** 2 + (xx - c) ** 2) < (0.45 * n) ** 2)


def test_projector_equals_its_slow_twin_on_random_images():
    rng = np.random.default_rng(3)
    img = rng.random((9, 9))
    th = rng.uniform(0, np.pi, 4)
    nd = ctsim.detector_size(9)
    fast = ctsim.project(img[None], th, nd)[:, 0]
    assert np.allclose(fast, testing.project_reference(img, th, nd), atol=1e-5)
    # strip integrals conserve the mass of every pixel at every angle
    assert np.allclose(fast.sum(axis=1), img.sum(), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_projector_and_fbp_agree_with_scikit_image(seed):
    n = 33  # odd: both put the rotation centre on pixel 16
    img = _smooth_disc_image(n, seed)
    th = np.arange(52) * np.pi / 52
    nd = ctsim.detector_size(n)
    ours = ctsim.project(img[None], th, nd)
    lo = (nd - n) // 2
    sk = radon(img, theta=-np.degrees(th), circle=True)  # skimage: t = x cos θ − y sin θ
    assert np.abs(ours[:, 0, lo : lo + n].T - sk).max() < 0.02 * np.abs(sk).max()
    rec = ctsim.fbp(ours, th, n)[0]
    rec_sk = iradon(sk, theta=-np.degrees(th), circle=True, filter_name="ramp")
    inside = _smooth_disc_image(n, seed) != 0
    err, err_sk = (np.sqrt(np.mean((r - img)[inside] ** 2)) for r in (rec, rec_sk))
    assert err < 1.1 * err_sk and err < 0.05 * img.std() * 3
    assert np.sqrt(np.mean((rec - rec_sk)[inside] ** 2)) < 0.02 * img.std() * 3


def test_backprojection_equals_its_slow_twin():
    rng = np.random.default_rng(5)
    th = rng.uniform(0, np.pi, 9)
    q = rng.normal(size=(9, 1, 27)).astype(np.float32)
    n = 17
    out = np.zeros((n, n, 1), np.float32)
    ctsim._backproject(np.ascontiguousarray(q.transpose(0, 2, 1)), th, n, out)
    assert np.allclose(out[..., 0], testing.backproject_reference(q[:, 0], th, n), atol=1e-4)


def _settings(**kw):
    base = {"energy_kev": 20.0, "photons": 1e9, "psf_um": 0.0, "rings": 0.0, "phase_contrast": 0.0, "binning": 1}
    base.update(kw)
    return ctsim.resolve_settings("synchrotron", **base)


def test_noise_of_a_uniform_block_matches_the_photon_count():
    """σ_f² = π² σ_p² κ / (12 N_θ d²), σ_p² = 1/(N₀ T), κ = 2/3 − 2/π² (linear interpolation of
    Ram-Lak-filtered noise, whose neighbours correlate by −6/π²): the SNR follows from the photons."""
    n, h, n0 = 64, 0.5, 500.0
    phase = np.ones((6, n, n), np.uint8)  # a solid NMC cube
    s = _settings(photons=n0, energy_kev=30.0)
    ct, im = ctsim.render_ct(phase, h, settings=s, seed=3)
    mu = im["attenuation_per_um"]["1"]
    th = np.arange(im["projections"]) * np.pi / im["projections"]
    path = n * h / np.maximum(np.abs(np.cos(th)), np.abs(np.sin(th)))  # central ray through the square
    var_p = np.mean(np.exp(mu * path)) / n0
    kappa = 2 / 3 - 2 / np.pi**2
    sigma = math.sqrt(np.pi**2 * var_p * kappa / (12 * len(th) * h**2))
    core = ct[:, n // 2 - 6 : n // 2 + 6, n // 2 - 6 : n // 2 + 6]
    assert core.mean() == pytest.approx(mu, rel=0.02)
    assert core.std() == pytest.approx(sigma, rel=0.1)
    assert mu / core.std() == pytest.approx(mu / sigma, rel=0.1)  # the SNR


def _edge_sigma(ct, h):
    """σ (µm) of an erf fitted to the mean profile across the edge at x = n/2."""
    from scipy.optimize import curve_fit

    n = ct.shape[2]
    prof = ct[:, n // 2 - 8 : n // 2 + 8, n // 2 - 10 : n // 2 + 10].mean(axis=(0, 1))
    x = (np.arange(len(prof)) - 9.5) * h

    def esf(x, a, b, x0, sig):
        return a + b * 0.5 * (1 + special.erf((x - x0) / (np.sqrt(2) * sig)))

    p, _ = curve_fit(esf, x, prof, p0=(prof[0], prof[-1] - prof[0], 0.0, h))
    return abs(p[3])


def test_edge_spread_grows_by_the_requested_psf():
    n, h = 96, 0.1
    phase = np.zeros((4, n, n), np.uint8)
    phase[:, 8:-8, n // 2 : -8] = 1  # a block whose face x = n/2 crosses the centre
    base = _edge_sigma(ctsim.render_ct(phase, h, settings=_settings(energy_kev=15.0), seed=1)[0], h)
    for fwhm in (0.3, 0.5):
        sig = _edge_sigma(ctsim.render_ct(phase, h, settings=_settings(energy_kev=15.0, psf_um=fwhm), seed=1)[0], h)
        assert math.sqrt(sig**2 - base**2) == pytest.approx(fwhm / ctsim.FWHM_PER_SIGMA, rel=0.12), fwhm


def test_rings_come_from_the_gain_errors_with_the_requested_amplitude():
    """Rings only (no object, no noise). Over a 180° scan the ring of radius |t| is drawn by the
    detector pixels at +t and −t, so the reconstruction is the radial function whose projection
    is the symmetric part ``(ε(t) + ε(−t))/2`` of the offsets ``ε = −ln g``; re-projecting it with
    scikit-image recovers that, and the gains' spread is the requested ``rings``."""
    n, h, rings = 65, 0.2, 0.01
    phase = np.zeros((3, n, n), np.uint8)
    ct, im, gain = ctsim.render_ct(phase, h, settings=_settings(rings=rings, photons=1e12), seed=2, return_gains=True)
    assert np.std(np.log(gain)) == pytest.approx(rings, rel=0.15)
    th = np.arange(im["projections"]) * np.pi / im["projections"]
    nd = gain.shape[1]
    lo = (nd - n) // 2
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    inside = (yy - c) ** 2 + (xx - c) ** 2 <= c**2
    for z in range(3):
        rep = radon(np.where(inside, ct[z] * h, 0.0), theta=-np.degrees(th), circle=True).mean(axis=1)
        eps = -np.log(gain[z, lo : lo + n])
        truth = 0.5 * (eps + eps[::-1])
        sel = slice(4, n - 4)  # bins whose ring lies inside the reconstruction circle
        a, b = rep[sel] - rep[sel].mean(), truth[sel] - truth[sel].mean()
        assert np.corrcoef(a, b)[0, 1] > 0.55  # the re-projection is a smoothed copy (two interpolations)
        assert np.std(a) == pytest.approx(np.std(b), rel=0.2)
        assert np.std(b) == pytest.approx(rings / np.sqrt(2), rel=0.35)


def test_phase_contrast_adds_edge_fringes():
    n, h = 64, 0.1
    phase = np.zeros((2, n, n), np.uint8)
    phase[:, 8:-8, n // 2 : -8] = 1
    plain = ctsim.render_ct(phase, h, settings=_settings(energy_kev=15.0), seed=1)[0]
    pc = ctsim.render_ct(phase, h, settings=_settings(energy_kev=15.0, phase_contrast=0.5), seed=1)[0]
    prof = lambda v: v[:, 20:44, n // 2 - 6 : n // 2 + 6].mean(axis=(0, 1))
    a, b = prof(plain), prof(pc)
    # over- and undershoot at the edge (bright/dark fringe), same plateaus
    assert b.max() > a.max() + 0.1 * (a.max() - a.min()) and b.min() < a.min() - 0.1 * (a.max() - a.min())
    assert abs(b[-1] - a[-1]) < 0.1 * (a.max() - a.min())


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="unknown preset"):
        ctsim.resolve_settings("medical")
    for bad in (0, -5):
        with pytest.raises(InputError, match="photon count"):
            ctsim.resolve_settings("lab-nanoct", photons=bad)
    with pytest.raises(InputError, match="binning"):
        ctsim.resolve_settings("lab-nanoct", binning=0)
    s = ctsim.resolve_settings("lab-nanoct", psf_um=0.05)
    assert s["psf_um"] == 0.05 and s["energy_kev"] == ctsim.PRESETS["lab-nanoct"]["energy_kev"]


def test_resampled_labels_keep_the_majority_phase():
    rng = np.random.default_rng(0)
    phase = rng.integers(0, 3, (4, 4, 4)).astype(np.uint8)
    part = np.where(phase == 1, 7, 0).astype(np.uint32)
    ph, pa, _gr = ctsim.resample_labels(phase, part, part, 2)
    block = phase[:2, :2, :2].ravel()
    assert ph[0, 0, 0] == np.argmax(np.bincount(block, minlength=3))
    assert np.all((pa > 0) == (ph == 1))
