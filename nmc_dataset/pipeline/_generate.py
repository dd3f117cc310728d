"""``nmc-dataset generate``: virtual multi-scale particles and their exports.

Everything is validated before anything is written (models, pixel size, formats and their
optional extras, and the memory each volume needs at the requested voxel size); the output
folder appears atomically (a temporary folder renamed at the end).

Output folder::

    generate.json                   run record (format "nmc-dataset/particles-run" v1)
    particles.parquet, grains.parquet   params (format "nmc-dataset/particle-params" v1)
    voxels.h5, voxels.xdmf          label volumes (format "nmc-dataset/voxels" v1)
    surfaces/particle_<id>_shell.stl           analytic shell surface
    surfaces/particle_<id>_grains.{ply,glb,vtp}  conforming grain surfaces
    volume_meshes/particle_<id>.{msh,inp,xdmf,h5,vtu}   tet meshes (needs the [mesh] extra)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from pathlib import Path

import numpy as np

from nmc_dataset._util import check_format, log, progress, read_json, write_json_atomic
from nmc_dataset.calibration._model import GRAIN_MODEL_FORMAT, MODEL_JSON, WEIGHTS, GrainModel
from nmc_dataset.errors import ExportError, InputError, MissingExtraError, RecipeError
from nmc_dataset.export import _meshes as meshes
from nmc_dataset.export import _tables as tables
from nmc_dataset.export._decimate import tet_mesh_coarsened
from nmc_dataset.export._simulators import check_simulator_formats
from nmc_dataset.outputs import check_out_name, claim_folder, output_folder
from nmc_dataset.particles._assemble import _children, particle_seed
from nmc_dataset.particles._voxelize import check_memory, shell_grid
from nmc_dataset.pipeline._particles import MESH_DIRS, export_particles
from nmc_dataset.shells._model import FORMAT, ShellModel

FORMATS = ("params", "voxels", "surface", "volume-mesh", "damask", "neper")
RUN_FORMAT = "nmc-dataset/particles-run"


# --------------------------------------------------------------------------- models
def _sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def load_shell_model(path):
    """Load a shell model; returns ``(model, model_id)``.

    Parameters
    ----------
    path : path-like
        Shell model JSON.

    Returns
    -------
    model : ShellModel
        The loaded model.
    model_id : str
        ``<format>@v<version>:sha256:<16 hex digits>`` of the model file.
    """

    path = Path(path)
    m = ShellModel.load(path)
    return m, f"{FORMAT}@v{m.format_version}:sha256:{_sha256([path])[:16]}"


def load_grain_model(folder, orientations="auto"):
    """Load a grain model (checking its pixel size first); returns ``(model, model_id)``.

    Parameters
    ----------
    folder : path-like
        ``model.json`` + ``gnet.safetensors`` (``fit-grains``), optionally with
        ``orientation_model.json`` (``fit-orientations``).
    orientations : "auto", bool or path-like
        ``"auto"``: load ``orientation_model.json`` when it lies in ``folder`` (particles then
        get a crystal orientation per grain; without it they get none, as in the paper);
        ``True``: require it (``InputError`` naming the command that makes it); ``False``: ignore
        it; a path: that orientation model. It is attached as ``model.orientation_model``;
        ``model_id`` identifies the grain model alone (the orientation model has its own id,
        ``model.orientation_model.model_id``, stored per particle).

    Returns
    -------
    model : GrainModel
        The loaded model (with ``orientation_model`` attached or None).
    model_id : str
        ``<format>@v<version>:sha256:<16 hex digits>`` of the grain model's files.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a grain model folder (expected model.json + gnet.safetensors)", folder)
    meta = read_json(folder / MODEL_JSON)
    version = check_format(meta, GRAIN_MODEL_FORMAT, 1, folder / MODEL_JSON)
    px = meta.get("pixel_size_um") if isinstance(meta, dict) else None
    if px is None:
        raise InputError(
            "the grain model has no 'pixel_size_um': its length unit is unknown, so it cannot "
            "be placed in a shell in µm; re-fit it with the EBSD pixel size",
            folder / MODEL_JSON,
        )
    if not isinstance(px, (int, float)) or not np.isfinite(px) or px <= 0:
        raise InputError(f"'pixel_size_um' must be a positive number, got {px!r}", folder / MODEL_JSON)
    m = GrainModel.load(folder)
    files = [folder / MODEL_JSON, folder / meta.get("weights", WEIGHTS)]
    if orientations is not False:
        from nmc_dataset.ebsd._orientation_model import ORIENTATION_MODEL_FILE, OrientationModel

        given = orientations not in (True, "auto")
        opath = Path(orientations) if given else folder / ORIENTATION_MODEL_FILE
        if opath.is_file():
            m.orientation_model = OrientationModel.load(opath)
            log.debug(
                "grain orientations: %s (kappa %.2f, lambda %.2f)",
                opath,
                m.orientation_model.kappa,
                m.orientation_model.lam,
            )
        elif given or orientations is True:
            raise InputError(
                "no orientation model: fit one with `nmc-dataset fit-orientations SECTIONS --out "
                f"{folder / ORIENTATION_MODEL_FILE}`, or export without orientations",
                opath,
            )
        else:
            log.debug(
                "no %s beside the grain model: particles are exported without crystal orientations",
                ORIENTATION_MODEL_FILE,
            )
    return m, f"{GRAIN_MODEL_FORMAT}@v{version}:sha256:{_sha256(files)[:16]}"


