"""`nmc-dataset generate`: bad inputs give one line, exit 2, and write nothing."""

import json
import shutil
import sys

import numpy as np
import pytest

from nmc_dataset.cli import _main as cli


def _run(capsys, model_paths, out, *extra, shell=None, grain=None):
    argv = [
        "generate",
        "--shell-model",
        str(shell or model_paths[0]),
        "--grain-model",
        str(grain or model_paths[1]),
        "-n",
        "1",
        "--seed",
        "1",
        "--out",
        str(out),
        *extra,
    ]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_refused(code, err, out, *needles):
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: ")
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def test_shell_model_of_newer_version(tmp_path, capsys, model_paths):
    doc = json.loads(model_paths[0].read_text())
    doc["format_version"] = 99
    bad = tmp_path / "shell_v99.json"
    bad.write_text(json.dumps(doc))
    code, err = _run(capsys, model_paths, tmp_path / "out", shell=bad)
    _assert_refused(code, err, tmp_path / "out", "shell_v99.json", "format_version 99")


def test_grain_model_of_newer_version(tmp_path, capsys, model_paths):
    g = tmp_path / "grain_v2"
    shutil.copytree(model_paths[1], g)
    doc = json.loads((g / "model.json").read_text())
    doc["format_version"] = 2
    (g / "model.json").write_text(json.dumps(doc))
    code, err = _run(capsys, model_paths, tmp_path / "out", grain=g)
    _assert_refused(code, err, tmp_path / "out", "model.json", "format_version 2")


def test_grain_model_without_pixel_size(tmp_path, capsys, model_paths):
    g = tmp_path / "grain_nopx"
    shutil.copytree(model_paths[1], g)
    doc = json.loads((g / "model.json").read_text())
    del doc["pixel_size_um"]
    (g / "model.json").write_text(json.dumps(doc))
    code, err = _run(capsys, model_paths, tmp_path / "out", grain=g)
    _assert_refused(code, err, tmp_path / "out", "model.json", "pixel_size_um")


def test_volume_too_large_for_memory(tmp_path, capsys, model_paths):
    code, err = _run(capsys, model_paths, tmp_path / "out", "--voxel-size-um", "0.0002")
    _assert_refused(code, err, tmp_path / "out", "--voxel-size-um", "GiB")


def test_volume_over_the_given_memory_limit(tmp_path, capsys, model_paths):
    code, err = _run(capsys, model_paths, tmp_path / "out", "--voxel-size-um", "0.01", "--max-memory-gib", "0.05")
    _assert_refused(code, err, tmp_path / "out", "GiB", "0.05 GiB")


def test_volume_mesh_without_gmsh_names_the_extra(tmp_path, capsys, model_paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "gmsh", None)  # as if the [mesh] extra were not installed
    code, err = _run(capsys, model_paths, tmp_path / "out", "--formats", "params,volume-mesh")
    _assert_refused(code, err, tmp_path / "out", "pip install gmsh", ".[mesh]")


@pytest.mark.parametrize(
    "extra, needle",
    [(["--formats", "params,stl"], "'stl'"), (["--voxel-size-um", "0"], "--voxel-size-um"), (["-n", "0"], "-n")],
)
def test_bad_options(tmp_path, capsys, model_paths, extra, needle):
    code, err = _run(capsys, model_paths, tmp_path / "out", *extra)
    _assert_refused(code, err, tmp_path / "out", needle)


def test_missing_models(tmp_path, capsys, model_paths):
    code, err = _run(capsys, model_paths, tmp_path / "out", shell=tmp_path / "nope.json")
    _assert_refused(code, err, tmp_path / "out", "nope.json", "not found")
    code, err = _run(capsys, model_paths, tmp_path / "out", grain=tmp_path / "nodir")
    _assert_refused(code, err, tmp_path / "out", "nodir")


def test_generate_params_only_is_deterministic(tmp_path, capsys, model_paths):
    import pyarrow.parquet as pq

    for name in ("a", "b"):
        code, _ = _run(capsys, model_paths, tmp_path / name, "--formats", "params")
        assert code == 0
    ta, tb = (pq.read_table(tmp_path / n / "grains.parquet") for n in ("a", "b"))
    assert ta.equals(tb)
    rec = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert rec["format"] == "nmc-dataset/particles-run" and rec["n"] == 1
    listed = sorted(p.name for p in (tmp_path / "a").iterdir() if not p.name.startswith("."))
    assert listed == ["generate.json", "grains.parquet", "particles.parquet"]
    assert np.isfinite(pq.read_table(tmp_path / "a" / "particles.parquet").column("shell_volume_um3").to_numpy()).all()


def test_refuses_to_replace_an_unrelated_folder(tmp_path, capsys, model_paths):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    code, err = _run(capsys, model_paths, out, "--formats", "params")
    assert code == 2 and "precious" in err and err.count("\n") == 0
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--formats", "params,volume-mesh", "--mesh-size-um", "5"], ("--mesh-size-um", "larger than particle 0")),
        (["--formats", "params,volume-mesh", "--min-elements-per-grain", "0"], ("--min-elements-per-grain", ">= 1")),
        (["--formats", "params,volume-mesh", "--element-order", "3"], ("--element-order",)),
        (["--formats", "params,neper"], ("neper", "fit-orientations")),
    ],
)
def test_mesh_and_simulator_options_are_checked_before_anything_runs(tmp_path, capsys, model_paths, extra, needles):
    """A mesh size beyond the particle, no element per grain, an element order other than 1/2, a
    simulator hand-off without an orientation model: one line, nothing written."""
    code, err = _run(capsys, model_paths, tmp_path / "out", *extra)
    _assert_refused(code, err, tmp_path / "out", *needles)
