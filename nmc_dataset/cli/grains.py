"""CLI of the grain model: ``fit-grains``, ``sample-grains``, ``describe-grains``.

Heavy imports (torch, h5py, matplotlib) happen inside the handlers.
"""

from __future__ import annotations

from pathlib import Path

from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import InputError, ResourceError
from nmc_dataset.outputs import add_force_option, check_out_file, check_out_name, claim_folder, write_marker

LABELS_FORMAT = "nmc-dataset/grain-labels"
LABELS_FORMAT_VERSION = 1
#: largest cube edge sample-grains accepts (a 1024^3 uint32 volume is 4 GiB)
MAX_SIZE_PX = 1024


def register(sub) -> None:
    """Register the grain-model subcommands."""
    p = sub.add_parser(
        "fit-grains",
        help="calibrate the 3D grain model on fitted 2D tessellations (stereological GAN)",
        description="Train G_net so that planar sections of the 3D model match the fitted 2D "
        "tessellations of central EBSD sections.",
    )
    p.add_argument("tessellations", help="folder written by fit-sections")
    p.add_argument("--recipe", required=True, help="recipe YAML; its grains: section gives the hyper-parameters")
    p.add_argument("--out", required=True, help="model folder (checkpoints go to OUT/training/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    p.add_argument("--seed", type=seed_int, help="root seed (default: the recipe's seed)")
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="override the recipe's grains.training.restarts (default 1): "
        "train this many runs (seeds SEED, SEED+1, ...) into OUT/restarts/ and keep the one whose "
        "sections score best against the measured ones (needs training.select_sections; default 1)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the networks and cutout images live: cpu (default), cuda, cuda:N or auto; "
        "no GPU is needed, and only CPU runs are bit-for-bit reproducible",
    )
    p.add_argument(
        "--depth-aware",
        action="store_true",
        help="set the recipe's grains.generator.depth_aware (not in the paper): G_net also sees each "
        "seed's distance from the particle centre over the particle radius, for grains that change "
        "with depth",
    )
    add_force_option(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "sample-grains",
        help="draw a 3D grain architecture and write its labels (HDF5)",
        description="Write hard grain labels of a cube (or of planar sections) around the particle "
        "centre: HDF5 dataset 'labels' (uint32, axes z,y,x), attrs voxel_size_um, "
        "origin_px.",
    )
    p.add_argument("model", help="grain model folder (fit-grains output)")
    p.add_argument("--size-px", type=int, default=128, help="cube edge in model pixels (default 128)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument(
        "--sections",
        help="comma-separated heights z (pixels from the centre): write these planes only "
        "(negative first value: --sections=-10,0,10)",
    )
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "describe-grains",
        help="compare the model's central sections with the measured tessellations",
        description="Histograms, Wasserstein-1 and KS distances of area, elongation, orientation and "
        "chord lengths of central sections of the model vs the 2D fits, and "
        "the cut-height study.",
    )
    p.add_argument("model", help="grain model folder")
    p.add_argument("--against", required=True, help="tessellations folder (fit-sections output)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--samples", type=int, default=8, help="model sections to draw (default 8)")
    p.add_argument("--radius-px", type=float, help="radius of the model's sections (default: the measured ones')")
    p.add_argument(
        "--min-area-px",
        type=int,
        default=5,
        help="detection limit: grains smaller than this are left out on both sides (default 5, "
        "import-ebsd's --min-grain-px default)",
    )
    p.add_argument(
        "--min-confident-px",
        type=int,
        default=None,
        help="instrument detection limit: when the measured sections lost pixels (low CI), the loss is "
        "simulated on the model's sections too and a grain counts on both sides with at least this "
        "many confident pixels (default 3; 0 = off)",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    add_force_option(p)
    p.set_defaults(func=_cmd_describe)


# --------------------------------------------------------------------------- fit-grains
def _cmd_fit(args) -> int:
    from nmc_dataset._util import log
    from nmc_dataset.calibration._gan import TrainConfig, resolve_device, train, train_restarts
    from nmc_dataset.pipeline._recipe import load_recipe
    from nmc_dataset.pipeline._stage_grains import (
        check_section,
        load_fits,
        recipe_restarts,
        warn_if_cutouts_leave_sections,
    )

    # everything the command line and the recipe decide is checked before the data is read
    device = resolve_device(args.device)
    if args.restarts is not None and args.restarts < 1:
        raise InputError(f"--restarts must be >= 1, got {args.restarts}")
    recipe = load_recipe(args.recipe)
    section = recipe.get("grains") or {}
    if "grains" not in recipe:
        log.info("%s has no grains: section; using the paper's defaults", args.recipe)
    if args.depth_aware:
        section = {**section, "generator": {**(section.get("generator") or {}), "depth_aware": True}}
    check_section(section, args.recipe)
    cfg = TrainConfig.from_section(section)
    if args.restarts is None:
        args.restarts = recipe_restarts(section)
    if args.restarts > 1 and not cfg.training.select_sections:
        raise InputError(
            "--restarts needs grains.training.select_sections > 0 (the section score picks the run)", args.recipe
        )
    out = Path(args.out)
    if args.resume and args.restarts == 1 and not (out / "training" / "checkpoint.json").is_file():
        raise InputError("--resume: no checkpoint here (training/checkpoint.json); run without --resume", out)
    if args.resume and args.restarts > 1 and not (out / "restarts").is_dir():
        raise InputError("--resume: no restarts/ folder here; run without --resume", out)
    foreign = claim_folder(
        check_out_name(out),
        "fit-grains",
        force=args.force,
        legacy=("model.json", "training/checkpoint.json", "restarts"),
    )
    fits, px, source, sections = load_fits(args.tessellations, with_sections=True)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "fit-grains", foreign=foreign)  # an incremental writer: all but the user's files
    warn_if_cutouts_leave_sections(cfg, source)
    seed = int(recipe.get("seed", 0)) if args.seed is None else int(args.seed)
    run_dir = out
    if args.restarts > 1:
        model = train_restarts(
            fits,
            px,
            cfg,
            seeds=range(seed, seed + args.restarts),
            out=out,
            resume=args.resume,
            source=source,
            device=device,
            sections=sections,
        )
        log.info(
            "restarts: kept seed %d of %s",
            model.training["seed"],
            ", ".join(f"{r['seed']} ({r['select_score']:.4f})" for r in model.training["restarts"]),
        )
        run_dir = out / "restarts" / f"seed-{model.training['seed']}"
    else:
        model = train(
            fits, px, cfg, seed=seed, out=out, resume=args.resume, source=source, device=device, sections=sections
        )
    f = model.training.get("final", {})
    if model.training.get("selected_epoch"):
        log.info(
            "kept epoch %d of %d: its sections scored %.4f against the measured ones (log.csv: select_score)",
            model.training["selected_epoch"],
            model.training["epochs_done"],
            model.training["select_score"],
        )
    log.info(
        "grain model written to %s: mu = %.5g seeds/px^3, NG gen %.4g vs measured %.4g per px^2 (epoch times in %s)",
        out,
        model.intensity_per_px3,
        f.get("ng_gen", float("nan")),
        model.training.get("ng_gt") or float("nan"),
        run_dir / "training" / "log.csv",
    )
    return 0


