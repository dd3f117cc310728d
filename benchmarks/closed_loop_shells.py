"""Closed loops of the shell scale on truths outside the paper's model, through the CLI; prints the table.

For each truth (the paper's independent laws, heterogeneous roughness, roughness growing with
size, ellipsoid-like bodies; radii 6-40 voxels, touching particles, blur 1 voxel, contrast/noise
~7) a grey CT phantom is rendered and run through ``fit-shells -> sample-shells ->
describe-shells --against``. Printed per truth: KS of the six descriptors (sampled vs measured),
the model chosen, and the per-degree spread ratio (measured / true, l = 2..6, particles of true
radius >= 10 voxels). Targets: KS <= 0.1 everywhere, spread ratios within 0.9-1.1.

Usage: python benchmarks/closed_loop_shells.py [--n-particles 1000] [--kinds a,b] [--quick]
       [--binary-phantom] [--fit-args "--measure-sigma 1"]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import tempfile
import time


def main():
    from nmc_dataset.synthetic._ct_phantom import TRUTH_KINDS
    from nmc_dataset.testing._shell_loop import format_loop_table, run_truth_loop

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-particles", type=int, default=1000)
    ap.add_argument("--kinds", default=",".join(TRUTH_KINDS))
    ap.add_argument("--r-median", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="150 particles, radii 6-25")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument(
        "--binary-phantom", action="store_true", help="render binary voxels instead of partial-volume fractions"
    )
    ap.add_argument("--fit-args", default="", help="more fit-shells options, e.g. '--measure-sigma 1'")
    args = ap.parse_args()
    n, r_range = (150, (6.0, 25.0)) if args.quick else (args.n_particles, (6.0, 40.0))
    rows = []
    for kind in args.kinds.split(","):
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            r = run_truth_loop(
                kind,
                d,
                n_particles=n,
                r_median=args.r_median,
                r_range=r_range,
                seed=args.seed,
                partial_volume=not args.binary_phantom,
                extra_args=args.fit_args.split(),
            )
        rows.append(r)
        print(
            f"[{kind}] {r['n_true']} shells in {r['size']}³, {r['n_measured']} measured: "
            f"{time.perf_counter() - t:.0f} s "
            f"(render {r['times']['render']:.0f}, fit-shells {r['times']['fit_shells']:.0f}, sample+describe "
            f"{r['times']['sample_describe']:.0f}); sigma {r['measurement']['sigma_vox']:g}, "
            f"blur {r['measurement']['blur_sigma_vox']:.2f} voxel",
            flush=True,
        )
    print(format_loop_table(rows))
    worst = max(max(r["ks"].values()) for r in rows)
    sp = [v for r in rows for v in r["spread_ratio"].values() if v is not None]
    print(f"worst KS {worst:.3f} (target <= 0.1); spread ratios {min(sp):.2f}..{max(sp):.2f} (target 0.90..1.10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
    main()
