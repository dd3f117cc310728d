import pytest  # noqa: E402

from tests.particles.fixtures import model_paths, models, oriented_model_paths  # noqa: F401


@pytest.fixture(scope="session")
def oriented_electrode(oriented_model_paths, tmp_path_factory):  # noqa: F811
    """A 64³ electrode (0.05 µm voxels) packed through the CLI with per-grain crystal orientations."""
    from nmc_dataset.cli import _main as cli

    out = tmp_path_factory.mktemp("oriented_electrode") / "electrode.h5"
    shell, grain = oriented_model_paths
    assert (
        cli.main(
            [
                "pack",
                "--shell-model",
                str(shell),
                "--grain-model",
                str(grain),
                "--box-um",
                "3.2",
                "--voxel-size-um",
                "0.05",
                "--solid-fraction",
                "0.45",
                "--seed",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out
