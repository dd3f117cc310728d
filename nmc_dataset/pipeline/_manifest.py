"""``manifest.json``: what a build folder holds, with sizes and SHA-256 checksums.

Format ``nmc-dataset/manifest`` version 1::

    {
      "format": "nmc-dataset/manifest", "format_version": 1,
      "dataset": {"name": ..., "version": "1.0.0", "license": ..., ...},   # release metadata
      "tool": {"name": "nmc-dataset", "version": "0.1.0"},
      "recipe_hash": "<sha256 of the canonical recipe JSON>" | null,
      "counts": {"<config>": <rows>, ...},
      "files": [{"path": "data/particles/train-00000-of-00002.parquet", "size": 123, "sha256": "..."}, ...]
    }

Every non-hidden file under the folder except ``manifest.json`` itself is listed, sorted by
path; hidden files and folders (``.build/``, ``.publish/``) are local state and are not listed
nor published. The JSON is written with sorted keys and no timestamps, so identical content
gives identical bytes.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from nmc_dataset import __version__
from nmc_dataset._util import check_format, read_json, write_json_atomic
from nmc_dataset.errors import InputError, PublishError
from nmc_dataset.pipeline._build import foreign_files, sha256_file

MANIFEST = "manifest.json"
KIND = "nmc-dataset/manifest"
VERSION = 1


def _excluded(rel: str, exclude) -> bool:

    return any(fnmatchcase(rel, pat) or fnmatchcase(rel, pat.rstrip("/") + "/*") for pat in exclude)


def content_files(folder: str | os.PathLike, exclude: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of the files a manifest lists.

    Sorted; hidden files/folders, ``manifest.json``, files that were in the folder before the build
    claimed it (``.build/foreign.json``) and paths matching an ``exclude`` glob
    (``grain_model/checkpoints/*``; a folder pattern ``sections/`` excludes its whole tree) are left out.
    """

    folder = Path(folder)
    exclude = list(exclude)
    foreign = foreign_files(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if f.startswith("."):
                continue
            rel = (Path(root) / f).relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in foreign and not (exclude and _excluded(rel, exclude)):
                found.append(rel)
    return sorted(found)


def parquet_counts(folder: str | os.PathLike) -> dict[str, int]:
    """Rows per config: the sum of ``num_rows`` of ``data/<config>/*.parquet`` footers."""

    folder = Path(folder)
    counts: dict[str, int] = {}
    data = folder / "data"
    if data.is_dir():
        for cdir in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(cdir.glob("*.parquet"))
            n = 0
            for f in files:
                try:
                    n += pq.ParquetFile(f).metadata.num_rows
                except Exception as e:  # ArrowInvalid, OSError
                    raise InputError(f"not a readable parquet file ({e})", f) from None
            if files:
                counts[cdir.name] = int(n)
    return counts


def file_entry(folder: Path, rel: str) -> dict:
    """``{"path", "size", "sha256"}`` of one file."""
    p = folder / rel
    return {"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)}


def compute_manifest(
    folder: str | os.PathLike,
    *,
    dataset: dict | None = None,
    recipe_hash: str | None = None,
    counts: dict | None = None,
    exclude: Iterable[str] = (),
    failed: Iterable[dict] = (),
) -> dict:
    """The manifest of ``folder`` as a dict (nothing written).

    Parameters
    ----------
    folder : path-like
        Build folder.
    dataset : dict, optional
        Release metadata (name, version, license, authors, ...); must hold ``version``.
    recipe_hash : str, optional
        Hash of the recipe that built the folder.
    counts : dict, optional
        Items per config; default: rows of the parquet configs under ``data/``.
    exclude : iterable of str
        Glob patterns of files not to list (nor publish); stored in the manifest.
    failed : iterable of dict
        Items the build could not make (``{"particle_id", "error"}``); listed under ``failed``
        when there are any.
    """
    folder = Path(folder)
    dataset = dict(dataset or {})
    dataset.setdefault("version", "0.0.0")
    exclude = sorted(set(exclude))
    failed = list(failed)
    m = {
        "format": KIND,
        "format_version": VERSION,
        "dataset": dataset,
        "tool": {"name": "nmc-dataset", "version": __version__},
        "recipe_hash": recipe_hash,
        "counts": dict(sorted((counts if counts is not None else parquet_counts(folder)).items())),
        "exclude": exclude,
        "files": [file_entry(folder, rel) for rel in content_files(folder, exclude)],
    }
    if failed:
        m["failed"] = failed
    return m


def write_manifest(folder: str | os.PathLike, **kwargs) -> dict:
    """Compute the manifest of ``folder`` and write ``folder/manifest.json`` atomically.

    Keyword arguments are those of :func:`compute_manifest`. Returns the manifest.

    Parameters
    ----------
    folder : str or path-like
        Build folder.
    **kwargs
        Keywords of :func:`compute_manifest` (``dataset``, ``recipe_hash``, ``counts``, ``exclude``, ``failed``).

    Returns
    -------
    dict
        The manifest written.
    """
    m = compute_manifest(folder, **kwargs)
    write_json_atomic(Path(folder) / MANIFEST, m)
    os.chmod(Path(folder) / MANIFEST, 0o644)
    return m


def read_manifest(folder: str | os.PathLike) -> dict:
    """Read and format-check ``folder/manifest.json``.

    Parameters
    ----------
    folder : str or path-like
        Build folder.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    PublishError
        If there is no ``manifest.json`` or it has no ``files`` list.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PublishError("no manifest.json: is this a build folder? (run `nmc-dataset run RECIPE --out ...`)", folder)
    m = read_json(path)
    check_format(m, KIND, VERSION, path)
    if not isinstance(m.get("files"), list):
        raise PublishError("manifest.json has no 'files' list", path)
    return m


def verify_manifest(folder: str | os.PathLike, *, skip: Iterable[str] = ()) -> dict:
    """Check every file listed in the manifest against its size and SHA-256.

    Also refuses files present in the folder but not listed (they would be published unchecked).

    Parameters
    ----------
    folder : path-like
        Build folder.
    skip : iterable of str
        Relative paths not to check (e.g. the card being re-rendered).

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    PublishError
        Naming the first file that is missing, has another size or checksum, or is unlisted.
    """
    folder = Path(folder)
    m = read_manifest(folder)
    skip = set(skip)
    listed = set()
    for entry in m["files"]:
        rel = entry.get("path")
        listed.add(rel)
        if rel in skip:
            continue
        p = folder / rel
        if not p.is_file():
            raise PublishError("listed in manifest.json but missing; rebuild or restore it", p)
        size = p.stat().st_size
        if size != entry.get("size"):
            raise PublishError(
                f"size {size} differs from manifest.json ({entry.get('size')}); the file changed after the build", p
            )
        if sha256_file(p) != entry.get("sha256"):
            raise PublishError("sha256 differs from manifest.json; the file changed after the build", p)
    for rel in content_files(folder, m.get("exclude") or []):
        if rel not in listed and rel not in skip:
            raise PublishError("file is not listed in manifest.json; remove it or rebuild", folder / rel)
    return m


def update_manifest_entries(folder: str | os.PathLike, paths: Iterable[str]) -> dict:
    """Refresh the size/sha256 of some listed (or new) files, keeping everything else; rewrite atomically."""
    folder = Path(folder)
    m = read_manifest(folder)
    entries = {e["path"]: e for e in m["files"]}
    for rel in paths:
        entries[rel] = file_entry(folder, rel)
    m["files"] = [entries[k] for k in sorted(entries)]
    write_json_atomic(folder / MANIFEST, m)
    os.chmod(folder / MANIFEST, 0o644)
    return m
