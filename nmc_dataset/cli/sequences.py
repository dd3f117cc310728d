"""``nmc-dataset evolve`` and ``nmc-dataset check-dvc``: 3D+t sequences of an electrode and their DVC check."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from nmc_dataset._util import log, write_json_atomic
from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import InputError
from nmc_dataset.outputs import add_force_option, output_folder
from nmc_dataset.pipeline._sequences import (
    CT_SEQUENCE_FORMAT,
    MANIFEST,
    SEQUENCE_FORMAT,
    _sha256,
    read_sequence,
    sequence_id,
    write_state,
)


def _cmd_evolve(args) -> int:
    from nmc_dataset.tomography._evolve import Sequence, load_protocol, validate_protocol
    from nmc_dataset.tomography._volumes import read_table, read_volumes

    src = Path(args.electrode)
    if src.is_dir():
        raise InputError("is a folder; evolve takes one electrode file (pack output)", src)
    if not src.is_file():
        raise InputError("not found", src)
    protocol = load_protocol(args.protocol) if args.protocol else validate_protocol(None)
    arrays, meta = read_volumes(src, ("phase", "particle", "grain"), kinds=("electrode",))
    if "sequence" in meta:
        raise InputError("is a state of a sequence; evolve the reference electrode (pack output)", src)
    particles = read_table(src, "particles")
    with h5py.File(src, "r") as f:
        has = "grains" in f and "orientation_wxyz" in f["grains"]
    if not has:
        raise InputError(
            "has no grain orientations (grains table); re-pack it with `nmc-dataset pack ... "
            "--orientation-model auto|PATH` (a grain model with orientation_model.json from "
            "`nmc-dataset fit-orientations`)",
            src,
        )
    grains = read_table(src, "grains")
    packing = meta.get("packing") or {}
    seq = Sequence(
        arrays,
        particles,
        grains,
        voxel_size_um=float(meta["voxel_size_um"]),
        periodic=bool(packing.get("periodic", True)),
        protocol=protocol,
        steps=args.steps,
        seed=args.seed,
    )
    electrode_id = _sha256(src)
    run_id = sequence_id(electrode_sha256=electrode_id, protocol=protocol, steps=seq.steps, seed=int(args.seed))
    tables = {"particles": particles, "grains": grains}
    states = []
    with output_folder(args.out, "evolve", force=args.force) as tmp:
        for t in range(seq.steps):
            st = seq.state(t)
            summary = st.pop("summary")
            name = f"state_{t:03d}.h5"
            info = {
                "index": t,
                "steps": seq.steps,
                "electrode_sha256": electrode_id,
                "sequence_id": run_id,
                "cycle": summary["cycle"],
                "soc": summary["soc"],
            }
            write_state(tmp / name, st, voxel_size_um=float(meta["voxel_size_um"]), meta=meta, tables=tables, info=info)
            states.append({"file": name, **summary})
            log.info(
                "state %d/%d: cycle %.2f, x = %.3f, %d cracks (%d voxels), NMC volume %+.4f, |u| <= %.3g vox",
                t + 1,
                seq.steps,
                summary["cycle"],
                summary["soc"],
                summary["cracks"],
                summary["crack_voxels"],
                summary["nmc_volume_change"],
                summary["max_displacement_vox"],
            )
        write_json_atomic(
            tmp / MANIFEST,
            {
                "format": SEQUENCE_FORMAT,
                "format_version": 1,
                "sequence_id": run_id,
                "electrode": {"file": src.name, "sha256": electrode_id, "packing": packing},
                "protocol": protocol,
                "steps": seq.steps,
                "seed": int(args.seed),
                "voxel_size_um": float(meta["voxel_size_um"]),
                "states": states,
            },
        )
    return 0


def _strain_rms(u: np.ndarray) -> float:
    """RMS of the small strain sym ∇u over the voxels where it is finite (one component pair at a time)."""
    g = [np.gradient(u[..., i]) for i in range(3)]  # g[i][j] = d u_i / d x_j
    total = np.zeros(u.shape[:3])
    for i in range(3):
        for j in range(3):
            total += (0.5 * (g[i][j] + g[j][i])) ** 2
    fin = np.isfinite(total)
    return float(np.sqrt(np.mean(total[fin]))) if fin.any() else float("nan")


def _cmd_check_dvc(args) -> int:
    import json

    from nmc_dataset.tomography._dvc import (
        ENGINES,
        compare,
        correlate,
        crack_nodes,
        grid_nodes,
        new_crack_fraction,
        subset_truth,
        true_increment,
    )

    if args.engine not in ENGINES:
        raise InputError(f"unknown engine {args.engine!r} (one of {', '.join(ENGINES)})", "--engine")
    half = args.subset // 2
    if args.subset < 8 or args.subset % 2:
        raise InputError(f"must be an even number >= 8, got {args.subset}", "--subset")
    if not args.prefilter_sigma >= 0:
        raise InputError(f"must be >= 0, got {args.prefilter_sigma}", "--prefilter-sigma")
    if args.step < 1:
        raise InputError(f"must be >= 1, got {args.step}", "--step")
    if not -1.0 <= args.zncc_min <= 1.0:
        raise InputError(f"must be in [-1, 1], got {args.zncc_min}", "--zncc-min")
    if args.margin < 1:
        raise InputError(f"must be >= 1 (the subsets' gradient needs a rim), got {args.margin}", "--margin")
    man, files = read_sequence(args.sequence, CT_SEQUENCE_FORMAT)
    if len(files) < 2:
        raise InputError("needs at least two CT states", args.sequence)
    pairs = (
        [(i - 1, i) for i in range(1, len(files))]
        if args.pairs == "consecutive"
        else [(0, i) for i in range(1, len(files))]
    )
    cache = {}

    def load(i):
        if i not in cache:
            with h5py.File(files[i], "r") as f:
                imaging = json.loads(f.attrs.get("imaging", "{}"))
                cache[i] = (f["ct"][...], f["displacement"][...], f["crack"][...], imaging)
        return cache[i]

    rows = []
    with output_folder(args.out, "check-dvc", force=args.force) as tmp:
        for a, b in pairs:
            fa, ua, ca, imaging = load(a)
            fb, ub, cb, _ = load(b)
            nodes = grid_nodes(fa.shape, half, args.step, margin=args.margin)
            centres = nodes - 0.5  # the subsets' centres, where the DVC measures
            truth = true_increment(ua, ub, centres)
            # the true increment at every voxel of state a, for the subset truth and the strain of the pair
            vox = np.indices(fa.shape).reshape(3, -1).T
            inc = true_increment(ua, ub, vox).reshape(fa.shape + (3,))
            r = correlate(
                fa,
                fb,
                nodes,
                half,
                engine=args.engine,
                prefilter_sigma=args.prefilter_sigma,
                shape=args.shape,
                zncc_min=args.zncc_min,
            )
            meas, quality = r["displacement"], r["quality"]
            st = subset_truth(fa, inc, nodes, half, prefilter_sigma=args.prefilter_sigma, shape=args.shape)
            crack = crack_nodes(ca, cb, nodes, half) | ~np.all(np.isfinite(truth), axis=1)
            cfrac = new_crack_fraction(ca, cb, nodes, half)
            res = compare(meas, truth, quality, crack, reliable=r["reliable"], subset=st, crack_fraction=cfrac)
            strain_rms = _strain_rms(inc)
            res.update(
                pair=[a, b],
                engine=args.engine,
                seconds=round(r["seconds"], 3),
                seconds_per_node=round(r["seconds"] / max(len(nodes), 1), 5),
                subset=args.subset,
                step=args.step,
                prefilter_sigma=args.prefilter_sigma,
                shape=args.shape,
                zncc_min=args.zncc_min,
                reliable_nodes=int(r["reliable"].sum()),
                median_outliers=int(r["median_outlier"].sum()),
                increment_strain_rms=strain_rms,
                photons=imaging.get("photons"),
                rings=imaging.get("rings"),
                binning=imaging.get("binning"),
            )
            rows.append(res)
            np.savez_compressed(
                tmp / f"nodes_{a:03d}_{b:03d}.npz",
                nodes=nodes,
                centres=centres,
                measured=meas,
                truth=truth,
                subset_truth=st,
                quality=quality,
                zncc=r["zncc"],
                residual=r["residual"],
                new_crack_fraction=cfrac,
                sigma=r["sigma"],
                reliable=r["reliable"],
                crack=crack,
            )
            log.info(
                "pair %d -> %d: rms error %.4f vox (truth rms %.3f; reliable nodes %.4f, coverage %.2f), bias %s, "
                "%d crack nodes; %.1f s",
                a,
                b,
                res.get("rms_error_vox", float("nan")),
                res.get("truth_rms_vox", float("nan")),
                res.get("rms_error_reliable_vox", float("nan")),
                res.get("coverage", float("nan")),
                np.round(res.get("bias_vox", [np.nan] * 3), 4).tolist(),
                res["crack_nodes"],
                r["seconds"],
            )
        write_json_atomic(
            tmp / "dvc_report.json",
            {"format": "nmc-dataset/dvc-report", "format_version": 2, "sequence": str(args.sequence), "pairs": rows},
        )
        lines = [
            "| pair | nodes | RMS error (vox) | median | reliable: coverage, RMS | vs subset truth | "
            "subset vs point truth | bias z, y, x (vox) | truth RMS (vox) | strain RMS | crack nodes | "
            "crack share of worst 10 % | quality vs new crack (Spearman) | engine s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            bias = ", ".join(f"{x:+.3f}" for x in r.get("bias_vox", [np.nan] * 3))
            strain = r["increment_strain_rms"]
            lines.append(
                f"| {r['pair'][0]}→{r['pair'][1]} | {r['nodes']} | {r.get('rms_error_vox', np.nan):.4f} | "
                f"{r.get('median_error_vox', np.nan):.4f} | {r.get('coverage', np.nan):.2f}, "
                f"{r.get('rms_error_reliable_vox', np.nan):.4f} | "
                f"{r.get('rms_error_vs_subset_truth_vox', np.nan):.4f} | "
                f"{r.get('subset_truth_vs_point_rms_vox', np.nan):.4f} | {bias} | "
                f"{r.get('truth_rms_vox', np.nan):.3f} | {strain:.4f} | {r['crack_nodes']} | "
                f"{r.get('crack_share_of_worst_decile', np.nan):.2f} (base "
                f"{r.get('crack_share_of_nodes', np.nan):.2f}) | "
                f"{r.get('quality_vs_new_crack_spearman', np.nan):.2f} | {r['seconds']:.1f} |"
            )
        (tmp / "dvc_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def register(sub) -> None:
    """Register ``evolve`` and ``check-dvc``."""
    e = sub.add_parser(
        "evolve",
        help="cycling sequence of an electrode: lattice strain, grain-boundary cracks, "
        "compaction, with the exact displacement per state",
        description="Evolve a packed electrode (with grain orientations) through a cycling protocol: "
        "one state file per step with labels, crack ids, displacement and strain.",
    )
    e.add_argument("electrode", help="electrode .h5 (pack --orientation-model)")
    e.add_argument("--protocol", help="protocol YAML (default: the built-in one; see docs/sequences.md)")
    e.add_argument("--steps", type=int, default=5, help="number of states including the reference (default 5)")
    e.add_argument("--seed", type=seed_int, default=0, help="seed of the rigid motions and the random field")
    e.add_argument("--out", required=True, help="output folder")
    add_force_option(e)
    e.set_defaults(func=_cmd_evolve)

    d = sub.add_parser(
        "check-dvc",
        help="digital volume correlation on a rendered sequence vs the true displacement",
        description="Correlate consecutive CT states of a sequence (render-ct SEQ/) and compare the "
        "measured displacement with the truth: RMS error, bias, failures at cracks.",
    )
    d.add_argument("sequence", help="CT sequence folder (render-ct on an evolve folder)")
    d.add_argument("--engine", default="local", help="local (IC-GN subsets, built in; default) or spam (optional, GPL)")
    d.add_argument("--subset", type=int, default=24, help="subset edge in CT voxels (even, default 24)")
    d.add_argument("--step", type=int, default=8, help="node spacing in CT voxels (default 8)")
    d.add_argument("--margin", type=int, default=4, help="node margin from the volume faces (default 4)")
    d.add_argument(
        "--prefilter-sigma",
        type=float,
        default=2.0,
        help="Gaussian smoothing of both CTs before correlation, CT voxels (default 2; 0 = off)",
    )
    d.add_argument(
        "--shape",
        choices=("translation", "affine"),
        default="affine",
        help="subset shape function of the local engine (default affine: 12 parameters)",
    )
    d.add_argument(
        "--zncc-min",
        type=float,
        default=0.9,
        help="least ZNCC of a reliable node (default 0.9); coverage = reliable share of the crack-free nodes",
    )
    d.add_argument(
        "--pairs",
        choices=("consecutive", "reference"),
        default="consecutive",
        help="correlate t-1 -> t (default) or 0 -> t",
    )
    d.add_argument("--out", required=True, help="output folder (dvc_report.json/.md, nodes_*.npz)")
    add_force_option(d)
    d.set_defaults(func=_cmd_check_dvc)
