"""The ellipsoid-mixture model: ellipsoid harmonics and fit vs plain twins, sampler vs a per-shell twin,
its file form, and what it buys on ellipsoid-like bodies."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from scipy import stats

from nmc_dataset.errors import InputError
from nmc_dataset.shells._descriptors import shell_descriptors
from nmc_dataset.shells._ellipsoid import EllipsoidMixture, ellipsoid_coefficients, fit_ellipsoids, quadrature
from nmc_dataset.shells._harmonics import random_rotations, sh_basis
from nmc_dataset.shells._model import ShellModel
from nmc_dataset.shells._selection import select_model
from nmc_dataset.synthetic._ct_phantom import truth_coefficients


def _reference_coefficients(axes, rot, L, n_theta=40):
    """Slow twin: one ellipsoid at a time, its radius in its body frame, full-sphere quadrature."""
    u, w = quadrature(n_theta)
    B = sh_basis(L, u)
    body = u @ rot  # body-frame coordinates of each direction
    r = 1.0 / np.sqrt(np.sum((body / axes) ** 2, axis=1))
    return (w * r) @ B


def _matrix(axes, rot):
    A = rot @ np.diag(np.asarray(axes, float) ** -2.0) @ rot.T
    return np.array([A[0, 0], A[1, 1], A[2, 2], A[0, 1], A[0, 2], A[1, 2]])


def test_quadrature_integrates_harmonics_exactly():
    u, w = quadrature(16)
    B = sh_basis(12, u)
    assert w.sum() == pytest.approx(4 * np.pi)
    assert np.allclose((w[:, None] * B).T @ B, np.eye(B.shape[1]), atol=1e-12)  # orthonormal up to 2*12 < 31


def test_ellipsoid_harmonics_match_the_plain_twin_on_random_ellipsoids():
    rng = np.random.default_rng(0)
    axes = rng.uniform(4, 20, (12, 3))
    rots = random_rotations(12, rng)
    fast = ellipsoid_coefficients(np.stack([_matrix(a, q) for a, q in zip(axes, rots)]), 9)
    for a, q, c in zip(axes, rots, fast):
        ref = _reference_coefficients(a, q, 9)
        assert np.abs(c - ref).max() < 1e-3 * a.max(), np.abs(c - ref).max()
    odd = np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in (1, 3, 5, 7, 9)])
    assert np.all(fast[:, odd] == 0)  # an ellipsoid is centro-symmetric


def test_fit_recovers_ellipsoids_and_matches_degrees_0_and_2():
    rng = np.random.default_rng(1)
    axes = np.sort(rng.uniform(5, 15, (30, 3)), axis=1)[:, ::-1]
    rots = random_rotations(30, rng)
    c = ellipsoid_coefficients(np.stack([_matrix(a, q) for a, q in zip(axes, rots)]), 8)
    A6, conv = fit_ellipsoids(c)
    assert conv.all()
    e = 1 / np.sqrt(
        np.linalg.eigvalsh(np.stack([[[a[0], a[3], a[4]], [a[3], a[1], a[5]], [a[4], a[5], a[2]]] for a in A6]))
    )
    assert np.allclose(np.sort(e, axis=1), np.sort(axes, axis=1), rtol=1e-6)
    # rough particles: not ellipsoids, but their ellipsoid still carries degrees 0 and 2 exactly
    rough = truth_coefficients("heterogeneous", 200, rng, degree=8)
    _, e_coef, resid, conv = EllipsoidMixture.decompose(rough)
    assert conv.mean() > 0.98
    ok = conv
    assert np.abs(resid[ok][:, [0, 4, 5, 6, 7, 8]]).max() < 1e-5 * rough[:, 0].max()
    assert np.allclose(e_coef + resid, rough)


def _reference_draw(mix: EllipsoidMixture, n, rng):
    """Slow twin of EllipsoidMixture.draw_raw: one shell at a time through scipy's samplers."""
    out = np.zeros((n, (mix.degree + 1) ** 2))
    d = mix.points.shape[1]
    for i in range(n):
        x = mix.points[rng.choice(mix.points.shape[0])] + rng.multivariate_normal(np.zeros(d), mix.kernel_cov)
        g, r1, r2 = x[0], abs(x[1]), abs(x[2])
        la = np.array([g + (2 * r1 + r2) / 3, g + (r2 - r1) / 3, g - (r1 + 2 * r2) / 3])
        rot = stats.special_ortho_group(3).rvs(random_state=rng)
        out[i] = _reference_coefficients(np.exp(la), rot, mix.degree, n_theta=20)
        for b, band in enumerate(mix.bands):
            nb = sum(2 * l + 1 for l in band)
            y = np.exp(x[3 + b]) * np.sqrt(nb) * stats.uniform_direction(nb).rvs(random_state=rng)
            k = 0
            for l in band:
                out[i, l * l : (l + 1) ** 2] += y[k : k + 2 * l + 1] * mix.spread[l]
                k += 2 * l + 1
    return out


