"""``nmc-dataset evolve`` (cycling sequences), CT rendering of a sequence folder, ``nmc-dataset check-dvc``.

Sequence folder (``evolve``): ``sequence.json`` (format ``nmc-dataset/sequence``: protocol, electrode
id, one summary per state) and ``state_000.h5`` … (electrode files with ``crack`` (uint32 crack id),
``displacement`` (Z, Y, X, 3) float32 voxels of the reference grid, components z, y, x, NaN in
crack voxels, and ``strain`` (Z, Y, X, 6): zz, yy, xx, yz, xz, xy). ``render-ct SEQ/`` writes a CT
sequence folder of the same layout (``ct_000.h5`` …, each with the truth binned to the CT grid).
State files also hold ``nmc_fraction`` and ``binder_fraction`` (float32 partial volumes that carry the
sub-voxel motion; ``render-ct`` renders from them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from nmc_dataset._util import atomic_path, read_json, write_json_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.outputs import output_folder

SEQUENCE_FORMAT = "nmc-dataset/sequence"
CT_SEQUENCE_FORMAT = "nmc-dataset/ct-sequence"
MANIFEST = "sequence.json"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sequence_id(**parts) -> str:
    """A short id of one run: every file of the run carries it, so a folder mixing runs is refused.

    Parameters
    ----------
    **parts
        The run's inputs (JSON-serialisable): the id is the first 16 hex digits of the sha256 of their
        sorted JSON, so the same inputs give the same id.

    Returns
    -------
    str
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


#: render-ct options that change a CT (part of the CT sequence's id)
_RENDER_KEYS = (
    "preset",
    "energy_kev",
    "photons",
    "psf_um",
    "rings",
    "phase_contrast",
    "binning",
    "projections",
    "voxel_size_um",
    "electrolyte",
    "seed",
)


