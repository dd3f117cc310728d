"""Model selection by descriptors of sampled shells against held-out particles."""

import logging

import numpy as np

from nmc_dataset.shells._descriptors import DESCRIPTORS
from nmc_dataset.shells._selection import format_table, needed_particles, select_model
from nmc_dataset.synthetic._ct_phantom import truth_coefficients


def test_selection_prefers_the_mixture_on_heterogeneous_roughness():
    rng = np.random.default_rng(0)
    c = truth_coefficients("heterogeneous", 400, rng, degree=6)
    m, table = select_model(c, 0.128, rng=rng, n_sample=500, subdivisions=2, edcc=False)
    assert set(table["candidates"]) == {"independent", "scale_mixture", "scale_mixture_bands", "ellipsoid_mixture"}
    assert table["n_holdout"] == 100 and table["n_train"] == 300
    for row in table["candidates"].values():
        assert set(row["descriptors"]) == set(DESCRIPTORS)
        assert all(0 <= v["ks"] <= 1 and v["w1"] >= 0 for v in row["descriptors"].values())
    ind = table["candidates"]["independent"]
    assert ind["aic"] is not None and table["candidates"]["scale_mixture"]["aic"] is None
    # independent coefficients cannot make a smooth majority and a rough minority
    assert ind["descriptors"]["compactness"]["ks"] > 0.3
    # any mixture represents this truth (a spherical base ellipsoid is allowed): one of them wins
    assert table["chosen"] != "independent" and m.kind == table["candidates"][table["chosen"]]["model"]
    assert table["candidates"]["ellipsoid_mixture"]["holdout_loglik_per_particle"] is None
    assert table["candidates"][table["chosen"]]["max_ks"] < 0.2
    # the held-out likelihood agrees
    assert table["candidates"]["scale_mixture"]["holdout_loglik_per_particle"] > ind["holdout_loglik_per_particle"]
    assert m.n_particles == 400 and m.selection_table is table  # refitted on all particles
    text = format_table(table)
    assert f"* {table['chosen']}" in text and "compact" in text


def test_too_few_particles_fall_back_with_the_count_needed(caplog):
    rng = np.random.default_rng(1)
    c = truth_coefficients("independent", 30, rng, degree=4)
    assert needed_particles(0.25) == 40
    with caplog.at_level(logging.WARNING, logger="nmc_dataset"):
        m, table = select_model(c, 0.128, rng=rng, edcc=False)
    assert m.kind == "independent" and table["particles_needed"] == 40
    assert "30 particles are too few" in caplog.text and "at least 40" in caplog.text
    assert "skipped" in format_table(table)
