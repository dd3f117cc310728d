"""Tests of the 2D GBPD fits (docs/method.md#section-fits), their files and the fit-sections command."""

import json
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest

from nmc_dataset.calibration._fit2d import (
    SectionFit,
    augment,
    fit_section,
    fit_sections,
    read_tessellations,
    section_from_gbpd,
    write_tessellations,
)
from nmc_dataset.cli import _main as cli
from nmc_dataset.ebsd._detection import pixel_classes
from nmc_dataset.ebsd._reconstruct import dilate_grains
from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.io._sections import read_sections, write_section
from nmc_dataset.tessellation._gbpd import GBPD
from nmc_dataset.tessellation._seeds import poisson_seeds


def _truth_2d(rng, grains, radius):
    """A 2D radial GBPD (radially elongated cells) with about ``grains`` cells in a disc."""
    mu = grains / (np.pi * radius**2)
    s = poisson_seeds(rng, mu, [-radius - 15] * 2, [radius + 15] * 2)
    n = len(s)
    diag = np.stack([rng.uniform(0.2, 0.5, n), rng.uniform(1.0, 3.0, n)], 1)
    return GBPD(s.positions, diag, rng.uniform(1, 10, n))


def _truth_3d(rng, half=70.0):
    """A 3D radial GBPD with the paper's intensity, radially elongated grains (small radial marker)."""
    s = poisson_seeds(rng, 0.0018, [-half] * 3, [half] * 3)
    n = len(s)
    diag = np.stack([rng.uniform(1, 5, n), rng.uniform(15, 50, n), rng.uniform(15, 50, n)], 1)
    return GBPD(s.positions, diag, rng.uniform(1, 10, n), s.roll)


@pytest.fixture(scope="module")
def small_section():
    rng = np.random.default_rng(11)
    g = _truth_2d(rng, 40, 45)
    return section_from_gbpd(g, 100, 45, rng=rng, section_id="small")


def test_known_truth_section(small_section):
    s = small_section
    assert s.labels.dtype == np.uint32 and s.labels.shape == (100, 100)
    assert (s.labels[~s.mask] == 0).all()
    inside = s.labels[s.mask]
    assert 25 < len(np.unique(inside[inside > 0])) < 80
    assert 0 < (inside == 0).sum() < 0.1 * inside.size  # a few unassigned junction pixels


def test_fit_recovers_2d_truth(small_section):
    """Closed loop: a section cut from a known restricted 2D GBPD is refitted to >= 95 % agreement
    (the model can represent it exactly; the tolerance covers unassigned pixels and annealing)."""
    fit = fit_section(small_section, steps=120)
    assert isinstance(fit, SectionFit)
    assert fit.agreement >= 0.95
    # the reported agreement is what the hard fitted tessellation really gives
    lab = fit.label_image()
    use = small_section.mask & (small_section.labels > 0)
    assert abs((lab[use] == small_section.labels[use]).mean() - fit.agreement) < 1e-12
    assert fit.gbpd.dim == 2 and fit.gbpd.n == len(fit.label_ids)
    assert set(fit.label_ids) == set(np.unique(small_section.labels[use]))
    # seeds stay near their grain's pixels (pixel coords relative to the centre)
    coords = small_section.pixel_coords()
    for k in range(0, fit.gbpd.n, 7):
        pix = coords[small_section.labels == fit.label_ids[k]]
        assert np.linalg.norm(fit.gbpd.seeds[k] - pix.mean(0)) < 0.75 * np.sqrt(len(pix)) + 3


def test_fit_is_deterministic(small_section):
    a = fit_section(small_section, steps=20, seed=3)
    b = fit_section(small_section, steps=20, seed=3)
    np.testing.assert_array_equal(a.gbpd.seeds, b.gbpd.seeds)
    assert a.agreement == b.agreement


@pytest.mark.slow
def test_fit_3d_slice_paper_size():
    """A central section (200 x 200 pixels, ~500 grains) of a known 3D radial GBPD: >= 95 %."""
    rng = np.random.default_rng(12)
    g = _truth_3d(rng, 115)
    sec = section_from_gbpd(g, 200, 95, rng=rng)
    fit = fit_section(sec)
    assert fit.agreement >= 0.95


def test_fit_3d_slice_small():
    """Default twin of the slow test: a 90 x 90 central section of a 3D radial GBPD."""
    rng = np.random.default_rng(13)
    g = _truth_3d(rng, 60)
    sec = section_from_gbpd(g, 90, 42, rng=rng)
    fit = fit_section(sec, steps=100)
    assert fit.agreement >= 0.95


