"""Build throughput of the sharded dataset builder (items/s with 1 and 2 workers, peak memory per worker).

Two modes:

``--mode particles`` (default): real multi-scale particles through the release builder
(:func:`nmc_dataset.pipeline._particle_shards.particle_shard`): shell from a reference ShellModel,
grains from a real GrainModel (seeded, untrained G_net at the paper's intensity 0.0018 px^-3 and
0.05 µm pixel), assembly, the full-resolution volume at ``--voxel-size-um`` (grain statistics of
the params tables), the ``particles`` + ``grains`` configs and a ``voxels_64`` config (64^3
uint16 Array3D per particle); then figures + card + manifest, timed once. Baseline measured in
the same run: ``nmc-dataset generate``'s one-process loop (params + HDF5 voxels, no 64^3 cubes)
over the same particles.

``--mode shells``: shell-only items (SH coefficients + descriptors + a 64^3 inside-shell mask).

Targets: >= 1 particle/s on this machine and a 2-worker speed-up >= 1.7x. The paper's
figure is 2.37 ms per shell (analytic representation only, Ryzen 9 5900X), i.e. ~422 shells/s.

    python benchmarks/bench_build.py [--mode particles] [--items 24] [--shard-size 4]
                                     [--radius-um 2.0] [--voxel-size-um 0.1]
    python benchmarks/bench_build.py --mode shells [--items 48] [--shard-size 8] [--model shell_model.json]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread per worker, as the builder gives its spawned workers

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOX = 64
PAPER_MS_PER_SHELL = 2.37


def synthetic_model(path: Path) -> Path:
    """A ShellModel of paper-sized shells (radius ~39 voxels = 5 µm at 0.128 µm) from known laws."""
    from nmc_dataset.shells._model import DegreeLaw, ShellModel

    laws = [DegreeLaw(0, "lognormal", {"mu": float(np.log(39.0 * np.sqrt(4 * np.pi))), "sigma": 0.12})]
    laws += [DegreeLaw(ell, "t", {"scale": 1.2 / ell, "df": 6.0}) for ell in range(1, 10)]
    ShellModel(degree=9, voxel_size_um=0.128, laws=laws).write(path)
    return path


def _voxels(coeffs_um: np.ndarray, voxel_um: float):
    from nmc_dataset.particles._voxelize import Grid, shell_mask

    grid = Grid(shape=(VOX, VOX, VOX), index_lo=(-VOX // 2,) * 3, voxel_size_um=voxel_um)
    return shell_mask(coeffs_um, grid).astype(np.uint8)


def make_shard(shard_index, items, *, model_path: str, seed: int, voxel_um: float):
    """shells + voxels_64 tables of one shard (item k from item_seed(seed, k) only)."""
    import datasets
    import pyarrow as pa

    from nmc_dataset.pipeline._build import array3d_column
    from nmc_dataset.pipeline._stage_dataset import shell_shard

    tables = shell_shard(shard_index, items, model_path=model_path, seed=seed)
    coeffs = np.asarray(tables["shells"].column("sh_coefficients_um").to_pylist())
    col, feature = array3d_column(np.stack([_voxels(c, voxel_um) for c in coeffs]))
    feats = datasets.Features({"particle_id": datasets.Value("int64"), "voxels": feature})
    tables["voxels_64"] = pa.Table.from_arrays([pa.array(np.asarray(items, np.int64)), col], schema=feats.arrow_schema)
    return tables


def naive(items, model_path, seed, voxel_um, out: Path):
    """Baseline: one plain loop, one item at a time, one parquet per config at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = {"shells": [], "voxels_64": []}
    for k in items:
        t = make_shard(0, [k], model_path=model_path, seed=seed, voxel_um=voxel_um)
        for c in parts:
            parts[c].append(t[c])
    for c, ts in parts.items():
        pq.write_table(pa.concat_tables(ts), out / f"{c}.parquet")


def particle_models(folder: Path, radius_um: float):
    """A reference ShellModel (mean radius ``radius_um``) and a real GrainModel at the paper's intensity."""
    import torch

    from nmc_dataset.calibration._generator import GNet
    from nmc_dataset.calibration._model import GrainModel
    from nmc_dataset.synthetic._ct_phantom import reference_shell_model

    folder.mkdir(parents=True, exist_ok=True)
    reference_shell_model(mean_radius_vox=radius_um / 0.128, voxel_size_um=0.128).write(folder / "shell.json")
    torch.manual_seed(0)
    GrainModel(gnet=GNet(hidden=(32, 32)), intensity_per_px3=0.0018, pixel_size_um=0.05).write(folder / "grain")
    return folder / "shell.json", folder / "grain"


def _shard_cpu(out: Path) -> tuple[float, float]:
    """Median CPU seconds of a shard, and the mean extra CPU of each worker's costliest (first) shard."""
    import json

    recs = [json.loads(p.read_text()) for p in sorted((out / ".build").glob("shards-*/done/*.json"))]
    cpus = np.array([r["cpu_seconds"] for r in recs])
    med = float(np.median(cpus))
    by_pid: dict = {}
    for r in recs:
        by_pid.setdefault(r["pid"], []).append(r["cpu_seconds"])
    extra = [max(v) - med for v in by_pid.values()]
    return med, float(np.mean(extra)) if extra else 0.0


