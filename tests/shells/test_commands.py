"""The shell CLI end to end, the `shells:` recipe section, and every user error (exit 2, one line, nothing written)."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest

from nmc_dataset.cli import _main as cli
from nmc_dataset.shells._sigma_rule import SIGMA_RANGE
from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ph = make_ct_phantom(
        reference_shell_model(7.0), shape=(80, 80, 80), n_particles=14, rng=np.random.default_rng(11), dtype="uint16"
    )
    np.save(d / "ct.npy", ph.volume)
    code = cli.main(
        ["fit-shells", str(d / "ct.npy"), "--voxel-size-um", "0.128", "--out", str(d / "model.json"), "--seed", "3"]
    )
    assert code == 0
    return d, ph


def _one_line_error(capsys, *names):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for n in names:
        assert n in err, err
    return err


def test_fit_sample_describe(fitted, capsys):
    d, ph = fitted
    doc = json.loads((d / "model.json").read_text())
    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "shell-model.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["n_particles"] == ph.n_particles == 14 and doc["voxel_size_um"] == 0.128
    assert [e["degree"] for e in doc["degrees"]] == list(range(10))
    assert doc["source"]["input_kind"] == "grey" and doc["source"]["seed"] == 3
    assert 0.9 < doc["star_volume_fraction"]["mean"] <= 1
    # 14 particles: no hold-out self-check; the file says why and how many it needs
    assert doc["model"] == "independent" and doc["model_selection"]["particles_needed"] == 40
    assert doc["families"] == "constrained" and doc["degrees"][0]["family"] in ("lognormal", "gamma")
    mi = doc["source"]["measurement"]
    assert mi["method"] == "subvoxel" and mi["corrected"] and 1.0 < mi["blur_sigma_vox"] < 2.0
    assert SIGMA_RANGE[0] <= mi["sigma_rule"]["suggested_sigma_vox"] <= SIGMA_RANGE[1]  # the σ rule's advice
    # the default σ is the rule's, from a pilot of (here all 14) particles measured with σ = 1
    assert mi["sigma_choice"] == "auto" and mi["sigma_pilot"]["pilot_particles"] == 14
    assert mi["sigma_vox"] == mi["sigma_pilot"]["suggested_sigma_vox"] != 1.0  # radius ~7: a narrower kernel
    assert mi["noise_corrected"] and len(mi["noise_fraction"]) == 10
    t = pq.read_table(d / "model.coefficients.parquet")
    assert t.num_rows == 14 and "a_l9_m-9" in t.column_names and "star_volume_fraction" in t.column_names

    assert (
        cli.main(
            ["sample-shells", str(d / "model.json"), "-n", "300", "--seed", "5", "--out", str(d / "shells.parquet")]
        )
        == 0
    )
    t = pq.read_table(d / "shells.parquet")
    meta = json.loads(t.schema.metadata[b"nmc_dataset"])
    assert t.num_rows == 300 and meta["seed"] == 5 and meta["model_format_version"] == 2
    assert meta["format"] == "nmc-dataset/shells" and meta["voxel_size_um"] == 0.128
    # reproducible: the same seed gives the same bytes of coefficients
    assert (
        cli.main(
            ["sample-shells", str(d / "model.json"), "-n", "300", "--seed", "5", "--out", str(d / "again.parquet")]
        )
        == 0
    )
    assert pq.read_table(d / "again.parquet").equals(t)

    rep = d / "report"
    assert (
        cli.main(
            [
                "describe-shells",
                str(d / "shells.parquet"),
                "--against",
                str(d / "model.json"),
                "--subdivisions",
                "3",
                "--out",
                str(rep),
            ]
        )
        == 0
    )
    comp = json.loads((rep / "comparison.json").read_text())
    assert set(comp) == {"d_max", "compactness", "aspect_ratio", "sphericity", "volume", "area"}
    for v in comp.values():
        assert set(v) == {"wasserstein1", "ks", "n_measured", "n_simulated"}
        assert v["n_measured"] == 14 and v["n_simulated"] == 300
    # d_max in µm: particles of radius ~7 voxels * 0.128 µm -> ~1.8 µm
    desc = pq.read_table(rep / "descriptors.parquet").to_pandas()
    assert 1.3 < desc["d_max"].median() < 2.5
    for f in ("comparison.md", "histograms.png", "d_max.png", "summary.json", "measured_descriptors.parquet"):
        assert (rep / f).is_file()
    # describe without --against: descriptors only
    assert (
        cli.main(["describe-shells", str(d / "shells.parquet"), "--subdivisions", "3", "--out", str(d / "rep2")]) == 0
    )
    assert not (d / "rep2" / "comparison.json").exists() and (d / "rep2" / "descriptors.parquet").is_file()


def _assert_nothing_written(folder, before):
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize(
    "case",
    [
        "garbage_tif",
        "2d",
        "empty",
        "absent_phase",
        "zero_voxel",
        "negative_voxel",
        "holdout",
        "measure_sigma",
        "measure_sigma_text",
        "measure_sigma_nan",
    ],
)
def test_fit_errors(tmp_path, capsys, case):
    args = ["--voxel-size-um", "0.128"]
    if case == "garbage_tif":
        vol = tmp_path / "vol.tif"
        vol.write_bytes(b"\x00garbage" * 10)
        expect = "cannot read TIFF"
    elif case == "2d":
        vol = tmp_path / "vol.npy"
        np.save(vol, np.zeros((30, 30), np.uint16))
        expect = "expected a 3D volume"
    elif case == "empty":
        vol = tmp_path / "vol.npy"
        np.save(vol, np.zeros((30, 30, 30), np.uint8))
        expect = "empty"
    elif case == "absent_phase":
        vol = tmp_path / "vol.npy"
        v = np.ones((30, 30, 30), np.uint8)
        v[10:20, 10:20, 10:20] = 2
        np.save(vol, v)
        args += ["--phase", "5"]
        expect = "phase 5 does not occur"
    elif case == "holdout" or case.startswith("measure_sigma"):
        vol = tmp_path / "vol.npy"
        np.save(vol, np.zeros((30, 30, 30), np.uint8))
        bad = {"measure_sigma": "0", "measure_sigma_text": "wide", "measure_sigma_nan": "nan"}
        args += ["--holdout", "1.5"] if case == "holdout" else ["--measure-sigma", bad[case]]
        expect = "--holdout must be in [0, 1)" if case == "holdout" else "--measure-sigma must be > 0 voxels or 'auto'"
    else:
        vol = tmp_path / "vol.npy"
        np.save(vol, np.zeros((30, 30, 30), np.uint8))
        args = ["--voxel-size-um", "0" if case == "zero_voxel" else "-0.1"]
        expect = "must be a finite length > 0"
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main(["fit-shells", str(vol), "--out", str(tmp_path / "model.json")] + args)
    assert code == 2
    _one_line_error(capsys, "--voxel-size-um" if "voxel" in case else vol.name, expect)
    _assert_nothing_written(tmp_path, before)


def test_sample_and_describe_errors(fitted, tmp_path, capsys):
    d, _ = fitted
    doc = json.loads((d / "model.json").read_text())
    doc["format_version"] = 3
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(doc))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["sample-shells", str(newer), "-n", "10", "--seed", "1", "--out", str(tmp_path / "s.parquet")]) == 2
    _one_line_error(capsys, "newer.json", "format_version 3")
    assert (
        cli.main(
            ["sample-shells", str(d / "model.json"), "-n", "0", "--seed", "1", "--out", str(tmp_path / "s.parquet")]
        )
        == 2
    )
    _one_line_error(capsys, "model.json", "-n must be >= 1")
    (tmp_path / "x.parquet").write_text("not parquet")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["describe-shells", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "rep")]) == 2
    _one_line_error(capsys, "x.parquet")
    assert (
        cli.main(
            ["sample-shells", str(d / "model.json"), "-n", "5", "--seed", "1", "--out", str(tmp_path / "ok.parquet")]
        )
        == 0
    )
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert (
        cli.main(
            ["describe-shells", str(tmp_path / "ok.parquet"), "--against", str(newer), "--out", str(tmp_path / "rep")]
        )
        == 2
    )
    _one_line_error(capsys, "newer.json")
    _assert_nothing_written(tmp_path, before)


def test_recipe_section(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "format_version: 1\nseed: 4\nshells:\n  phantom: {size: 64, n_particles: 8, mean_radius_vox: 6}\n"
        "  n_samples: 100\n  subdivisions: 3\n"
    )
    assert cli.main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    sh = tmp_path / "out" / "shells"
    doc = json.loads((sh / "shell_model.json").read_text())
    assert doc["n_particles"] == 8 and doc["source"]["phantom"]["n_particles_placed"] == 8
    assert pq.read_table(sh / "shells.parquet").num_rows == 100
    assert (sh / "report" / "comparison.json").is_file()
    capsys.readouterr()
    # bad keys are named
    recipe.write_text("format_version: 1\nseed: 4\nshells:\n  phantom: {}\n  degree: -1\n")
    assert cli.main(["run", str(recipe), "--out", str(tmp_path / "o2")]) == 2
    _one_line_error(capsys, "shells.degree")
    recipe.write_text("format_version: 1\nseed: 4\nshells:\n  phantom: {}\n  model: m.json\n")
    assert cli.main(["run", str(recipe), "--out", str(tmp_path / "o3")]) == 2
    _one_line_error(capsys, "exactly one of volume, phantom or model")


def test_measure_sigma_fixed_or_automatic_is_deterministic(fitted, tmp_path, capsys):
    d, _ = fitted
    base = ["fit-shells", str(d / "ct.npy"), "--voxel-size-um", "0.128", "--seed", "3", "--out"]
    assert cli.main(base + [str(tmp_path / "again.json")]) == 0
    assert "chosen automatically" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    first = json.loads((d / "model.json").read_text())
    assert again["source"]["measurement"] == first["source"]["measurement"]  # same input, same σ and pilot
    assert again["degrees"] == first["degrees"]
    assert cli.main(base + [str(tmp_path / "fixed.json"), "--measure-sigma", "1", "--no-noise-correction"]) == 0
    mi = json.loads((tmp_path / "fixed.json").read_text())["source"]["measurement"]
    assert mi["sigma_choice"] == "fixed" and mi["sigma_vox"] == 1.0 and "sigma_pilot" not in mi
    assert not mi["noise_corrected"] and mi["noise_fraction"] is None
