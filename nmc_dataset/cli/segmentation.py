"""CLI of segmentation: ``segment``, ``score-segmentation`` and ``train-segmenter``.

Heavy imports (torch, skimage, matplotlib) happen inside the handlers.
"""

from __future__ import annotations

import os
from pathlib import Path

from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import InputError
from nmc_dataset.outputs import check_output_folder

SCORE_FILE = "score.json"
EVAL_FORMAT = "nmc-dataset/segmenter-evaluation"


def register(sub) -> None:
    """Register the segmentation subcommands."""
    p = sub.add_parser(
        "segment",
        help="segment a CT volume into phases and particle instances",
        description="Label a CT render (nmc-dataset ct volume file) with phases (0 pore, 1 NMC, "
        "2 binder) and particle instances; writes an nmc-dataset segmentation file.",
    )
    p.add_argument("ct", help="CT volume file (.h5, kind ct)")
    p.add_argument(
        "--method",
        required=True,
        help="otsu-watershed (multi-Otsu phases + distance-transform watershed) or net:FOLDER "
        "(a train-segmenter model folder)",
    )
    p.add_argument("--out", required=True, help="segmentation file to write (.h5)")
    p.add_argument("--device", default="auto", help="net: auto (default: CUDA when torch sees one), cpu, cuda")
    p.add_argument("--sigma", type=float, default=1.0, help="otsu-watershed: Gaussian σ in voxels (default 1)")
    p.add_argument(
        "--h",
        type=float,
        default=2.0,
        help="otsu-watershed: depth (voxels) of a distance maximum that seeds a particle (default 2)",
    )
    p.add_argument(
        "--classes",
        type=int,
        default=3,
        choices=(2, 3),
        help="otsu-watershed: 3 = pore/binder/NMC (default), 2 = pore/NMC",
    )
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser(
        "score-segmentation",
        help="score a segmentation against exact labels (accuracy + topology)",
        description="Dice/IoU and surface distances per phase, components, Euler characteristic and "
        "percolation per phase, particle matches, splits and merges; writes score.json, "
        "score.md and slice figures.",
    )
    p.add_argument("seg", help="segmentation file (segment output, or any nmc-dataset volume file with phase)")
    p.add_argument("--truth", required=True, help="volume file with the true labels (ct render or electrode)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--no-figures", action="store_true", help="write score.json and score.md only")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser(
        "train-segmenter",
        help="train the baseline 3D segmentation network",
        description="Train the lightweight 3D network on random crops of labelled CT volumes "
        "listed in a YAML config (train/val/test files or folders, or a phantom: "
        "section), then score it and otsu-watershed on the test split.",
    )
    p.add_argument("config", help="training config YAML (or a recipe with a segmenter: section)")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when torch sees one), cpu, cuda")
    p.add_argument("--seed", type=seed_int, help="override the config's seed")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.set_defaults(func=_cmd_train)


# --------------------------------------------------------------------------- helpers
def check_output_file(path: Path, kind: str) -> None:
    """Refuse to replace a file that is not an nmc-dataset volume file of ``kind``."""
    import h5py

    if not path.exists():
        return
    if path.is_dir():
        raise InputError("exists and is a folder", path)
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
    except (OSError, ValueError):
        fmt = None
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != f"nmc-dataset/{kind}":
        raise InputError(f"exists and was not written by nmc-dataset (not a {kind} file); choose another --out", path)


def parse_method(method: str) -> tuple[str, Path | None]:
    """``otsu-watershed`` or ``net:FOLDER`` (checked)."""
    if method == "otsu-watershed":
        return method, None
    if method.startswith("net:") and len(method) > 4:
        folder = Path(method[4:])
        if not folder.is_dir():
            raise InputError("model folder not found (train one with train-segmenter)", folder)
        return "net", folder
    raise InputError(f"unknown --method {method!r}: use otsu-watershed or net:FOLDER")


def segment_array(ct, method: str, *, device="auto", sigma=1.0, h=2.0, classes=3, model=None):
    """Segment a grey volume by ``method``; returns ``phase, particle, info``."""
    kind, folder = parse_method(method)
    if kind == "otsu-watershed":
        from nmc_dataset.tomography._classical import otsu_watershed

        phase, particle, info = otsu_watershed(ct, sigma=sigma, classes=classes, h=h)
        info.update({"sigma": sigma, "h": h, "classes": classes})
        return phase, particle, info
    from nmc_dataset.tomography._segmenter import Segmenter, resolve_device

    dev = resolve_device(device)
    seg = model if model is not None else Segmenter.load(folder, dev)
    phase, particle, info = seg.segment(ct, dev)
    info.update({"model": os.fspath(folder), "device": str(dev), "kept_epoch": seg.record.get("kept_epoch")})
    return phase, particle, info


