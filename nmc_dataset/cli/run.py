"""``nmc-dataset run RECIPE``: every section of a recipe, end to end."""

from __future__ import annotations

from nmc_dataset._util import log
from nmc_dataset.pipeline._recipe import run_recipe


def register(sub) -> None:
    """Register ``nmc-dataset run``."""
    p = sub.add_parser(
        "run",
        help="run a recipe end to end (fit, generate, export, card)",
        description="Run every section of a recipe YAML into an output folder.",
    )
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--executor",
        choices=["local", "dask"],
        default="local",
        help="where particle shards are built (dask needs the [dask] extra)",
    )
    p.add_argument("--scheduler", help="dask scheduler address, with --executor dask")
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild over a build of a different recipe, or build beside files that are not "
        "nmc-dataset's (those are never changed, listed in the manifest or published)",
    )
    p.add_argument("--only", action="append", metavar="SECTION", help="run only this section (repeatable)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    ctx = run_recipe(
        args.recipe,
        args.out,
        workers=args.workers,
        force=args.force,
        only=args.only,
        options={"executor": args.executor, "scheduler": args.scheduler},
    )
    for k, v in ctx.outputs.items():
        log.info("%s: %s", k, v)
    return 0
