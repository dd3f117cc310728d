"""The ``tomography:`` recipe section: a ``ct`` release config of (CT volume, labels) pairs.

Every row is one virtual scan: an electrode packed from the run's shell and grain models
(:func:`nmc_dataset.tomography._pack.pack_electrode`: particles without overlap at a target
active-material fraction, carbon-binder at the contacts), rendered by the CT simulator
(:func:`nmc_dataset.tomography._ctsim.render_ct`: projection, phase contrast, blur, photon noise,
ring artefacts, filtered back-projection, binning) and stored with the exact labels it was made
from, resampled to the CT grid (:func:`nmc_dataset.tomography._ctsim.resample_labels`).

Layout (a Hugging Face dataset config with three splits)::

    data/ct/train-XXXXX-of-YYYYY.parquet        rows of the train split
    data/ct/validation-XXXXX-of-YYYYY.parquet
    data/ct/test-XXXXX-of-YYYYY.parquet
    figures/ct_slices_beside_phase_particle_grain_labels.png   (the card shows it)

Columns: ``split``, ``index`` (within the split), ``ct`` (float32, 1/µm), ``phase`` (uint8),
``particle`` and ``grain`` (uint32), all ``datasets.Array3D`` of the fixed shape ``size³``
(``z, y, x``); ``voxel_size_um`` (CT voxel), ``label_voxel_size_um`` (voxel of the packed
labels), ``target_solid_fraction``, ``solid_fraction``, ``binder_fraction``, ``pore_fraction``
(of the packed labels), ``n_particles``, ``n_grains``, ``overlap_voxels``, ``pack_seed``,
``ct_seed``, ``imaging`` and ``packing`` (JSON strings with every imaging and packing parameter).

Fixed-size volumes (Array3D) rather than chunked HDF5 files: a scan is ``size³`` voxels
(64³ float32 + labels = 2.3 MiB), so thousands fit parquet shards that ``datasets.load_dataset``
reads and streams directly, with no second file format to ship.

Determinism: volume ``i`` of split ``s`` draws its fraction and its packing and noise seeds from
``item_seed(recipe seed, i, SPLIT_STREAMS[s])`` alone, so 1 or N workers, or a dask cluster,
give byte-identical shards; a killed build resumes at the first unfinished shard (the shard
builder of :mod:`nmc_dataset.pipeline._build`). Changing the size of one split leaves the
volumes of the other splits as they were.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from nmc_dataset._util import item_seed, log
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.pipeline._build import array3d_column, build_dataset, check_build_folder
from nmc_dataset.pipeline._ct_figures import ct_card_figure
from nmc_dataset.pipeline._generate import load_grain_model, load_shell_model
from nmc_dataset.pipeline._particle_shards import copy_models
from nmc_dataset.pipeline._recipe import recipe_hash
from nmc_dataset.tomography._ctsim import render_ct, resample_labels, resolve_settings
from nmc_dataset.tomography._pack import pack_electrode

CONFIG = "ct"
SPLITS = ("train", "validation", "test")
#: random stream of split ``s`` (``item_seed(seed, i, SPLIT_STREAMS[s])``)
SPLIT_STREAMS = {"train": 31, "validation": 32, "test": 33}
#: imaging keys of the section's ``ct`` block passed to :func:`~nmc_dataset.tomography._ctsim.resolve_settings`
CT_KEYS = ("energy_kev", "photons", "psf_um", "rings", "phase_contrast", "binning", "projections")
DEFAULTS = {
    "size": 64,
    "voxel_size_um": 0.1,
    "solid_fraction": 0.5,
    "periodic": True,
    "neck_um": 0.0,
    "electrolyte": "none",
    "spacing_px": 2.0,
    "shard_size": 8,
}
_MODELS: dict = {}


# --------------------------------------------------------------------------- features / one volume
def ct_features(n: int):
    """``datasets.Features`` of the ``ct`` config (volumes ``n³``)."""
    import datasets

    feats = {"split": datasets.Value("string"), "index": datasets.Value("int64")}
    for name, dt in (("ct", "float32"), ("phase", "uint8"), ("particle", "uint32"), ("grain", "uint32")):
        feats[name] = datasets.Array3D(shape=(n, n, n), dtype=dt)
    for name in (
        "voxel_size_um",
        "label_voxel_size_um",
        "target_solid_fraction",
        "solid_fraction",
        "binder_fraction",
        "pore_fraction",
    ):
        feats[name] = datasets.Value("float64")
    for name in ("n_particles", "n_grains", "overlap_voxels", "pack_seed", "ct_seed"):
        feats[name] = datasets.Value("int64")
    feats["imaging"] = datasets.Value("string")
    feats["packing"] = datasets.Value("string")
    return datasets.Features(feats)


def release_draws(seed: int, stream: int, index: int, solid_fraction, seeds=("pack_seed", "ct_seed")) -> dict:
    """Fraction and integer seeds of item ``index`` of a release stream (the recipe seed and the index alone).

    Parameters
    ----------
    seed : int
        The recipe seed.
    stream : int
        The split's random stream.
    index : int
        Item index within the split.
    solid_fraction : float or tuple of 2 floats
        Solid volume fraction of the packed electrode, or a range ``(lo, hi)`` from which it is drawn
        uniformly per item.
    seeds : sequence of str
        Names of the integer seeds (in ``[0, 2**31)``), drawn in this order after the fraction.

    Returns
    -------
    dict
        ``solid_fraction`` (float) and one int per name in ``seeds``.
    """
    rng = np.random.default_rng(item_seed(seed, index, stream))
    lo, hi = (solid_fraction, solid_fraction) if np.isscalar(solid_fraction) else solid_fraction
    frac = float(lo) if hi == lo else float(rng.uniform(lo, hi))
    return {"solid_fraction": frac, **{name: int(rng.integers(2**31)) for name in seeds}}


def volume_draws(seed: int, split: str, index: int, solid_fraction) -> dict:
    """Fraction and seeds of volume ``index`` of ``split`` (from the recipe seed and the index alone).

    Parameters
    ----------
    seed : int
        The recipe seed.
    split : {"train", "validation", "test"}
        The split; each has its own random stream (:data:`SPLIT_STREAMS`).
    index : int
        Volume index within the split.
    solid_fraction : float or tuple of 2 floats
        Solid volume fraction of the packed electrode, or a range ``(lo, hi)`` from which it is drawn
        uniformly per volume.

    Returns
    -------
    dict
        ``solid_fraction`` (float), ``pack_seed`` and ``ct_seed`` (int in ``[0, 2**31)``) for packing
        and CT rendering.
    """
    return release_draws(seed, SPLIT_STREAMS[split], index, solid_fraction)


def _load_models(shell_model_path: str, grain_model_path: str, orientations="auto"):
    """The models of a release worker, loaded once per process (one worker = one core)."""
    key = (shell_model_path, grain_model_path, orientations)
    if key not in _MODELS:
        import torch  # heavy: loaded with the grain model anyway

        numba.set_num_threads(1)  # the worker pool provides the parallelism
        torch.set_num_threads(1)
        s, sid = load_shell_model(shell_model_path)
        g, gid = load_grain_model(grain_model_path, orientations=orientations)
        _MODELS[key] = (s, sid, g, gid)
    return _MODELS[key]


def pack_for_release(
    shell_model,
    grain_model,
    draws: dict,
    *,
    edge_vox: int,
    voxel_size_um: float,
    binder,
    electrolyte: str,
    periodic: bool,
    neck_um: float,
    spacing_px: float,
    model_ids=("", ""),
):
    """The electrode of one release row: a cube of ``edge_vox`` voxels packed from the row's own draws.

    Parameters
    ----------
    shell_model, grain_model
        The loaded models.
    draws : dict
        The row's ``solid_fraction`` and ``pack_seed`` (:func:`volume_draws`).
    edge_vox : int
        Box edge in label voxels.
    voxel_size_um : float
        Label voxel size (µm).
    binder, electrolyte, periodic, neck_um, spacing_px
        As :func:`nmc_dataset.tomography.pack_electrode`.
    model_ids : (str, str)
        Ids of the shell and grain models, stored with the electrode.

    Returns
    -------
    Electrode
    """
    return pack_electrode(
        shell_model,
        grain_model,
        box_um=edge_vox * voxel_size_um,
        solid_fraction=draws["solid_fraction"],
        voxel_size_um=voxel_size_um,
        binder=binder,
        electrolyte=electrolyte,
        periodic=periodic,
        neck_um=neck_um,
        seed=draws["pack_seed"],
        workers=1,
        spacing_px=spacing_px,
        model_ids=model_ids,
    )


def render_volume(
    shell_model,
    grain_model,
    *,
    split: str,
    index: int,
    seed: int,
    size: int,
    settings: dict,
    voxel_size_um: float,
    solid_fraction,
    binder,
    electrolyte: str,
    periodic: bool,
    neck_um: float,
    spacing_px: float,
    model_ids=("", ""),
) -> dict:
    """Pack, render and label one volume of the release (see module docs); returns one row as a dict."""

    d = volume_draws(seed, split, index, solid_fraction)
    s = int(settings["binning"])
    h = float(voxel_size_um)
    e = pack_for_release(
        shell_model,
        grain_model,
        d,
        edge_vox=size * s,
        voxel_size_um=h,
        binder=binder,
        electrolyte=electrolyte,
        periodic=periodic,
        neck_um=neck_um,
        spacing_px=spacing_px,
        model_ids=model_ids,
    )
    ct, imaging = render_ct(e.phase, h, settings=settings, electrolyte=electrolyte, seed=d["ct_seed"])
    phase, particle, grain = resample_labels(e.phase, e.particle, e.grain, s)
    if ct.shape != (size,) * 3 or phase.shape != ct.shape:
        raise RuntimeError(f"CT grid {ct.shape} is not the requested {size}³")
    imaging.pop("seconds", None)
    packing = {k: v for k, v in e.info.items() if k != "seconds"}
    packing.update(shell_model_id=model_ids[0], grain_model_id=model_ids[1])
    return {
        "split": split,
        "index": int(index),
        "ct": ct,
        "phase": phase,
        "particle": particle,
        "grain": grain,
        "voxel_size_um": float(imaging["voxel_size_um"]),
        "label_voxel_size_um": h,
        "target_solid_fraction": d["solid_fraction"],
        "solid_fraction": float(e.info["solid_fraction"]),
        "binder_fraction": float(e.info["binder"]["fraction"]),
        "pore_fraction": float(e.info["pore_fraction"]),
        "n_particles": int(e.info["n_particles"]),
        "n_grains": int(e.info["n_grains"]),
        "overlap_voxels": int(e.info["overlap_voxels"]),
        "pack_seed": d["pack_seed"],
        "ct_seed": d["ct_seed"],
        "imaging": json.dumps(imaging, sort_keys=True),
        "packing": json.dumps(packing, sort_keys=True),
    }


def ct_table(rows: list[dict], n: int):
    """The ``ct`` Arrow table of a shard's rows (schema of :func:`ct_features`)."""

    feats = ct_features(n)
    schema = feats.arrow_schema
    arrays = []
    for field in schema:
        name = field.name
        if name in ("ct", "phase", "particle", "grain"):
            dt = feats[name].dtype
            stack = np.stack([r[name] for r in rows]).astype(dt, copy=False) if rows else np.zeros((0, n, n, n), dt)
            arrays.append(array3d_column(stack)[0])
        else:
            arrays.append(pa.array([r[name] for r in rows], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def ct_shard(
    shard_index: int,
    items,
    *,
    split: str,
    shell_model_path: str,
    grain_model_path: str,
    seed: int,
    size: int,
    settings: dict,
    voxel_size_um: float,
    solid_fraction,
    binder,
    electrolyte: str,
    periodic: bool,
    neck_um: float,
    spacing_px: float,
) -> dict:
    """``make_shard`` of the ``ct`` config (top-level and picklable; bind keywords with ``functools.partial``)."""
    shell, sid, grain, gid = _load_models(shell_model_path, grain_model_path)
    rows = [
        render_volume(
            shell,
            grain,
            split=split,
            index=int(k),
            seed=seed,
            size=size,
            settings=settings,
            voxel_size_um=voxel_size_um,
            solid_fraction=solid_fraction,
            binder=binder,
            electrolyte=electrolyte,
            periodic=periodic,
            neck_um=neck_um,
            spacing_px=spacing_px,
            model_ids=(sid, gid),
        )
        for k in items
    ]
    return {CONFIG: ct_table(rows, int(size))}


# --------------------------------------------------------------------------- the section
def _model_path(config: dict, ctx, key: str, section: str = "tomography") -> Path:
    if key in config:
        return ctx.resolve(config[key])
    v = ctx.outputs.get(key)
    if v:
        return Path(getattr(v, "path", v))
    raise RecipeError(
        f"no {key.replace('_', ' ')}: give {section}.{key} or run the section that fits it",
        f"{ctx.recipe_path}: {section}",
    )


def _settings(config: dict, ctx, section: str = "tomography") -> dict:
    ct = dict(config.get("ct") or {})
    where = f"{ctx.recipe_path}: {section}.ct"
    try:
        return resolve_settings(ct.get("preset", "lab-nanoct"), **{k: ct.get(k) for k in CT_KEYS})
    except InputError as e:
        raise RecipeError(str(e).split(": ", 1)[-1] if str(e) else "invalid CT settings", where) from None


def _binder(config: dict):
    b = config.get("binder", {"mode": "bridge", "fraction": 0.08})
    if b is None or b.get("mode", "bridge") == "none" or float(b.get("fraction", 0.08)) == 0:
        return None
    return (b.get("mode", "bridge"), float(b.get("fraction", 0.08)))


def _fraction(config: dict):
    f = config.get("solid_fraction", DEFAULTS["solid_fraction"])
    return float(f) if np.isscalar(f) else (float(f[0]), float(f[1]))


def check_section(config: dict, ctx) -> None:
    """Pre-flight: models, imaging settings, fractions and the CT voxel against the particle size."""
    where = f"{ctx.recipe_path}: tomography"
    for key, section in (("shell_model", "shells"), ("grain_model", "grains")):
        if key in config:
            if not ctx.resolve(config[key]).exists():
                raise InputError(f"tomography.{key}: not found", ctx.resolve(config[key]))
        elif not ctx.outputs.get(key) and section not in ctx.recipe:
            raise RecipeError(f"no {key.replace('_', ' ')}: give tomography.{key} or add a '{section}' section", where)
    settings = _settings(config, ctx)
    frac = _fraction(config)
    lo, hi = (frac, frac) if np.isscalar(frac) else frac
    if lo > hi:
        raise RecipeError(f"tomography.solid_fraction: [{lo}, {hi}] is not an interval (min > max)", where)
    binder = _binder(config)
    if binder is not None and hi + binder[1] >= 1:
        raise RecipeError(f"tomography: NMC fraction {hi} + binder fraction {binder[1]} leave no pore space", where)
    if int(config.get("size", DEFAULTS["size"])) < 8:
        raise RecipeError("tomography.size: at least 8 CT voxels per edge", where)
    if "shell_model" in config:
        _check_ct_voxel(ctx.resolve(config["shell_model"]), config, settings, where)


def _check_ct_voxel(shell_path: Path, config: dict, settings: dict, where: str) -> None:
    """The CT voxel (label voxel x binning) must be at most half the mean particle radius (as ``render-ct``)."""

    shell, _ = load_shell_model(shell_path)
    r_mean = abs(shell.laws[0].mean()) / np.sqrt(4 * np.pi) * shell.voxel_size_um
    d = float(config.get("voxel_size_um", DEFAULTS["voxel_size_um"])) * settings["binning"]
    if d > r_mean / 2:
        raise RecipeError(
            f"tomography: the CT voxel ({d:.3g} µm = voxel_size_um x binning) is too coarse for "
            f"particles of mean radius {r_mean:.3g} µm (at most {r_mean / 2:.3g} µm)",
            where,
        )


def split_sizes(config: dict, default=(8, 2, 2)) -> dict:
    """Items per split (``{"train": n, "validation": n, "test": n}``; zero-sized splits left out).

    Parameters
    ----------
    config : dict
        The release section (its ``splits`` mapping).
    default : (int, int, int)
        Train, validation and test sizes without one.

    Returns
    -------
    dict
    """
    n = config.get("splits") or dict(zip(SPLITS, default))
    return {s: int(n.get(s, 0)) for s in SPLITS if int(n.get(s, 0)) > 0}


def build_split_configs(out: Path, ctx, rhash: str, config_name: str, jobs: dict, unit: str) -> dict:
    """Build one release config split by split with the shard builder, then drop stale splits.

    Parameters
    ----------
    out : Path
        The release folder.
    ctx : RunContext
        The run (workers, executor, force).
    rhash : str
        The recipe hash recorded with the shards.
    config_name : str
        The config (``data/<config_name>/<split>-XXXXX-of-YYYYY.parquet``).
    jobs : dict
        ``{split: (items, items_per_shard, shard_fn)}``.
    unit : str
        What an item is, for the log line.

    Returns
    -------
    dict
        ``{split: BuildResult}``.
    """
    opts = ctx.options or {}
    results = {}
    for split, (n, per_shard, fn) in jobs.items():
        r = build_dataset(
            out,
            n,
            per_shard,
            fn,
            [config_name],
            workers=ctx.workers,
            executor=opts.get("executor") or "local",
            scheduler=opts.get("scheduler"),
            recipe_hash=rhash,
            force=ctx.force,
            desc=f"{config_name} {split}",
            split=split,
        )
        results[split] = r
        log.info(
            "%s %s: %d %s in %d shard(s) (%d built now, %.1f s)",
            config_name,
            split,
            r.counts[config_name],
            unit,
            len(r.files[config_name]),
            len(r.built),
            r.seconds,
        )
    for f in sorted((out / "data" / config_name).glob("*.parquet")):  # splits an earlier build had
        if f.name.split("-", 1)[0] not in results:
            f.unlink()
    return results


def run_section(config: dict, ctx) -> dict:
    """Build the ``ct`` config of every split into ``ctx.out`` and draw its card figure.

    Records ``ctx.outputs["ct_release"]`` (``{split: rows}``). Returns the build results by split.
    """

    out = Path(ctx.out)
    shell_path = _model_path(config, ctx, "shell_model")
    grain_path = _model_path(config, ctx, "grain_model")
    settings = _settings(config, ctx)
    _check_ct_voxel(shell_path, config, settings, f"{ctx.recipe_path}: tomography")
    rhash = recipe_hash(ctx.recipe)
    check_build_folder(out, rhash, force=ctx.force, adopt_existing=True)  # before writing anything
    if "dataset" in ctx.recipe:
        copy_models(out, shell_path, grain_path)
    cfg = {**DEFAULTS, **config}
    jobs = {}
    for split, n in split_sizes(config).items():
        fn = functools.partial(
            ct_shard,
            split=split,
            shell_model_path=str(shell_path.resolve()),
            grain_model_path=str(grain_path.resolve()),
            seed=int(ctx.seed),
            size=int(cfg["size"]),
            settings=settings,
            voxel_size_um=float(cfg["voxel_size_um"]),
            solid_fraction=_fraction(config),
            binder=_binder(config),
            electrolyte=str(cfg["electrolyte"]),
            periodic=bool(cfg["periodic"]),
            neck_um=float(cfg["neck_um"]),
            spacing_px=float(cfg["spacing_px"]),
        )
        jobs[split] = (n, int(cfg["shard_size"]), fn)
    results = build_split_configs(out, ctx, rhash, CONFIG, jobs, "volumes")
    ct_card_figure(out)
    ctx.outputs["ct_release"] = {s: r.counts[CONFIG] for s, r in results.items()}
    return results


__all__ = [
    "CONFIG",
    "SPLITS",
    "ct_features",
    "ct_shard",
    "ct_table",
    "release_draws",
    "render_volume",
    "run_section",
    "build_split_configs",
    "check_section",
    "split_sizes",
    "volume_draws",
]
