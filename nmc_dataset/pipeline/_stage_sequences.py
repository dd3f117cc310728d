"""The ``sequences:`` recipe section: a ``sequences`` release config of 3D+t cycling states.

Every sequence is one electrode packed from the run's shell and grain models (with a crystal
orientation per grain), evolved through a cycling protocol
(:class:`nmc_dataset.tomography._evolve.Sequence`: per-grain lattice strain with the state of
charge, intergranular cracks, compaction and rigid motions) and scanned at every state by the CT
simulator, as ``nmc-dataset render-ct SEQ/`` does: the CT is rendered from the partial-volume
fractions (so the grey values move by the exact sub-voxel displacement), with new photon noise per
state and one detector gain map (the same rings) for the whole sequence.

Layout (a Hugging Face dataset config with three splits)::

    data/sequences/train-XXXXX-of-YYYYY.parquet        one row per state
    data/sequences/validation-XXXXX-of-YYYYY.parquet
    data/sequences/test-XXXXX-of-YYYYY.parquet
    figures/sequence_slices_over_time_and_displacement.png   (the card shows it)

Columns: ``split``, ``index`` (row within the split), ``sequence`` (within the split), ``step``,
``steps``; ``ct`` (float32, 1/µm) and ``ct_reference`` (the CT of step 0 of the same sequence: the
volume pair a DVC or registration model sees), ``phase`` (uint8), ``particle``, ``grain``, ``crack``
(uint32, crack id, 0 = none), all ``datasets.Array3D`` of the fixed shape ``size³`` (``z, y, x``)
on the CT grid; ``displacement`` (float32 ``datasets.Array4D`` ``(size, size, size, 3)``): the exact
displacement from the reference state in CT voxels, components ``(z, y, x)``, defined on the
reference grid (block mean over the binned label voxels), NaN where material vanished into a
crack; scalars ``cycle``, ``soc``, ``lattice_strain_a``, ``lattice_strain_c``, ``n_cracks``,
``crack_voxels``, ``crack_area_um2``, ``nmc_volume_change``, ``max_displacement_vox`` (CT voxels),
``voxel_size_um`` (CT), ``label_voxel_size_um``, seeds; JSON strings ``protocol`` (the complete,
validated protocol), ``summary`` (the state's summary with its crack list, as ``sequence.json``
of ``evolve``), ``imaging`` and ``packing``.

Determinism: sequence ``j`` of split ``s`` draws its fraction and its packing, evolution and CT
seeds from ``item_seed(recipe seed, j, SPLIT_STREAMS[s])`` alone; state ``t`` takes the photon
noise seed ``SeedSequence([ct_seed, t])``. The shard builder's items are the states
(``j · steps + t``) and a shard holds whole sequences, so 1 or N workers give byte-identical
shards and a killed build resumes at the first unfinished shard.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from nmc_dataset._util import log
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.pipeline._build import check_build_folder
from nmc_dataset.pipeline._particle_shards import copy_models
from nmc_dataset.pipeline._recipe import recipe_hash
from nmc_dataset.pipeline._sequence_figures import sequence_card_figure
from nmc_dataset.pipeline._sequences import _bin_truth
from nmc_dataset.pipeline._stage_tomography import (
    _binder,
    _check_ct_voxel,
    _fraction,
    _load_models,
    _model_path,
    _settings,
    build_split_configs,
    pack_for_release,
    release_draws,
)
from nmc_dataset.pipeline._stage_tomography import split_sizes as _split_sizes
from nmc_dataset.tomography._ctsim import render_ct, resample_labels
from nmc_dataset.tomography._evolve import Sequence, load_protocol, validate_protocol

CONFIG = "sequences"
SPLITS = ("train", "validation", "test")
#: random stream of split ``s`` (``item_seed(seed, j, SPLIT_STREAMS[s])``)
SPLIT_STREAMS = {"train": 41, "validation": 42, "test": 43}
DEFAULTS = {
    "size": 32,
    "steps": 4,
    "voxel_size_um": 0.1,
    "solid_fraction": 0.45,
    "periodic": True,
    "neck_um": 0.0,
    "electrolyte": "none",
    "spacing_px": 2.0,
    "sequences_per_shard": 1,
}
VOLUMES = {
    "ct": "float32",
    "ct_reference": "float32",
    "phase": "uint8",
    "particle": "uint32",
    "grain": "uint32",
    "crack": "uint32",
}
FLOATS = (
    "voxel_size_um",
    "label_voxel_size_um",
    "target_solid_fraction",
    "solid_fraction",
    "cycle",
    "soc",
    "lattice_strain_a",
    "lattice_strain_c",
    "crack_area_um2",
    "nmc_volume_change",
    "max_displacement_vox",
)
INTS = (
    "sequence",
    "step",
    "steps",
    "n_particles",
    "n_grains",
    "n_cracks",
    "crack_voxels",
    "pack_seed",
    "evolve_seed",
    "ct_seed",
    "noise_seed",
)
JSONS = ("protocol", "summary", "imaging", "packing")


# --------------------------------------------------------------------------- features / one sequence
def sequence_features(n: int):
    """``datasets.Features`` of the ``sequences`` config (volumes ``n³``, displacement ``(n, n, n, 3)``).

    Parameters
    ----------
    n : int
        Edge of the CT volumes.

    Returns
    -------
    datasets.Features
    """
    import datasets

    feats = {"split": datasets.Value("string"), "index": datasets.Value("int64")}
    for name in INTS[:3]:
        feats[name] = datasets.Value("int64")
    for name, dt in VOLUMES.items():
        feats[name] = datasets.Array3D(shape=(n, n, n), dtype=dt)
    feats["displacement"] = datasets.Array4D(shape=(n, n, n, 3), dtype="float32")
    for name in FLOATS:
        feats[name] = datasets.Value("float64")
    for name in INTS[3:]:
        feats[name] = datasets.Value("int64")
    for name in JSONS:
        feats[name] = datasets.Value("string")
    return datasets.Features(feats)


def array_column(stack: np.ndarray, feature) -> pa.ExtensionArray:
    """A ``datasets.Array3D`` / ``Array4D`` arrow column from a stack ``(rows, *shape)``, without Python lists.

    Parameters
    ----------
    stack : numpy.ndarray
        One fixed-shape array per row, already of the feature's dtype.
    feature : datasets.Array3D or datasets.Array4D
        The column's feature (its shape is ``stack.shape[1:]``).

    Returns
    -------
    pyarrow.ExtensionArray
    """
    v = np.ascontiguousarray(stack)
    arr = pa.array(v.reshape(-1))
    shape = v.shape
    # innermost list level first: lists of shape[-1], then of shape[-2], ...
    count = int(np.prod(shape[:-1]))
    for level in range(len(shape) - 1, 0, -1):
        size = shape[level]
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, count * size + 1, size, dtype=np.int32)), arr)
        count //= shape[level - 1]
    return pa.ExtensionArray.from_storage(feature(), arr)


def sequence_draws(seed: int, split: str, index: int, solid_fraction) -> dict:
    """Fraction and seeds of sequence ``index`` of ``split`` (from the recipe seed and the index alone).

    Parameters
    ----------
    seed : int
        The recipe seed.
    split : {"train", "validation", "test"}
        The split; each has its own random stream (:data:`SPLIT_STREAMS`).
    index : int
        Sequence index within the split.
    solid_fraction : float or tuple of 2 floats
        Target NMC fraction, or a range ``(lo, hi)`` drawn uniformly per sequence.

    Returns
    -------
    dict
        ``solid_fraction`` and the integer seeds ``pack_seed``, ``evolve_seed``, ``ct_seed``.
    """
    return release_draws(seed, SPLIT_STREAMS[split], index, solid_fraction, ("pack_seed", "evolve_seed", "ct_seed"))


def noise_seed(ct_seed: int, step: int) -> int:
    """Photon-noise seed of state ``step`` (as ``render-ct SEQ/``: new noise in every state)."""
    return int(np.random.SeedSequence([int(ct_seed), int(step)]).generate_state(1)[0])


def render_sequence_states(
    shell_model,
    grain_model,
    *,
    split: str,
    sequence: int,
    steps_wanted,
    seed: int,
    size: int,
    steps: int,
    settings: dict,
    voxel_size_um: float,
    solid_fraction,
    binder,
    electrolyte: str,
    periodic: bool,
    neck_um: float,
    spacing_px: float,
    protocol: dict,
    model_ids=("", ""),
) -> list[dict]:
    """Pack, evolve and scan one sequence; the rows of the states ``steps_wanted`` (see module docs)."""
    d = sequence_draws(seed, split, sequence, solid_fraction)
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
    if e.grains is None:  # pragma: no cover - the section checks the orientation model first
        raise RecipeError("the grain model gives no crystal orientations (needed for the lattice strain)")
    seq = Sequence(
        {"phase": e.phase, "particle": e.particle, "grain": e.grain},
        e.table,
        e.grains,
        voxel_size_um=h,
        periodic=periodic,
        protocol=protocol,
        steps=steps,
        seed=d["evolve_seed"],
    )
    packing = {k: v for k, v in e.info.items() if k != "seconds"}
    packing.update(shell_model_id=model_ids[0], grain_model_id=model_ids[1])
    protocol_json = json.dumps(protocol, sort_keys=True)
    want = sorted(set(int(t) for t in steps_wanted))
    rows, ref_ct = [], None
    for t in range(max(want) + 1):  # states in order: cracks grow state by state
        if t not in want and t != 0:
            continue
        st = seq.state(t)
        summary = st.pop("summary")
        ns = noise_seed(d["ct_seed"], t)
        ct, imaging = render_ct(
            st["phase"],
            h,
            settings=settings,
            electrolyte=electrolyte,
            seed=ns,
            fractions=(st["nmc_fraction"], st["binder_fraction"]),
            gain_seed=d["ct_seed"],
        )
        if ct.shape != (size,) * 3:
            raise RuntimeError(f"CT grid {ct.shape} is not the requested {size}³")
        if t == 0:
            ref_ct = ct
        if t not in want:
            continue
        phase, particle, grain = resample_labels(st["phase"], st["particle"], st["grain"], s)
        u, crack = _bin_truth(st["displacement"], st["crack"], s, ct.shape)
        imaging.pop("seconds", None)
        finite = np.isfinite(u)
        rows.append(
            {
                "split": split,
                "sequence": int(sequence),
                "step": t,
                "steps": int(steps),
                "ct": ct,
                "ct_reference": ref_ct,
                "phase": phase,
                "particle": particle,
                "grain": grain,
                "crack": crack.astype(np.uint32),
                "displacement": u.astype(np.float32),
                "voxel_size_um": float(imaging["voxel_size_um"]),
                "label_voxel_size_um": h,
                "target_solid_fraction": d["solid_fraction"],
                "solid_fraction": float(e.info["solid_fraction"]),
                "cycle": summary["cycle"],
                "soc": summary["soc"],
                "lattice_strain_a": summary["lattice_strain_a"],
                "lattice_strain_c": summary["lattice_strain_c"],
                "crack_area_um2": summary["crack_area_um2"],
                "nmc_volume_change": summary["nmc_volume_change"],
                "max_displacement_vox": float(np.abs(u[finite]).max()) if finite.any() else 0.0,
                "n_particles": int(e.info["n_particles"]),
                "n_grains": int(e.info["n_grains"]),
                "n_cracks": int(summary["cracks"]),
                "crack_voxels": int(summary["crack_voxels"]),
                "pack_seed": d["pack_seed"],
                "evolve_seed": d["evolve_seed"],
                "ct_seed": d["ct_seed"],
                "noise_seed": ns,
                "protocol": protocol_json,
                "summary": json.dumps(summary, sort_keys=True),
                "imaging": json.dumps(imaging, sort_keys=True),
                "packing": json.dumps(packing, sort_keys=True),
            }
        )
    return rows


def sequence_table(rows: list[dict], n: int) -> pa.Table:
    """The ``sequences`` Arrow table of a shard's rows (schema of :func:`sequence_features`).

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`render_sequence_states` (``index`` set).
    n : int
        Edge of the CT volumes.

    Returns
    -------
    pyarrow.Table
    """
    feats = sequence_features(n)
    arrays = []
    for field in feats.arrow_schema:
        name = field.name
        if name in VOLUMES or name == "displacement":
            f = feats[name]
            shape = (0,) + tuple(f.shape)
            stack = np.stack([r[name] for r in rows]).astype(f.dtype, copy=False) if rows else np.zeros(shape, f.dtype)
            arrays.append(array_column(stack, f))
        else:
            arrays.append(pa.array([r[name] for r in rows], type=field.type))
    return pa.Table.from_arrays(arrays, schema=feats.arrow_schema)


def sequence_shard(
    shard_index: int,
    items,
    *,
    split: str,
    shell_model_path: str,
    grain_model_path: str,
    orientation_model_path: str,
    seed: int,
    size: int,
    steps: int,
    settings: dict,
    voxel_size_um: float,
    solid_fraction,
    binder,
    electrolyte: str,
    periodic: bool,
    neck_um: float,
    spacing_px: float,
    protocol: dict,
) -> dict:
    """``make_shard`` of the ``sequences`` config: items are states ``sequence · steps + step``.

    Parameters
    ----------
    shard_index : int
        Index of the shard (unused: the rows depend on the items alone).
    items : sequence of int
        State indices within the split.
    split, shell_model_path, grain_model_path, orientation_model_path, seed, size, steps, settings, \
