"""Closed-loop validation of the stereological calibration, through the user's path.

1. ``nmc-dataset phantom-ebsd`` slices known 3D radial teacher tessellations
   (:func:`nmc_dataset.synthetic._ebsd.radial_teacher_gbpd`) through central planes (plus one
   off-centre plane that import must reject) and writes them as ``.ang`` / ``.ctf`` scans;
2. ``nmc-dataset import-ebsd`` reconstructs the grains and selects the central sections;
3. ``nmc-dataset fit-sections`` fits the 2D tessellations;
4. ``nmc-dataset fit-grains`` trains the 3D model on them (a recipe written here holds the
   schedule; ``--paper-arch`` uses recipes/paper.yaml's generator and discriminator);
5. the saved model (loaded from disk as a user would) is compared with the teacher on
   * 2D descriptors of fresh central sections: Wasserstein-1 per descriptor (area, η, α, chords),
     on grains of at least 5 px on every side (the import's detection limit),
   * 3D statistics no slice shows directly: median grain volume, mean radial alignment, mean 3D
     elongation (grains of central cubes, border grains excluded),
   with two yardsticks: independent teacher samples (sampling noise) and isotropic Laguerre cells
   with the teacher's intensity (the baseline of earlier particle models), and one more row, the
   **data** the model was trained on: the fitted 2D tessellations themselves against the teacher.
   No model can beat its data by more than luck: with the default (``--instrument realistic``)
   synthetic EBSD, half the junction pixels get a low CI, small grains that lose them fall under
   import-ebsd's 5 px limit, and the measured sections sit 2-4x the sampling noise away from
   the teacher's true sections before any training. ``--instrument ideal`` (``phantom-ebsd
   --low-ci 0,0,0``) indexes every pixel: the fitted sections are then as close to the teacher as a
   second teacher sample, and the loop tests the stereology alone.

Every 2D distance is a mean over ``--repeats`` (16) independent pairs of samples of the same size
(``--eval-sections`` sections each), so the noise yardstick is not one lucky or unlucky pair (with 4
pairs it was itself ~20 % uncertain); the 3D statistics pool ``--cubes`` cubes per model. The
model trains on ``--particles`` (8) sections: the more sections, the closer the data to the truth.
Targets: 2D W1 <= 1.5 x noise and below the baseline; median volume within 20 %;
mean radial alignment within 0.05.

``--seeds 0-11 --jobs 6`` repeats the loop per seed (new teacher sections and a new training run
each) in parallel processes and prints the run-to-run spread: how often every target is met.

**Depth-aware loop** (``--teacher depth``): the truth is
:func:`nmc_dataset.synthetic._ebsd.depth_teacher_gbpd` (equiaxed grains at the core, radial ones
at the rim); its true central sections (every pixel indexed, phantom-ebsd has no depth teacher)
go through fit-sections, then ``fit-grains`` trains the paper's model and the depth-aware one
(``--depth-aware``) with the same recipe and seed. Both are compared with the teacher per shell of
normalised radius (inner, middle, outer third): the 2D descriptors of the grains of central
sections (W1 over the teacher-vs-teacher noise, mean over ``--repeats`` pairs) and the 3D
statistics of the grains of whole particles (cubes covering the ball, grains by the shell of
their centroid). Targets per shell as above (2D W1 <= 1.5 x noise, median volume within 20 %,
mean radial alignment within 0.05).

Usage: python benchmarks/closed_loop_grains.py [--instrument ideal] [--paper-arch --epochs 20 --steps 100 ...]
       python benchmarks/closed_loop_grains.py ... --seeds 0-5 --jobs 6 [--device cuda]
       python benchmarks/closed_loop_grains.py --data-only [--instrument ideal] [--dilate-px 2] [--seeds 0-11 --jobs 2]
       python benchmarks/closed_loop_grains.py --teacher depth [--radius 60 --particles 6 --epochs 12 --steps 25 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from nmc_dataset.calibration import _descriptors as De
from nmc_dataset.calibration._fit2d import fit_section, read_tessellations, section_from_gbpd, write_tessellations
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.calibration._radial_bins import pooled_bins, radial_bin_descriptors
from nmc_dataset.cli._main import main as cli
from nmc_dataset.compare import distribution_distances
from nmc_dataset.synthetic import _yardsticks as Y
from nmc_dataset.synthetic._ebsd import depth_teacher_gbpd

TEACHER_INTENSITY = 0.0018  # radial_teacher_gbpd's default, the paper's mu_1
MIN_AREA_PX = 5  # import-ebsd's --min-grain-px default: smaller grains never reach the training data


def run(argv) -> None:
    if cli(argv) != 0:
        raise SystemExit(f"nmc-dataset {' '.join(argv)} failed")


def user_path(work: Path, args) -> tuple[GrainModel | None, dict]:
    """phantom-ebsd -> import-ebsd -> fit-sections -> fit-grains; returns the model and timings
    (no model with ``--data-only``, which stops after fit-sections)."""
    t = {}
    t0 = time.perf_counter()
    instrument = ["--instrument", "default" if args.instrument == "realistic" else args.instrument]
    run(
        [
            "phantom-ebsd",
            "--out",
            str(work / "scans"),
            "--n-central",
            str(args.particles),
            "--n-off-center",
            "1",
            "--radius-px",
            str(args.radius),
            "--formats",
            "ang,ctf",
            "--seed",
            str(args.seed),
            *instrument,
        ]
    )
    scans = sorted(str(p) for p in (work / "scans").iterdir() if p.suffix in (".ang", ".ctf"))
    run(
        [
            "import-ebsd",
            *scans,
            "--out",
            str(work / "sections"),
            "--dilate-px",
            str(args.dilate_px),
            "--fill",
            args.fill,
        ]
    )
    t["import"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(
        [
            "fit-sections",
            str(work / "sections"),
            "--out",
            str(work / "tessellations"),
            "--steps",
            str(args.fit_steps),
            "--seed",
            str(args.seed),
        ]
    )
    t["fit_sections"] = time.perf_counter() - t0
    if args.data_only:
        return None, t
    recipe = training_recipe(args, "closed-loop", holdout_sections=args.holdout_sections)
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.perf_counter()
    run(
        [
            "fit-grains",
            str(work / "tessellations"),
            "--recipe",
            str(work / "recipe.yaml"),
            "--out",
            str(work / "model"),
            "--device",
            args.device,
            "--seed",
            str(args.seed if args.train_seed is None else args.train_seed),
            "--restarts",
            str(args.restarts),
        ]
    )
    t["fit_grains"] = time.perf_counter() - t0
    return GrainModel.load(work / "model"), t


def sample_2d(sampler, rng, n, radius):
    """Descriptors of ``n`` central sections at import-ebsd's detection limit (grains >= 5 px)."""
    return De.pooled(
        De.section_descriptors(lab, c, MIN_AREA_PX) for lab, c in De.model_sections(sampler, rng, n, radius)
    )


