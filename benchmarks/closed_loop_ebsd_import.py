"""How much of the truth the EBSD import keeps, per instrument, before and after completing the map.

For each instrument preset of ``phantom-ebsd`` (``ideal``, ``default``, ``harsh``) the user's
path runs on known truth: ``phantom-ebsd --instrument I`` slices radial teacher particles,
``import-ebsd --fill none`` (the import before completion: confident pixels only) and
``import-ebsd --fill shape`` (fragments bridged by orientation, gaps filled by each grain's
shape) reconstruct the grains, ``fit-sections`` fits the 2D tessellations the GAN trains on.
Each side is compared with the teacher on the four 2D descriptors (area, η, α, chord lengths)
at the import's detection limit (grains of >= 5 px): mean Wasserstein-1 over ``--repeats``
teacher samples of ``--particles`` central sections, divided by the teacher-vs-teacher
distance (the sampling noise). Rows: the imported labels and the fitted sections (the training
data). Target: fitted sections <= 1.3 x the noise on every descriptor, for every instrument.

Usage: python benchmarks/closed_loop_ebsd_import.py [--particles 4 --repeats 4] [--instruments ideal,default,harsh]
       [--seeds 0,1] [--fit-steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from nmc_dataset.calibration import _descriptors as De
from nmc_dataset.calibration._fit2d import read_tessellations
from nmc_dataset.cli._main import main as cli
from nmc_dataset.compare import distribution_distances
from nmc_dataset.io._sections import read_sections

MIN_AREA_PX = 5  # import-ebsd's --min-grain-px default
TARGET = 1.3


def run(argv) -> None:
    if cli(argv) != 0:
        raise SystemExit(f"nmc-dataset {' '.join(argv)} failed")


def mean_w1(ref: list, other: dict, key: str) -> float:
    return float(np.mean([distribution_distances(a[key], other[key])["wasserstein1"] for a in ref]))


def teacher_reference(radius: float, n_sections: int, repeats: int, seed: int):
    """``repeats`` teacher samples and the sampling noise (mean W1 between paired teacher samples)."""
    rng = np.random.default_rng(seed)
    teacher = De.teacher_sampler(radius)

    def sample():
        return De.pooled(
            De.section_descriptors(lab, c, MIN_AREA_PX)
            for lab, c in De.model_sections(teacher, rng, n_sections, radius)
        )

    ref = [sample() for _ in range(repeats)]
    other = [sample() for _ in range(repeats)]
    noise = {
        k: float(np.mean([distribution_distances(a[k], b[k])["wasserstein1"] for a, b in zip(ref, other)]))
        for k in De.DESCRIPTORS_2D
    }
    return ref, noise


def one(work: Path, instrument: str, seed: int, args) -> dict:
    """phantom-ebsd -> import-ebsd (both fills) -> fit-sections; descriptors of every stage."""
    scans_dir = work / f"{instrument}-{seed}" / "scans"
    run(
        [
            "phantom-ebsd",
            "--out",
            str(scans_dir),
            "--n-central",
            str(args.particles),
            "--n-off-center",
            "0",
            "--radius-px",
            str(args.radius),
            "--formats",
            "ang",
            "--seed",
            str(seed),
            "--instrument",
            instrument,
        ]
    )
    scans = sorted(str(p) for p in scans_dir.iterdir() if p.suffix == ".ang")
    out = {"truth": []}
    for p in scans:
        stem = Path(p).stem
        truth = tifffile.imread(scans_dir / "truth" / f"{stem}.tif").astype(np.int64)
        c = (np.array(truth.shape[::-1], float) - 1) / 2.0
        out["truth"].append(De.section_descriptors(truth, c, MIN_AREA_PX))
    out["truth"] = De.pooled(out["truth"])
    seconds = {}
    for fill in ("none", "shape"):
        sec_dir = work / f"{instrument}-{seed}" / f"sections-{fill}"
        t0 = time.perf_counter()
        run(["import-ebsd", *scans, "--out", str(sec_dir), "--fill", fill, "--central", "all"])
        seconds[f"import_{fill}"] = time.perf_counter() - t0
        secs = read_sections(sec_dir)
        out[f"import_{fill}"] = De.pooled(De.section_descriptors(s.labels, s.center_px, MIN_AREA_PX) for s in secs)
        t0 = time.perf_counter()
        run(
            [
                "fit-sections",
                str(sec_dir),
                "--out",
                str(sec_dir.with_name(f"fits-{fill}")),
                "--steps",
                str(args.fit_steps),
                "--seed",
                str(seed),
            ]
        )
        seconds[f"fit_{fill}"] = time.perf_counter() - t0
        fits = read_tessellations(sec_dir.with_name(f"fits-{fill}"))
        out[f"fit_{fill}"] = De.fitted_descriptors(fits, MIN_AREA_PX)
        out[f"agreement_{fill}"] = float(np.mean([f.agreement for f in fits]))
    out["seconds"] = seconds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", default="ideal,default,harsh")
    ap.add_argument("--particles", type=int, default=4, help="central sections per instrument and seed")
    ap.add_argument("--radius", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=4, help="teacher samples per distance")
    ap.add_argument("--seeds", default="0", help="comma-separated phantom seeds (distances averaged)")
    ap.add_argument("--fit-steps", type=int, default=150)
    ap.add_argument("--work", help="keep the folders here")
    args = ap.parse_args()
    instruments = [s.strip() for s in args.instruments.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    ref, noise = teacher_reference(args.radius, args.particles, args.repeats, 1000)
    print(
        f"sampling noise (mean W1 of {args.repeats} teacher pairs of {args.particles} sections, R = "
        f"{args.radius:g} px, {time.perf_counter() - t0:.0f} s): " + ", ".join(f"{k} {v:.4f}" for k, v in noise.items())
    )
    stages = ("truth", "import_none", "fit_none", "import_shape", "fit_shape")
    label = {
        "truth": "true sections",
        "import_none": "import --fill none (before)",
        "fit_none": "  fitted (before)",
        "import_shape": "import --fill shape (after)",
        "fit_shape": "  fitted (after)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        verdict = {}
        for instrument in instruments:
            ratios = {s: {k: [] for k in De.DESCRIPTORS_2D} for s in stages}
            counts = {s: 0 for s in stages}
            extra = []
            for seed in seeds:
                r = one(work, instrument, seed, args)
                for s in stages:
                    counts[s] += len(r[s]["area_px"])
                    for k in De.DESCRIPTORS_2D:
                        ratios[s][k].append(mean_w1(ref, r[s], k) / noise[k])
                extra.append(r)
            print(
                f"\n{instrument} instrument ({len(seeds)} seed(s) x {args.particles} central sections): "
                f"W1 to the teacher / sampling noise, grains >= {MIN_AREA_PX} px"
            )
            print(f"{'':30s} " + " ".join(f"{k:>10s}" for k in De.DESCRIPTORS_2D) + f" {'grains':>7s} {'worst':>6s}")
            for s in stages:
                row = [float(np.mean(ratios[s][k])) for k in De.DESCRIPTORS_2D]
                print(f"{label[s]:30s} " + " ".join(f"{x:10.2f}" for x in row) + f" {counts[s]:7d} {max(row):6.2f}")
                if s == "fit_shape":
                    verdict[instrument] = max(row)
            sec = {k: float(np.sum([e["seconds"][k] for e in extra])) for k in extra[0]["seconds"]}
            agree = [np.mean([e[f"agreement_{f}"] for e in extra]) for f in ("none", "shape")]
            print(
                f"fit agreement before / after: {agree[0]:.4f} / {agree[1]:.4f}"
                "; seconds: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sec.items())
                + f" (import after / before: {sec['import_shape'] / max(sec['import_none'], 1e-9):.2f})"
            )
    print(
        f"\nfitted sections after completion, worst descriptor / noise (target <= {TARGET}): "
        + ", ".join(f"{k} {v:.2f} ({'met' if v <= TARGET else 'NOT met'})" for k, v in verdict.items())
    )


if __name__ == "__main__":
    main()