# --------------------------------------------------------------------------- segment
def _cmd_segment(args) -> int:
    from nmc_dataset._util import log
    from nmc_dataset.tomography._volumes import read_volumes, write_volumes

    out = Path(args.out)
    parse_method(args.method)
    check_output_file(out, "segmentation")
    if Path(args.ct).resolve() == out.resolve():
        raise InputError("--out is the input file", out)
    arrays, meta = read_volumes(args.ct, ["ct"], kinds=("ct",))
    phase, particle, info = segment_array(
        arrays["ct"], args.method, device=args.device, sigma=args.sigma, h=args.h, classes=args.classes
    )
    write_volumes(
        out,
        "segmentation",
        {"phase": phase, "particle": particle},
        voxel_size_um=meta["voxel_size_um"],
        origin_um=meta.get("origin_um", (0.0, 0.0, 0.0)),
        attrs={"method": args.method, "method_info": info, "source": Path(args.ct).name},
    )
    log.info(
        "%s: %s -> %d particles, phase fractions %s",
        out,
        args.method,
        info["n_particles"],
        " ".join(f"{(phase == k).mean():.3f}" for k in range(3)),
    )
    return 0


# --------------------------------------------------------------------------- score-segmentation
def load_pair(seg_path, truth_path):
    """Read a segmentation and its truth, checked: labels present, one grid."""
    from nmc_dataset.tomography._volumes import read_volumes

    seg, seg_meta = read_volumes(seg_path)
    if "phase" not in seg:
        raise InputError("has no phase volume to score", seg_path)
    truth, truth_meta = read_volumes(truth_path)
    missing = [n for n in ("phase", "particle") if n not in truth]
    if missing:
        raise InputError(
            f"a volume without labels given as truth: it has no {' and '.join(missing)} volume "
            f"(it holds {', '.join(sorted(truth)) or 'nothing'}); pass the ct render or electrode "
            "file with the exact labels",
            truth_path,
        )
    if seg["phase"].shape != truth["phase"].shape:
        raise InputError(
            f"shape {seg['phase'].shape} differs from the truth's {truth['phase'].shape} "
            f"({truth_path}); score on the same grid",
            seg_path,
        )
    for arrays, where in ((seg, seg_path), (truth, truth_path)):
        top = int(arrays["phase"].max()) if arrays["phase"].size else 0
        if top > 2:
            raise InputError(f"phase holds the value {top}; phases are 0 pore, 1 NMC, 2 binder", where)
    vs, vt = float(seg_meta["voxel_size_um"]), float(truth_meta["voxel_size_um"])
    if abs(vs - vt) > 1e-6 * max(vs, vt):
        raise InputError(f"voxel size {vs:g} µm differs from the truth's {vt:g} µm", seg_path)
    return seg, seg_meta, truth, truth_meta


def score_files(seg_path, truth_path) -> tuple[dict, dict, dict]:
    """Score a segmentation file against a truth file; returns ``score, seg arrays, truth arrays``."""
    from nmc_dataset.tomography._scoring import score_segmentation

    seg, seg_meta, truth, truth_meta = load_pair(seg_path, truth_path)
    score = score_segmentation(
        seg["phase"],
        truth["phase"],
        seg.get("particle"),
        truth["particle"],
        voxel_size_um=float(truth_meta["voxel_size_um"]),
    )
    score["method"] = seg_meta.get("method", seg_meta["kind"])
    return score, seg, truth


def _cmd_score(args) -> int:
    import time

    from nmc_dataset._util import atomic_dir, log, write_json_atomic, write_text_atomic
    from nmc_dataset.tomography._report import (
        REPORT_FORMAT,
        REPORT_FORMAT_VERSION,
        markdown,
        particle_figure,
        phase_figure,
    )

    out = Path(args.out)
    check_output_folder(out, SCORE_FILE, REPORT_FORMAT)
    t0 = time.perf_counter()
    score, seg, truth = score_files(args.seg, args.truth)
    seconds = time.perf_counter() - t0
    doc = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "segmentation": os.fspath(args.seg),
        "truth": os.fspath(args.truth),
        "score": score,
    }
    with atomic_dir(out) as tmp:
        write_json_atomic(tmp / SCORE_FILE, doc)
        write_text_atomic(tmp / "score.md", markdown(score, Path(args.seg).name, Path(args.truth).name))
        if not args.no_figures:
            phase_figure(tmp / "phases.png", truth["phase"], seg["phase"], truth.get("ct"))
            if "particles" in score:
                q = score["particles"]
                particle_figure(
                    tmp / "particles.png", truth["particle"], seg["particle"], q["split_ids"], q["merge_ids"]
                )
    msg = f"{out}: mean Dice {score['mean_dice']:.4f}"
    if "particles" in score:
        q = score["particles"]
        msg += f", particles F1 {q['f1']:.3f} ({q['split_truth']} split, {q['merged_pred']} merges)"
    log.info("%s (scored in %.1f s)", msg, seconds)
    return 0


# --------------------------------------------------------------------------- train-segmenter
def _cmd_train(args) -> int:
    from nmc_dataset.tomography._training import run_training

    run_training(args.config, Path(args.out), device=args.device, seed=args.seed, epochs=args.epochs)
    return 0
