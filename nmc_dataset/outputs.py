"""Output folders and files: the tool writes only where it may, and never over a user's file.

One rule for every command that writes a folder:

* a new or empty folder is taken;
* a folder this command wrote before (its marker file ``.nmc-dataset.json`` names the command) is
  resumed or replaced, where "replaced" touches only the files the marker lists;
* any other non-empty folder is refused with one line naming it, unless ``--force``; even with
  ``--force`` the tool writes *beside* the files it did not write and never deletes, overwrites,
  lists or publishes them (a collision with one of them is refused before anything is moved).

Single files (``--out model.json``) follow the same idea: an existing file is replaced only when it
is a file this tool wrote (its ``format`` metadata says ``nmc-dataset/...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nmc_dataset._util import _UMASK, write_json_atomic
from nmc_dataset.errors import InputError

MARKER = ".nmc-dataset.json"
MARKER_FORMAT = "nmc-dataset/output-folder"

#: hidden names the tool itself keeps inside folders it owns (state, partial files)
_STATE_PREFIXES = (".build", ".publish", ".nmc-dataset", ".")


def check_out_name(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse output paths that cannot name a folder or file of their own (``""``, ``.``, ``/``)."""
    text = os.fspath(path)
    p = Path(text)
    if (
        not text.strip()
        or p.resolve() == Path(p.resolve().anchor)
        or p.resolve() == Path.cwd().resolve()
        or p.name in ("", ".", "..")
    ):
        raise InputError(f"{what} {text!r} does not name a new folder or file; give a path such as report/")
    return p


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The folder's ownership marker, or ``None`` (absent or unreadable)."""
    try:
        meta = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == MARKER_FORMAT else None


