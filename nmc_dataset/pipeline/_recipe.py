"""Recipes: one YAML file describes a run end to end; ``nmc-dataset run RECIPE`` executes it.

A recipe is a mapping of *sections*. Each section is owned by one area of the package, which
provides its JSON Schema (``nmc_dataset/schemas/recipe/<section>.schema.json``), a runner
``run_section(config, ctx)`` and optionally ``check_section(config, ctx)``, a pre-flight check
of what the schema cannot express that runs for every section before any section writes.
Sections run in the order of :data:`SECTIONS`; later sections read what earlier ones produced
from ``ctx.outputs`` (e.g. the shell model's path).

Validation errors name the key path, e.g. ``quick.yaml: shells.fit.degree: -1 is less than
the minimum of 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from nmc_dataset.errors import ExportError, InputError, RecipeError
from nmc_dataset.pipeline._build import check_build_folder, claim_build_folder

#: (section name, module with ``run_section``) in execution order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("shells", "nmc_dataset.pipeline._stage_shells"),
    ("sections", "nmc_dataset.pipeline._stage_sections"),
    ("grains", "nmc_dataset.pipeline._stage_grains"),
    ("particles", "nmc_dataset.pipeline._stage_particles"),
    ("tomography", "nmc_dataset.pipeline._stage_tomography"),
    ("sequences", "nmc_dataset.pipeline._stage_sequences"),
    ("dataset", "nmc_dataset.pipeline._stage_dataset"),
)


@dataclasses.dataclass
class RunContext:
    """What a section runner gets besides its own config.

    Parameters
    ----------
    recipe_path : Path
        The recipe file (relative input paths are resolved against its folder).
    recipe : dict
        The whole validated recipe.
    out : Path
        The run's output folder.
    seed : int
        The recipe's top-level seed.
    outputs : dict
        Products of earlier sections, by name (``"shell_model"``, ``"grain_model"``, ...).
    workers : int
        Worker processes allowed.
    force : bool
        Overwrite results of a different recipe.
    options : dict
        Run options from the command line that are not part of the recipe (``executor``, ``scheduler``).
    """

    recipe_path: Path
    recipe: dict
    out: Path
    seed: int
    outputs: dict = dataclasses.field(default_factory=dict)
    workers: int = 1
    force: bool = False
    options: dict = dataclasses.field(default_factory=dict)

    def resolve(self, p: str | Path) -> Path:
        """Resolve a path given in the recipe relative to the recipe's folder.

        Parameters
        ----------
        p : str or Path
            A path from the recipe (``~`` expanded).

        Returns
        -------
        Path
            Absolute paths unchanged; relative ones resolved against the recipe's folder.
        """
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.recipe_path.parent / p).resolve()


def _schema_dir():
    return resources.files("nmc_dataset") / "schemas"


def recipe_schema() -> dict:
    """The full recipe JSON Schema: the top-level schema plus every section's schema.

    Returns
    -------
    dict
        A JSON Schema (draft 2020-12).
    """
    base = json.loads((_schema_dir() / "recipe.schema.json").read_text())
    for name, _ in SECTIONS:
        f = _schema_dir() / "recipe" / f"{name}.schema.json"
        if f.is_file():
            base["properties"][name] = json.loads(f.read_text())
    return base


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_recipe(recipe: Any, where: str | Path = "recipe") -> dict:
    """Validate a recipe mapping against :func:`recipe_schema`.

    Parameters
    ----------
    recipe : Any
        The parsed recipe.
    where : str or Path, default "recipe"
        Named in error messages.

    Returns
    -------
    dict
        ``recipe`` itself.

    Raises
    ------
    RecipeError
        Naming the first offending key path, its value and what is allowed.
    """

    schema = recipe_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(recipe), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        e = errors[0]
        msg = e.message
        if e.validator == "additionalProperties":
            allowed = sorted(e.schema.get("properties", {}))
            msg += f" (allowed keys: {', '.join(allowed)})"
        raise RecipeError(f"{_key_path(e)}: {msg}", where)
    return recipe


def load_recipe(path: str | Path) -> dict:
    """Read and validate a recipe YAML file.

    Parameters
    ----------
    path : str or Path
        The recipe file (UTF-8 YAML).

    Returns
    -------
    dict
        The validated recipe.

    Raises
    ------
    InputError
        If the file is missing or unreadable.
    RecipeError
        If it is not UTF-8, not valid YAML, or does not match the recipe schema.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("recipe file not found", path) from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"not UTF-8 text (byte {e.start}); save the recipe as UTF-8", path) from None
    except OSError as e:
        raise InputError(f"cannot read recipe: {e}", path) from None
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise RecipeError(f"not valid YAML{line}: {problem}", path) from None
    if not isinstance(recipe, dict):
        raise RecipeError("a recipe must be a mapping of sections", path)
    return validate_recipe(recipe, path)


