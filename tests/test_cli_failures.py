"""Every failure is one line, exit 2, and leaves the user's files as they were.

Each case runs the console script in a subprocess, as a user would, against a folder holding the
user's own files, and checks: the exit code, exactly one ``error:`` line on stderr and no
traceback, every pre-existing file byte-identical afterwards, and no partial output left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.particles.fixtures import write_models

ENV = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def cli(*args, cwd=None, env=None):
    """Run ``nmc-dataset ARGS`` in a subprocess; return (exit code, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "nmc_dataset.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**ENV, **(env or {})},
        timeout=600,
    )
    return r.returncode, r.stdout, r.stderr


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code, err, *needles, expect_code=2):
    """One ``error:`` line, the last on stderr (progress lines of the work done before may precede it)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expect_code, err
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def assert_no_partial(folder: Path):
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".part") or ".part." in p.name]
    assert not left, left


def user_folder(root: Path, name: str, files: dict) -> Path:
    d = root / name
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


# --------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small real inputs made through the CLI: models, shells, EBSD sections, tessellations."""
    root = tmp_path_factory.mktemp("inputs")
    shell, grain = write_models(root / "models")
    assert cli("sample-shells", shell, "-n", "20", "--seed", "1", "--out", root / "shells.parquet")[0] == 0
    assert (
        cli(
            "phantom-ebsd",
            "--out",
            root / "scans",
            "--n-central",
            "1",
            "--n-off-center",
            "0",
            "--radius-px",
            "24",
            "--seed",
            "1",
        )[0]
        == 0
    )
    assert (
        cli("import-ebsd", *sorted((root / "scans").glob("*.ang")), "--out", root / "sections", "--central", "all")[0]
        == 0
    )
    assert cli("fit-sections", root / "sections", "--out", root / "tess", "--steps", "5")[0] == 0
    return {
        "root": root,
        "shell": shell,
        "grain": grain,
        "shells": root / "shells.parquet",
        "sections": root / "sections",
        "tess": root / "tess",
        "scans": sorted((root / "scans").glob("*.ang")),
    }


MINE = {"README.md": "my own notes\n", "notes.txt": "private\n", "figures/my_plot.png": "not a png\n"}


def _folder_cases(inputs):
    i = inputs
    return {
        "describe-shells": ["describe-shells", i["shells"], "--out"],
        "describe-grains": ["describe-grains", i["grain"], "--against", i["tess"], "--samples", "1", "--out"],
        "fit-sections": ["fit-sections", i["sections"], "--steps", "3", "--out"],
        "import-ebsd": ["import-ebsd", *i["scans"], "--central", "all", "--out"],
        "phantom-ebsd": ["phantom-ebsd", "--n-central", "1", "--n-off-center", "0", "--radius-px", "12", "--out"],
        "generate": [
            "generate",
            "--shell-model",
            i["shell"],
            "--grain-model",
            i["grain"],
            "-n",
            "1",
            "--voxel-size-um",
            "0.1",
            "--formats",
            "params",
            "--out",
        ],
        "fit-grains": ["fit-grains", i["tess"], "--recipe", ROOT / "recipes" / "quick.yaml", "--out"],
    }