def test_augment_bounds_and_spread(rng):
    g = _truth_2d(rng, 200, 60)
    a = augment(g, rng, 0.2)
    np.testing.assert_array_equal(a.seeds, g.seeds)
    rd = a.diag / g.diag
    rr = a.offsets / g.offsets
    for ratio in (rd.ravel(), rr):
        assert (ratio >= 0.8 - 1e-12).all() and (ratio <= 1.2 + 1e-12).all()
        assert ratio.min() < 0.85 and ratio.max() > 1.15  # uses the range (n >= 200 draws)
        assert abs(ratio.mean() - 1) < 0.03
    assert np.corrcoef(rd[:, 0], rd[:, 1])[0, 1] < 0.3  # independent per entry
    assert augment(g, rng, 0.0).offsets.tolist() == g.offsets.tolist()
    with pytest.raises(ValueError):
        augment(g, rng, 1.5)


def test_write_read_roundtrip(tmp_path, small_section):
    fit = fit_section(small_section, steps=10)
    fit2 = SectionFit(
        "other",
        augment(fit.gbpd, np.random.default_rng(0)),
        0.05,
        0.5,
        np.ones((7, 9), bool),
        np.array([4.0, 3.0]),
        fit.label_ids + 100,
    )
    out = write_tessellations([fit, fit2], tmp_path / "tess")
    back = read_tessellations(out)
    assert [b.section_id for b in back] == ["small", "other"]
    for a, b in zip([fit, fit2], back):
        np.testing.assert_array_equal(a.gbpd.seeds, b.gbpd.seeds)
        np.testing.assert_array_equal(a.gbpd.diag, b.gbpd.diag)
        np.testing.assert_array_equal(a.gbpd.offsets, b.gbpd.offsets)
        np.testing.assert_array_equal(a.label_ids, b.label_ids)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.center_px, b.center_px)
        assert a.agreement == b.agreement and a.pixel_size_um == b.pixel_size_um
    np.testing.assert_array_equal(back[0].label_image(), fit.label_image())
    import pyarrow.parquet as pq

    t = pq.read_table(out / "cells.parquet")
    assert t.schema.metadata[b"format"] == b"nmc-dataset/tessellations"
    assert t.column_names == ["section_id", "cell", "seed_x_px", "seed_y_px", "d_radial", "d_tangential", "r", "label"]
    # a newer format version is refused with a clear error
    doc = json.loads((out / "sections.json").read_text())
    doc["format_version"] = 2
    (out / "sections.json").write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError):
        read_tessellations(out)
    with pytest.raises(InputError):
        read_tessellations(tmp_path / "missing")


# --------------------------------------------------------------------------- CLI
def _write_folder(root, rng, central=(True, False)):
    sections = []
    for i, c in enumerate(central):
        g = _truth_2d(rng, 25, 30)
        s = section_from_gbpd(g, 70, 30, rng=rng, section_id=f"scan{i}")
        s.central = c
        write_section(s, root)
        sections.append(s)
    return sections


