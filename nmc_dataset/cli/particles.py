"""``nmc-dataset generate``: virtual multi-scale particles and their exports."""

from __future__ import annotations

from nmc_dataset._util import length_um, log
from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import RecipeError
from nmc_dataset.outputs import add_force_option
from nmc_dataset.pipeline._generate import (
    FORMATS,
    generate_particles,
    load_grain_model,
    load_shell_model,
    parse_formats,
)


def register(sub) -> None:
    """Register ``nmc-dataset generate``."""
    p = sub.add_parser(
        "generate",
        help="generate virtual particles (params, voxels, surfaces, tet meshes)",
        description="Draw multi-scale particles from a shell model and a grain model and "
        "export them (docs/method.md#particle-assembly).",
    )
    p.add_argument("--shell-model", required=True, help="shell model JSON (fit-shells)")
    p.add_argument("--grain-model", required=True, help="grain model folder (fit-grains)")
    p.add_argument("-n", type=int, default=1, help="number of particles (default 1)")
    p.add_argument("--seed", type=seed_int, default=0, help="root seed (default 0)")
    p.add_argument(
        "--voxel-size-um", type=length_um, default=0.05, help="voxel size of the volumes in µm (default 0.05)"
    )
    p.add_argument(
        "--formats", default="params,voxels", help=f"comma list of {', '.join(FORMATS)} (default params,voxels)"
    )
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument(
        "--mesh-size-um",
        type=length_um,
        default=None,
        help="target tet size: the conforming surface is coarsened towards it (grain pairs and volumes "
        "kept, nothing re-voxelised) and the interior graded from it",
    )
    p.add_argument(
        "--element-order",
        type=int,
        default=1,
        choices=(1, 2),
        help="tetrahedra of order 1 (C3D4) or 2 (C3D10, ELSETs kept); default 1",
    )
    p.add_argument(
        "--min-elements-per-grain",
        type=int,
        default=None,
        metavar="N",
        help="keep small grains' surfaces fine enough for at least N tets each",
    )
    p.add_argument(
        "--max-memory-gib",
        type=float,
        default=None,
        help="refuse volumes whose estimate exceeds this (default 80%% of free memory)",
    )
    p.add_argument("--smoothing", type=int, default=8, help="surface-nets smoothing iterations (default 8)")
    add_force_option(p)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    if args.n < 1:
        raise RecipeError(f"must be >= 1, got {args.n}", "-n")
    formats = parse_formats(args.formats)
    shell, sid = load_shell_model(args.shell_model)
    grain, gid = load_grain_model(args.grain_model)
    rec = generate_particles(
        shell,
        grain,
        n=args.n,
        seed=args.seed,
        voxel_size_um=args.voxel_size_um,
        formats=formats,
        out=args.out,
        mesh_size_um=args.mesh_size_um,
        max_memory_gib=args.max_memory_gib,
        shell_model_id=sid,
        grain_model_id=gid,
        smoothing_iterations=args.smoothing,
        force=args.force,
        element_order=args.element_order,
        min_elements_per_grain=args.min_elements_per_grain,
    )
    log.info(
        "%d particles (%d grains in all) written to %s",
        rec["n"],
        sum(p["n_grains"] for p in rec["particles"]),
        args.out,
    )
    return 0
