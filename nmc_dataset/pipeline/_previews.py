"""Orientation previews of a particle release: a GLB column in ``particles`` and a card figure.

* ``particles`` rows get ``preview_glb`` (a ``datasets.Mesh`` column: ``{"bytes", "path"}`` with
  the GLB bytes and ``particle_<id>.glb``): the outer surface of the particle's coarsened
  conforming grain surface on a :data:`PREVIEW_CUBE`³ lattice (:func:`nmc_dataset.particles.cube_grid`),
  every grain coloured by its crystal c-axis in its radial frame
  (:func:`nmc_dataset.export._preview.c_axis_colours`). The Hugging Face viewer shows Mesh columns
  as interactive 3D previews; ``load_dataset`` decodes them to ``trimesh.Scene`` objects.
* ``figures/particle_<id>_grains_coloured_by_c_axis_orientation.png``: the first particle cut
  open, same colours, with the colour key (:func:`render_first_particle_orientations`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nmc_dataset.export._preview import (
    COLOUR_KEY,
    c_axis_colours,
    coarse_grain_surface,
    orientation_rendering,
    preview_glb,
)
from nmc_dataset.export._tables import particle_from_rows
from nmc_dataset.particles._voxelize import voxelize_cube

#: edge (voxels) of the lattice the previews are meshed on
PREVIEW_CUBE = 64
#: the particles column holding the GLB
PREVIEW_COLUMN = "preview_glb"


def _grain_columns(grains, particle_id: int):
    """``(labels, c_axis or None, centroids)`` of one particle from a grains table."""

    t = grains.filter(pc.equal(grains.column("particle_id"), int(particle_id)))
    lab = t.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    cen = np.stack([t.column(f"centroid_{a}_um").to_numpy(zero_copy_only=False) for a in "xyz"], axis=1)
    c = None
    if "c_axis_xyz" in t.column_names:
        rows = t.column("c_axis_xyz").to_pylist()
        if rows and not any(v is None for v in rows):
            c = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return lab, c, np.asarray(cen, dtype=np.float64)


def grain_colours(grains, particle_id: int, n_grains: int) -> np.ndarray:
    """Orientation colours (``(n_grains, 3)`` uint8, row ``k - 1`` = grain ``k``) of one particle."""
    lab, c, cen = _grain_columns(grains, particle_id)
    out = np.zeros((int(n_grains), 3), dtype=np.uint8)
    ok = (lab >= 1) & (lab <= n_grains)
    out[lab[ok] - 1] = c_axis_colours(None if c is None else c[ok], cen[ok])
    return out


def particle_preview(cube, grains, particle_id: int, n_grains: int) -> dict:
    """The ``preview_glb`` value of one particle: ``{"bytes": GLB, "path": "particle_<id>.glb"}``.

    Parameters
    ----------
    cube : nmc_dataset.particles._voxelize.VoxelVolume
        The particle's labels on its preview lattice.
    grains : pyarrow.Table
        The grains table (``label``, centroids, ``c_axis_xyz``).
    """
    surf = coarse_grain_surface(cube.labels, cube.origin_um, cube.voxel_size_um, int(n_grains))
    col = grain_colours(grains, particle_id, int(n_grains))
    extras = {"particle_id": int(particle_id), "units": "um", "colour_key": COLOUR_KEY}
    return {"bytes": preview_glb(surf, col, extras), "path": f"particle_{int(particle_id):06d}.glb"}


def with_previews(particles, grains, results, cubes: dict | None = None):
    """``particles`` with the :data:`PREVIEW_COLUMN` (``datasets.Mesh``) appended.

    Parameters
    ----------
    particles, grains : pyarrow.Table
        A shard's params tables (rows in the order of ``results``).
    results : list of nmc_dataset.pipeline._particles.ParticleResult
        Their ``cubes`` are used when they hold a :data:`PREVIEW_CUBE`³ volume; otherwise the
        particle is re-voxelised on that lattice from its params rows.
    """
    import datasets

    values = []
    prow = particles.to_pylist()
    for i, r in enumerate(results):
        cube = (r.cubes or {}).get(PREVIEW_CUBE)
        if cube is None:
            import pyarrow.compute as pc

            g = grains.filter(pc.equal(grains.column("particle_id"), int(r.particle_id)))
            cube = voxelize_cube(particle_from_rows(prow[i], g.to_pydict()), PREVIEW_CUBE)
        values.append(particle_preview(cube, grains, r.particle_id, r.n_grains))
    meta = dict(particles.schema.metadata or {})
    feats = datasets.Features.from_arrow_schema(particles.schema)
    feats[PREVIEW_COLUMN] = datasets.Mesh()
    col = pa.array(values, type=datasets.Mesh().pa_type)
    out = particles.append_column(pa.field(PREVIEW_COLUMN, col.type), col)
    hf = feats.arrow_schema.metadata  # the "huggingface" features entry load_dataset reads
    return out.replace_schema_metadata({**meta, **hf})


def render_first_particle_orientations(out, n: int = PREVIEW_CUBE) -> Path | None:
    """``figures/particle_<id>_grains_coloured_by_c_axis_orientation.png`` of the first particle
    of ``data/particles`` (its ``voxels_<n>`` cube when the release has one, else re-voxelised)."""

    out = Path(out)
    pfiles = sorted((out / "data" / "particles").glob("*.parquet"))
    gfiles = sorted((out / "data" / "grains").glob("*.parquet"))
    if not pfiles or not gfiles:
        return None
    pt = pq.read_table(pfiles[0]).slice(0, 1)
    if pt.num_rows == 0:
        return None
    pid = int(pt.column("particle_id")[0].as_py())
    grains = pq.read_table(gfiles[0])

    g = grains.filter(pc.equal(grains.column("particle_id"), pid))
    cube = voxelize_cube(
        particle_from_rows(
            pt.drop_columns([c for c in pt.column_names if c == PREVIEW_COLUMN]).to_pylist()[0], g.to_pydict()
        ),
        int(n),
    )
    n_grains = int(g.num_rows)
    has = "c_axis_xyz" in g.column_names and not any(v is None for v in g.column("c_axis_xyz").to_pylist())
    title = (
        f"particle {pid}: grains coloured by crystal c-axis"
        if has
        else f"particle {pid}: no orientation model (grains grey)"
    )
    path = out / "figures" / f"particle_{pid:06d}_grains_coloured_by_c_axis_orientation.png"
    return orientation_rendering(
        cube.labels, grain_colours(grains, pid, n_grains), path, voxel_size_um=cube.voxel_size_um, title=title
    )


__all__ = [
    "PREVIEW_COLUMN",
    "PREVIEW_CUBE",
    "grain_colours",
    "particle_preview",
    "render_first_particle_orientations",
    "with_previews",
]
