"""``nmc-dataset pack`` (electrode assembly) and ``nmc-dataset render-ct`` (CT simulator)."""

from __future__ import annotations

from pathlib import Path

from nmc_dataset._util import log
from nmc_dataset.cli._args import seed_int
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._sequences import render_sequence

#: kinds of volume files each command may replace with ``--force``
_OWN = {"pack": "nmc-dataset/electrode", "render-ct": "nmc-dataset/ct"}


def check_output(path, force: bool, kind: str) -> Path:
    """Refuse an existing output unless ``force`` and it is a volume file of ``kind`` this tool wrote."""
    import h5py

    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name (e.g. out.h5)", path)
    if not path.exists():
        return path
    if not force:
        raise InputError("exists; pass --force to replace it", path)
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format", "")
    except (OSError, ValueError):
        fmt = ""
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    if fmt != kind:
        raise InputError(
            f"exists and was not written by this command (format {fmt or 'none'!r}); not replacing it", path
        )
    return path


def parse_binder(text: str):
    """``MODE:FRACTION`` (e.g. ``bridge:0.08``) or ``none``."""
    from nmc_dataset.tomography._pack import BINDER_MODES

    if text in ("none", "0"):
        return None
    mode, _, frac = text.partition(":")
    if mode not in BINDER_MODES:
        raise InputError(
            f"unknown binder mode {mode!r}; use {' or '.join(m + ':FRACTION' for m in BINDER_MODES)} or none",
            "--binder",
        )
    try:
        f = float(frac)
    except ValueError:
        raise InputError(f"expected MODE:FRACTION, got {text!r}", "--binder") from None
    return mode, f


def _cmd_pack(args) -> int:
    from nmc_dataset.pipeline._generate import load_grain_model, load_shell_model
    from nmc_dataset.tomography._pack import pack_electrode
    from nmc_dataset.tomography._volumes import write_volumes

    out = check_output(args.out, args.force, _OWN["pack"])
    for p in (args.shell_model, args.grain_model):
        if not Path(p).exists():
            raise InputError("not found", p)
    shell, sid = load_shell_model(args.shell_model)
    om = args.orientation_model
    grain, gid = load_grain_model(args.grain_model, orientations={"auto": "auto", "none": False}.get(om, om))
    e = pack_electrode(
        shell,
        grain,
        box_um=args.box_um,
        solid_fraction=args.solid_fraction,
        voxel_size_um=args.voxel_size_um,
        binder=parse_binder(args.binder),
        electrolyte=args.electrolyte,
        periodic=args.periodic,
        neck_um=args.neck_um,
        seed=args.seed,
        workers=args.workers,
        spacing_px=args.assembly_spacing_px,
        model_ids=(sid, gid),
    )
    h = e.voxel_size_um
    info = dict(e.info, shell_model_id=sid, grain_model_id=gid)
    info.pop("seconds")  # same inputs + seed -> same bytes
    write_volumes(
        out,
        "electrode",
        {"phase": e.phase, "particle": e.particle, "grain": e.grain},
        voxel_size_um=h,
        origin_um=(h / 2, h / 2, h / 2),
        attrs={"packing": info, "electrolyte": e.info["electrolyte"]},
        tables={"particles": e.table, **({"grains": e.grains} if e.grains is not None else {})},
    )
    b = e.info["binder"]
    log.info(
        "%d particles, %d grains; active fraction %.4f (target %.4f), binder %.4f (%s), overlap voxels %d; %s",
        e.info["n_particles"],
        e.info["n_grains"],
        e.info["solid_fraction"],
        args.solid_fraction,
        b["fraction"],
        b["mode"],
        e.info["overlap_voxels"],
        out,
    )
    if e.info.get("trimmed"):
        log.info(
            "the packing jammed at the request: its last %d drawn particles were left out (allowed within 0.02)",
            e.info["trimmed"],
        )
    return 0


