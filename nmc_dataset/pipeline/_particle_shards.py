"""Particles through the sharded release builder.

With a ``dataset:`` section in the recipe, the ``particles:`` section builds its particles with
:func:`nmc_dataset.pipeline._build.build_dataset` straight into the release layout (a Hugging Face
dataset repository)::

    data/particles/train-XXXXX-of-YYYYY.parquet   one row per particle (params table of
                                                   nmc_dataset.export._tables: id, seed, model ids,
                                                   SH coefficients µm, shell descriptors, ...)
    data/grains/train-...parquet                  one row per grain (seed, D, r, γ, volume, centroid,
                                                   principal axes, touches_shell, elongation,
                                                   radial_alignment)
    data/voxels_<N>/train-...parquet              fixed-shape N³ uint16 label volumes (Array3D), one
                                                   per particle, on a per-particle cube grid
                                                   (:func:`cube_grid`)
    voxels/voxels-XXXXX-of-YYYYY.h5 (+ .xdmf)     full-resolution label volumes at
                                                   ``particles.voxel_size_um`` (format "voxels")
    meshes/surfaces/particle_<id>_*               surface meshes      (formats: surface)
    meshes/volume_meshes/particle_<id>.*          tet meshes for FEM  (formats: volume-mesh)
    models/                                       the shell model JSON and grain model folder

Particle ``k`` is drawn from ``particle_seed(recipe seed, k)`` alone, so the shards, HDF5 files
and meshes are byte-identical for any number of workers or a dask cluster. The HDF5 and mesh
files of a shard are recorded in its completeness sidecar (:class:`~nmc_dataset.pipeline._build.ShardResult`),
so a killed build redoes a shard whose extra files are missing or damaged.

The N³ grids: voxel ``[k, j, i]`` of particle ``p`` is centred at ``h_p * (i - N//2, j - N//2,
k - N//2)`` µm, with ``h_p`` (``voxel_size_um`` of the row) chosen so that the shell's bounding box
(+2 %) fits with ``pad`` empty voxels on every side. It is the same anchored lattice as
:func:`nmc_dataset.particles._voxelize.voxelize` at voxel size ``h_p``: both give the same label at
every common voxel centre.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nmc_dataset._util import atomic_path, log, read_json
from nmc_dataset.calibration._model import MODEL_JSON, WEIGHTS
from nmc_dataset.ebsd._orientation_model import ORIENTATION_MODEL_FILE
from nmc_dataset.export import _tables as ptables
from nmc_dataset.particles._assemble import _children, particle_seed
from nmc_dataset.particles._voxelize import (
    check_memory,
    cube_grid,
    shell_grid,
    voxelize_cube,
)
from nmc_dataset.pipeline._build import ShardResult, array3d_column, build_dataset, check_build_folder
from nmc_dataset.pipeline._card_figures import particle_rendering
from nmc_dataset.pipeline._generate import load_shell_model, parse_formats
from nmc_dataset.pipeline._particles import export_particles
from nmc_dataset.pipeline._previews import render_first_particle_orientations, with_previews
from nmc_dataset.pipeline._recipe import recipe_hash

#: HDF5 file of a shard under voxels/
VOXELS_DIR = "voxels"
MESHES_DIR = "meshes"
MODELS_DIR = "models"

_MODELS: dict = {}

#: the dataset section's default particles per shard (a 64³ uint16 volume is 0.5 MiB in memory)
DEFAULT_SHARD_SIZE = 25
#: default edge lengths of the voxels_<N> configs
DEFAULT_CUBES = (64,)


# --------------------------------------------------------------------------- fixed-shape cubes
# --------------------------------------------------------------------------- grain shape descriptors
def grain_shape_descriptors(principal_axes: np.ndarray, principal_sd_um: np.ndarray, centroid_um: np.ndarray) -> dict:
    """Elongation and radial alignment of grains from their voxel second moments.

    Parameters
    ----------
    principal_axes : (n, 3, 3) array
        Unit axes (rows, ``(x, y, z)``), largest second moment first.
    principal_sd_um : (n, 3) array
        Standard deviations along those axes.
    centroid_um : (n, 3) array
        Grain centroids (particle centre at the origin).

    Returns
    -------
    dict of (n,) arrays
        ``elongation`` = largest / smallest principal SD (1 = isotropic; NaN without voxels),
        ``radial_alignment`` = ``|cos|`` of the angle between the major axis and the direction
        from the particle centre to the centroid (1 = radial; 1/2 is the mean of random
        directions; NaN for grains at the centre or without voxels).
    """
    axes = np.asarray(principal_axes, dtype=np.float64).reshape(-1, 3, 3)
    sd = np.asarray(principal_sd_um, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(centroid_um, dtype=np.float64).reshape(-1, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        elong = np.where(sd[:, 2] > 0, sd[:, 0] / sd[:, 2], np.nan)
        r = np.linalg.norm(c, axis=1)
        cos = np.abs(np.einsum("ij,ij->i", axes[:, 0, :], c)) / r
        cos = np.where((r > 0) & np.isfinite(r), np.clip(cos, 0.0, 1.0), np.nan)
    return {"elongation": elong, "radial_alignment": cos}


# --------------------------------------------------------------------------- features / tables
def voxels_features(n: int):
    """``datasets.Features`` of a ``voxels_<n>`` config."""
    import datasets

    return datasets.Features(
        {
            "particle_id": datasets.Value("int64"),
            "voxel_size_um": datasets.Value("float64"),
            "origin_um": datasets.Sequence(datasets.Value("float64"), length=3),
            "n_grains": datasets.Value("int64"),
            "labels": datasets.Array3D(shape=(n, n, n), dtype="uint16"),
        }
    )


def voxels_table(volumes: list, n_grains: list, n: int):
    """The ``voxels_<n>`` Arrow table of a shard's cube volumes (``VoxelVolume`` list, uint16)."""

    feats = voxels_features(n)
    stack = np.stack([np.asarray(v.labels) for v in volumes]) if volumes else np.zeros((0, n, n, n), np.uint16)
    if stack.size and int(stack.max()) > np.iinfo(np.uint16).max:
        raise ValueError("a particle has more than 65535 grains: the voxels_<N> configs store uint16 labels")
    col, _ = array3d_column(stack.astype(np.uint16, copy=False))
    origin = np.asarray([v.origin_um for v in volumes], dtype=np.float64).reshape(-1)
    arrays = [
        pa.array(np.asarray([v.particle_id for v in volumes], dtype=np.int64)),
        pa.array(np.asarray([v.voxel_size_um for v in volumes], dtype=np.float64)),
        pa.FixedSizeListArray.from_arrays(pa.array(origin), 3),
        pa.array(np.asarray(n_grains, dtype=np.int64)),
        col,
    ]
    schema = feats.arrow_schema
    arrays[2] = arrays[2].cast(schema.field("origin_um").type)
    return pa.Table.from_arrays(arrays, schema=schema)