voxel_size_um, solid_fraction, binder, electrolyte, periodic, neck_um, spacing_px, protocol :
        The section's resolved settings (bound with ``functools.partial``).

    Returns
    -------
    dict
        ``{"sequences": pyarrow.Table}``.
    """
    shell, sid, grain, gid = _load_models(shell_model_path, grain_model_path, orientation_model_path)
    by_seq: dict[int, list[int]] = {}
    for k in items:
        by_seq.setdefault(int(k) // steps, []).append(int(k) % steps)
    rows = []
    for j, ts in by_seq.items():
        rows += render_sequence_states(
            shell,
            grain,
            split=split,
            sequence=j,
            steps_wanted=ts,
            seed=seed,
            size=size,
            steps=steps,
            settings=settings,
            voxel_size_um=voxel_size_um,
            solid_fraction=solid_fraction,
            binder=binder,
            electrolyte=electrolyte,
            periodic=periodic,
            neck_um=neck_um,
            spacing_px=spacing_px,
            protocol=protocol,
            model_ids=(sid, gid),
        )
    for r in rows:
        r["index"] = r["sequence"] * steps + r["step"]
    return {CONFIG: sequence_table(rows, int(size))}


# --------------------------------------------------------------------------- the section
def _where(ctx, key: str = "") -> str:
    return f"{ctx.recipe_path}: sequences" + (f".{key}" if key else "")


def _protocol(config: dict, ctx) -> dict:
    """The validated protocol (a mapping in the recipe, or a protocol YAML file next to it)."""
    raw = config.get("protocol")
    try:
        if isinstance(raw, str):
            return load_protocol(ctx.resolve(raw))
        return validate_protocol(raw, "protocol")
    except InputError as e:
        msg = str(e)
        raise RecipeError(msg.replace("protocol: ", "", 1), _where(ctx, "protocol")) from None


def _orientation_path(config: dict, ctx, grain_path: Path | None) -> Path | None:
    """The orientation model: ``sequences.orientation_model``, else ``GRAIN_MODEL/orientation_model.json``."""
    if "orientation_model" in config:
        return ctx.resolve(config["orientation_model"])
    if grain_path is not None and (grain_path / "orientation_model.json").is_file():
        return grain_path / "orientation_model.json"
    return None


def _ensure_orientation_model(config: dict, ctx, grain_path: Path) -> Path:
    """The orientation model, fitted on this run's imported sections into the run's grain model when missing."""
    p = _orientation_path(config, ctx, grain_path)
    if p is not None:
        return p
    if "grain_model" not in config and ctx.outputs.get("sections"):
        from nmc_dataset.pipeline._orientations import fit_orientations

        target = grain_path / "orientation_model.json"
        log.info("sequences: fitting the orientation texture on %s (fit-orientations)", ctx.outputs["sections"])
        fit_orientations(ctx.outputs["sections"], target)
        return target
    raise RecipeError(
        "the grain model has no orientation_model.json: give sequences.orientation_model or run "
        "`nmc-dataset fit-orientations SECTIONS/ --out GRAIN_MODEL/orientation_model.json`",
        _where(ctx),
    )


def check_section(config: dict, ctx) -> None:
    """Pre-flight: models, protocol, imaging settings, fractions and the CT voxel against the particle size.

    Parameters
    ----------
    config : dict
        The ``sequences`` section.
    ctx : RunContext
        The run.

    Raises
    ------
    RecipeError, InputError
        One line naming the key.
    """
    where = _where(ctx)
    for key, section in (("shell_model", "shells"), ("grain_model", "grains")):
        if key in config:
            if not ctx.resolve(config[key]).exists():
                raise InputError(f"sequences.{key}: not found", ctx.resolve(config[key]))
        elif not ctx.outputs.get(key) and section not in ctx.recipe:
            raise RecipeError(f"no {key.replace('_', ' ')}: give sequences.{key} or add a '{section}' section", where)
    if "orientation_model" in config and not ctx.resolve(config["orientation_model"]).is_file():
        raise InputError("sequences.orientation_model: not found", ctx.resolve(config["orientation_model"]))
    if "grain_model" in config and _orientation_path(config, ctx, ctx.resolve(config["grain_model"])) is None:
        raise RecipeError(
            "the grain model has no orientation_model.json: give sequences.orientation_model or run "
            "`nmc-dataset fit-orientations SECTIONS/ --out GRAIN_MODEL/orientation_model.json`",
            where,
        )
    if (
        "grain_model" not in config
        and "grains" in ctx.recipe
        and "sections" not in ctx.recipe
        and "orientation_model" not in config
    ):
        raise RecipeError(
            "no orientation model: give sequences.orientation_model or add a 'sections' section "
            "(its imported scans are fitted by fit-orientations)",
            where,
        )
    _protocol(config, ctx)
    settings = _settings(config, ctx, "sequences")
    lo, hi = (lambda f: (f, f) if np.isscalar(f) else f)(_fraction(config))
    if lo > hi:
        raise RecipeError(f"sequences.solid_fraction: [{lo}, {hi}] is not an interval (min > max)", where)
    binder = _binder(config)
    if binder is not None and hi + binder[1] >= 1:
        raise RecipeError(f"sequences: NMC fraction {hi} + binder fraction {binder[1]} leave no pore space", where)
    if "shell_model" in config:
        _check_ct_voxel(ctx.resolve(config["shell_model"]), config, settings, where)


def split_sizes(config: dict) -> dict:
    """Sequences per split (``{"train": n, ...}``; zero-sized splits left out).

    Parameters
    ----------
    config : dict
        The ``sequences`` section.

    Returns
    -------
    dict
    """
    return _split_sizes(config, default=(4, 1, 1))


def run_section(config: dict, ctx) -> dict:
    """Build the ``sequences`` config of every split into ``ctx.out`` and draw its card figure.

    Records ``ctx.outputs["sequences_release"]`` (``{split: rows}``).

    Parameters
    ----------
    config : dict
        The ``sequences`` section.
    ctx : RunContext
        The run.

    Returns
    -------
    dict
        The build results by split.
    """
    out = Path(ctx.out)
    shell_path = _model_path(config, ctx, section="sequences", key="shell_model")
    grain_path = _model_path(config, ctx, section="sequences", key="grain_model")
    settings = _settings(config, ctx, "sequences")
    protocol = _protocol(config, ctx)
    _check_ct_voxel(shell_path, config, settings, _where(ctx))
    rhash = recipe_hash(ctx.recipe)
    check_build_folder(out, rhash, force=ctx.force, adopt_existing=True)  # before writing anything
    orient = _ensure_orientation_model(config, ctx, grain_path)
    if "dataset" in ctx.recipe:
        copy_models(out, shell_path, grain_path)
    cfg = {**DEFAULTS, **config}
    steps = int(cfg["steps"])
    jobs = {}
    for split, n in split_sizes(config).items():
        fn = functools.partial(
            sequence_shard,
            split=split,
            shell_model_path=str(shell_path.resolve()),
            grain_model_path=str(grain_path.resolve()),
            orientation_model_path=str(Path(orient).resolve()),
            seed=int(ctx.seed),
            size=int(cfg["size"]),
            steps=steps,
            settings=settings,
            voxel_size_um=float(cfg["voxel_size_um"]),
            solid_fraction=_fraction(config),
            binder=_binder(config),
            electrolyte=str(cfg["electrolyte"]),
            periodic=bool(cfg["periodic"]),
            neck_um=float(cfg["neck_um"]),
            spacing_px=float(cfg["spacing_px"]),
            protocol=protocol,
        )
        jobs[split] = (n * steps, int(cfg["sequences_per_shard"]) * steps, fn)
    results = build_split_configs(out, ctx, rhash, CONFIG, jobs, "states")
    sequence_card_figure(out)
    ctx.outputs["sequences_release"] = {s: r.counts[CONFIG] for s, r in results.items()}
    return results


__all__ = [
    "CONFIG",
    "SPLITS",
    "array_column",
    "check_section",
    "noise_seed",
    "render_sequence_states",
    "run_section",
    "sequence_draws",
    "sequence_features",
    "sequence_shard",
    "sequence_table",
    "split_sizes",
]
