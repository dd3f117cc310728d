"""Simulator hand-offs: DAMASK grid + material.yaml read back by damask itself; Neper-style orientations."""

import sys

import numpy as np
import pytest

from nmc_dataset.ebsd._orientation import euler_to_matrix
from nmc_dataset.ebsd._orientation_model import orientation_columns
from nmc_dataset.errors import InputError, MissingExtraError
from nmc_dataset.export._simulators import check_simulator_formats, write_neper_orientations, write_simulator_files
from nmc_dataset.export._tables import read_particles
from nmc_dataset.particles._voxelize import voxelize
from tests.particles.fixtures import VOXEL

try:
    import damask
except ImportError:  # the optional [damask] extra
    damask = None


@pytest.fixture(scope="module")
def oriented_particle(oriented_generated):
    p = read_particles(oriented_generated)[0]
    return p, voxelize(p, VOXEL)


@pytest.mark.skipif(damask is None, reason="damask is not installed (pip install damask)")
def test_damask_reads_the_grid_and_material_back(oriented_particle, tmp_path):
    from scipy.spatial.transform import Rotation

    p, vol = oriented_particle
    files = write_simulator_files(p, vol, tmp_path, ["params", "damask"])
    assert files == {"damask": ["simulators/particle_000000.vti", "simulators/particle_000000_material.yaml"]}
    grid = damask.GeomGrid.load(tmp_path / files["damask"][0])
    # material id = voxel label; DAMASK's cells are (x, y, z), ours (z, y, x)
    np.testing.assert_array_equal(grid.material, vol.labels.transpose(2, 1, 0))
    np.testing.assert_allclose(grid.size, np.array(vol.labels.shape[::-1]) * VOXEL * 1e-6)
    np.testing.assert_allclose(grid.origin, (vol.origin_um - 0.5 * VOXEL) * 1e-6)
    cm = damask.ConfigMaterial.load(tmp_path / files["damask"][1])
    assert cm.is_complete and cm.is_valid
    assert len(cm["material"]) == p.n_grains + 1
    assert cm["material"][0]["constituents"][0]["phase"] == "Void"
    assert {m["constituents"][0]["phase"] for m in cm["material"][1:]} == {"NMC811"}
    o = np.array([m["constituents"][0]["O"] for m in cm["material"][1:]])
    # DAMASK's passive matrix of grain k is g = R(q)^T, the particle -> crystal rotation of grains.parquet
    g_damask = damask.Rotation.from_quaternion(o).as_matrix()
    g_ours = Rotation.from_quat(p.orientations_wxyz, scalar_first=True).inv().as_matrix()
    np.testing.assert_allclose(g_damask, g_ours, atol=1e-9)
    np.testing.assert_allclose(
        damask.Rotation.from_quaternion(o).as_Euler_angles(),
        orientation_columns(p.orientations_wxyz)["euler_bunge_rad"],
        atol=1e-6,
    )
    text = (tmp_path / files["damask"][1]).read_text()
    assert text.startswith("# DAMASK material configuration written by nmc-dataset")


def test_neper_orientation_file(oriented_particle, tmp_path):
    p, vol = oriented_particle
    path = write_neper_orientations(p, tmp_path)
    rows = np.loadtxt(path)
    assert rows.shape == (p.n_grains, 3)
    g = euler_to_matrix(np.radians(rows))  # line k = label k: Bunge, passive, degrees
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(
        g, Rotation.from_quat(p.orientations_wxyz, scalar_first=True).inv().as_matrix(), atol=1e-8
    )
    assert write_simulator_files(p, vol, tmp_path, ["neper"]) == {"neper": ["simulators/particle_000000.ori"]}


def test_particles_without_orientations_and_missing_extra_are_clear_errors(oriented_particle, tmp_path, monkeypatch):
    import dataclasses

    p = dataclasses.replace(oriented_particle[0], orientations_wxyz=None)  # drawn without an orientation model
    with pytest.raises(InputError, match="fit-orientations"):
        write_neper_orientations(p, tmp_path)
    with pytest.raises(InputError, match="needs crystal orientations"):
        write_simulator_files(p, voxelize(p, VOXEL), tmp_path, ["neper"])
    assert check_simulator_formats(["params", "voxels"]) == ()
    monkeypatch.setitem(sys.modules, "damask", None)  # as if the [damask] extra were not installed
    hint = r'pip install damask \(or, in a clone of nmc-dataset, pip install -e "\.\[damask\]"\)'
    with pytest.raises(MissingExtraError, match=hint):
        check_simulator_formats(["damask"])