def parse_formats(text, where="--formats") -> tuple:
    """Split and check a comma list of export formats; check optional extras they need.

    Parameters
    ----------
    text : str or iterable of str
        Comma-separated list (or sequence) of formats of :data:`FORMATS`.
    where : str, default "--formats"
        Where the list came from, named in error messages.

    Returns
    -------
    tuple of str
        The formats, duplicates removed, in the given order.

    Raises
    ------
    RecipeError
        If the list is empty or holds an unknown format.
    MissingExtraError
        If a format needs an optional package that is not installed (gmsh, damask).
    """
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if not items:
        raise RecipeError(f"no formats given (choose from {', '.join(FORMATS)})", where)
    bad = [t for t in items if t not in FORMATS]
    if bad:
        raise RecipeError(f"unknown format {bad[0]!r} (choose from {', '.join(FORMATS)})", where)
    if "volume-mesh" in items:
        try:
            importlib.import_module("gmsh")  # availability check only
        except ImportError:
            raise MissingExtraError("the 'volume-mesh' format (tet meshes)", "mesh", "gmsh") from None

    check_simulator_formats(items)  # the damask extra, before anything runs
    return tuple(dict.fromkeys(items))


def check_mesh_options(
    formats, *, element_order: int = 1, min_elements_per_grain: int | None = None, where: str = ""
) -> None:
    """Mesh options users give: element order 1 or 2, at least one element per grain."""
    if element_order not in (1, 2):
        raise RecipeError(
            f"element order must be 1 (C3D4) or 2 (C3D10), got {element_order}", where or "--element-order"
        )
    if min_elements_per_grain is not None and int(min_elements_per_grain) < 1:
        raise RecipeError(f"must be >= 1, got {min_elements_per_grain}", where or "--min-elements-per-grain")


def check_orientations_for(formats, grain_model, where="--formats") -> None:
    """Simulator hand-offs need a crystal orientation per grain: an orientation model beside the grain model."""
    wanted = [f for f in formats if f in ("damask", "neper")]
    if wanted and getattr(grain_model, "orientation_model", None) is None:
        raise InputError(
            f"the {', '.join(wanted)} format needs crystal orientations, and the grain model has no "
            "orientation model: fit one with `nmc-dataset fit-orientations SECTIONS --out "
            "GRAIN_MODEL/orientation_model.json`",
            where,
        )


