"""fit-grains / sample-grains / describe-grains through nmc_dataset.cli.main, bad input included."""

import json

import h5py
import numpy as np
import pytest
import yaml

from nmc_dataset.calibration._fit2d import SectionFit, write_tessellations
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.cli import _main as cli
from nmc_dataset.tessellation._gbpd import GBPD

TINY = {
    "intensity_init_per_px3": 0.0018,
    "kappa": 12,
    "generator": {"hidden": [16]},
    "discriminator": {"width": 4, "blocks": 2, "dense": 8},
    "cutouts": {"grid": 16, "channels": 6, "p_max_px": 40, "margin_px": 8},
    "training": {"epochs": 1, "steps_per_epoch": 2, "batch_g": 4, "batch_d": 4, "ng_gt_cutouts": 8},
}


def _section(sid, rng, d_rad=0.2, size=121, px=0.05):
    """A SectionFit of a 2D GBPD in a disc (radial cells when d_rad << 1)."""
    n = 500
    c = (size - 1) / 2
    s = rng.uniform(-c - 10, c + 10, (n, 2))
    g = GBPD(s, np.column_stack([np.full(n, d_rad), np.full(n, 1.0)]), rng.uniform(1, 10, n))
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= (c - 2) ** 2
    return SectionFit(
        section_id=sid,
        gbpd=g,
        pixel_size_um=px,
        agreement=0.95,
        mask=mask,
        center_px=np.array([c, c]),
        label_ids=np.arange(1, n + 1),
    )


@pytest.fixture
def tess(tmp_path):
    rng = np.random.default_rng(0)
    return write_tessellations([_section("a", rng), _section("b", rng)], tmp_path / "tess")