# --------------------------------------------------------------------------- sample-grains
def _parse_heights(text: str | None):
    if text is None:
        return None
    try:
        z = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--sections: expected comma-separated numbers, got {text!r}") from None
    if not z:
        raise InputError("--sections: no height given")
    return z


def sample_labels(model, size_px: int, seed: int, heights=None):
    """Hard labels of a cube (or planes) around the centre; returns ``(labels, origin_px, gbpd)``.

    ``labels`` is uint32 ``[z, y, x]`` with cell index + 1; voxel ``[k, j, i]`` lies at
    ``origin_px + (i, j, k)`` for a cube (unit spacing) and at ``(x0 + i, y0 + j, heights[k])``
    for planes. Planes whose heights lie inside the cube of the same size and seed are exact
    slices of it.
    """
    import numpy as np

    from nmc_dataset.tessellation._labels import hard_labels, hard_labels_grid

    half = (size_px - 1) / 2.0
    rng = np.random.default_rng(seed)
    if heights is None:
        lo, hi = np.full(3, -half - 0.5), np.full(3, half + 0.5)
        g = model.sample(rng, lo, hi)
        origin = np.full(3, -half)
        lab = hard_labels_grid(g, (size_px,) * 3, origin=origin)
    else:
        zs = np.asarray(heights, float)
        # the cube's window, grown to the heights: planes inside the cube are exact slices of the
        # cube drawn with the same seed
        lo = np.array([-half - 0.5, -half - 0.5, min(zs.min() - 0.5, -half - 0.5)])
        hi = np.array([half + 0.5, half + 0.5, max(zs.max() + 0.5, half + 0.5)])
        g = model.sample(rng, lo, hi)
        c = np.arange(size_px) - half
        yy, xx = np.meshgrid(c, c, indexing="ij")
        lab = np.empty((len(zs), size_px, size_px), np.int64)
        for k, z in enumerate(zs):
            pts = np.column_stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)])
            lab[k] = hard_labels(g, pts).reshape(size_px, size_px)
        origin = np.array([-half, -half, zs[0]])
    return (lab + 1).astype(np.uint32), origin, g


