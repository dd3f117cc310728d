"""End-to-end tests of ``nmc-dataset import-ebsd`` (and the ``sections:`` recipe section).

Closed loop: known 3D radial GBPD -> synthetic .ang/.ctf scans -> import-ebsd -> grains compared with
the true slices (ARI), morphology compared with the truth's descriptors, central/off-centre decisions.
"""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from nmc_dataset.cli._main import main
from nmc_dataset.ebsd._morphology import grain_descriptors
from nmc_dataset.io._ebsd import read_ebsd
from nmc_dataset.io._sections import read_sections
from nmc_dataset.synthetic._ebsd import write_synthetic_sections
from nmc_dataset.testing import adjusted_rand_index


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    recs = write_synthetic_sections(
        folder, np.random.default_rng(11), n_central=2, n_off_center=2, radius_px=50.0, formats=("ang", "ctf")
    )
    return folder, recs


@pytest.fixture(scope="module")
def imported(synthetic, tmp_path_factory):
    folder, recs = synthetic
    out = tmp_path_factory.mktemp("imp") / "sections"
    rc = main(["import-ebsd", *[str(folder / r["scan"]) for r in recs], "--out", str(out)])
    assert rc == 0
    return out


def _match(labels, truth):
    """Recovered label -> true label by majority overlap."""
    m = {}
    for lab in np.unique(labels[labels > 0]):
        m[lab] = np.bincount(truth[labels == lab]).argmax()
    return m


def test_round_trip_recovers_true_grains(synthetic, imported):
    folder, recs = synthetic
    for r in recs:
        lab = tifffile.imread(imported / r["id"] / "labels.tif").astype(np.int64)
        truth = tifffile.imread(folder / r["truth"]).astype(np.int64)
        scan = read_ebsd(folder / r["scan"])
        sel = (lab > 0) & (truth > 0) & scan.indexed & (scan.ci >= 0.1)
        ari = adjusted_rand_index(lab[sel], truth[sel])
        assert ari >= 0.95, (r["id"], ari)  # agreement with the truth on the confidently indexed pixels
        assert sel.sum() >= 0.8 * (truth > 0).sum()  # junction/low-CI losses stay small
        # the completed map assigns every pixel of the section, the filled ones mostly right too
        mask = tifffile.imread(imported / r["id"] / "mask.tif") > 0
        assert (lab[mask] > 0).all()
        inside = truth > 0
        assert adjusted_rand_index(lab[inside], truth[inside]) >= 0.9, r["id"]
        meta = json.loads((imported / r["id"] / "section.json").read_text())
        np.testing.assert_allclose(meta["center_px"], r["center_px"], atol=0.5)
        assert meta["pixel_size_um"] == 0.05 and meta["phase"]["laue_group"] == "-3m"


def test_morphology_table_matches_truth_descriptors(synthetic, imported):
    folder, recs = synthetic
    for r in recs:
        lab = tifffile.imread(imported / r["id"] / "labels.tif").astype(np.int64)
        truth = tifffile.imread(folder / r["truth"]).astype(np.int64)
        table = pd.read_parquet(imported / r["id"] / "grains.parquet")
        td = grain_descriptors(truth, r["center_px"])
        tpos = {lab_id: k for k, lab_id in enumerate(td["label"])}
        matches = _match(lab, truth)
        big = table[table.area_px >= 40]
        assert len(big) > 20
        d_centroid, d_alpha, ratio = [], [], []
        for row in big.itertuples():
            k = tpos[matches[row.label]]
            d_centroid.append(
                np.hypot(row.centroid_x_px - td["centroid_x_px"][k], row.centroid_y_px - td["centroid_y_px"][k])
            )
            if td["elongation"][k] > 0.3:
                d_alpha.append(abs(row.alpha_rad - td["alpha_rad"][k]))
            ratio.append(row.area_px / td["area_px"][k])
        # completed grains get their junction pixels back: area ratio ~1, centroids within ~1 px,
        # orientation alpha of elongated grains within a few degrees (median)
        assert 0.95 < np.median(ratio) < 1.05
        assert np.median(d_centroid) < 1.0
        assert np.degrees(np.median(d_alpha)) < 5.0
        # chords: the population statistics agree with the truth's
        from nmc_dataset.ebsd._morphology import chord_lengths

        chords = pd.read_parquet(imported / r["id"] / "chords.parquet")
        t_ch = chord_lengths(truth)
        assert abs(np.median(chords.length_px[chords.length_px >= 3]) - np.median(t_ch[t_ch >= 3])) <= 2


