"""``nmc-dataset import-ebsd``: EBSD scans -> grain label images, morphology tables, central selection."""

from __future__ import annotations

import numpy as np

from nmc_dataset.errors import RecipeError
from nmc_dataset.outputs import add_force_option
from nmc_dataset.pipeline._ebsd_import import DEFAULT_DILATE_PX, DEFAULT_FILL, expand_scans, import_ebsd


def _parse_center(text):
    if text is None:
        return None
    try:
        x, y = (float(v) for v in str(text).split(","))
    except ValueError:
        raise RecipeError(f"--center must be 'X,Y' in pixels, got {text!r}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise RecipeError(f"--center must be finite, got {text!r}")
    return np.array([x, y])


def register(sub) -> None:
    """Register ``nmc-dataset import-ebsd``."""
    p = sub.add_parser(
        "import-ebsd",
        help="EBSD scans (.ang/.ctf) -> grain label images, morphology, central selection",
        description="Reconstruct grains from EBSD scans (TSL .ang / Oxford .ctf, square grids), measure their "
        "2D morphology and decide which sections are central. Writes one folder per scan "
        "(labels.tif, mask.tif, section.json, grains.parquet, chords.parquet) and selection.json.",
    )
    p.add_argument("scans", nargs="+", metavar="SCAN", help=".ang or .ctf files (globs allowed)")
    p.add_argument("--out", required=True, help="output folder of sections")
    p.add_argument("--min-ci", type=float, default=0.1, help="pixels with a lower CI stay unassigned (default 0.1)")
    p.add_argument(
        "--max-misorientation-deg",
        type=float,
        default=5.0,
        help="neighbours join below this misorientation (default 5)",
    )
    p.add_argument("--min-grain-px", type=int, default=5, help="smaller grains become unassigned (default 5)")
    p.add_argument(
        "--dilate-px",
        type=float,
        default=DEFAULT_DILATE_PX,
        help="grain dilation before the size filter: unassigned pixels within this distance take "
        f"their nearest grain (default {DEFAULT_DILATE_PX:g}; 0 = off)",
    )
    p.add_argument(
        "--fill",
        default=DEFAULT_FILL,
        choices=("shape", "none"),
        help="shape (default): complete the grains across unindexed and low-CI pixels (fragments "
        "bridged by orientation, gaps filled by each grain's own shape) before measuring them; "
        "none: keep only the confident pixels",
    )
    p.add_argument(
        "--no-size-check",
        dest="check_sizes",
        action="store_false",
        help="accept sections whose grains are implausibly few or sized for the step size (by default "
        "they are refused: a wrong step size or a single-crystal particle)",
    )
    p.add_argument("--center", metavar="X,Y", help="particle-section centre in pixels (default: mask centroid)")
    p.add_argument(
        "--central",
        default="auto",
        metavar="auto|all|LIST",
        help="sections used for calibration: auto (centrality score), all, or comma-separated ids (scan file stems)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="centrality threshold for --central auto (default: the calibrated 0.65)",
    )
    add_force_option(p)
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    center = _parse_center(args.center)
    scans = expand_scans(args.scans)
    import_ebsd(
        scans,
        args.out,
        min_ci=args.min_ci,
        max_misorientation_deg=args.max_misorientation_deg,
        min_grain_px=args.min_grain_px,
        center_px=center,
        central=args.central,
        threshold=args.threshold,
        dilate_px=args.dilate_px,
        force=args.force,
        fill=args.fill,
        check_sizes=args.check_sizes,
    )
    return 0
