"""Benchmark: ``import-ebsd`` of a 1000 x 1000-pixel scan (time per stage and peak memory).

Usage::

    python benchmarks/bench_ebsd.py [--size 1000] [--format ang|ctf] [--keep DIR]

The scan is a synthetic central section of a radial-teacher particle filling the field of view
(radius = size/2 - 5 px; seeds restricted to a slab of +-40 px about the plane so that the
phantom is quick to make: the content only needs to look like a real scan). The import runs in a
child process so that its peak resident memory (ru_maxrss) is measured alone.

The paper gives no figure for this step (its EBSD sections were processed in commercial OIM
software); the naive baseline printed beside ours is the textbook route, measured in the same run
on the same file: ``numpy.loadtxt`` for parsing and the all-operator-pairs matrix misorientation
(36 products per neighbour pair for -3m), extrapolated from a 100,000-pair sample.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scan(folder: Path, size: int, fmt: str, seed: int = 0) -> Path:
    from nmc_dataset.synthetic._ebsd import slice_labels, synthetic_scan, write_scan
    from nmc_dataset.tessellation._gbpd import GBPD

    rng = np.random.default_rng(seed)
    radius = size / 2 - 5
    # radial_teacher_gbpd's defaults, drawn only in a slab around the plane z = 0
    slab = 40.0
    vol = np.pi * radius**2 * 2 * slab
    n = rng.poisson(0.0018 * vol)
    xy = rng.uniform(-radius, radius, size=(n, 2))
    z = rng.uniform(-slab, slab, size=n)
    seeds = np.column_stack([xy, z])
    keep = np.linalg.norm(seeds, axis=1) <= radius
    seeds = seeds[keep]
    m = len(seeds)
    diag = np.column_stack([rng.uniform(0.15, 0.35, m), rng.uniform(0.8, 1.25, (m, 2))])
    g = GBPD(seeds, diag, rng.uniform(1, 10, m), rng.uniform(0, np.pi, m))
    truth = slice_labels(g, 0.0, radius, size_px=size)
    scan = synthetic_scan(truth.labels, truth.mask, rng)
    return write_scan(folder / f"bench.{fmt}", scan, 0.05)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--format", choices=["ang", "ctf"], default="ang")
    ap.add_argument("--keep", help="keep the scan and output in this folder")
    args = ap.parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_ebsd_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = make_scan(folder, args.size, args.format)
    print(
        f"phantom: {args.size}x{args.size} .{args.format} scan, {path.stat().st_size / 1e6:.1f} MB "
        f"(made in {time.perf_counter() - t0:.1f} s)"
    )

    # --- ours, stage by stage, in this process
    from nmc_dataset.ebsd._morphology import chord_arrow_table, grain_table
    from nmc_dataset.ebsd._reconstruct import reconstruct_grains
    from nmc_dataset.io._ebsd import read_ebsd

    t = time.perf_counter()
    scan = read_ebsd(path)
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    gm = reconstruct_grains(scan, min_grain_px=5)
    t_rec = time.perf_counter() - t
    t = time.perf_counter()
    grain_table(gm.labels, gm.center_px, 0.05, gm.mean_orientation)
    chord_arrow_table(gm.labels)
    t_morph = time.perf_counter() - t
    print(
        f"ours  : read {t_read:.2f} s | reconstruct (misorientation graph + components + means) {t_rec:.2f} s"
        f" | morphology {t_morph:.2f} s | {gm.n_grains} grains"
    )

    # --- the whole command in a child process: wall time and peak RSS
    out = folder / "sections"
    cmd = [sys.executable, "-m", "nmc_dataset.cli", "-q", "import-ebsd", str(path), "--out", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_cli = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sel = json.loads((out / "selection.json").read_text())
    print(
        f"import-ebsd (child process, incl. interpreter start + writing): {t_cli:.2f} s, "
        f"peak RSS {peak_mb:.0f} MB, score {sel['sections'][0]['score']:.3f}"
    )

    # --- naive baseline on the same file
    from nmc_dataset.ebsd._orientation import euler_to_quat, misorientation_angle
    from nmc_dataset.testing import misorientation_angle_bruteforce

    if args.format == "ang":
        t = time.perf_counter()
        data = np.loadtxt(path, comments="#")
        t_loadtxt = time.perf_counter() - t
        assert data.shape[0] == args.size**2
    else:
        t_loadtxt = float("nan")
    q = euler_to_quat(scan.euler_rad).reshape(-1, 4)
    rng = np.random.default_rng(0)
    a = rng.integers(0, len(q) - 1, 100_000)
    t = time.perf_counter()
    misorientation_angle_bruteforce(q[a], q[a + 1], "-3m")
    t_brute = (time.perf_counter() - t) * (2 * args.size * (args.size - 1)) / len(a)
    t = time.perf_counter()
    misorientation_angle(q[a], q[a + 1], "-3m")
    t_fast = (time.perf_counter() - t) * (2 * args.size * (args.size - 1)) / len(a)
    print(
        f"naive : bare np.loadtxt, no validation {t_loadtxt:.2f} s (our validated reader {t_read:.2f} s) | "
        f"all-pairs misorientation of all {2 * args.size * (args.size - 1):,} neighbour pairs ~{t_brute:.1f} s "
        f"(ours {t_fast:.2f} s, x{t_brute / t_fast:.0f})"
    )
    print("paper : no figure (EBSD processed in OIM); target: a 1000x1000 scan imports in well under a minute")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