def sample_3d(sampler, rng, cube, n_cubes=2):
    stats = [De.grain_stats_3d(*De.volume_labels(sampler, rng, cube)) for _ in range(n_cubes)]
    return {k: np.concatenate([st[k] for st in stats]) for k in ("volume_px", "radial_alignment", "elongation")}


def mean_w1(ref: list, other, key: str) -> float:
    """Mean Wasserstein-1 of descriptor ``key`` between ``ref[i]`` and ``other[i]`` (a list of
    samples, paired) or ``other`` itself (one sample, compared with every ``ref[i]``)."""
    others = other if isinstance(other, list) else [other] * len(ref)
    return float(np.mean([distribution_distances(a[key], b[key])["wasserstein1"] for a, b in zip(ref, others)]))


def data_ceiling(data: dict, radius: float, n_sections: int, repeats: int, seed: int) -> dict:
    """Mean W1 of the training sections (``data``) and of a second teacher sample to teacher samples."""
    rng = np.random.default_rng(seed)
    teacher = Y.teacher_sampler(radius)
    ref = [sample_2d(teacher, rng, n_sections, radius) for _ in range(2 * repeats)]
    return {
        k: {"noise": mean_w1(ref[:repeats], ref[repeats:], k), "data": mean_w1(ref[:repeats], data, k)}
        for k in De.DESCRIPTORS_2D
    }