ROOT = Path(__file__).resolve().parents[1]
FOLDER_COMMANDS = [
    "describe-shells",
    "describe-grains",
    "fit-sections",
    "import-ebsd",
    "phantom-ebsd",
    "generate",
    "fit-grains",
]


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_folder_commands_refuse_a_folder_of_user_files(inputs, tmp_path, command):
    d = user_folder(tmp_path, "d", MINE)
    before = snapshot(d)
    code, _, err = cli(*_folder_cases(inputs)[command], d)
    assert_one_line_error(code, err, "did not write", "--force")
    assert snapshot(d) == before
    assert_no_partial(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        "describe-shells",
        pytest.param("fit-sections", marks=pytest.mark.slow),  # ~19 s, the same rule as describe-shells
        pytest.param("generate", marks=pytest.mark.slow),  # ~13 s
    ],
)
def test_force_writes_beside_user_files_and_rerun_replaces_only_its_own(inputs, tmp_path, command):
    d = user_folder(tmp_path, "d", {"precious.txt": "keep me\n", "sub/also.txt": "me too\n"})
    before = snapshot(d)
    args = _folder_cases(inputs)[command]
    code, _, err = cli(*args, d, "--force")
    assert code == 0, err
    after = snapshot(d)
    assert {k: after[k] for k in before} == before
    marker = json.loads((d / ".nmc-dataset.json").read_text())
    assert marker["command"] == command and sorted(marker["foreign"]) == sorted(before)
    assert set(marker["files"]).isdisjoint(before)
    # the same command again (no --force needed: the folder is its own plus recorded foreign files)
    code, _, err = cli(*args, d, "--force")
    assert code == 0, err
    again = snapshot(d)
    assert {k: again[k] for k in before} == before
    assert set(again) == set(after)


def test_a_report_folder_of_one_command_is_refused_to_another(inputs, tmp_path):
    rep = tmp_path / "report"
    assert cli("describe-shells", inputs["shells"], "--out", rep)[0] == 0
    before = snapshot(rep)
    code, _, err = cli("describe-grains", inputs["grain"], "--against", inputs["tess"], "--samples", "1", "--out", rep)
    assert_one_line_error(code, err, "describe-shells")
    assert snapshot(rep) == before


@pytest.mark.parametrize("out", [".", ""])
def test_out_that_names_no_folder_is_refused(inputs, tmp_path, out):
    (tmp_path / "mine.txt").write_text("x")
    before = snapshot(tmp_path)
    code, _, err = cli("describe-shells", inputs["shells"], "--out", out, cwd=tmp_path)
    assert_one_line_error(code, err, "does not name")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["sample-shells", "phantom-ct", "sample-grains"])
def test_file_outputs_never_overwrite_a_user_file(inputs, tmp_path, command):
    suffix = {"sample-shells": ".parquet", "phantom-ct": ".tif", "sample-grains": ".h5"}[command]
    target = tmp_path / f"mine{suffix}"
    target.write_bytes(b"my own data")
    args = {
        "sample-shells": ["sample-shells", inputs["shell"], "-n", "3", "--seed", "1"],
        "phantom-ct": ["phantom-ct", "--size", "16", "--n-particles", "1"],
        "sample-grains": ["sample-grains", inputs["grain"], "--size-px", "8"],
    }[command]
    code, _, err = cli(*args, "--out", target)
    assert_one_line_error(code, err, "not written by nmc-dataset")
    assert target.read_bytes() == b"my own data"
    assert_no_partial(tmp_path)


# --------------------------------------------------------------------------- run / release folders
def _tiny_recipe(tmp_path, inputs) -> Path:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "format_version: 1\nname: tiny\nseed: 3\n"
        f"shells: {{model: {inputs['shell']}, n_samples: 20, describe: false}}\n"
        "dataset: {name: tiny, version: 0.1.0, shells: 20, shard_size: 10, figures: false}\n"
    )
    return recipe


def test_run_refuses_a_folder_with_user_files_and_force_never_overwrites_them(inputs, tmp_path):
    recipe = _tiny_recipe(tmp_path, inputs)
    u = user_folder(tmp_path, "u", MINE)
    before = snapshot(u)
    code, _, err = cli("run", recipe, "--out", u)
    assert_one_line_error(code, err, "did not write", "README.md")
    code, _, err = cli("run", recipe, "--out", u, "--force")
    assert_one_line_error(code, err, "README.md", "lies where the build writes")
    assert snapshot(u) == before


