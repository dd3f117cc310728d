"""The `particles:` recipe section."""

import pytest
import yaml

from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._recipe import run_recipe, validate_recipe


def test_particles_section_runs(tmp_path, model_paths):
    recipe = {
        "format_version": 1,
        "seed": 3,
        "particles": {
            "n": 1,
            "voxel_size_um": 0.06,
            "formats": ["params", "voxels"],
            "shell_model": str(model_paths[0]),
            "grain_model": str(model_paths[1]),
            "mesh": {"smoothing_iterations": 4},
            "assembly": {"spacing_px": 1.0},
        },
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ctx = run_recipe(path, tmp_path / "out", only=["particles"])
    out = ctx.outputs["particles"]
    assert (out / "voxels.h5").is_file() and (out / "particles.parquet").is_file()


def test_particles_section_is_validated(tmp_path):
    with pytest.raises(RecipeError, match=r"particles.voxel_size_um"):
        validate_recipe({"format_version": 1, "seed": 1, "particles": {"voxel_size_um": 0}}, "r.yaml")
    with pytest.raises(RecipeError, match=r"particles.formats"):
        validate_recipe({"format_version": 1, "seed": 1, "particles": {"formats": ["stl"]}}, "r.yaml")
    with pytest.raises(RecipeError, match=r"allowed keys"):
        validate_recipe({"format_version": 1, "seed": 1, "particles": {"bogus": 1}}, "r.yaml")


def test_particles_section_needs_models(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"format_version": 1, "seed": 3, "particles": {"n": 1}}))
    with pytest.raises(RecipeError, match="shell model"):
        run_recipe(path, tmp_path / "out", only=["particles"])