def recipe_hash(recipe: dict) -> str:
    """SHA-256 of the recipe's canonical JSON form (key order and YAML layout do not matter).

    Parameters
    ----------
    recipe : dict
        A recipe mapping.

    Returns
    -------
    str
        64 hex digits.
    """
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_recipe(
    path: str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    force: bool = False,
    only: list[str] | None = None,
    options: dict | None = None,
) -> RunContext:
    """Run every section of a recipe, in order, into ``out``.

    Parameters
    ----------
    path : path-like
        The recipe YAML.
    out : path-like
        Output folder (created).
    workers : int
        Worker processes for the sections that parallelise.
    force : bool
        Allow overwriting a build of a different recipe.
    only : list of str, optional
        Run just these sections (their inputs must then be given in the recipe).
    options : dict, optional
        Run options outside the recipe (``executor``, ``scheduler`` of the parquet builds).

    Returns
    -------
    RunContext
        With ``outputs`` filled by the sections.
    """
    path = Path(path).resolve()
    recipe = load_recipe(path)
    if workers < 1:
        raise RecipeError("--workers must be >= 1")
    ctx = RunContext(
        recipe_path=path,
        recipe=recipe,
        out=Path(out),
        seed=int(recipe.get("seed", 0)),
        workers=workers,
        force=force,
        options=dict(options or {}),
    )

    selected = [
        (name, importlib.import_module(module))
        for name, module in SECTIONS
        if name in recipe and (not only or name in only)
    ]
    # Pre-flight: every section checks what the schema cannot express before anything is written.
    for name, module in selected:
        check = getattr(module, "check_section", None)
        if check is not None:
            check(recipe[name], ctx)
    # Refuse a folder holding the user's files or another recipe's build before any section writes.
    claim_build_folder(ctx.out, run_roots(recipe), force=force)
    check_build_folder(ctx.out, recipe_hash(recipe), force=force, adopt_existing=True)
    for name, module in selected:
        module.run_section(recipe[name], ctx)
    failed = ctx.outputs.get("failed_particles") or []
    if failed:
        ids = ", ".join(str(f["particle_id"]) for f in failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise ExportError(
            f"{len(failed)} particle(s) could not be exported (id {ids}: {failed[0]['error']}); "
            "everything else is built, and manifest.json lists them under 'failed'",
            ctx.out,
        )
    return ctx


def run_roots(recipe: dict) -> list[str]:
    """Top-level files and folders (``name/``) a run of ``recipe`` writes into its output folder."""
    roots = []
    if "shells" in recipe:
        roots.append("shells/")
    if "sections" in recipe:
        sec = recipe.get("sections") or {}
        roots += ["synthetic_scans/", f"{sec.get('out', 'sections')}/", f"{sec.get('tessellations', 'tessellations')}/"]
    if "grains" in recipe:
        roots.append(f"{(recipe.get('grains') or {}).get('out', 'grain_model')}/")
    if "particles" in recipe and "dataset" not in recipe:
        roots.append("particles/")
    if ("tomography" in recipe or "sequences" in recipe) and "dataset" not in recipe:
        roots += ["data/", "figures/"]
    if "dataset" in recipe:
        roots += ["README.md", "manifest.json", "recipe.yaml", "data/", "voxels/", "meshes/", "models/", "figures/"]
    return roots


# --------------------------------------------------------------------------- CLI
