"""CLI: ``fit-shells``, ``sample-shells``, ``describe-shells``."""

from __future__ import annotations

from nmc_dataset._util import length_um
from nmc_dataset.cli._args import seed_int
from nmc_dataset.outputs import add_force_option


def register(sub) -> None:
    """Register the shell subcommands on an argparse subparsers object."""
    p = sub.add_parser(
        "fit-shells",
        help="fit a stochastic shell model to a 3D CT volume",
        description="Segment a CT volume (grey, binary or phase labels), measure each particle's star-shaped "
        "radius function, fit SH coefficients and the per-degree laws; write MODEL.json and "
        "MODEL.coefficients.parquet.",
    )
    p.add_argument("volume", metavar="VOLUME", help=".tif/.tiff, .h5/.hdf5, .npy, or raw (with --shape/--dtype)")
    p.add_argument("--voxel-size-um", type=length_um, required=True, help="voxel edge length in µm (e.g. 0.128)")
    p.add_argument("--out", required=True, help="model JSON to write")
    p.add_argument("--dataset", help="HDF5 dataset holding the volume")
    p.add_argument("--phase", type=int, help="label of the particle phase in a phase-label volume")
    p.add_argument("--shape", help="raw volume shape Z,Y,X")
    p.add_argument("--dtype", help="raw volume voxel type (e.g. uint16)")
    p.add_argument("--degree", type=int, default=9, help="SH degree L (default 9: 100 coefficients)")
    p.add_argument(
        "--selection",
        choices=["aic", "loglik"],
        default="aic",
        help="family selection among the MLE fits (default aic)",
    )
    p.add_argument(
        "--model",
        default="auto",
        choices=["auto", "independent", "scale_mixture", "scale_mixture_bands", "ellipsoid_mixture"],
        help="shell model: auto (default) picks, among all, the one whose sampled shells match held-out "
        "particles best; independent is the paper's model",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="fraction of particles held out for the model self-check (default 0.25; 0 disables it; "
        "needs >= 40 particles at 0.25, else the model is fitted without a self-check)",
    )
    p.add_argument(
        "--families",
        choices=["constrained", "paper"],
        default="constrained",
        help="per-degree families: constrained (default: positive for l=0, symmetric with finite "
        "variance for l>0) or the paper's unconstrained normal/log-normal/t",
    )
    p.add_argument(
        "--measure",
        choices=["subvoxel", "voxel"],
        default="subvoxel",
        help="radius measurement: subvoxel (default: threshold crossing of the smoothed grey value along "
        "each ray, blur damping corrected) or voxel (the paper's nearest-voxel ray walk)",
    )
    p.add_argument(
        "--measure-sigma",
        type=_sigma_arg,
        default="auto",
        help="Gaussian sigma (voxels) of the sub-voxel measurement, or auto (default: the rule that "
        "minimises the corrected noise of degree L from the measured blur and the median radius; "
        "raise it for very noisy data, contrast/noise < 4)",
    )
    p.add_argument(
        "--no-blur-correction",
        dest="correct_blur",
        action="store_false",
        help="do not undo the blur's degree-wise damping of the sub-voxel measurement",
    )
    p.add_argument(
        "--no-noise-correction",
        dest="correct_noise",
        action="store_false",
        help="do not subtract each particle's estimated noise power from its degrees >= 2",
    )
    p.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the rotations, the hold-out split and the self-check samples"
    )
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "sample-shells",
        help="draw shells from a shell model",
        description="Draw N valid shells (invalid ones are redrawn) and write their SH "
        "coefficients (voxels) to parquet.",
    )
    p.add_argument("model", metavar="MODEL", help="shell model JSON (from fit-shells)")
    p.add_argument("-n", type=int, required=True, help="number of shells (>= 1)")
    p.add_argument("--seed", type=seed_int, required=True, help="random seed")
    p.add_argument("--out", required=True, help="parquet file to write")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "describe-shells",
        help="shell descriptors; compare with a model's particles",
        description="Compute d_max, compactness, aspect ratio, sphericity, volume and area (µm) "
        "of shells; with --against, compare with the model's measured particles "
        "(histograms, comparison.md, comparison.json).",
    )
    p.add_argument("shells", metavar="SHELLS", help="parquet from sample-shells (or a model's coefficients parquet)")
    p.add_argument("--against", metavar="MODEL", help="shell model JSON whose measured particles to compare with")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--subdivisions", type=int, default=4, help="icosphere subdivisions of the triangulation")
    add_force_option(p)
    p.set_defaults(func=_cmd_describe)