# --------------------------------------------------------------------------- the run
def generate_particles(
    shell_model,
    grain_model,
    *,
    n: int,
    seed: int,
    voxel_size_um: float,
    formats,
    out,
    mesh_size_um: float | None = None,
    max_memory_gib: float | None = None,
    shell_model_id: str = "",
    grain_model_id: str = "",
    smoothing_iterations: int = 8,
    spacing_px: float = 1.0,
    margin_px: float = 8.0,
    first_index: int = 0,
    force: bool = False,
    element_order: int = 1,
    min_elements_per_grain: int | None = None,
) -> dict:
    """Generate ``n`` particles and write the requested exports into ``out`` (atomically).

    A particle that cannot be exported is left out (its files removed) and listed under
    ``failed`` in ``generate.json``; the others are written, then :class:`ExportError` says which
    failed.

    Parameters
    ----------
    shell_model : ShellModel
        Loaded shell model (see :func:`load_shell_model`).
    grain_model : GrainModel
        Loaded grain model (see :func:`load_grain_model`).
    n, seed : int
        Number of particles and the root seed; particle ``i`` uses
        ``particle_seed(seed, first_index + i)``.
    voxel_size_um : float
        Voxel size of the label volumes (and of the surfaces).
    formats : iterable of str
        Subset of ``params, voxels, surface, volume-mesh, damask, neper``.
    out : path-like
        Output folder (a new or empty one, or an earlier generate output; see
        :mod:`nmc_dataset.outputs`).
    mesh_size_um : float, optional
        Target tet size: the conforming surface is coarsened towards it (grain pairs and
        volumes kept; nothing is re-voxelised) and gmsh grades the interior from it.
    max_memory_gib : float, optional
        Memory limit for one volume (default 80 % of free memory).
    shell_model_id, grain_model_id : str, default ""
        Model identifiers stored with each particle (see :func:`load_shell_model`).
    smoothing_iterations : int, default 8
        Surface-nets smoothing iterations of the meshes.
    spacing_px, margin_px : float, default 1.0, 8.0
        Assembly lattice spacing and box margin (pixels) of the centre-of-mass selection.
    first_index : int, default 0
        Index of the first particle (particle ``i`` of this call is ``first_index + i``).
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).
    element_order : {1, 2}
        C3D4 / tetra or C3D10 / tetra10 elements.
    min_elements_per_grain : int, optional
        Keep small grains' surfaces fine enough that each gets at least this many tets.

    Returns
    -------
    dict
        The run record written to ``generate.json``.
    """

    formats = parse_formats(formats)
    n = int(n)
    if n < 1:
        raise RecipeError(f"-n must be >= 1, got {n}", "-n")
    if not (voxel_size_um and voxel_size_um > 0):
        raise RecipeError(f"the voxel size must be > 0 µm, got {voxel_size_um}", "--voxel-size-um")
    if mesh_size_um is not None and not mesh_size_um > 0:
        raise RecipeError(f"the mesh size must be > 0 µm, got {mesh_size_um}", "--mesh-size-um")
    check_mesh_options(formats, element_order=element_order, min_elements_per_grain=min_elements_per_grain)
    check_orientations_for(formats, grain_model)
    # shells first (cheap, from the particles' own shell streams) to check memory up front
    est = []
    for i in range(n):
        ss = _children(particle_seed(seed, first_index + i))[0]
        c = np.asarray(shell_model.sample_coefficients(1, np.random.default_rng(ss))).reshape(-1)
        c = c * float(shell_model.voxel_size_um)
        shape = shell_grid(c, voxel_size_um).shape
        est.append(check_memory(shape, 0, max_memory_gib, where="--voxel-size-um"))
        mean_radius_um = float(c[0]) * 0.28209479177387814  # a_00 Y_00: the mean radius
        if mesh_size_um and "volume-mesh" in formats and mesh_size_um > 2 * mean_radius_um:
            raise RecipeError(
                f"the mesh size {mesh_size_um:g} µm is larger than particle {first_index + i} "
                f"({2 * mean_radius_um:.3g} µm mean diameter); choose a smaller --mesh-size-um",
                "--mesh-size-um",
            )
    out = check_out_name(out)
    claim_folder(out, "generate", force=force, legacy=("generate.json",))
    record = {
        "format": RUN_FORMAT,
        "format_version": 1,
        "n": n,
        "seed": int(seed),
        "first_index": int(first_index),
        "voxel_size_um": float(voxel_size_um),
        "mesh_size_um": None if mesh_size_um is None else float(mesh_size_um),
        "formats": list(formats),
        "shell_model_id": shell_model_id,
        "grain_model_id": grain_model_id,
        "grain_pixel_size_um": float(grain_model.pixel_size_um),
        "assembly_spacing_px": float(spacing_px),
        "assembly_margin_px": float(margin_px),
        "smoothing_iterations": int(smoothing_iterations),
        "peak_volume_estimate_gib": max(est) / 2**30,
        "element_order": int(element_order),
        "particles": [],
    }
    with output_folder(out, "generate", force=force, legacy=("generate.json",)) as tmp, contextlib.ExitStack() as stack:
        voxels = None
        if "voxels" in formats:
            from nmc_dataset.export._hdf5 import VoxelsWriter

            voxels = stack.enter_context(VoxelsWriter(tmp / "voxels.h5"))
        if "surface" in formats or "volume-mesh" in formats:
            for sub in MESH_DIRS:
                (tmp / sub).mkdir()
        results, failures = export_particles(
            range(first_index, first_index + n),
            mesh_folder=tmp,
            progress=lambda ids: progress(ids, total=n, desc="particles", unit="particle"),
            shell_model=shell_model,
            grain_model=grain_model,
            seed=seed,
            voxel_size_um=voxel_size_um,
            formats=formats,
            voxels=voxels,
            mesh_size_um=mesh_size_um,
            smoothing_iterations=smoothing_iterations,
            spacing_px=spacing_px,
            margin_px=margin_px,
            max_memory_gib=max_memory_gib,
            shell_model_id=shell_model_id,
            grain_model_id=grain_model_id,
            element_order=element_order,
            min_elements_per_grain=min_elements_per_grain,
        )
        stack.close()  # the HDF5 file (and its XDMF) are complete before the folder is renamed
        for sub in MESH_DIRS:
            if (tmp / sub).is_dir() and not any((tmp / sub).iterdir()):
                (tmp / sub).rmdir()
        om = getattr(grain_model, "orientation_model", None)
        record["orientation_model_id"] = getattr(om, "model_id", "") if om is not None else ""
        record["particles"] = [r.entry for r in results]
        record["failed"] = [f.as_dict() for f in failures]
        records = [r.record for r in results if r.record is not None]
        if records:
            tables.write_params(tmp, *tables.params_tables(records))
        write_json_atomic(tmp / "generate.json", record)
    if failures:
        ids = ", ".join(str(f.particle_id) for f in failures[:5]) + (", ..." if len(failures) > 5 else "")
        raise ExportError(
            f"{len(failures)} of {n} particles could not be exported (id {ids}: "
            f"{failures[0].error}); the other {n - len(failures)} are written and "
            "generate.json lists the failures",
            out,
        )
    return record