def _cmd_sample(args) -> int:
    import h5py
    import numpy as np

    from nmc_dataset._util import atomic_path, log
    from nmc_dataset.calibration._model import GrainModel
    from nmc_dataset.tessellation._connectivity import count_disconnected

    if args.size_px < 1:
        raise InputError(f"--size-px must be >= 1, got {args.size_px}")
    if args.size_px > MAX_SIZE_PX:
        raise ResourceError(
            f"--size-px {args.size_px} would need {4 * args.size_px**3 / 2**30:.1f} GiB; the limit is {MAX_SIZE_PX}"
        )
    heights = _parse_heights(args.sections)
    out = check_out_file(args.out)
    model = GrainModel.load(args.model)
    labels, origin, g = sample_labels(model, args.size_px, args.seed, heights)
    n_disc = count_disconnected(labels.astype(np.int64) - 1) if heights is None else None
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = LABELS_FORMAT
            f.attrs["format_version"] = LABELS_FORMAT_VERSION
            d = f.create_dataset(
                "labels",
                data=labels,
                compression="gzip",
                compression_opts=4,
                chunks=tuple(min(s, 64) for s in labels.shape),
            )
            d.attrs["axes"] = "z,y,x"
            d.attrs["voxel_size_um"] = float(model.pixel_size_um)
            d.attrs["origin_px"] = origin
            d.attrs["description"] = "grain id = 1 + index of the seed in gbpd/ (0 unused)"
            f.attrs["voxel_size_um"] = float(model.pixel_size_um)
            f.attrs["origin_px"] = origin
            f.attrs["seed"] = int(args.seed)
            f.attrs["model"] = str(Path(args.model))
            f.attrs["kind"] = "cube" if heights is None else "sections"
            if heights is not None:
                f.attrs["z_px"] = np.asarray(heights, float)
                d.attrs["z_px"] = np.asarray(heights, float)
            else:
                f.attrs["disconnected_cells"] = int(n_disc)
            grp = f.create_group("gbpd")
            grp.attrs["units"] = "pixels, particle centre at the origin"
            for name, arr in (("seeds_px", g.seeds), ("diag", g.diag), ("offsets", g.offsets), ("roll", g.roll)):
                grp.create_dataset(name, data=arr)
    log.info(
        "%s: %s labels, %d seeds%s",
        out,
        "x".join(map(str, labels.shape)),
        g.n,
        "" if n_disc is None else f", {n_disc} disconnected cells",
    )
    return 0


# --------------------------------------------------------------------------- describe-grains
def _cmd_describe(args) -> int:
    from nmc_dataset.calibration._descriptors import describe_grains
    from nmc_dataset.ebsd._detection import DEFAULT_MIN_CONFIDENT_PX

    k = DEFAULT_MIN_CONFIDENT_PX if args.min_confident_px is None else args.min_confident_px
    result = describe_grains(
        args.model,
        args.against,
        args.out,
        samples=args.samples,
        radius_px=args.radius_px,
        seed=args.seed,
        min_area_px=args.min_area_px,
        force=args.force,
        min_confident_px=k,
    )
    for k, v in result.items():
        print(
            f"{k:>11}: W1 {v['wasserstein1']:.4g}  KS {v['ks']:.3f}  "
            f"(n measured {v['n_measured']}, model {v['n_simulated']})"
        )
    print(f"wrote {args.out} (comparison.md, comparison.json, histograms, cut_height.png)")
    return 0
