"""Hand-offs to crystal-plasticity / polycrystal simulators: DAMASK grids and Neper-style orientations.

Two export formats of a particle drawn with crystal orientations
(:attr:`~nmc_dataset.particles._assemble.Particle.orientations_wxyz`):

``damask`` (needs the optional extra ``pip install 'nmc-dataset[damask]'``, AGPL-3.0 licensed)
    ``simulators/particle_<id>.vti``: a DAMASK ``GeomGrid`` (VTK ImageData, written by the
    ``damask`` package) whose cell data ``material`` is the particle's voxel label (0 =
    outside the particle, k = grain k); size and origin in metres, as DAMASK expects (voxel
    ``[k, j, i]`` of ``voxels.h5`` is cell ``(i, j, k)``).
    ``simulators/particle_<id>_material.yaml``: a DAMASK ``ConfigMaterial`` with one material
    per label, in label order: material 0 is the surrounding medium (phase ``Void``), material
    k the grain k (phase ``NMC811``, one constituent, its orientation ``O`` as DAMASK's
    quaternion of the passive rotation particle frame → crystal frame, made by
    ``damask.Rotation.from_Euler_angles`` from the Bunge angles of ``grains.parquet``) and
    homogenization ``SX``. The phases carry the lattice (NMC811: ``hP`` with the R-3m
    hexagonal-setting ``c/a`` = 14.248 / 2.875) and an elastic ``Hooke`` stub *without
    constants*: the elastic constants of NMC811 and of the medium around the particle are the
    user's choice (the file's header comment says so); DAMASK refuses to run until they are set.

``neper``
    ``simulators/particle_<id>.ori``: plain text, line k = grain label k, three Bunge Euler
    angles ``φ1 Φ φ2`` in degrees (``%.9f``) of the passive rotation particle frame → crystal
    frame: what Neper reads with ``-ori "file(particle_<id>.ori)"`` as the descriptor
    ``euler-bunge`` in the ``passive`` convention, crystal symmetry hexagonal (-3m is not one of
    Neper's orientation symmetries; ``-oricrysym hexagonal`` covers it). No header: Neper's
    ``file()`` reads numbers only.

Both are written beside the other exports by :func:`write_simulator_files`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nmc_dataset import __version__
from nmc_dataset._util import atomic_path, write_text_atomic
from nmc_dataset.ebsd._orientation_model import orientation_columns
from nmc_dataset.errors import InputError, MissingExtraError

SIMULATOR_FORMATS = ("damask", "neper")
#: Lattice of NMC811 (R-3m, hexagonal setting: a = 2.875 Å, c = 14.248 Å).
NMC811_C_OVER_A = 14.248 / 2.875


def check_simulator_formats(formats) -> tuple:
    """The simulator formats among ``formats``; ``MissingExtraError`` if ``damask`` is asked for
    without the ``damask`` package.

    Parameters
    ----------
    formats : iterable of str
        Requested export formats (others than the simulator ones are ignored).

    Returns
    -------
    tuple of str
        The requested formats of :data:`SIMULATOR_FORMATS`, in request order.
    """
    chosen = tuple(f for f in formats if f in SIMULATOR_FORMATS)
    if "damask" in chosen:
        _damask()
    return chosen


def _damask():
    try:
        return importlib.import_module("damask")
    except ImportError:
        raise MissingExtraError("the 'damask' format (DAMASK grid + material.yaml)", "damask", "damask") from None


def _orientations(particle, what: str) -> np.ndarray:
    q = getattr(particle, "orientations_wxyz", None)
    if q is None:
        raise InputError(
            f"the {what} format needs crystal orientations, and particle {particle.particle_id} has "
            "none: fit them with `nmc-dataset fit-orientations SECTIONS --out GRAIN_MODEL/` (the "
            "grain model folder) and generate again"
        )
    return np.asarray(q, dtype=np.float64).reshape(-1, 4)


def _stem(particle_id: int) -> str:
    return f"particle_{int(particle_id):06d}"


def write_neper_orientations(particle, folder) -> Path:
    """Write ``particle_<id>.ori`` (Bunge degrees, passive, line k = label k) into ``folder``."""

    q = _orientations(particle, "neper")
    euler_deg = np.degrees(orientation_columns(q)["euler_bunge_rad"])
    path = Path(folder) / f"{_stem(particle.particle_id)}.ori"
    text = "".join(f"{a:.9f} {b:.9f} {c:.9f}\n" for a, b, c in euler_deg)
    write_text_atomic(path, text)
    return path


def damask_material_config(
    euler_bunge_rad: np.ndarray, *, nmc_phase: dict | None = None, void_phase: dict | None = None
):
    """DAMASK ``ConfigMaterial``: material 0 = the medium around the particle, material k = grain k.

    Parameters
    ----------
    euler_bunge_rad : (n, 3) array
        Bunge angles (passive, particle frame → crystal frame) of grains 1..n.
    nmc_phase, void_phase : dict, optional
        DAMASK phase definitions (default: lattice + an elastic ``Hooke`` stub without constants).
    """
    damask = _damask()
    n = len(euler_bunge_rad)
    rot = damask.Rotation.from_Euler_angles(np.asarray(euler_bunge_rad, dtype=np.float64).reshape(n, 3))
    nmc = nmc_phase or {
        "lattice": "hP",
        "c/a": float(NMC811_C_OVER_A),
        "mechanical": {"output": ["F", "P"], "elastic": {"type": "Hooke"}},
    }
    void = void_phase or {"lattice": "cF", "mechanical": {"output": ["F", "P"], "elastic": {"type": "Hooke"}}}
    cm = damask.ConfigMaterial(
        homogenization={"SX": {"N_constituents": 1, "mechanical": {"type": "pass"}}},
        phase={"Void": void, "NMC811": nmc},
    )
    o = np.vstack([[1.0, 0.0, 0.0, 0.0], rot.as_quaternion().reshape(n, 4)])
    return cm.material_add(phase=["Void"] + ["NMC811"] * n, O=o, homogenization="SX")


def write_damask(particle, volume, folder) -> tuple[Path, Path]:
    """Write ``particle_<id>.vti`` and ``particle_<id>_material.yaml`` (DAMASK) into ``folder``.

    Parameters
    ----------
    particle : Particle
        With ``orientations_wxyz``.
    volume : VoxelVolume
        Its label volume (the grid's materials).

    Returns
    -------
    (Path, Path)
        The grid and the material configuration.
    """

    damask = _damask()
    q = _orientations(particle, "damask")
    labels = np.asarray(volume.labels)
    if len(q) != particle.n_grains or (labels.size and int(labels.max()) > len(q)):
        raise ValueError("the volume's labels do not match the particle's grains")
    h = float(volume.voxel_size_um)
    cells = np.array(labels.shape[::-1])  # (nx, ny, nz)
    corner_um = np.asarray(volume.origin_um, dtype=np.float64) - 0.5 * h
    comments = [
        (
            f"nmc-dataset {__version__}: particle {particle.particle_id}, {particle.n_grains} grains, "
            f"voxel {h:g} um; material 0 = outside the particle, material k = grain k (grains.parquet label k)"
        ),
        (
            f"shell model {particle.shell_model_id}; grain model {particle.grain_model_id}; "
            f"orientation model {getattr(particle, 'orientation_model_id', '')}"
        ),
    ]
    grid = damask.GeomGrid(
        material=np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.int64),
        size=cells * h * 1e-6,
        origin=corner_um * 1e-6,
        comments=comments,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(particle.particle_id)
    vti = folder / f"{stem}.vti"
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".part", dir=folder))
    try:  # damask appends .vti to any other suffix: save under the final name in a private folder
        grid.save(tmpdir / vti.name)
        os.replace(tmpdir / vti.name, vti)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    cm = damask_material_config(orientation_columns(q)["euler_bunge_rad"])
    yaml_path = folder / f"{stem}_material.yaml"
    header = (
        "# DAMASK material configuration written by nmc-dataset " + __version__ + "\n"
        f"# particle {particle.particle_id}: material 0 = medium around the particle (phase Void), "
        "material k = grain k (phase NMC811)\n"
        "# O: DAMASK quaternion (passive, particle frame -> crystal frame, x || a1, z || c)\n"
        "# Set the elastic constants of phase/NMC811/mechanical/elastic and phase/Void/mechanical/elastic "
        "(and any plasticity) before running DAMASK: nmc-dataset does not choose them.\n"
    )
    with atomic_path(yaml_path) as tmp:
        cm.save(tmp)
        tmp.write_text(header + tmp.read_text())
    return vti, yaml_path


def write_simulator_files(particle, volume, folder, formats) -> dict:
    """Write the simulator hand-offs of ``formats`` (``damask``, ``neper``) into ``folder/simulators``.

    Parameters
    ----------
    particle : Particle
        The particle (orientations per grain).
    volume : VoxelVolume
        Its label volume.
    folder : path-like
        The particle's output folder; files go into its ``simulators`` sub-folder (created).
    formats : iterable of str
        Requested export formats; only the simulator ones are written.

    Returns
    -------
    dict
        File names written (for the run record).
    """
    chosen = check_simulator_formats(formats)
    out = {}
    if not chosen:
        return out
    sub = Path(folder) / "simulators"
    sub.mkdir(parents=True, exist_ok=True)
    if "damask" in chosen:
        vti, yml = write_damask(particle, volume, sub)
        out["damask"] = [f"simulators/{vti.name}", f"simulators/{yml.name}"]
    if "neper" in chosen:
        out["neper"] = [f"simulators/{write_neper_orientations(particle, sub).name}"]
    return out


__all__ = [
    "NMC811_C_OVER_A",
    "SIMULATOR_FORMATS",
    "check_simulator_formats",
    "damask_material_config",
    "write_damask",
    "write_neper_orientations",
    "write_simulator_files",
]
