"""The scale-mixture model: fast sampler vs a plain per-shell twin, its density, and its file form."""

import json

import numpy as np
import pytest
from scipy import stats

from nmc_dataset.shells._mixture import ScaleMixture, default_bands, loo_bandwidth, loo_bandwidths
from nmc_dataset.shells._model import ShellModel
from nmc_dataset.synthetic._ct_phantom import truth_coefficients


def _reference_draw(mix: ScaleMixture, n: int, rng) -> np.ndarray:
    """Slow twin of ScaleMixture.draw_raw: one shell at a time through numpy's and scipy's own samplers."""
    out = np.zeros((n, (mix.degree + 1) ** 2))
    for i in range(n):
        x = mix.points[rng.choice(mix.points.shape[0])] + rng.multivariate_normal(
            np.zeros(mix.points.shape[1]), mix.kernel_cov
        )
        out[i, 0] = np.exp(x[0])
        for b, band in enumerate(mix.bands):
            nb = sum(2 * l + 1 for l in band)
            u = stats.uniform_direction(nb).rvs(random_state=rng)
            y = np.exp(x[1 + b]) * np.sqrt(nb) * u
            k = 0
            for l in band:
                out[i, l * l : (l + 1) ** 2] = y[k : k + 2 * l + 1] * mix.spread[l]
                k += 2 * l + 1
    return out


def test_bands():
    assert default_bands(9, 1) == [[1], [2], [3, 4, 5, 6, 7, 8, 9]]
    assert default_bands(9, 3) == [[1], [2], [3, 4, 5], [6, 7], [8, 9]]
    assert default_bands(2, 3) == [[1], [2]] and default_bands(0, 3) == []


@pytest.mark.parametrize("n_bands", [1, 3])
def test_fast_sampler_matches_the_plain_twin(n_bands):
    rng = np.random.default_rng(4)
    c = truth_coefficients("heterogeneous", 300, rng, degree=6)
    mix = ScaleMixture.fit(c, n_bands=n_bands)
    fast = mix.draw_raw(3000, np.random.default_rng(1))
    slow = _reference_draw(mix, 1500, np.random.default_rng(2))
    sf, ss = (ScaleMixture.summaries(x, mix.bands, mix.spread) for x in (fast, slow))
    for j in range(sf.shape[1]):  # size and every band's roughness
        assert stats.ks_2samp(sf[:, j], ss[:, j]).pvalue > 1e-3, j
    for j in (1, 5, 8, 20, 48):  # single coefficients of several degrees
        assert stats.ks_2samp(fast[:, j], slow[:, j]).pvalue > 1e-3, j
    # the sampled roughness reproduces the measured one (no extra chi noise): same quantiles
    s_meas = ScaleMixture.summaries(c, mix.bands, mix.spread)[:, -1]
    assert np.quantile(sf[:, -1], [0.25, 0.5, 0.75]) == pytest.approx(np.quantile(s_meas, [0.25, 0.5, 0.75]), abs=0.2)


def test_density_integrates_to_one():
    """log p of a degree-1 mixture (a_00 and the 3 coefficients of l = 1) by importance sampling."""
    rng = np.random.default_rng(0)
    n = 200
    c = np.zeros((n, 4))
    c[:, 0] = np.exp(rng.normal(3.0, 0.2, n))
    c[:, 1:] = rng.standard_normal((n, 3)) * np.exp(rng.normal(0, 0.5, n))[:, None]
    mix = ScaleMixture.fit(c)
    q_mean = np.array([c[:, 0].mean(), 0, 0, 0])
    q_sd = np.array([c[:, 0].std() * 3, 3 * c[:, 1:].std(), 3 * c[:, 1:].std(), 3 * c[:, 1:].std()])
    z = q_mean + q_sd * rng.standard_normal((100_000, 4))
    z = z[z[:, 0] > 0]
    logq = stats.norm.logpdf(z, q_mean, q_sd).sum(axis=1)
    est = np.exp(mix.logpdf(z) - logq).sum() / 100_000
    assert est == pytest.approx(1.0, abs=0.05)


def test_bandwidth_separates_two_populations():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.05, 600), rng.normal(1.4, 0.05, 300)])[:, None]
    h = loo_bandwidth(x, np.cov(x.T).reshape(1, 1))
    scott = x.shape[0] ** (-1 / 5)
    assert h < 0.4 * scott  # Scott's rule would blur the two modes into one
    # per variable: a bimodal variable gets a narrow kernel, a unimodal one next to it a wide one
    y = np.column_stack([x[:, 0], rng.normal(0, 1, 900)])
    kc = loo_bandwidths(y, np.cov(y.T))
    rel = np.sqrt(np.diag(kc) / np.diag(np.cov(y.T)))
    assert rel[0] < 0.5 * rel[1] and np.count_nonzero(kc - np.diag(np.diag(kc))) == 0