def _with_grain_shapes(grains):
    """Append ``elongation`` and ``radial_alignment`` columns to a params grains table."""

    n = grains.num_rows
    if n:
        axes = np.asarray(grains.column("principal_axes").to_pylist(), dtype=np.float64).reshape(n, 3, 3)
        sd = np.asarray(grains.column("principal_sd_um").to_pylist(), dtype=np.float64).reshape(n, 3)
        c = np.stack([grains.column(f"centroid_{a}_um").to_numpy(zero_copy_only=False) for a in "xyz"], axis=1)
        d = grain_shape_descriptors(axes, sd, c)
    else:
        d = {"elongation": np.zeros(0), "radial_alignment": np.zeros(0)}
    meta = grains.schema.metadata
    for k in ("elongation", "radial_alignment"):
        grains = grains.append_column(pa.field(k, pa.float64()), pa.array(d[k], type=pa.float64()))
    return grains.replace_schema_metadata(meta)


# --------------------------------------------------------------------------- one shard
def _models(shell_model_path: str, grain_model_path: str):
    """Loaded models (cached per worker process): ``(shell, shell_id, grain, grain_id)``."""
    key = (shell_model_path, grain_model_path)
    if key not in _MODELS:
        from nmc_dataset.pipeline._generate import load_grain_model, load_shell_model

        # One worker = one core: the pool (--workers N) provides the parallelism; threaded torch or
        # numba kernels inside N workers would oversubscribe the machine.
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        try:
            import numba

            numba.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        s, sid = load_shell_model(shell_model_path)
        g, gid = load_grain_model(grain_model_path)
        _MODELS[key] = (s, sid, g, gid)
    return _MODELS[key]


