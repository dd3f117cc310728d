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

The rows "at the detection limit" apply the instrument's limit to both sides
(nmc_dataset/ebsd/_detection.py): the loss per pixel class is measured on the fitted sections
(their labels and the scans' confident pixels), calibrated on the teacher's sections, drawn on
every teacher section (the reference samples and the noise pairs alike), which are then
completed as import-ebsd would; grains need >= --min-confident-px confident pixels on both
sides. The truth side is the teacher itself passed through that limit, never the imported data.

--filled-weights W1,W2 fits the completed sections once per weight of the filled pixels
(fit-sections --filled-weight).

Usage: python benchmarks/closed_loop_ebsd_import.py [--particles 4 --repeats 4] [--instruments ideal,default,harsh]
       [--seeds 0,1] [--fit-steps 150] [--fills none,shape] [--filled-weights 1] [--min-confident-px 3]
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
from nmc_dataset.ebsd._detection import DEFAULT_MIN_CONFIDENT_PX
from nmc_dataset.io._sections import read_sections
from nmc_dataset.synthetic._yardsticks import teacher_sampler

MIN_AREA_PX = 5  # import-ebsd's --min-grain-px default
TARGET = 1.3


def run(argv) -> None:
    if cli(argv) != 0:
        raise SystemExit(f"nmc-dataset {' '.join(argv)} failed")


def mean_w1(ref: list, other: dict, key: str) -> float:
    return float(np.mean([distribution_distances(a[key], other[key])["wasserstein1"] for a in ref]))


def teacher_samples(radius: float, n_sections: int, repeats: int, seed: int):
    """``2 * repeats`` teacher samples of ``n_sections`` central sections: the reference and its noise pairs."""
    rng = np.random.default_rng(seed)
    teacher = teacher_sampler(radius)
    return [De.model_sections(teacher, rng, n_sections, radius) for _ in range(2 * repeats)]


def reference(samples, limit=None, seed: int = 0):
    """Pooled descriptors of the reference samples and the sampling noise (mean W1 of the pairs),
    each section passed through ``limit`` when given."""
    rng = np.random.default_rng(seed)

    def describe(sample):
        if limit is None:
            return De.pooled(De.section_descriptors(lab, c, MIN_AREA_PX) for lab, c in sample)
        return De.pooled(De.limited_section_descriptors(lab, c, limit, rng, MIN_AREA_PX) for lab, c in sample)

    pooled = [describe(s) for s in samples]
    half = len(pooled) // 2
    ref, other = pooled[:half], pooled[half:]
    noise = {
        k: float(np.mean([distribution_distances(a[k], b[k])["wasserstein1"] for a, b in zip(ref, other)]))
        for k in De.DESCRIPTORS_2D
    }
    return ref, noise


def weight_tag(w: float) -> str:
    return "" if w == 1.0 else f"_w{w:g}"


def one(work: Path, instrument: str, seed: int, args, samples) -> dict:
    """phantom-ebsd -> import-ebsd -> fit-sections; descriptors of every stage, with and without the limit."""
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
    truths = []
    for p in scans:
        stem = Path(p).stem
        truth = tifffile.imread(scans_dir / "truth" / f"{stem}.tif").astype(np.int64)
        c = (np.array(truth.shape[::-1], float) - 1) / 2.0
        truths.append((truth, c))
        out["truth"].append(De.section_descriptors(truth, c, MIN_AREA_PX))
    out["truth"] = De.pooled(out["truth"])
    seconds = {}
    fitted = {}
    for fill in args.fills:
        sec_dir = work / f"{instrument}-{seed}" / f"sections-{fill}"
        t0 = time.perf_counter()
        run(["import-ebsd", *scans, "--out", str(sec_dir), "--fill", fill, "--central", "all"])
        seconds[f"import_{fill}"] = time.perf_counter() - t0
        secs = read_sections(sec_dir)
        out[f"import_{fill}"] = De.pooled(De.section_descriptors(s.labels, s.center_px, MIN_AREA_PX) for s in secs)
        if fill == "shape":
            out["lim_import_shape"] = De.pooled(
                De.section_descriptors(s.labels, s.center_px, MIN_AREA_PX, s.confident, args.min_confident_px)
                for s in secs
            )
        for w in args.filled_weights if fill == "shape" else [1.0]:
            tag = f"{fill}{weight_tag(w)}"
            t0 = time.perf_counter()
            fit_dir = sec_dir.with_name(f"fits-{tag}")
            run(
                [
                    "fit-sections",
                    str(sec_dir),
                    "--out",
                    str(fit_dir),
                    "--steps",
                    str(args.fit_steps),
                    "--seed",
                    str(seed),
                    "--filled-weight",
                    str(w),
                ]
            )
            seconds[f"fit_{tag}"] = time.perf_counter() - t0
            fits = read_tessellations(fit_dir)
            out[f"fit_{tag}"] = De.fitted_descriptors(fits, MIN_AREA_PX)
            out[f"agreement_{tag}"] = float(np.mean([f.agreement for f in fits]))
            fitted[tag] = fits
            if fill == "shape":
                out[f"lim_fit_{tag}"] = De.fitted_descriptors(fits, MIN_AREA_PX, args.min_confident_px)
    # the limit, measured on the training data (the fitted sections) as fit-grains would, calibrated on
    # the teacher's first reference sample; drawn on the teacher (reference and noise pairs) and on the truth
    limit = None
    if "shape" in args.fills:
        t0 = time.perf_counter()
        rates = De.measured_low_ci_rates(fitted["shape"])
        limit = De.detection_limit(rates, samples[0], np.random.default_rng(seed), args.min_confident_px)
        out["lim_ref"] = reference(samples, limit, seed=1000 + seed)
        rng = np.random.default_rng(2000 + seed)
        out["lim_truth"] = De.pooled(De.limited_section_descriptors(t, c, limit, rng, MIN_AREA_PX) for t, c in truths)
        seconds["limit"] = time.perf_counter() - t0
        out["measured_rates"] = rates
        out["limit"] = limit
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
    ap.add_argument("--fills", default="none,shape", help="import-ebsd --fill values to run (default none,shape)")
    ap.add_argument("--filled-weights", default="1", help="fit-sections --filled-weight values for --fill shape")
    ap.add_argument("--min-confident-px", type=int, default=DEFAULT_MIN_CONFIDENT_PX)
    ap.add_argument("--work", help="keep the folders here")
    args = ap.parse_args()
    args.fills = [s.strip() for s in args.fills.split(",") if s.strip()]
    args.filled_weights = [float(s) for s in args.filled_weights.split(",") if s.strip()]
    instruments = [s.strip() for s in args.instruments.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    samples = teacher_samples(args.radius, args.particles, args.repeats, 1000)
    ref, noise = reference(samples)
    print(
        f"sampling noise (mean W1 of {args.repeats} teacher pairs of {args.particles} sections, R = "
        f"{args.radius:g} px, {time.perf_counter() - t0:.0f} s): " + ", ".join(f"{k} {v:.4f}" for k, v in noise.items())
    )
    stages, label = ["truth"], {"truth": "true sections"}
    if "none" in args.fills:
        stages += ["import_none", "fit_none"]
        label.update({"import_none": "import --fill none (before)", "fit_none": "  fitted (before)"})
    if "shape" in args.fills:
        stages.append("import_shape")
        label["import_shape"] = "import --fill shape (after)"
        for w in args.filled_weights:
            stages.append(f"fit_shape{weight_tag(w)}")
            label[f"fit_shape{weight_tag(w)}"] = f"  fitted (after){'' if w == 1 else f', filled weight {w:g}'}"
        lim = ["lim_truth", "lim_import_shape"] + [f"lim_fit_shape{weight_tag(w)}" for w in args.filled_weights]
        stages += lim
        label.update({"lim_truth": "at the limit: true sections", "lim_import_shape": "  import --fill shape"})
        for w in args.filled_weights:
            label[f"lim_fit_shape{weight_tag(w)}"] = f"  fitted{'' if w == 1 else f', filled weight {w:g}'}"
    fit_main = "fit_shape" if "shape" in args.fills else "fit_none"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        verdict = {}
        for instrument in instruments:
            ratios = {s: {k: [] for k in De.DESCRIPTORS_2D} for s in stages}
            counts = {s: 0 for s in stages}
            extra = []
            for seed in seeds:
                r = one(work, instrument, seed, args, samples)
                for s in stages:
                    counts[s] += len(r[s]["area_px"])
                    rf, nz = r["lim_ref"] if s.startswith("lim_") else (ref, noise)
                    for k in De.DESCRIPTORS_2D:
                        ratios[s][k].append(mean_w1(rf, r[s], k) / nz[k])
                extra.append(r)
            print(
                f"\n{instrument} instrument ({len(seeds)} seed(s) x {args.particles} central sections): "
                f"W1 to the teacher / sampling noise, grains >= {MIN_AREA_PX} px"
            )
            for seed, e in zip(seeds, extra):
                if "limit" in e:
                    lim = e["limit"]
                    print(
                        f"  seed {seed}: loss measured on the fitted sections (junction, boundary, interior) "
                        + ", ".join(f"{x:.3f}" for x in e["measured_rates"])
                        + "; calibrated on the teacher "
                        + ", ".join(f"{x:.3f}" for x in lim.rates)
                        + f"; limit {'on' if lim.active else 'off'}, >= {lim.min_confident_px} confident px"
                    )
            print(f"{'':38s} " + " ".join(f"{k:>10s}" for k in De.DESCRIPTORS_2D) + f" {'grains':>7s} {'worst':>6s}")
            for s in stages:
                row = [float(np.mean(ratios[s][k])) for k in De.DESCRIPTORS_2D]
                print(f"{label[s]:38s} " + " ".join(f"{x:10.2f}" for x in row) + f" {counts[s]:7d} {max(row):6.2f}")
                if len(seeds) > 1:
                    per = [max(ratios[s][k][i] for k in De.DESCRIPTORS_2D) for i in range(len(seeds))]
                    print(f"{'    worst per seed':38s} " + " ".join(f"{x:.2f}" for x in per))
                if s == fit_main:
                    verdict[instrument] = max(row)
                if s == "lim_" + fit_main:
                    verdict[instrument + " at the limit"] = max(row)
            sec = {k: float(np.sum([e["seconds"][k] for e in extra])) for k in extra[0]["seconds"]}
            agree = {
                k[len("agreement_") :]: np.mean([e[k] for e in extra]) for k in extra[0] if k.startswith("agreement_")
            }
            print(
                "fit agreement: "
                + ", ".join(f"{k} {v:.4f}" for k, v in agree.items())
                + "; seconds: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sec.items())
            )
    print(
        f"\nfitted sections after completion, worst descriptor / noise (target <= {TARGET}): "
        + ", ".join(f"{k} {v:.2f} ({'met' if v <= TARGET else 'NOT met'})" for k, v in verdict.items())
    )


if __name__ == "__main__":
    main()
