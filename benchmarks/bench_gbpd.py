"""Benchmark of the GBPD engine and the 2D section fits.

Prints
- hard labels of a 256^3 grid for a GBPD with ~30,000 seeds (mu = 0.0018 in [-128, 128]^3, markers
  D ~ U[d_lo, 50] per entry, r ~ U[1, 10]: the generator's ranges, docs/method.md#generator), wall and CPU time,
  against the 2 s target, exactness on a random subset of voxels checked by brute force;
- the brute-force argmin on a smaller case (all seeds, a subset of voxels) and the speed-up
  per voxel;
- the time of a 2D fit per section (200 x 200 pixels, ~150 grains from a 2D truth and a central
  slice of a 3D truth), with its pixel agreement.

Usage: python benchmarks/bench_gbpd.py [--threads N] [--d-lo 0.001] [--skip-fit]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="numba threads (default: all cores)")
    ap.add_argument("--d-lo", type=float, default=None, help="lower bound of the diagonal markers (default DIAG_MIN)")
    ap.add_argument("--size", type=int, default=256, help="grid edge (default 256)")
    ap.add_argument("--check", type=int, default=20000, help="voxels checked against brute force")
    ap.add_argument("--skip-fit", action="store_true")
    args = ap.parse_args()

    import numba
    import torch

    from nmc_dataset.calibration._fit2d import fit_section, section_from_gbpd
    from nmc_dataset.tessellation._gbpd import DIAG_MIN, GBPD, grid_points
    from nmc_dataset.tessellation._labels import hard_labels_grid
    from nmc_dataset.tessellation._seeds import poisson_seeds
    from nmc_dataset.testing._tessellation import hard_labels_bruteforce

    if args.threads:
        numba.set_num_threads(args.threads)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; numba threads "
        f"{numba.get_num_threads()} ({numba.config.THREADING_LAYER})"
    )
    rng = np.random.default_rng(2024)
    d_lo = DIAG_MIN if args.d_lo is None else args.d_lo
    s = poisson_seeds(rng, 0.0018, [-128] * 3, [128] * 3)
    n = len(s)
    g = GBPD(s.positions, rng.uniform(d_lo, 50, (n, 3)), rng.uniform(1, 10, n), s.roll)
    shape = (args.size,) * 3

    t = time.perf_counter()
    hard_labels_grid(g, (32, 32, 32))
    print(f"warm-up (numba compile or cache load): {time.perf_counter() - t:.2f} s")
    walls, cpus = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        lab = hard_labels_grid(g, shape)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall = min(walls)
    print(
        f"hard_labels_grid {shape}, {n} seeds, D ~ U[{d_lo:g}, 50]: wall {wall:.2f} s (runs "
        f"{', '.join(f'{w:.2f}' for w in walls)}), CPU {min(cpus):.2f} s; target 2 s -> ratio {wall / 2.0:.2f}"
    )
    pts = grid_points(shape).reshape(-1, 3)
    sel = rng.choice(len(pts), min(args.check, len(pts)), replace=False)
    t = time.perf_counter()
    ref = hard_labels_bruteforce(g, pts[sel])
    tb = time.perf_counter() - t
    agree = (lab.ravel()[sel] == ref).mean()
    print(f"exactness: {100 * agree:.4f} % of {len(sel)} random voxels equal the brute force")
    per_voxel_brute = tb / len(sel)
    est = per_voxel_brute * len(pts)
    print(
        f"brute force (all {n} seeds) on {len(sel)} voxels: {tb:.2f} s = {1e6 * per_voxel_brute:.1f} us/voxel; "
        f"a full {shape} grid would take ~{est:.0f} s; speed-up of the pruned kernel ~{est / wall:.0f}x"
    )
    # a stronger naive baseline: brute force as one BLAS product of quadratic features
    m = g.metrics()
    sv = g.seeds
    coef = np.concatenate(
        [
            m[:, [0, 1, 2], [0, 1, 2]],
            2 * m[:, [0, 0, 1], [1, 2, 2]],
            -2 * np.einsum("nij,nj->ni", m, sv),
            (np.einsum("ni,nij,nj->n", sv, m, sv) - g.offsets)[:, None],
        ],
        1,
    )  # (N, 10)
    x = pts[sel]
    t = time.perf_counter()
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), 256):
        xx = x[a : a + 256]
        feats = np.concatenate(
            [
                xx**2,
                xx[:, [0]] * xx[:, [1]],
                xx[:, [0]] * xx[:, [2]],
                xx[:, [1]] * xx[:, [2]],
                xx,
                np.ones((len(xx), 1)),
            ],
            1,
        )
        out[a : a + 256] = np.argmin(feats @ coef.T, axis=1)
    tq = time.perf_counter() - t
    est_q = tq / len(x) * len(pts)
    print(
        f"naive BLAS brute force (quadratic features @ coefficients) on {len(x)} voxels: {tq:.2f} s; a full grid "
        f"~{est_q:.0f} s; speed-up ~{est_q / wall:.0f}x (agrees with the reference on "
        f"{100 * (out == ref).mean():.3f} %: it rounds differently)"
    )
    from nmc_dataset.tessellation._connectivity import count_disconnected

    t = time.perf_counter()
    nd = count_disconnected(lab)
    print(f"count_disconnected: {nd} of {n} cells disconnected ({time.perf_counter() - t:.2f} s)")

    if args.skip_fit:
        return
    torch.set_num_threads(1)
    radius = 95
    mu = 150 / (np.pi * radius**2)
    s2 = poisson_seeds(rng, mu, [-110] * 2, [110] * 2)
    n2 = len(s2)
    g2 = GBPD(s2.positions, np.stack([rng.uniform(0.2, 0.5, n2), rng.uniform(1, 3, n2)], 1), rng.uniform(1, 10, n2))
    s3 = poisson_seeds(rng, 0.0018, [-110] * 3, [110] * 3)
    n3 = len(s3)
    g3 = GBPD(
        s3.positions,
        np.stack([rng.uniform(1, 5, n3), rng.uniform(15, 50, n3), rng.uniform(15, 50, n3)], 1),
        rng.uniform(1, 10, n3),
        s3.roll,
    )
    for name, truth in (("2D truth", g2), ("3D truth, central slice", g3)):
        sec = section_from_gbpd(truth, 200, radius, rng=rng)
        grains = len(np.unique(sec.labels)) - 1
        t, c = time.perf_counter(), time.process_time()
        fit = fit_section(sec)
        print(
            f"2D fit, {name}: 200 x 200 pixels, {grains} grains, <= 200 steps, 1 thread: wall "
            f"{time.perf_counter() - t:.1f} s, CPU {time.process_time() - c:.1f} s, agreement "
            f"{100 * fit.agreement:.2f} % (target >= 95 %, well under a minute)"
        )


if __name__ == "__main__":
    main()
