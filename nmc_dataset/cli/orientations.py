"""``nmc-dataset fit-orientations``: the radial orientation texture from imported EBSD sections."""

from __future__ import annotations

from nmc_dataset.pipeline._orientations import SAMPLE_FRAMES, fit_orientations


def register(sub) -> None:
    """Register ``nmc-dataset fit-orientations``."""
    p = sub.add_parser(
        "fit-orientations",
        help="fit the grains' crystal-orientation texture relative to the radial direction",
        description="Fit the orientation model (c-axis and basal direction relative to each grain's radial "
        "direction, -3m symmetry) on the central sections of import-ebsd, and write "
        "orientation_model.json (put it beside the grain model: generate then draws an orientation "
        "per grain).",
    )
    p.add_argument("sections", help="folder written by import-ebsd")
    p.add_argument("--out", required=True, help="orientation_model.json path or a folder (e.g. grain_model/)")
    p.add_argument(
        "--min-radius-frac",
        type=float,
        default=0.4,
        help="skip grains closer to the section centre than this fraction of its radius (default 0.4)",
    )
    p.add_argument(
        "--sample-frame",
        choices=SAMPLE_FRAMES,
        default="image",
        help="frame of the Euler angles: image (x = columns, y = rows downwards; default) or y-up",
    )
    p.add_argument(
        "--frame-rotation-deg",
        type=float,
        default=0.0,
        help="angle of the Euler frame's x axis from the image x axis (default 0)",
    )
    p.add_argument(
        "--all-sections",
        action="store_true",
        help="use the off-centre sections too (biased radial directions; default: central only)",
    )
    p.add_argument(
        "--no-blur-correction",
        action="store_true",
        help="fit the in-plane radial directions as measured (default: correct for their angular error "
        "from the fall-off of the texture with 1/rho^2)",
    )
    p.set_defaults(func=_cmd_fit_orientations)


def _cmd_fit_orientations(args) -> int:
    fit_orientations(
        args.sections,
        args.out,
        min_radius_frac=args.min_radius_frac,
        sample_frame=args.sample_frame,
        frame_rotation_deg=args.frame_rotation_deg,
        all_sections=args.all_sections,
        blur_correction=not args.no_blur_correction,
    )
    return 0
