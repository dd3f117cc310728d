"""HDF5 files of the virtual-tomography stages: electrode labels, CT renders and segmentations.

Every file holds label volumes of one grid, axes ``(z, y, x)``, and root attributes
``format`` (``nmc-dataset/<kind>``), ``format_version``, ``voxel_size_um`` and ``origin_um``
(the world position of voxel ``(0, 0, 0)``'s centre, ``(z, y, x)`` µm).

========================  =========  ==================================================================
dataset                   dtype      meaning
========================  =========  ==================================================================
``phase``                 uint8      0 pore / electrolyte, 1 NMC (active material), 2 carbon-binder
``particle``              uint32     particle instance id (1..N), 0 outside particles
``grain``                 uint32     global grain id (1..M over the whole volume), 0 outside particles
``ct``                    float32    reconstructed grey values (CT renders only)
``particles`` (group)     table      one column per dataset: ``id``, ``center_um`` (N, 3, z y x), ...
========================  =========  ==================================================================

Kinds: ``electrode`` (``pack``: phase/particle/grain + particles table), ``ct`` (``render-ct``: ``ct``
plus the labels it was made from, resampled to the CT grid, and the JSON attribute ``imaging`` with
every imaging parameter), ``segmentation`` (``segment``: phase and particle, attribute ``method``).

Written by ``pack`` (electrode files): the JSON attribute ``packing`` (fraction reached and targeted,
box, periodicity, neck depth, binder mode and fraction, overlap voxels, seed, model ids), the
attribute ``electrolyte`` (``none`` = air, ``liquid``, ``solid``: what phase 0 is), and the
``particles`` table columns ``id``, ``center_um`` (z, y, x), ``coeffs_um`` (N, 100: SH coefficients
of the shell radius in µm, particle frame = box axes), ``volume_um3``, ``voxels``,
``grain_id_offset`` and ``n_grains`` (particle ``k``'s local grain ``g`` is global grain
``grain_id_offset[k] + g``) and ``seed_spawn_key``. ``render-ct`` copies the table into CT files.
When the grain model has an orientation model (``pack --orientation-model``), the ``grains``
table holds one row per global grain: ``id`` (1..M), ``particle`` and ``orientation_wxyz``
(M, 4: the unit quaternion of the active rotation taking the crystal axes, x ∥ a1 and z ∥ c, to the box axes x, y, z).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from nmc_dataset._util import atomic_path, check_format
from nmc_dataset.errors import InputError

FORMAT_VERSION = 1
KINDS = ("electrode", "ct", "segmentation")
LABELS = ("phase", "particle", "grain")
PHASES = {0: "pore", 1: "nmc", 2: "binder"}
_DTYPES = {"phase": np.uint8, "particle": np.uint32, "grain": np.uint32, "ct": np.float32}


def write_volumes(
    path: str | os.PathLike,
    kind: str,
    arrays: dict,
    *,
    voxel_size_um: float,
    origin_um=(0.0, 0.0, 0.0),
    attrs: dict | None = None,
    tables: dict | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write one volume file atomically.

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file; written through a temporary file, renamed on success.
    kind : {"electrode", "ct", "segmentation"}
        Stored in the ``format`` attribute as ``nmc-dataset/<kind>``.
    arrays : dict of str to ndarray
        3D arrays of one shape; known names (``phase``, ``particle``, ``grain``, ``ct``) are cast to
        their documented dtype, other names are stored as given.
    voxel_size_um : float
        Edge of a voxel in µm.
    origin_um : sequence of 3 floats
        World position of the first voxel's centre, ``(z, y, x)`` µm.
    attrs : dict, optional
        More root attributes; dicts and lists are stored as JSON strings.
    tables : dict of str to dict of str to ndarray, optional
        Groups of equal-length columns (e.g. ``{"particles": {"id": ..., "center_um": ...}}``).
    compression : str or None
        h5py compression filter for the 3D arrays.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown volume kind {kind!r}")
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"volumes must be 3D arrays of one shape, got {sorted(shapes)}")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = f"nmc-dataset/{kind}"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["voxel_size_um"] = float(voxel_size_um)
        f.attrs["origin_um"] = np.asarray(origin_um, dtype=np.float64)
        f.attrs["axes"] = "zyx"
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        for name, a in arrays.items():
            a = np.asarray(a, dtype=_DTYPES.get(name, np.asarray(a).dtype))
            chunks = tuple(min(64, s) for s in a.shape)
            f.create_dataset(name, data=a, chunks=chunks, compression=compression)
        for group, columns in (tables or {}).items():
            g = f.create_group(group)
            for col, values in columns.items():
                g.create_dataset(col, data=np.asarray(values))
    return path


def read_volumes(path: str | os.PathLike, names=None, *, kinds=KINDS) -> tuple[dict, dict]:
    """Read a volume file.

    Parameters
    ----------
    path : path-like
        A file written by :func:`write_volumes`.
    names : iterable of str, optional
        Datasets to load (default: every 3D dataset in the file).
    kinds : tuple of str
        Accepted kinds; another kind is an :class:`~nmc_dataset.errors.InputError`.

    Returns
    -------
    arrays : dict of str to ndarray
        The volumes by name.
    meta : dict
        Root attributes (JSON strings decoded) and ``kind``.

    Raises
    ------
    InputError
        Missing file, not an HDF5 volume file of an accepted kind, or a requested dataset is absent.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise InputError(f"not a readable HDF5 file ({e.__class__.__name__})", path) from None
    with f:
        meta = {k: _decode(v) for k, v in f.attrs.items()}
        fmt = str(meta.get("format", ""))
        kind = fmt.split("/", 1)[1] if fmt.startswith("nmc-dataset/") else None
        if kind not in kinds:
            raise InputError(
                f"expected an nmc-dataset {' or '.join(kinds)} volume file, found format {fmt or 'none'!r}", path
            )
        check_format(meta, f"nmc-dataset/{kind}", FORMAT_VERSION, path)
        meta["kind"] = kind
        available = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 3]
        wanted = available if names is None else list(names)
        missing = [n for n in wanted if n not in available]
        if missing:
            raise InputError(f"has no {', '.join(missing)} volume (it holds {', '.join(available) or 'none'})", path)
        arrays = {n: f[n][...] for n in wanted}
    return arrays, meta


def read_table(path: str | os.PathLike, group: str) -> dict:
    """Read a table group (e.g. ``particles``) of a volume file as a dict of columns.

    Parameters
    ----------
    path : str or path-like
        A volume HDF5 file.
    group : str
        Name of the table group.

    Returns
    -------
    dict of str to ndarray
        One array per column.

    Raises
    ------
    InputError
        If the file has no such group.
    """
    with h5py.File(path, "r") as f:
        if group not in f:
            raise InputError(f"has no {group!r} table", path)
        return {k: v[...] for k, v in f[group].items()}


def _decode(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
