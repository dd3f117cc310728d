"""The ``particles:`` recipe section: generate particles from the run's models.

Reads ``ctx.outputs["shell_model"]`` and ``ctx.outputs["grain_model"]`` (or the explicit
``shell_model`` / ``grain_model`` paths of the section).

* Without a ``dataset:`` section in the recipe it writes ``<out>/particles/`` like
  ``nmc-dataset generate`` (one folder, one process) and records ``ctx.outputs["particles"]``
  (the folder).
* With a ``dataset:`` section the particles are built through the sharded, resumable release
  builder (:mod:`nmc_dataset.pipeline._particle_shards`) straight into the release layout:
  ``data/{particles,grains,voxels_<N>}/`` parquet configs, ``voxels/`` HDF5 volumes, ``meshes/``
  and ``models/``; ``--workers`` and ``--executor dask`` apply. ``ctx.outputs["particles"]`` is
  then the build folder.
"""

from __future__ import annotations

from pathlib import Path

from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.pipeline._generate import generate_particles, load_grain_model, load_shell_model, parse_formats

#: sections of a recipe that produce each model
_PRODUCERS = {"shell_model": "shells", "grain_model": "grains"}


def _model_path(config: dict, ctx, key: str) -> Path:
    if key in config:
        return ctx.resolve(config[key])
    if key in ctx.outputs and ctx.outputs[key]:
        v = ctx.outputs[key]
        return Path(getattr(v, "path", v))
    raise RecipeError(
        f"no {key.replace('_', ' ')}: give particles.{key} or run the section that fits it",
        f"{ctx.recipe_path}: particles",
    )


def check_section(config: dict, ctx) -> None:
    """Pre-flight: formats (and their optional extras) and the model paths."""

    config = dict(config or {})
    parse_formats(config.get("formats", ["params", "voxels"]), f"{ctx.recipe_path}: particles.formats")
    for key, section in _PRODUCERS.items():
        if key in config:
            p = ctx.resolve(config[key])
            if not p.exists():
                raise InputError(f"particles.{key}: not found", p)
        elif not ctx.outputs.get(key) and section not in ctx.recipe:
            raise RecipeError(
                f"no {key.replace('_', ' ')}: give particles.{key} or add a '{section}' section",
                f"{ctx.recipe_path}: particles",
            )


def run_section(config: dict, ctx) -> Path:
    """Run the section (see ``schemas/recipe/particles.schema.json`` for the keys)."""

    config = dict(config or {})
    formats = parse_formats(config.get("formats", ["params", "voxels"]), f"{ctx.recipe_path}: particles.formats")
    shell_path = _model_path(config, ctx, "shell_model")
    grain_path = _model_path(config, ctx, "grain_model")
    shell, sid = load_shell_model(shell_path)
    grain, gid = load_grain_model(grain_path)
    if "dataset" in ctx.recipe:
        from nmc_dataset.pipeline._particle_shards import build_particle_release

        build_particle_release(config, ctx, shell_model_path=shell_path, grain_model_path=grain_path)
        ctx.outputs["particles"] = Path(ctx.out)
        return Path(ctx.out)
    mesh = config.get("mesh", {}) or {}
    assembly = config.get("assembly", {}) or {}
    out = ctx.out / "particles"
    generate_particles(
        shell,
        grain,
        n=int(config.get("n", 20)),
        seed=ctx.seed,
        first_index=int(config.get("first_index", 0)),
        voxel_size_um=float(config.get("voxel_size_um", 0.05)),
        formats=formats,
        out=out,
        mesh_size_um=mesh.get("size_um"),
        max_memory_gib=config.get("max_memory_gib"),
        shell_model_id=sid,
        grain_model_id=gid,
        smoothing_iterations=int(mesh.get("smoothing_iterations", 8)),
        element_order=int(mesh.get("element_order", 1)),
        min_elements_per_grain=mesh.get("min_elements_per_grain"),
        spacing_px=float(assembly.get("spacing_px", 1.0)),
        margin_px=float(assembly.get("margin_px", 8.0)),
    )
    ctx.outputs["particles"] = out
    return out
