"""The dataset card: offline Hub validation, statistics equal to the data, load_dataset per config."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from nmc_dataset.cli._main import main
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._card import render_card, size_category, validate_card
from nmc_dataset.pipeline._manifest import verify_manifest
from tests.pipeline import shardfns
from tests.pipeline.conftest import RELEASE


def _table_row(card: str, name: str) -> list[str]:
    line = next(x for x in card.splitlines() if x.startswith(f"| `{name}` |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_card_validates_offline_with_huggingface_hub(release):
    from huggingface_hub import DatasetCard

    text = (release / "README.md").read_text()
    data = validate_card(text)
    card = DatasetCard.load(release / "README.md")  # the Hub library's own parser
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "NMC811 test particles"
    assert data.size_categories == ["n<1K"]
    configs = {c["config_name"]: c for c in card.data.configs}
    assert set(configs) == {"particles", "voxels_16"}
    assert configs["particles"]["data_files"] == [{"split": "train", "path": "data/particles/*.parquet"}]
    assert configs["particles"].get("default") is True
    for needle in (
        "arXiv:2407.05333",
        "eprint        = {2407.05333}",
        "@misc{nmc811test100",
        "Doe, Jane",
        'load_dataset("org/nmc811-test", "voxels_16"',
        "![",
        "figures/particles_descriptors.png",
        "## Version history",
        "## Files",
        "data/voxels_16/",
        "creativecommons.org/licenses/by/4.0",
    ):
        assert needle in text, needle


def test_validate_card_rejects_bad_headers():
    with pytest.raises(InputError, match="license is missing"):
        validate_card("---\npretty_name: x\nsize_categories: [n<1K]\ntask_categories: [other]\n---\n# x\n")
    with pytest.raises(InputError, match="size_categories"):
        validate_card("---\nlicense: mit\npretty_name: x\nsize_categories: [tiny]\ntask_categories: [other]\n---\n")
    with pytest.raises(InputError, match="invalid dataset card metadata"):
        validate_card("---\nlicense: [unclosed\n---\n# x\n")
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K" and size_category(10**6) == "1M<n<10M"


def test_statistics_tables_match_the_data(release):
    """Closed loop: every number in the descriptor table is recomputed from the parquet shards (4 s.f.)."""
    text = (release / "README.md").read_text()
    files = sorted((release / "data" / "particles").glob("*.parquet"))
    t = pq.read_table(files)
    for col in ("volume_um3", "sphericity", "n_grains"):
        x = t.column(col).to_numpy().astype(float)
        expect = [x.mean(), x.std(ddof=1), x.min(), *np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95]), x.max()]
        row = _table_row(text, col)
        got = [float(v) for v in row[2:]]
        np.testing.assert_allclose(got, expect, rtol=5e-4)  # the card prints 4 significant figures
    assert _table_row(text, "volume_um3")[1] == "µm³"
    # the item id is an index, not a descriptor
    assert "| `particle_id` |" not in text


def test_comparison_tables(release):
    d = release / "validation" / "shells"
    d.mkdir(parents=True)
    (d / "comparison.json").write_text(
        json.dumps(
            {
                "d_max_um": {"wasserstein1": 0.4123456, "ks": 0.061, "n_measured": 1590, "n_simulated": 5000},
                "sphericity": {"wasserstein1": 0.0123, "ks": 0.05, "n_measured": 1590, "n_simulated": 5000},
            }
        )
    )
    text = render_card(release, RELEASE)
    assert "## Measured vs generated" in text and "### `validation/shells`" in text
    assert _table_row(text, "d_max_um") == ["`d_max_um`", "0.4123", "0.061", "1590", "5000"]
    assert "validation/shells/histograms.png" not in text
    (d / "histograms.png").write_bytes(b"\x89PNG")
    assert "](validation/shells/histograms.png)" in render_card(release, RELEASE)
    (d / "comparison.json").write_text(json.dumps({"d_max_um": {"ks": 0.1}}))
    with pytest.raises(InputError, match="wasserstein1") as e:
        render_card(release, RELEASE)
    assert "comparison.json" in str(e.value)


def test_hdf5_and_mesh_sections(release):
    text = render_card(release, RELEASE)
    assert "import h5py" not in text and "import meshio" not in text
    (release / "voxels").mkdir()
    (release / "voxels" / "particles_64.h5").write_bytes(b"x")
    (release / "meshes").mkdir()
    (release / "meshes" / "particle_00000.vtu").write_bytes(b"x")
    text = render_card(release, RELEASE)
    assert 'h5py.File("voxels/particles_64.h5")' in text and 'meshio.read("meshes/particle_00000.vtu")' in text
    assert "voxels/" in text.split("## Files")[1]


def test_load_dataset_every_config(release, tmp_path):
    """downstream: datasets.load_dataset(folder, config) for every parquet config in the card."""
    import datasets

    for config in ("particles", "voxels_16"):
        ds = datasets.load_dataset(str(release), config, split="train", cache_dir=str(tmp_path / "cache"))
        assert ds.num_rows == 23
        assert ds["particle_id"] == list(range(23))
    assert isinstance(ds.features["labels"], datasets.Array3D)
    ds = ds.with_format("numpy")
    for k in (0, 11, 22):
        np.testing.assert_array_equal(ds[k]["labels"], shardfns.item(7, k)["labels"])


def test_card_command_rerenders_and_keeps_manifest_valid(release, capsys):
    before = (release / "README.md").read_bytes()
    (release / "README.md").write_text("stale")  # e.g. hand-edited
    assert main(["card", str(release)]) == 0
    assert (release / "README.md").read_bytes() == before  # deterministic rendering
    verify_manifest(release)
    assert main(["card", str(release), "--figures"]) == 0
    verify_manifest(release)
    # refused when a data file no longer matches the manifest (the card would describe other data)
    victim = next((release / "data" / "particles").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-1])
    capsys.readouterr()
    assert main(["card", str(release)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and victim.name in err


def test_comparison_from_compare_module(release, rng):
    """The contract with nmc_dataset.compare: its comparison.json and histograms land in the card."""
    from scipy.stats import ks_2samp, wasserstein_distance

    from nmc_dataset.compare import compare_descriptors

    meas = {"elongation": rng.beta(8, 2, 400)}
    sim = {"elongation": rng.beta(7, 2, 900)}
    compare_descriptors(meas, sim, release / "validation" / "shells", title="shells")
    text = render_card(release, RELEASE)
    row = _table_row(text, "elongation")
    assert float(row[1]) == pytest.approx(wasserstein_distance(meas["elongation"], sim["elongation"]), rel=5e-4)
    assert float(row[2]) == pytest.approx(ks_2samp(meas["elongation"], sim["elongation"]).statistic, rel=5e-4)
    assert row[3:] == ["400", "900"]
    assert "](validation/shells/histograms.png)" in text