def evaluate(
    model, radius: float, n_sections: int, repeats: int, cube: int, seed: int, data=None, n_cubes: int = 4
) -> dict:
    """Mean W1 over ``repeats`` pairs (teacher sample i vs a sample of each model) + 3D statistics
    of ``n_cubes`` cubes per model.

    ``data`` (descriptors of the training sections, one sample) is compared with every teacher
    sample too (the ``"data"`` entry of each 2D row)."""
    rng = np.random.default_rng(seed)
    teacher = Y.teacher_sampler(radius)
    samplers = {"teacher": teacher, "fitted": model, "laguerre": Y.laguerre_sampler(TEACHER_INTENSITY)}
    ref = [sample_2d(teacher, rng, n_sections, radius) for _ in range(repeats)]
    table = {}
    other = {name: [sample_2d(s, rng, n_sections, radius) for _ in range(repeats)] for name, s in samplers.items()}
    for k in De.DESCRIPTORS_2D:
        table[k] = {("noise" if name == "teacher" else name): mean_w1(ref, other[name], k) for name in samplers}
        if data is not None:
            table[k]["data"] = mean_w1(ref, data, k)
    d3 = {name: sample_3d(s, rng, cube, n_cubes=n_cubes) for name, s in samplers.items()}
    d3["teacher_b"] = sample_3d(teacher, rng, cube, n_cubes=n_cubes)
    for k, f in (
        ("median_volume_px", lambda d: float(np.median(d["volume_px"]))),
        ("mean_radial_alignment", lambda d: float(np.nanmean(d["radial_alignment"]))),
        ("mean_elongation_3d", lambda d: float(np.nanmean(d["elongation"]))),
    ):
        table[k] = {name: f(d) for name, d in d3.items()}
    return table


def verdicts(table: dict) -> dict:
    """Which targets are met (``None`` where no target is set)."""
    out = {}
    for k in De.DESCRIPTORS_2D:
        r = table[k]
        out[k] = bool(r["fitted"] <= 1.5 * r["noise"] and r["fitted"] < r["laguerre"])
    out["median_volume_px"] = bool(
        abs(table["median_volume_px"]["fitted"] / table["median_volume_px"]["teacher"] - 1) <= 0.2
    )
    out["mean_radial_alignment"] = bool(
        abs(table["mean_radial_alignment"]["fitted"] - table["mean_radial_alignment"]["teacher"]) <= 0.05
    )
    out["mean_elongation_3d"] = None
    return out


def print_table(table: dict) -> None:
    ok = verdicts(table)
    word = {True: "met", False: "NOT met", None: ""}
    print(
        f"{'2D descriptor (mean W1 to teacher)':36s} {'noise':>9s} {'fitted':>9s} {'Laguerre':>9s} {'data':>9s} "
        f"{'fit/noise':>9s} {'data/noise':>10s}  target fit/noise <= 1.5"
    )
    for k in De.DESCRIPTORS_2D:
        r = table[k]
        data = r.get("data", float("nan"))
        print(
            f"{k:36s} {r['noise']:9.4f} {r['fitted']:9.4f} {r['laguerre']:9.4f} {data:9.4f} "
            f"{r['fitted'] / max(r['noise'], 1e-12):9.2f} {data / max(r['noise'], 1e-12):10.2f}  {word[ok[k]]}"
        )
    print(f"{'3D statistic':36s} {'teacher':>9s} {'teacher2':>9s} {'fitted':>9s} {'Laguerre':>9s}  target")
    for k, tol in (("median_volume_px", "rel 0.2"), ("mean_radial_alignment", "abs 0.05"), ("mean_elongation_3d", "-")):
        r = table[k]
        print(
            f"{k:36s} {r['teacher']:9.3f} {r['teacher_b']:9.3f} {r['fitted']:9.3f} {r['laguerre']:9.3f}  "
            f"{word[ok[k]]} ({tol})"
        )


def print_data_table(rows: dict, args, n_sections: int, n_grains: int) -> None:
    print(
        f"training sections ({args.instrument} instrument, import --fill {args.fill} "
        f"--dilate-px {args.dilate_px:g}): {n_sections} central sections of R = {args.radius:g} px, "
        f"{n_grains} grains of >= {MIN_AREA_PX} px"
    )
    print(f"{'2D descriptor (mean W1 to teacher)':36s} {'noise':>9s} {'data':>9s} {'data/noise':>10s}")
    for k, r in rows.items():
        print(f"{k:36s} {r['noise']:9.4f} {r['data']:9.4f} {r['data'] / max(r['noise'], 1e-12):10.2f}")