def voxels_file(shard_index: int, n_shards: int) -> str:
    """Relative path of a shard's HDF5 volumes (``voxels/voxels-00003-of-00010.h5``)."""
    return f"{VOXELS_DIR}/voxels-{shard_index:05d}-of-{n_shards:05d}.h5"


def particle_shard(
    shard_index: int,
    items: Sequence[int],
    *,
    out: str,
    n_shards: int,
    shell_model_path: str,
    grain_model_path: str,
    seed: int,
    voxel_size_um: float = 0.05,
    cubes: Sequence[int] = DEFAULT_CUBES,
    formats: Sequence[str] = ("params", "voxels"),
    first_index: int = 0,
    mesh_size_um: float | None = None,
    smoothing_iterations: int = 8,
    spacing_px: float = 1.0,
    margin_px: float = 8.0,
    max_memory_gib: float | None = None,
    element_order: int = 1,
    min_elements_per_grain: int | None = None,
):
    """``make_shard`` of the particle release: params tables, N³ cubes, HDF5 volumes and meshes.

    Top-level and picklable (bind the keywords with ``functools.partial``). Item ``k`` is
    particle ``first_index + k``, drawn from ``particle_seed(seed, first_index + k)`` only.
    On a dask cluster, ``out`` and the model paths must be reachable under the same names from
    every worker (a shared file system), as for the parquet shards the builder writes there.

    Parameters
    ----------
    shard_index : int
        Index of the shard (names the HDF5 file).
    items : sequence of int
        Item indices of the shard.
    out : str
        The build folder (the HDF5 and mesh files are written under it, atomically).
    n_shards : int
        Number of shards of the build (names the HDF5 file).
    shell_model_path, grain_model_path : str
        Model files (loaded once per worker process).
    seed : int
        The recipe seed.
    voxel_size_um : float
        Voxel size of the full-resolution volumes (grain statistics, HDF5, meshes).
    cubes : sequence of int
        Edge lengths ``N`` of the ``voxels_<N>`` configs.
    formats : sequence of str
        ``voxels`` writes the HDF5 file, ``surface`` / ``volume-mesh`` the meshes (``params``
        is implied: the particles and grains configs are always built).
    first_index : int
        Index of item 0's particle.
    mesh_size_um : float, optional
        Target tet size (µm) of the volume meshes.
    smoothing_iterations : int
        Surface-nets smoothing iterations of the meshes.
    spacing_px, margin_px : float
        Assembly lattice spacing and box margin (pixels) of the centre-of-mass selection.
    max_memory_gib : float, optional
        Memory limit for one volume (default 80 % of free memory).
    element_order : {1, 2}
        Linear or quadratic tets.
    min_elements_per_grain : int, optional
        Keep small grains' surfaces fine enough that each gets at least this many tets.

    Returns
    -------
    nmc_dataset.pipeline._build.ShardResult
        Tables of the configs ``particles``, ``grains`` and ``voxels_<N>``, and the extra files.
    """

    out_p = Path(out)
    shell, sid, grain, gid = _models(shell_model_path, grain_model_path)
    formats = tuple(formats)
    extra: list[str] = []
    mesh_folder = None
    if "surface" in formats or "volume-mesh" in formats:
        mesh_folder = out_p / MESHES_DIR
        mesh_folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        writer = None
        if "voxels" in formats:
            from nmc_dataset.export._hdf5 import VoxelsWriter

            rel = voxels_file(shard_index, n_shards)
            writer = stack.enter_context(VoxelsWriter(out_p / rel))
        results, failures = export_particles(
            [int(first_index) + int(k) for k in items],
            mesh_folder=mesh_folder,
            shell_model=shell,
            grain_model=grain,
            seed=seed,
            voxel_size_um=voxel_size_um,
            formats=("params",) + formats,
            voxels=writer,
            cubes=cubes,
            mesh_size_um=mesh_size_um,
            smoothing_iterations=smoothing_iterations,
            spacing_px=spacing_px,
            margin_px=margin_px,
            max_memory_gib=max_memory_gib,
            shell_model_id=sid,
            grain_model_id=gid,
            element_order=element_order,
            min_elements_per_grain=min_elements_per_grain,
        )
    if writer is not None:
        extra += [rel, str(Path(rel).with_suffix(".xdmf").as_posix())]
    extra += [p.relative_to(out_p).as_posix() for r in results for p in r.files]
    particles, grains = ptables.params_tables([r.record for r in results])
    tables = {"particles": with_previews(particles, grains, results), "grains": _with_grain_shapes(grains)}
    ngr = [r.n_grains for r in results]
    for n in cubes:
        tables[f"voxels_{int(n)}"] = voxels_table([r.cubes[int(n)] for r in results], ngr, int(n))
    return ShardResult(tables=tables, files=sorted(extra), failed=[f.as_dict() for f in failures])