def _recipe(tmp_path, grains=None, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"format_version": 1, "seed": 3, "grains": TINY if grains is None else grains}))
    return p


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_fit_sample_describe(tess, tmp_path, capsys):
    out = tmp_path / "gm"
    assert cli.main(["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path)), "--out", str(out)]) == 0
    m = GrainModel.load(out)
    assert m.pixel_size_um == 0.05 and m.training["seed"] == 3 and m.training["source"]["sections"] == ["a", "b"]
    assert (out / "training" / "log.csv").is_file()
    # sample a cube
    h5 = tmp_path / "g.h5"
    assert cli.main(["sample-grains", str(out), "--size-px", "20", "--seed", "3", "--out", str(h5)]) == 0
    with h5py.File(h5) as f:
        lab = f["labels"][...]
        assert lab.dtype == np.uint32 and lab.shape == (20, 20, 20) and lab.min() >= 1
        assert f.attrs["format"] == "nmc-dataset/grain-labels" and f.attrs["format_version"] == 1
        assert f["labels"].attrs["voxel_size_um"] == 0.05 and f["labels"].attrs["axes"] == "z,y,x"
        np.testing.assert_allclose(f["labels"].attrs["origin_px"], [-9.5] * 3)
        seeds = f["gbpd/seeds_px"][...]
        assert lab.max() <= len(seeds)
    # planes: the plane at z equals the cube's slice at the same height (same seed)
    h5s = tmp_path / "s.h5"
    assert (
        cli.main(
            ["sample-grains", str(out), "--size-px", "20", "--seed", "3", "--out", str(h5s), "--sections=-9.5,0.5"]
        )
        == 0
    )
    with h5py.File(h5s) as f:
        planes = f["labels"][...]
        np.testing.assert_allclose(f["labels"].attrs["z_px"], [-9.5, 0.5])
    assert planes.shape == (2, 20, 20)
    np.testing.assert_array_equal(planes[0], lab[0])
    np.testing.assert_array_equal(planes[1], lab[10])
    # describe-grains: report with W1 + KS per descriptor and the cut-height study
    rep = tmp_path / "report"
    assert (
        cli.main(
            [
                "describe-grains",
                str(out),
                "--against",
                str(tess),
                "--out",
                str(rep),
                "--samples",
                "2",
                "--radius-px",
                "40",
            ]
        )
        == 0
    )
    comp = json.loads((rep / "comparison.json").read_text())
    assert set(comp) == {"area_px", "elongation", "alpha_rad", "chord_px"}
    assert all(0 <= v["ks"] <= 1 and v["wasserstein1"] >= 0 and v["n_simulated"] > 0 for v in comp.values())
    assert (rep / "comparison.md").is_file() and (rep / "cut_height.png").stat().st_size > 1000
    study = json.loads((rep / "cut_height.json").read_text())
    assert [h["relative_height"] for h in study["heights"]] == [0.0, 0.25, 0.5, 0.75]
    shells = json.loads((rep / "radial_bins.json").read_text())["shells"]
    assert [round(sh["rho_high"], 3) for sh in shells] == [0.333, 0.667, 1.0]
    assert sum(sh["measured"]["n_grains"] for sh in shells) == comp["area_px"]["n_measured"]


def test_fit_grains_keeps_the_best_scoring_epoch(tess, tmp_path):
    """training.select_sections through the CLI: the measured sections reach the trainer, every
    epoch is scored in log.csv, and model.json names the epoch it kept."""
    grains = json.loads(json.dumps(TINY))
    grains["training"].update(epochs=3, select_sections=1)
    out = tmp_path / "gm"
    assert cli.main(["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path, grains)), "--out", str(out)]) == 0
    rows = (out / "training" / "log.csv").read_text().splitlines()
    col = rows[0].split(",").index("select_score")
    scores = [float(r.split(",")[col]) for r in rows[1:]]
    m = GrainModel.load(out)
    assert len(scores) == 3 and m.training["selected_epoch"] == int(np.argmin(scores)) + 1
    assert m.training["select_score"] == pytest.approx(min(scores))


def test_fit_grains_restarts_keep_the_best_scoring_run(tess, tmp_path, capsys):
    """--restarts K trains seeds SEED..SEED+K-1 into OUT/restarts/ and keeps the run whose kept
    epoch scored lowest; --resume reuses finished runs; without selection it is refused."""
    grains = json.loads(json.dumps(TINY))
    grains["training"].update(epochs=2, select_sections=1)
    recipe = _recipe(tmp_path, grains)
    out = tmp_path / "gm"
    assert cli.main(["fit-grains", str(tess), "--recipe", str(recipe), "--out", str(out), "--restarts", "3"]) == 0
    runs = {s: GrainModel.load(out / "restarts" / f"seed-{s}") for s in (3, 4, 5)}
    scores = {s: m.training["select_score"] for s, m in runs.items()}
    chosen = min(scores, key=lambda s: (scores[s], s))
    m = GrainModel.load(out)
    assert m.training["seed"] == chosen and [r["seed"] for r in m.training["restarts"]] == [3, 4, 5]
    assert [r["select_score"] for r in m.training["restarts"]] == [scores[s] for s in (3, 4, 5)]
    weights = (out / "gnet.safetensors").read_bytes()
    assert weights == (out / "restarts" / f"seed-{chosen}" / "gnet.safetensors").read_bytes()
    # resume: the finished runs are read back, not retrained, and the choice is the same bytes
    stamp = {s: (out / "restarts" / f"seed-{s}" / "model.json").stat().st_mtime_ns for s in (3, 4, 5)}
    (out / "model.json").unlink()
    assert (
        cli.main(["fit-grains", str(tess), "--recipe", str(recipe), "--out", str(out), "--restarts", "3", "--resume"])
        == 0
    )
    assert stamp == {s: (out / "restarts" / f"seed-{s}" / "model.json").stat().st_mtime_ns for s in (3, 4, 5)}
    assert (out / "gnet.safetensors").read_bytes() == weights and GrainModel.load(out).training["seed"] == chosen
    capsys.readouterr()
    # resuming with other hyper-parameters names the finished run it cannot reuse; nothing is rewritten
    grains["training"].update(epochs=3)
    code = cli.main(
        [
            "fit-grains",
            str(tess),
            "--recipe",
            str(_recipe(tmp_path, grains, "r2.yaml")),
            "--out",
            str(out),
            "--restarts",
            "3",
            "--resume",
        ]
    )
    err = _err(capsys)
    assert code == 2 and "other hyper-parameters" in err and "seed-3" in err, err
    assert (out / "gnet.safetensors").read_bytes() == weights
    code = cli.main(
        ["fit-grains", str(tess), "--recipe", str(recipe), "--out", str(tmp_path / "y"), "--restarts", "2", "--resume"]
    )
    assert code == 2 and "no restarts/ folder" in _err(capsys) and not (tmp_path / "y").exists()
    # bad input: no selection score to choose by, or fewer than one run
    for extra, msg in ((["--restarts", "2"], "select_sections"), (["--restarts", "0"], "--restarts")):
        code = cli.main(
            ["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path)), "--out", str(tmp_path / "x"), *extra]
        )
        assert code == 2 and msg in _err(capsys) and not (tmp_path / "x").exists()


def test_recipe_restarts_need_no_flag(tess, tmp_path, capsys):
    """grains.training.restarts in the recipe does what --restarts does; the flag overrides it."""
    grains = json.loads(json.dumps(TINY))
    grains["training"].update(epochs=1, select_sections=1, restarts=2)
    out = tmp_path / "gm"
    assert cli.main(["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path, grains)), "--out", str(out)]) == 0
    assert [r["seed"] for r in GrainModel.load(out).training["restarts"]] == [3, 4]
    one = tmp_path / "one"
    assert (
        cli.main(
            ["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path, grains)), "--out", str(one), "--restarts", "1"]
        )
        == 0
    )
    assert not (one / "restarts").exists() and GrainModel.load(one).training["seed"] == 3
    grains["training"].update(select_sections=0)
    capsys.readouterr()
    code = cli.main(
        ["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path, grains, "r3.yaml")), "--out", str(tmp_path / "x")]
    )
    assert code == 2 and "select_sections" in _err(capsys) and not (tmp_path / "x").exists()


def test_resume_without_checkpoint_is_an_error(tess, tmp_path, capsys):
    out = tmp_path / "gm"
    code = cli.main(["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path)), "--out", str(out), "--resume"])
    assert code == 2 and "no checkpoint" in _err(capsys) and not out.exists()


@pytest.mark.parametrize(
    "grains, key",
    [
        ({"intensity_init_per_px3": -0.001}, "intensity_init_per_px3"),
        ({"kappa": 0}, "kappa"),
        ({"generator": {"r_bounds": [10, 1]}}, "r_bounds"),
        ({"generator": {"diag_bounds": [5, 5]}}, "diag_bounds"),
        ({"cutouts": {"grid": 30}}, "grid"),
        ({"training": {"epochs": 0}}, "epochs"),
        ({"bogus": 1}, "bogus"),
        ({"training": {"ema_decay": 1.0}}, "ema_decay"),
        ({"training": {"lr_schedule": "linear"}}, "lr_schedule"),
        ({"cutouts": {"ng_min_px": 0}}, "ng_min_px"),
        ({"training": {"select_metric": "median"}}, "select_metric"),
        ({"training": {"select_sections": -1}}, "select_sections"),
    ],
)
def test_bad_recipe_values(tess, tmp_path, capsys, grains, key):
    out = tmp_path / "gm"
    code = cli.main(["fit-grains", str(tess), "--recipe", str(_recipe(tmp_path, grains)), "--out", str(out)])
    err = _err(capsys)
    assert code == 2 and key in err and "r.yaml" in err
    assert not out.exists()


def test_empty_and_mixed_pixel_sizes_and_non_central(tmp_path, capsys):
    rng = np.random.default_rng(1)
    recipe = _recipe(tmp_path)
    cases = {
        "empty": ([], "no central section"),
        "mixed": ([_section("a", rng), _section("b", rng, px=0.1)], "different pixel sizes"),
        "offcentre": ([_section("a", rng, d_rad=1.0), _section("b", rng, d_rad=1.0)], "centre"),
    }
    for name, (fits, msg) in cases.items():
        folder = write_tessellations(fits, tmp_path / name)
        out = tmp_path / f"gm-{name}"
        code = cli.main(["fit-grains", str(folder), "--recipe", str(recipe), "--out", str(out)])
        err = _err(capsys)
        assert code == 2 and msg in err and name in err, err
        assert not out.exists()
    code = cli.main(["fit-grains", str(tmp_path / "nope"), "--recipe", str(recipe), "--out", str(tmp_path / "x")])
    assert code == 2 and "nope" in _err(capsys)


def test_sample_refuses_other_model_versions_and_bad_options(tess, tmp_path, capsys):
    import torch

    from nmc_dataset.calibration._generator import GNet

    torch.manual_seed(0)
    m = GrainModel(GNet(hidden=(8,)), 0.002, 0.05)
    m.write(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["format_version"] = 7
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    h5 = tmp_path / "g.h5"
    assert cli.main(["sample-grains", str(tmp_path / "m"), "--out", str(h5)]) == 2
    err = _err(capsys)
    assert "model.json" in err and "format_version 7" in err and not h5.exists()
    meta["format_version"] = 1
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    assert cli.main(["sample-grains", str(tmp_path / "m"), "--out", str(h5), "--sections", "1,x"]) == 2
    assert "--sections" in _err(capsys) and not h5.exists()
    assert cli.main(["sample-grains", str(tmp_path / "m"), "--out", str(h5), "--size-px", "0"]) == 2
    assert "--size-px" in _err(capsys) and not h5.exists()
    assert cli.main(["sample-grains", str(tmp_path / "m"), "--out", str(h5), "--size-px", "5000"]) == 2
    assert "GiB" in _err(capsys) and not h5.exists()
    rep = tmp_path / "report"
    for opt, value in (("--min-area-px", "0"), ("--samples", "0")):
        assert (
            cli.main(["describe-grains", str(tmp_path / "m"), "--against", str(tess), "--out", str(rep), opt, value])
            == 2
        )
        assert opt in _err(capsys) and not rep.exists()


def test_recipe_section_runs_and_reuses_a_finished_model(tess, tmp_path):
    from nmc_dataset.pipeline._recipe import run_recipe

    grains = dict(TINY, tessellations=str(tess))
    recipe = _recipe(tmp_path, grains, name="run.yaml")
    ctx = run_recipe(recipe, tmp_path / "run")
    out = ctx.outputs["grain_model"]
    assert out == tmp_path / "run" / "grain_model"
    first = (out / "gnet.safetensors").read_bytes()
    mtime = (out / "model.json").stat().st_mtime_ns
    ctx = run_recipe(recipe, tmp_path / "run")  # finished: reused, not retrained
    assert (out / "model.json").stat().st_mtime_ns == mtime and (out / "gnet.safetensors").read_bytes() == first


def test_cutouts_reaching_outside_the_sections_are_warned_about(tess, caplog):
    import logging

    from nmc_dataset.calibration._gan import TrainConfig
    from nmc_dataset.pipeline._stage_grains import load_fits, warn_if_cutouts_leave_sections

    _, _, source = load_fits(tess)
    assert 57 < source["min_radius_px"] < 59  # the fixture's discs have radius 58 px
    with caplog.at_level(logging.WARNING, logger="nmc_dataset"):
        warn_if_cutouts_leave_sections(TrainConfig.from_flat(grid=16, p_max_px=40), source)
        assert not caplog.records
        warn_if_cutouts_leave_sections(TrainConfig.from_flat(grid=32, p_max_px=40), source)
    assert len(caplog.records) == 1 and "p_max_px to 36" in caplog.records[0].getMessage()


def test_fit_grains_depth_aware_through_describe_and_sample(tess, tmp_path):
    """--depth-aware: the model stores the option and the sections' mean radius, describe-grains
    reports the shells (json + md), sample-grains draws with the stored radius."""
    out = tmp_path / "gm"
    recipe = str(_recipe(tmp_path))
    assert cli.main(["fit-grains", str(tess), "--recipe", recipe, "--out", str(out), "--depth-aware"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"]["depth_aware"] is True and meta["training"]["config"]["depth_aware"] is True
    assert meta["depth"]["reference_radius_px"] > 30
    rep = tmp_path / "report"
    args = [
        "describe-grains",
        str(out),
        "--against",
        str(tess),
        "--out",
        str(rep),
        "--samples",
        "2",
        "--radius-px",
        "30",
    ]
    assert cli.main(args) == 0
    assert json.loads((rep / "radial_bins.json").read_text())["model_depth_aware"] is True
    md = (rep / "radial_bins.md").read_text()
    assert md.count("\n| 0.") == 3 and "| 0.67–1.00 |" in md
    study = json.loads((rep / "cut_height.json").read_text())
    assert all(len(h["radial_bins"]) == 3 for h in study["heights"])
    assert cli.main(["sample-grains", str(out), "--size-px", "16", "--out", str(tmp_path / "g.h5")]) == 0


def test_recipe_key_depth_aware_reaches_the_trainer(tess, tmp_path):
    """grains.generator.depth_aware in a recipe run: the stage passes the sections' radii."""
    from nmc_dataset.pipeline._recipe import run_recipe

    grains = json.loads(json.dumps(TINY))
    grains.update(tessellations=str(tess), describe_samples=1)
    grains["generator"]["depth_aware"] = True
    ctx = run_recipe(_recipe(tmp_path, grains, name="run.yaml"), tmp_path / "run")
    meta = json.loads((ctx.outputs["grain_model"] / "model.json").read_text())
    assert meta["architecture"]["depth_aware"] is True and meta["depth"]["reference_radius_px"] > 30


@pytest.mark.parametrize("bad", ["-1", "1001"])
def test_describe_min_confident_px_out_of_range(tess, tmp_path, capsys, bad):
    from nmc_dataset.calibration._generator import GNet

    GrainModel(GNet(hidden=(8,)), 0.002, 0.05).write(tmp_path / "gm")
    rep = tmp_path / "rep"
    code = cli.main(
        ["describe-grains", str(tmp_path / "gm"), "--against", str(tess), "--out", str(rep), "--min-confident-px", bad]
    )
    assert code == 2 and "--min-confident-px must be an integer in [0, 1000]" in _err(capsys) and not rep.exists()