def _parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def spread(args) -> None:
    """One loop per seed (data and training), ``--jobs`` processes at a time; a table of the runs,
    with the training sections' own distances (``data``), and how many met every target."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    seeds = _parse_seeds(args.seeds)
    argv, skip = [], False
    for a in sys.argv[1:]:  # this command line without --seeds/--jobs/--json/--work
        if skip:
            skip = False
            continue
        if a in ("--seeds", "--jobs", "--json", "--work", "--seed"):
            skip = True
            continue
        if not a.startswith(("--seeds=", "--jobs=", "--json=", "--work=", "--seed=")):
            argv.append(a)
    with tempfile.TemporaryDirectory() as tmp:

        def one(seed):
            out = Path(tmp) / f"seed{seed}.json"
            cmd = [sys.executable, __file__, *argv, "--seed", str(seed), "--json", str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"seed {seed} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}", flush=True)
                return seed, None
            print(f"seed {seed} done", flush=True)
            return seed, json.loads(out.read_text())

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            runs = dict(pool.map(one, seeds))
    keys = list(De.DESCRIPTORS_2D)
    if args.data_only:
        print_data_spread(runs, seeds, keys, args.json)
        return
    print(
        f"{'seed':>4s} " + " ".join(f"{k:>10s}" for k in keys) + f" {'volume':>13s} {'alignment':>13s} "
        f"{'kept':>5s} {'all met':>7s}   data/noise"
    )
    n_all, rows = 0, {}
    for seed in seeds:
        r = runs.get(seed)
        if r is None:
            continue
        t, met = r["table"], r["met"]
        ok = all(v for v in met.values() if v is not None)
        n_all += ok
        ratio = [t[k]["fitted"] / t[k]["noise"] for k in keys]
        data = [t[k]["data"] / t[k]["noise"] for k in keys]
        rows[seed] = {
            "fit_over_noise": ratio,
            "data_over_noise": data,
            "all_met": ok,
            "met": met,
            "selected_epoch": r.get("selected_epoch"),
            "seconds": r["seconds"],
        }
        v, a = t["median_volume_px"], t["mean_radial_alignment"]
        print(
            f"{seed:4d} " + " ".join(f"{x:10.2f}" for x in ratio) + f" {v['fitted']:6.0f} ({v['teacher']:4.0f})"
            f" {a['fitted']:6.3f} ({a['teacher']:.3f}) {str(r.get('selected_epoch') or '-'):>5s}"
            f" {'yes' if ok else 'no':>7s}"
            "   " + " ".join(f"{x:.2f}" for x in data)
        )
    print(
        f"every target met in {n_all} of {len(rows)} runs; "
        + _worst_summary([max(row["fit_over_noise"]) for row in rows.values()])
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": rows, "all_met": n_all}, f, indent=2)


def _worst_summary(worst: list) -> str:
    """Median and range over runs of each run's worst 2D descriptor / noise."""
    if not worst:
        return "no run finished"
    return f"worst 2D descriptor / noise: median {np.median(worst):.2f}, range {min(worst):.2f}-{max(worst):.2f}"


def print_data_spread(runs: dict, seeds: list, keys: list, json_path) -> None:
    """``--data-only --seeds``: per seed, the training sections' distance to the teacher over the noise."""
    print(f"{'seed':>4s} " + " ".join(f"{k:>10s}" for k in keys) + "   (training sections' W1 / noise)")
    rows = {}
    for seed in seeds:
        r = runs.get(seed)
        if r is not None:
            rows[seed] = [r["table"][k]["data"] / r["table"][k]["noise"] for k in keys]
            print(f"{seed:4d} " + " ".join(f"{x:10.2f}" for x in rows[seed]))
    worst = [max(v) for v in rows.values()]
    print(
        f"training sections within 1.5 x noise on every descriptor in {sum(w <= 1.5 for w in worst)} of "
        f"{len(rows)} samples; " + _worst_summary(worst)
    )
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"runs": rows}, f, indent=2)


# --------------------------------------------------------------------------- depth-aware loop
SHELLS = ("inner", "middle", "outer")


def depth_teacher_sampler(radius: float, margin_px: float = 16.0):
    """``(rng, lo, hi) -> GBPD``: the depth teacher, a particle of radius ``radius`` (seeds up to
    ``margin_px`` beyond it, their depth clipped at the rim)."""

    def draw(rng, lo, hi):
        return depth_teacher_gbpd(rng, radius_px=radius, margin_px=margin_px)

    return draw


