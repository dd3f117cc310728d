"""Sequences: time of one 256³ state (evolve + render) and DVC error vs SNR and vs strain.

Run: ``PYTHONPATH=. python benchmarks/bench_sequences.py [--size 256] [--quick]``

1. A 64³ electrode (0.05 µm voxels, ~0.9 µm particles with grain orientations, the test models) is
   packed and tiled periodically to ``size³`` (particle and grain ids offset per tile, so the tiled
   box is a valid periodic electrode); one cycling state (lattice strain, cracks, compaction, rigid
   motions) is evolved and rendered with the lab-nanoct preset. Target: evolve + render ≤ 120 s.
2. DVC (``local`` engine, and ``spam`` when installed) on the 64³ electrode: error vs photon count
   (SNR) on a smooth protocol, and vs the imposed compaction strain, with the engine's time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from nmc_dataset.tomography import _evolve as ev
from nmc_dataset.tomography._ctsim import render_ct, resolve_settings
from nmc_dataset.tomography._dvc import compare, grid_nodes, measure, true_increment


def _electrode(tmp: Path):
    from nmc_dataset.cli import _main as cli
    from nmc_dataset.ebsd._orientation_model import OrientationModel
    from nmc_dataset.tomography._volumes import read_table, read_volumes
    from tests.particles.fixtures import write_models

    shell, grain = write_models(tmp / "models")
    OrientationModel(-8.0, 2.0).save(grain / "orientation_model.json")
    out = tmp / "e.h5"
    assert (
        cli.main(
            [
                "-q",
                "pack",
                "--shell-model",
                str(shell),
                "--grain-model",
                str(grain),
                "--box-um",
                "3.2",
                "--voxel-size-um",
                "0.05",
                "--solid-fraction",
                "0.45",
                "--seed",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    arrays, _ = read_volumes(out, ("phase", "particle", "grain"))
    return arrays, read_table(out, "particles"), read_table(out, "grains")


def _tile(arrays, particles, grains, k: int, h: float = 0.05):
    """Periodic k×k×k tiling with particle/grain ids offset per tile.

    A particle that crosses the small box's faces is in pieces there; in the tiled box each voxel
    takes the copy of its particle whose centre image is nearest (minimum image in the small box),
    so every particle stays whole and keeps one centre.
    """
    n = arrays["phase"].shape[0]
    N, M = len(particles["center_um"]), len(grains["particle"])
    cen = np.asarray(particles["center_um"], np.float64) / h - 0.5  # voxel coordinates of the centres
    out = {key: np.zeros((k * n,) * 3, dtype=a.dtype) for key, a in arrays.items()}
    local = np.indices((n, n, n), dtype=np.float64)
    pk = arrays["particle"].astype(np.int64) - 1
    solid = pk >= 0
    r = np.zeros((3,) + pk.shape)
    for a in range(3):  # minimum-image offset of each solid voxel from its particle's centre
        d = local[a] - cen[np.maximum(pk, 0), a]
        r[a] = np.where(solid, d - n * np.round(d / n), 0.0)
    for i in range(k):
        for j in range(k):
            for m in range(k):
                sl = (slice(i * n, (i + 1) * n), slice(j * n, (j + 1) * n), slice(m * n, (m + 1) * n))
                out["phase"][sl] = arrays["phase"]
                # the tile holding this voxel's particle centre image
                tile = [np.floor((local[a] + (i, j, m)[a] * n - r[a]) / n).astype(np.int64) % k for a in range(3)]
                t = (tile[0] * k + tile[1]) * k + tile[2]
                out["particle"][sl] = np.where(solid, arrays["particle"] + t * N, 0)
                out["grain"][sl] = np.where(arrays["grain"] > 0, arrays["grain"] + t * M, 0)
    centres, q, gp = [], [], []
    for t in range(k**3):
        i, j, m = t // (k * k), (t // k) % k, t % k
        # the centre image of tile t: wrapped into the small box, then shifted by the tile
        c = (cen % n + 0.5) * h + np.array([i, j, m]) * n * h
        centres.append(c)
        q.append(grains["orientation_wxyz"])
        gp.append(grains["particle"] + t * N)
    return (
        out,
        {"center_um": np.concatenate(centres)},
        {"orientation_wxyz": np.concatenate(q), "particle": np.concatenate(gp)},
    )


def _dvc(f0, f1, u0, u1, half=8, step=6, engine="local"):
    nodes = grid_nodes(f0.shape, half, step, margin=4)
    tr = true_increment(u0, u1, nodes)
    d, q, sec = measure(f0, f1, nodes, half, engine=engine, prefilter_sigma=1.0)
    r = compare(d, tr, q, ~np.all(np.isfinite(tr), axis=1))
    e = np.linalg.norm(d - tr, axis=1)
    return r, float(np.nanmedian(e)), sec, len(nodes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="fewer DVC rows")
    ap.add_argument("--no-dvc", action="store_true", help="only the timing of one large state")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        arrays, particles, grains = _electrode(tmp)
        k = max(1, args.size // arrays["phase"].shape[0])
        # ---------------------------------------------------------------- one large state
        big, bp, bg = _tile(arrays, particles, grains, k)
        proto = ev.validate_protocol({"cycles": 1.0})
        t0 = time.perf_counter()
        seq = ev.Sequence(big, bp, bg, voxel_size_um=0.05, periodic=True, protocol=proto, steps=3, seed=1)
        t_init = time.perf_counter() - t0
        t0 = time.perf_counter()
        st = seq.state(1)
        t_state = time.perf_counter() - t0
        t0 = time.perf_counter()
        settings = resolve_settings("lab-nanoct")
        ct, _ = render_ct(
            st["phase"], 0.05, settings=settings, seed=5, fractions=(st["nmc_fraction"], st["binder_fraction"])
        )
        t_render = time.perf_counter() - t0
        total = t_init + t_state + t_render
        s = st["summary"]
        print(
            f"one {big['phase'].shape[0]}³ state ({seq.N} particles, {len(bg['particle'])} grains, "
            f"{len(seq.interfaces)} interfaces, {s['cracks']} cracks): model set-up {t_init:.1f} s, state "
            f"{t_state:.1f} s, render (lab-nanoct, CT {'x'.join(map(str, ct.shape))}) {t_render:.1f} s; "
            f"total {total:.1f} s = {total / 120:.2f} x the 120 s target"
        )
        del big, seq, st, ct
        if args.no_dvc:
            return
        # ---------------------------------------------------------------- DVC vs SNR and strain
        engines = ["local"]
        try:
            import spam.DIC  # noqa: F401

            engines.append("spam")
        except ImportError:
            print("spam not installed: only the local engine")
        print(
            "\nDVC on 64³ CT pairs (binning 1, 0.05 µm voxels, subsets 16³, nodes every 6 voxels, prefilter σ=1;"
            " error = |measured − true| per node, voxels)"
        )
        print(
            "| engine | photons | rings | compaction zz | truth RMS | RMS error | median error | bias z, y, x |"
            " engine s | nodes |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        rows = [
            (2e3, 0.01, -0.02),
            (2e4, 0.01, -0.02),
            (2e4, 0.0, -0.02),
            (1e7, 0.0, -0.02),
            (1e7, 0.0, -0.005),
            (1e7, 0.0, -0.05),
        ]
        if args.quick:
            rows = rows[1:4]
        cache = {}
        for photons, rings, ezz in rows:
            if ezz not in cache:
                p = ev.validate_protocol(
                    {
                        "soc": {"min": 0.0, "max": 0.0},
                        "cracks": {"nuclei_per_cycle": 0},
                        "compaction": {"strain": {"zz": ezz}, "random_vox": 0.2, "random_length_um": 0.8},
                        "rigid": {"translation_vox": 0.0, "rotation_deg": 0.0},
                    }
                )
                sq = ev.Sequence(
                    arrays, particles, grains, voxel_size_um=0.05, periodic=True, protocol=p, steps=2, seed=1
                )
                cache[ezz] = (sq.state(0), sq.state(1))
            s0, s1 = cache[ezz]
            st_ = dict(resolve_settings("lab-nanoct", photons=photons, rings=rings, binning=1))
            c0, _ = render_ct(
                s0["phase"],
                0.05,
                settings=st_,
                seed=11,
                gain_seed=3,
                fractions=(s0["nmc_fraction"], s0["binder_fraction"]),
            )
            c1, _ = render_ct(
                s1["phase"],
                0.05,
                settings=st_,
                seed=12,
                gain_seed=3,
                fractions=(s1["nmc_fraction"], s1["binder_fraction"]),
            )
            for engine in engines:
                r, med, sec, nn = _dvc(c0, c1, s0["displacement"], s1["displacement"], engine=engine)
                bias = ", ".join(f"{b:+.3f}" for b in r["bias_vox"])
                print(
                    f"| {engine} | {photons:.0e} | {rings} | {ezz} | {r['truth_rms_vox']:.3f} | "
                    f"{r['rms_error_vox']:.3f} | {med:.3f} | {bias} | {sec:.1f} | {nn} |"
                )
        # the same pair without the CT: partial-volume images, the model's own limit (subset shape function)
        s0, s1 = cache[-0.02]
        r, med, sec, nn = _dvc(
            s0["nmc_fraction"] + 0.2 * s0["binder_fraction"],
            s1["nmc_fraction"] + 0.2 * s1["binder_fraction"],
            s0["displacement"],
            s1["displacement"],
        )
        print(
            f"| local | no CT (partial volumes) | - | -0.02 | {r['truth_rms_vox']:.3f} | {r['rms_error_vox']:.3f} |"
            f" {med:.3f} | - | {sec:.1f} | {nn} |"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
