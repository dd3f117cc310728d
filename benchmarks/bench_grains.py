"""Speed of the grain model: analytic generation per grain, GAN step times, and a profile.

Prints, in one run:

1. the time to generate an analytic architecture (seeds + markers, no discretisation) of a full
   particle window [-128, 128]^3 at mu = 0.0018 (~68,700 seeds drawn, ~43,500 kept = window +
   cell margin, ~30,500 inside the window) with the paper-sized G_net: a breakdown (seeds,
   kNN + network inputs, MLP, total), microseconds per kept seed and per seed inside the window,
   against the paper's 7.06 us/grain (Ryzen 9 5900X + RTX A4000) and the target of
   1 us/grain; two baselines measured in the same run: the previous batched path (scipy cKDTree
   query + numpy frames/einsum + one unchunked network pass) and a naive per-seed loop (one kNN
   query, one frame, one network call per seed, on a subset); and the network pass alone on one
   window's inputs, through oneDNN's fused layers (the default) and the module's own forward;
2. seconds per generator step (batch 64) and discriminator step (batch 128) with recipes/paper.yaml's
   architecture, and the projected time of the paper's 200 x 100 schedule;
3. seconds per whole training step as fit-grains runs it (``--r1`` adds the R1 penalty) and a
   cProfile summary of one (where the time goes).

``--device cuda`` runs parts 2-3 on a GPU (fit-grains ``--device``); the figures then include a
device synchronisation around every timed phase, after two warm-up steps.

Usage: python benchmarks/bench_grains.py [--threads N] [--repeats R] [--generation-only] [--device cuda] [--r1 1]
(``--threads`` sets torch's and numba's thread counts; numba's is capped by NUMBA_NUM_THREADS.)
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import time

import numpy as np
import torch

from nmc_dataset.calibration._gan import TrainConfig, Trainer
from nmc_dataset.calibration._generator import GNet
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.tessellation._gbpd import GBPD, radial_frames

PAPER_US_PER_GRAIN = 7.06
TARGET_US_PER_GRAIN = 1.0


def naive_per_seed(model: GrainModel, rng, lo, hi, limit: int):
    """The plain loop: per seed one kNN query, one frame, one network call (first ``limit`` seeds)."""
    from scipy.spatial import cKDTree

    from nmc_dataset.calibration._generator import default_knn_margin, poisson_seed_set

    m = model.cell_margin_px + default_knn_margin(model.intensity_per_px3, model.kappa)
    ss = poisson_seed_set(rng, model.intensity_per_px3, np.asarray(lo) - m, np.asarray(hi) + m)
    tree = cKDTree(ss.positions)
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for i in range(min(limit, len(ss))):
            s = ss.positions[i]
            _, nb = tree.query(s, k=model.kappa + 1)
            nb = [j for j in nb if j != i][: model.kappa]
            q = radial_frames(s[None], ss.roll[i : i + 1])[0]
            v = (ss.positions[nb] - s) @ q.T / model.input_scale_px
            x = np.concatenate([v, ss.noise[nb]], 1).reshape(1, -1).astype(np.float32)
            d, r = model.gnet(torch.from_numpy(x))
            out.append((d, r))
    return (time.perf_counter() - t0) / len(out)


def generation_breakdown(model: GrainModel, rng, lo, hi, old: bool = False, keep_inputs: bool = False) -> dict:
    """One generation of the window, step by step as ``generate_gbpd`` does it (``old``: the
    previous path: np.all mask, cKDTree + numpy inputs, one unchunked no_grad network pass;
    ``keep_inputs``: also return the network's input rows under ``"inputs"``)."""
    from nmc_dataset.calibration._generator import (
        default_knn_margin,
        markers,
        neighbour_inputs,
        neighbour_inputs_reference,
        poisson_seed_set,
    )
    from nmc_dataset.calibration._knn import box_mask

    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    cm = model.cell_margin_px
    t0 = time.perf_counter()
    m = cm + default_knn_margin(model.intensity_per_px3, model.kappa)
    ss = poisson_seed_set(rng, model.intensity_per_px3, lo - m, hi + m)
    pos = ss.positions
    t1 = time.perf_counter()
    if old:
        keep = np.all((pos >= lo - cm) & (pos <= hi + cm), axis=1)
        x = neighbour_inputs_reference(
            pos, ss.noise, ss.roll, keep, kappa=model.kappa, input_scale_px=model.input_scale_px
        )
    else:
        keep = box_mask(pos, lo - cm, hi + cm)
        x = neighbour_inputs(pos, ss.noise, ss.roll, keep, kappa=model.kappa, input_scale_px=model.input_scale_px)
    t2 = time.perf_counter()
    if old:
        with torch.no_grad():
            d, r = model.gnet(torch.from_numpy(x))
            diag, off = d.double().numpy(), r.double().numpy()
    else:
        diag, off = markers(model.gnet, x)
    t3 = time.perf_counter()
    g = GBPD(pos[keep], diag, off, ss.roll[keep])
    t4 = time.perf_counter()
    inside = int(box_mask(g.seeds, lo, hi).sum())
    out = {
        "seeds": t1 - t0,
        "knn": t2 - t1,
        "mlp": t3 - t2,
        "gbpd": t4 - t3,
        "total": t4 - t0,
        "drawn": len(pos),
        "kept": g.n,
        "inside": inside,
    }
    if keep_inputs:
        out["inputs"] = x
    return out


def mlp_paths(model: GrainModel, x: np.ndarray, repeats: int) -> dict:
    """Median time of the network pass on one window's input rows ``x``: oneDNN's fused layers
    (the default where available) and the module's own forward (torch's default CPU matmul), both
    chunked."""
    from nmc_dataset.calibration._generator import fused_layers, markers

    out = {}
    for name, fused in (("fused", True), ("plain", False)):
        if fused and fused_layers(model.gnet) is None:
            continue
        markers(model.gnet, x, fused=fused)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            markers(model.gnet, x, fused=fused)
            ts.append(time.perf_counter() - t0)
        out[name] = float(np.median(ts))
    return out


def part1(args, cfg) -> None:
    torch.manual_seed(0)
    model = GrainModel(GNet(kappa=cfg.kappa, hidden=cfg.generator.hidden), intensity_per_px3=0.0018, pixel_size_um=0.05)
    rng = np.random.default_rng(0)
    lo, hi = [-128.0] * 3, [128.0] * 3
    model.sample(rng, -16, 16)  # warm-up (imports, compiled kernels)
    window_inputs = generation_breakdown(model, rng, lo, hi, keep_inputs=True)["inputs"]
    rows = {"new": [], "old": []}
    sample_times = []
    for _ in range(args.repeats):
        rows["new"].append(generation_breakdown(model, rng, lo, hi))
        t0 = time.perf_counter()
        model.sample(rng, -128, 128)
        sample_times.append(time.perf_counter() - t0)
        rows["old"].append(generation_breakdown(model, rng, lo, hi, old=True))
    med = {k: {f: float(np.median([r[f] for r in v])) for f in v[0]} for k, v in rows.items()}
    mlp = mlp_paths(model, window_inputs, 2 * args.repeats)
    naive = 1e6 * naive_per_seed(model, rng, lo, hi, 2000)
    new, old = med["new"], med["old"]
    print(
        "== analytic generation ([-128,128]^3, mu = 0.0018, paper-sized G_net "
        f"{list(cfg.generator.hidden)}, kappa {cfg.kappa}; median of {args.repeats})"
    )
    print(
        f"  seeds: {new['drawn']:.0f} drawn, {new['kept']:.0f} kept (window + {model.cell_margin_px:g} px cell "
        f"margin, get markers), {new['inside']:.0f} inside the window"
    )
    for name, r in (("fused kNN kernel (now)", new), ("cKDTree path (before)", old)):
        print(
            f"  {name:23s} seeds {1e3 * r['seeds']:6.1f} ms | kNN+inputs {1e3 * r['knn']:6.1f} ms | "
            f"MLP {1e3 * r['mlp']:6.1f} ms | GBPD {1e3 * r['gbpd']:4.1f} ms | total {1e3 * r['total']:6.1f} ms"
        )
    if "fused" in mlp:
        print(
            f"  MLP on one window's inputs: oneDNN fused layers {1e3 * mlp['fused']:.1f} ms, module forward "
            f"(torch's default CPU matmul) {1e3 * mlp['plain']:.1f} ms ({mlp['plain'] / mlp['fused']:.1f}x)"
        )
    else:
        print(f"  MLP on one window's inputs: module forward {1e3 * mlp['plain']:.1f} ms (no oneDNN fused path here)")
    t = float(np.median(sample_times))
    us_kept = 1e6 * t / new["kept"]
    us_in = 1e6 * t / new["inside"]
    old_kept = 1e6 * old["total"] / old["kept"]
    print(
        f"  GrainModel.sample end to end: {1e3 * t:.1f} ms = {us_kept:.2f} us per kept seed, "
        f"{us_in:.2f} us per seed inside the window (old path: {old_kept:.2f} us per kept seed, "
        f"{old['total'] / t:.1f}x slower)"
    )
    print(
        f"  paper {PAPER_US_PER_GRAIN} us/grain: {PAPER_US_PER_GRAIN / us_in:.1f}x faster per seed inside the "
        f"window ({PAPER_US_PER_GRAIN / us_kept:.1f}x per kept seed)"
    )
    verdict = lambda us: "met" if us <= TARGET_US_PER_GRAIN else "NOT met"  # noqa: E731
    print(
        f"  target {TARGET_US_PER_GRAIN} us/grain: per seed inside the window {verdict(us_in)}, "
        f"per kept seed {verdict(us_kept)}"
    )
    print(f"  naive per-seed loop: {naive:.1f} us/grain (batched is {naive / us_kept:.0f}x faster)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=3, help="training steps to time")
    ap.add_argument("--generation-only", action="store_true", help="run part 1 only")
    ap.add_argument("--device", default="cpu", help="training device for the GAN steps: cpu, cuda or auto")
    ap.add_argument("--r1", type=float, default=0.0, help="training.d_r1 for the full-step timing (0: off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        nb_threads = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        nb_threads = 0
    cfg = TrainConfig()  # the paper's numbers = recipes/paper-literal.yaml
    print(f"torch {torch.__version__}, threads {args.threads} (numba {nb_threads})")
    part1(args, cfg)
    if args.generation_only:
        return

    # --- GAN steps with the paper's architecture and batch sizes
    rng2 = np.random.default_rng(1)
    fits = []
    for _ in range(3):
        k = 1500
        s = rng2.uniform(-110, 110, (k, 2))
        fits.append(GBPD(s, np.column_stack([rng2.uniform(0.5, 1, k), rng2.uniform(2, 4, k)]), rng2.uniform(1, 10, k)))
    tr = Trainer(fits, 0.05, cfg, 0, device=args.device)
    tr.ng_gt = tr.measure_ng_gt()
    c = cfg
    dev = tr.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(dev)}")
        for _ in range(2):  # warm-up: cuDNN autotuning and lazy module loading stay out of the figures
            tr.step(1, 1)
    tg, td, tf, tt = [], [], [], []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        imgs, _, hard_g = tr.fake(c.batch_g)
        sync()
        t1 = time.perf_counter()
        _, _, real_g = tr.real(c.batch_g)
        x = hard_g.float() + imgs.float() - imgs.float().detach()
        out = tr.disc(torch.cat([real_g.float(), x]))
        loss = ((out[c.batch_g :] - 1) ** 2).mean()
        tr.opt_g.zero_grad()
        loss.backward()
        tr.opt_g.step()
        sync()
        t2 = time.perf_counter()
        with torch.no_grad():
            _, _, fake = tr.fake(c.batch_d)
        _, _, real = tr.real(c.batch_d)
        sync()
        t3 = time.perf_counter()
        out = tr.disc(torch.cat([real.float(), fake.float()]))
        loss_d = ((out[: c.batch_d] - 1) ** 2).mean() + (out[c.batch_d :] ** 2).mean()
        tr.opt_d.zero_grad()
        loss_d.backward()
        tr.opt_d.step()
        sync()
        t4 = time.perf_counter()
        tg.append(t2 - t0)
        tf.append(t1 - t0)
        td.append(t4 - t2)
        tt.append(t3 - t2)
    g_step, d_step = float(np.median(tg)), float(np.median(td))
    print(
        f"== GAN steps (paper architecture: G {list(cfg.generator.hidden)}, "
        f"D width {cfg.discriminator.width} x {cfg.discriminator.blocks} blocks; "
        f"batch G {cfg.training.batch_g}, D {cfg.training.batch_d}+{cfg.training.batch_d})"
    )
    print(f"  G step {g_step:.2f} s (of which T3D cutouts {np.median(tf):.2f} s)")
    print(f"  D step {d_step:.2f} s (of which cutouts {np.median(tt):.2f} s)")
    total = (g_step + d_step) * 200 * 100
    print(f"  paper schedule 200 x 100 steps: {total / 3600:.1f} h on this machine (paper: ~12 h on a desktop GPU)")
    # whole training steps as fit-grains runs them (D update every step, R1 with --r1)
    tr.cfg = dataclasses.replace(cfg, d_skip_below=-1.0, d_r1=args.r1)
    full = []
    for i in range(args.steps):
        sync()
        t0 = time.perf_counter()
        tr.step(1, 1)
        sync()
        full.append(time.perf_counter() - t0)
    print(f"  full training step (D updated, R1 {args.r1:g}): {np.median(full):.2f} s on {dev}")

    prof = cProfile.Profile()
    prof.enable()
    tr.step(1, 1)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
    print("== cProfile of one training step (top 14 by own time)")
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    main()
