"""The ``sequences`` release config: a real recipe (real shell model + GrainModel with an orientation
model, packed electrodes evolved through a cycling protocol, every state rendered by the CT
simulator) run with ``nmc-dataset run``; 1 vs 2 workers byte-identical; loaded back with
``datasets.load_dataset``; a zero protocol gives identical states with zero displacement; a pure
compaction protocol gives exactly the affine map on the CT grid; resume after a lost shard; bad
sections refused with one line before anything is written.

Volumes are tiny (20³ CT voxels of 0.2 µm from 40³ labels) so the module runs in well under a
minute on one core.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from nmc_dataset.cli._main import main
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.pipeline._recipe import run_recipe
from nmc_dataset.pipeline._stage_sequences import noise_seed, sequence_draws
from nmc_dataset.tomography._evolve import validate_protocol
from tests.particles.fixtures import write_models

SIZE = 20
STEPS = 3
SPLITS = {"train": 2, "validation": 1}
#: cracks on every interface from the first state on, so a 4 µm box surely has some
PROTOCOL = {"cycles": 1.0, "cracks": {"onset_cycle": 0.0, "misfit_threshold": 0.0, "growth_misfit": 0.0}}
ZERO = {
    "soc": {"min": 0.0, "max": 0.0},
    "cracks": {"nuclei_per_cycle": 0},
    "compaction": {"strain": {}, "random_vox": 0.0},
    "rigid": {"translation_vox": 0, "rotation_deg": 0},
}


def _tree_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".build" not in p.parts
    }


def _recipe(models, dataset=True, **seq) -> dict:
    shell, grain = models
    s = {
        "splits": SPLITS,
        "steps": STEPS,
        "size": SIZE,
        "voxel_size_um": 0.1,
        "solid_fraction": 0.45,
        "ct": {"preset": "lab-nanoct", "binning": 2},
        "protocol": PROTOCOL,
        "shell_model": str(shell),
        "grain_model": str(grain),
    }
    s.update(seq)
    r = {"format_version": 1, "seed": 3, "sequences": s}
    if dataset:
        r["dataset"] = {"name": "nmc811-seq-test", "version": "1.0.0", "authors": [{"name": "Doe, Jane"}]}
    return r


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _rows(out: Path, split: str = "train") -> list[dict]:
    import datasets

    if (out / "README.md").is_file():  # a release: the card declares the config
        d = datasets.load_dataset(str(out), "sequences", split=split)
    else:  # the bare shards (their schema carries the features)
        d = datasets.load_dataset(
            "parquet", data_files={split: str(out / "data" / "sequences" / f"{split}-*.parquet")}, split=split
        )
    d = d.with_format("numpy")
    return [d[i] for i in range(d.num_rows)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from nmc_dataset.ebsd._orientation_model import OrientationModel

    shell, grain = write_models(tmp_path_factory.mktemp("models"))
    OrientationModel(-8.0, 2.0).save(grain / "orientation_model.json")
    return shell, grain


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    """The same recipe built with 1 and with 2 workers."""
    root = tmp_path_factory.mktemp("seq")
    recipe = _write(root / "seq.yaml", _recipe(models))
    outs = []
    for w in (1, 2):
        out = root / f"w{w}"
        assert main(["run", str(recipe), "--out", str(out), "--workers", str(w)]) == 0
        outs.append(out)
    return recipe, outs


@pytest.mark.slow  # the two module builds (~30 s); the ct config's builds run by default
def test_one_and_two_workers_give_the_same_bytes(built):
    _, (a, b) = built
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert sorted(ta) == sorted(tb)
    names = sorted(k for k in ta if k.startswith("data/sequences/"))
    assert names == [
        "data/sequences/train-00000-of-00002.parquet",
        "data/sequences/train-00001-of-00002.parquet",
        "data/sequences/validation-00000-of-00001.parquet",
    ]
    assert all(ta[k] == tb[k] for k in ta), [k for k in ta if ta[k] != tb[k]]


@pytest.mark.slow  # the two module builds (~30 s); the ct config's builds run by default
def test_load_dataset_gives_one_row_per_state_with_fixed_shapes(built):
    import datasets

    _, (out, _) = built
    ds = datasets.load_dataset(str(out), "sequences")
    assert {s: ds[s].num_rows for s in ds} == {s: n * STEPS for s, n in SPLITS.items()}
    feats = ds["train"].features
    assert isinstance(feats["displacement"], datasets.Array4D) and feats["displacement"].shape == (SIZE,) * 3 + (3,)
    assert [feats[k].dtype for k in ("ct", "ct_reference", "phase", "particle", "grain", "crack", "displacement")] == [
        "float32",
        "float32",
        "uint8",
        "uint32",
        "uint32",
        "uint32",
        "float32",
    ]
    want_protocol = validate_protocol(PROTOCOL)
    for split in SPLITS:
        rows = _rows(out, split)
        for i, row in enumerate(rows):
            j, t = divmod(i, STEPS)
            assert (row["split"], int(row["index"]), int(row["sequence"]), int(row["step"])) == (split, i, j, t)
            for k in ("ct", "ct_reference", "phase", "particle", "grain", "crack"):
                assert np.asarray(row[k]).shape == (SIZE,) * 3
            u = np.asarray(row["displacement"])
            assert u.shape == (SIZE,) * 3 + (3,) and u.dtype == np.float32
            # seeds from (recipe seed, split, sequence) alone; new photon noise per state
            d = sequence_draws(3, split, j, 0.45)
            assert (row["pack_seed"], row["evolve_seed"], row["ct_seed"]) == (
                d["pack_seed"],
                d["evolve_seed"],
                d["ct_seed"],
            )
            assert row["noise_seed"] == noise_seed(d["ct_seed"], t)
            # the reference CT of every state is the CT of step 0 of its sequence
            assert np.array_equal(row["ct_reference"], rows[j * STEPS]["ct"])
            assert json.loads(row["protocol"]) == want_protocol
            summary = json.loads(row["summary"])
            assert summary["index"] == t and summary["cracks"] == row["n_cracks"] == len(summary["crack_list"])
            assert np.array_equal(row["particle"] > 0, row["phase"] == 1)
            if t == 0:  # the reference: no displacement, no crack
                assert np.all(u == 0) and row["n_cracks"] == 0 and not row["crack"].any()
            else:
                # material lost into cracks has no displacement; everything else moved
                assert row["n_cracks"] > 0 and np.isnan(u).any() == (row["crack_voxels"] > 0)
                assert 0 < row["max_displacement_vox"] == pytest.approx(float(np.nanmax(np.abs(u))))
                assert row["crack"].any()
        # a cycle: x rises to soc.max at half the cycle and returns
        soc = [float(r["soc"]) for r in rows[:STEPS]]
        assert soc[0] == 0 and soc[1] == pytest.approx(0.8) and soc[2] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow  # the two module builds (~30 s); the ct config's builds run by default
def test_card_shows_slices_over_time_and_displacement(built):
    from huggingface_hub import DatasetCard

    _, (out, _) = built
    card = DatasetCard((out / "README.md").read_text())
    cfg = {c["config_name"]: c for c in card.data.configs}["sequences"]
    assert [f["split"] for f in cfg["data_files"]] == ["train", "validation"]
    png = out / "figures" / "sequence_slices_over_time_and_displacement.png"
    assert png.is_file() and png.stat().st_size > 20_000
    text = (out / "README.md").read_text()
    assert "figures/sequence_slices_over_time_and_displacement.png" in text and "Array4D" in text
    assert (out / "models" / "grain_model" / "orientation_model.json").is_file()


@pytest.mark.slow  # the two module builds (~30 s); the ct config's builds run by default
def test_resume_rebuilds_only_a_lost_shard(built, tmp_path):
    recipe, (out, _) = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _tree_bytes(copy)
    (copy / "data" / "sequences" / "train-00001-of-00002.parquet").unlink()
    ctx = run_recipe(recipe, copy)
    assert ctx.outputs["sequences_release"] == {s: n * STEPS for s, n in SPLITS.items()}
    assert _tree_bytes(copy) == before


def test_zero_protocol_gives_identical_states_and_zero_displacement(models, tmp_path):
    recipe = _write(tmp_path / "zero.yaml", _recipe(models, dataset=False, splits={"test": 1}, protocol=ZERO))
    run_recipe(recipe, tmp_path / "out")
    rows = _rows(tmp_path / "out", "test")
    assert len(rows) == STEPS
    for row in rows[1:]:
        for k in ("phase", "particle", "grain", "crack"):
            assert np.array_equal(row[k], rows[0][k]), k
        assert np.all(np.asarray(row["displacement"]) == 0) and row["n_cracks"] == 0
        # the same object: the CTs differ by the new photon noise alone (zero mean)
        diff = np.asarray(row["ct"], np.float64) - np.asarray(rows[0]["ct"], np.float64)
        assert np.any(diff != 0) and abs(diff.mean()) < 4 * diff.std() / np.sqrt(diff.size)


def test_pure_compaction_is_exactly_the_affine_map_on_the_ct_grid(models, tmp_path):
    ezz, exy = -0.02, 0.01
    affine = {**ZERO, "compaction": {"strain": {"zz": ezz, "xy": exy}, "random_vox": 0.0}}
    recipe = _write(tmp_path / "aff.yaml", _recipe(models, dataset=False, splits={"test": 1}, protocol=affine))
    run_recipe(recipe, tmp_path / "out")
    rows = _rows(tmp_path / "out", "test")
    z, y, x = (a - (SIZE - 1) / 2 for a in np.indices((SIZE,) * 3, dtype=np.float64))
    for row in rows:
        s = float(row["cycle"])  # progress = cycle / cycles, cycles = 1
        u = np.asarray(row["displacement"], np.float64)
        # G (x - x_c) in label voxels, block-averaged and divided by the binning = G (X - X_c) in CT voxels
        assert np.abs(u[..., 0] - s * ezz * z).max() < 1e-5
        assert np.abs(u[..., 1] - s * exy * x).max() < 1e-5
        assert np.abs(u[..., 2] - s * exy * y).max() < 1e-5


@pytest.mark.parametrize(
    "bad, error, words",
    [
        ({"steps": 0}, RecipeError, "sequences.steps: 0 is less than the minimum of 1"),
        ({"stepz": 3}, RecipeError, "'stepz' was unexpected"),
        ({"protocol": {"crack": {}}}, RecipeError, "unknown key 'crack'"),
        ({"protocol": {"cracks": {"width_vox": -1}}}, RecipeError, "cracks.width_vox: must be >= 0"),
        ({"protocol": {"lattice": {"scale": 10}}}, RecipeError, "beyond ±15%"),
        ({"protocol": {"compaction": {"strain": {"zz": -0.2}}}}, RecipeError, "beyond ±15%"),
        ({"protocol": "missing.yaml"}, RecipeError, "not found"),
        ({"solid_fraction": 0.95}, RecipeError, "no pore space"),
        ({"ct": {"preset": "lab-nanoct", "binning": 8}}, RecipeError, "too coarse"),
        ({"orientation_model": "nowhere.json"}, InputError, "not found"),
    ],
)
def test_bad_sections_are_one_line_errors_before_writing(models, tmp_path, bad, error, words):
    out = tmp_path / "out"
    recipe = _write(tmp_path / "bad.yaml", _recipe(models, **bad))
    with pytest.raises(error, match=words.replace("(", r"\(").replace("+", r"\+")) as e:
        run_recipe(recipe, out)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_a_grain_model_without_orientations_is_refused(models, tmp_path):
    grain = tmp_path / "grain"
    shutil.copytree(models[1], grain)
    (grain / "orientation_model.json").unlink()
    recipe = _write(tmp_path / "r.yaml", _recipe((models[0], grain)))
    with pytest.raises(RecipeError, match="fit-orientations"):
        run_recipe(recipe, tmp_path / "out")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_the_shipped_sequences_quick_recipe_validates():
    from nmc_dataset.pipeline._recipe import load_recipe

    r = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "sequences-quick.yaml")
    assert r["sequences"]["steps"] >= 2 and "sections" in r
    validate_protocol(r["sequences"]["protocol"])


@pytest.mark.slow  # ~30 s: a dask LocalCluster; the builder's own dask test runs by default
def test_dask_local_cluster_gives_the_same_bytes(built, tmp_path):
    from distributed import LocalCluster

    recipe, (ref, _) = built
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        assert (
            main(
                ["run", str(recipe), "--out", str(out), "--executor", "dask", "--scheduler", cluster.scheduler_address]
            )
            == 0
        )
    assert _tree_bytes(out) == _tree_bytes(ref)
