"""Closed loop (issue 4): teacher 3D radial GBPD -> central slices -> 2D fits -> fit-grains ->
compare fresh central sections and 3D statistics with the teacher, against the sampling noise of
the teacher and an isotropic Laguerre baseline of the same intensity."""

import numpy as np
import pytest
import torch

from nmc_dataset.compare import distribution_distances
from nmc_dataset.grains import descriptors as De
from nmc_dataset.grains.fit2d import fit_section, section_from_gbpd
from nmc_dataset.grains.gan import TrainConfig, train
from nmc_dataset.synthetic.ebsd import radial_teacher_gbpd


def _fits(n, radius, steps):
    out = []
    for i in range(n):
        g = radial_teacher_gbpd(np.random.default_rng(100 + i), radius_px=radius + 24)
        sec = section_from_gbpd(g, int(2 * radius + 5), radius, z=0.0, rng=np.random.default_rng(i),
                                section_id=f"t{i}")
        out.append(fit_section(sec, steps=steps, seed=i))
    return out


def _alpha_w1(sampler, truth, rng, radius, n):
    sims = De.pooled(De.section_descriptors(lab, c) for lab, c in De.model_sections(sampler, rng, n, radius))
    return distribution_distances(truth["alpha_rad"], sims["alpha_rad"])["wasserstein1"], sims


def _loop(n_sections, radius, fit_steps, cfg, n_eval):
    torch.set_num_threads(2)
    fits = _fits(n_sections, radius, fit_steps)
    assert min(f.agreement for f in fits) > 0.9
    model = train([f.gbpd for f in fits], 0.05, cfg, seed=0)
    rng = np.random.default_rng(7)
    teacher = De.teacher_sampler(radius)
    truth = De.pooled(De.section_descriptors(lab, c) for lab, c in De.model_sections(teacher, rng, n_eval, radius))
    w_fit, sims = _alpha_w1(model, truth, rng, radius, n_eval)
    w_noise, _ = _alpha_w1(teacher, truth, rng, radius, n_eval)
    w_base, _ = _alpha_w1(De.laguerre_sampler(0.0018), truth, rng, radius, n_eval)
    return model, truth, sims, (w_fit, w_noise, w_base)


SMALL = dict(hidden=(64, 64), d_width=8, d_dense=64, batch_g=16, batch_d=32, ng_gt_cutouts=64, margin_px=12)


@pytest.mark.slow
def test_closed_loop_alpha_and_3d_statistics():
    """Full loop at small size (several minutes on 2 cores). Tolerances: the fitted model's W1 on
    alpha must be under half the isotropic Laguerre baseline's and within 4x the teacher's own
    sampling noise (the issue's 1.5x target needs the benchmark's longer schedule); in 3D the
    mean radial alignment of the fitted grains must exceed the baseline's by half the
    teacher-baseline gap."""
    radius = 60.0
    cfg = TrainConfig(epochs=20, steps_per_epoch=10, lr=1e-3, p_max_px=radius - 16, **SMALL)
    model, truth, sims, (w_fit, w_noise, w_base) = _loop(3, radius, 100, cfg, 4)
    assert w_fit < 0.5 * w_base, (w_fit, w_base)
    assert w_fit < 4 * w_noise + 0.02, (w_fit, w_noise)
    rng = np.random.default_rng(3)
    al = {}
    for name, s in (("teacher", De.teacher_sampler(radius)), ("fitted", model), ("base", De.laguerre_sampler(0.0018))):
        st = De.grain_stats_3d(*De.volume_labels(s, rng, 40))
        al[name] = float(np.nanmean(st["radial_alignment"]))
    assert al["fitted"] > al["base"] + 0.5 * (al["teacher"] - al["base"]), al


def test_closed_loop_small_alpha_close_to_teacher():
    """The CI-sized closed loop (about a minute): 2 central sections of R = 40 px teacher particles,
    120 GAN steps. Only alpha is checked (the stereological signal a slice shows most directly).
    Observed over training seeds 0, 1, 2: fitted/baseline W1 ratio 0.07, 0.04, 0.17 and fitted W1
    0.034, 0.018, 0.079 against teacher noise 0.025-0.044; the tolerances leave a wide margin:
    under 0.4x the isotropic Laguerre baseline and under 3x the noise + 0.02."""
    radius = 40.0
    cfg = TrainConfig(epochs=15, steps_per_epoch=8, lr=1e-3, p_max_px=radius - 16, **SMALL)
    _, _, _, (w_fit, w_noise, w_base) = _loop(2, radius, 60, cfg, 3)
    assert w_fit < 0.4 * w_base, (w_fit, w_base)
    assert w_fit < 3 * w_noise + 0.02, (w_fit, w_noise)
