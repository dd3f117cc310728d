"""Benchmark: score-segmentation of a 256^3 volume (target <= 10 s), with its peak memory.

The truth is a 128^3 known-truth phantom (touching particles, binder at the contacts) tiled 2x2x2
(particle ids kept distinct per tile), the prediction its otsu-watershed segmentation tiled the same
way, so the errors are those of a real segmentation. Timed: reading nothing, scoring only
(:func:`score_segmentation`, the work of the command), stage by stage, and the baseline of one
full-volume Euclidean distance transform (scipy.ndimage.distance_transform_edt), which a surface
distance built on distance transforms would need twice per phase.

    PYTHONPATH=. python benchmarks/bench_score.py [--size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tile(a: np.ndarray, reps: int, offset: bool) -> np.ndarray:
    out = []
    k = 0
    for _ in range(reps**3):
        b = a.astype(np.uint32)
        if offset:
            b = np.where(b > 0, b + k, 0).astype(np.uint32)
            k += int(a.max())
        out.append(b)
    it = iter(out)
    return np.block([[[next(it) for _ in range(reps)] for _ in range(reps)] for _ in range(reps)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="k-d tree query workers (OMP_NUM_THREADS)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from scipy import ndimage

    from nmc_dataset.tomography import _scoring as scoring
    from nmc_dataset.tomography._classical import otsu_watershed
    from nmc_dataset.tomography._phantom import phantom_ct_arrays

    half = args.size // 2
    a = phantom_ct_arrays(7, size=half, n_particles=int(250 * (half / 96) ** 3))
    phase, particle, _ = otsu_watershed(a["ct"])
    tp, tq = tile(a["phase"], 2, False).astype(np.uint8), tile(a["particle"], 2, True)
    pp, pq = tile(phase, 2, False).astype(np.uint8), tile(particle, 2, True)
    del a
    print(
        f"volume {tp.shape}, {int(tq.max())} true and {int(pq.max())} predicted particles; "
        f"peak RSS before scoring {rss_mib():.0f} MiB"
    )

    t0 = time.perf_counter()
    st, sp = scoring.inner_surfaces(tp), scoring.inner_surfaces(pp)
    t1 = time.perf_counter()
    for v in range(3):
        scoring.surface_distances(st & (tp == v), sp & (pp == v))
    t2 = time.perf_counter()
    for v in range(3):
        scoring.phase_topology(tp == v)
        scoring.phase_topology(pp == v)
    t3 = time.perf_counter()
    scoring.instance_scores(tq, pq)
    t4 = time.perf_counter()
    print(
        f"stages: surfaces {t1 - t0:.2f} s, surface distances {t2 - t1:.2f} s, topology {t3 - t2:.2f} s, "
        f"instances {t4 - t3:.2f} s"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    s = scoring.score_segmentation(pp, tp, pq, tq, voxel_size_um=0.1)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ndimage.distance_transform_edt(~(st & (tp == 1)))
    edt, edt_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"score_segmentation {args.size}^3: {total:.2f} s wall, {total_cpu:.2f} CPU-s (target <= 10 s: "
        f"{total / 10:.2f} of the budget in wall time); peak RSS {rss_mib():.0f} MiB"
    )
    print(
        f"  the same in CPU-s (a shared host inflates wall times): score {total_cpu:.2f}, one distance "
        f"transform {edt_cpu:.2f}, ratio {total_cpu / edt_cpu:.2f}"
    )
    print(
        f"baseline: one full-volume distance transform {edt:.2f} s; distance-transform surface distances "
        f"(2 per phase) would take ~{6 * edt:.1f} s, {6 * edt / total:.1f}x the whole score"
    )
    print(f"mean Dice {s['mean_dice']:.4f}, particle F1 {s['particles']['f1']:.3f}")


if __name__ == "__main__":
    main()
