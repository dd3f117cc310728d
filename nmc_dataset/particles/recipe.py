"""The ``particles:`` recipe section: generate particles from the run's models.

Reads ``ctx.outputs["shell_model"]`` and ``ctx.outputs["grain_model"]`` (or the explicit
``shell_model`` / ``grain_model`` paths of the section), writes ``<out>/particles/`` like
``nmc-dataset generate`` and records ``ctx.outputs["particles"]`` (the folder).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError


def _model_path(config: dict, ctx, key: str) -> Path:
    if key in config:
        return ctx.resolve(config[key])
    if key in ctx.outputs and ctx.outputs[key]:
        v = ctx.outputs[key]
        return Path(getattr(v, "path", v))
    raise RecipeError(f"no {key.replace('_', ' ')}: give particles.{key} or run the section that fits it",
                      f"{ctx.recipe_path}: particles")


def run_section(config: dict, ctx) -> Path:
    """Run the section (see ``schemas/recipe/particles.schema.json`` for the keys)."""
    from .commands import generate_particles, load_grain_model, load_shell_model, parse_formats

    config = dict(config or {})
    formats = parse_formats(config.get("formats", ["params", "voxels"]), f"{ctx.recipe_path}: particles.formats")
    shell, sid = load_shell_model(_model_path(config, ctx, "shell_model"))
    grain, gid = load_grain_model(_model_path(config, ctx, "grain_model"))
    mesh = config.get("mesh", {}) or {}
    assembly = config.get("assembly", {}) or {}
    out = ctx.out / "particles"
    generate_particles(shell, grain, n=int(config.get("n", 20)), seed=ctx.seed,
                       first_index=int(config.get("first_index", 0)),
                       voxel_size_um=float(config.get("voxel_size_um", 0.05)), formats=formats, out=out,
                       mesh_size_um=mesh.get("size_um"), max_memory_gib=config.get("max_memory_gib"),
                       shell_model_id=sid, grain_model_id=gid,
                       smoothing_iterations=int(mesh.get("smoothing_iterations", 8)),
                       spacing_px=float(assembly.get("spacing_px", 1.0)),
                       margin_px=float(assembly.get("margin_px", 8.0)))
    ctx.outputs["particles"] = out
    return out