def test_central_selection_is_right(synthetic, imported):
    _, recs = synthetic
    sel = json.loads((imported / "selection.json").read_text())
    assert sel["format"] == "nmc-dataset/section-selection" and sel["mode"] == "auto"
    decided = {s["id"]: s["central"] for s in sel["sections"]}
    assert decided == {r["id"]: r["central"] for r in recs}
    assert [s.section_id for s in read_sections(imported)] == [r["id"] for r in recs if r["central"]]


def test_central_all_list_and_center(synthetic, tmp_path):
    folder, recs = synthetic
    scans = [str(folder / r["scan"]) for r in recs[:2]]
    out = tmp_path / "all"
    assert main(["import-ebsd", *scans, "--out", str(out), "--central", "all", "--center", "20,21"]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert all(s["central"] for s in sel["sections"]) and sel["options"]["center_px"] == [20.0, 21.0]
    assert json.loads((out / recs[0]["id"] / "section.json").read_text())["center_px"] == [20.0, 21.0]
    # re-import into the same folder (replaced atomically) with a LIST
    assert main(["import-ebsd", *scans, "--out", str(out), "--central", recs[1]["id"]]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert [s["central"] for s in sel["sections"]] == [False, True]
    # a glob works too
    out2 = tmp_path / "glob"
    assert main(["import-ebsd", str(folder / "*.ctf"), "--out", str(out2)]) == 0
    assert len(json.loads((out2 / "selection.json").read_text())["sections"]) == 2


# --------------------------------------------------------------------------- bad input via the CLI
def _bad(capsys, argv, out, *fragments):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    assert not out.exists(), "no output may be written on bad input"


def _scan_copy(synthetic, tmp_path, k=0):
    folder, recs = synthetic
    src = folder / recs[k]["scan"]
    dst = tmp_path / src.name
    dst.write_text(src.read_text(encoding="latin-1"), encoding="latin-1")
    return dst


def _mutate(path, fn):
    lines = path.read_text(encoding="latin-1").splitlines()
    path.write_text("\n".join(fn(lines)) + "\n", encoding="latin-1")
    return path


def test_cli_errors_for_malformed_ang(synthetic, tmp_path, capsys):
    good = _scan_copy(synthetic, tmp_path, 0)
    out = tmp_path / "out"
    cases = {
        "hex": (lambda ls: [x.replace("SqrGrid", "HexGrid") for x in ls], ["hexagonal grid", "not supported"]),
        "trunc": (lambda ls: ls[:-40] + [ls[-40][:20]], ["expected 10", "truncated"]),
        "rows": (lambda ls: ls[:-5], ["data rows", "truncated"]),
        "col": (lambda ls: ls[:-9] + [ls[-9] + " 1 2"] + ls[-8:], ["expected 10", "found 12"]),
        "nan": (lambda ls: ls[:-7] + [ls[-7].replace(" 0.", " x.", 1)] + ls[-6:], ["non-numeric"]),
        "nophase": (
            lambda ls: [
                x
                for x in ls
                if not x.startswith(("# Phase", "# Symmetry", "# MaterialName", "# Formula", "# LatticeConstants"))
            ],
            ["no phase in the header"],
        ),
        "hdr": (lambda ls: [x.replace("# NROWS:", "# NROWS: x") for x in ls], ["NROWS must be a number"]),
    }
    for name, (fn, frags) in cases.items():
        bad = tmp_path / f"{name}.ang"
        bad.write_text(good.read_text(encoding="latin-1"), encoding="latin-1")
        _mutate(bad, fn)
        # the good scan first: it must not be written either (all scans validated before writing)
        _bad(capsys, ["import-ebsd", str(good), str(bad), "--out", str(out)], out, str(bad), *frags)


def test_cli_error_lines_are_named(synthetic, tmp_path, capsys):
    good = _scan_copy(synthetic, tmp_path, 0)
    lines = good.read_text(encoding="latin-1").splitlines()
    k = len(lines) - 30
    parts = lines[k].split()
    parts[7] = "4"
    lines[k] = " ".join(parts)
    bad = tmp_path / "phase.ang"
    bad.write_text("\n".join(lines) + "\n", encoding="latin-1")
    out = tmp_path / "o"
    _bad(capsys, ["import-ebsd", str(bad), "--out", str(out)], out, f"{bad}:{k + 1}", "phase id 4")


def test_cli_errors_for_malformed_ctf(synthetic, tmp_path, capsys):
    good = _scan_copy(synthetic, tmp_path, 1)
    out = tmp_path / "out"
    bad = tmp_path / "b.ctf"
    bad.write_text(good.read_text(encoding="latin-1").replace("JobMode\tGrid", "JobMode\tLine"), encoding="latin-1")
    _bad(capsys, ["import-ebsd", str(bad), "--out", str(out)], out, f"{bad}:4", "JobMode")


def test_cli_errors_for_options_and_files(synthetic, tmp_path, capsys):
    good = _scan_copy(synthetic, tmp_path, 0)
    out = tmp_path / "out"
    _bad(capsys, ["import-ebsd", str(tmp_path / "none.ang"), "--out", str(out)], out, "none.ang", "file not found")
    _bad(capsys, ["import-ebsd", str(tmp_path / "*.xyz"), "--out", str(out)], out, "matches no file")
    _bad(capsys, ["import-ebsd", str(good), "--out", str(out), "--center", "1;2"], out, "--center")
    _bad(capsys, ["import-ebsd", str(good), "--out", str(out), "--central", "nosuch"], out, "nosuch")
    _bad(
        capsys,
        ["import-ebsd", str(good), "--out", str(out), "--max-misorientation-deg", "0"],
        out,
        "--max-misorientation-deg",
    )
    _bad(capsys, ["import-ebsd", str(good), "--out", str(out), "--min-grain-px", "0"], out, "--min-grain-px")
    _bad(capsys, ["import-ebsd", str(good), "--out", str(out), "--dilate-px", "-1"], out, "--dilate-px")
    _bad(capsys, ["import-ebsd", str(good), "--out", str(out), "--dilate-px", "nan"], out, "--dilate-px")
    other = tmp_path / "sub"
    other.mkdir()
    dup = other / good.name
    dup.write_text(good.read_text(encoding="latin-1"), encoding="latin-1")
    _bad(capsys, ["import-ebsd", str(good), str(dup), "--out", str(out)], out, "share the file stem")
    # an existing folder that is not an import output is never replaced
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    assert main(["import-ebsd", str(good), "--out", str(precious)]) == 2
    assert "nmc-dataset did not write (thesis.tex)" in capsys.readouterr().err
    assert (precious / "thesis.tex").exists()


def test_cli_error_for_scan_without_grains(tmp_path, capsys):
    from nmc_dataset.io._ebsd import write_ang

    e = np.zeros((6, 6, 3))
    ci = np.full((6, 6), 0.05)  # indexed, but every pixel below --min-ci
    p = write_ang(tmp_path / "empty.ang", e, ci, np.ones((6, 6)), np.ones((6, 6), int), 0.05)
    out = tmp_path / "out"
    _bad(capsys, ["import-ebsd", str(p), "--out", str(out)], out, str(p), "no grain found")
    q = write_ang(
        tmp_path / "none.ang",
        np.full((6, 6, 3), 4 * np.pi),
        np.full((6, 6), -1.0),
        np.ones((6, 6)),
        np.zeros((6, 6), int),
        0.05,
    )
    _bad(capsys, ["import-ebsd", str(q), "--out", str(out)], out, "no indexed pixel")


def test_cli_error_for_a_mostly_unindexed_section_and_fill_options(synthetic, tmp_path, capsys):
    from nmc_dataset.io._ebsd import read_ebsd, write_ang

    folder, recs = synthetic
    scan = read_ebsd(folder / recs[0]["scan"])
    ci = scan.ci.copy()
    rng = np.random.default_rng(0)
    ci[scan.indexed & (rng.uniform(size=ci.shape) < 0.6)] = 0.02  # 60 % of the section below --min-ci
    p = write_ang(tmp_path / "poor.ang", scan.euler_rad, ci, scan.iq, scan.phase, 0.05)
    out = tmp_path / "out"
    _bad(
        capsys,
        ["import-ebsd", str(p), "--out", str(out)],
        out,
        str(p),
        "only 36 % of the particle section",
        "lower --min-ci",
    )
    good = str(folder / recs[0]["scan"])
    _bad(capsys, ["import-ebsd", good, "--out", str(out), "--dilate-px", "2"], out, "--dilate-px needs --fill none")
    assert main(["import-ebsd", good, "--out", str(out), "--dilate-px", "2", "--fill", "none"]) == 0
    meta = json.loads((out / recs[0]["id"] / "section.json").read_text())
    assert meta["fill"] == "none" and meta["assigned_fraction_of_mask"] < 1.0
    assert json.loads((out / "selection.json").read_text())["options"]["fill"] == "none"


# --------------------------------------------------------------------------- recipe section
def test_recipe_section_import_only(synthetic, tmp_path):
    import yaml

    from nmc_dataset.pipeline._recipe import run_recipe

    folder, recs = synthetic
    recipe = {
        "format_version": 1,
        "seed": 1,
        "sections": {
            "scans": [str(folder / "*.ang")],
            "central": "auto",
            "fit": {"enabled": False},
            "import": {"min_grain_px": 5},
        },
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ctx = run_recipe(path, tmp_path / "run")
    assert ctx.outputs["sections"] == tmp_path / "run" / "sections"
    sel = json.loads((ctx.outputs["sections"] / "selection.json").read_text())
    assert len(sel["sections"]) == 2 and "tessellations" not in ctx.outputs


def test_recipe_section_validation(tmp_path):
    from nmc_dataset.errors import RecipeError
    from nmc_dataset.pipeline._recipe import validate_recipe

    base = {"format_version": 1, "seed": 1}
    validate_recipe({**base, "sections": {"synthetic": {"n_central": 1}}})
    with pytest.raises(RecipeError, match="sections"):
        validate_recipe({**base, "sections": {"synthetic": {}, "scans": ["a.ang"]}})  # both
    with pytest.raises(RecipeError, match="sections"):
        validate_recipe({**base, "sections": {"scans": ["a.ang"], "bogus": 1}})
    with pytest.raises(RecipeError, match="min_ci|import"):
        validate_recipe({**base, "sections": {"scans": ["a.ang"], "import": {"min_ci": 5}}})
    from nmc_dataset.pipeline._stage_sections import check_section

    with pytest.raises(RecipeError, match="radial_diag"):
        check_section({"synthetic": {"teacher": {"radial_diag": [0.5, 0.1]}}})
    with pytest.raises(RecipeError, match="n_central"):
        check_section({"synthetic": {"n_central": 0, "n_off_center": 0}})


def test_recipe_section_missing_scans_is_one_line_error(tmp_path, capsys):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {"format_version": 1, "seed": 1, "sections": {"scans": ["nothing/*.ang"], "fit": {"enabled": False}}}
        )
    )
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matches no file" in err
    assert not (tmp_path / "run" / "sections").exists()


@pytest.mark.slow
def test_recipe_section_synthetic_with_fits(tmp_path):
    """Synthetic scans -> import -> fit-sections -> pixel agreement >= 95 %."""
    import yaml

    from nmc_dataset.pipeline._recipe import run_recipe

    recipe = {
        "format_version": 1,
        "seed": 5,
        "sections": {
            "synthetic": {"n_central": 2, "n_off_center": 1, "radius_px": 40, "formats": ["ang", "ctf"]},
            "fit": {"steps": 150},
        },
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ctx = run_recipe(path, tmp_path / "run")
    from nmc_dataset.calibration._fit2d import read_tessellations

    fits = read_tessellations(ctx.outputs["tessellations"])
    assert len(fits) == 2
    assert all(f.agreement >= 0.95 for f in fits)


@pytest.mark.slow
def test_full_size_round_trip(tmp_path):
    """Paper-size sections (R = 100 px = 5 um at 50 nm): 4 central + 4 off-centre, ARI and decisions."""
    recs = write_synthetic_sections(
        tmp_path / "scans",
        np.random.default_rng(99),
        n_central=4,
        n_off_center=4,
        radius_px=100.0,
        formats=("ang", "ctf"),
    )
    out = tmp_path / "sections"
    assert (
        main(["import-ebsd", str(tmp_path / "scans" / "*.ang"), str(tmp_path / "scans" / "*.ctf"), "--out", str(out)])
        == 0
    )
    sel = {s["id"]: s["central"] for s in json.loads((out / "selection.json").read_text())["sections"]}
    assert sel == {r["id"]: r["central"] for r in recs}
    for r in recs:
        lab = tifffile.imread(out / r["id"] / "labels.tif").astype(np.int64)
        truth = tifffile.imread(tmp_path / "scans" / r["truth"]).astype(np.int64)
        s = (lab > 0) & (truth > 0)
        assert adjusted_rand_index(lab[s], truth[s]) >= 0.95


def test_confident_pixels_are_recorded_only_when_some_are_lost(tmp_path):
    """import-ebsd writes confident.tif (indexed, CI >= --min-ci, inside the particle) when the scan
    lost pixels, and nothing more when every pixel of the section is confident (ideal instrument)."""
    for name, low_ci in (("lossy", None), ("ideal", (0.0, 0.0, 0.0))):
        folder = tmp_path / name
        recs = write_synthetic_sections(
            folder,
            np.random.default_rng(3),
            n_central=1,
            n_off_center=0,
            radius_px=30.0,
            formats=("ang",),
            low_ci=low_ci,
        )
        out = tmp_path / f"sec-{name}"
        assert main(["import-ebsd", str(folder / recs[0]["scan"]), "--out", str(out), "--central", "all"]) == 0
        (sec,) = read_sections(out)
        if low_ci is None:
            scan = read_ebsd(folder / recs[0]["scan"])
            np.testing.assert_array_equal(sec.confident, scan.indexed & (scan.ci >= 0.1) & sec.mask)
            assert 0 < (sec.mask & ~sec.confident).sum() < 0.2 * sec.mask.sum()
        else:
            assert sec.confident is None and not (out / sec.section_id / "confident.tif").exists()


def test_cli_error_for_a_wrong_step_size_or_too_few_grains(tmp_path, capsys):
    """A scan whose step size makes its grains implausible for NMC secondary particles (a unit slip
    either way), or whose grains merged into a few, is a one-line error naming the sizes and the
    way round it; --no-size-check accepts the same scans."""
    scans = {}
    for step in (0.05, 5.0, 0.0002):
        folder = tmp_path / f"step{step:g}"
        (rec,) = write_synthetic_sections(
            folder, np.random.default_rng(3), n_central=1, n_off_center=0, radius_px=30.0, step_um=step
        )
        scans[step] = str(folder / rec["scan"])
    for step, what in ((5.0, "median diameter"), (0.0002, "median diameter")):
        rc = main(["import-ebsd", scans[step], "--out", str(tmp_path / f"o{step:g}")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert what in err and f"step of {step:g} µm" in err and "--no-size-check" in err
        assert not (tmp_path / f"o{step:g}").exists()
    # every grain joins one when the misorientation threshold spans all orientations
    rc = main(["import-ebsd", scans[0.05], "--out", str(tmp_path / "merged"), "--max-misorientation-deg", "180"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "grain(s) in the particle section" in err and "single-crystal" in err, err
    # the plausible scan passes; the check can be switched off
    assert main(["import-ebsd", scans[0.05], "--out", str(tmp_path / "ok")]) == 0
    assert main(["import-ebsd", scans[5.0], "--out", str(tmp_path / "off"), "--no-size-check"]) == 0
    (sec,) = read_sections(tmp_path / "off")
    assert sec.pixel_size_um == pytest.approx(5.0)
