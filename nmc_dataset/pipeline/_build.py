"""Deterministic, resumable, sharded dataset builds.

:func:`build_dataset` cuts ``n_items`` items into shards of ``shard_size`` and calls a user
function ``make_shard(shard_index, item_indices) -> {config: pyarrow.Table}`` for every shard
that is not already complete. Each table becomes
``data/<config>/train-XXXXX-of-YYYYY.parquet`` (the Hugging Face layout), written atomically with
fixed writer options, so the bytes depend only on the tables. ``make_shard`` must derive its
randomness from the recipe seed and the item index alone (:func:`nmc_dataset._util.item_seed`);
then 1, 2 or N workers, a local process pool or a dask cluster all produce byte-identical shards.

Resuming: a shard is complete when its sidecar ``.build/shards-<configs>/done/shard-XXXXX.json`` exists and every
file it lists is present with the recorded size and SHA-256. A ``make_shard`` that also writes
files of its own (HDF5 volumes, meshes) returns a :class:`ShardResult`; those files are recorded
(and checked) the same way, so they are part of the shard's completeness. The sidecar is written after the
parquet files, so an interrupted build (even ``kill -9``) redoes only unfinished shards.
``.build/build.json`` stores the recipe hash: a build folder of another recipe is refused
unless ``force=True``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nmc_dataset._util import atomic_path, inject_fault, log, progress, write_json_atomic
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.outputs import check_out_name

#: parquet writer options fixed for reproducible bytes (no timestamps are written by arrow).
PARQUET_OPTIONS: dict[str, Any] = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    data_page_size=1 << 20,
    write_page_index=False,
    store_schema=True,
)

STATE_DIR = ".build"
FOREIGN_FILE = "foreign.json"
BUILD_STATE_KIND = "nmc-dataset/build-state"
SHARD_KIND = "nmc-dataset/shard"


def shard_name(shard_index: int, n_shards: int, split: str = "train") -> str:
    """The file name of shard ``shard_index`` out of ``n_shards`` (``train-00003-of-00010.parquet``)."""
    return f"{split}-{shard_index:05d}-of-{n_shards:05d}.parquet"


def shard_items(shard_index: int, n_items: int, shard_size: int) -> list[int]:
    """Item indices of one shard: ``[i*shard_size, min((i+1)*shard_size, n_items))``."""
    start = shard_index * shard_size
    return list(range(start, min(start + shard_size, n_items)))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def peak_rss_mib() -> float:
    """Peak resident memory of the calling process in MiB (``getrusage`` ``ru_maxrss``)."""
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib / 1024.0
    except Exception:  # pragma: no cover - non-POSIX
        return float("nan")


def write_table_deterministic(
    table, path: str | os.PathLike, *, config: str | None = None, row_group_size: int | None = None
) -> None:
    """Write a ``pyarrow.Table`` as parquet with :data:`PARQUET_OPTIONS`, atomically.

    The schema metadata gets ``format = nmc-dataset/shard`` and ``format_version = 1`` (and the
    config name); existing metadata (e.g. the ``huggingface`` features entry) is kept.
    """

    meta = dict(table.schema.metadata or {})
    meta[b"format"] = SHARD_KIND.encode()
    meta[b"format_version"] = b"1"
    if config is not None:
        meta[b"config"] = config.encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size or max(1, table.num_rows), **PARQUET_OPTIONS)
        _public_mode(tmp)


def _public_mode(path) -> None:
    """Give a file written through ``mkstemp`` (mode 0600) the usual ``0666 & ~umask`` mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def array3d_column(volumes, dtype: str | None = None):
    """A ``datasets.Array3D`` arrow column from a stack of equal-shape volumes, without Python lists.

    Parameters
    ----------
    volumes : array_like, shape (n, nz, ny, nx)
        One volume per row (indexed ``[z, y, x]``).
    dtype : str, optional
        Storage dtype name (default: the array's).

    Returns
    -------
    (pyarrow.ExtensionArray, datasets.Array3D)
        The column and its feature (put it in the table's ``datasets.Features`` so the schema
        carries the ``huggingface`` metadata and ``load_dataset`` restores the shape).
    """
    import datasets

    v = np.ascontiguousarray(volumes if dtype is None else np.asarray(volumes).astype(dtype))
    if v.ndim != 4:
        raise ValueError(f"expected volumes of shape (n, nz, ny, nx), got {v.shape}")
    n, a, b, c = v.shape
    feature = datasets.Array3D(shape=(a, b, c), dtype=str(v.dtype))
    arr = pa.array(v.reshape(-1))
    for count, size in ((n * a * b, c), (n * a, b), (n, a)):
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, count * size + 1, size, dtype=np.int32)), arr)
    ext = feature()  # the Array3DExtensionType
    return pa.ExtensionArray.from_storage(ext, arr), feature


