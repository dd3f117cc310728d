"""The params tables: analytic particles as Arrow/parquet (format "nmc-dataset/particle-params" v1).

Two tables (two parquet files in a ``generate`` output, two configs in a dataset):

``particles`` — one row per particle:
    ``particle_id``, ``seed_entropy`` (decimal string), ``seed_spawn_key`` (list of int),
    ``shell_model_id``, ``grain_model_id`` (``"<format>@v<version>:sha256:<hash>"``),
    ``pixel_size_um`` (grain-model pixel), ``sh_degree``, ``sh_coeffs_um`` (list of
    ``(L+1)^2`` float64, index ``l*l+l+m``, no Condon–Shortley phase), ``n_drawn``, ``n_grains``,
    ``assembly_spacing_px``, ``assembly_margin_px``; analytic shell descriptors (µm):
    ``shell_volume_um3``, ``shell_area_um2``, ``shell_d_max_um``, ``shell_compactness``,
    ``shell_aspect_ratio``, ``shell_sphericity``; the voxelisation the grain statistics were
    measured on: ``voxel_size_um``, ``grid_shape_zyx``, ``grid_origin_um_xyz``,
    ``voxel_volume_um3`` (voxels inside the shell × voxel volume), ``n_disconnected``,
    ``n_empty_grains`` (kept grains without a voxel at this voxel size).

``grains`` — one row per kept grain:
    ``particle_id``, ``label`` (value in the voxel volume, 1..n), ``drawn_index``,
    ``seed_x_px``, ``seed_y_px``, ``seed_z_px``, ``d_radial``, ``d_tangential_1``,
    ``d_tangential_2`` (diagonal of D, px⁻²-free: power distances are in px²), ``r_px2``
    (offset r), ``roll_rad`` (γ), ``com_x_px``/``com_y_px``/``com_z_px`` (the assembly centre of
    mass used for selection), and from the voxel volume: ``voxels``, ``volume_um3``,
    ``centroid_x_um``/``_y_um``/``_z_um``, ``principal_axes`` (9 floats: three unit row vectors
    (x, y, z), largest second moment first), ``principal_sd_um`` (3 floats), ``touches_shell``;
    the grain's crystal orientation, in the particle frame (null when the particle was drawn
    without an orientation model):

    * ``orientation_quat_wxyz`` (4 floats): unit quaternion ``(w, x, y, z)``, ``w >= 0``, of the
      active rotation taking the crystal axes (x ∥ a1, z ∥ c, hexagonal setting of R-3m) to the
      particle frame: ``v_particle = R(q) v_crystal``;
    * ``euler_bunge_rad`` (3 floats): Bunge ``(φ1, Φ, φ2)`` of the same orientation, i.e. of the
      passive rotation ``g = R(q)^T`` (particle frame → crystal frame),
      ``g = Z(φ2) X(Φ) Z(φ1)``, ``φ1, φ2 ∈ [0, 2π)``, ``Φ ∈ [0, π]`` (what EBSD software,
      MTEX, DAMASK and Neper call the orientation's Euler angles);
    * ``c_axis_xyz`` (3 floats): the crystal c-axis as a unit vector of the particle frame
      (third column of ``R(q)``; ``c`` and ``-c`` are equivalent under -3m).

    ``particles`` gets ``orientation_model_id`` (empty string without one).

Every float is stored as float64, so :func:`particle_from_rows` rebuilds the exact
:class:`~nmc_dataset.particles._assemble.Particle` and its voxel volume bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nmc_dataset._util import atomic_path, check_format
from nmc_dataset.errors import InputError
from nmc_dataset.particles._assemble import Particle
from nmc_dataset.particles._voxelize import grain_statistics
from nmc_dataset.shells._descriptors import shell_descriptors
from nmc_dataset.tessellation._gbpd import GBPD

PARAMS_FORMAT = "nmc-dataset/particle-params"
PARAMS_FORMAT_VERSION = 1
PARTICLES_FILE = "particles.parquet"
GRAINS_FILE = "grains.parquet"

_UNITS = {
    "length": "µm unless the column name ends in _px (grain-model pixels)",
    "pixel_size_um": "size of one grain-model pixel in µm",
    "power_distance": "px^2 (d_* are dimensionless weights of px^2, r_px2 in px^2)",
    "coordinates": "(x, y, z), particle centre at the origin",
}


def _schemas():

    f64 = pa.float64()
    particles = pa.schema(
        [
            ("particle_id", pa.int64()),
            ("seed_entropy", pa.string()),
            ("seed_spawn_key", pa.list_(pa.int64())),
            ("shell_model_id", pa.string()),
            ("grain_model_id", pa.string()),
            ("pixel_size_um", f64),
            ("sh_degree", pa.int32()),
            ("sh_coeffs_um", pa.list_(f64)),
            ("n_drawn", pa.int64()),
            ("n_grains", pa.int64()),
            ("assembly_spacing_px", f64),
            ("assembly_margin_px", f64),
            ("shell_volume_um3", f64),
            ("shell_area_um2", f64),
            ("shell_d_max_um", f64),
            ("shell_compactness", f64),
            ("shell_aspect_ratio", f64),
            ("shell_sphericity", f64),
            ("voxel_size_um", f64),
            ("grid_shape_zyx", pa.list_(pa.int64())),
            ("grid_origin_um_xyz", pa.list_(f64)),
            ("voxel_volume_um3", f64),
            ("n_disconnected", pa.int64()),
            ("n_empty_grains", pa.int64()),
            ("orientation_model_id", pa.string()),
        ]
    )
    grains = pa.schema(
        [
            ("particle_id", pa.int64()),
            ("label", pa.int64()),
            ("drawn_index", pa.int64()),
            ("seed_x_px", f64),
            ("seed_y_px", f64),
            ("seed_z_px", f64),
            ("d_radial", f64),
            ("d_tangential_1", f64),
            ("d_tangential_2", f64),
            ("r_px2", f64),
            ("roll_rad", f64),
            ("com_x_px", f64),
            ("com_y_px", f64),
            ("com_z_px", f64),
            ("voxels", pa.int64()),
            ("volume_um3", f64),
            ("centroid_x_um", f64),
            ("centroid_y_um", f64),
            ("centroid_z_um", f64),
            ("principal_axes", pa.list_(f64)),
            ("principal_sd_um", pa.list_(f64)),
            ("touches_shell", pa.bool_()),
            ("orientation_quat_wxyz", pa.list_(f64)),
            ("euler_bunge_rad", pa.list_(f64)),
            ("c_axis_xyz", pa.list_(f64)),
        ]
    )
    return particles, grains


def _meta(table: str) -> dict:
    return {
        b"format": PARAMS_FORMAT.encode(),
        b"format_version": str(PARAMS_FORMAT_VERSION).encode(),
        b"table": table.encode(),
        b"units": json.dumps(_UNITS, ensure_ascii=False).encode(),
    }


def particles_schema():
    """Arrow schema (with format metadata) of the ``particles`` table."""
    return _schemas()[0].with_metadata(_meta("particles"))


def grains_schema():
    """Arrow schema (with format metadata) of the ``grains`` table."""
    return _schemas()[1].with_metadata(_meta("grains"))


def shell_descriptor_row(coeffs_um: np.ndarray) -> dict:
    """Analytic shell descriptors (µm) of one shell, keyed by the particles-table columns."""

    d = shell_descriptors(np.asarray(coeffs_um, dtype=np.float64)[None, :])
    return {
        "shell_volume_um3": float(np.asarray(d["volume"]).reshape(-1)[0]),
        "shell_area_um2": float(np.asarray(d["area"]).reshape(-1)[0]),
        "shell_d_max_um": float(np.asarray(d["d_max"]).reshape(-1)[0]),
        "shell_compactness": float(np.asarray(d["compactness"]).reshape(-1)[0]),
        "shell_aspect_ratio": float(np.asarray(d["aspect_ratio"]).reshape(-1)[0]),
        "shell_sphericity": float(np.asarray(d["sphericity"]).reshape(-1)[0]),
    }


def particle_records(particle, volume=None, stats=None, descriptors: dict | None = None):
    """The rows of one particle: ``(particle_row: dict, grain_rows: dict of columns)``.

    Parameters
    ----------
    particle : Particle
    volume : VoxelVolume, optional
        The voxelisation the grain statistics come from (else those columns are null/NaN).
    stats : dict, optional
        ``voxelize.grain_statistics`` of ``volume`` (computed if omitted).
    descriptors : dict, optional
        :func:`shell_descriptor_row` (computed if omitted).
    """

    g = particle.grains
    n = g.n
    desc = shell_descriptor_row(particle.coeffs_um) if descriptors is None else descriptors
    prow = {
        "particle_id": int(particle.particle_id),
        "seed_entropy": None if particle.seed_entropy is None else str(int(particle.seed_entropy)),
        "seed_spawn_key": [int(k) for k in particle.seed_spawn_key],
        "shell_model_id": particle.shell_model_id,
        "grain_model_id": particle.grain_model_id,
        "pixel_size_um": float(particle.pixel_size_um),
        "sh_degree": int(particle.degree),
        "sh_coeffs_um": np.asarray(particle.coeffs_um, dtype=np.float64).tolist(),
        "n_drawn": int(particle.n_drawn),
        "n_grains": int(n),
        "assembly_spacing_px": float(particle.spacing_px),
        "assembly_margin_px": float(particle.margin_px),
        **desc,
    }
    com = particle.com_px if particle.com_px is not None else np.full((n, 3), np.nan)
    grows = {
        "particle_id": np.full(n, int(particle.particle_id), dtype=np.int64),
        "label": np.arange(1, n + 1, dtype=np.int64),
        "drawn_index": np.asarray(particle.kept_index, dtype=np.int64),
        "seed_x_px": g.seeds[:, 0],
        "seed_y_px": g.seeds[:, 1],
        "seed_z_px": g.seeds[:, 2],
        "d_radial": g.diag[:, 0],
        "d_tangential_1": g.diag[:, 1],
        "d_tangential_2": g.diag[:, 2],
        "r_px2": g.offsets,
        "roll_rad": g.roll,
        "com_x_px": com[:, 0],
        "com_y_px": com[:, 1],
        "com_z_px": com[:, 2],
    }
    prow["orientation_model_id"] = getattr(particle, "orientation_model_id", "") or ""
    quat = getattr(particle, "orientations_wxyz", None)
    if quat is not None:
        from nmc_dataset.ebsd._orientation_model import orientation_columns

        cols = orientation_columns(quat)
        grows.update({k: list(v) for k, v in cols.items()})
    if volume is not None:
        from nmc_dataset.tessellation._connectivity import count_disconnected

        st = grain_statistics(volume.labels, volume.grid, n) if stats is None else stats
        h = volume.voxel_size_um
        prow.update(
            {
                "voxel_size_um": float(h),
                "grid_shape_zyx": [int(s) for s in volume.grid.shape],
                "grid_origin_um_xyz": volume.origin_um.tolist(),
                "voxel_volume_um3": float(st["voxels"].sum() * h**3),
                "n_disconnected": int(count_disconnected(volume.labels.astype(np.int64) - 1)),
                "n_empty_grains": int((st["voxels"] == 0).sum()),
            }
        )
        grows.update(
            {
                "voxels": st["voxels"],
                "volume_um3": st["volume_um3"],
                "centroid_x_um": st["centroid_um"][:, 0],
                "centroid_y_um": st["centroid_um"][:, 1],
                "centroid_z_um": st["centroid_um"][:, 2],
                "principal_axes": list(st["principal_axes"].reshape(n, 9)),
                "principal_sd_um": list(st["principal_sd_um"]),
                "touches_shell": st["touches_shell"],
            }
        )
    else:
        prow.update(
            {
                "voxel_size_um": None,
                "grid_shape_zyx": None,
                "grid_origin_um_xyz": None,
                "voxel_volume_um3": None,
                "n_disconnected": None,
                "n_empty_grains": None,
            }
        )
    return prow, grows


def params_tables(records):
    """Build the ``particles`` and ``grains`` Arrow tables from :func:`particle_records` outputs.

    Parameters
    ----------
    records : list of (dict, dict)
        Per particle: its ``particles`` row and its ``grains`` columns, as returned by :func:`particle_records`.

    Returns
    -------
    particles, grains : pyarrow.Table
        The two tables with the package's schemas.
    """

    pschema, gschema = particles_schema(), grains_schema()
    particles = pa.Table.from_pylist([r[0] for r in records], schema=pschema)
    parts = []
    for _, g in records:
        n = len(g["particle_id"])
        cols = []
        for field in gschema:
            v = g.get(field.name)
            if v is None:
                cols.append(pa.nulls(n, field.type))
            elif pa.types.is_list(field.type):
                cols.append(pa.array([np.asarray(x, dtype=np.float64).tolist() for x in v], type=field.type))
            else:
                cols.append(pa.array(np.asarray(v), type=field.type))
        parts.append(pa.Table.from_arrays(cols, schema=gschema))
    grains = pa.concat_tables(parts) if parts else gschema.empty_table()
    return particles, grains


def write_params(folder, particles_table, grains_table) -> tuple[Path, Path]:
    """Write ``particles.parquet`` and ``grains.parquet`` into ``folder`` (atomically, zstd).

    Parameters
    ----------
    folder : path-like
        Existing output folder.
    particles_table, grains_table : pyarrow.Table
        From :func:`params_tables`.

    Returns
    -------
    tuple of 2 Path
        The two files written.
    """

    folder = Path(folder)
    out = []
    for name, table in ((PARTICLES_FILE, particles_table), (GRAINS_FILE, grains_table)):
        path = folder / name
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        out.append(path)
    return tuple(out)


def _check_meta(schema_meta, path, table: str) -> None:
    meta = {k.decode(): v.decode() for k, v in (schema_meta or {}).items()}
    try:
        meta["format_version"] = int(meta.get("format_version", ""))
    except ValueError:
        pass
    check_format(meta, PARAMS_FORMAT, PARAMS_FORMAT_VERSION, path)
    if meta.get("table") != table:
        raise InputError(f"expected the '{table}' params table, found {meta.get('table')!r}", path)


def read_params(folder):
    """Read ``particles.parquet`` and ``grains.parquet`` (format-checked); returns two Arrow tables.

    Parameters
    ----------
    folder : path-like
        Folder holding ``particles.parquet`` and ``grains.parquet``.

    Returns
    -------
    particles, grains : pyarrow.Table
        The two tables.

    Raises
    ------
    InputError
        If a table is missing, unreadable or of another format.
    """

    folder = Path(folder)
    tables = []
    for name, table in ((PARTICLES_FILE, "particles"), (GRAINS_FILE, "grains")):
        path = folder / name
        try:
            t = pq.read_table(path)
        except FileNotFoundError:
            raise InputError("params table not found", path) from None
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"not a readable parquet file: {e}", path) from None
        _check_meta(t.schema.metadata, path, table)
        tables.append(t)
    return tables[0], tables[1]


def particle_from_rows(particle_row: dict, grain_rows: dict):
    """Rebuild a :class:`~nmc_dataset.particles._assemble.Particle` from its table rows.

    Parameters
    ----------
    particle_row : dict
        One row of the particles table (``table.to_pylist()[i]``).
    grain_rows : dict of arrays
        The grains-table columns of this particle, ordered by ``label``.

    Returns
    -------
    Particle
        The particle as it was drawn (shell in µm, kept grains in pixels).
    """

    gr = {k: np.asarray(v) for k, v in grain_rows.items()}
    order = np.argsort(gr["label"], kind="stable")
    gr = {k: v[order] for k, v in gr.items()}
    g = GBPD(
        np.stack([gr["seed_x_px"], gr["seed_y_px"], gr["seed_z_px"]], axis=1).astype(np.float64),
        np.stack([gr["d_radial"], gr["d_tangential_1"], gr["d_tangential_2"]], axis=1).astype(np.float64),
        gr["r_px2"].astype(np.float64),
        gr["roll_rad"].astype(np.float64),
    )
    ent = particle_row.get("seed_entropy")
    quat = None
    if "orientation_quat_wxyz" in gr and not any(v is None for v in gr["orientation_quat_wxyz"]):
        quat = np.array([np.asarray(v, dtype=np.float64) for v in gr["orientation_quat_wxyz"]]).reshape(-1, 4)
    return Particle(
        particle_id=int(particle_row["particle_id"]),
        coeffs_um=np.asarray(particle_row["sh_coeffs_um"], dtype=np.float64),
        grains=g,
        pixel_size_um=float(particle_row["pixel_size_um"]),
        kept_index=gr["drawn_index"].astype(np.int64),
        n_drawn=int(particle_row["n_drawn"]),
        seed_entropy=None if ent is None else int(ent),
        seed_spawn_key=tuple(int(k) for k in (particle_row.get("seed_spawn_key") or ())),
        shell_model_id=particle_row.get("shell_model_id") or "",
        grain_model_id=particle_row.get("grain_model_id") or "",
        spacing_px=float(particle_row["assembly_spacing_px"]),
        margin_px=float(particle_row["assembly_margin_px"]),
        com_px=np.stack([gr["com_x_px"], gr["com_y_px"], gr["com_z_px"]], axis=1).astype(np.float64),
        orientations_wxyz=quat,
        orientation_model_id=particle_row.get("orientation_model_id") or "",
    )


def _object_array(items) -> np.ndarray:
    """1D object array of ``items`` (lists or None), without numpy stacking equal-length lists."""
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def read_particles(folder):
    """All particles of a params folder, rebuilt (list of ``Particle``, in table order).

    Parameters
    ----------
    folder : path-like
        Folder holding ``particles.parquet`` and ``grains.parquet``.

    Returns
    -------
    list of Particle
        Rebuilt from the tables (shell coefficients, kept grains, orientations when stored).
    """
    ptab, gtab = read_params(folder)
    names = [
        "particle_id",
        "label",
        "drawn_index",
        "seed_x_px",
        "seed_y_px",
        "seed_z_px",
        "d_radial",
        "d_tangential_1",
        "d_tangential_2",
        "r_px2",
        "roll_rad",
        "com_x_px",
        "com_y_px",
        "com_z_px",
    ]
    if "orientation_quat_wxyz" in gtab.column_names:  # tables written before orientations existed lack it
        names.append("orientation_quat_wxyz")
    gcols = gtab.select(names).to_pydict()
    gcols = {k: (_object_array(v) if k == "orientation_quat_wxyz" else np.asarray(v)) for k, v in gcols.items()}
    out = []
    for row in ptab.to_pylist():
        sel = gcols["particle_id"] == row["particle_id"]
        out.append(particle_from_rows(row, {k: v[sel] for k, v in gcols.items()}))
    return out


__all__ = [
    "PARAMS_FORMAT",
    "PARAMS_FORMAT_VERSION",
    "particles_schema",
    "grains_schema",
    "particle_records",
    "params_tables",
    "write_params",
    "read_params",
    "particle_from_rows",
    "read_particles",
    "shell_descriptor_row",
]
