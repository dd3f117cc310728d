"""Per-degree law fitting (MLE + AIC), EDCC, sampling with redraw, and the model file."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from scipy import integrate

from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.shells._model import DegreeLaw, ShellModel, logpdf, read_coefficients_table


def _truth(sigma0=0.3, df=4.0, scale2=1.5, family_l="t"):
    laws = [DegreeLaw(0, "lognormal", {"mu": float(np.log(30.0)), "sigma": sigma0})]
    for l in range(1, 6):
        s = scale2 * (l / 2.0) ** -1.5
        laws.append(DegreeLaw(l, family_l, {"df": df, "scale": s} if family_l == "t" else {"scale": s}))
    return ShellModel(degree=5, voxel_size_um=0.128, laws=laws)


@pytest.mark.parametrize(
    "family,params,signed",
    [
        ("normal", {"loc": 3.0, "scale": 1.5}, False),
        ("normal", {"scale": 0.7}, True),
        ("lognormal", {"mu": 1.0, "sigma": 0.4}, False),
        ("lognormal", {"mu": -1.0, "sigma": 0.8}, True),
        ("t", {"df": 4.0, "scale": 2.0, "loc": 1.0}, False),
        ("t", {"df": 2.5, "scale": 0.3}, True),
    ],
)
def test_densities_integrate_to_one(family, params, signed):
    f = lambda x: np.exp(logpdf(family, params, np.array([x]), signed))[0]  # noqa: E731
    total = sum(integrate.quad(f, a, b, limit=200)[0] for a, b in ((-np.inf, 0), (0, np.inf)))
    assert total == pytest.approx(1.0, abs=1e-6)


def test_fit_recovers_known_laws(rng):
    truth = _truth()
    # the laws themselves (draw_raw): sample_coefficients conditions on valid shells, which
    # removes small, rough shells and so narrows the a_00 law a little
    c = truth.draw_raw(1600, rng)  # the paper's particle count
    m = ShellModel.fit(c, 0.128)
    assert m.laws[0].family == "lognormal"
    # 1600 values: sigma of the log within 10 %, mu within 2 % of log(30)
    assert m.laws[0].params["sigma"] == pytest.approx(0.3, rel=0.1)
    assert m.laws[0].params["mu"] == pytest.approx(np.log(30), rel=0.02)
    for law, t in zip(m.laws[1:], truth.laws[1:]):
        assert law.family == "t"
        # 1600*(2l+1) values of a heavy-tailed t: scale within 10 %, df within 40 %
        assert law.params["scale"] == pytest.approx(t.params["scale"], rel=0.1)
        assert law.params["df"] == pytest.approx(4.0, rel=0.4)
        for fam, cand in law.candidates.items():
            assert cand["applicable"]
            assert cand["aic"] == pytest.approx(2 * cand["n_params"] - 2 * cand["loglik"])
        # independence of a_00 (EDCC of independent samples of 1600: ~0.03)
        assert law.edcc < 0.08 and len(law.edcc_per_order) == 2 * law.degree + 1


def test_normal_data_selects_normal(rng):
    truth = _truth(family_l="normal")
    m = ShellModel.fit(truth.sample_coefficients(1600, rng), 0.128)
    assert [law.family for law in m.laws[1:]].count("normal") >= 4  # AIC: t's extra df not needed
    assert m.laws[2].params["scale"] == pytest.approx(1.5, rel=0.05)


def test_edcc_detects_dependence(rng):
    c = _truth().sample_coefficients(800, rng)
    c[:, 4:9] = (c[:, :1] - 30) * rng.standard_normal((800, 5))  # scale of degree 2 depends on a_00
    m = ShellModel.fit(c, 0.128)
    assert m.laws[2].edcc > 3 * max(m.laws[1].edcc, m.laws[3].edcc)


def test_sampling_redraws_invalid_shells(rng):
    truth = _truth(scale2=2.0)  # rough shells: about half have negative radii somewhere
    raw = truth.draw_raw(2000, rng)
    frac_bad = 1 - truth.valid_reference(raw).mean()
    assert 0.3 < frac_bad < 0.7
    c, stats = truth.sample_coefficients(2000, rng, return_stats=True)
    assert c.shape == (2000, 36) and stats["redrawn"] > 600
    assert truth.valid_reference(c).all()


def test_fast_validity_equals_grid_check(rng):
    """The exact bound short-cut gives the same decisions as the plain grid check."""
    for scale2 in (0.5, 1.0, 2.0, 3.0):
        m = _truth(scale2=scale2)
        c = m.draw_raw(3000, rng)
        c[:50, 0] = rng.uniform(0, 6, 50)  # tiny shells: the volume criterion
        np.testing.assert_array_equal(m.valid(c), m.valid_reference(c))


def test_sampling_is_reproducible_and_checks_n():
    m = _truth()
    a = m.sample_coefficients(50, np.random.default_rng(3))
    b = m.sample_coefficients(50, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match=">= 1"):
        m.sample_coefficients(0, np.random.default_rng(0))


def test_write_load_roundtrip_and_schema(tmp_path, rng):
    truth = _truth()
    c = truth.sample_coefficients(200, rng)
    m = ShellModel.fit(
        c, 0.128, star_volume_fraction=rng.uniform(0.9, 1, 200), particle_table={"volume_vox": np.arange(200)}
    )
    p = m.write(tmp_path / "model.json")
    doc = json.loads(p.read_text())
    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "shell-model.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["n_particles"] == 200 and len(doc["degrees"]) == 6
    assert {"degree", "family", "params", "edcc"} <= set(doc["degrees"][1])
    assert 0.9 < doc["star_volume_fraction"]["mean"] < 1
    m2 = ShellModel.load(p)
    assert m2.format_version == 2 and m2.kind == "independent" and m2.degree == 5 and m2.voxel_size_um == 0.128
    for a, b in zip(m.laws, m2.laws):
        assert a.family == b.family and a.params == b.params
    np.testing.assert_array_equal(m2.load_coefficients(), c)
    coeffs, meta, other = read_coefficients_table(
        tmp_path / "model.coefficients.parquet", "nmc-dataset/shell-coefficients"
    )
    assert meta["format_version"] == 1 and list(other["volume_vox"][:3]) == [0, 1, 2]
    # same seed, same shells from the loaded model
    np.testing.assert_array_equal(
        m.sample_coefficients(5, np.random.default_rng(1)), m2.sample_coefficients(5, np.random.default_rng(1))
    )
    doc["format_version"] = 3
    (tmp_path / "new.json").write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError, match="new.json"):
        ShellModel.load(tmp_path / "new.json")


def test_constrained_families_positive_degree0_symmetric_rest(rng):
    """Degree 0 gets a positive family, l > 0 a symmetric unimodal one with finite variance."""
    n = 800
    c = np.zeros((n, 9))
    c[:, 0] = rng.normal(40, 9, n).clip(5)  # a normal-looking a_00: the paper's rule may pick normal or t
    c[:, 1:4] = 0.3 * rng.standard_cauchy((n, 3))  # heavy tails: an MLE t would have df ~1
    c[:, 4:9] = rng.standard_normal((n, 5))
    m = ShellModel.fit(c, 0.128, edcc=False)
    assert m.families == "constrained"
    assert m.laws[0].family in ("lognormal", "gamma")
    assert m.laws[1].family in ("normal", "t") and m.laws[1].params.get("df", 99) >= 2.1
    assert np.isfinite(m.laws[1].std())
    assert not m.laws[0].candidates["normal"]["eligible"] and "negative" in m.laws[0].candidates["normal"]["reason"]
    assert not m.laws[1].candidates["lognormal"]["eligible"]
    assert m.laws[0].candidates["gamma"]["aic"] is not None
    paper = ShellModel.fit(c, 0.128, edcc=False, families="paper")
    assert paper.laws[1].family == "t" and paper.laws[1].params["df"] < 2  # what the paper's rule does
    assert "gamma" not in {law.family for law in paper.laws}