# --------------------------------------------------------------------------- one shard (runs in a worker)
@dataclasses.dataclass
class ShardResult:
    """What a ``make_shard`` returns when it writes files besides its parquet tables.

    Parameters
    ----------
    tables : dict
        ``{config: pyarrow.Table}`` as a plain ``make_shard`` returns.
    files : list of str
        Extra files the shard wrote (atomically), as POSIX paths relative to the build folder.
        Their sizes and SHA-256 go into the shard's completeness record: a missing or changed
        file makes the shard incomplete, and it is rebuilt on the next run.
    failed : list of dict
        Items the shard could not build (``{"particle_id": ..., "error": ...}``); they are left
        out of its tables, recorded in the completeness record and in the release manifest.
    """

    tables: Mapping
    files: Sequence[str] = ()
    failed: Sequence[dict] = ()


def _file_record(out: Path, rel: str) -> dict:
    path = out / rel
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _done_path(out: Path, shard_index: int, build_id: str) -> Path:
    return out / STATE_DIR / build_id / "done" / f"shard-{shard_index:05d}.json"


def run_shard(
    make_shard: Callable,
    out: str,
    shard_index: int,
    n_shards: int,
    item_indices: Sequence[int],
    configs: Sequence[str],
    build_id: str = "shards",
    split: str = "train",
) -> dict:
    """Build one shard: call ``make_shard``, write its tables, then its ``.done`` sidecar.

    Top-level so that process pools and dask can pickle it. Returns the sidecar's content.
    """
    out = Path(out)
    inject_fault("shard", shard_index)
    t0 = time.perf_counter()
    c0 = time.process_time()
    tables = make_shard(shard_index, list(item_indices))
    extra_files: Sequence[str] = ()
    failed: Sequence[dict] = ()
    if isinstance(tables, ShardResult):
        tables, extra_files, failed = tables.tables, tables.files, tables.failed
    if not isinstance(tables, Mapping) or set(tables) != set(configs):
        got = sorted(tables) if isinstance(tables, Mapping) else type(tables).__name__
        raise ValueError(f"make_shard returned {got}; expected tables for configs {sorted(configs)}")
    files = {}
    for config in configs:
        table = tables[config]
        rel = f"data/{config}/{shard_name(shard_index, n_shards, split)}"
        path = out / rel
        write_table_deterministic(table, path, config=config)
        files[config] = {
            "path": rel,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            "rows": int(table.num_rows),
        }
    record = {
        "format": "nmc-dataset/shard-done",
        "format_version": 1,
        "shard": shard_index,
        "n_shards": n_shards,
        "items": [int(item_indices[0]), int(item_indices[-1]) + 1] if len(item_indices) else [0, 0],
        "files": files,
        "extra": {str(rel): _file_record(out, str(rel)) for rel in sorted(extra_files)},
        "failed": list(failed),
        # measurements (not content): kept out of the manifest
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "pid": os.getpid(),
        "peak_rss_mib": peak_rss_mib(),
    }
    write_json_atomic(_done_path(out, shard_index, build_id), record)
    return record


def _shard_complete(out: Path, shard_index: int, n_shards: int, configs: Sequence[str], build_id: str) -> dict | None:
    """The sidecar of a finished shard whose files are intact, else ``None``."""
    p = _done_path(out, shard_index, build_id)
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("n_shards") != n_shards or set(rec.get("files", {})) != set(configs):
        return None
    checks = [(info["path"], info) for info in rec["files"].values()]
    checks += list((rec.get("extra") or {}).items())
    for rel, info in checks:
        f = out / rel
        try:
            if f.stat().st_size != info["size"] or sha256_file(f) != info["sha256"]:
                return None
        except OSError:
            return None
    return rec