def test_cli_fit_sections(tmp_path, capsys):
    rng = np.random.default_rng(5)
    _write_folder(tmp_path / "sections", rng)
    out = tmp_path / "tess"
    rc = cli.main(["fit-sections", str(tmp_path / "sections"), "--out", str(out), "--steps", "60", "--seed", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "scan0" in text and "scan1" not in text and "agreement" in text
    fits = read_tessellations(out)
    assert [f.section_id for f in fits] == ["scan0"]  # only the central section
    assert fits[0].agreement > 0.9
    # fit_sections is the same thing as a function
    again = fit_sections(tmp_path / "sections", tmp_path / "tess2", steps=60, seed=1)
    np.testing.assert_array_equal(again[0].gbpd.seeds, fits[0].gbpd.seeds)
    assert read_sections(tmp_path / "sections")[0].section_id == "scan0"


def _bad(capsys, args, out, needle):
    rc = cli.main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_cli_bad_inputs(tmp_path, capsys):
    rng = np.random.default_rng(6)
    out = tmp_path / "tess"
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(capsys, ["fit-sections", str(empty), "--out", str(out)], out, str(empty))
    _bad(capsys, ["fit-sections", str(tmp_path / "nope"), "--out", str(out)], out, "nope")
    offc = tmp_path / "offcentre"
    _write_folder(offc, rng, central=(False, False))
    _bad(capsys, ["fit-sections", str(offc), "--out", str(out)], out, "central")
    nogr = tmp_path / "nograins"
    secs = _write_folder(nogr, rng, central=(True, True))
    secs[1].labels[:] = 0
    write_section(secs[1], nogr)
    _bad(capsys, ["fit-sections", str(nogr), "--out", str(out)], out, "scan1")
    _bad(capsys, ["fit-sections", str(offc), "--out", str(out), "--steps", "0"], out, "--steps")
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = cli.main(["fit-sections", str(nogr), "--out", str(afile)])
    assert rc == 2 and "afile" in capsys.readouterr().err and afile.read_text() == "x"
    bad = tmp_path / "badjson"
    _write_folder(bad, rng, central=(True,))
    (bad / "scan0" / "section.json").write_text("{not json")
    _bad(capsys, ["fit-sections", str(bad), "--out", str(out)], out, "section.json")


# --------------------------------------------------------------------------- filled pixels
def _with_filled(section, rng, wrong_fraction=0.5):
    """The section with its junction pixels "filled" by the import: assigned (some to a wrong
    neighbouring grain), marked not confident."""
    lab = np.asarray(section.labels).astype(np.int64)
    filled = dilate_grains(lab, section.mask, np.inf)
    junction = (pixel_classes(filled) >= 1) & section.mask & (rng.uniform(size=lab.shape) < wrong_fraction)
    # the wrong fill: the grain one pixel to the right (a neighbour) instead of the pixel's own
    shifted = np.roll(filled, -1, axis=1)
    filled = np.where(junction & (shifted > 0), shifted, filled).astype(np.uint32)
    confident = section.mask & ~junction & (lab > 0)
    return dataclasses_replace(section, labels=filled, confident=confident)


def test_filled_weight_treats_filled_pixels_as_unknown():
    """With weight 0 the fit follows the confident pixels and ignores wrongly filled ones; with
    weight 1 (default) a section with confident pixels is fitted as before."""
    rng = np.random.default_rng(12)
    tiny = section_from_gbpd(_truth_2d(rng, 15, 24), 56, 24, rng=rng, section_id="tiny")
    sec = _with_filled(tiny, np.random.default_rng(2))
    conf = sec.confident & sec.mask
    plain = fit_section(dataclasses_replace(sec, confident=None), steps=40)
    one = fit_section(sec, steps=40)
    np.testing.assert_array_equal(one.gbpd.seeds, plain.gbpd.seeds)  # weight 1: same arithmetic
    np.testing.assert_array_equal(one.confident, sec.confident)
    zero = fit_section(sec, steps=40, filled_weight=0.0)

    def on_confident(f):
        return (f.label_image()[conf] == sec.labels[conf]).mean()

    assert on_confident(zero) > on_confident(one)
    assert on_confident(zero) > 0.97
    with pytest.raises(InputError, match="--filled-weight"):
        fit_section(sec, steps=5, filled_weight=1.5)


def test_confident_pixels_round_trip_and_absent_ones_stay_absent(tmp_path, small_section):
    sec = _with_filled(small_section, np.random.default_rng(3))
    with_conf = fit_section(sec, steps=5)
    without = fit_section(small_section, steps=5)
    out = write_tessellations([with_conf, dataclasses_replace(without, section_id="plain")], tmp_path / "t")
    a, b = read_tessellations(out)
    np.testing.assert_array_equal(a.confident, sec.confident)
    assert b.confident is None
    with np.load(out / "masks" / "plain.npz") as z:
        assert z.files == ["mask"]  # no confident map written when the import recorded none
    # the section folder keeps it too (confident.tif), and only when given
    write_section(sec, tmp_path / "secs")
    write_section(dataclasses_replace(small_section, section_id="plain"), tmp_path / "secs")
    got = {s.section_id: s for s in read_sections(tmp_path / "secs", selected_only=False)}
    np.testing.assert_array_equal(got["small"].confident, sec.confident)
    assert got["plain"].confident is None and not (tmp_path / "secs" / "plain" / "confident.tif").exists()


def test_cli_filled_weight_out_of_range(tmp_path, capsys):
    _write_folder(tmp_path / "sections", np.random.default_rng(5))
    out = tmp_path / "tess"
    _bad(
        capsys,
        ["fit-sections", str(tmp_path / "sections"), "--out", str(out), "--filled-weight", "2"],
        out,
        "--filled-weight",
    )