def test_model_file_roundtrip_and_old_files(tmp_path):
    rng = np.random.default_rng(2)
    c = truth_coefficients("size_roughness", 120, rng, degree=5)
    m = ShellModel.fit(c, 0.128, kind="scale_mixture", n_bands=3, edcc=False)
    p = m.write(tmp_path / "m.json")
    doc = json.loads(p.read_text())
    assert doc["format_version"] == 2 and doc["model"] == "scale_mixture"
    assert doc["dependence"]["bands"] == [[1], [2], [3], [4], [5]]
    m2 = ShellModel.load(p)
    assert m2.kind == "scale_mixture"
    np.testing.assert_array_equal(
        m.sample_coefficients(20, np.random.default_rng(3)), m2.sample_coefficients(20, np.random.default_rng(3))
    )
    # a version-1 file (no model key) is the paper's independent model
    old = {k: v for k, v in doc.items() if k not in ("model", "dependence", "families", "model_selection")}
    old["format_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(old))
    m1 = ShellModel.load(tmp_path / "old.json")
    assert m1.kind == "independent" and m1.format_version == 1 and m1.mixture is None
    assert m1.sample_coefficients(10, np.random.default_rng(0)).shape == (10, 36)
    # a damaged dependence block is a one-line input error
    bad = dict(doc, dependence=dict(doc["dependence"], bands=[[1], [2]]))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    from nmc_dataset.errors import InputError

    with pytest.raises(InputError, match="bands"):
        ShellModel.load(tmp_path / "bad.json")


def test_sampling_speed_is_vectorised():
    """Not a timing assertion: the sampler makes one pass per round, whatever n (redraws aside)."""
    rng = np.random.default_rng(5)
    m = ShellModel.fit(truth_coefficients("heterogeneous", 200, rng), 0.128, kind="scale_mixture", edcc=False)
    c, st = m.sample_coefficients(5000, rng, return_stats=True)
    assert c.shape == (5000, 100) and st["rounds"] <= 5 and m.valid_reference(c).all()


def test_l2_shape_invariant_and_oriented_draws():
    from nmc_dataset.shells._harmonics import fit_coefficients, icosphere
    from nmc_dataset.shells._mixture import _l2_from_shape, _l2_shape

    rng = np.random.default_rng(7)
    # the Weyl volume element: J3 of a uniform direction in the 5 coefficients is uniform on [-1, 1]
    g = rng.standard_normal((20000, 5))
    assert stats.kstest(_l2_shape(g), "uniform", args=(-1, 2)).pvalue > 1e-3
    # prolate ellipsoids have J3 = +1, oblate ones -1
    v, _ = icosphere(3)
    for axes, sign in (((1.4, 1.0, 1.0), 1), ((1.0, 1.0, 0.6), -1)):
        r = 1 / np.sqrt(np.sum((v / np.array(axes)) ** 2, axis=1))
        a2 = fit_coefficients(2, v, r)[4:9]
        assert _l2_shape(a2[None])[0] == pytest.approx(sign, abs=1e-3)  # icosphere aliasing ~1e-5
    # drawn tensors have the requested shape and a random orientation
    j = np.full(20000, 0.6)
    a = _l2_from_shape(j, rng)
    np.testing.assert_allclose(_l2_shape(a), 0.6, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    np.testing.assert_allclose(np.cov(a.T), np.eye(5) / 5, atol=0.01)


def test_ellipsoids_keep_their_shape():
    rng = np.random.default_rng(8)
    c = truth_coefficients("ellipsoid", 400, rng, degree=4)
    from nmc_dataset.shells._mixture import _l2_shape

    with_shape = ScaleMixture.fit(c).draw_raw(3000, rng)
    uniform = ScaleMixture.fit(c, l2_shape=False).draw_raw(3000, rng)
    j_true = _l2_shape(c[:, 4:9])
    assert stats.ks_2samp(_l2_shape(with_shape[:, 4:9]), j_true).statistic < 0.08
    assert stats.ks_2samp(_l2_shape(uniform[:, 4:9]), j_true).statistic > 0.1  # J3 uniform on [-1, 1]