# --------------------------------------------------------------------------- build state / recipe hash
def check_build_folder(
    out: str | os.PathLike, recipe_hash: str | None, *, force: bool = False, adopt_existing: bool = False
) -> bool:
    """Refuse a folder that holds another recipe's build; record ``recipe_hash`` in it.

    Call it before writing anything into a build folder (``nmc-dataset run`` does, and
    :func:`build_dataset` does again). The hash is kept in ``out/.build/build.json``.

    Parameters
    ----------
    out : path-like
        The build folder.
    recipe_hash : str or None
        :func:`nmc_dataset.pipeline._recipe.recipe_hash` of the recipe (``None``: no check, nothing recorded).
    force : bool
        Allow replacing a different build: its ``data/`` and build state are removed first.
    adopt_existing : bool
        A folder with data but no recorded hash is taken as this recipe's (for a section that runs
        after others of the same run wrote there); a *different* recorded hash is still refused.

    Returns
    -------
    bool
        ``True`` if an earlier, different build was cleared (only with ``force``).

    Raises
    ------
    RecipeError
        When the folder holds a build of another recipe (or unknown parquet data) and ``force`` is false.
    """
    if recipe_hash is None:
        return False
    out = Path(out)
    state_file = out / STATE_DIR / "build.json"
    state = {"format": BUILD_STATE_KIND, "format_version": 1, "recipe_hash": recipe_hash}
    old = None
    if state_file.is_file():
        try:
            old = json.loads(state_file.read_text()).get("recipe_hash")
        except (ValueError, AttributeError):
            old = "(unreadable)"
        if old == recipe_hash:
            return False
        problem = f"the folder holds a build of another recipe (recipe hash {str(old)[:12]})"
    elif not adopt_existing and (out / "data").is_dir() and any((out / "data").iterdir()):
        problem = "the folder holds data/ of an unknown build"
    else:
        write_json_atomic(state_file, state)
        return False
    if not force:
        raise RecipeError(f"{problem}; use another --out, or --force to replace it", out)
    log.info("--force: clearing the previous build in %s", out)
    shutil.rmtree(out / "data", ignore_errors=True)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    write_json_atomic(state_file, state)
    return True


def foreign_files(out: str | os.PathLike) -> set[str]:
    """Files that were in a build folder before the build claimed it (``--force``): never listed nor touched."""
    path = Path(out) / STATE_DIR / FOREIGN_FILE
    try:
        return set(json.loads(path.read_text()).get("files") or [])
    except (OSError, ValueError, AttributeError):
        return set()


def claim_build_folder(out: str | os.PathLike, roots: Sequence[str], *, force: bool = False) -> set[str]:
    """Check that a build may write into ``out``; return the files it must leave alone.

    A new or empty folder, or an earlier build (``.build/build.json``), is taken. A folder with
    other files is refused unless ``force``; with ``force`` those files are recorded in
    ``.build/foreign.json`` (so that the manifest never lists them and publish never uploads them),
    and one that lies where the build writes (``roots``: ``README.md``, ``data/``, ...) is refused
    even then, since the build would overwrite or delete it.

    Raises
    ------
    RecipeError
        As described.
    """

    out = check_out_name(out)
    if out.exists() and not out.is_dir():
        raise RecipeError("exists and is not a folder; choose another --out", out)
    if (out / STATE_DIR / "build.json").is_file() or not out.is_dir():
        return foreign_files(out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    if not files:
        return set()
    sample = ", ".join(files[:3]) + (f", ... ({len(files)} files)" if len(files) > 3 else "")
    if not force:
        raise RecipeError(
            f"the folder holds files nmc-dataset did not write ({sample}); choose a new or empty "
            "--out, or --force to build beside them (they are never changed, listed or published)",
            out,
        )
    clash = [f for f in files if any(f == r.rstrip("/") or f.startswith(r.rstrip("/") + "/") for r in roots)]
    if clash:
        raise RecipeError(
            f"{clash[0]} is not nmc-dataset's and lies where the build writes "
            f"({', '.join(sorted(r for r in roots if clash[0].startswith(r.rstrip('/'))))}); "
            "move it or choose another --out",
            out,
        )
    write_json_atomic(
        out / STATE_DIR / FOREIGN_FILE, {"format": "nmc-dataset/foreign-files", "format_version": 1, "files": files}
    )
    log.info(
        "--force: building beside %d file(s) that are not nmc-dataset's; they are left out of the manifest", len(files)
    )
    return set(files)


def _check_settings(out: Path, build_id: str, settings: dict, force: bool) -> None:
    """Shards of an earlier call are reusable only with the same n_items/shard_size/configs."""
    path = out / STATE_DIR / build_id / "settings.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if old != settings:
            if not force:
                raise RecipeError(
                    f"the folder holds shards built with other settings ({old}); "
                    "use another --out, or --force to rebuild",
                    out,
                )
            for config in old.get("configs", []) or []:
                shutil.rmtree(out / "data" / str(config), ignore_errors=True)
            for rec_path in sorted((out / STATE_DIR / build_id / "done").glob("shard-*.json")):
                try:  # the old shards' extra files (HDF5, meshes) go with them
                    for rel in json.loads(rec_path.read_text()).get("extra") or {}:
                        (out / rel).unlink(missing_ok=True)
                except (OSError, ValueError, AttributeError):
                    pass
            shutil.rmtree(out / STATE_DIR / build_id / "done", ignore_errors=True)
    write_json_atomic(path, settings)


# --------------------------------------------------------------------------- the builder
@dataclasses.dataclass
class BuildResult:
    """What :func:`build_dataset` did.

    Parameters
    ----------
    files : dict
        ``{config: [relative parquet paths, in shard order]}``.
    counts : dict
        ``{config: number of rows}``.
    built, skipped : list of int
        Shard indices built in this call, and those found complete.
    seconds : float
        Wall time of this call.
    peak_rss_mib : dict
        ``{worker pid: peak resident memory in MiB}`` of the workers that built shards now.
    cpu_seconds : float
        CPU time the shards built now took in their workers (excludes worker start-up).
    extra_files : list of str
        Extra files of all shards (see :class:`ShardResult`), sorted.
    failed : list of dict
        Items that could not be built, over all shards, in item order.
    """

    files: dict
    counts: dict
    built: list
    skipped: list
    seconds: float
    peak_rss_mib: dict
    cpu_seconds: float = 0.0
    extra_files: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)


