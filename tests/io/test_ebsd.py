"""Tests of nmc_dataset.io._ebsd: .ang / .ctf readers and writers, and every malformed-file error."""

import numpy as np
import pytest

from nmc_dataset.errors import InputError
from nmc_dataset.io._ebsd import NMC811, EbsdPhase, read_ang, read_ebsd, write_ang, write_ctf


def _maps(rng, ny=12, nx=17):
    e = rng.uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], size=(ny, nx, 3))
    ci = rng.uniform(0.0, 1.0, size=(ny, nx))
    ci[0, :3] = -1
    iq = rng.uniform(100, 3000, size=(ny, nx))
    ph = np.where(ci >= 0, 1, 0)
    e[ph == 0] = 4 * np.pi
    return e, ci, iq, ph


def test_ang_round_trip(tmp_path, rng):
    e, ci, iq, ph = _maps(rng)
    p = write_ang(tmp_path / "a.ang", e, ci, iq, ph, 0.05)
    s = read_ebsd(p)
    assert s.format == "ang" and s.shape == (12, 17) and s.step_um == (0.05, 0.05)
    np.testing.assert_allclose(s.euler_rad[ph > 0], e[ph > 0], atol=1e-5)  # 5 decimals, as OIM writes
    np.testing.assert_allclose(s.ci, ci, atol=5e-4)
    np.testing.assert_allclose(s.iq, iq, atol=0.05)
    assert np.array_equal(s.indexed, ph > 0) and np.array_equal(s.phase, ph)
    assert s.phases == {1: EbsdPhase(1, "NMC811", "-3m", (2.875, 2.875, 14.248, 90.0, 90.0, 120.0))}
    assert set(s.extra) == {"SEM", "Fit"}


def test_ctf_round_trip(tmp_path, rng):
    e, ci, iq, ph = _maps(rng)
    p = write_ctf(tmp_path / "a.ctf", e, ph, 0.05)
    s = read_ebsd(p)
    assert s.format == "ctf" and s.shape == (12, 17)
    np.testing.assert_allclose(s.euler_rad[ph > 0], e[ph > 0], atol=2e-6)  # 4 decimals of a degree
    assert np.array_equal(s.indexed, ph > 0)
    assert np.all(s.ci[ph > 0] == 1) and np.all(s.ci[ph == 0] == -1)
    assert s.phases[1].laue_group == "-3m" and s.phases[1].lattice[2] == pytest.approx(14.248)
    assert {"Bands", "Error", "MAD", "BC", "BS"} <= set(s.extra)
    lines = p.read_text().splitlines()
    assert lines[0] == "Channel Text File" and "JobMode\tGrid" in lines


# --------------------------------------------------------------------------- older/other layouts
OLD_ANG = """# TEM_PIXperUM          1.000000
# x-star                0.500000
# y-star                0.700000
# z-star                0.650000
# WorkingDistance       15.000000
#
# Phase 1
# MaterialName  	Nickel
# Formula     	Ni
# Info \t\t
# Symmetry              43
# LatticeConstants      3.520 3.520 3.520  90.000  90.000  90.000
# NumberFamilies        1
# hklFamilies   	 1  1  1 1 0.000000
#
# GRID: SqrGrid
# XSTEP: 0.500000
# YSTEP: 0.500000
# NCOLS_ODD: 3
# NCOLS_EVEN: 3
# NROWS: 2
#
# OPERATOR: \t
#
# SAMPLEID: \t
#
# SCANID: \t
#
"""


def _old_rows(ncol=10, phase=0, x0=0.0):
    rows = []
    for j in range(2):
        for i in range(3):
            vals = [0.1 * i, 0.2, 0.3 * j, x0 + 0.5 * i, 0.5 * j, 1500.0, 0.5 if i else -1.0, phase, 0, 1.2]
            rows.append(" ".join(f"{v:g}" for v in vals[:ncol]))
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("ncol", [8, 10])
def test_old_single_phase_ang_without_column_headers(tmp_path, ncol):
    # OIM 5-7 files: no COLUMN_HEADERS, phase column 0 everywhere for a single phase, x offset
    p = tmp_path / "old.ang"
    p.write_text(OLD_ANG + _old_rows(ncol, phase=0, x0=12.5))
    s = read_ang(p)
    assert s.shape == (2, 3) and s.phases[1].laue_group == "m-3m" and s.phases[1].name == "Nickel"
    assert s.indexed.tolist() == [[False, True, True], [False, True, True]]
    assert s.phase.tolist() == [[0, 1, 1], [0, 1, 1]]
    assert set(s.extra) == ({"SEM", "Fit"} if ncol == 10 else set())