def depth_training_data(work: Path, args) -> list:
    """True central sections of ``--particles`` depth-teacher particles, fitted (fit-sections' fit)."""
    rng = np.random.default_rng(args.seed)
    teacher = depth_teacher_sampler(args.radius)
    size = 2 * int(np.ceil(args.radius)) + 5
    fits = []
    for i in range(args.particles):
        g = teacher(rng, None, None)
        sec = section_from_gbpd(g, size, args.radius, junction_fraction=0.0, section_id=f"depth-{i:02d}")
        fits.append(fit_section(sec, steps=args.fit_steps, seed=args.seed))
    write_tessellations(fits, work / "tessellations")
    return fits


def training_recipe(args, name: str, **training) -> dict:
    """The fit-grains recipe of a closed-loop run: the benchmark's schedule flags, plus ``training``."""
    arch = {} if args.paper_arch else {"generator": {"hidden": [64, 64]}, "discriminator": {"width": 8, "dense": 64}}
    return {
        "format_version": 1,
        "name": name,
        "seed": args.seed,
        "grains": {
            **arch,
            "cutouts": {"p_max_px": args.radius - 24, "ng_min_px": 5},
            "training": {
                "epochs": args.epochs,
                "steps_per_epoch": args.steps,
                "batch_g": args.batch_g,
                "batch_d": args.batch_d,
                "lr": args.lr,
                "lr_schedule": args.lr_schedule,
                "d_skip_below": args.d_skip_below,
                "d_r1": args.d_r1,
                **training,
                "select_sections": args.select_sections,
                "select_metric": args.select_metric,
                "ema_decay": args.ema,
                "ng_gt_cutouts": 256,
            },
        },
    }


def depth_recipe(args) -> dict:
    """The recipe of the depth loop: the same schedule flags, no hold-out option."""
    return training_recipe(args, "closed-loop-depth")


def depth_models(work: Path, args) -> tuple[dict, dict]:
    """fit-grains twice on the same tessellations and recipe: the paper's model and ``--depth-aware``."""
    (work / "recipe.yaml").write_text(yaml.safe_dump(depth_recipe(args), sort_keys=False))
    models, t, todo = {}, {}, []
    for name, extra in (("paper", []), ("depth", ["--depth-aware"])):
        if args.reuse and (work / f"model-{name}" / "model.json").is_file():
            models[name] = GrainModel.load(work / f"model-{name}")  # trained by an earlier run in --work
            continue
        argv = [
            "fit-grains",
            str(work / "tessellations"),
            "--recipe",
            str(work / "recipe.yaml"),
            "--out",
            str(work / f"model-{name}"),
            "--seed",
            str(args.seed if args.train_seed is None else args.train_seed),
            "--device",
            args.device,
            *extra,
        ]
        if args.reuse and (work / f"model-{name}" / "training" / "checkpoint.json").is_file():
            argv.append("--resume")  # an interrupted earlier run goes on from its last epoch
        todo.append((name, argv))
    if args.jobs > 1 and len(todo) > 1:
        # both models at once, each in its own process with --threads threads
        import subprocess
        import sys

        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        procs = {
            name: subprocess.Popen([sys.executable, "-m", "nmc_dataset.cli", *argv], env=env) for name, argv in todo
        }
        for name, p in procs.items():
            if p.wait() != 0:
                raise SystemExit(f"nmc-dataset fit-grains ({name}) failed")
            t[f"fit_grains_{name}"] = time.perf_counter() - t0
    else:
        for name, argv in todo:
            t0 = time.perf_counter()
            run(argv)
            t[f"fit_grains_{name}"] = time.perf_counter() - t0
    for name, _ in todo:
        models[name] = GrainModel.load(work / f"model-{name}")
    return models, t


def bins_2d(sampler, rng, n: int, radius: float) -> list[dict]:
    """Per-shell descriptors of ``n`` central sections (grains >= 5 px)."""
    secs = De.model_sections(sampler, rng, n, radius)
    return pooled_bins(radial_bin_descriptors(lab, c, radius, min_area_px=MIN_AREA_PX) for lab, c in secs)


