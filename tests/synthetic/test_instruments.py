"""Instrument presets of phantom-ebsd: what each one does to a scan, and the CLI option."""

import json

import numpy as np
import pytest

from nmc_dataset.cli._main import main
from nmc_dataset.ebsd._orientation import euler_to_quat, misorientation_angle, symmetry_ops
from nmc_dataset.synthetic._ebsd import (
    INSTRUMENTS,
    LOW_CI_DEFAULT,
    boundary_counts,
    radial_teacher_gbpd,
    slice_labels,
    synthetic_scan,
)


def _section(seed=0, radius=30.0):
    rng = np.random.default_rng(seed)
    g = radial_teacher_gbpd(rng, radius_px=radius, margin_px=10.0)
    return slice_labels(g, 0.0, radius), rng


def test_default_preset_is_the_scan_defaults():
    assert INSTRUMENTS["default"]["low_ci"] == LOW_CI_DEFAULT and INSTRUMENTS["default"]["noise_deg"] == 0.5
    assert INSTRUMENTS["default"]["misindex_fraction"] == 0.0


def test_harsh_preset_loses_every_junction_and_misindexes_grains_by_the_pseudo_symmetry():
    s, rng = _section()
    p = INSTRUMENTS["harsh"]
    scan = synthetic_scan(
        s.labels,
        s.mask,
        rng,
        noise_deg=p["noise_deg"],
        junction_low_ci=p["low_ci"][0],
        boundary_low_ci=p["low_ci"][1],
        random_low_ci=p["low_ci"][2],
        misindex_fraction=0.3,
    )
    nb = boundary_counts(s.labels)
    assert scan.low_ci[s.mask & (nb >= 3)].all()
    other = s.mask & (nb < 3)
    assert 0.003 < scan.low_ci[other].mean() < 0.03
    mis = scan.misindexed
    assert mis is not None and 0.1 < mis[1:].mean() < 0.5
    ops = symmetry_ops("-3m")
    q = euler_to_quat(scan.euler_rad)
    good = s.mask & ~scan.low_ci
    ang = np.degrees(misorientation_angle(q[good], scan.grain_quat[s.labels[good]], ops))
    on_mis = mis[s.labels[good]]
    # misindexed grains sit 60° (the c-axis pseudo-symmetry) from their true orientation, the others within the noise
    assert np.median(np.abs(ang[on_mis] - 60.0)) < 2.0
    assert np.median(ang[~on_mis]) < 3.0


def test_misindexing_off_draws_nothing_extra():
    s, _ = _section(1)
    a = synthetic_scan(s.labels, s.mask, np.random.default_rng(4))
    b = synthetic_scan(s.labels, s.mask, np.random.default_rng(4), misindex_fraction=0.0)
    assert np.array_equal(a.euler_rad, b.euler_rad) and np.array_equal(a.ci, b.ci) and a.misindexed is None


def test_phantom_ebsd_instrument_option(tmp_path, capsys):
    out = tmp_path / "h"
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
                "--instrument",
                "harsh",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    truth = json.loads((out / "truth" / "truth.json").read_text())
    assert truth["instrument"] == {"low_ci": [1.0, 0.01, 0.01], "noise_deg": 1.0, "misindex_fraction": 0.02}
    out2 = tmp_path / "o"
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
                "--instrument",
                "ideal",
                "--noise-deg",
                "0",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    truth = json.loads((out2 / "truth" / "truth.json").read_text())
    assert truth["instrument"]["low_ci"] == [0.0, 0.0, 0.0] and truth["instrument"]["noise_deg"] == 0.0


def test_phantom_ebsd_default_instrument_is_unchanged(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(
            [
                "phantom-ebsd",
                "--out",
                str(a),
                "--n-central",
                "1",
                "--n-off-center",
                "0",
                "--radius-px",
                "16",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "phantom-ebsd",
                "--out",
                str(b),
                "--n-central",
                "1",
                "--n-off-center",
                "0",
                "--radius-px",
                "16",
                "--seed",
                "3",
                "--instrument",
                "default",
                "--low-ci",
                "0.5,0.02,0.003",
                "--noise-deg",
                "0.5",
            ]
        )
        == 0
    )
    assert (a / "synthetic_00.ang").read_bytes() == (b / "synthetic_00.ang").read_bytes()


@pytest.mark.parametrize("value", ["perfect", "HARSH "])
def test_unknown_instrument_is_one_line_error(tmp_path, capsys, value):
    out = tmp_path / "x"
    assert main(["phantom-ebsd", "--out", str(out), "--instrument", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ideal, default, harsh" in err
    assert not out.exists()
