"""Voxel volumes of particles in HDF5 (format "nmc-dataset/voxels" v1) with an XDMF sidecar.

Layout (``schemas/voxels-hdf5.schema.json`` describes the attributes)::

    voxels.h5
      attrs  format="nmc-dataset/voxels", format_version=1, units="um", axes="z,y,x",
             label_meaning="0 = outside the particle; k >= 1 = grain k (row label=k of grains.parquet)"
      /particles/<particle_id as 6 digits>        uint16 (uint32 if >= 65535 grains), (nz, ny, nx)
             chunked (<= 64^3), gzip level 4 + shuffle (or lzf)
             attrs voxel_size_um (float), origin_um (x, y, z: centre of voxel [0, 0, 0]),
                   units="um", axes="z,y,x", particle_id, n_grains, format, format_version
                   (+ grain_table="grains/<id>" when the particle has crystal orientations)
      /grains/<particle_id as 6 digits>           per-label table, row k-1 = grain label k (only
             for particles drawn with an orientation model):
             label (n,) int64, orientation_quat_wxyz (n, 4), euler_bunge_rad (n, 3),
             c_axis_xyz (n, 3) float64, in the particle frame, the conventions of the
             grains.parquet columns of the same names (attrs: frame, convention, crystal_frame)
    voxels.xdmf   XDMF 2 sidecar: a temporal collection with one 3DCoRectMesh grid per particle
                  (cell data "grain"); open it in ParaView (Xdmf reader) and step through the
                  particles with the time control. Voxel ``[k, j, i]`` is centred at
                  ``origin_um + voxel_size_um * (i, j, k)``.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np

from nmc_dataset._util import atomic_path, check_format, write_text_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.particles._voxelize import Grid, VoxelVolume

VOXELS_FORMAT = "nmc-dataset/voxels"
VOXELS_FORMAT_VERSION = 1
LABEL_MEANING = "0 = outside the particle; k >= 1 = grain k (row label=k of grains.parquet)"


def dataset_name(particle_id: int) -> str:
    """HDF5 path of a particle's volume."""
    return f"particles/{int(particle_id):06d}"


def grain_table_name(particle_id: int) -> str:
    """HDF5 path of a particle's per-label grain table."""
    return f"grains/{int(particle_id):06d}"


#: Attributes of a per-label orientation table.
ORIENTATION_TABLE_ATTRS = {
    "frame": "particle frame: x, y, z in um, particle centre at the origin (the voxels' frame)",
    "orientation_quat_wxyz": "unit quaternion (w, x, y, z), w >= 0, of the active rotation taking crystal axes "
    "to the particle frame",
    "euler_bunge_rad": "Bunge (phi1, Phi, phi2) of the passive rotation particle frame -> crystal frame",
    "c_axis_xyz": "crystal c-axis as a unit vector of the particle frame",
    "crystal_frame": "x || a1, z || c (hexagonal setting of R-3m, point group -3m)",
    "row_meaning": "row k-1 = grain label k of the particle's volume",
}


