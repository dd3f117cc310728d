"""GAN loop: determinism, checkpoint/resume equality, NaN handling, logs, intensity adaptation."""

import csv
import dataclasses

import numpy as np
import pytest
import torch

from nmc_dataset.calibration import _gan as gan
from nmc_dataset.calibration._gan import TrainConfig, train
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.errors import InputError, TrainingError
from nmc_dataset.tessellation._gbpd import GBPD

TINY = TrainConfig.from_flat(
    hidden=(16,),
    d_width=4,
    d_blocks=2,
    d_dense=8,
    grid=16,
    channels=6,
    p_max_px=40,
    margin_px=8,
    epochs=3,
    steps_per_epoch=2,
    batch_g=6,
    batch_d=6,
    ng_gt_cutouts=12,
    lr=1e-3,
)


def _fits(seed=0, n=500, half=80.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        s = rng.uniform(-half, half, (n, 2))
        out.append(
            GBPD(s, np.column_stack([rng.uniform(0.2, 0.4, n), rng.uniform(0.8, 1.2, n)]), rng.uniform(1, 10, n))
        )
    return out


def _weights(model):
    return {k: v.clone() for k, v in model.gnet.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_and_resume_gives_identical_weights(tmp_path):
    fits = _fits()
    torch.manual_seed(4)
    init = {k: v.clone() for k, v in gan.GNet(hidden=TINY.generator.hidden).state_dict().items()}
    full = train(fits, 0.05, TINY, seed=4, out=tmp_path / "a")
    assert not _equal(init, _weights(full))  # it trained
    # interrupted after epoch 1, then resumed (in another trainer): same bytes as uninterrupted,
    # which also shows the run is a pure function of the seed
    part = train(fits, 0.05, TINY, seed=4, out=tmp_path / "b", stop_after=1)
    assert part.training["epochs_done"] == 1 and not (tmp_path / "b" / "model.json").exists()
    assert (tmp_path / "b" / "training" / "checkpoint.json").is_file()
    resumed = train(fits, 0.05, TINY, seed=4, out=tmp_path / "b", resume=True)
    assert _equal(_weights(full), _weights(resumed))
    assert resumed.intensity_per_px3 == full.intensity_per_px3
    loaded = GrainModel.load(tmp_path / "b")
    assert _equal(_weights(full), _weights(loaded))
    assert loaded.training["epochs_done"] == 3
    rows = list(csv.DictReader(open(tmp_path / "b" / "training" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(gan.LOG_COLUMNS) <= set(rows[0])
    assert (tmp_path / "b" / "training" / "training.png").stat().st_size > 1000


def test_weight_average_is_kept_resumes_exactly_and_epochs_are_reported(tmp_path):
    """ema_decay > 0: the model holds the averaged generator (not the last iterate), an
    interrupted run resumes to the same averaged weights, and on_epoch sees every epoch."""

    cfg = TINY.replace(ema_decay=0.9)
    fits = _fits()
    seen = []
    full = train(
        fits, 0.05, cfg, seed=4, out=tmp_path / "a", on_epoch=lambda e, m: seen.append((e, m.intensity_per_px3))
    )
    assert [e for e, _ in seen] == [1, 2, 3] and seen[-1][1] == full.intensity_per_px3
    last_iterate = train(fits, 0.05, TINY, seed=4)  # same seed, same draws, no averaging
    assert not _equal(_weights(full), _weights(last_iterate))
    # the average lies between the initial weights and the last iterate (elementwise, loosely)
    torch.manual_seed(4)
    init = gan.GNet(hidden=TINY.generator.hidden).state_dict()
    w_full, w_last = _weights(full), _weights(last_iterate)
    for k in w_full:
        assert torch.linalg.norm(w_full[k] - w_last[k]) < torch.linalg.norm(init[k] - w_last[k]) + 1e-6
    train(fits, 0.05, cfg, seed=4, out=tmp_path / "b", stop_after=2)
    resumed = train(fits, 0.05, cfg, seed=4, out=tmp_path / "b", resume=True)
    assert _equal(_weights(full), _weights(resumed))
    assert _equal(_weights(full), _weights(GrainModel.load(tmp_path / "b")))


def test_cosine_schedule_lowers_both_learning_rates_to_zero():

    cfg = TINY.replace(lr=1e-3, lr_schedule="cosine", epochs=2, steps_per_epoch=5)
    tr = gan.Trainer(_fits(), 0.05, cfg, 0)
    lrs = [tr.set_lr(e, s) for e in (1, 2) for s in range(1, 6)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(5e-4) and 0 < lrs[-1] < 3e-5
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert tr.opt_g.param_groups[0]["lr"] == tr.opt_d.param_groups[0]["lr"] == lrs[-1]
    const = gan.Trainer(_fits(), 0.05, TINY, 0)
    assert const.set_lr(3, 2) == TINY.training.lr
    with pytest.raises(InputError, match="lr_schedule"):
        gan.Trainer(_fits(), 0.05, TINY.replace(lr_schedule="linear"), 0)
    with pytest.raises(InputError, match="ema_decay"):
        gan.Trainer(_fits(), 0.05, TINY.replace(ema_decay=1.0), 0)


def test_r1_penalty_regularises_the_discriminator_step_and_resumes_exactly(tmp_path):
    """d_r1 > 0 adds (gamma/2) E||grad_x D(x_real)||^2 to D's loss: the penalty equals a plain
    per-sample recomputation, D's weights change differently than without it (G's do not), and an
    interrupted run resumes to the same weights."""

    cfg = TINY.replace(d_r1=10.0, d_skip_below=0.0)
    tr = gan.Trainer(_fits(), 0.05, cfg, 0)
    tr.ng_gt = tr.measure_ng_gt()
    ref = gan.Trainer(_fits(), 0.05, cfg.replace(d_r1=0.0), 0)
    ref.ng_gt = ref.measure_ng_gt()
    tr.step(1, 1)
    ref.step(1, 1)
    assert _equal(_weights(tr), _weights(ref))  # G steps come first and do not see the penalty
    assert not _equal(dict(tr.disc.state_dict()), dict(ref.disc.state_dict()))
    # the penalty against a plain per-sample loop (batch-norm in eval mode so samples do not interact)
    disc = tr.disc.eval()
    x = torch.rand(5, TINY.cutouts.channels, TINY.cutouts.grid, TINY.cutouts.grid)
    xv = x.clone().requires_grad_(True)
    fast = gan.r1_penalty(disc(xv), xv)
    assert fast.requires_grad  # it is differentiated again in D's step
    slow = 0.0
    for i in range(5):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(disc(xi).sum(), xi)
        slow += float(gi.pow(2).sum()) / 5
    assert fast.detach().item() == pytest.approx(slow, rel=1e-5)
    with pytest.raises(InputError, match="d_r1"):
        gan.Trainer(_fits(), 0.05, TINY.replace(d_r1=-1.0), 0)
    full = train(_fits(), 0.05, cfg, seed=2, out=tmp_path / "a")
    train(_fits(), 0.05, cfg, seed=2, out=tmp_path / "b", stop_after=1)
    resumed = train(_fits(), 0.05, cfg, seed=2, out=tmp_path / "b", resume=True)
    assert _equal(_weights(full), _weights(resumed))


def test_holdout_check_logs_discriminator_scores_without_changing_the_run(tmp_path):
    """holdout_sections = 1 trains on the other sections exactly as if the held-out one were not
    given (the check has its own random stream) and logs D's mean outputs per epoch."""

    fits = _fits() + _fits(seed=1)[:1]
    cfg = TINY.replace(holdout_sections=1)
    held = train(fits, 0.05, cfg, seed=3, out=tmp_path / "h")
    plain = train(fits[:-1], 0.05, TINY, seed=3)
    assert _equal(_weights(held), _weights(plain))
    assert held.training["sections"] == 2 and held.training["holdout_sections"] == 1
    rows = list(csv.DictReader(open(tmp_path / "h" / "training" / "log.csv")))
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in ("d_real_train", "d_real_holdout", "d_fake"))
    train(fits, 0.05, TINY, seed=3, out=tmp_path / "p")
    assert list(csv.DictReader(open(tmp_path / "p" / "training" / "log.csv")))[0]["d_real_holdout"] == ""
    with pytest.raises(InputError, match="holdout_sections"):
        train(fits, 0.05, TINY.replace(holdout_sections=3), seed=3)


def test_nan_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    fits = _fits()
    train(fits, 0.05, TINY, seed=1, out=tmp_path / "m", stop_after=1)
    real = gan.t3d_batch

    def poisoned(*a, **k):
        imgs, *rest = real(*a, **k)
        return (imgs * float("nan"), *rest)

    monkeypatch.setattr(gan, "t3d_batch", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 2 step 1"):
        train(fits, 0.05, TINY, seed=1, out=tmp_path / "m", resume=True)
    monkeypatch.setattr(gan, "t3d_batch", real)
    tr = gan.Trainer(fits, 0.05, TINY, 1)
    tr.load(tmp_path / "m" / "training")
    assert tr.epoch == 1 and all(torch.isfinite(p).all() for p in tr.gnet.parameters())


def test_intensity_adaptation_moves_towards_matching_ng():
    """With G frozen (lr = 0) the update mu <- mu (0.5 + 0.5 NG_gt / NG_gen) alone must bring the
    generated number of visible grains per area close to the measured one: start 4x too dense,
    end within 15 % (cutout noise with these batch sizes is ~5 %)."""
    fits = _fits(n=900, half=100.0)
    cfg = TrainConfig.from_flat(
        hidden=(16,),
        d_width=4,
        d_blocks=2,
        d_dense=8,
        grid=16,
        channels=6,
        p_max_px=40,
        margin_px=8,
        epochs=1,
        steps_per_epoch=12,
        batch_g=16,
        batch_d=8,
        ng_gt_cutouts=64,
        lr=1e-12,
        intensity_init_per_px3=0.02,
    )
    m = train(fits, 0.05, cfg, seed=0)
    last = m.training["final"]
    tr = gan.Trainer(fits, 0.05, cfg, 0)
    tr.mu = m.intensity_per_px3
    tr.gnet.load_state_dict(m.gnet.state_dict())
    _, ng, _ = tr.fake(64)
    assert m.intensity_per_px3 < 0.02 / 2
    assert abs(ng.mean() / last["ng_gt"] - 1) < 0.15, (ng.mean(), last["ng_gt"])


def test_config_from_recipe_section():
    cfg = TrainConfig.from_section(
        {
            "kappa": 8,
            "intensity_init_per_px3": 0.002,
            "generator": {"hidden": [8, 8], "r_bounds": [1, 5]},
            "discriminator": {"width": 4},
            "cutouts": {"beta": 0.3},
            "training": {"epochs": 2, "d_skip_below": 0.32, "adam_betas": [0.9, 0.99]},
        }
    )
    assert (
        cfg.kappa == 8
        and cfg.generator.hidden == (8, 8)
        and cfg.generator.r_bounds == (1, 5)
        and cfg.discriminator.width == 4
    )
    assert (
        cfg.cutouts.beta == 0.3
        and cfg.training.epochs == 2
        and cfg.training.d_skip_below == 0.32
        and cfg.training.adam_betas == (0.9, 0.99)
    )
    assert (
        cfg.training.steps_per_epoch == 100
        and cfg.training.batch_g == 64
        and cfg.training.batch_d == 128
        and cfg.training.lr == 1e-4
    )


def _sections(fits, radius=60.0):
    """SectionFits of 2D GBPDs on a disc (the measured sections that selection scores against)."""
    from nmc_dataset.calibration._fit2d import SectionFit

    size = 2 * int(radius) + 3
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= radius**2
    return [
        SectionFit(f"s{i}", g, 0.05, 1.0, mask, np.array([c, c]), np.arange(1, g.n + 1)) for i, g in enumerate(fits)
    ]


def test_selection_keeps_the_best_scoring_epoch_of_an_unchanged_run(tmp_path):
    """select_sections > 0: every epoch's score equals a plain recomputation (scipy W1 / numpy std
    per descriptor, worst of four); the model holds the generator and mu of the best epoch, which
    are those of a run without selection stopped there (selection draws from its own stream);
    an interrupted run resumes to the same choice."""

    from scipy.stats import wasserstein_distance

    from nmc_dataset.calibration import _descriptors as De

    cfg = TINY.replace(epochs=4, select_sections=2, select_min_area_px=3)
    fits = _fits()
    secs = _sections(fits)
    sel = train(fits, 0.05, cfg, seed=3, out=tmp_path / "a", sections=secs)
    rows = list(csv.DictReader(open(tmp_path / "a" / "training" / "log.csv")))
    scores = [float(r["select_score"]) for r in rows]
    best = int(np.argmin(scores)) + 1
    assert sel.training["selected_epoch"] == best and sel.training["select_score"] == min(scores)
    assert GrainModel.load(tmp_path / "a").training["selected_epoch"] == best
    plain = train(fits, 0.05, cfg.replace(select_sections=0), seed=3, stop_after=best)
    assert _equal(_weights(sel), _weights(plain)) and sel.intensity_per_px3 == plain.intensity_per_px3
    # the kept epoch's score, recomputed plainly
    measured = De.pooled(De.section_descriptors(f.label_image(), f.center_px, 3) for f in secs)
    rng = np.random.default_rng([3, best, 0x5E1])
    sims = De.model_sections(plain, rng, 2, secs[0].radius_px)  # all sections have the same disc
    simulated = De.pooled(De.section_descriptors(lab, c, 3) for lab, c in sims)
    terms = [wasserstein_distance(measured[k], simulated[k]) / np.std(measured[k]) for k in De.DESCRIPTORS_2D]
    assert min(scores) == pytest.approx(max(terms), rel=1e-9)
    assert De.section_score(measured, simulated, "mean") == pytest.approx(np.mean(terms), rel=1e-9)
    assert De.section_score(measured, measured) == 0.0
    # interrupted after epoch 2, resumed: the same epoch and weights are kept
    train(fits, 0.05, cfg, seed=3, out=tmp_path / "b", stop_after=2, sections=secs)
    resumed = train(fits, 0.05, cfg, seed=3, out=tmp_path / "b", resume=True, sections=secs)
    assert resumed.training["selected_epoch"] == best and _equal(_weights(sel), _weights(resumed))
    # bad input
    with pytest.raises(InputError, match="measured sections"):
        train(fits, 0.05, cfg, seed=3)
    with pytest.raises(InputError, match="select_metric"):
        train(fits, 0.05, cfg.replace(select_metric="median"), seed=3, sections=secs)
    for bad in (-1, 1001, 2.5):
        with pytest.raises(InputError, match="select_min_confident_px"):
            train(fits, 0.05, cfg.replace(select_min_confident_px=bad), seed=3, sections=secs)


@pytest.mark.slow
def test_selection_applies_the_instrument_limit_of_sections_that_lost_pixels(tmp_path):
    """Measured sections with confident pixels recorded (an instrument that lost some): the
    selection scores the generator's sections after the same loss (calibrated on them), so the
    scores differ from those against the same sections without the loss; the training run itself
    is unchanged."""
    import dataclasses

    from nmc_dataset.ebsd._detection import simulate_confident

    cfg = TINY.replace(epochs=2, select_sections=2, select_min_area_px=3)
    fits = _fits()
    secs = _sections(fits)
    rng = np.random.default_rng(0)
    lossy = [
        dataclasses.replace(f, confident=simulate_confident(f.label_image(), f.mask, (1.0, 0.02, 0.01), rng))
        for f in secs
    ]
    a = train(fits, 0.05, cfg, seed=3, out=tmp_path / "a", sections=secs)
    b = train(fits, 0.05, cfg, seed=3, out=tmp_path / "b", sections=lossy)
    sa = [float(r["select_score"]) for r in csv.DictReader(open(tmp_path / "a" / "training" / "log.csv"))]
    sb = [float(r["select_score"]) for r in csv.DictReader(open(tmp_path / "b" / "training" / "log.csv"))]
    assert all(np.isfinite(sb)) and sa != sb
    assert [r["loss_g"] for r in csv.DictReader(open(tmp_path / "a" / "training" / "log.csv"))] == [
        r["loss_g"] for r in csv.DictReader(open(tmp_path / "b" / "training" / "log.csv"))
    ]
    assert a.training["selected_epoch"] in (1, 2) and b.training["selected_epoch"] in (1, 2)
    # interrupted after epoch 1 and resumed: the calibrated rates come back from the checkpoint,
    # so every score (and the kept epoch) is the uninterrupted run's
    train(fits, 0.05, cfg, seed=3, out=tmp_path / "c", stop_after=1, sections=lossy)
    c = train(fits, 0.05, cfg, seed=3, out=tmp_path / "c", resume=True, sections=lossy)
    sc = [float(r["select_score"]) for r in csv.DictReader(open(tmp_path / "c" / "training" / "log.csv"))]
    assert sc == sb and c.training["selected_epoch"] == b.training["selected_epoch"]
    # the criterion as a recipe key: 0 turns the limit off (the scores of the sections without loss,
    # scored without the confident-pixel criterion)
    off = cfg.replace(select_min_confident_px=0)
    train(fits, 0.05, off, seed=3, out=tmp_path / "d", sections=lossy)
    sd = [float(r["select_score"]) for r in csv.DictReader(open(tmp_path / "d" / "training" / "log.csv"))]
    assert sd == sa
    assert "select_min_confident_px" not in cfg.to_dict() and off.to_dict()["select_min_confident_px"] == 0


def test_config_mirrors_the_recipe_schema_and_keeps_the_stored_form():
    """Every key of the grains section's groups is a field of its config group, and the stored
    (flat) form keeps its names, so earlier models and checkpoints still resume."""
    import json
    from importlib import resources

    schema = json.loads(resources.files("nmc_dataset").joinpath("schemas/recipe/grains.schema.json").read_text())
    cfg = TrainConfig()
    for group in ("generator", "discriminator", "cutouts", "training"):
        keys = set(schema["properties"][group]["properties"]) - {"restarts"}
        fields = {f.name for f in dataclasses.fields(getattr(cfg, group))} - {"prune"}
        assert keys == fields, group
    flat = cfg.to_dict()
    assert len(flat) == 35 and flat["d_width"] == 32 and flat["epochs"] == 200 and flat["margin_px"] == 16.0
    assert TrainConfig.from_flat(**flat) == cfg
    assert cfg.replace(epochs=3, d_width=8).training.epochs == 3
    section = {"kappa": 8, "generator": {"hidden": [8]}, "cutouts": {"beta": 0.5}, "training": {"restarts": 2}}
    assert TrainConfig.from_section(section) == TrainConfig.from_flat(kappa=8, hidden=(8,), beta=0.5)


def test_depth_aware_training_needs_radii_is_deterministic_and_stores_the_option(tmp_path):
    cfg = TINY.replace(depth_aware=True, epochs=2)
    assert cfg.to_dict()["depth_aware"] is True and "depth_aware" not in TINY.to_dict()
    fits = _fits()
    with pytest.raises(InputError, match="radius of every section"):
        train(fits, 0.05, cfg, seed=1)
    tr = gan.Trainer(fits, 0.05, cfg, seed=1, radii_px=[70.0, 90.0])
    assert tr.gnet.depth_aware and tr.disc.config()["channels"] == TINY.cutouts.channels + 1
    m1 = train(fits, 0.05, cfg, seed=1, radii_px=[70.0, 90.0], out=tmp_path / "a")
    m2 = train(fits, 0.05, cfg, seed=1, radii_px=[70.0, 90.0])
    assert _equal(_weights(m1), _weights(m2))
    assert m1.depth_aware and m1.reference_radius_px == 80.0
    back = GrainModel.load(tmp_path / "a")
    assert back.depth_aware and back.training["config"]["depth_aware"] is True
    # resuming checks the option like every other hyper-parameter
    with pytest.raises(InputError, match="other hyper-parameters"):
        train(fits, 0.05, cfg.replace(depth_aware=False), seed=1, out=tmp_path / "a", resume=True)


def test_allocator_settings_change_no_result(tmp_path):
    """train() keeps freed memory in the heap (glibc's mallopt) to save the page faults of every
    step; a run without that setting, in a fresh process, gives the same weights."""
    import os
    import platform
    import subprocess
    import sys

    from nmc_dataset._util import retain_freed_memory

    script = """
import hashlib, sys
import numpy as np, torch
from nmc_dataset.calibration import _gan as gan
from nmc_dataset.tessellation._gbpd import GBPD
if sys.argv[1] == "off":
    gan.retain_freed_memory = lambda: False
rng = np.random.default_rng(0)
fits = [GBPD(rng.uniform(-80, 80, (500, 2)), np.column_stack([rng.uniform(0.2, 0.4, 500),
        rng.uniform(0.8, 1.2, 500)]), rng.uniform(1, 10, 500)) for _ in range(2)]
cfg = gan.TrainConfig.from_flat(hidden=(16,), d_width=4, d_blocks=2, d_dense=8, grid=16, channels=6,
        p_max_px=40, margin_px=8, epochs=1, steps_per_epoch=2, batch_g=6, batch_d=6, ng_gt_cutouts=12, lr=1e-3)
m = gan.train(fits, 0.05, cfg, seed=4)
h = hashlib.sha256()
for k, v in sorted(m.gnet.state_dict().items()):
    h.update(v.numpy().tobytes())
print(h.hexdigest(), m.intensity_per_px3)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = {
        mode: subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, env=env
        ).stdout.split()
        for mode in ("on", "off")
    }
    assert out["on"] == out["off"] and len(out["on"]) == 2
    # glibc takes the settings; other allocators are left alone (False, no error)
    assert retain_freed_memory() == (platform.libc_ver()[0] == "glibc")