def _sigma_arg(text: str):
    # "auto" or a number; anything else is refused by the pipeline's check (one-line InputError)
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        return text


def _cmd_fit(args) -> int:
    from nmc_dataset._util import warn_if_implausible_voxel
    from nmc_dataset.pipeline._shells import fit_shells

    warn_if_implausible_voxel(args.voxel_size_um)
    res = fit_shells(
        args.volume,
        args.voxel_size_um,
        args.out,
        dataset=args.dataset,
        phase=args.phase,
        shape=args.shape,
        dtype=args.dtype,
        degree=args.degree,
        seed=args.seed,
        selection=args.selection,
        model=args.model,
        holdout=args.holdout,
        families=args.families,
        measure=args.measure,
        measure_sigma=args.measure_sigma,
        correct_blur=args.correct_blur,
        correct_noise=args.correct_noise,
    )
    from nmc_dataset.shells._selection import format_table

    print(res.segmentation.summary())
    print(res.model.summary())
    mi = res.model.source.get("measurement", {})
    if mi.get("method") == "subvoxel":
        cnr = mi["contrast_to_noise"]
        print(
            f"sub-voxel measurement: sigma {mi['sigma_vox']:g} voxel, measured blur {mi['blur_sigma_vox']:.2f} voxel "
            f"({'corrected' if mi['corrected'] else 'not corrected'}), contrast/noise "
            f"{'-' if cnr is None else f'{cnr:.1f}'}, {mi['too_small_fraction']:.0%} of particles below "
            f"{mi['too_small_radius_vox']:.1f} voxels (too small for degree {res.model.degree}); "
            f"mean fit RMS {res.model.source['mean_fit_rms_vox']:.3f} voxel"
        )
        rule = mi.get("sigma_rule")
        if mi.get("sigma_choice") == "auto" and mi.get("sigma_pilot"):
            pilot = mi["sigma_pilot"]
            print(
                f"sigma {mi['sigma_vox']:g} voxel chosen automatically (scanner blur {pilot['psf_sigma_vox']:.2f} "
                f"voxel, median radius {pilot['median_radius_vox']:.1f} voxels, pilot of {pilot['pilot_particles']} "
                "particles); --measure-sigma X fixes it"
            )
        elif rule and abs(rule["suggested_sigma_vox"] - mi["sigma_vox"]) >= 0.25 and rule["error_ratio"] < 0.9:
            print(
                f"hint: --measure-sigma {rule['suggested_sigma_vox']:g} would lower the noise of degree "
                f"{res.model.degree} by {1 - rule['error_ratio']:.0%} for these particles (median radius "
                f"{rule['median_radius_vox']:.1f} voxels, scanner blur {rule['psf_sigma_vox']:.2f} voxel)"
            )
    if res.model.selection_table:
        print(format_table(res.model.selection_table))
    print(f"wrote {args.out} and {res.model.coefficients_file}")
    return 0


def _cmd_sample(args) -> int:
    from nmc_dataset.pipeline._shells import sample_shells

    coeffs, stats = sample_shells(args.model, args.n, args.seed, args.out)
    print(f"wrote {coeffs.shape[0]} shells to {args.out} ({stats['redrawn']} invalid draws redrawn)")
    return 0


def _cmd_describe(args) -> int:
    from nmc_dataset.pipeline._shells import describe_shells

    res = describe_shells(args.shells, args.out, against=args.against, subdivisions=args.subdivisions, force=args.force)
    if res["comparison"]:
        for k, v in res["comparison"].items():
            print(
                f"{k:>13}: W1 {v['wasserstein1']:.4g}  KS {v['ks']:.3f}  "
                f"(n measured {v['n_measured']}, simulated {v['n_simulated']})"
            )
    print(f"wrote {args.out}")
    return 0