def _cmd_render(args) -> int:
    import numpy as np

    from nmc_dataset.tomography._ctsim import render_ct, resample_labels, resolve_settings
    from nmc_dataset.tomography._volumes import read_table, read_volumes, write_volumes

    src = Path(args.electrode)
    if not src.exists():
        raise InputError("not found", src)
    if src.is_dir():  # a sequence folder (evolve): one CT per state into the folder --out
        return render_sequence(args, _cmd_render)
    out = check_output(args.out, args.force, _OWN["render-ct"])
    settings = resolve_settings(
        args.preset,
        energy_kev=args.energy_kev,
        photons=args.photons,
        psf_um=args.psf_um,
        rings=args.rings,
        phase_contrast=args.phase_contrast,
        binning=args.binning,
        projections=args.projections,
    )
    arrays, meta = read_volumes(src, ("phase", "particle", "grain"), kinds=("electrode",))
    h = float(meta["voxel_size_um"])
    if args.voxel_size_um is not None:
        ratio = args.voxel_size_um / h
        if ratio < 1 - 1e-6:
            raise InputError(
                f"the CT voxel size {args.voxel_size_um} µm is finer than the electrode's labels ({h} µm)",
                "--voxel-size-um",
            )
        if abs(ratio - round(ratio)) > 1e-6:
            raise InputError(
                f"the CT voxel size must be a whole multiple of the label voxel size {h} µm (got {ratio:.3g}x)",
                "--voxel-size-um",
            )
        settings["binning"] = round(ratio)
    d = h * settings["binning"]
    tables = {}
    try:
        tables["particles"] = read_table(src, "particles")
    except InputError:
        pass
    if "volume_um3" in tables.get("particles", {}) and len(tables["particles"]["volume_um3"]):
        r_mean = float(np.mean((3 * tables["particles"]["volume_um3"] / (4 * np.pi)) ** (1 / 3)))
        if d > r_mean / 2:
            raise InputError(
                f"the CT voxel size {d:.3g} µm is too coarse for particles of mean radius {r_mean:.3g} µm "
                f"(at most {r_mean / 2:.3g} µm: two voxels per radius)",
                "--voxel-size-um/--binning",
            )
    electrolyte = args.electrolyte or meta.get("electrolyte", "none")
    import h5py

    with h5py.File(src, "r") as f:  # partial volumes of an evolved state (sub-voxel motion)
        fractions = tuple(f[k][...] for k in ("nmc_fraction", "binder_fraction")) if "nmc_fraction" in f else None
    ct, imaging = render_ct(
        arrays["phase"],
        h,
        settings=settings,
        electrolyte=electrolyte,
        seed=args.seed,
        fractions=fractions,
        gain_seed=getattr(args, "gain_seed", None),
    )
    s = settings["binning"]
    phase, particle, grain = resample_labels(arrays["phase"], arrays["particle"], arrays["grain"], s)
    nz, n = ct.shape[0], ct.shape[1]
    phase, particle, grain = (a[:nz, :n, :n] for a in (phase, particle, grain))
    imaging.pop("seconds")
    imaging["source"] = {"file": src.name, "packing": meta.get("packing")}
    write_volumes(
        out,
        "ct",
        {"ct": ct, "phase": phase, "particle": particle, "grain": grain},
        voxel_size_um=d,
        origin_um=(d / 2, d / 2, d / 2),
        attrs={"imaging": imaging, "electrolyte": electrolyte},
        tables=tables,
    )
    m = {k: float(np.mean(ct[phase == k])) if (phase == k).any() else float("nan") for k in range(3)}
    log.info(
        "CT %s at %.3g µm (%d projections, %.3g keV, %g photons): mean grey pore %.4g, NMC %.4g, binder %.4g /µm; %s",
        "x".join(map(str, ct.shape)),
        d,
        imaging["projections"],
        imaging["energy_kev"],
        imaging["photons"],
        m[0],
        m[1],
        m[2],
        out,
    )
    return 0