class VoxelsWriter:
    """Stream particle volumes into one HDF5 file (+ XDMF sidecar), atomically.

    Use as a context manager; the files appear (renamed from temporary names) only when the
    block exits without error::

        with VoxelsWriter("out/voxels.h5") as w:
            for vol in volumes:
                w.add(vol, n_grains)

    Parameters
    ----------
    path : path-like
        The ``.h5`` file; the sidecar is the same name with ``.xdmf``.
    compression : {"gzip", "lzf", None}
        Dataset filter (gzip level 4 with shuffle by default).
    chunk : int
        Chunk edge length (clipped to the volume's shape).
    """

    def __init__(self, path, compression: str | None = "gzip", chunk: int = 64):
        if compression not in ("gzip", "lzf", None):
            raise ValueError("compression must be 'gzip', 'lzf' or None")
        self.path = Path(path)
        self.xdmf_path = self.path.with_suffix(".xdmf")
        self.compression = compression
        self.chunk = int(chunk)
        self._grids: list[dict] = []

    def __enter__(self):
        # the temporary file (renamed into place on success) and the open HDF5 handle, closed first
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._h5 = self._stack.enter_context(h5py.File(self._tmp, "w", track_order=True))
        self._h5.attrs.update(
            {
                "format": VOXELS_FORMAT,
                "format_version": VOXELS_FORMAT_VERSION,
                "units": "um",
                "axes": "z,y,x",
                "label_meaning": LABEL_MEANING,
            }
        )
        self._h5.create_group("particles", track_order=True)
        return self

    def add(self, volume, n_grains: int | None = None, orientations_wxyz=None) -> str:
        """Append one :class:`~nmc_dataset.particles._voxelize.VoxelVolume`; returns its dataset path.

        ``orientations_wxyz`` (n, 4) (default: the volume's own ``orientations_wxyz``) adds the
        per-label table ``grains/<id>``.

        Parameters
        ----------
        volume : VoxelVolume
            The label volume (uint16 or uint32).
        n_grains : int, optional
            Grain count stored with it (default: its largest label).
        orientations_wxyz : (n, 4) float array, optional
            Per-label crystal orientations (crystal → particle frame); default: the volume's own.

        Returns
        -------
        str
            The HDF5 path of the dataset (``particles/<id>``).
        """
        labels = np.asarray(volume.labels)
        if labels.ndim != 3 or labels.dtype not in (np.uint16, np.uint32):
            raise ValueError("labels must be a 3D uint16/uint32 array")
        name = dataset_name(volume.particle_id)
        chunks = tuple(min(self.chunk, s) for s in labels.shape)
        opts = {}
        if self.compression == "gzip":
            opts = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        elif self.compression == "lzf":
            opts = {"compression": "lzf", "shuffle": True}
        ds = self._h5.create_dataset(name, data=labels, chunks=chunks, **opts)
        n = int(labels.max()) if n_grains is None else int(n_grains)
        ds.attrs.update(
            {
                "voxel_size_um": float(volume.voxel_size_um),
                "origin_um": np.asarray(volume.origin_um, dtype=np.float64),
                "units": "um",
                "axes": "z,y,x",
                "particle_id": int(volume.particle_id),
                "n_grains": n,
                "format": VOXELS_FORMAT,
                "format_version": VOXELS_FORMAT_VERSION,
            }
        )
        quat = getattr(volume, "orientations_wxyz", None) if orientations_wxyz is None else orientations_wxyz
        if quat is not None:
            from nmc_dataset.ebsd._orientation_model import orientation_columns

            quat = np.asarray(quat, dtype=np.float64).reshape(-1, 4)
            if len(quat) != n:
                raise ValueError(f"{len(quat)} orientations for {n} grains")
            grp = self._h5.require_group("grains").create_group(grain_table_name(volume.particle_id).split("/")[1])
            grp.attrs.update(ORIENTATION_TABLE_ATTRS)
            grp.attrs.update({"particle_id": int(volume.particle_id), "n_grains": n})
            grp.create_dataset("label", data=np.arange(1, n + 1, dtype=np.int64))
            for key, val in orientation_columns(quat).items():
                grp.create_dataset(key, data=np.asarray(val, dtype=np.float64))
            ds.attrs["grain_table"] = grain_table_name(volume.particle_id)
        self._grids.append(
            {
                "name": name,
                "shape": labels.shape,
                "dtype": labels.dtype,
                "origin_um": np.asarray(volume.origin_um, dtype=np.float64),
                "h": float(volume.voxel_size_um),
            }
        )
        return name

    def __exit__(self, exc_type, exc, tb):
        self._stack.__exit__(exc_type, exc, tb)  # close the file, then rename it (or discard it)
        if exc_type is None:
            write_text_atomic(self.xdmf_path, xdmf_text(self.path.name, self._grids))
        return False


def xdmf_text(h5_name: str, grids: list[dict]) -> str:
    """XDMF 2 text for the volumes ``grids`` (dicts: name, shape, dtype, origin_um, h) in ``h5_name``."""
    root = ET.Element("Xdmf", Version="2.0")
    dom = ET.SubElement(root, "Domain")
    coll = ET.SubElement(dom, "Grid", Name="particles", GridType="Collection", CollectionType="Temporal")
    for t, g in enumerate(grids):
        nz, ny, nx = (int(s) for s in g["shape"])
        h = g["h"]
        corner = g["origin_um"] - 0.5 * h  # x, y, z of the grid's first corner
        grid = ET.SubElement(coll, "Grid", Name=g["name"].replace("/", "_"), GridType="Uniform")
        ET.SubElement(grid, "Time", Value=str(t))
        ET.SubElement(grid, "Topology", TopologyType="3DCoRectMesh", Dimensions=f"{nz + 1} {ny + 1} {nx + 1}")
        geo = ET.SubElement(grid, "Geometry", GeometryType="ORIGIN_DXDYDZ")
        o = ET.SubElement(geo, "DataItem", Format="XML", NumberType="Float", Precision="8", Dimensions="3")
        o.text = " ".join(repr(float(c)) for c in corner[::-1])
        d = ET.SubElement(geo, "DataItem", Format="XML", NumberType="Float", Precision="8", Dimensions="3")
        d.text = " ".join([repr(float(h))] * 3)
        att = ET.SubElement(grid, "Attribute", Name="grain", AttributeType="Scalar", Center="Cell")
        item = ET.SubElement(
            att,
            "DataItem",
            Format="HDF",
            NumberType="UInt",
            Precision=str(np.dtype(g["dtype"]).itemsize),
            Dimensions=f"{nz} {ny} {nx}",
        )
        item.text = f"{h5_name}:/{g['name']}"
    ET.indent(root)
    header = '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n'
    return header + ET.tostring(root, encoding="unicode") + "\n"


