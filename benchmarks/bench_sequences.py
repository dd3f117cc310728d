"""Sequences: time of one 256³ state (evolve + render) and DVC error vs SNR and vs strain.

Run: ``PYTHONPATH=. python benchmarks/bench_sequences.py [--size 256] [--quick]``

1. A 64³ electrode (0.05 µm voxels, ~0.9 µm particles with grain orientations, the test models) is
   packed and tiled periodically to ``size³`` (particle and grain ids offset per tile, so the tiled
   box is a valid periodic electrode); one cycling state (lattice strain, cracks, compaction, rigid
   motions) is evolved and rendered with the lab-nanoct preset. Target: evolve + render ≤ 120 s.
   The DVC engine's time on the same state's pair is measured on a block of nodes and scaled to the
   full node grid.
2. DVC (``local`` engine at the check-dvc defaults, the former translation 16³ defaults, and ``spam``
   when installed) at the lab-nanoct preset (binning 2, a 2³-tiled electrode): the error budget
   (noise-free / noisy, warped / rendered pairs), error vs photon count (SNR) and vs strain, with
   the engine's time; then the binning-1 pair of the former table.
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
from nmc_dataset.tomography._dvc import (
    compare,
    correlate,
    grid_nodes,
    new_crack_fraction,
    subset_truth,
    true_increment,
    warp,
)


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


def _bin_u(u, s):
    """The truth on the CT grid as render-ct SEQ/ writes it: the mean over each s³ block divided by s."""
    if s == 1:
        return u
    n = u.shape[0] // s
    return u[: n * s, : n * s, : n * s].reshape(n, s, n, s, n, s, 3).mean(axis=(1, 3, 5)) / s


# engine configurations: the defaults of check-dvc, the former defaults (translation 16³, σ = 1) and spam
CONFIGS = {
    "local": dict(engine="local", shape="affine", half=12, sigma=2.0),
    "local-translation-16": dict(engine="local", shape="translation", half=8, sigma=1.0),
    "spam": dict(engine="spam", shape="affine", half=12, sigma=2.0),
}


def _row(label, f0, f1, inc, cfg, step=8, clean0=None):
    """One table row: point-truth error, reliable nodes, subset-truth split, time."""
    c = CONFIGS[cfg]
    nodes = grid_nodes(f0.shape, c["half"], step, margin=4)
    tr = true_increment(np.zeros_like(inc), inc, nodes - 0.5)
    st = subset_truth(
        f0 if clean0 is None else clean0, inc, nodes, c["half"], prefilter_sigma=c["sigma"], shape=c["shape"]
    )
    r = correlate(f0, f1, nodes, c["half"], engine=c["engine"], prefilter_sigma=c["sigma"], shape=c["shape"])
    res = compare(
        r["displacement"], tr, r["quality"], ~np.all(np.isfinite(tr), axis=1), reliable=r["reliable"], subset=st
    )
    bias = ", ".join(f"{b:+.3f}" for b in res["bias_vox"])
    print(
        f"| {label} | {cfg} ({c['shape']}, {2 * c['half']}³, σ={c['sigma']:g}) | {len(nodes)} | "
        f"{res['truth_rms_vox']:.3f} | "
        f"**{res['rms_error_vox']:.3f}** | {res['median_error_vox']:.3f} | {res['coverage']:.2f} | "
        f"{res.get('rms_error_reliable_vox', np.nan):.3f} | {res.get('rms_error_vs_subset_truth_vox', np.nan):.3f} | "
        f"{res.get('subset_truth_vs_point_rms_vox', np.nan):.3f} | {bias} | {r['seconds']:.1f} |",
        flush=True,
    )
    return res, r


HEADER = (
    "| pair | engine | nodes | truth RMS | RMS error | median | coverage | RMS reliable | vs subset truth | "
    "subset vs point truth | bias z, y, x | engine s |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _smooth(arrays, particles, grains, ezz=-0.02, lattice=1.0, random_vox=0.0, h=0.05):
    p = ev.validate_protocol(
        {
            "cycles": 0.5,  # one half cycle: the reference at x = 0, the state at x = 0.8 (the largest a change)
            "lattice": {"scale": lattice},
            "cracks": {"nuclei_per_cycle": 0},
            "compaction": {"strain": {"zz": ezz}, "random_vox": random_vox},
            "rigid": {"translation_vox": 0.0, "rotation_deg": 0.0},
        }
    )
    sq = ev.Sequence(arrays, particles, grains, voxel_size_um=h, periodic=True, protocol=p, steps=2, seed=1)
    return sq.state(0), sq.state(1)


def _render(state, photons=None, rings=None, binning=None, seed=11):
    st = resolve_settings("lab-nanoct", photons=photons, rings=rings, binning=binning)
    ct, _ = render_ct(
        state["phase"],
        0.05,
        settings=st,
        seed=seed,
        gain_seed=3,
        fractions=(state["nmc_fraction"], state["binder_fraction"]),
    )
    return ct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="fewer DVC rows")
    ap.add_argument("--no-dvc", action="store_true", help="only the timing of one large state (and its DVC)")
    ap.add_argument("--no-large", action="store_true", help="only the DVC tables (no large state)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        arrays, particles, grains = _electrode(tmp)
        k = max(1, args.size // arrays["phase"].shape[0])
        if not args.no_large:
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
            # the DVC engine beside it: the same state's pair (reference + state 1) on the 128³ CT, timed on a block
            # of nodes of the full grid (24³ subsets every 8 CT voxels, the check-dvc defaults)
            ct0 = _render(seq.state(0), seed=4)
            full = grid_nodes(ct.shape, 12, 8, margin=4)
            block = full[np.all((full >= 40) & (full < 88), axis=1)]
            r = correlate(ct0, ct, block, 12, prefilter_sigma=2.0, shape="affine")
            per = r["seconds"] / len(block)
            print(
                f"DVC (local, affine 24³, σ=2) on this pair: {len(block)} nodes in {r['seconds']:.1f} s = "
                f"{per * 1e3:.0f} ms per node; the full grid of {len(full)} nodes every 8 CT voxels: "
                f"~{per * len(full):.0f} s "
                f"({per * len(full) / total:.2f} x the state's evolve + render)"
            )
            del big, seq, st, ct, ct0
            if args.no_dvc:
                return
        engines = list(CONFIGS)
        try:
            import spam.DIC  # noqa: F401
        except ImportError:
            engines.remove("spam")
            print("spam not installed: only the local engine")
        # ---------------------------------------------------------------- the lab preset as it is (binning 2)
        b2, b2p, b2g = _tile(arrays, particles, grains, 2)  # 128³ labels -> 64³ CT of 0.1 µm
        print(
            "\nDVC at the lab-nanoct preset (binning 2: 64³ CT of 0.1 µm voxels from a periodic 128³ electrode; "
            "smooth pair: lattice strain x 0 -> 0.8 + compaction, no cracks, no rigid motion; nodes every 8 voxels; "
            "errors in CT voxels; 'vs subset truth' = engine error, 'subset vs point truth' = what a subset of "
            "that size cannot resolve)"
        )
        print(HEADER)
        s0, s1 = _smooth(b2, b2p, b2g)
        inc = _bin_u(s1["displacement"], 2)
        clean0 = _render(s0, photons=1e9, rings=0.0)
        clean1 = _render(s1, photons=1e9, rings=0.0, seed=12)
        lab0, lab1 = _render(s0), _render(s1, seed=12)
        noise = float(np.std(lab0 - clean0))
        contrast = float(np.percentile(clean0, 95) - np.percentile(clean0, 5))
        print(f"(lab noise: SD {noise:.4f} 1/µm, NMC - pore contrast {contrast:.4f}: CNR {contrast / noise:.1f})")
        warped = warp(clean0, inc)
        for cfg in engines:
            _row("lab noise, rendered pair", lab0, lab1, inc, cfg, clean0=clean0)
        for cfg in engines[:2]:
            _row("no noise, warped (pure DVC)", clean0, warped, inc, cfg)
            _row("no noise, rendered", clean0, clean1, inc, cfg)
            _row("lab noise, warped", lab0, warped + (lab1 - clean1), inc, cfg, clean0=clean0)
        # error vs SNR
        print("\nError vs SNR (same pair, photon count per detector pixel; rings 0.01 as the preset, none at 1e7)")
        print(HEADER)
        for photons, rings in ((5e2, 0.01), (2e4, 0.01), (1e7, 0.0)):
            c0, c1 = _render(s0, photons=photons, rings=rings), _render(s1, photons=photons, rings=rings, seed=12)
            cnr = contrast / float(np.std(c0 - clean0))
            for cfg in engines:
                _row(f"photons {photons:.0e} (CNR {cnr:.1f})", c0, c1, inc, cfg, clean0=clean0)
        # error vs strain
        print("\nError vs strain (lab noise): compaction zz, lattice scale, the random field")
        print(HEADER)
        for ezz, lat, rnd in ((-0.005, 1.0, 0.0), (-0.05, 1.0, 0.0), (-0.02, 0.0, 0.0), (-0.02, 1.0, 0.2)):
            t0_, t1_ = _smooth(b2, b2p, b2g, ezz=ezz, lattice=lat, random_vox=rnd)
            inc_ = _bin_u(t1_["displacement"], 2)
            c0, c1 = _render(t0_), _render(t1_, seed=12)
            cl0 = _render(t0_, photons=1e9, rings=0.0)
            label = f"zz {ezz:+.3f}, lattice x{lat:g}" + (f", random {rnd} vox / 1 µm" if rnd else "")
            for cfg in engines:
                _row(label, c0, c1, inc_, cfg, clean0=cl0)
        # cracks: the default protocol (rigid motions, random field, grain-boundary cracks) at lab noise
        print(
            "\nCracks at lab noise (default protocol, reference -> state 1 of 2 (one cycle): does the quality rank"
            " the nodes by the share of their subset that cracked?)"
        )
        print("| engine | nodes | crack nodes | crack share of worst 10 % (base) | Spearman quality vs new crack |")
        print("|---|---|---|---|---|")
        sq = ev.Sequence(
            b2, b2p, b2g, voxel_size_um=0.05, periodic=True, protocol=ev.validate_protocol({}), steps=2, seed=1
        )
        t0_, t1_ = sq.state(0), sq.state(1)
        c0, c1 = _render(t0_), _render(t1_, seed=12)
        inc_ = _bin_u(t1_["displacement"], 2)
        n = inc_.shape[0]
        ck = t1_["crack"][: 2 * n, : 2 * n, : 2 * n].reshape(n, 2, n, 2, n, 2).max(axis=(1, 3, 5))
        for cfg in engines:
            c = CONFIGS[cfg]
            nodes = grid_nodes(c0.shape, c["half"], 8, margin=4)
            tr = true_increment(np.zeros_like(inc_), inc_, nodes - 0.5)
            r = correlate(c0, c1, nodes, c["half"], engine=c["engine"], prefilter_sigma=c["sigma"], shape=c["shape"])
            frac = new_crack_fraction(np.zeros_like(ck), ck, nodes, c["half"])
            crack = (frac > 0) | ~np.all(np.isfinite(tr), axis=1)
            res = compare(r["displacement"], tr, r["quality"], crack, reliable=r["reliable"], crack_fraction=frac)
            print(
                f"| {cfg} | {len(nodes)} | {res['crack_nodes']} | {res.get('crack_share_of_worst_decile', np.nan):.2f}"
                f" ({res.get('crack_share_of_nodes', np.nan):.2f}) | "
                f"{res.get('quality_vs_new_crack_spearman', np.nan):.2f} |",
                flush=True,
            )
        del b2, b2p, b2g
        if args.quick:
            return
        # ---------------------------------------------------------------- binning 1 (the former table's pairs)
        print(
            "\nBinning 1 (64³ CT of 0.05 µm voxels, lab photons 2e3 and rings 0.01; the same smooth pair with the "
            "random field 0.2 vox / 0.8 µm as the former table): the noise per voxel is twice the preset's"
        )
        print(HEADER)
        p = ev.validate_protocol(
            {
                "soc": {"min": 0.0, "max": 0.0},
                "cracks": {"nuclei_per_cycle": 0},
                "compaction": {"strain": {"zz": -0.02}, "random_vox": 0.2, "random_length_um": 0.8},
                "rigid": {"translation_vox": 0.0, "rotation_deg": 0.0},
            }
        )
        sq = ev.Sequence(arrays, particles, grains, voxel_size_um=0.05, periodic=True, protocol=p, steps=2, seed=1)
        s0, s1 = sq.state(0), sq.state(1)
        c0, c1 = _render(s0, binning=1), _render(s1, binning=1, seed=12)
        cl0 = _render(s0, photons=1e9, rings=0.0, binning=1)
        for cfg in engines:
            _row("compaction -0.02 + random 0.2 vox, binning 1", c0, c1, s1["displacement"], cfg, clean0=cl0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
