"""phantom-ct / phantom-ebsd: the files they write open with the tool's own readers and match their truth."""

import numpy as np
import pytest
import tifffile

from nmc_dataset.cli._main import main
from nmc_dataset.io._ct import read_volume
from nmc_dataset.io._ebsd import read_ebsd


def test_phantom_ct_writes_a_readable_volume_and_its_truth(tmp_path, capsys):
    out = tmp_path / "ct.tif"
    assert (
        main(
            [
                "phantom-ct",
                "--out",
                str(out),
                "--size",
                "48",
                "--n-particles",
                "4",
                "--mean-radius-vox",
                "6",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    vol = np.asarray(read_volume(out))
    labels = tifffile.imread(tmp_path / "ct.labels.tif")
    assert vol.shape == labels.shape == (48, 48, 48)
    assert len(np.unique(labels)) == 5  # background + 4 particles
    # grey values are brighter inside particles than outside (rendered, not random)
    assert vol[labels > 0].mean() > vol[labels == 0].mean() + 0.3 * vol.std()


def test_phantom_ebsd_writes_scans_that_import(tmp_path):
    out = tmp_path / "scans"
    assert (
        main(
            [
                "phantom-ebsd",
                "--out",
                str(out),
                "--n-central",
                "1",
                "--n-off-center",
                "1",
                "--radius-px",
                "20",
                "--formats",
                "ang,ctf",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    scans = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    assert scans == ["synthetic_00.ang", "synthetic_01.ctf"]
    scan = read_ebsd(out / "synthetic_00.ang")
    truth = tifffile.imread(out / "truth" / "synthetic_00.tif")
    assert scan.indexed.shape == truth.shape and scan.indexed[truth > 0].mean() > 0.9


def test_phantom_ebsd_ideal_instrument_indexes_every_pixel_confidently(tmp_path):
    out = tmp_path / "scans"
    assert (
        main(
            [
                "phantom-ebsd",
                "--out",
                str(out),
                "--n-central",
                "1",
                "--n-off-center",
                "0",
                "--radius-px",
                "20",
                "--low-ci",
                "0,0,0",
                "--noise-deg",
                "0",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    scan = read_ebsd(out / "synthetic_00.ang")
    truth = tifffile.imread(out / "truth" / "synthetic_00.tif")
    inside = truth > 0
    assert scan.indexed[inside].all() and (scan.ci[inside] >= 0.2).all()
    # with the default instrument, junction pixels lose their CI
    out2 = tmp_path / "scans2"
    assert (
        main(
            [
                "phantom-ebsd",
                "--out",
                str(out2),
                "--n-central",
                "1",
                "--n-off-center",
                "0",
                "--radius-px",
                "20",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert (read_ebsd(out2 / "synthetic_00.ang").ci[inside] < 0.1).mean() > 0.02


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["phantom-ct", "--out", "{d}/v.xyz"], "v.xyz: unsupported volume suffix"),
        (["phantom-ct", "--out", "{d}/v.tif", "--n-particles", "0"], "--n-particles >= 1"),
        (["phantom-ebsd", "--out", "{d}/s", "--formats", "png"], "--formats"),
        (["phantom-ebsd", "--out", "{d}/s", "--n-central", "0", "--n-off-center", "0"], "must be >= 1"),
        (["phantom-ebsd", "--out", "{d}/s", "--low-ci", "0.5,0.1"], "--low-ci"),
        (["phantom-ebsd", "--out", "{d}/s", "--low-ci", "0.5,x,0"], "--low-ci"),
        (["phantom-ebsd", "--out", "{d}/s", "--low-ci", "2,0,0"], "--low-ci"),
        (["phantom-ebsd", "--out", "{d}/s", "--noise-deg", "-1"], "--noise-deg"),
    ],
)
def test_phantom_bad_options_exit_2_and_write_nothing(tmp_path, capsys, argv, needle):
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert list(tmp_path.iterdir()) == []