def test_run_force_builds_beside_user_files_and_keeps_them_out_of_the_manifest(inputs, tmp_path):
    recipe = _tiny_recipe(tmp_path, inputs)
    u = user_folder(tmp_path, "u", {"notes.txt": "private\n", "drafts/plan.md": "secret\n"})
    before = snapshot(u)
    code, _, err = cli("run", recipe, "--out", u, "--force")
    assert code == 0, err
    after = snapshot(u)
    assert {k: after[k] for k in before} == before
    listed = {f["path"] for f in json.loads((u / "manifest.json").read_text())["files"]}
    assert listed and listed.isdisjoint(before)
    # publish --dry-run lists exactly the manifest's files: the user's are never uploaded
    code, out, err = cli("publish", u, "--to", "hf:org/tiny", "--dry-run")
    assert code == 0, err
    assert "notes.txt" not in out and "plan.md" not in out


# --------------------------------------------------------------------------- per-item failures
def test_generate_isolates_a_failing_particle(inputs, tmp_path):
    out = tmp_path / "gen"
    code, _, err = cli(
        "generate",
        "--shell-model",
        inputs["shell"],
        "--grain-model",
        inputs["grain"],
        "-n",
        "3",
        "--voxel-size-um",
        "0.1",
        "--formats",
        "params,voxels,surface",
        "--seed",
        "2",
        "--out",
        out,
        env={"NMC_DATASET_FAULTS": "particle:1"},
    )
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "1 of 3 particles" in lines[0] and "id 1" in lines[0]
    rec = json.loads((out / "generate.json").read_text())
    assert [p["particle_id"] for p in rec["particles"]] == [0, 2]
    assert rec["failed"][0]["particle_id"] == 1 and "injected fault" in rec["failed"][0]["error"]
    import h5py
    import pyarrow.parquet as pq

    assert pq.read_table(out / "particles.parquet").column("particle_id").to_pylist() == [0, 2]
    with h5py.File(out / "voxels.h5", "r") as f:
        assert sorted(f["particles"]) == ["000000", "000002"]
    assert not list(out.rglob("particle_000001*"))


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(inputs, tmp_path):
    args = [
        "generate",
        "--shell-model",
        inputs["shell"],
        "--grain-model",
        inputs["grain"],
        "-n",
        "1",
        "--voxel-size-um",
        "0.1",
        "--formats",
        "params",
        "--out",
        tmp_path / "g",
    ]
    code, _, err = cli(*args, env={"NMC_DATASET_FAULTS": "particle:0"})
    assert code == 2 and "Traceback" not in err
    code, _, err = cli("--debug", *args[:-1], tmp_path / "g2", env={"NMC_DATASET_FAULTS": "particle:0"})
    assert code != 0 and "Traceback" in err


# --------------------------------------------------------------------------- CT volumes
def test_fit_shells_takes_nan_as_outside_the_field_of_view(tmp_path):
    from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model

    ph = make_ct_phantom(
        reference_shell_model(mean_radius_vox=6.0), shape=(64,) * 3, n_particles=20, rng=np.random.default_rng(3)
    )
    vol = ph.volume.astype(np.float32)
    vol[:, :, :12] = np.nan  # a reconstruction's empty corner
    np.save(tmp_path / "nan.npy", vol)
    code, out, err = cli("fit-shells", tmp_path / "nan.npy", "--voxel-size-um", "0.128", "--out", tmp_path / "m.json")
    assert code == 0, err
    assert "outside the field of view" in out


def test_fit_shells_uses_instance_labels_as_given(tmp_path):
    from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model

    ph = make_ct_phantom(
        reference_shell_model(mean_radius_vox=6.0), shape=(64,) * 3, n_particles=20, rng=np.random.default_rng(4)
    )
    np.save(tmp_path / "labels.npy", ph.labels.astype(np.uint16))
    inner = [k for k in np.unique(ph.labels) if k]  # every particle the phantom placed
    code, out, err = cli(
        "fit-shells", tmp_path / "labels.npy", "--voxel-size-um", "0.128", "--out", tmp_path / "m.json"
    )
    assert code == 0, err
    assert "labels input" in out and "instance labels used as given" in out
    model = json.loads((tmp_path / "m.json").read_text())
    # every particle that does not touch the border is kept (the grey pipeline merged or split some)
    from nmc_dataset.shells._segment import _remove_border

    lab = ph.labels.astype(np.int32).copy()
    _remove_border(lab)
    assert f"-> {len(np.unique(lab)) - 1} particles" in model["source"]["segmentation"]
    assert len(inner) >= len(np.unique(lab)) - 1


