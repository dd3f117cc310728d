"""The ``dataset:`` recipe section: schema errors, shells config from a real shell model, recipe guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from nmc_dataset._util import item_seed
from nmc_dataset.cli._main import main
from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._manifest import verify_manifest
from nmc_dataset.pipeline._recipe import RunContext, recipe_hash, validate_recipe
from nmc_dataset.pipeline._stage_dataset import SHELL_STREAM, run_section

RADIUS_VOX = 10.0
VOXEL_UM = 0.128


@pytest.fixture(scope="module")
def shell_model_path(tmp_path_factory):
    """A real ShellModel of near-spherical shells of radius 10 voxels (log-normal a00, small normal a_lm).

    Built from known laws rather than fitted (fitting is tested with the shell scale and costs ~15 s here).
    """
    from nmc_dataset.shells._model import DegreeLaw, ShellModel

    laws = [DegreeLaw(0, "lognormal", {"mu": float(np.log(RADIUS_VOX * np.sqrt(4 * np.pi))), "sigma": 0.03})]
    laws += [DegreeLaw(ell, "normal", {"scale": 0.15 / ell}) for ell in range(1, 10)]
    model = ShellModel(degree=9, voxel_size_um=VOXEL_UM, laws=laws)
    path = tmp_path_factory.mktemp("model") / "shell_model.json"
    model.write(path)
    return path


def _recipe(tmp_path, dataset: dict, seed: int = 5) -> tuple[Path, dict]:
    recipe = {"format_version": 1, "seed": seed, "dataset": dataset}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path, recipe


DATASET = {
    "name": "nmc811-shells",
    "version": "0.2.0",
    "license": "cc-by-4.0",
    "authors": [{"name": "Doe, Jane"}],
    "shells": 12,
    "shard_size": 5,
    "publish": {"hf": {"repo_id": "org/nmc811-shells"}},
}


def test_schema_errors_name_the_key():
    base = {"format_version": 1, "seed": 1}
    with pytest.raises(RecipeError, match=r"dataset\.shard_size: 0 is less than the minimum of 1"):
        validate_recipe({**base, "dataset": {"shard_size": 0}})
    with pytest.raises(RecipeError, match=r"allowed keys: .*shard_size"):
        validate_recipe({**base, "dataset": {"shardsize": 10}})
    with pytest.raises(RecipeError, match=r"dataset\.version"):
        validate_recipe({**base, "dataset": {"version": "one"}})
    with pytest.raises(RecipeError, match=r"dataset\.publish\.hf"):
        validate_recipe({**base, "dataset": {"publish": {"hf": {"repo_id": "no-slash"}}}})
    validate_recipe({**base, "dataset": DATASET})


def test_shells_release_from_a_shell_model(tmp_path, shell_model_path):
    path, recipe = _recipe(tmp_path, DATASET)
    out = tmp_path / "out"
    ctx = RunContext(recipe_path=path, recipe=recipe, out=out, seed=5, outputs={"shell_model": shell_model_path})
    run_section(recipe["dataset"], ctx)
    assert (out / "recipe.yaml").read_bytes() == path.read_bytes()
    assert (out / "models" / "shell_model.json").read_bytes() == shell_model_path.read_bytes()
    m = verify_manifest(out)
    assert m["counts"] == {"shells": 12} and m["recipe_hash"] == recipe_hash(recipe)
    assert m["dataset"]["hub_id"] == "org/nmc811-shells" and m["dataset"]["version"] == "0.2.0"
    assert ctx.outputs["manifest"] == out / "manifest.json"
    t = pq.read_table(sorted((out / "data" / "shells").glob("*.parquet")))
    assert t.column("particle_id").to_pylist() == list(range(12))
    # item k's shell is the model's draw from item_seed(seed, k) alone
    from nmc_dataset.shells._model import ShellModel

    model = ShellModel.load(shell_model_path)
    for k in (0, 7, 11):
        expect = model.sample_coefficients(1, np.random.default_rng(item_seed(5, k, SHELL_STREAM)))[0] * VOXEL_UM
        np.testing.assert_allclose(t.column("sh_coefficients_um")[k].as_py(), expect, rtol=1e-12)
    # closed loop on the physics: near-spheres of radius 10 voxels -> diameter 2.56 µm, sphericity ~ 1
    d = t.column("d_max_um").to_numpy()
    assert np.all(np.abs(d - 2 * RADIUS_VOX * VOXEL_UM) < 0.2 * 2 * RADIUS_VOX * VOXEL_UM)
    assert np.all(t.column("sphericity").to_numpy() > 0.9)
    card = (out / "README.md").read_text()
    assert "| `d_max_um` | µm |" in card and "config_name: shells" in card
    assert "| `models/shell_model.json` |" in card and "nmc-dataset/shell-model" in card
    assert "| `models/shell_model.json: voxel_size_um` | 0.128 µm |" in card
    assert "seed: 5" in card  # the generation parameters come from the recipe copy
    assert (out / "figures" / "shells_descriptors.png").is_file()

    # the same recipe again: nothing rebuilt, identical manifest
    before = (out / "manifest.json").read_bytes()
    run_section(
        recipe["dataset"],
        RunContext(recipe_path=path, recipe=recipe, out=out, seed=5, outputs={"shell_model": shell_model_path}),
    )
    assert (out / "manifest.json").read_bytes() == before

    # a changed recipe in the same folder is refused, and nothing is touched
    path2, recipe2 = _recipe(tmp_path, {**DATASET, "shells": 10}, seed=6)
    ctx2 = RunContext(recipe_path=path2, recipe=recipe2, out=out, seed=6, outputs={"shell_model": shell_model_path})
    with pytest.raises(RecipeError, match="another recipe"):
        run_section(recipe2["dataset"], ctx2)
    assert (out / "manifest.json").read_bytes() == before
    ctx2.force = True
    run_section(recipe2["dataset"], ctx2)
    assert verify_manifest(out)["counts"] == {"shells": 10}


def test_cli_run_dataset_only_and_bad_recipe(tmp_path, capsys):
    path, _ = _recipe(tmp_path, {"name": "empty", "version": "1.0.0", "shells": 0})
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    m = verify_manifest(tmp_path / "o")
    assert [e["path"] for e in m["files"]] == ["README.md", "recipe.yaml"]
    bad, _ = _recipe(tmp_path, {"name": "x", "shells": -1})
    capsys.readouterr()
    assert main(["run", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset.shells" in err and "recipe.yaml" in err
    assert not (tmp_path / "o2").exists()
    # shells requested without a shell model: one-line error, no release written
    nomodel, _ = _recipe(tmp_path, {"name": "x", "shells": 3})
    assert main(["run", str(nomodel), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shell model" in err
    assert not (tmp_path / "o3").exists() or not any((tmp_path / "o3").iterdir())


def test_picks_up_parquet_configs_of_earlier_sections(tmp_path):
    """Tables another section wrote under data/<config>/ become card configs and manifest counts."""
    from nmc_dataset.pipeline._build import write_table_deterministic
    from tests.pipeline import shardfns

    out = tmp_path / "out"
    tables = shardfns.make_shard(0, list(range(6)))
    for config, table in tables.items():
        write_table_deterministic(table, out / "data" / config / "train-00000-of-00001.parquet", config=config)
    path, recipe = _recipe(tmp_path, {"name": "x", "version": "1.0.0", "figures": False})
    ctx = RunContext(recipe_path=path, recipe=recipe, out=out, seed=5)
    run_section(recipe["dataset"], ctx)
    m = verify_manifest(out)
    assert m["counts"] == {"particles": 6, "voxels_16": 6}
    card = (out / "README.md").read_text()
    assert "config_name: particles" in card and "config_name: voxels_16" in card
    assert not (out / "figures").exists()


def test_cli_changed_recipe_refused_without_force(tmp_path, capsys):
    out = tmp_path / "o"
    path, _ = _recipe(tmp_path, {"name": "a", "version": "1.0.0", "figures": False})
    assert main(["run", str(path), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    path, _ = _recipe(tmp_path, {"name": "b", "version": "1.0.0", "figures": False})
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another recipe" in err and "--force" in err and str(out) in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(["run", str(path), "--out", str(out), "--force"]) == 0
    assert verify_manifest(out)["dataset"]["name"] == "b"
