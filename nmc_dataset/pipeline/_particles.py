"""One particle end to end: draw -> voxelize -> tables -> exports, with its failure isolated.

``generate`` and the release shards both run :func:`export_particles`; a particle that cannot be
exported (a mesher that gives up, say) is reported by id and leaves no file behind, while the
others are written as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nmc_dataset._util import inject_fault, log
from nmc_dataset.errors import NmcError
from nmc_dataset.export import _tables as tables
from nmc_dataset.particles._assemble import make_particle, particle_seed
from nmc_dataset.particles._voxelize import voxelize

MESH_DIRS = ("surfaces", "volume_meshes", "simulators")


@dataclasses.dataclass
class ParticleResult:
    """What one exported particle produced.

    Parameters
    ----------
    particle_id : int
        Index of the particle in its run.
    n_grains : int
        Number of kept grains.
    record : dict or None
        :func:`nmc_dataset.export._tables.particle_records` of the particle (``None`` without params).
    entry : dict
        Summary for run records: id, grain count, grid shape, mesh statistics.
    cubes : dict of int to ndarray
        Fixed-size label cubes, by edge length.
    files : list of pathlib.Path
        Mesh files written for this particle.
    """

    particle_id: int
    n_grains: int
    record: dict | None
    entry: dict
    cubes: dict
    files: list


@dataclasses.dataclass
class ParticleFailure:
    """A particle that could not be exported: its id and the one-line reason.

    Parameters
    ----------
    particle_id : int
        The particle's index in the run.
    error : str
        One-line reason (exception type and message).
    """

    particle_id: int
    error: str

    def as_dict(self) -> dict:
        """JSON form for run records and manifests."""
        return {"particle_id": int(self.particle_id), "error": self.error}


def _mesh_files(folder: Path, particle_id: int) -> set[Path]:
    stem = f"particle_{particle_id:06d}"
    found = set()
    for sub in MESH_DIRS:
        d = folder / sub
        if d.is_dir():
            found |= {
                p
                for p in d.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and (p.name.startswith(stem + "_") or p.name.startswith(stem + "."))
            }
    return found


def export_particle(
    shell_model,
    grain_model,
    particle_id: int,
    seed: int,
    *,
    voxel_size_um: float,
    formats,
    mesh_folder: Path | None = None,
    voxels=None,
    cubes: Sequence[int] = (),
    mesh_size_um: float | None = None,
    smoothing_iterations: int = 8,
    spacing_px: float = 1.0,
    margin_px: float = 8.0,
    max_memory_gib: float | None = None,
    shell_model_id: str = "",
    grain_model_id: str = "",
    element_order: int = 1,
    min_elements_per_grain: int | None = None,
) -> ParticleResult:
    """Draw particle ``particle_id`` of a run seeded ``seed`` and write its exports.

    Parameters
    ----------
    shell_model : ShellModel
        Loaded shell model (:class:`~nmc_dataset.shells._model.ShellModel`).
    grain_model : GrainModel
        Loaded grain model (:class:`~nmc_dataset.calibration._model.GrainModel`).
    particle_id : int
        The particle's index; it draws from ``particle_seed(seed, particle_id)`` alone.
    seed : int
        The run's root seed.
    voxel_size_um : float
        Voxel size of the label volume the exports are made from.
    formats : collection of str
        ``params``, ``voxels``, ``surface``, ``volume-mesh``.
    mesh_folder : pathlib.Path, optional
        Receives ``surfaces/`` and ``volume_meshes/`` (needed for mesh formats).
    voxels : nmc_dataset.export._hdf5.VoxelsWriter, optional
        An open writer; the volume is added last, once every other export succeeded.
    cubes : sequence of int
        Edge lengths of fixed-size label cubes to return.
    mesh_size_um : float, optional
        Target tet size in µm (see :func:`nmc_dataset.pipeline._generate.write_particle_meshes`).
    smoothing_iterations : int, default 8
        Surface-nets smoothing iterations of the meshes.
    spacing_px, margin_px : float, default 1.0, 8.0
        Assembly lattice spacing and box margin (pixels) of the centre-of-mass selection.
    max_memory_gib : float, optional
        Memory limit for one volume (default 80 % of free memory).
    shell_model_id, grain_model_id : str, default ""
        Model ids stored with the particle.
    element_order : {1, 2}, default 1
        Linear or quadratic tets.
    min_elements_per_grain : int, optional
        Keep small grains' surfaces fine enough that each gets at least this many tets.

    Returns
    -------
    ParticleResult
        Its table record, cubes and mesh files.
    """

    inject_fault("particle", particle_id)
    part = make_particle(
        shell_model,
        grain_model,
        particle_seed(seed, particle_id),
        particle_id=particle_id,
        spacing_px=spacing_px,
        margin_px=margin_px,
        shell_model_id=shell_model_id,
        grain_model_id=grain_model_id,
    )
    vol = voxelize(part, voxel_size_um, max_memory_gib=max_memory_gib)
    entry = {"particle_id": particle_id, "n_grains": part.n_grains, "grid_shape_zyx": list(vol.grid.shape)}
    record = tables.particle_records(part, vol) if "params" in formats else None
    cube_vols = {}
    if cubes:
        from nmc_dataset.particles._voxelize import voxelize_cube

        cube_vols = {int(n): voxelize_cube(part, int(n)) for n in cubes}
    files: list = []
    if "surface" in formats or "volume-mesh" in formats:
        from nmc_dataset import __version__
        from nmc_dataset.pipeline._generate import write_particle_meshes

        provenance = {
            "tool": f"nmc-dataset {__version__}",
            "shell_model_id": shell_model_id,
            "grain_model_id": grain_model_id,
            "orientation_model_id": part.orientation_model_id,
        }
        entry.update(
            write_particle_meshes(
                part,
                vol,
                mesh_folder,
                formats,
                mesh_size_um,
                smoothing_iterations,
                max_memory_gib,
                element_order=element_order,
                min_elements_per_grain=min_elements_per_grain,
                provenance=provenance,
            )
        )
    if "damask" in formats or "neper" in formats:
        from nmc_dataset.export._simulators import write_simulator_files

        entry.update(write_simulator_files(part, vol, mesh_folder, formats))
    if mesh_folder is not None:
        files = sorted(_mesh_files(mesh_folder, particle_id))
    if voxels is not None:
        voxels.add(vol, part.n_grains)
    log.debug("particle %d: %d grains, %s voxels", particle_id, part.n_grains, vol.grid.shape)
    return ParticleResult(
        particle_id=particle_id, n_grains=part.n_grains, record=record, entry=entry, cubes=cube_vols, files=files
    )


def export_particles(
    particle_ids: Iterable[int], *, mesh_folder: Path | None = None, progress: Callable | None = None, **kwargs
) -> tuple[list, list]:
    """Run :func:`export_particle` for each id, isolating failures.

    A particle whose export raises (anything but an interrupt) is logged on one line, its mesh
    files are removed, and the loop goes on.

    Parameters
    ----------
    particle_ids : iterable of int
        Particles to export.
    mesh_folder : Path, optional
        Receives the mesh files (needed for mesh formats); a failed particle's new files there are removed.
    progress : callable, optional
        Wraps the id list (e.g. a progress bar): ``progress(ids) -> iterable``.
    **kwargs
        Passed to :func:`export_particle` (models, seed, voxel size, formats, writer, mesh options).

    Returns
    -------
    results : list of ParticleResult
        The exported particles, in id order.
    failures : list of ParticleFailure
        The particles that could not be exported.
    """
    ids = list(particle_ids)
    results, failures = [], []
    for pid in progress(ids) if progress else ids:
        before = _mesh_files(mesh_folder, pid) if mesh_folder is not None else set()
        try:
            results.append(export_particle(particle_id=int(pid), mesh_folder=mesh_folder, **kwargs))
        except Exception as e:  # noqa: BLE001 - one bad particle must not lose the others
            if isinstance(e, NmcError):
                raise  # a user error (bad option, memory limit) concerns every particle
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            log.warning("particle %d could not be exported (%s); continuing with the others", pid, reason)
            if mesh_folder is not None:
                for f in _mesh_files(mesh_folder, pid) - before:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
            failures.append(ParticleFailure(int(pid), reason))
    return results, failures


__all__ = ["ParticleResult", "ParticleFailure", "export_particle", "export_particles"]
