"""Benchmark of ``render-ct``: projection + detector + FBP of a 256³ label volume.

Target: <= 60 s for 256³. Two settings: binning 1 (256³ CT, 403 projections) and binning 2
(128³ CT from 256³ labels, 202 projections). Same-run baseline: scikit-image's ``radon`` +
``iradon`` on one slice of the same size, times the slice count (what a per-slice loop over the
maintained CPU reference would take). Peak memory is ru_maxrss.

    python benchmarks/bench_render.py [--size 256] [--baseline-slices 2]
"""

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--baseline-slices", type=int, default=2)
    a = ap.parse_args()
    from scipy import ndimage
    from skimage.transform import iradon, radon

    from nmc_dataset.tomography import _ctsim as ctsim

    n = a.size
    rng = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(rng.random((n // 4,) * 3), 1.0)
    phase = np.kron(blobs > np.median(blobs), np.ones((4, 4, 4), bool)).astype(np.uint8)  # ~50 % NMC
    phase[
        (ndimage.gaussian_filter(rng.random((n // 4,) * 3), 1.0) > 0.56).repeat(4, 0).repeat(4, 1).repeat(4, 2)
        & (phase == 0)
    ] = 2
    ctsim.render_ct(phase[:4, :32, :32], 0.1, settings=ctsim.resolve_settings("lab-nanoct"), seed=0)  # compile
    for s in (1, 2):
        settings = ctsim.resolve_settings("lab-nanoct", binning=s)
        t = time.perf_counter()
        ct, im = ctsim.render_ct(phase, 0.1, settings=settings, seed=1)
        dt = time.perf_counter() - t
        print(
            f"render-ct {n}^3 labels -> {'x'.join(map(str, ct.shape))} CT, {im['projections']} projections: "
            f"{dt:.1f} s (projection {im['seconds']['projection']:.1f} s; target 60 s: x{dt / 60:.2f})"
        )
        m = ct.shape[1]
        img = rng.random((m, m))
        th = np.degrees(np.arange(im["projections"]) * math.pi / im["projections"])
        k = a.baseline_slices
        t = time.perf_counter()
        for _ in range(k):
            iradon(radon(img, theta=th, circle=False), theta=th, circle=False, filter_name="ramp")
        per = (time.perf_counter() - t) / k
        print(
            f"  baseline skimage radon+iradon per {m}^2 slice {per:.2f} s x {ct.shape[0]} slices = "
            f"{per * ct.shape[0]:.0f} s (render-ct is x{per * ct.shape[0] / dt:.1f} faster, with the detector "
            f"physics and {s}x supersampled projection included)"
        )
    print(f"  peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