def write_particle_meshes(
    part,
    vol,
    folder: Path,
    formats,
    mesh_size_um,
    smoothing,
    max_memory_gib=None,
    *,
    element_order: int = 1,
    min_elements_per_grain: int | None = None,
    provenance: dict | None = None,
) -> dict:
    """Write a particle's surface meshes (``"surface"`` in formats) and tet meshes (``"volume-mesh"``).

    The tet mesh is made from the same conforming surface as the surface files (no
    re-voxelising): with ``mesh_size_um`` that surface is first coarsened by constrained vertex
    clustering (:func:`nmc_dataset.export._decimate.coarsen_surface`) and then by constrained edge
    collapses (:func:`nmc_dataset.export._collapse.decimate_surface`), both keeping the grains, the
    grain pairs and the grain volumes (within a few % of the voxel volumes), and gmsh grades the
    interior from it.

    Parameters
    ----------
    part : Particle
        Its ``orientations_wxyz`` (``(n_grains, 4)`` unit quaternions, or None), when present,
        go into the tet meshes.
    vol : VoxelVolume
        The particle's label volume (meshes are made from a cleaned copy).
    folder : Path
        Receives ``surfaces/`` and ``volume_meshes/``.
    formats : collection of str
    mesh_size_um : float or None
        Target tet edge length (µm); None: the surface as it is (voxel-sized triangles).
    smoothing : int
        Surface-nets smoothing iterations.
    max_memory_gib : float or None
        Unused (kept for callers; the tet mesh no longer needs a second volume).
    element_order : {1, 2}
        Linear (C3D4) or quadratic (C3D10) tets.
    min_elements_per_grain : int, optional
        Make small grains finer so that each gets about this many tets.
    provenance : dict, optional
        Extra provenance for the mesh files (the particle id, model ids, voxel and mesh size are
        added here).

    Returns
    -------
    dict
        Mesh statistics recorded in ``generate.json``: clean-up voxels, tets, grains meshed,
        grain pairs kept, largest and median relative grain volume error of the tet mesh
        against the voxel volumes (the volumes of ``grains.parquet``).

    Raises
    ------
    RecipeError
        For an element order other than 1 or 2, or a mesh size larger than the particle.
    """

    if element_order not in (1, 2):
        raise RecipeError(f"must be 1 (linear tets) or 2 (quadratic tets), got {element_order!r}", "--element-order")
    stem = f"particle_{part.particle_id:06d}"
    info = {}
    lab, changed = meshes.clean_labels(vol.labels)
    info["mesh_cleanup_voxels"] = int(changed)
    if "volume-mesh" in formats and mesh_size_um:
        inside = np.argwhere(lab > 0)
        extent = float((inside.max(axis=0) - inside.min(axis=0) + 1).max() * vol.voxel_size_um) if len(inside) else 0.0
        if mesh_size_um > extent:
            raise RecipeError(
                f"the mesh size {mesh_size_um} µm is larger than particle {part.particle_id} ({extent:.3g} µm across)",
                "--mesh-size-um",
            )
    surf = meshes.grain_surface_mesh(lab, vol.origin_um, vol.voxel_size_um, part.n_grains, smoothing)
    if "surface" in formats:
        (folder / "surfaces").mkdir(exist_ok=True)
        shell = meshes.shell_surface_mesh(part.coeffs_um)
        meshes.write_surfaces(folder / "surfaces", stem, surf, shell)
    if "volume-mesh" in formats:
        tm, tsurf = _tet_with_fallback(
            surf, lab, vol, part.n_grains, mesh_size_um, smoothing, min_elements_per_grain=min_elements_per_grain
        )
        prov = {
            "particle_id": int(part.particle_id),
            "shell_model_id": getattr(part, "shell_model_id", ""),
            "grain_model_id": getattr(part, "grain_model_id", ""),
            "voxel_size_um": float(vol.voxel_size_um),
            "mesh_size_um": None if mesh_size_um is None else float(mesh_size_um),
            **(provenance or {}),
        }
        orientations = getattr(part, "orientations_wxyz", None)
        meshes.write_tet_mesh(
            tm, folder / "volume_meshes", stem, order=element_order, orientations=orientations, provenance=prov
        )
        vox = np.bincount(vol.labels.ravel(), minlength=part.n_grains + 1)[1 : part.n_grains + 1] * vol.voxel_size_um**3
        tv = tm.grain_volumes(part.n_grains)
        present = vox > 0
        rel = np.abs(tv[present] / vox[present] - 1) if present.any() else np.zeros(1)
        info["tets"] = len(tm.tets)
        info["tet_grains"] = len(np.unique(tm.grain))
        info["element_order"] = int(element_order)
        stats = getattr(tsurf, "stats", None) or {}
        info["grain_pairs"] = int(stats.get("pairs_after", len(np.unique(np.sort(tsurf.pairs, axis=1), axis=0))))
        info["grain_pairs_fine_surface"] = int(stats.get("pairs_before", info["grain_pairs"]))
        info["tet_volume_error_max"] = float(rel.max())
        info["tet_volume_error_median"] = float(np.median(rel))
        info["min_tets_per_grain"] = (
            int(np.bincount(tm.grain, minlength=part.n_grains + 1)[1:][present].min()) if present.any() else 0
        )
        info["orientations"] = orientations is not None
    return info