# --------------------------------------------------------------------------- the release build
def release_configs(cubes: Sequence[int]) -> list[str]:
    """Config names a particle release builds.

    Parameters
    ----------
    cubes : sequence of int
        Edge lengths ``N`` of the fixed-size label cubes.

    Returns
    -------
    list of str
        ``particles``, ``grains`` and ``voxels_<N>`` per cube.
    """
    return ["particles", "grains"] + [f"voxels_{int(n)}" for n in cubes]


def _copy_file(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)


def copy_models(out: Path, shell_model_path: Path, grain_model_path: Path) -> list[str]:
    """Copy the shell model JSON and the grain model folder (model.json + weights) into ``models/``."""

    out = Path(out)
    written = []
    shell_model_path, grain_model_path = Path(shell_model_path), Path(grain_model_path)
    _copy_file(shell_model_path, out / MODELS_DIR / shell_model_path.name)
    written.append(f"{MODELS_DIR}/{shell_model_path.name}")
    coeffs = shell_model_path.with_name(shell_model_path.stem + ".coefficients.parquet")
    if coeffs.is_file():
        _copy_file(coeffs, out / MODELS_DIR / coeffs.name)
        written.append(f"{MODELS_DIR}/{coeffs.name}")
    meta = read_json(grain_model_path / MODEL_JSON)
    name = "grain_model"

    extra = [ORIENTATION_MODEL_FILE] if (grain_model_path / ORIENTATION_MODEL_FILE).is_file() else []
    for f in (MODEL_JSON, meta.get("weights", WEIGHTS), *extra):
        _copy_file(grain_model_path / f, out / MODELS_DIR / name / f)
        written.append(f"{MODELS_DIR}/{name}/{f}")
    return written


def _sweep(out: Path, keep: set) -> int:
    """Delete files under ``voxels/`` and ``meshes/`` that are not extra files of this build."""
    removed = 0
    for top in (VOXELS_DIR, MESHES_DIR):
        d = out / top
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.relative_to(out).as_posix() not in keep:
                p.unlink()
                removed += 1
    return removed