def bench_particles(args) -> int:
    import torch

    from nmc_dataset.pipeline._build import build_dataset
    from nmc_dataset.pipeline._card import write_card
    from nmc_dataset.pipeline._card_figures import card_figures
    from nmc_dataset.pipeline._generate import generate_particles, load_grain_model, load_shell_model
    from nmc_dataset.pipeline._manifest import write_manifest
    from nmc_dataset.pipeline._particle_shards import particle_shard, release_configs

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_particles_"))
    try:
        shell_path, grain_path = particle_models(tmp / "models", args.radius_um)
        n, ss = args.items, args.shard_size
        print(
            f"# bench_build --mode particles: {n} particles (shell radius ~{args.radius_um} µm, grains at "
            f"0.0018 px^-3, 0.05 µm px), full-resolution voxels {args.voxel_size_um} µm, + {VOX}^3 cubes; "
            f"shards of {ss}; {os.cpu_count()} CPUs"
        )
        shell, sid = load_shell_model(shell_path)
        grain, gid = load_grain_model(grain_path)
        t0 = time.perf_counter()
        rec = generate_particles(
            shell,
            grain,
            n=n,
            seed=1,
            voxel_size_um=args.voxel_size_um,
            formats=("params", "voxels"),
            out=tmp / "naive",
            shell_model_id=sid,
            grain_model_id=gid,
        )
        t_naive = time.perf_counter() - t0
        rate_naive = n / t_naive
        grains = sum(p["n_grains"] for p in rec["particles"])
        shape = np.max([p["grid_shape_zyx"] for p in rec["particles"]], axis=0)
        print(f"grains per particle: {grains / n:.0f} on average; largest full-resolution grid {tuple(shape)}")
        print(f"naive: `generate` loop (params + HDF5, no cubes): {t_naive:7.2f} s  {rate_naive:6.2f} particles/s")

        rates, peaks, cpu, steady, startup = {}, {}, {}, {}, {}
        for workers in (1, 2):
            out = tmp / f"w{workers}"
            fn = functools.partial(
                particle_shard,
                out=str(out),
                n_shards=-(-n // ss),
                shell_model_path=str(shell_path),
                grain_model_path=str(grain_path),
                seed=1,
                voxel_size_um=args.voxel_size_um,
                cubes=(VOX,),
                formats=("params", "voxels"),
            )
            t0 = time.perf_counter()
            r = build_dataset(out, n, ss, fn, release_configs([VOX]), workers=workers)
            dt = time.perf_counter() - t0
            rates[workers], peaks[workers], cpu[workers] = n / dt, r.peak_rss_mib, r.cpu_seconds
            steady[workers], startup[workers] = _shard_cpu(out)
            print(
                f"builder, {workers} worker(s): {dt:7.2f} s  {rates[workers]:6.2f} particles/s   peak RSS per "
                f"worker: " + ", ".join(f"{v:.0f} MiB" for v in sorted(peaks[workers].values()))
            )
        t0 = time.perf_counter()
        figs = card_figures(tmp / "w2")
        write_card(tmp / "w2", {"name": "bench", "version": "0.0.1"}, figures=figs)
        write_manifest(tmp / "w2", dataset={"name": "bench", "version": "0.0.1"})
        t_card = time.perf_counter() - t0
        rels = [
            f.relative_to(tmp / "w1")
            for f in (tmp / "w1").rglob("*")
            if f.is_file() and ".build" not in f.parts and f.parent.name != "figures"
        ]
        same = all((tmp / "w1" / p).read_bytes() == (tmp / "w2" / p).read_bytes() for p in rels)
        speedup = rates[2] / rates[1]
        total2 = n / (n / rates[2] + t_card)
        print(f"figures + card + manifest: {t_card:7.2f} s (once per build)")
        print(f"1 vs 2 workers byte-identical shards + HDF5: {same} ({len(rels)} files)")
        print(f"speed-up 2 workers / 1 worker: {speedup:.2f}x   (target >= 1.7x)")
        per = steady[1] / ss
        up = startup[2]
        print(
            f"CPU per particle in steady state (median shard / shard size): {per:.3f} s (1 worker), "
            f"{steady[2] / ss:.3f} s (2 workers); worker start-up (imports + model load, CPU of a worker's first "
            f"shard beyond the median): {up:.1f} s"
        )
        print(
            f"CPU seconds per particle in workers incl. start-up: 1 worker {cpu[1] / n:.2f} s, 2 workers "
            f"{cpu[2] / n:.2f} s"
        )
        for m in (n, 1000):
            bound = (m * per) / (m * per / 2 + up)
            print(f"  -> 2-worker speed-up bound on 2 idle cores for {m} particles: {bound:.2f}x")
        print(f"builder (1 worker) / naive generate loop: {rates[1] / rate_naive:.2f}x")
        print(
            f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            "(wall-clock speed-up is only meaningful on an idle machine)"
        )
        print(f"end to end with card, 2 workers: {total2:.2f} particles/s = {total2:.2f}x the 1 particle/s target")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["particles", "shells"], default="particles")
    ap.add_argument("--items", type=int, default=None, help="default: 24 particles / 48 shells")
    ap.add_argument("--shard-size", type=int, default=None, help="default: 4 particles / 8 shells")
    ap.add_argument("--model", help="shells mode: a fitted shell_model.json (default: paper-sized synthetic model)")
    ap.add_argument("--radius-um", type=float, default=2.0, help="particles mode: mean shell radius (default 2 µm)")
    ap.add_argument(
        "--voxel-size-um", type=float, default=0.1, help="particles mode: full-resolution voxel size (default 0.1 µm)"
    )
    args = ap.parse_args(argv)
    if args.mode == "particles":
        args.items = args.items or 24
        args.shard_size = args.shard_size or 4
        return bench_particles(args)
    args.items = args.items or 48
    args.shard_size = args.shard_size or 8

    from nmc_dataset.pipeline._build import build_dataset
    from nmc_dataset.pipeline._card import write_card
    from nmc_dataset.pipeline._card_figures import card_figures
    from nmc_dataset.pipeline._manifest import write_manifest

    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        model = Path(args.model) if args.model else synthetic_model(tmp / "shell_model.json")
        voxel_um = 12.0 / (VOX - 4)  # a 12 µm box: paper-sized particles fit in 64^3
        fn = functools.partial(make_shard, model_path=str(model.resolve()), seed=1, voxel_um=voxel_um)
        items = list(range(args.items))
        print(
            f"# bench_build: {args.items} shell-only items (coefficients + descriptors + {VOX}^3 voxels), "
            f"shards of {args.shard_size}, {os.cpu_count()} CPUs"
        )

        t0 = time.perf_counter()
        (tmp / "naive").mkdir()
        naive(items, str(model.resolve()), 1, voxel_um, tmp / "naive")
        t_naive = time.perf_counter() - t0
        rate_naive = args.items / t_naive
        print(f"naive serial loop        : {t_naive:7.2f} s  {rate_naive:7.2f} items/s")

        rates, peaks, cpu = {}, {}, {}
        for workers in (1, 2):
            out = tmp / f"w{workers}"
            t0 = time.perf_counter()
            r = build_dataset(out, args.items, args.shard_size, fn, ["shells", "voxels_64"], workers=workers)
            dt = time.perf_counter() - t0
            rates[workers] = args.items / dt
            peaks[workers] = r.peak_rss_mib
            cpu[workers] = r.cpu_seconds
            print(
                f"builder, {workers} worker(s)      : {dt:7.2f} s  {rates[workers]:7.2f} items/s   "
                f"peak RSS per worker: " + ", ".join(f"{v:.0f} MiB" for v in sorted(peaks[workers].values()))
            )
        t0 = time.perf_counter()
        figs = card_figures(tmp / "w2")
        write_card(tmp / "w2", {"name": "bench", "version": "0.0.1"}, figures=figs)
        write_manifest(tmp / "w2", dataset={"name": "bench", "version": "0.0.1"})
        t_card = time.perf_counter() - t0
        same = all(
            (tmp / "w1" / p).read_bytes() == (tmp / "w2" / p).read_bytes()
            for p in [str(f.relative_to(tmp / "w1")) for f in (tmp / "w1" / "data").rglob("*.parquet")]
        )
        speedup = rates[2] / rates[1]
        print(f"figures + card + manifest: {t_card:7.2f} s (once per build)")
        print(f"1 vs 2 workers byte-identical shards: {same}")
        print(f"speed-up 2 workers / 1 worker: {speedup:.2f}x   (target >= 1.7x)")
        print(f"builder (1 worker) / naive loop: {rates[1] / rate_naive:.2f}x")
        print(
            f"CPU seconds per item in workers: 1 worker {cpu[1] / args.items * 1000:.0f} ms, "
            f"2 workers {cpu[2] / args.items * 1000:.0f} ms  -> speed-up bound on 2 idle cores "
            f"(excl. worker start-up): {2 * cpu[1] / cpu[2]:.2f}x"
        )
        print(
            f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            "(wall-clock speed-up is only meaningful on an idle machine)"
        )
        print(f"throughput vs target 1 item/s: {rates[2]:.2f} items/s = {rates[2] / 1.0:.1f}x target")
        paper = 1000.0 / PAPER_MS_PER_SHELL
        print(
            f"paper: {PAPER_MS_PER_SHELL} ms per shell (analytic only) = {paper:.0f} shells/s; "
            f"ours incl. descriptors + 64^3 voxels + parquet: {rates[1]:.1f}/s on 1 worker "
            f"(ratio {rates[1] / paper:.3f})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
