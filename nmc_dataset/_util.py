"""Small shared helpers: atomic writes, progress bars, logging, format versions, randomness."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from nmc_dataset.errors import FormatVersionError, InputError

log = logging.getLogger("nmc_dataset")

_UMASK = os.umask(0)
os.umask(_UMASK)


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Use for any writer that wants a file name (h5py, pyarrow, tifffile, meshio)::

        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix + ".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files should be readable
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only on success."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as stable, indented JSON (sorted keys, trailing newline) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`InputError` naming the file on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON (line {e.lineno}: {e.msg})", path) from None


# --------------------------------------------------------------------------- format versions
def check_format(meta: dict, kind: str, supported: int, where: str | os.PathLike) -> int:
    """Check ``meta['format']`` / ``meta['format_version']`` of a file this tool wrote.

    Parameters
    ----------
    meta : dict
        The file's metadata (a JSON document or HDF5/parquet attributes).
    kind : str
        The expected value of ``meta['format']`` (e.g. ``"nmc-dataset/shell-model"``).
    supported : int
        The newest major format version this reader understands.
    where : path-like
        Named in errors.

    Returns
    -------
    int
        The file's format version.
    """
    if not isinstance(meta, dict):
        raise InputError(f"expected a {kind} file (a JSON object)", where)
    got_kind = meta.get("format")
    if got_kind != kind:
        raise InputError(f"not a {kind} file (format is {got_kind!r})", where)
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise InputError("missing or invalid 'format_version'", where)
    if version > supported or version < 1:
        raise FormatVersionError(
            f"format_version {version} is not supported by this nmc-dataset "
            f"(reads {kind} versions 1..{supported}); upgrade nmc-dataset or re-create the file",
            where,
        )
    return version


def human_bytes(n: float) -> str:
    """A byte count for people: ``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --------------------------------------------------------------------------- progress & logging
def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on an interactive terminal, silent otherwise (CI logs, pipes)."""

    disable = not sys.stderr.isatty() or os.environ.get("CI") == "true"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest swaps it between tests)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(verbosity: int = 0) -> None:
    """Configure the ``nmc_dataset`` logger: INFO by default, DEBUG with ``-v``, WARNING with ``-q``."""
    level = logging.INFO if verbosity == 0 else (logging.DEBUG if verbosity > 0 else logging.WARNING)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


# --------------------------------------------------------------------------- randomness
def as_rng(seed: int | np.random.Generator | np.random.SeedSequence | None) -> np.random.Generator:
    """Turn a seed, a SeedSequence or a Generator into a ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def item_seed(recipe_seed: int, index: int, stream: int = 0) -> np.random.SeedSequence:
    """The SeedSequence of item ``index`` of a run seeded with ``recipe_seed``.

    It depends on the seed and the index alone (not on worker count or order), so a build
    with any number of workers draws the same numbers for item ``index``.
    """
    return np.random.SeedSequence(entropy=int(recipe_seed), spawn_key=(int(stream), int(index)))


# --------------------------------------------------------------------------- command-line numbers
#: plausible voxel / pixel sizes of nano- and micro-CT and EBSD, in µm
PLAUSIBLE_LENGTH_UM = (0.001, 10.0)


def length_um(text: str) -> float:
    """argparse type of a length in µm: a finite number > 0 (``inf``, ``nan``, ``0`` are refused)."""

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a length in µm, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite length > 0 µm, got {text!r}")
    return value


def warn_if_implausible_voxel(value_um: float, what: str = "--voxel-size-um") -> None:
    """Warn when a voxel size lies outside 0.001-10 µm (nm typed as µm?); the value is used as given."""
    lo, hi = PLAUSIBLE_LENGTH_UM
    if not lo <= float(value_um) <= hi:
        log.warning(
            "warning: %s %g µm is outside the usual %g-%g µm of CT voxels (nm given as µm?); using it as given",
            what,
            value_um,
            lo,
            hi,
        )


# --------------------------------------------------------------------------- allocator
#: glibc ``mallopt`` parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed blocks of up to ``mmap_threshold`` bytes in the process's heap (glibc only).

    glibc serves blocks over its mmap threshold (dynamic, at most 32 MiB) with fresh ``mmap``
    pages and returns them on ``free``; a loop that allocates and frees the same large tensors
    every step (the GAN's cutouts and activations) then page-faults them in anew each time. On this project's GAN
    step that was ~30 % of the CPU time, spent in the kernel. Raising the thresholds keeps the
    memory for reuse: the results are the same bytes, the resident size stays near its peak.

    Parameters
    ----------
    mmap_threshold : int, default 256 MiB
        Blocks up to this size come from the heap.
    trim_threshold : int, default 1 GiB
        Free memory at the heap's top kept before it is returned to the system.

    Returns
    -------
    bool
        Whether the allocator took the settings (False where it is not glibc's).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )


# --------------------------------------------------------------------------- fault injection
#: environment variable naming items that fail on purpose, e.g. ``particle:7,shard:2`` (tests)
FAULTS_ENV = "NMC_DATASET_FAULTS"


def inject_fault(kind: str, index: int) -> None:
    """Fail on purpose where ``NMC_DATASET_FAULTS`` says so (deterministic fault tests).

    ``kind:index`` raises ``RuntimeError`` (e.g. ``particle:7``: that particle fails);
    ``kill-kind:index`` sends SIGKILL to the whole process group when that item starts (e.g.
    ``kill-shard:3``: a build killed as ``kill -9`` would, at a known point, in any worker).
    Lets tests interrupt or break exactly one item without depending on timing.
    """
    spec = os.environ.get(FAULTS_ENV, "")
    if not spec:
        return
    names = {s.strip() for s in spec.split(",")}
    if f"{kind}:{int(index)}" in names:
        raise RuntimeError(f"injected fault ({FAULTS_ENV}={spec})")
    if f"kill-{kind}:{int(index)}" in names:
        # as `kill -9` of the whole build (its process group) when item `index` starts
        import signal

        os.killpg(os.getpgrp(), signal.SIGKILL)


def lazy_exports(package: str, exports: dict[str, list[str]]):
    """The public API of a subpackage, imported on first use (PEP 562).

    Parameters
    ----------
    package : str
        The subpackage's ``__name__``.
    exports : dict
        ``{private module name: [public names]}``.

    Returns
    -------
    (__all__, __getattr__, __dir__)
        To assign in the subpackage's ``__init__``: ``import nmc_dataset.x`` stays cheap, and a
        name's module (with its heavy dependencies, e.g. torch) loads when the name is used.
    """

    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name):
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(where))

    return sorted(where), __getattr__, __dir__