def write_voxels(path, volumes, n_grains=None, compression: str | None = "gzip") -> Path:
    """Write volumes (iterable of ``VoxelVolume``) into ``path`` (+ ``.xdmf``); returns ``path``.

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file.
    volumes : iterable of VoxelVolume
        Label volumes to store.
    n_grains : sequence of int, optional
        Grain count per volume (default: each volume's largest label).
    compression : {"gzip", "lzf", None}, default "gzip"
        HDF5 filter of the label datasets.

    Returns
    -------
    Path
        ``path``.
    """
    n_grains = list(n_grains) if n_grains is not None else None
    with VoxelsWriter(path, compression=compression) as w:
        for i, v in enumerate(volumes):
            w.add(v, None if n_grains is None else n_grains[i])
    return Path(path)


def _open(path):

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"not a readable HDF5 file: {e}", path) from None
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if isinstance(meta.get("format_version"), np.integer):
        meta["format_version"] = int(meta["format_version"])
    try:
        check_format(meta, VOXELS_FORMAT, VOXELS_FORMAT_VERSION, path)
    except Exception:
        f.close()
        raise
    return f


def list_volumes(path) -> list[int]:
    """Particle ids stored in a voxels file.

    Parameters
    ----------
    path : path-like
        A voxels HDF5 file.

    Returns
    -------
    list of int
        Particle ids, in the file's group order.
    """
    with _open(path) as f:
        return [int(k) for k in f["particles"].keys()]


def read_label_volume(path, particle_id: int):
    """Read one particle's :class:`~nmc_dataset.particles._voxelize.VoxelVolume` back.

    Parameters
    ----------
    path : path-like
        A voxels HDF5 file.
    particle_id : int
        Particle to read.

    Returns
    -------
    VoxelVolume
        Labels, grid (voxel size, origin in µm) and, if stored, orientations.

    Raises
    ------
    InputError
        If the file has no volume for ``particle_id``.
    """

    with _open(path) as f:
        name = dataset_name(particle_id)
        if name not in f:
            raise InputError(f"no volume for particle {particle_id}", path)
        ds = f[name]
        labels = ds[...]
        h = float(ds.attrs["voxel_size_um"])
        origin = np.asarray(ds.attrs["origin_um"], dtype=np.float64)

    grid = Grid(shape=labels.shape, index_lo=np.rint(origin / h).astype(np.int64), voxel_size_um=h)
    return VoxelVolume(labels, grid, int(particle_id), read_orientations(path, particle_id))


def read_orientations(path, particle_id: int):
    """The per-label crystal orientations ``(n, 4)`` (crystal → particle frame) of a particle, or
    None when the file has no grain table for it.

    Parameters
    ----------
    path : path-like
        A voxels HDF5 file.
    particle_id : int
        Particle to read.

    Returns
    -------
    (n, 4) float array or None
        Quaternions ``(w, x, y, z)``, row ``k - 1`` for label ``k``.
    """
    with _open(path) as f:
        name = grain_table_name(particle_id)
        if name not in f:
            return None
        return np.asarray(f[name]["orientation_quat_wxyz"][...], dtype=np.float64)


def describe_layout(path) -> dict:
    """The file's attributes as the JSON object ``schemas/voxels-hdf5.schema.json`` describes."""

    def plain(v):
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        return v

    with _open(path) as f:
        out = {"attrs": {k: plain(v) for k, v in f.attrs.items()}, "datasets": {}}
        for key, ds in f["particles"].items():
            out["datasets"][f"particles/{key}"] = {
                "shape": list(ds.shape),
                "dtype": str(ds.dtype),
                "attrs": {k: plain(v) for k, v in ds.attrs.items()},
            }
        if "grains" in f:
            out["grain_tables"] = {
                f"grains/{key}": {
                    "attrs": {k: plain(v) for k, v in grp.attrs.items()},
                    "columns": {c: list(grp[c].shape) for c in grp},
                }
                for key, grp in f["grains"].items()
            }
    return out


__all__ = [
    "describe_layout",
    "VOXELS_FORMAT",
    "VOXELS_FORMAT_VERSION",
    "VoxelsWriter",
    "write_voxels",
    "read_label_volume",
    "list_volumes",
    "read_orientations",
    "grain_table_name",
    "ORIENTATION_TABLE_ATTRS",
    "xdmf_text",
    "dataset_name",
]