def _all_files(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            found.append((Path(root) / f).relative_to(folder).as_posix())
    return found


def _preview(paths: list[str], k: int = 3) -> str:
    head = ", ".join(paths[:k])
    return f"{head}, ... ({len(paths)} files)" if len(paths) > k else head


def foreign_files(folder: str | os.PathLike, command: str, legacy: tuple[str, ...] = ()) -> list[str] | None:
    """Files in ``folder`` that ``command`` did not write.

    Returns ``None`` when the folder belongs to another command (its marker names another one),
    ``[]`` for a missing or empty folder or one wholly this command's.

    Parameters
    ----------
    folder : path-like
    command : str
        The command asking (``describe-shells``, ``run``, ...).
    legacy : tuple of str
        Files whose presence marks a folder this command wrote before markers existed
        (e.g. ``generate.json``): such a folder is taken as wholly the command's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = _all_files(folder)
    marker = read_marker(folder)
    if marker is not None:
        if marker.get("command") != command:
            return None
        own = set(marker.get("files") or [])
        foreign = set(marker.get("foreign") or [])
        if marker.get("files") is None:  # an incremental writer: everything but the recorded foreign files
            return sorted(f for f in files if f in foreign)
        return sorted(f for f in files if f not in own and f != MARKER and not _is_state(f))
    if any((folder / name).exists() for name in legacy):
        return []
    return files


def _is_state(rel: str) -> bool:
    first = rel.split("/", 1)[0]
    return first.startswith(_STATE_PREFIXES) and first != MARKER


def claim_folder(
    out: str | os.PathLike, command: str, *, force: bool = False, legacy: tuple[str, ...] = ()
) -> list[str]:
    """Check that ``command`` may write into ``out``; return the files it must leave alone.

    Raises
    ------
    InputError
        ``out`` is a file, belongs to another command, or holds files the tool did not write
        (without ``force``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", out)
    foreign = foreign_files(out, command, legacy)
    if foreign is None:
        other = read_marker(out).get("command")
        raise InputError(f"the folder holds the output of `{other}`; choose another --out", out)
    if foreign and not force:
        raise InputError(
            f"the folder holds files nmc-dataset did not write ({_preview(foreign)}); choose a new "
            "or empty --out, or --force to write beside them (they are never changed)",
            out,
        )
    return foreign


def write_marker(
    folder: str | os.PathLike, command: str, *, files: list[str] | None = None, foreign: list[str] = ()
) -> None:
    """Record that ``command`` owns ``files`` in ``folder`` (``None``: all but ``foreign``)."""
    write_json_atomic(
        Path(folder) / MARKER,
        {
            "format": MARKER_FORMAT,
            "format_version": 1,
            "command": command,
            "files": None if files is None else sorted(files),
            "foreign": sorted(foreign),
        },
    )


@contextlib.contextmanager
def output_folder(
    out: str | os.PathLike, command: str, *, force: bool = False, legacy: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Yield a temporary folder; on success its files become ``out``'s.

    ``out`` is checked *before* any work (:func:`claim_folder`). On success:

    * a new or empty ``out`` is replaced by the temporary folder in one rename;
    * otherwise the files this command wrote before (the marker's list) are removed and the new
      files are moved in one by one; files the tool did not write stay untouched, and a new file
      that would land on one of them is refused before anything is moved.

    On failure nothing in ``out`` changes.
    """
    out = check_out_name(out)
    foreign = claim_folder(out, command, force=force, legacy=legacy)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        yield tmp
        new = [f for f in _all_files(tmp) if f != MARKER]
        clash = sorted(set(new) & set(foreign))
        if clash:
            raise InputError(
                f"would overwrite {_preview(clash)}, which nmc-dataset did not write; move it or choose another --out",
                out,
            )
        write_marker(tmp, command, files=new, foreign=foreign)
        if not out.exists() or not any(out.iterdir()):
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
            return
        marker = read_marker(out)
        if marker is not None and marker.get("files") is not None:
            old_own = marker["files"]
        else:  # a legacy folder of this command: all its files are the command's
            old_own = [f for f in _all_files(out) if f not in set(foreign)]
        for rel in old_own:
            with contextlib.suppress(FileNotFoundError):
                (out / rel).unlink()
        for rel in new + [MARKER]:
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, dst)
        _remove_empty_dirs(out)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_empty_dirs(folder: Path) -> None:
    for root, dirs, files in os.walk(folder, topdown=False):
        if Path(root) != folder and not dirs and not files:
            with contextlib.suppress(OSError):
                os.rmdir(root)


def written_by_tool(path: str | os.PathLike) -> bool:
    """Whether an existing file carries this tool's ``format`` metadata (JSON, parquet, HDF5, TIFF)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            meta = json.loads(path.read_text())
            return isinstance(meta, dict) and str(meta.get("format", "")).startswith("nmc-dataset/")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            return any(k.startswith(b"nmc") or b"nmc-dataset/" in v for k, v in meta.items())
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                fmt = f.attrs.get("format", "")
                fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
                return fmt.startswith("nmc-dataset/")
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as t:
                desc = t.pages[0].description if t.pages else ""
                return "nmc-dataset" in (desc or "")
    except Exception:  # unreadable: not ours
        return False
    return False


def check_out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse an output file path that holds a file this tool did not write (or a folder)."""
    path = check_out_name(path, what)
    if path.is_dir():
        raise InputError(f"{what} is a folder; give a file name", path)
    if path.exists() and not written_by_tool(path):
        raise InputError(
            "exists and was not written by nmc-dataset; choose another name "
            "(nmc-dataset never overwrites a file it did not write)",
            path,
        )
    return path


def add_force_option(parser) -> None:
    """The ``--force`` flag of a folder-writing command (same words everywhere)."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder that holds other files: they are left untouched "
        "(never deleted, overwritten or listed); without it such a folder is refused",
    )


def check_output_folder(path: Path, marker: str, fmt: str) -> None:
    """Refuse a non-empty folder unless its ``marker`` JSON file has ``format`` ``fmt`` (our own output)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError("exists and is not a folder", path)
    if not any(path.iterdir()):
        return
    try:
        ok = json.loads((path / marker).read_text()).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise InputError(
            f"folder is not empty and was not written by this command (no {marker}); choose another --out", path
        )