def write_state(path, state: dict, *, voxel_size_um: float, meta: dict, tables: dict, info: dict) -> None:
    """One state file: an electrode volume file plus ``crack``, ``displacement`` and ``strain``."""
    from nmc_dataset.tomography._volumes import FORMAT_VERSION

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = "nmc-dataset/electrode"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["voxel_size_um"] = float(voxel_size_um)
        f.attrs["origin_um"] = np.asarray(meta.get("origin_um", (voxel_size_um / 2,) * 3), dtype=np.float64)
        f.attrs["axes"] = "zyx"
        f.attrs["electrolyte"] = meta.get("electrolyte", "none")
        f.attrs["packing"] = json.dumps(meta.get("packing", {}), sort_keys=True)
        f.attrs["sequence"] = json.dumps(info, sort_keys=True)
        for name, dtype in (("phase", np.uint8), ("particle", np.uint32), ("grain", np.uint32), ("crack", np.uint32)):
            a = np.asarray(state[name], dtype=dtype)
            f.create_dataset(name, data=a, chunks=tuple(min(64, s) for s in a.shape), compression="gzip")
        for name in ("nmc_fraction", "binder_fraction"):
            a = np.asarray(state[name], dtype=np.float32)
            f.create_dataset(
                name,
                data=a,
                chunks=tuple(min(64, s) for s in a.shape),
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
        for name in ("displacement", "strain"):
            a = np.asarray(state[name], dtype=np.float32)
            f.create_dataset(
                name,
                data=a,
                chunks=tuple(min(32, s) for s in a.shape[:3]) + a.shape[3:],
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
        for group, columns in tables.items():
            g = f.create_group(group)
            for col, values in columns.items():
                g.create_dataset(col, data=np.asarray(values))


def read_sequence(folder, fmt: str = SEQUENCE_FORMAT) -> tuple[dict, list[Path]]:
    """The manifest of a sequence folder and its state files, checked to come from one electrode.

    Parameters
    ----------
    folder : str or path-like
        An ``evolve`` folder (``fmt`` :data:`SEQUENCE_FORMAT`) or a ``render-ct SEQ/`` folder
        (:data:`CT_SEQUENCE_FORMAT`).
    fmt : str
        The manifest format expected.

    Returns
    -------
    manifest : dict
        ``sequence.json``.
    files : list of Path
        The state files in manifest order.

    Raises
    ------
    InputError
        No manifest, a manifest of the other kind, a missing state file, or a mixed folder: a state
        of another electrode, of another run (``sequence_id``), at another index than its manifest
        entry, or a state file the manifest does not list.
    """
    folder = Path(folder)
    man_path = folder / MANIFEST
    if not man_path.is_file():
        raise InputError(f"not a sequence folder (no {MANIFEST}; write one with `nmc-dataset evolve`)", folder)
    man = read_json(man_path)
    if not isinstance(man, dict) or man.get("format") != fmt:
        if isinstance(man, dict) and man.get("format") == CT_SEQUENCE_FORMAT:
            raise InputError("is a CT sequence (render-ct output); give the evolve folder it was rendered from", folder)
        if isinstance(man, dict) and man.get("format") == SEQUENCE_FORMAT:
            raise InputError(
                "is an evolve folder (labels, no CT); render it first with `nmc-dataset render-ct`", folder
            )
        raise InputError(f"{MANIFEST} is not an {fmt} manifest", folder)
    eid = man["electrode"]["sha256"]
    run = man.get("sequence_id")  # absent in folders written before runs had ids
    files = []
    for st in man["states"]:
        p = folder / st["file"]
        if not p.is_file():
            raise InputError(f"state {st['file']} listed in {MANIFEST} is missing", folder)
        with h5py.File(p, "r") as f:
            info = json.loads(f.attrs.get("sequence", "{}"))
        if info.get("electrode_sha256") != eid:
            raise InputError(
                f"{st['file']} comes from another electrode than {MANIFEST} (a mixed sequence "
                "folder); evolve each electrode into its own folder",
                folder,
            )
        if run is not None and info.get("sequence_id") != run:
            raise InputError(
                f"{st['file']} comes from another run than {MANIFEST} (another protocol, seed, step count or "
                "CT setting; a mixed sequence folder); write each run into its own folder",
                folder,
            )
        if "index" in info and info["index"] != st["index"]:
            raise InputError(
                f"{st['file']} holds state {info['index']} but {MANIFEST} lists it as state {st['index']} "
                "(a mixed sequence folder)",
                folder,
            )
        files.append(p)
    pattern = "state_*.h5" if fmt == SEQUENCE_FORMAT else "ct_*.h5"
    extra = sorted({p.name for p in folder.glob(pattern)} - {p.name for p in files})
    if extra:
        raise InputError(
            f"holds state files not in {MANIFEST} ({', '.join(extra[:3])}): a mixed sequence folder", folder
        )
    return man, files


def _bin_truth(u: np.ndarray, crack: np.ndarray, s: int, shape):
    """Displacement (CT voxels) and crack labels on the CT grid: block mean / max over ``s³`` label voxels."""
    nz, n = shape[0], shape[1]
    u = u[: nz * s, : n * s, : n * s]
    c = crack[: nz * s, : n * s, : n * s]
    if s == 1:
        return u.astype(np.float32), c.copy()
    blocks = u.reshape(nz, s, n, s, n, s, 3)
    ub = blocks.mean(axis=(1, 3, 5)) / s  # NaN where any label voxel of the block is a crack
    cb = c.reshape(nz, s, n, s, n, s).max(axis=(1, 3, 5))
    return ub.astype(np.float32), cb


def render_sequence(args, render_one) -> int:
    """``render-ct SEQ/``: one CT per state, truth binned to the CT grid.

    Photon noise is new in every state (seed drawn from ``(seed, state)``); the detector gain map
    (rings) is one for the whole sequence, as for one detector over a time series.
    """
    import copy

    if args.seed < 0:
        raise InputError(f"must be >= 0, got {args.seed}", "--seed")
    man, files = read_sequence(args.electrode)
    ct_id = sequence_id(
        sequence=man.get("sequence_id") or man["electrode"]["sha256"],
        render={k: getattr(args, k, None) for k in _RENDER_KEYS},
    )
    states = []
    with output_folder(args.out, "render-ct", force=args.force) as tmp:
        for st, path in zip(man["states"], files):
            t = st["index"]
            a = copy.copy(args)
            a.electrode = str(path)
            a.out = str(tmp / f"ct_{t:03d}.h5")
            a.force = False
            a.seed = int(np.random.SeedSequence([int(args.seed), int(t)]).generate_state(1)[0])
            a.gain_seed = int(args.seed)  # one detector: the same gain errors (rings) in every state
            render_one(a)
            with h5py.File(path, "r") as f:
                u = f["displacement"][...]
                crack = f["crack"][...]
            with h5py.File(a.out, "r+") as f:
                s = int(json.loads(f.attrs["imaging"])["binning"])
                ub, cb = _bin_truth(u, crack, s, f["ct"].shape)
                f.create_dataset(
                    "displacement",
                    data=ub,
                    chunks=tuple(min(32, x) for x in ub.shape[:3]) + (3,),
                    compression="gzip",
                    compression_opts=1,
                    shuffle=True,
                )
                f.create_dataset("crack", data=cb, chunks=tuple(min(64, x) for x in cb.shape), compression="gzip")
                f.attrs["sequence"] = json.dumps(
                    {
                        "index": t,
                        "electrode_sha256": man["electrode"]["sha256"],
                        "sequence_id": ct_id,
                        "noise_seed": a.seed,
                        "binning": s,
                    },
                    sort_keys=True,
                )
            states.append(
                {
                    "file": Path(a.out).name,
                    "index": t,
                    "cycle": st["cycle"],
                    "soc": st["soc"],
                    "noise_seed": a.seed,
                    "source": st["file"],
                }
            )
        write_json_atomic(
            tmp / MANIFEST,
            {
                "format": CT_SEQUENCE_FORMAT,
                "format_version": 1,
                "sequence_id": ct_id,
                "source_sequence_id": man.get("sequence_id"),
                "electrode": man["electrode"],
                "protocol": man["protocol"],
                "preset": args.preset,
                "seed": int(args.seed),
                "states": states,
            },
        )
    return 0


__all__ = ["read_sequence", "render_sequence", "sequence_id", "write_state"]