def test_fast_sampler_matches_the_plain_twin():
    rng = np.random.default_rng(4)
    c = truth_coefficients("ellipsoid", 300, rng, degree=6)
    mix = EllipsoidMixture.fit(c, n_bands=2)
    assert mix.bands == [[1], [3, 4], [5, 6]] and mix.converged_fraction > 0.98
    fast = mix.draw_raw(2000, np.random.default_rng(1))
    slow = _reference_draw(mix, 600, np.random.default_rng(2))
    sf, ss = mix.summaries(fast), mix.summaries(slow)
    for j in range(sf.shape[1]):  # size, both axis ratios, every band's roughness
        assert stats.ks_2samp(sf[:, j], ss[:, j]).pvalue > 1e-3, j
    for j in (0, 2, 5, 12, 20, 30, 48):
        assert stats.ks_2samp(fast[:, j], slow[:, j]).pvalue > 1e-3, j
    # the sampled axis ratios reproduce the measured ones (the kernel is reflected at 0)
    s_meas = mix.summaries(c)
    for j in (1, 2):
        assert np.quantile(sf[:, j], [0.1, 0.5, 0.9]) == pytest.approx(
            np.quantile(s_meas[:, j], [0.1, 0.5, 0.9]), abs=0.03
        )


def test_model_file_round_trip_and_bad_blocks(tmp_path):
    c = truth_coefficients("ellipsoid", 120, np.random.default_rng(2), degree=5)
    m = ShellModel.fit(c, 0.128, kind="ellipsoid_mixture", n_bands=1, edcc=False)
    path = m.write(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["model"] == "ellipsoid_mixture" and doc["dependence"]["kind"] == "ellipsoid_mixture"
    assert doc["dependence"]["version"] == 1
    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "shell-model.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    m2 = ShellModel.load(path)
    assert m2.kind == "ellipsoid_mixture" and "base ellipsoid" in m2.summary()
    a = m.sample_coefficients(50, np.random.default_rng(3))
    b = m2.sample_coefficients(50, np.random.default_rng(3))
    assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert np.all(np.isnan(m2.log_density(c[:3])))  # no closed-form density
    for bad in ({"version": 9}, {"bands": [[1], [2, 3, 4, 5]]}, {"points": [[0.0, 1.0]]}):
        d2 = json.loads(path.read_text())
        d2["dependence"].update(bad)
        with pytest.raises(InputError):
            ShellModel.from_json(d2)
    d2 = json.loads(path.read_text())
    del d2["dependence"]
    with pytest.raises(InputError, match="dependence"):
        ShellModel.from_json(d2)
    with pytest.raises(InputError, match="degree >= 2"):
        ShellModel.fit(c[:, :4], 0.128, kind="ellipsoid_mixture", edcc=False)


def test_selection_keeps_ellipsoids_convex():
    """Small CI version of the ellipsoid closed loop: coefficients only (no rendering), 400 particles."""
    c = truth_coefficients("ellipsoid", 400, np.random.default_rng(5), degree=6)
    m, table = select_model(
        c,
        0.128,
        rng=np.random.default_rng(6),
        subdivisions=2,
        n_sample=600,
        candidates=("scale_mixture", "ellipsoid_mixture"),
        edcc=False,
    )
    rows = table["candidates"]
    assert table["chosen"] == "ellipsoid_mixture" and m.kind == "ellipsoid_mixture"
    assert rows["ellipsoid_mixture"]["holdout_loglik_per_particle"] is None
    # the scale mixture draws l >= 3 independently of the l = 2 axes: bumps on convex bodies
    assert rows["scale_mixture"]["descriptors"]["compactness"]["ks"] > 0.3
    assert rows["ellipsoid_mixture"]["descriptors"]["compactness"]["ks"] < table["ks_noise_95"]  # 100 held out
    sim = m.sample_coefficients(600, np.random.default_rng(7))
    d_sim, d_true = shell_descriptors(sim, subdivisions=2), shell_descriptors(c, subdivisions=2)
    for k in d_true:
        assert stats.ks_2samp(d_sim[k], d_true[k]).statistic < 0.15, k
