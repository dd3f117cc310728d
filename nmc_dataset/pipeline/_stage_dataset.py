"""The ``dataset:`` recipe section: turn the run's output folder into a release.

Runs last. It copies the exact recipe to ``recipe.yaml``, (optionally) samples shells from the
run's shell model into a ``shells`` parquet config with the sharded builder, draws the card's
figures, renders the card (``README.md``) and writes ``manifest.json``. Parquet configs other
sections wrote under ``data/<config>/`` are picked up as they are.

Records ``ctx.outputs["dataset_card"]`` and ``ctx.outputs["manifest"]``.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from nmc_dataset._util import atomic_path, item_seed, log
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._build import build_dataset, check_build_folder, sha256_file
from nmc_dataset.pipeline._card import release_defaults, write_card
from nmc_dataset.pipeline._card_figures import card_figures
from nmc_dataset.pipeline._manifest import write_manifest
from nmc_dataset.pipeline._recipe import recipe_hash
from nmc_dataset.shells._descriptors import shell_descriptors
from nmc_dataset.shells._model import ShellModel

#: keys of the dataset section that are release metadata (kept in the manifest's "dataset" block)
RELEASE_KEYS = (
    "name",
    "pretty_name",
    "version",
    "license",
    "authors",
    "description",
    "citation",
    "tags",
    "task_categories",
    "date",
    "doi",
    "history",
    "publish",
)
#: random stream of shell sampling in the dataset section (item_seed(seed, k, SHELL_STREAM))
SHELL_STREAM = 11

_MODEL_CACHE: dict = {}


def release_metadata(config: dict) -> dict:
    """The release block of the manifest from a dataset section (defaults applied, ``hub_id`` added)."""

    d = {k: config[k] for k in RELEASE_KEYS if k in config}
    d.setdefault("name", "nmc811-virtual-particles")
    d.setdefault("version", "0.1.0")
    hf = (config.get("publish") or {}).get("hf") or {}
    if hf.get("repo_id"):
        d["hub_id"] = hf["repo_id"]
    d = release_defaults(d)
    return d


def _load_shell_model(path: str):

    if path not in _MODEL_CACHE:
        _MODEL_CACHE[path] = ShellModel.load(path)
    return _MODEL_CACHE[path]


def shell_shard(shard_index: int, items: list[int], *, model_path: str, seed: int) -> dict:
    """``make_shard`` of the ``shells`` config: per item, one shell drawn from ``item_seed(seed, k)``.

    Columns: ``particle_id``, ``sh_coefficients_um`` (``(L+1)^2`` floats, µm), and the shell
    descriptors ``d_max_um``, ``volume_um3``, ``area_um2``, ``compactness``, ``aspect_ratio``,
    ``sphericity``.
    """

    model = _load_shell_model(model_path)
    vs = float(model.voxel_size_um)
    coeffs = np.stack(
        [model.sample_coefficients(1, np.random.default_rng(item_seed(seed, k, SHELL_STREAM)))[0] for k in items]
    )
    desc = shell_descriptors(coeffs)
    k = coeffs.shape[1]
    cols = {
        "particle_id": pa.array(np.asarray(items, dtype=np.int64)),
        "sh_coefficients_um": pa.FixedSizeListArray.from_arrays(pa.array((coeffs * vs).ravel()), k),
        "d_max_um": pa.array(desc["d_max"] * vs),
        "volume_um3": pa.array(desc["volume"] * vs**3),
        "area_um2": pa.array(desc["area"] * vs**2),
        "compactness": pa.array(desc["compactness"]),
        "aspect_ratio": pa.array(desc["aspect_ratio"]),
        "sphericity": pa.array(desc["sphericity"]),
    }
    meta = {"voxel_size_um": str(vs), "sh_convention": "see nmc_dataset.shells._model.SH_CONVENTION"}
    return {"shells": pa.table(cols).replace_schema_metadata(meta)}


def _copy(src: Path, dst: Path) -> None:
    """Copy a file atomically (mode 0644), unless it is already the destination."""

    if not src.is_file() or (dst.exists() and src.resolve() == dst.resolve()):
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)


def _shell_model_path(ctx) -> Path | None:
    v = ctx.outputs.get("shell_model")
    if v is None:
        return None
    p = Path(getattr(v, "path", None) or v)
    return p if p.exists() else None


def _file_entry(path: Path) -> dict:

    return {"name": path.name, "sha256": sha256_file(path)}


def input_provenance(ctx) -> dict:
    """Where a run's inputs came from: known-truth phantoms or measured files (names and SHA-256).

    ``{"shells": {"kind": "phantom" | "measured" | "model", ...}, "sections": {...}}`` for the
    sections the recipe has; the card states it, so a release built from phantoms never reads
    as if it were measured.
    """
    recipe = ctx.recipe
    out: dict = {}
    shells = recipe.get("shells") or {}
    if "phantom" in shells:
        ph = shells["phantom"] or {}
        out["shells"] = {
            "kind": "phantom",
            "text": "a synthetic grey-value CT phantom of a known shell model "
            f"({ph.get('size', 128)}³ voxels, {ph.get('n_particles', 60)} particles), not a measurement",
        }
    elif "volume" in shells:
        path = ctx.resolve(shells["volume"]["path"])
        out["shells"] = {"kind": "measured", "files": [_file_entry(path)], "text": f"the CT volume `{path.name}`"}
    elif "model" in shells:
        path = ctx.resolve(shells["model"])
        out["shells"] = {"kind": "model", "files": [_file_entry(path)], "text": f"the given shell model `{path.name}`"}
    sections = recipe.get("sections") or {}
    if "synthetic" in sections:
        out["sections"] = {
            "kind": "phantom",
            "text": "synthetic EBSD scans of a known radial teacher architecture "
            "written by the tool's own instrument model, not a measurement",
        }
    elif "scans" in sections:
        from nmc_dataset.pipeline._ebsd_import import expand_scans

        scans = expand_scans(sections["scans"], base=ctx.recipe_path.parent)
        out["sections"] = {
            "kind": "measured",
            "files": [_file_entry(Path(s)) for s in scans],
            "text": f"{len(scans)} EBSD scan(s) ({', '.join(Path(s).name for s in scans[:4])}"
            f"{', ...' if len(scans) > 4 else ''})",
        }
    return out


def check_section(config: dict, ctx) -> None:
    """Pre-flight: a shells config needs a shell model from this run or an earlier one."""
    if int(config.get("shells", 0)) > 0 and "shells" not in ctx.recipe and _shell_model_path(ctx) is None:
        raise InputError(
            "dataset.shells > 0 needs a shell model: add a 'shells' section to the recipe", ctx.recipe_path
        )


def run_section(config: dict, ctx) -> None:
    """Build the release files of ``ctx.out``: shells config (optional), figures, card, manifest."""

    out = Path(ctx.out)
    rhash = recipe_hash(ctx.recipe)
    # validate everything before writing anything
    model_path = _shell_model_path(ctx)
    n_shells = int(config.get("shells", 0))
    if n_shells > 0 and model_path is None:
        raise InputError(
            "dataset.shells > 0 needs a shell model: add a 'shells' section to the recipe", ctx.recipe_path
        )
    check_build_folder(out, rhash, force=ctx.force, adopt_existing=True)
    release = release_metadata(config)
    release["inputs"] = input_provenance(ctx)
    exclude = list(config.get("exclude") or [])

    # the exact recipe (bytes) so the release documents itself
    _copy(Path(ctx.recipe_path), out / "recipe.yaml")
    if model_path is not None and model_path.is_file():  # the model and its measured coefficients
        _copy(model_path, out / "models" / model_path.name)
        coeffs = model_path.with_name(model_path.stem + ".coefficients.parquet")
        if coeffs.is_file():
            _copy(coeffs, out / "models" / coeffs.name)
    if n_shells > 0:
        fn = functools.partial(shell_shard, model_path=str(model_path.resolve()), seed=int(ctx.seed))
        opts = ctx.options or {}
        r = build_dataset(
            out,
            n_shells,
            int(config.get("shard_size", 1000)),
            fn,
            ["shells"],
            workers=ctx.workers,
            executor=opts.get("executor") or "local",
            scheduler=opts.get("scheduler"),
            recipe_hash=rhash,
            force=ctx.force,
            desc="shells",
        )
        log.info(
            "shells: %d items in %d shards (%d built now)", r.counts["shells"], len(r.files["shells"]), len(r.built)
        )

    figures = card_figures(out) if config.get("figures", True) else None
    card = write_card(out, {**release, "exclude": exclude}, recipe_hash=rhash, figures=figures)
    m = write_manifest(
        out, dataset=release, recipe_hash=rhash, exclude=exclude, failed=ctx.outputs.get("failed_particles") or []
    )
    ctx.outputs["dataset_card"] = card
    ctx.outputs["manifest"] = out / "manifest.json"
    log.info("dataset %s %s: %d files, counts %s", release["name"], release["version"], len(m["files"]), m["counts"])
