"""Reading 3D CT volumes: TIFF stacks, HDF5 datasets, NumPy ``.npy`` and raw binary files.

Arrays are returned indexed ``[z, y, x]`` in their stored dtype (no conversion, so a 512³
uint16 volume costs 256 MiB); ``.npy`` and raw files are memory-mapped read-only and TIFF
files are memory-mapped when their layout allows. Every failure raises
:class:`~nmc_dataset.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from nmc_dataset.errors import InputError

__all__ = ["read_volume", "parse_shape", "SUPPORTED"]

SUPPORTED = (".tif", ".tiff", ".h5", ".hdf5", ".npy", ".raw", ".bin")


def parse_shape(text: str, where=None) -> tuple[int, int, int]:
    """Parse ``"Z,Y,X"`` (also ``x`` or spaces as separators) into three positive ints.

    Parameters
    ----------
    text : str
        Three integers ``Z,Y,X``, separated by commas, ``x`` or spaces (e.g. ``"128x256x256"``).
    where : str or path-like, optional
        Where the text came from, named in the error message.

    Returns
    -------
    tuple of 3 int
        ``(Z, Y, X)``.

    Raises
    ------
    InputError
        If the text is not three positive integers.
    """
    parts = [p for p in str(text).replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"--shape must be Z,Y,X integers, got {text!r}", where) from None
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"--shape must be three positive integers Z,Y,X, got {text!r}", where)
    return shape  # type: ignore[return-value]


def _check(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3:
        raise InputError(f"expected a 3D volume (Z, Y, X), got shape {tuple(arr.shape)}", path)
    if min(arr.shape) < 2:
        raise InputError(f"volume shape {tuple(arr.shape)} is degenerate (a 2D image?)", path)
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"unsupported voxel type {arr.dtype} (need bool, integer or float)", path)
    return arr


def _h5_datasets(f) -> list[str]:

    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def read_volume(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    shape=None,
    dtype=None,
    offset: int = 0,
    byteorder: str = "<",
) -> np.ndarray:
    """Read a 3D volume.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (tifffile), ``.h5``/``.hdf5`` (h5py; ``dataset`` names the dataset, or
        the file's only 3D dataset is used), ``.npy`` (memory-mapped), or a raw binary file
        (any other suffix) with ``shape`` and ``dtype``.
    dataset : str, optional
        HDF5 dataset path.
    shape : (Z, Y, X) or str, optional
        Raw files: the volume shape (C order, x fastest).
    dtype : str or numpy dtype, optional
        Raw files: the voxel type (e.g. ``uint16``); byte order ``byteorder`` unless given.
    offset : int
        Raw files: header bytes to skip.
    byteorder : {"<", ">"}, default "<"
        Raw files: byte order applied to a multi-byte ``dtype`` given without one (little-endian by default).

    Returns
    -------
    ndarray, shape (Z, Y, X)
        Possibly a read-only memory map.

    Raises
    ------
    InputError
        Missing/unreadable file, wrong dimensionality, unknown dataset (the message lists the
        file's datasets), raw size mismatch.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("is a folder, expected a volume file", path)
    suffix = path.suffix.lower()
    if shape is not None or suffix in (".raw", ".bin"):
        if shape is None or dtype is None:
            raise InputError("a raw volume needs --shape Z,Y,X and --dtype (e.g. uint16)", path)
        shp = parse_shape(shape, path) if isinstance(shape, str) else tuple(int(s) for s in shape)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise InputError(f"unknown --dtype {dtype!r}", path) from None
        if dt.byteorder == "=" and dt.itemsize > 1:
            dt = dt.newbyteorder(byteorder)
        need = int(np.prod(shp)) * dt.itemsize + int(offset)
        size = path.stat().st_size
        if size != need:
            raise InputError(f"raw file has {size} bytes but shape {shp} of {dt} needs {need}", path)
        return _check(np.memmap(path, dtype=dt, mode="r", shape=shp, offset=int(offset)), path)
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            try:
                arr = tifffile.memmap(path, mode="r")
            except (ValueError, OSError, tifffile.TiffFileError, IndexError):
                arr = tifffile.imread(path)
        except Exception as e:  # tifffile raises many types on corrupt files
            raise InputError(f"cannot read TIFF: {e.__class__.__name__}: {e}", path) from None
        arr = np.asarray(arr) if not isinstance(arr, np.memmap) else arr
        if arr.ndim == 4 and arr.shape[-1] in (3, 4):
            raise InputError(f"RGB(A) TIFF of shape {arr.shape}: expected a single-channel 3D volume", path)
        return _check(arr, path)
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"cannot read HDF5: {e}", path) from None
        with f:
            names = _h5_datasets(f)
            if dataset is None:
                three = [n for n in names if f[n].ndim == 3]
                if len(three) != 1:
                    raise InputError(
                        f"name the volume with --dataset; datasets in the file: {', '.join(names) or '(none)'}", path
                    )
                dataset = three[0]
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise InputError(f"no dataset {dataset!r}; datasets in the file: {', '.join(names) or '(none)'}", path)
            ds = f[dataset]
            if ds.ndim != 3:
                raise InputError(f"dataset {dataset!r} has shape {ds.shape}, expected a 3D volume", path)
            arr = ds[()]
        return _check(arr, path)
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"cannot read .npy: {e}", path) from None
        return _check(arr, path)
    raise InputError(
        f"unknown volume format {suffix or '(no suffix)'!r}: use {', '.join(SUPPORTED)} "
        "(raw files need --shape and --dtype)",
        path,
    )