def register(sub) -> None:
    """Register ``pack`` and ``render-ct``."""
    from nmc_dataset.tomography._ctsim import PRESETS

    p = sub.add_parser(
        "pack",
        help="pack particles into an electrode volume with binder (phase/particle/grain labels)",
        description="Pack particles drawn from a shell and a grain model into a cubic box at a target "
        "active-material fraction, add carbon-binder, write label volumes + particle table.",
    )
    p.add_argument("--shell-model", required=True, help="shell model JSON (fit-shells)")
    p.add_argument("--grain-model", required=True, help="grain model folder (fit-grains)")
    p.add_argument("--box-um", type=float, required=True, help="edge of the cubic box in µm")
    p.add_argument("--solid-fraction", type=float, default=0.55, help="active-material volume fraction (default 0.55)")
    p.add_argument(
        "--binder", default="bridge:0.08", help="MODE:FRACTION, MODE bridge or coating, or none (default bridge:0.08)"
    )
    p.add_argument(
        "--electrolyte",
        choices=("none", "liquid", "solid"),
        default="none",
        help="what fills the pores (recorded for render-ct; default none = air)",
    )
    p.add_argument("--voxel-size-um", type=float, default=0.1, help="voxel size in µm (default 0.1)")
    p.add_argument(
        "--periodic",
        action=__import__("argparse").BooleanOptionalAction,
        default=True,
        help="periodic box (default) or --no-periodic for hard walls",
    )
    p.add_argument(
        "--neck-um",
        type=float,
        default=0.0,
        help="allowed overlap depth of touching particles (sintered necks), µm (default 0)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="root seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes drawing particles (same bytes for any count)")
    p.add_argument(
        "--assembly-spacing-px",
        type=float,
        default=2.0,
        help="grain-selection lattice in grain-model pixels (default 2)",
    )
    p.add_argument(
        "--orientation-model",
        default="auto",
        metavar="auto|none|PATH",
        help="crystal orientation per grain (fit-orientations), stored as the grains table: auto = "
        "GRAIN_MODEL/orientation_model.json when present (default), none, or a model file",
    )
    p.add_argument("--out", required=True, help="output .h5")
    p.add_argument("--force", action="store_true", help="replace an electrode file this command wrote")
    p.set_defaults(func=_cmd_pack)

    r = sub.add_parser(
        "render-ct",
        help="simulate a CT scan of an electrode volume (grey volume + its labels)",
        description="Parallel-beam CT of a packed electrode: attenuation from composition (xraydb), "
        "projection, phase contrast, blur, photon noise, rings, FBP, binning.",
    )
    r.add_argument("electrode", help="electrode .h5 (pack), or a sequence folder (evolve): one CT per state")
    r.add_argument("--preset", default="lab-nanoct", help=f"one of {', '.join(PRESETS)} (default lab-nanoct)")
    r.add_argument("--energy-kev", type=float, help="photon energy, keV")
    r.add_argument("--photons", type=float, help="photons per detector pixel in the flat field")
    r.add_argument("--psf-um", type=float, help="detector blur, FWHM in µm")
    r.add_argument("--rings", type=float, help="relative std of per-pixel gain errors (ring artefacts)")
    r.add_argument("--phase-contrast", type=float, help="propagation edge term γ = zδ/(μ d²) (0 = off)")
    r.add_argument("--binning", type=int, help="label voxels per CT voxel (edge)")
    r.add_argument("--voxel-size-um", type=float, help="CT voxel size (a whole multiple of the label voxel size)")
    r.add_argument("--projections", type=int, help="number of projections over 180° (default π/2 · width)")
    r.add_argument("--electrolyte", choices=("none", "liquid", "solid"), help="override the pore filling")
    r.add_argument("--seed", type=seed_int, default=0, help="noise seed (default 0)")
    r.add_argument("--out", required=True, help="output .h5 (a folder for a sequence)")
    r.add_argument("--force", action="store_true", help="replace a CT file (folder) this command wrote")
    r.set_defaults(func=_cmd_render)


__all__ = ["check_output", "parse_binder", "register"]