# --------------------------------------------------------------------------- errors
def _good_ang(tmp_path, rng):
    e, ci, iq, ph = _maps(rng, 4, 5)
    return write_ang(tmp_path / "g.ang", e, ci, iq, ph, 0.05)


def _edit(path, fn):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")
    return path


def _first_data(lines):
    return next(i for i, line in enumerate(lines) if not line.startswith("#"))


def _raises(path, *fragments):
    with pytest.raises(InputError) as ei:
        read_ebsd(path)
    msg = str(ei.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    assert "\n" not in msg
    return msg


def test_ang_hexagonal_grid_is_refused(tmp_path, rng):
    p = _edit(_good_ang(tmp_path, rng), lambda ls: [x.replace("SqrGrid", "HexGrid") for x in ls])
    ln = p.read_text().splitlines().index("# GRID: HexGrid") + 1
    _raises(p, "hexagonal grid", "not supported", f":{ln}")


def test_ang_truncated_file(tmp_path, rng):
    p = _good_ang(tmp_path, rng)
    text = p.read_text()
    p.write_text(text[: len(text) - 25])  # cut in the middle of the last row
    n = len(p.read_text().splitlines())
    _raises(p, f":{n}", "truncated")


def test_ang_missing_rows(tmp_path, rng):
    p = _edit(_good_ang(tmp_path, rng), lambda ls: ls[:-3])
    _raises(p, "4 = 20 points", "17 data rows", "truncated")


def test_ang_extra_rows(tmp_path, rng):
    p = _edit(_good_ang(tmp_path, rng), lambda ls: ls + ls[-2:])
    _raises(p, "22 data rows")


def test_ang_bad_column_count_names_line(tmp_path, rng):
    def f(ls):
        k = _first_data(ls) + 3
        ls[k] = ls[k] + " 7.0"
        return ls

    p = _edit(_good_ang(tmp_path, rng), f)
    k = _first_data(p.read_text().splitlines()) + 4
    _raises(p, f":{k}", "expected 10", "found 11")


def test_ang_non_numeric_value(tmp_path, rng):
    def f(ls):
        k = _first_data(ls) + 5
        parts = ls[k].split()
        parts[5] = "abc"
        ls[k] = " ".join(parts)
        return ls

    p = _edit(_good_ang(tmp_path, rng), f)
    k = _first_data(p.read_text().splitlines()) + 6
    _raises(p, f":{k}", "non-numeric", "'abc'")


def test_ang_unknown_phase_id(tmp_path, rng):
    def f(ls):
        k = _first_data(ls) + 2
        parts = ls[k].split()
        parts[7] = "3"
        ls[k] = " ".join(parts)
        return ls

    p = _edit(_good_ang(tmp_path, rng), f)
    k = _first_data(p.read_text().splitlines()) + 3
    _raises(p, f":{k}", "phase id 3", "not declared")


def test_ang_without_phase_block(tmp_path, rng):
    p = _edit(
        _good_ang(tmp_path, rng),
        lambda ls: [
            x
            for x in ls
            if not x.startswith(("# Phase", "# Symmetry", "# MaterialName", "# LatticeConstants", "# Formula"))
        ],
    )
    _raises(p, "no phase in the header")


def test_ang_astar_style_header_without_phase_line(tmp_path):
    # ASTAR exports: MaterialName/Symmetry without '# Phase 1', and 'SqrGrid#'
    header = (
        "# File created from ACOM RES results\n# MaterialName      Nickel\n# Formula\n"
        "# Symmetry          43\n# LatticeConstants  3.520  3.520  3.520  90.000  90.000  90.000\n"
        "#\n# GRID: SqrGrid#\n# XSTEP: 0.5\n# YSTEP: 0.5\n# NCOLS_ODD: 3\n# NCOLS_EVEN: 3\n# NROWS: 2\n#\n"
    )
    p = tmp_path / "astar.ang"
    p.write_text(header + _old_rows(10, phase=1))
    s = read_ang(p)
    assert s.phases[1].name == "Nickel" and s.phases[1].laue_group == "m-3m"
    assert s.indexed.sum() == 4


def test_ang_column_headers_missing_required(tmp_path, rng):
    p = _edit(_good_ang(tmp_path, rng), lambda ls: [x.replace(", CI,", ", XX,") for x in ls])
    _raises(p, "lacks the required column 'CI'")


def test_ang_missing_grid_key_and_bad_step(tmp_path, rng):
    p = _edit(_good_ang(tmp_path, rng), lambda ls: [x for x in ls if not x.startswith("# NROWS")])
    _raises(p, "missing '# NROWS:'")
    p = _edit(_good_ang(tmp_path, rng), lambda ls: [x.replace("# XSTEP: 0.050000", "# XSTEP: -1") for x in ls])
    _raises(p, "XSTEP must be > 0")
    for bad in ("nan", "inf"):  # a step no grid can have (found by the fuzz tests)
        p = _edit(
            _good_ang(tmp_path, rng), lambda ls, b=bad: [x.replace("# YSTEP: 0.050000", f"# YSTEP: {b}") for x in ls]
        )
        _raises(p, "step", "not a positive length")


def test_ang_coordinates_off_grid(tmp_path, rng):
    def f(ls):
        k = _first_data(ls) + 6
        parts = ls[k].split()
        parts[3] = "9.0"
        ls[k] = " ".join(parts)
        return ls

    p = _edit(_good_ang(tmp_path, rng), f)
    k = _first_data(p.read_text().splitlines()) + 7
    _raises(p, f":{k}", "does not match the 5×4 grid")


def test_ctf_errors(tmp_path, rng):
    e, ci, iq, ph = _maps(rng, 4, 5)
    good = write_ctf(tmp_path / "g.ctf", e, ph, 0.05)
    text = good.read_text()
    bad = tmp_path / "b.ctf"
    bad.write_text(text.replace("JobMode\tGrid", "JobMode\tHexGrid"))
    _raises(bad, "JobMode", "not supported", ":4")
    bad.write_text(
        text.replace("Phases\t1\n", "Phases\t0\n").replace(
            "2.875;2.875;14.248\t90.000;90.000;120.000\tNMC811\t7\t166\t\t\t\n", ""
        )
    )
    _raises(bad, "no 'Phases' block")
    bad.write_text(text[:-30])
    _raises(bad, "truncated")
    bad.write_text(text.replace("NMC811\t7", "NMC811\t42"))
    _raises(bad, "unknown Laue group number 42")
    bad.write_text("Channel Text File\nPrj\tx\n")
    _raises(bad, "no column header row")
    bad.write_text("hello\n")
    _raises(bad, "not an Oxford .ctf", ":1")
    lines = text.splitlines()
    lines[-1] = "2" + lines[-1][1:]  # undeclared phase
    bad.write_text("\n".join(lines) + "\n")
    _raises(bad, f":{len(lines)}", "phase id 2")


def test_unsupported_and_missing_files(tmp_path):
    p = tmp_path / "scan.txt"
    p.write_text("x")
    _raises(p, "unsupported EBSD file type")
    _raises(tmp_path / "nope.ang", "file not found")
    b = tmp_path / "bin.ang"
    b.write_bytes(b"\x00\x01\x02")
    _raises(b, "binary file")


def test_writer_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_ang(tmp_path / "x.ang", np.zeros((3, 4, 3)), np.zeros((3, 5)), np.zeros((3, 4)), np.zeros((3, 4)), 0.1)
    assert not (tmp_path / "x.ang").exists()
    assert NMC811.laue_group == "-3m"
