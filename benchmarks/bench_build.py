"""Build throughput of the sharded dataset builder (items/s with 1 and 2 workers, peak memory per worker).

SHELL-ONLY ITEMS until the particle assembly is wired in: each item is one shell drawn from a
ShellModel (SH coefficients + SPEC 1.5 descriptors, the ``shells`` config) plus its 64^3
inside-shell voxel mask (a ``voxels_64`` config with a fixed-shape Array3D column), i.e. the
"params + 64^3 voxels" part of a quick.yaml particle without grains. The card and manifest of
the result are rendered once and timed separately.

Targets (issue 6): >= 1 particle/s on this machine and a 2-worker speed-up >= 1.7x. The paper's
figure is 2.37 ms per shell (analytic representation only, Ryzen 9 5900X), i.e. ~422 shells/s.
Baseline measured in the same run: a plain serial loop over items (no sharding, no process pool).

    python benchmarks/bench_build.py [--items 48] [--shard-size 8] [--model shell_model.json]
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
    from nmc_dataset.shells.model import DegreeLaw, ShellModel

    laws = [DegreeLaw(0, "lognormal", {"mu": float(np.log(39.0 * np.sqrt(4 * np.pi))), "sigma": 0.12})]
    laws += [DegreeLaw(ell, "t", {"scale": 1.2 / ell, "df": 6.0}) for ell in range(1, 10)]
    ShellModel(degree=9, voxel_size_um=0.128, laws=laws).write(path)
    return path


def _voxels(coeffs_um: np.ndarray, voxel_um: float):
    from nmc_dataset.particles.voxelize import Grid, shell_mask

    grid = Grid(shape=(VOX, VOX, VOX), index_lo=(-VOX // 2,) * 3, voxel_size_um=voxel_um)
    return shell_mask(coeffs_um, grid).astype(np.uint8)


def make_shard(shard_index, items, *, model_path: str, seed: int, voxel_um: float):
    """shells + voxels_64 tables of one shard (item k from item_seed(seed, k) only)."""
    import datasets
    import pyarrow as pa

    from nmc_dataset.dataset.build import array3d_column
    from nmc_dataset.dataset.recipe import shell_shard

    tables = shell_shard(shard_index, items, model_path=model_path, seed=seed)
    coeffs = np.asarray(tables["shells"].column("sh_coefficients_um").to_pylist())
    col, feature = array3d_column(np.stack([_voxels(c, voxel_um) for c in coeffs]))
    feats = datasets.Features({"particle_id": datasets.Value("int64"), "voxels": feature})
    tables["voxels_64"] = pa.Table.from_arrays([pa.array(np.asarray(items, np.int64)), col],
                                               schema=feats.arrow_schema)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--model", help="a fitted shell_model.json (default: paper-sized synthetic model)")
    args = ap.parse_args(argv)

    from nmc_dataset.dataset.build import build_dataset
    from nmc_dataset.dataset.card import write_card
    from nmc_dataset.dataset.figures import card_figures
    from nmc_dataset.dataset.manifest import write_manifest

    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        model = Path(args.model) if args.model else synthetic_model(tmp / "shell_model.json")
        voxel_um = 12.0 / (VOX - 4)  # a 12 µm box: paper-sized particles fit in 64^3
        fn = functools.partial(make_shard, model_path=str(model.resolve()), seed=1, voxel_um=voxel_um)
        items = list(range(args.items))
        print(f"# bench_build: {args.items} shell-only items (coefficients + descriptors + {VOX}^3 voxels), "
              f"shards of {args.shard_size}, {os.cpu_count()} CPUs")
        print("# NOTE: shell-only items; particles (grains) are not yet wired into the builder")

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
            print(f"builder, {workers} worker(s)      : {dt:7.2f} s  {rates[workers]:7.2f} items/s   "
                  f"peak RSS per worker: " + ", ".join(f"{v:.0f} MiB" for v in sorted(peaks[workers].values())))
        t0 = time.perf_counter()
        figs = card_figures(tmp / "w2")
        write_card(tmp / "w2", {"name": "bench", "version": "0.0.1"}, figures=figs)
        write_manifest(tmp / "w2", dataset={"name": "bench", "version": "0.0.1"})
        t_card = time.perf_counter() - t0
        same = all((tmp / "w1" / p).read_bytes() == (tmp / "w2" / p).read_bytes()
                   for p in [str(f.relative_to(tmp / "w1")) for f in (tmp / "w1" / "data").rglob("*.parquet")])
        speedup = rates[2] / rates[1]
        print(f"figures + card + manifest: {t_card:7.2f} s (once per build)")
        print(f"1 vs 2 workers byte-identical shards: {same}")
        print(f"speed-up 2 workers / 1 worker: {speedup:.2f}x   (target >= 1.7x)")
        print(f"builder (1 worker) / naive loop: {rates[1] / rate_naive:.2f}x")
        print(f"CPU seconds per item in workers: 1 worker {cpu[1] / args.items * 1000:.0f} ms, "
              f"2 workers {cpu[2] / args.items * 1000:.0f} ms  -> speed-up bound on 2 idle cores "
              f"(excl. worker start-up): {2 * cpu[1] / cpu[2]:.2f}x")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
              "(wall-clock speed-up is only meaningful on an idle machine)")
        print(f"throughput vs target 1 item/s: {rates[2]:.2f} items/s = {rates[2] / 1.0:.1f}x target")
        paper = 1000.0 / PAPER_MS_PER_SHELL
        print(f"paper: {PAPER_MS_PER_SHELL} ms per shell (analytic only) = {paper:.0f} shells/s; "
              f"ours incl. descriptors + 64^3 voxels + parquet: {rates[1]:.1f}/s on 1 worker "
              f"(ratio {rates[1] / paper:.3f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