def test_phase_label_volume_without_phase_names_the_option(tmp_path):
    v = np.full((32, 32, 32), 2, np.uint8)  # 2: pore, 1: particles (many regions), 0: outside
    for z in (3, 13, 23):
        for y in (3, 13, 23):
            v[z : z + 6, y : y + 6, 4:10] = 1
    v[:, :, 28:] = 0
    np.save(tmp_path / "phases.npy", v)
    code, _, err = cli("fit-shells", tmp_path / "phases.npy", "--voxel-size-um", "0.1", "--out", tmp_path / "m.json")
    assert_one_line_error(code, err, "--phase")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "abc"])
def test_bad_voxel_sizes_are_one_line(tmp_path, value):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.uint8))
    code, _, err = cli("fit-shells", tmp_path / "v.npy", "--voxel-size-um", value, "--out", tmp_path / "m.json")
    assert_one_line_error(code, err, "--voxel-size-um")


def test_implausible_voxel_size_is_warned_before_anything_runs(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.uint8))
    code, _, err = cli("fit-shells", tmp_path / "v.npy", "--voxel-size-um", "128", "--out", tmp_path / "m.json")
    assert code == 2 and "outside the usual 0.001-10 µm" in err.splitlines()[0]


# --------------------------------------------------------------------------- publish
@pytest.fixture(scope="module")
def tiny_build(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    out = root / "build"
    code, _, err = cli("run", _tiny_recipe(root, inputs), "--out", out)
    assert code == 0, err
    return out


def test_publish_without_network_is_one_line_and_never_prints_the_token(tiny_build):
    token = "hf_SECRETtoken1234567890"
    before = snapshot(tiny_build)
    code, out, err = cli(
        "publish",
        tiny_build,
        "--to",
        "hf:org/tiny",
        "--endpoint",
        "http://127.0.0.1:9",
        env={"HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "2"},
    )
    assert_one_line_error(code, err, "Hugging Face Hub")
    assert token not in err and token not in out
    visible = {k: v for k, v in snapshot(tiny_build).items() if not k.startswith(".")}
    assert visible == {k: v for k, v in before.items() if not k.startswith(".")}


def test_publish_revision_must_match_the_dataset_version(tiny_build):
    code, _, err = cli("publish", tiny_build, "--to", "hf:org/tiny", "--revision", "v1.0.0", "--dry-run")
    assert_one_line_error(code, err, "v1.0.0", "0.1.0")
    code, out, err = cli("publish", tiny_build, "--to", "hf:org/tiny", "--revision", "v0.1.0-rc1", "--dry-run")
    assert code == 0, err


def test_card_states_that_inputs_were_phantoms(tmp_path):
    from nmc_dataset.pipeline._card import render_card

    (tmp_path / "data").mkdir()
    text = render_card(
        tmp_path,
        {
            "name": "x",
            "version": "0.1.0",
            "inputs": {
                "shells": {"kind": "phantom", "text": "a synthetic grey-value CT phantom of a known shell model"},
                "sections": {
                    "kind": "measured",
                    "text": "2 EBSD scan(s) (a.ang, b.ctf)",
                    "files": [{"name": "a.ang", "sha256": "ab" * 32}, {"name": "b.ctf", "sha256": "cd" * 32}],
                },
            },
        },
    )
    assert "segmented from a synthetic grey-value CT phantom" in text
    assert "nano-CT" not in text and "as in the measured particles" not in text
    assert "a known-truth phantom" in text and "`a.ang` sha256 `abababababababab" in text
