"""The fitted grain-architecture model: ``G_net`` weights + a versioned JSON (docs/method.md#generator).

On disk, a folder::

    grain_model/model.json          format "nmc-dataset/grain-model", format_version 1
    grain_model/gnet.safetensors    G_net weights (safetensors: never unpickled)

``model.json`` holds the architecture (hidden widths, kappa, marker bounds), the point-process
intensity ``intensity_per_px3`` (the final ``mu``), the soft-assignment temperature ``beta``, the
input scale, the pixel size in µm, and a summary of the training run. Loading rebuilds
:class:`~nmc_dataset.calibration._generator.GNet` from the JSON and fills it from the safetensors file.

A depth-aware model (``architecture.depth_aware: true``, ``inputs = 5 kappa + 1``) also stores
``depth.reference_radius_px``: the mean radius of the sections it was trained on, the particle
radius used when a caller gives none. Models written without these keys load as not depth-aware.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np

from nmc_dataset._util import as_rng, atomic_path, check_format, read_json, write_json_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.tessellation._gbpd import GBPD

GRAIN_MODEL_FORMAT = "nmc-dataset/grain-model"
GRAIN_MODEL_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "gnet.safetensors"


@dataclasses.dataclass
class GrainModel:
    """A stochastic 3D grain architecture: Poisson seeds + learned markers.

    Parameters
    ----------
    gnet : GNet
        The marker network.
    intensity_per_px3 : float
        Seed intensity ``mu`` (seeds per pixel^3).
    pixel_size_um : float
        Size of one model length unit (the EBSD step it was fitted on) in µm.
    beta : float
        Soft-assignment temperature used in training (relative to the mean diagonal marker).
    input_scale_px : float
        Displacements are divided by this before entering ``G_net``.
    cell_margin_px : float
        How far outside a window seeds can still own cells inside it (used by :meth:`sample`).
    training : dict
        Summary of the training run (epochs, steps, final losses, NG, timing, source data).
    orientation_model : OrientationModel or None
        Crystal-orientation texture drawn per grain by ``make_particle`` (not part of
        ``model.json``: ``nmc_dataset.pipeline.load_grain_model`` reads it from
        ``orientation_model.json`` beside it).
    reference_radius_px : float or None
        Depth-aware models: the particle radius (pixels) :meth:`sample` uses when it is given
        none (the mean radius of the training sections).
    """

    gnet: object
    intensity_per_px3: float
    pixel_size_um: float
    beta: float = 2.0
    input_scale_px: float = 10.0
    cell_margin_px: float = 16.0
    training: dict = dataclasses.field(default_factory=dict)
    orientation_model: object = None
    reference_radius_px: float | None = None

    # ------------------------------------------------------------------ properties
    @property
    def kappa(self) -> int:
        """Number of nearest neighbours the network looks at."""
        return self.gnet.kappa

    @property
    def depth_aware(self) -> bool:
        """Whether ``G_net`` sees the seed's relative distance from the particle centre."""
        return bool(getattr(self.gnet, "depth_aware", False))

    @property
    def r_bounds(self) -> tuple[float, float]:
        return self.gnet.r_bounds

    @property
    def diag_bounds(self) -> tuple[float, float]:
        return self.gnet.diag_bounds

    # ------------------------------------------------------------------ sampling
    def sample(self, rng, lo, hi, radius=None) -> GBPD:
        """Draw an analytic 3D grain architecture covering the box ``[lo, hi]`` (pixels).

        Parameters
        ----------
        rng : numpy.random.Generator or int
        lo, hi : (3,) array-like or float
            Box corners in model pixels (particle centre at the origin); a scalar means the
            same value on every axis.
        radius : float or callable, optional
            The particle's radius in pixels for a depth-aware model: one number (a ball) or the
            shell's radius function of unit directions ``(n, 3) -> (n,)`` (the radius in each seed's
            direction). Default: ``reference_radius_px``. Ignored by models that are not
            depth-aware.

        Returns
        -------
        GBPD
            3D, in pixels, with roll angles; it includes the seeds within ``cell_margin_px``
            outside the box (the model's tessellation of the box is, by definition, the one of
            these seeds; farther seeds could own points of the box only through extreme marker
            ratios, which the marker bounds make rare).
        """
        from nmc_dataset.calibration._generator import generate_gbpd

        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (3,))
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (3,))
        if self.depth_aware and radius is None:
            radius = self.reference_radius_px
            if radius is None:
                raise InputError("this depth-aware grain model needs the particle radius (none stored)")
        return generate_gbpd(
            self.gnet,
            as_rng(rng),
            self.intensity_per_px3,
            lo,
            hi,
            kappa=self.kappa,
            input_scale_px=self.input_scale_px,
            cell_margin_px=self.cell_margin_px,
            radius=radius if self.depth_aware else None,
        )

    # ------------------------------------------------------------------ I/O
    def metadata(self) -> dict:
        """The content of ``model.json``."""
        meta = {
            "format": GRAIN_MODEL_FORMAT,
            "format_version": GRAIN_MODEL_FORMAT_VERSION,
            "architecture": {
                "type": "mlp-relu-scaled-sigmoid",
                **self.gnet.config(),
                "inputs": self.gnet.n_inputs,
                "outputs": ["r", "d_radial", "d_tangential_1", "d_tangential_2"],
            },
            "marker_bounds": {"r": list(self.r_bounds), "diag": list(self.diag_bounds)},
            "kappa": self.kappa,
            "intensity_per_px3": float(self.intensity_per_px3),
            "beta": float(self.beta),
            "input_scale_px": float(self.input_scale_px),
            "cell_margin_px": float(self.cell_margin_px),
            "pixel_size_um": float(self.pixel_size_um),
            "units": {"length": "pixel", "pixel_size_um": float(self.pixel_size_um)},
            "weights": WEIGHTS,
            "training": _jsonable(self.training),
        }
        if self.depth_aware:
            meta["depth"] = {
                "input": "rho = min(|s| / R(s / |s|), 1): the seed's distance from the particle centre "
                "over the particle radius in its direction",
                "reference_radius_px": None if self.reference_radius_px is None else float(self.reference_radius_px),
            }
        return meta

    def write(self, folder) -> Path:
        """Write ``model.json`` and ``gnet.safetensors`` into ``folder`` (each file atomically).

        The weights are written first and ``model.json`` last, so a folder with a ``model.json``
        always has matching weights. Other files in the folder (``training/``) are kept.

        Parameters
        ----------
        folder : path-like
            Model folder (created).

        Returns
        -------
        Path
            ``folder``.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        state = {k: v.detach().cpu().contiguous() for k, v in self.gnet.state_dict().items()}
        with atomic_path(folder / WEIGHTS) as tmp:
            # safetensors stores metadata in a hash map (key order varies between processes): one
            # key keeps the file's bytes a function of the weights alone
            save_file(state, str(tmp), metadata={"format": GRAIN_MODEL_FORMAT})
        write_json_atomic(folder / MODEL_JSON, meta)
        return folder

    @classmethod
    def load(cls, folder) -> "GrainModel":
        """Read a model folder written by :meth:`write` (weights via safetensors, never pickle).

        Parameters
        ----------
        folder : path-like
            Model folder (``model.json`` + ``gnet.safetensors``).

        Returns
        -------
        GrainModel
            The model (its ``orientation_model`` is None).

        Raises
        ------
        InputError
            Missing/malformed files or weights that do not fit the architecture.
        FormatVersionError
            A model written by a newer format version.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from nmc_dataset.calibration._generator import GNet

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("not a grain model folder (expected model.json + gnet.safetensors)", folder)
        meta = read_json(folder / MODEL_JSON)
        check_format(meta, GRAIN_MODEL_FORMAT, GRAIN_MODEL_FORMAT_VERSION, folder / MODEL_JSON)
        _validate_meta(meta, folder / MODEL_JSON)
        arch = meta["architecture"]
        try:
            gnet = GNet(
                kappa=int(meta["kappa"]),
                hidden=tuple(arch["hidden"]),
                r_bounds=tuple(meta["marker_bounds"]["r"]),
                diag_bounds=tuple(meta["marker_bounds"]["diag"]),
                depth_aware=bool(arch.get("depth_aware", False)),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"invalid architecture: {e}", folder / MODEL_JSON) from None
        wpath = folder / meta.get("weights", WEIGHTS)
        try:
            state = load_file(str(wpath))
        except FileNotFoundError:
            raise InputError("weights file not found", wpath) from None
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"not a readable safetensors file: {e}", wpath) from None
        try:
            gnet.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise InputError(f"weights do not match the architecture in model.json ({detail})", wpath) from None
        gnet.eval()
        return cls(
            gnet=gnet,
            intensity_per_px3=float(meta["intensity_per_px3"]),
            pixel_size_um=float(meta["pixel_size_um"]),
            beta=float(meta.get("beta", 2.0)),
            input_scale_px=float(meta.get("input_scale_px", 10.0)),
            cell_margin_px=float(meta.get("cell_margin_px", 16.0)),
            training=dict(meta.get("training", {})),
            reference_radius_px=(meta.get("depth") or {}).get("reference_radius_px"),
        )


def _validate_meta(meta: dict, where) -> None:
    """Validate model.json against schemas/grain-model.schema.json (one-line InputError)."""

    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "grain-model.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(meta), key=lambda e: len(list(e.absolute_path)))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"invalid grain model: {key}: {e.message}", where)


def _jsonable(obj):
    """Convert numpy scalars/arrays in nested dicts/lists to plain JSON types (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj
