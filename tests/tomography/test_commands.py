"""``pack`` and ``render-ct`` through the CLI: files, attributes, refusals and one-line errors."""

import h5py
import numpy as np
import pytest

from nmc_dataset.cli import _main as cli
from nmc_dataset.tomography._volumes import read_table, read_volumes


@pytest.fixture(scope="module")
def packed(model_paths, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "electrode.h5"
    code = cli.main(
        [
            "pack",
            "--shell-model",
            str(model_paths[0]),
            "--grain-model",
            str(model_paths[1]),
            "--box-um",
            "4",
            "--solid-fraction",
            "0.45",
            "--binder",
            "bridge:0.08",
            "--electrolyte",
            "solid",
            "--voxel-size-um",
            "0.1",
            "--seed",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_pack_writes_labels_table_and_parameters(packed):
    arrays, meta = read_volumes(packed)
    assert meta["kind"] == "electrode" and meta["voxel_size_um"] == pytest.approx(0.1)
    assert arrays["phase"].shape == (40, 40, 40) and set(np.unique(arrays["phase"])) == {0, 1, 2}
    assert meta["packing"]["electrolyte"] == "solid" and meta["electrolyte"] == "solid"
    p = meta["packing"]  # 10 particles: the fraction moves in steps of ~0.03
    assert abs(p["solid_fraction"] - p["analytic_fraction"]) < 0.005 and abs(p["solid_fraction"] - 0.45) < 0.03
    t = read_table(packed, "particles")
    assert t["coeffs_um"].shape == (len(t["id"]), 100) and t["center_um"].shape == (len(t["id"]), 3)


def test_same_command_same_bytes(packed, model_paths, tmp_path):
    again = tmp_path / "again.h5"
    assert (
        cli.main(
            [
                "pack",
                "--shell-model",
                str(model_paths[0]),
                "--grain-model",
                str(model_paths[1]),
                "--box-um",
                "4",
                "--solid-fraction",
                "0.45",
                "--binder",
                "bridge:0.08",
                "--electrolyte",
                "solid",
                "--voxel-size-um",
                "0.1",
                "--seed",
                "4",
                "--out",
                str(again),
            ]
        )
        == 0
    )
    a, b = read_volumes(packed)[0], read_volumes(again)[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_render_ct_writes_grey_values_labels_and_imaging(packed, tmp_path):
    out = tmp_path / "ct.h5"
    assert (
        cli.main(
            [
                "render-ct",
                str(packed),
                "--preset",
                "synchrotron",
                "--binning",
                "2",
                "--photons",
                "5000",
                "--seed",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    arrays, meta = read_volumes(out)
    assert arrays["ct"].shape == (20, 20, 20) and arrays["phase"].shape == (20, 20, 20)
    im = meta["imaging"]
    assert im["preset"] == "synchrotron" and im["photons"] == 5000 and im["binning"] == 2
    assert im["electrolyte"] == "solid" and im["materials"]["0"]["name"].startswith("Li6PS5Cl")
    ct, ph = arrays["ct"], arrays["phase"]
    assert ct[ph == 1].mean() > ct[ph == 0].mean()  # NMC brighter than the electrolyte
    assert np.array_equal(arrays["particle"] > 0, ph == 1)
    # refuses to overwrite, and --force replaces only a CT file
    assert cli.main(["render-ct", str(packed), "--out", str(out)]) == 2
    assert (
        cli.main(
            [
                "render-ct",
                str(packed),
                "--preset",
                "synchrotron",
                "--binning",
                "2",
                "--photons",
                "5000",
                "--seed",
                "5",
                "--out",
                str(out),
                "--force",
            ]
        )
        == 0
    )
    assert np.array_equal(read_volumes(out)[0]["ct"], ct)  # same inputs + seed -> same volume
    assert cli.main(["render-ct", str(packed), "--binning", "2", "--out", str(packed), "--force"]) == 2


def test_bad_input_gets_one_line_errors(packed, model_paths, tmp_path, capsys):
    cases = [
        (["render-ct", str(packed), "--preset", "medical", "--out", str(tmp_path / "a.h5")], "unknown preset"),
        (["render-ct", str(packed), "--photons", "0", "--out", str(tmp_path / "a.h5")], "photon count"),
        (["render-ct", str(packed), "--voxel-size-um", "0.8", "--out", str(tmp_path / "a.h5")], "too coarse"),
        (["render-ct", str(packed), "--voxel-size-um", "0.15", "--out", str(tmp_path / "a.h5")], "whole multiple"),
        (["render-ct", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "a.h5")], "not found"),
        (
            [
                "pack",
                "--shell-model",
                str(model_paths[0]),
                "--grain-model",
                str(model_paths[1]),
                "--box-um",
                "4.5",
                "--solid-fraction",
                "0.8",
                "--binder",
                "none",
                "--out",
                str(tmp_path / "b.h5"),
            ],
            "maximum reached",
        ),
        (
            [
                "pack",
                "--shell-model",
                str(tmp_path / "nope.json"),
                "--grain-model",
                str(model_paths[1]),
                "--box-um",
                "3",
                "--out",
                str(tmp_path / "b.h5"),
            ],
            "not found",
        ),
        (
            [
                "pack",
                "--shell-model",
                str(model_paths[0]),
                "--grain-model",
                str(model_paths[1]),
                "--box-um",
                "3",
                "--binder",
                "glue:0.1",
                "--out",
                str(tmp_path / "b.h5"),
            ],
            "binder mode",
        ),
        (
            [
                "pack",
                "--shell-model",
                str(model_paths[0]),
                "--grain-model",
                str(model_paths[1]),
                "--box-um",
                "2",
                "--out",
                str(tmp_path / "b.h5"),
            ],
            "too small for the largest particle",
        ),
    ]
    for argv, msg in cases:
        assert cli.main(argv) == 2, argv
        err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("pack: ")]
        assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], (argv, err)
    foreign = tmp_path / "user.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    assert cli.main(["render-ct", str(packed), "--out", str(foreign), "--force"]) == 2
    assert "not written by this command" in capsys.readouterr().err
    assert "x" in h5py.File(foreign, "r")
