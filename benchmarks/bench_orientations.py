"""Cost of crystal orientations: drawing them for a paper-sized particle, and fitting them.

Prints the time to draw orientations for 7,734 grains (the paper-sized particle of
``bench_particles.py``) with the tabulated von Mises inverse, against a per-grain exact
inversion measured in the same run, and the time of the texture fit (plain and with the
bootstrap of the blur correction) on 1,400 grains (eight central sections).

    python benchmarks/bench_orientations.py [--grains 7734] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nmc_dataset.ebsd._orientation_model import OrientationModel, fit_texture, fit_texture_deblurred


def _exact_inverse_vonmises(u, a, m=512):
    """Baseline: a CDF table per sample (what a straightforward implementation does)."""
    xg = np.linspace(-np.pi, np.pi, m + 1)
    out = np.empty_like(u)
    for start in range(0, len(u), 4096):
        aa, uu = a[start : start + 4096], u[start : start + 4096]
        e = aa[:, None] * np.cos(xg)[None, :]
        cdf = np.cumsum(np.exp(e - e.max(axis=1, keepdims=True)), axis=1)
        cdf /= cdf[:, -1:]
        j = np.clip((cdf < uu[:, None]).sum(axis=1), 0, m)
        out[start : start + 4096] = xg[j]
    return out


def _best(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grains", type=int, default=7734)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    radial = rng.normal(size=(args.grains, 3))
    m = OrientationModel(-12.0, 3.0)
    m.sample(rng, radial)  # imports, first-call costs
    t_draw = _best(lambda: m.sample(rng, radial), args.repeats)
    t_flat = _best(lambda: OrientationModel(-8.0, 0.0).sample(rng, radial), args.repeats)
    u = rng.uniform(size=args.grains)
    a = 3.0 * rng.uniform(size=args.grains) ** 2
    t_tab = _best(lambda: OrientationModel._inverse_vonmises(u, a), args.repeats)
    t_exact = _best(lambda: _exact_inverse_vonmises(u, a), args.repeats)
    print(
        f"orientations for {args.grains} grains (kappa -12, lambda 3): {t_draw * 1e3:.1f} ms "
        f"(lambda 0: {t_flat * 1e3:.1f} ms)"
    )
    print(
        f"  von Mises inverse: tabulated {t_tab * 1e3:.1f} ms, per-grain tables {t_exact * 1e3:.1f} ms "
        f"({t_exact / t_tab:.1f}x)"
    )
    v, _ = m.sample_crystal_directions(rng.uniform(size=(3, 1400)))
    rho = rng.uniform(24.0, 60.0, 1400)
    t_fit = _best(lambda: fit_texture(v), args.repeats)
    t_deblur = _best(lambda: fit_texture_deblurred(v, rho), max(1, args.repeats // 2))
    print(
        f"texture fit on 1400 grains: plain {t_fit * 1e3:.1f} ms, blur-corrected with 200 bootstrap "
        f"resamples {t_deblur:.2f} s"
    )


if __name__ == "__main__":
    main()