def shells_3d(sampler, rng, radius: float, n_particles: int) -> list[dict]:
    """Per-shell 3D statistics of the grains of ``n_particles`` whole particles of radius ``radius``."""
    size = 2 * int(np.ceil(radius)) + 9
    stats = [De.grain_stats_3d(*De.volume_labels(sampler, rng, size, radius_px=radius)) for _ in range(n_particles)]
    pooled3 = {k: np.concatenate([st[k] for st in stats]) for k in stats[0]}
    return De.shell_stats_3d(pooled3, radius)


def depth_evaluate(models: dict, radius: float, n_sections: int, repeats: int, n_particles: int, seed: int) -> dict:
    """Per shell: mean W1 of each 2D descriptor (noise, paper, depth) and the 3D statistics."""
    rng = np.random.default_rng(seed)
    teacher = depth_teacher_sampler(radius)
    ref = [bins_2d(teacher, rng, n_sections, radius) for _ in range(repeats)]
    samplers = {"noise": teacher, **models}
    other = {name: [bins_2d(s, rng, n_sections, radius) for _ in range(repeats)] for name, s in samplers.items()}
    table = {"2d": [], "3d": []}
    for b in range(len(SHELLS)):
        row = {}
        for k in De.DESCRIPTORS_2D:
            row[k] = {
                name: float(
                    np.mean(
                        [
                            distribution_distances(ref[i][b][k], other[name][i][b][k])["wasserstein1"]
                            for i in range(repeats)
                        ]
                    )
                )
                for name in samplers
            }
        row["n_grains"] = int(np.mean([len(r[b]["area_px"]) for r in ref]))
        table["2d"].append(row)
    d3 = {name: shells_3d(s, rng, radius, n_particles) for name, s in {"teacher": teacher, **models}.items()}
    d3["teacher_b"] = shells_3d(teacher, rng, radius, n_particles)
    for b in range(len(SHELLS)):
        table["3d"].append(
            {
                k: {name: d3[name][b][k] for name in d3}
                for k in ("median_volume_px", "mean_radial_alignment", "mean_elongation", "n_grains")
            }
        )
    return table


def depth_verdicts(table: dict, name: str) -> list[dict]:
    """Per shell, which targets model ``name`` meets."""
    out = []
    for r2, r3 in zip(table["2d"], table["3d"]):
        v = {k: bool(r2[k][name] <= 1.5 * r2[k]["noise"]) for k in De.DESCRIPTORS_2D}
        vol, al = r3["median_volume_px"], r3["mean_radial_alignment"]
        v["median_volume_px"] = bool(vol[name] is not None and abs(vol[name] / vol["teacher"] - 1) <= 0.2)
        v["mean_radial_alignment"] = bool(al[name] is not None and abs(al[name] - al["teacher"]) <= 0.05)
        out.append(v)
    return out


def print_depth_table(table: dict) -> None:
    ver = {name: depth_verdicts(table, name) for name in ("paper", "depth")}
    mark = {True: "ok", False: "NO"}
    print("2D, per shell of normalised radius: mean W1 to the teacher / teacher noise (target <= 1.5)")
    print(f"{'shell':7s} {'descriptor':12s} {'grains':>6s} {'noise W1':>9s} {'paper':>9s} {'depth':>9s}")
    for b, r in enumerate(table["2d"]):
        for k in De.DESCRIPTORS_2D:
            n = max(r[k]["noise"], 1e-12)
            print(
                f"{SHELLS[b]:7s} {k:12s} {r['n_grains']:6d} {r[k]['noise']:9.4f} "
                f"{r[k]['paper'] / n:6.2f} {mark[ver['paper'][b][k]]:2s} {r[k]['depth'] / n:6.2f} "
                f"{mark[ver['depth'][b][k]]:2s}"
            )
    print("3D, per shell of the grain centroid's normalised radius (whole particles)")
    print(f"{'shell':7s} {'statistic':22s} {'teacher':>8s} {'teacher2':>8s} {'paper':>11s} {'depth':>11s}  target")
    for b, r in enumerate(table["3d"]):
        for k, tol in (
            ("median_volume_px", "rel 0.2"),
            ("mean_radial_alignment", "abs 0.05"),
            ("mean_elongation", "-"),
        ):
            v = r[k]
            fmt = "8.3f" if k != "median_volume_px" else "8.0f"
            f = lambda x, fmt=fmt: "       -" if x is None else format(x, fmt)  # noqa: E731
            cell = {
                name: f(v[name]) + (f" {mark[ver[name][b][k]]:2s}" if k in ver[name][b] else "   ")
                for name in ("paper", "depth")
            }
            print(
                f"{SHELLS[b]:7s} {k:22s} {f(v['teacher'])} {f(v['teacher_b'])} {cell['paper']} {cell['depth']}  {tol}"
            )
        print(f"{SHELLS[b]:7s} {'grains (teacher)':22s} {r['n_grains']['teacher']:8d}")
    for name in ("paper", "depth"):
        met = sum(all(v.values()) for v in ver[name])
        print(f"{name} model: every target met in {met} of {len(SHELLS)} shells")


