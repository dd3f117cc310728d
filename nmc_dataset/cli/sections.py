"""``nmc-dataset fit-sections``: fit 2D GBPDs to imported central sections."""

from __future__ import annotations

from nmc_dataset.cli._args import seed_int
from nmc_dataset.outputs import add_force_option


def register(sub) -> None:
    """Add the ``fit-sections`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "fit-sections",
        help="fit a 2D GBPD to every selected section (the training ground truth)",
        description="Fit a 2D restricted GBPD to the label image of every section selected as central "
        "(import-ebsd's selection.json) by gradient descent on the soft form, and write the "
        "tessellations (cells.parquet, sections.json, masks/) atomically.",
    )
    p.add_argument("sections", metavar="SECTIONS_DIR", help="folder written by import-ebsd")
    p.add_argument(
        "--out",
        required=True,
        metavar="TESSELLATIONS_DIR",
        help="output folder (a new or empty one, or an earlier fit-sections output: replaced atomically)",
    )
    p.add_argument("--steps", type=int, default=200, help="Adam steps per section (default 200)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--filled-weight",
        type=float,
        default=1.0,
        help="weight in the fit of the pixels import-ebsd filled (not confident), in [0, 1]: "
        "1 = data like the confident ones (default), 0 = unknown",
    )
    add_force_option(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from nmc_dataset.calibration._fit2d import fit_sections
    from nmc_dataset.errors import RecipeError

    if args.steps < 1:
        raise RecipeError(f"--steps must be >= 1, got {args.steps}")
    fits = fit_sections(
        args.sections, args.out, steps=args.steps, seed=args.seed, force=args.force, filled_weight=args.filled_weight
    )
    for f in fits:
        print(f"{f.section_id}\t{f.gbpd.n} cells\tagreement {100 * f.agreement:.2f} %")
    mean = sum(f.agreement for f in fits) / len(fits)
    print(f"{len(fits)} section(s) fitted, mean agreement {100 * mean:.2f} %; wrote {args.out}")
    return 0
