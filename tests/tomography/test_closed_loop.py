"""Closed loop through a real-looking CT: pack an electrode (touching particles, binder), render it,
run the shell pipeline's segmentation and SH fit on the grey volume, and compare every recovered
particle with the one the packer placed (matched by centre). Rotation-invariant per-degree norms
``‖a_l‖`` are compared, so the fit's random frames do not matter."""

import numpy as np
import pytest

from nmc_dataset.pipeline._shells import fit_volume
from nmc_dataset.synthetic._ct_phantom import reference_shell_model
from nmc_dataset.tomography import _ctsim as ctsim
from nmc_dataset.tomography import _pack as pack


def _norm(c, l):
    return np.linalg.norm(c[..., l * l : (l + 1) ** 2], axis=-1)


def _closed_loop(models, box_um, preset, seed):
    _, grain = models
    shell = reference_shell_model(mean_radius_vox=10.0, voxel_size_um=0.128)  # radius ~1.3 µm
    e = pack.pack_electrode(
        shell,
        grain,
        box_um=box_um,
        solid_fraction=0.5,
        voxel_size_um=0.1,
        binder=("bridge", 0.08),
        seed=seed,
        neck_um=0.05,
    )
    s = ctsim.resolve_settings(preset, binning=1)
    ct, _im = ctsim.render_ct(e.phase, 0.1, settings=s, seed=seed)
    res = fit_volume(ct, 0.1, rng=np.random.default_rng(seed))
    fit = res.particles
    cen_fit = (fit.centroid_xyz + 0.5) * 0.1  # µm, x y z
    cen_true = e.table["center_um"][:, ::-1]
    r_true = e.table["coeffs_um"][:, 0] / np.sqrt(4 * np.pi)
    matched = []
    for k, c in enumerate(cen_fit):
        d = np.linalg.norm(cen_true - c, axis=1)
        j = int(np.argmin(d))
        if d[j] < 0.3 * r_true[j]:
            matched.append((k, j))
    # interior truth particles (the pipeline removes particles on the volume border)
    L = e.info["box_um"]
    interior = np.flatnonzero(np.all((cen_true > 1.3 * r_true[:, None]) & (cen_true < L - 1.3 * r_true[:, None]), 1))
    return e, res, matched, interior


def _check(e, res, matched, interior, min_found):
    assert len(matched) >= min_found * len(interior), (len(matched), len(interior))
    k, j = np.array(matched).T
    c_fit = res.particles.coeffs[k] * 0.1
    c_true = e.table["coeffs_um"][j]
    ratio0 = c_fit[:, 0] / c_true[:, 0]
    # the grey route's known bias (Otsu on blurred data) enlarges particles by a few %; no particle is off by >12 %
    assert 0.97 < np.mean(ratio0) < 1.08
    assert np.all(np.abs(ratio0 - np.mean(ratio0)) < 0.12)
    # l = 2 shape (elongation) recovered per particle (damped by smoothing, as on the shell phantoms)
    r2 = _norm(c_fit, 2).sum() / _norm(c_true, 2).sum()
    assert 0.7 < r2 < 1.1, r2
    assert np.corrcoef(_norm(c_fit, 2), _norm(c_true, 2))[0, 1] > 0.6


def test_fit_shells_recovers_the_packed_particles_small(models):
    e, res, matched, interior = _closed_loop(models, 8.0, "lab-nanoct", seed=2)
    _check(e, res, matched, interior, min_found=0.75)


@pytest.mark.slow
def test_fit_shells_recovers_the_packed_particles_lab_nanoct(models):
    e, res, matched, interior = _closed_loop(models, 12.8, "lab-nanoct", seed=4)
    _check(e, res, matched, interior, min_found=0.8)
    # the fitted model's a_00 law against the packed population's
    assert res.model.laws[0].family in ("lognormal", "normal", "t")
