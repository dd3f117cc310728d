"""CLI: ``phantom-ct`` and ``phantom-ebsd``, known-truth inputs for trying (and testing) the tool.

Real nano-CT and EBSD data rarely ship with a tool; these commands write files exactly as a
user's instruments would (a grey-value CT volume; ``.ang``/``.ctf`` scans), with the truth
beside them, so every later command can be run, and checked, on them.
"""

from __future__ import annotations

from pathlib import Path

from nmc_dataset._util import length_um
from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.outputs import add_force_option, check_out_file


def register(sub) -> None:
    """Register the phantom subcommands."""
    p = sub.add_parser(
        "phantom-ct",
        help="write a grey-value CT phantom of known shells (for fit-shells)",
        description="Draw shells from the reference shell model, place them without overlap in "
        "a cube and render a blurred, noisy grey-value CT volume (.tif, .npy or .h5). "
        "The true labels go to <stem>.labels.tif beside it.",
    )
    p.add_argument("--out", required=True, help="volume to write (.tif, .tiff, .npy, .h5)")
    p.add_argument("--size", type=int, default=128, help="edge length in voxels (default 128)")
    p.add_argument("--n-particles", type=int, default=60, help="number of particles (default 60)")
    p.add_argument("--mean-radius-vox", type=float, default=10.0, help="mean particle radius in voxels")
    p.add_argument("--voxel-size-um", type=length_um, default=0.128, help="voxel size in µm (default 0.128)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.set_defaults(func=_cmd_ct)

    p = sub.add_parser(
        "phantom-ebsd",
        help="write synthetic EBSD scans (.ang/.ctf) of a known 3D grain model",
        description="Slice radially elongated teacher particles (a known 3D GBPD) through central "
        "and off-centre planes and write the scans as an EDAX/TSL or Oxford instrument "
        "would, with the true label images in <out>/truth/.",
    )
    p.add_argument("--out", required=True, help="folder to write the scans into")
    p.add_argument("--n-central", type=int, default=2)
    p.add_argument("--n-off-center", type=int, default=1)
    p.add_argument("--radius-px", type=float, default=60.0, help="particle radius in EBSD pixels (default 60)")
    p.add_argument("--step-um", type=length_um, default=0.05, help="EBSD step in µm (default 0.05)")
    p.add_argument(
        "--formats",
        default="ang",
        help="comma-separated: ang, ctf (default ang); with both, scans alternate between the "
        "formats (scan 0 .ang, scan 1 .ctf, ...)",
    )
    p.add_argument(
        "--instrument",
        default="default",
        metavar="ideal|default|harsh",
        help="instrument preset: ideal (every pixel indexed), default (half the junction pixels, 2 %% "
        "of boundary and 0.3 %% of other pixels low-CI, 0.5° noise) or harsh (every junction "
        "pixel and 1 %% of the others low-CI, 1° noise, 2 %% of the grains misindexed by the 60° "
        "pseudo-symmetry about c); --low-ci and --noise-deg override its values",
    )
    p.add_argument(
        "--low-ci",
        default=None,
        metavar="J,B,R",
        help="probabilities of a low-CI pixel at grain junctions, on boundaries and elsewhere "
        "(default: the preset's, 0.5,0.02,0.003 for default; 0,0,0 = every pixel indexed)",
    )
    p.add_argument(
        "--noise-deg",
        type=float,
        default=None,
        help="orientation noise per pixel in degrees (default: the preset's, 0.5 for default)",
    )
    p.add_argument(
        "--texture",
        default="default",
        metavar="default|random|KAPPA,LAMBDA",
        help="grain orientations relative to their radial direction: default (c-axis perpendicular "
        "to it, kappa=-8, lambda=0), random (uniform), or the model's two parameters",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    add_force_option(p)
    p.set_defaults(func=_cmd_ebsd)


def _cmd_ct(args) -> int:
    import numpy as np

    from nmc_dataset._util import atomic_path
    from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model

    out = check_out_file(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".tif", ".tiff", ".npy", ".h5", ".hdf5"):
        raise InputError("unsupported volume suffix (use .tif, .npy or .h5)", out)
    if args.size < 16 or args.n_particles < 1 or args.mean_radius_vox <= 0 or args.voxel_size_um <= 0:
        raise RecipeError("need --size >= 16, --n-particles >= 1, --mean-radius-vox > 0, --voxel-size-um > 0")
    labels_path = check_out_file(out.with_name(out.stem + ".labels.tif"), "the labels file")
    model = reference_shell_model(mean_radius_vox=args.mean_radius_vox, voxel_size_um=args.voxel_size_um)
    ph = make_ct_phantom(
        model,
        shape=(args.size,) * 3,
        n_particles=args.n_particles,
        rng=np.random.default_rng(args.seed),
        dtype="uint16",
    )
    import tifffile

    tiff_meta = {"axes": "ZYX", "format": "nmc-dataset/ct-phantom", "voxel_size_um": args.voxel_size_um}

    with atomic_path(labels_path) as tmp:
        tifffile.imwrite(tmp, ph.labels.astype(np.uint16), metadata=tiff_meta)
    with atomic_path(out) as tmp:
        if suffix in (".tif", ".tiff"):
            tifffile.imwrite(tmp, ph.volume, metadata=tiff_meta)
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, ph.volume)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                d = f.create_dataset("volume", data=ph.volume, chunks=True, compression="gzip")
                d.attrs["voxel_size_um"] = args.voxel_size_um
                f.attrs["format"] = "nmc-dataset/ct-phantom"
    print(
        f"wrote {out} ({args.size}^3, {ph.n_particles} particles, voxel {args.voxel_size_um} µm) "
        f"and true labels {labels_path}"
    )
    return 0


def parse_texture(text):
    """``default`` | ``random`` | ``KAPPA,LAMBDA`` → what ``write_synthetic_sections(texture=)`` takes."""
    text = str(text).strip().lower()
    if text in ("default", "random"):
        return text
    try:
        kappa, lam = (float(v) for v in text.split(","))
    except ValueError:
        raise RecipeError(f"--texture: use default, random or KAPPA,LAMBDA, got {text!r}") from None
    from nmc_dataset.ebsd._orientation_model import OrientationModel

    try:
        return OrientationModel(kappa=kappa, lam=lam)
    except ValueError as e:
        raise RecipeError(f"--texture: {e}") from None


def _cmd_ebsd(args) -> int:
    import numpy as np

    from nmc_dataset.outputs import claim_folder, output_folder
    from nmc_dataset.synthetic._ebsd import write_synthetic_sections

    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    if not formats or any(f not in ("ang", "ctf") for f in formats):
        raise RecipeError(f"--formats: use ang and/or ctf, got {args.formats!r}")
    if args.n_central < 0 or args.n_off_center < 0 or args.n_central + args.n_off_center < 1:
        raise RecipeError("--n-central + --n-off-center must be >= 1 (and neither negative)")
    if args.radius_px <= 4 or args.step_um <= 0:
        raise RecipeError("need --radius-px > 4 and --step-um > 0")
    from nmc_dataset.synthetic._ebsd import INSTRUMENTS

    if args.instrument not in INSTRUMENTS:
        raise RecipeError(f"--instrument: unknown preset {args.instrument!r}; use one of {', '.join(INSTRUMENTS)}")
    preset = INSTRUMENTS[args.instrument]
    low_ci = preset["low_ci"]
    noise_deg = preset["noise_deg"] if args.noise_deg is None else args.noise_deg
    if args.low_ci is not None:
        try:
            low_ci = tuple(float(v) for v in args.low_ci.split(","))
        except ValueError:
            low_ci = ()
        if len(low_ci) != 3 or not all(0.0 <= v <= 1.0 for v in low_ci):
            raise RecipeError(f"--low-ci: give three probabilities J,B,R in [0, 1], got {args.low_ci!r}")
    if not (0.0 <= noise_deg < 180.0):
        raise RecipeError(f"--noise-deg must be in [0, 180), got {noise_deg}")
    texture = parse_texture(args.texture)
    out = Path(args.out)
    claim_folder(out, "phantom-ebsd", force=args.force)
    with output_folder(out, "phantom-ebsd", force=args.force) as tmp:
        records = write_synthetic_sections(
            tmp,
            np.random.default_rng(args.seed),
            n_central=args.n_central,
            n_off_center=args.n_off_center,
            radius_px=args.radius_px,
            step_um=args.step_um,
            formats=formats,
            low_ci=low_ci,
            noise_deg=noise_deg,
            texture=texture,
            misindex_fraction=preset["misindex_fraction"],
        )
    for r in records:
        kind = "central" if r["central"] else "off-centre"
        print(f"{Path(r['scan']).name}: {kind} section, height {r['height_px']:.1f} px")
    print(f"wrote {len(records)} scan(s) ({args.instrument} instrument) and their true labels to {out}")
    return 0