def build_dataset(
    out: str | os.PathLike,
    n_items: int,
    shard_size: int,
    make_shard: Callable,
    configs: Sequence[str],
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    *,
    recipe_hash: str | None = None,
    force: bool = False,
    desc: str = "shards",
    split: str = "train",
) -> BuildResult:
    """Build (or finish) the parquet shards of a dataset.

    Parameters
    ----------
    out : path-like
        Build folder; shards go to ``out/data/<config>/``.
    n_items : int
        Number of items (particles) in the dataset.
    shard_size : int
        Items per shard (the last shard may be shorter).
    make_shard : callable
        ``make_shard(shard_index, item_indices) -> {config: pyarrow.Table}``; a top-level function
        (or ``functools.partial`` of one) so it can be pickled. Its randomness must come only from
        the recipe seed and item indices.
    configs : sequence of str
        Config names ``make_shard`` returns.
    workers : int
        Worker processes for ``executor="local"`` (1: in this process).
    executor : {"local", "dask"}
        Local spawn process pool, or a ``dask.distributed`` cluster.
    scheduler : str or dask Cluster or Client, optional
        With ``executor="dask"``: scheduler address (``tcp://host:8786``), a cluster object, or a
        ``Client``. ``None`` starts a ``LocalCluster`` with ``workers`` processes.
    recipe_hash : str, optional
        Stored in ``.build/build.json``; a folder built from another recipe is refused.
    force : bool
        Replace a build of a different recipe.
    desc : str, default "shards"
        Label of the progress bar.
    split : str
        Dataset split of the shards (their file-name prefix, ``<split>-XXXXX-of-YYYYY.parquet``);
        each split is one call with its own items and completeness records.

    Returns
    -------
    BuildResult
        Files, row counts and timings of the build.
    """
    out = Path(out)
    configs = list(configs)
    if n_items < 1:
        raise RecipeError(f"number of items must be >= 1 (got {n_items})")
    if shard_size < 1:
        raise RecipeError(f"shard_size must be >= 1 (got {shard_size})")
    if workers < 1:
        raise RecipeError(f"workers must be >= 1 (got {workers})")
    if not configs or len(set(configs)) != len(configs):
        raise RecipeError(f"configs must be distinct and non-empty (got {configs})")
    for c in configs:
        if not c or "/" in c or c.startswith("."):
            raise RecipeError(f"invalid config name {c!r}")
    if executor not in ("local", "dask"):
        raise RecipeError(f"executor must be 'local' or 'dask' (got {executor!r})")
    n_shards = math.ceil(n_items / shard_size)
    if not split.isidentifier():
        raise RecipeError(f"invalid split name {split!r}")
    build_id = "shards-" + "+".join(configs) + ("" if split == "train" else f"-{split}")
    check_build_folder(out, recipe_hash, force=force)
    _check_settings(out, build_id, {"n_items": int(n_items), "shard_size": int(shard_size), "configs": configs}, force)

    t0 = time.perf_counter()
    done: dict[int, dict] = {}
    todo: list[int] = []
    for i in range(n_shards):
        rec = _shard_complete(out, i, n_shards, configs, build_id)
        if rec is None:
            todo.append(i)
        else:
            done[i] = rec
    skipped = sorted(done)
    if skipped:
        log.info("resuming: %d of %d shards already complete", len(skipped), n_shards)
    tasks = [(i, shard_items(i, n_items, shard_size)) for i in todo]
    new: dict[int, dict] = {}
    if tasks:
        if executor == "dask":
            new = _run_dask(make_shard, out, n_shards, tasks, configs, workers, scheduler, desc, build_id, split)
        elif workers == 1 or len(tasks) == 1:
            for i, items in progress(tasks, total=len(tasks), desc=desc, unit="shard"):
                new[i] = run_shard(make_shard, str(out), i, n_shards, items, configs, build_id, split)
        else:
            new = _run_pool(make_shard, out, n_shards, tasks, configs, workers, desc, build_id, split)
    done.update(new)
    _remove_stale_shards(out, configs, n_shards, split)

    files = {c: [done[i]["files"][c]["path"] for i in range(n_shards)] for c in configs}
    counts = {c: sum(done[i]["files"][c]["rows"] for i in range(n_shards)) for c in configs}
    peaks: dict = {}
    for rec in new.values():
        peaks[rec["pid"]] = max(peaks.get(rec["pid"], 0.0), rec["peak_rss_mib"])
    if new:
        log.info(
            "built %d shard(s) of %s; peak memory per worker: %s",
            len(new),
            "+".join(configs),
            ", ".join(f"{v:.0f} MiB" for v in sorted(peaks.values())),
        )
    return BuildResult(
        files=files,
        counts=counts,
        built=sorted(new),
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        peak_rss_mib=peaks,
        cpu_seconds=float(sum(rec.get("cpu_seconds", 0.0) for rec in new.values())),
        extra_files=sorted(rel for i in range(n_shards) for rel in (done[i].get("extra") or {})),
        failed=[f for i in range(n_shards) for f in (done[i].get("failed") or [])],
    )