def build_particle_release(config: dict, ctx, *, shell_model_path: Path, grain_model_path: Path):
    """Build the particles of a ``particles:`` section into the release layout of ``ctx.out``.

    Shard size and the N³ configs come from the ``dataset:`` section (``particles_shard_size``)
    and the ``particles:`` section (``cubes``). Returns the :class:`~nmc_dataset.pipeline._build.BuildResult`.

    Parameters
    ----------
    config : dict
        The recipe's ``particles:`` section.
    ctx : RunContext
        The run (recipe, output folder, seed, workers, options).
    shell_model_path, grain_model_path : Path
        The model files to draw from (copied into the release's ``models/``).

    Returns
    -------
    BuildResult
        Of the configs ``particles``, ``grains`` and ``voxels_<N>``.
    """

    dcfg = ctx.recipe.get("dataset") or {}
    formats = parse_formats(config.get("formats", ["params", "voxels"]), f"{ctx.recipe_path}: particles.formats")
    if "damask" in formats or "neper" in formats:
        from nmc_dataset.pipeline._generate import check_orientations_for, load_grain_model

        check_orientations_for(formats, load_grain_model(grain_model_path)[0], f"{ctx.recipe_path}: particles.formats")
    cubes = [int(n) for n in config.get("cubes", list(DEFAULT_CUBES))]
    mesh = config.get("mesh", {}) or {}
    assembly = config.get("assembly", {}) or {}
    n = int(config.get("n", 20))
    out = Path(ctx.out)
    opts = ctx.options or {}
    # the full-resolution volume of every particle must fit (shells are cheap to draw: check first)
    _check_memory(config, shell_model_path, n, ctx)
    rhash = recipe_hash(ctx.recipe)
    shard_size = int(dcfg.get("particles_shard_size", DEFAULT_SHARD_SIZE))
    n_shards = -(-n // shard_size)
    fn = functools.partial(
        particle_shard,
        out=str(out.resolve()),
        n_shards=n_shards,
        shell_model_path=str(Path(shell_model_path).resolve()),
        grain_model_path=str(Path(grain_model_path).resolve()),
        seed=int(ctx.seed),
        voxel_size_um=float(config.get("voxel_size_um", 0.05)),
        cubes=tuple(cubes),
        formats=formats,
        first_index=int(config.get("first_index", 0)),
        mesh_size_um=mesh.get("size_um"),
        smoothing_iterations=int(mesh.get("smoothing_iterations", 8)),
        element_order=int(mesh.get("element_order", 1)),
        min_elements_per_grain=mesh.get("min_elements_per_grain"),
        spacing_px=float(assembly.get("spacing_px", 1.0)),
        margin_px=float(assembly.get("margin_px", 8.0)),
        max_memory_gib=config.get("max_memory_gib"),
    )
    check_build_folder(out, rhash, force=ctx.force, adopt_existing=True)  # before writing anything
    copy_models(out, shell_model_path, grain_model_path)
    r = build_dataset(
        out,
        n,
        shard_size,
        fn,
        release_configs(cubes),
        workers=ctx.workers,
        executor=opts.get("executor") or "local",
        scheduler=opts.get("scheduler"),
        recipe_hash=rhash,
        force=ctx.force,
        desc="particles",
    )
    if cubes:
        render_first_particle(out, max(cubes))
    render_first_particle_orientations(out)
    ctx.outputs["failed_particles"] = list(r.failed)
    removed = _sweep(out, set(r.extra_files))
    if removed:
        log.info("removed %d file(s) of an earlier build from voxels/ and meshes/", removed)
    log.info(
        "particles: %d particles, %d grains in %d shard(s) (%d built now, %.1f s)",
        r.counts["particles"],
        r.counts["grains"],
        len(r.files["particles"]),
        len(r.built),
        r.seconds,
    )
    return r


def render_first_particle(out: Path, n: int) -> Path | None:
    """``figures/rendered_particle_<id>_cut_open.png``: the first particle of ``voxels_<n>``, cut open."""

    files = sorted((Path(out) / "data" / f"voxels_{n}").glob("*.parquet"))
    if not files:
        return None
    t = pq.ParquetFile(files[0]).read_row_group(0, columns=["particle_id", "voxel_size_um", "labels"]).slice(0, 1)
    pid = int(t.column("particle_id")[0].as_py())
    arr = t.column("labels").combine_chunks()
    arr = getattr(arr, "storage", arr)  # an Array3D extension array when datasets' types are registered
    labels = arr.flatten().flatten().flatten().to_numpy()
    labels = labels.reshape(n, n, n)
    path = Path(out) / "figures" / f"rendered_particle_{pid:06d}_cut_open.png"
    return particle_rendering(
        labels,
        path,
        voxel_size_um=float(t.column("voxel_size_um")[0].as_py()),
        title=f"particle {pid}, cut open ({n}³ voxels)",
    )


def _check_memory(config: dict, shell_model_path, n: int, ctx) -> None:

    shell, _ = load_shell_model(shell_model_path)
    h = float(config.get("voxel_size_um", 0.05))
    first = int(config.get("first_index", 0))
    worst = None
    for i in range(min(n, 2000)):  # draws are cheap; bound the check for huge releases
        ss = _children(particle_seed(ctx.seed, first + i))[0]
        c = np.asarray(shell.sample_coefficients(1, np.random.default_rng(ss))).reshape(-1) * float(shell.voxel_size_um)
        shape = shell_grid(c, h).shape
        if worst is None or np.prod(shape) > np.prod(worst):
            worst = shape
    check_memory(worst, 0, config.get("max_memory_gib"), where=f"{ctx.recipe_path}: particles.voxel_size_um")


__all__ = [
    "cube_grid",
    "voxelize_cube",
    "grain_shape_descriptors",
    "voxels_features",
    "voxels_table",
    "particle_shard",
    "release_configs",
    "copy_models",
    "build_particle_release",
    "voxels_file",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_CUBES",
]
