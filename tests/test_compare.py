"""Generic measured-vs-simulated comparison: distances, files, JSON contract."""

import json

import numpy as np
import pytest
from scipy import stats

from nmc_dataset.compare import compare_descriptors, distribution_distances


def test_distances_known_values(rng):
    a = rng.normal(0, 1, 20000)
    assert distribution_distances(a, a) == {"wasserstein1": 0.0, "ks": 0.0, "n_measured": 20000, "n_simulated": 20000}
    b = rng.normal(0.5, 1, 20000)
    d = distribution_distances(a, b)
    # W1 of two normals differing by a shift is the shift; KS is 2*Phi(0.25)-1 = 0.197
    assert d["wasserstein1"] == pytest.approx(0.5, abs=0.03)
    assert d["ks"] == pytest.approx(2 * stats.norm.cdf(0.25) - 1, abs=0.02)
    d = distribution_distances([1.0, np.nan, 2.0, np.inf], [1.0, 2.0])
    assert d["n_measured"] == 2 and d["wasserstein1"] == 0.0
    assert distribution_distances([], [1.0])["ks"] is None


def test_compare_writes_files_and_json_shape(tmp_path, rng):
    m = {"d_max": rng.normal(10, 1, 300), "sphericity": rng.uniform(0.8, 1, 300), "only_measured": np.ones(3)}
    s = {"d_max": rng.normal(10.5, 1, 900), "sphericity": rng.uniform(0.8, 1, 900)}
    out = tmp_path / "report"
    res = compare_descriptors(m, s, out, title="test", units={"d_max": "µm"})
    doc = json.loads((out / "comparison.json").read_text())
    assert doc == res
    assert set(doc) == {"d_max", "sphericity"}
    for v in doc.values():
        assert set(v) == {"wasserstein1", "ks", "n_measured", "n_simulated"}
    assert doc["d_max"]["n_measured"] == 300 and doc["d_max"]["n_simulated"] == 900
    assert doc["d_max"]["wasserstein1"] == pytest.approx(0.5, abs=0.2)
    md = (out / "comparison.md").read_text()
    assert "| d_max | µm |" in md and "sphericity" in md
    for name in ("d_max.png", "sphericity.png", "histograms.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
