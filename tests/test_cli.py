"""The console script's plumbing: help, one-line errors, exit codes."""

import subprocess
import sys

import pytest

from nmc_dataset.cli import _main as cli
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._recipe import RecipeError, load_recipe, validate_recipe


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


def test_usage_error_is_one_line_starting_with_error(capsys):
    assert cli.main(["sample-shells", "m.json", "-n", "x", "--seed", "1", "--out", "s.parquet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument -n") and err.count("\n") == 1


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "nmc_dataset.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "nmc-dataset" in r.stdout


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    code = cli.main(["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "missing.yaml" in err and "not found" in err
    assert not (tmp_path / "o").exists()


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"\(top level\).*seed"):
        validate_recipe({"format_version": 1}, "r.yaml")
    with pytest.raises(RecipeError, match=r"seed: -1"):
        validate_recipe({"format_version": 1, "seed": -1}, "r.yaml")
    with pytest.raises(RecipeError, match=r"allowed keys"):
        validate_recipe({"format_version": 1, "seed": 1, "bogus": {}}, "r.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: not valid YAML \(line"):
        load_recipe(bad)


def test_error_prefixes_where():
    assert str(InputError("empty", "vol.tif")) == "vol.tif: empty"


def test_run_refuses_zero_workers_before_writing(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("format_version: 1\nseed: 1\n")
    assert cli.main(["run", str(recipe), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workers must be >= 1" in err
    assert not (tmp_path / "o").exists()