def depth_main(args) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t0 = time.perf_counter()
        if args.reuse and (work / "tessellations").is_dir():
            fits = read_tessellations(work / "tessellations")
        else:
            fits = depth_training_data(work, args)
        t = {"sections": time.perf_counter() - t0}
        models, tt = depth_models(work, args)
        t.update(tt)
        t0 = time.perf_counter()
        table = depth_evaluate(models, args.radius, args.eval_sections, args.repeats, args.cubes, args.seed + 1000)
        t["eval"] = time.perf_counter() - t0
    print(
        f"depth-aware closed loop: depth teacher (equiaxed core, radial rim), {len(fits)} true central "
        f"sections of R = {args.radius:g} px fitted (mean agreement {np.mean([f.agreement for f in fits]):.4f}), "
        f"{args.epochs} x {args.steps} steps, batch {args.batch_g}/{args.batch_d}, lr {args.lr} ({args.lr_schedule}), "
        f"EMA {args.ema}, D-skip {args.d_skip_below}, R1 {args.d_r1}, selection "
        f"{f'{args.select_sections} sections ({args.select_metric})' if args.select_sections else 'off'}, "
        f"{'paper' if args.paper_arch else 'small'} architecture, {args.threads} threads; evaluation: "
        f"{args.repeats} pairs of {args.eval_sections} sections, {args.cubes} particles per model"
    )
    print(
        "time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
        + "; final mu "
        + ", ".join(f"{k} {m.intensity_per_px3:.5f}" for k, m in models.items())
    )
    print_depth_table(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": table, "seconds": t}, f, indent=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--particles",
        type=int,
        default=8,
        help="teacher particles (one central section each; with 4, the sections alone miss 1.5x the "
        "noise in 2 of 12 seeds)",
    )
    ap.add_argument("--radius", type=float, default=60.0, help="particle radius in px")
    ap.add_argument(
        "--instrument",
        choices=("realistic", "ideal", "default", "harsh"),
        default="realistic",
        help="synthetic EBSD: phantom-ebsd --instrument (realistic = default: half the junction pixels "
        "low-CI; ideal: every pixel indexed; harsh: every junction pixel and 1 %% of the others)",
    )
    ap.add_argument("--dilate-px", type=float, default=0.0, help="import-ebsd --dilate-px (needs --fill none)")
    ap.add_argument("--fill", choices=("shape", "none"), default="shape", help="import-ebsd --fill")
    ap.add_argument("--fit-steps", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-g", type=int, default=64)
    ap.add_argument("--batch-d", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine")
    ap.add_argument(
        "--d-skip-below",
        type=float,
        default=0.32,
        help="skip D updates while its loss is at or below this (paper: 0.32 in the text, 0.09 in "
        "the algorithm; with 0.09 the paper-sized D wins and freezes the game)",
    )
    ap.add_argument("--ema", type=float, default=0.99, help="generator weight averaging (0: off)")
    ap.add_argument("--d-r1", type=float, default=0.0, help="R1 penalty weight on D (training.d_r1; 0: off)")
    ap.add_argument(
        "--holdout-sections",
        type=int,
        default=0,
        help="sections kept out of training for the discriminator memorisation check (training.holdout_sections)",
    )
    ap.add_argument(
        "--select-sections",
        type=int,
        default=0,
        help="keep the epoch whose generated sections best match the measured ones (training.select_sections)",
    )
    ap.add_argument("--select-metric", choices=("max", "mean"), default="max", help="training.select_metric")
    ap.add_argument("--paper-arch", action="store_true", help="recipes/paper.yaml's G and D architecture")
    ap.add_argument("--eval-sections", type=int, default=4, help="sections per evaluation sample")
    ap.add_argument(
        "--repeats",
        type=int,
        default=16,
        help="independent 2D sample pairs averaged per distance (4 left the noise yardstick itself ~20%% uncertain)",
    )
    ap.add_argument("--cubes", type=int, default=4, help="3D cubes per model for the 3D statistics")
    ap.add_argument("--cube", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--restarts",
        type=int,
        default=1,
        help="fit-grains --restarts (needs --select-sections); every run is evaluated, the kept one first",
    )
    ap.add_argument("--train-seed", type=int, help="fit-grains --seed (default: --seed, which also draws the data)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="fit-grains --device (cpu, cuda, auto)")
    ap.add_argument("--work", help="keep the user-path folders here (default: a temporary folder)")
    ap.add_argument("--json", help="write the table here")
    ap.add_argument(
        "--data-only",
        action="store_true",
        help="stop after fit-sections and compare only the training sections with the teacher",
    )
    ap.add_argument(
        "--seeds",
        help="run the loop once per seed (comma-separated or a range a-b), --jobs at a time, "
        "each in its own process, and print the run-to-run spread",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel runs with --seeds; with --teacher depth, 2 trains both models at once",
    )
    ap.add_argument(
        "--teacher",
        choices=("radial", "depth"),
        default="radial",
        help="radial: the uniform radial teacher through the EBSD path; depth: the depth teacher, the "
        "paper's model against the depth-aware one, per shell of radius",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="--teacher depth: reuse the tessellations and models an earlier run left in --work (an "
        "interrupted training resumes from its checkpoint)",
    )
    args = ap.parse_args()
    if args.teacher == "depth":
        depth_main(args)
        return
    if args.seeds:
        spread(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        model, t = user_path(work, args)
        fits = read_tessellations(work / "tessellations")
        data = De.fitted_descriptors(fits, MIN_AREA_PX)
        if model is None:
            rows = data_ceiling(data, args.radius, args.eval_sections, args.repeats, args.seed + 1000)
            print_data_table(rows, args, len(fits), len(data["area_px"]))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"args": vars(args), "table": rows, "seconds": t}, f, indent=2)
            return
        t0 = time.perf_counter()
        table = evaluate(
            model,
            args.radius,
            args.eval_sections,
            args.repeats,
            args.cube,
            args.seed + 1000,
            data=data,
            n_cubes=args.cubes,
        )
        t["eval"] = time.perf_counter() - t0
        others = {}  # with --restarts: the runs that were not kept, evaluated the same way
        for run in model.training.get("restarts") or []:
            if run["seed"] != model.training["seed"]:
                other = GrainModel.load(work / "model" / "restarts" / f"seed-{run['seed']}")
                t2 = evaluate(
                    other,
                    args.radius,
                    args.eval_sections,
                    args.repeats,
                    args.cube,
                    args.seed + 1000,
                    data=data,
                    n_cubes=args.cubes,
                )
                others[run["seed"]] = {"select_score": run["select_score"], "table": t2, "met": verdicts(t2)}
    print(
        f"closed loop ({args.instrument} instrument) through phantom-ebsd -> import-ebsd -> fit-sections -> "
        f"fit-grains: {len(fits)} central "
        f"sections of R = {args.radius:g} px (mean fit agreement {np.mean([f.agreement for f in fits]):.4f}), "
        f"{args.epochs} x {args.steps} steps, batch {args.batch_g}/{args.batch_d}, lr {args.lr} "
        f"({args.lr_schedule}), EMA {args.ema}, "
        f"D-skip {args.d_skip_below}, R1 {args.d_r1}, "
        f"selection {f'{args.select_sections} sections ({args.select_metric})' if args.select_sections else 'off'}, "
        f"{'paper' if args.paper_arch else 'small'} architecture, {args.threads} threads, device {args.device}"
    )
    sel = model.training.get("selected_epoch")
    print(
        "time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
        + f"; final mu {model.intensity_per_px3:.5f} (teacher {TEACHER_INTENSITY})"
        + (f"; kept epoch {sel} of {args.epochs}" if sel else "")
    )
    print_table(table)
    for seed, other in others.items():
        print(f"-- restart seed {seed} (score {other['select_score']:.4f}, not kept):")
        print_table(other["table"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "table": table,
                    "met": verdicts(table),
                    "seconds": t,
                    "selected_epoch": model.training.get("selected_epoch"),
                    "select_score": model.training.get("select_score"),
                    "restarts": model.training.get("restarts"),
                    "other_restarts": others,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