def _remove_stale_shards(out: Path, configs: Sequence[str], n_shards: int, split: str = "train") -> None:
    """Delete parquet files of these configs and split that are not part of this build (other shard counts)."""
    keep = {shard_name(i, n_shards, split) for i in range(n_shards)}
    for c in configs:
        d = out / "data" / c
        for f in d.glob(f"{split}-*.parquet"):
            if f.name not in keep:
                f.unlink()
        for f in d.glob(".*.part"):  # leftovers of killed writers
            f.unlink()


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _single_threaded_children:
    """Spawned workers start with one BLAS/OpenMP thread each (unless the user set these variables):
    N workers x M threads on N cores would oversubscribe the machine."""

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        for k in _THREAD_VARS:
            os.environ.setdefault(k, "1")
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_pool(make_shard, out, n_shards, tasks, configs, workers, desc, build_id, split="train") -> dict:

    results = {}
    ctx = mp.get_context("spawn")
    with (
        _single_threaded_children(),
        cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as ex,
    ):
        futs = {
            ex.submit(run_shard, make_shard, str(out), i, n_shards, items, configs, build_id, split): i
            for i, items in tasks
        }
        try:
            for fut in progress(cf.as_completed(futs), total=len(futs), desc=desc, unit="shard"):
                rec = fut.result()
                results[rec["shard"]] = rec
        except BaseException:
            for f in futs:
                f.cancel()
            raise
    return results


def _run_dask(make_shard, out, n_shards, tasks, configs, workers, scheduler, desc, build_id, split="train") -> dict:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        from nmc_dataset.errors import MissingExtraError

        raise MissingExtraError("--executor dask", "dask", "distributed") from None
    own_cluster = None
    if scheduler is None:
        own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(own_cluster)
    elif isinstance(scheduler, Client):
        client = scheduler
    else:
        address = getattr(scheduler, "scheduler_address", scheduler)
        try:
            client = Client(address, timeout="20s")
        except OSError as e:
            raise InputError(f"cannot reach the dask scheduler: {e}", str(address)) from None
    results = {}
    try:
        futs = [
            client.submit(
                run_shard,
                make_shard,
                str(out),
                i,
                n_shards,
                items,
                configs,
                build_id,
                split,
                pure=False,
                key=f"nmc-shard-{i}-{os.getpid()}-{time.time_ns()}",
            )
            for i, items in tasks
        ]
        for fut in progress(as_completed(futs), total=len(futs), desc=desc, unit="shard"):
            rec = fut.result()
            results[rec["shard"]] = rec
    finally:
        if client is not scheduler:
            client.close()
        if own_cluster is not None:
            own_cluster.close()
    return results
