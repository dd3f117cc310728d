"""Shared fixtures of the particle and export tests: real (small) models and particles.

The shell model is ``synthetic.ct_phantom.reference_shell_model`` (known per-degree laws) at a
mean radius of ~0.9 µm; the grain model is a real ``GrainModel`` whose G_net has seeded,
untrained weights (markers within the generator's bounds) at the paper's intensity 0.0018 px⁻³ and a
0.05 µm pixel: ~60-100 grains per particle, so the tests run in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from nmc_dataset.cli import _main as cli

N_GEN = 2
SEED = 5
VOXEL = 0.05
MESH = 0.1


def write_models(folder):
    import torch

    from nmc_dataset.calibration._generator import GNet
    from nmc_dataset.calibration._model import GrainModel
    from nmc_dataset.synthetic._ct_phantom import reference_shell_model

    folder.mkdir(parents=True, exist_ok=True)
    shell = reference_shell_model(mean_radius_vox=7.0, voxel_size_um=0.128)
    shell.write(folder / "shell.json")
    torch.manual_seed(0)
    GrainModel(gnet=GNet(hidden=(16, 16)), intensity_per_px3=0.0018, pixel_size_um=0.05).write(folder / "grain")
    return folder / "shell.json", folder / "grain"


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory):
    """``(shell_model.json, grain_model/)`` written with the package's own writers."""
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def models(model_paths):
    """The loaded ``(ShellModel, GrainModel)``."""
    from nmc_dataset.pipeline._generate import load_grain_model, load_shell_model

    return load_shell_model(model_paths[0])[0], load_grain_model(model_paths[1])[0]


@pytest.fixture(scope="session")
def generated(model_paths, tmp_path_factory):
    """An ``nmc-dataset generate`` run with every format (via the CLI), tet meshes coarsened to 0.1 µm."""
    out = tmp_path_factory.mktemp("gen") / "particles"
    code = cli.main(
        [
            "generate",
            "--shell-model",
            str(model_paths[0]),
            "--grain-model",
            str(model_paths[1]),
            "-n",
            str(N_GEN),
            "--seed",
            str(SEED),
            "--voxel-size-um",
            str(VOXEL),
            "--formats",
            "params,voxels,surface,volume-mesh",
            "--mesh-size-um",
            str(MESH),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


#: Texture of the oriented fixtures (c-axis perpendicular to the radial direction, an a-axis radial).
ORIENTED_KAPPA, ORIENTED_LAMBDA = -8.0, 2.0


@pytest.fixture(scope="session")
def oriented_model_paths(model_paths, tmp_path_factory):
    """``(shell_model.json, grain_model/)`` where the grain model has an ``orientation_model.json``."""
    import shutil

    from nmc_dataset.ebsd._orientation_model import OrientationModel

    grain = tmp_path_factory.mktemp("oriented") / "grain"
    shutil.copytree(model_paths[1], grain)
    OrientationModel(ORIENTED_KAPPA, ORIENTED_LAMBDA).save(grain / "orientation_model.json")
    return model_paths[0], grain


@pytest.fixture(scope="session")
def oriented_generated(oriented_model_paths, tmp_path_factory):
    """``nmc-dataset generate`` (params, voxels) with the oriented grain model, same seed as ``generated``."""
    out = tmp_path_factory.mktemp("gen_oriented") / "particles"
    code = cli.main(
        [
            "generate",
            "--shell-model",
            str(oriented_model_paths[0]),
            "--grain-model",
            str(oriented_model_paths[1]),
            "-n",
            str(N_GEN),
            "--seed",
            str(SEED),
            "--voxel-size-um",
            str(VOXEL),
            "--formats",
            "params,voxels",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def teacher_particle(seed=1, radius_um=1.0, l_scale=0.03, voxel_pixel_um=0.05):
    """A particle assembled from a chosen SH shell and the radially elongated teacher GBPD."""
    from nmc_dataset.particles._assemble import assemble
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd

    rng = np.random.default_rng(seed)
    c = np.zeros(100)
    c[0] = radius_um * np.sqrt(4 * np.pi)
    l = np.floor(np.sqrt(np.arange(100)))
    c[1:] = rng.normal(0, 1, 99) * l_scale * radius_um / np.maximum(l[1:], 1) ** 1.5
    g = radial_teacher_gbpd(rng, radius_px=radius_um * 1.1 / voxel_pixel_um, margin_px=10)
    return assemble(c, g, voxel_pixel_um, particle_id=seed)