def _tet_with_fallback(surf, labels, vol, n, mesh_size_um, smoothing, min_elements_per_grain=None):
    """Coarsen (with ``mesh_size_um``) and tet-mesh the smoothed surface, kept fine where gmsh
    finds the coarse boundary intersecting itself; if gmsh still fails, the unsmoothed surface,
    then the uncoarsened one.

    Returns ``(TetMesh, the surface meshed)``."""

    def attempt(s):
        if mesh_size_um:
            return tet_mesh_coarsened(s, mesh_size_um, min_elements_per_grain)
        return meshes.tet_mesh(s, mesh_size_um), s

    try:
        return attempt(surf)
    except RuntimeError as e:
        log.warning("tet meshing of the smoothed surface failed (%s); retrying without smoothing", e)
    s0 = surf if smoothing == 0 else meshes.grain_surface_mesh(labels, vol.origin_um, vol.voxel_size_um, n, 0)
    if smoothing:
        try:
            return attempt(s0)
        except RuntimeError as e:
            if not mesh_size_um:
                raise
            log.warning("tet meshing of the coarsened surface failed (%s); meshing the voxel-sized one", e)
    return meshes.tet_mesh(s0, mesh_size_um), s0


# --------------------------------------------------------------------------- CLI


__all__ = ["generate_particles", "load_shell_model", "load_grain_model", "parse_formats", "FORMATS"]
