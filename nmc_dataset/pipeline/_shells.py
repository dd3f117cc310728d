"""The shell pipeline end to end, as functions the CLI and the recipe runner share.

``fit_volume``      CT volume (array) -> segmentation -> radius/SH -> :class:`ShellModel`
``fit_shells``      the same from a volume file, writing the model JSON (+ coefficients parquet)
``sample_shells``   model -> ``n`` valid shells -> parquet
``describe_shells`` shells parquet -> descriptors (µm) [-> comparison with the model's particles]
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nmc_dataset._util import atomic_path, log, progress, write_json_atomic
from nmc_dataset.compare import compare_descriptors
from nmc_dataset.errors import InputError
from nmc_dataset.io._ct import read_volume
from nmc_dataset.outputs import check_out_file, check_out_name, claim_folder, output_folder
from nmc_dataset.shells._descriptors import DESCRIPTOR_UNITS, DESCRIPTORS, shell_descriptors
from nmc_dataset.shells._model import COEFF_TABLE_FORMAT, ShellModel, read_coefficients_table, write_coefficients_table
from nmc_dataset.shells._radius import ParticleCoefficients, measure_particles
from nmc_dataset.shells._segment import Segmentation, segment_volume
from nmc_dataset.shells._selection import CANDIDATES, fit_candidate, select_model
from nmc_dataset.shells._sigma_rule import auto_sigma, suggest_sigma

__all__ = [
    "SHELLS_FORMAT",
    "FitResult",
    "fit_volume",
    "fit_shells",
    "sample_shells",
    "write_shells",
    "read_shells",
    "describe_shells",
    "descriptors_um",
]

#: format of sampled-shell parquet tables.
SHELLS_FORMAT = "nmc-dataset/shells"
_UNIT_NAMES = {0: "", 1: "µm", 2: "µm²", 3: "µm³"}


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_volume` produced: the model, the segmentation and the per-particle fits.

    Parameters
    ----------
    model : ShellModel
        The fitted shell model.
    segmentation : Segmentation
        The particle segmentation of the volume.
    particles : ParticleCoefficients
        The per-particle SH coefficients (voxels) the model was fitted on.
    """

    model: ShellModel
    segmentation: Segmentation
    particles: ParticleCoefficients


def _check_voxel_size(voxel_size_um, where):
    try:
        v = float(voxel_size_um)
    except (TypeError, ValueError):
        raise InputError(f"voxel size must be a number of µm, got {voxel_size_um!r}", where) from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"voxel size must be > 0 µm (--voxel-size-um), got {voxel_size_um}", where)
    return v


def _check_degree(degree, where):
    d = int(degree)
    if d < 0 or (d + 1) ** 2 > 642:
        raise InputError(f"SH degree must be in 0..24 (642 fit points), got {degree}", where)
    return d


def fit_volume(
    volume: np.ndarray,
    voxel_size_um: float,
    *,
    phase: int | None = None,
    degree: int = 9,
    rng: np.random.Generator | None = None,
    selection: str = "aic",
    sigma: float = 1.8,
    where=None,
    model: str = "auto",
    holdout: float = 0.25,
    families: str = "constrained",
    measure: str = "subvoxel",
    measure_sigma: float | str = "auto",
    correct_blur: bool = True,
    correct_noise: bool = True,
) -> FitResult:
    """Segment a CT volume, measure every particle's radius function and fit the shell model.

    Parameters
    ----------
    volume : ndarray (Z, Y, X)
        Grey values, binary, or phase labels (with ``phase``).
    voxel_size_um : float
        µm per voxel (> 0).
    phase : int, optional
        Particle phase of a phase-label volume.
    degree : int
        SH degree L (the paper: 9).
    rng : numpy.random.Generator
        Draws the per-particle rotations.
    selection : {"aic", "loglik"}
        Family selection (see :mod:`nmc_dataset.shells._model`).
    sigma : float
        Gaussian σ of the segmentation (grey input).
    where : str, optional
        The volume's file name for error messages.
    model : str
        ``"auto"`` (hold-out selection among all candidates, :mod:`nmc_dataset.shells._selection`)
        or one candidate name (``independent``, ``scale_mixture``, ``scale_mixture_bands``,
        ``ellipsoid_mixture``):
        that model is fitted on all particles and still self-checked on a hold-out.
    holdout : float
        Fraction of particles held out for the self-check; 0 skips it.
    families : {"constrained", "paper"}
        Per-degree family set (see :mod:`nmc_dataset.shells._model`).
    measure : {"subvoxel", "voxel"}
        Radius measurement: the threshold crossing of the smoothed grey value along each ray
        (:mod:`nmc_dataset.shells._subvoxel`, default) or the nearest-voxel ray walk on the labels
        (:func:`~nmc_dataset.shells._radius.measure_particles`, the paper's).
    measure_sigma : float or "auto"
        Gaussian σ (voxels) of the sub-voxel measurement; ``"auto"`` (default) applies the rule of
        :mod:`nmc_dataset.shells._sigma_rule` to a pilot measurement of grey input (segmented
        input: 1).
    correct_blur : bool
        Undo the blur's degree-wise damping in the sub-voxel measurement.
    correct_noise : bool
        Subtract each particle's noise power from its degrees >= 2 (sub-voxel, grey input).

    Returns
    -------
    FitResult
        The model, the segmentation and the per-particle fits.
    """
    vs = _check_voxel_size(voxel_size_um, where)
    degree = _check_degree(degree, where)
    _check_fit_options(model, holdout, measure, measure_sigma, where)
    rng = np.random.default_rng() if rng is None else rng
    seg = segment_volume(volume, phase=phase, sigma=sigma, where=where)
    log.info("segmentation: %s", seg.summary())
    if seg.n_particles < 3:
        raise InputError(f"only {seg.n_particles} particle(s) found; a shell model needs at least 3", where)
    minfo = {"method": "voxel"}
    if measure == "voxel":
        pc = measure_particles(seg.labels, degree, rng)
    else:
        from nmc_dataset.shells._subvoxel import measure_particles_subvoxel

        pilot, sigma_choice = None, "auto" if measure_sigma == "auto" else "fixed"
        if measure_sigma == "auto":
            if seg.input_kind == "grey":
                pilot = auto_sigma(seg.labels, volume, degree, otsu_threshold=seg.threshold)
                measure_sigma = pilot["suggested_sigma_vox"]
                log.info(
                    "sub-voxel sigma: %.2f voxel (automatic; pilot of %d particles)",
                    measure_sigma,
                    pilot["pilot_particles"],
                )
            else:
                measure_sigma = 1.0
        pc, mi = measure_particles_subvoxel(
            seg.labels,
            volume if seg.input_kind == "grey" else None,
            degree,
            rng,
            sigma=float(measure_sigma),
            otsu_threshold=seg.threshold,
            correct_blur=correct_blur,
            correct_noise=correct_noise,
        )
        minfo = mi.to_json()
        minfo["sigma_choice"] = sigma_choice
        if pilot is not None:
            minfo["sigma_pilot"] = pilot
        if seg.input_kind == "grey" and pc.coeffs.shape[0]:
            minfo["sigma_rule"] = suggest_sigma(
                mi.blur_sigma_vox, float(measure_sigma), pc.coeffs[:, 0] / np.sqrt(4 * np.pi), degree
            )
    table = {
        "particle_label": pc.label,
        "centroid_x_vox": pc.centroid_xyz[:, 0],
        "centroid_y_vox": pc.centroid_xyz[:, 1],
        "centroid_z_vox": pc.centroid_xyz[:, 2],
        "volume_vox": pc.volume_voxels,
        "star_volume_fraction": pc.star_volume_fraction,
        "fit_rms_vox": pc.fit_rms,
    }
    # the input's name only: an absolute path would make the model depend on where it was built
    source = {
        "input": Path(os.fspath(where)).name if where is not None else None,
        "input_kind": seg.input_kind,
        "volume_shape": list(volume.shape),
        "segmentation": seg.summary(),
        "counts": seg.counts,
        "otsu_threshold": seg.threshold,
        "skipped_steps": seg.skipped,
        "gaussian_sigma_vox": sigma,
        "fit_points": 642,
        "rotation": "uniform random per particle",
        "mean_fit_rms_vox": float(pc.fit_rms.mean()),
        "measurement": minfo,
    }
    fit_kw = {
        "selection": selection,
        "star_volume_fraction": pc.star_volume_fraction,
        "particle_table": table,
        "source": source,
        "families": families,
    }
    shell_model = _fit_and_select(pc.coeffs, vs, model, holdout, rng, fit_kw, where)
    return FitResult(model=shell_model, segmentation=seg, particles=pc)


def _check_fit_options(model, holdout, measure, measure_sigma, where):

    if model != "auto" and model not in CANDIDATES:
        raise InputError(f"unknown shell model {model!r} (choose from auto, {', '.join(CANDIDATES)})", where)
    if not 0 <= float(holdout) < 1:
        raise InputError(f"--holdout must be in [0, 1), got {holdout}", where)
    if measure not in ("subvoxel", "voxel"):
        raise InputError(f"unknown measurement {measure!r} (choose subvoxel or voxel)", where)
    if measure_sigma == "auto":
        return
    try:
        ok = float(measure_sigma) > 0 and np.isfinite(float(measure_sigma))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"--measure-sigma must be > 0 voxels or 'auto', got {measure_sigma!r}", where)


def _fit_and_select(coeffs, vs, model, holdout, rng, fit_kw, where):

    if float(holdout) == 0:
        m = fit_candidate("independent" if model == "auto" else model, coeffs, vs, **fit_kw)
        m.selection_table = {"chosen": m.kind if model == "auto" else model, "skipped": "hold-out disabled (0)"}
        return m
    cands = tuple(CANDIDATES) if model == "auto" else (model,)
    fallback = "independent" if model == "auto" else model
    m, _ = select_model(coeffs, vs, rng=rng, holdout=float(holdout), candidates=cands, fallback=fallback, **fit_kw)
    return m


def fit_shells(
    volume_path,
    voxel_size_um: float,
    out,
    *,
    dataset: str | None = None,
    phase: int | None = None,
    shape=None,
    dtype=None,
    degree: int = 9,
    seed: int = 0,
    selection: str = "aic",
    model: str = "auto",
    holdout: float = 0.25,
    families: str = "constrained",
    measure: str = "subvoxel",
    measure_sigma: float | str = "auto",
    correct_blur: bool = True,
    correct_noise: bool = True,
) -> FitResult:
    """Fit a shell model to a volume file and write ``out`` (JSON) plus ``<stem>.coefficients.parquet``.

    All inputs are checked before anything is written; see :func:`fit_volume`.

    Parameters
    ----------
    volume_path : path-like
        CT volume file (see :func:`nmc_dataset.io._ct.read_volume`).
    voxel_size_um : float
        µm per voxel (> 0).
    out : path-like
        Model JSON to write (a new file, or one this tool wrote).
    dataset : str, optional
        HDF5 dataset path.
    phase : int, optional
        Particle phase of a phase-label volume.
    shape : (Z, Y, X) or str, optional
        Raw files: the volume shape.
    dtype : str, optional
        Raw files: the voxel type.
    degree : int, default 9
        SH degree L.
    seed : int, default 0
        Seed of the fit's random generator (recorded in the model).
    selection : {"aic", "loglik"}, default "aic"
        Family selection.
    model : str, default "auto"
        ``"auto"`` (hold-out selection) or one candidate name.
    holdout : float, default 0.25
        Fraction of particles held out for the self-check; 0 skips it.
    families : {"constrained", "paper"}, default "constrained"
        Per-degree family set.
    measure : {"subvoxel", "voxel"}, default "subvoxel"
        Radius measurement.
    measure_sigma : float or "auto", default "auto"
        Gaussian σ (voxels) of the sub-voxel measurement; ``"auto"`` applies the σ rule.
    correct_blur : bool, default True
        Undo the blur's degree-wise damping in the sub-voxel measurement.
    correct_noise : bool, default True
        Subtract each particle's noise power from its degrees >= 2 (sub-voxel, grey input).

    Returns
    -------
    FitResult
        The model (written to ``out``), the segmentation and the per-particle fits.
    """

    volume_path = Path(volume_path)
    _check_voxel_size(voxel_size_um, volume_path)
    _check_degree(degree, volume_path)
    _check_fit_options(model, holdout, measure, measure_sigma, volume_path)
    out = check_out_file(out)
    check_out_file(out.with_name(out.stem + ".coefficients.parquet"), "the coefficients file")
    vol = read_volume(volume_path, dataset=dataset, shape=shape, dtype=dtype)
    res = fit_volume(
        vol,
        voxel_size_um,
        phase=phase,
        degree=degree,
        rng=np.random.default_rng(seed),
        selection=selection,
        where=volume_path,
        model=model,
        holdout=holdout,
        families=families,
        measure=measure,
        measure_sigma=measure_sigma,
        correct_blur=correct_blur,
        correct_noise=correct_noise,
    )
    res.model.source["seed"] = int(seed)
    if dataset:
        res.model.source["dataset"] = dataset
    if phase is not None:
        res.model.source["phase"] = int(phase)
    res.model.write(out)
    return res


# --------------------------------------------------------------------------- sampled shells
def write_shells(path, coeffs: np.ndarray, model: ShellModel, *, seed, redrawn: int = 0) -> None:
    """Write sampled shells (coefficients in voxels, one row per shell) to parquet atomically.

    Parameters
    ----------
    path : path-like
        Output parquet file.
    coeffs : (n, K) float array
        SH coefficients in voxels.
    model : ShellModel
        The model they were drawn from (voxel size, degree, file name recorded).
    seed : int
        Seed of the draws, recorded.
    redrawn : int, default 0
        Invalid draws replaced, recorded.
    """
    meta = {
        "format": SHELLS_FORMAT,
        "format_version": 1,
        "units": "voxel",
        "voxel_size_um": model.voxel_size_um,
        "degree": model.degree,
        "n": int(coeffs.shape[0]),
        "seed": seed,
        "redrawn": int(redrawn),
        "model_file": Path(os.fspath(model.path)).name if model.path else None,
        "model_format_version": model.format_version,
    }
    write_coefficients_table(path, coeffs, extra={"shell_id": np.arange(coeffs.shape[0], dtype=np.int64)}, meta=meta)


def read_shells(path) -> tuple[np.ndarray, dict]:
    """Read sampled shells *or* a model's measured coefficient table; returns ``(coeffs, meta)``.

    Parameters
    ----------
    path : path-like
        Parquet written by :func:`write_shells` or a model's ``.coefficients.parquet``.

    Returns
    -------
    coeffs : (n, K) float array
        SH coefficients in voxels.
    meta : dict
        The table metadata (with a positive ``voxel_size_um``).
    """

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    kind = SHELLS_FORMAT
    try:
        raw = pq.read_schema(path).metadata or {}
        import json

        kind = json.loads(raw[b"nmc_dataset"].decode()).get("format", SHELLS_FORMAT)
    except Exception:  # read_coefficients_table gives the proper message
        pass
    if kind not in (SHELLS_FORMAT, COEFF_TABLE_FORMAT):
        kind = SHELLS_FORMAT
    c, meta, _ = read_coefficients_table(path, kind)
    if "voxel_size_um" not in meta or not float(meta["voxel_size_um"]) > 0:
        raise InputError("table metadata has no positive voxel_size_um", path)
    return c, meta


def sample_shells(model_path, n: int, seed: int, out) -> tuple[np.ndarray, dict]:
    """Draw ``n`` valid shells from a model file and write them to ``out`` (parquet).

    Parameters
    ----------
    model_path : path-like
        Shell model JSON.
    n : int
        Number of shells (>= 1).
    seed : int
        Seed of the draws.
    out : path-like
        Parquet file to write (a new file, or one this tool wrote).

    Returns
    -------
    coeffs : ndarray (n, K)
        In voxels.
    stats : dict
        ``redrawn`` (invalid draws replaced) and ``rounds``.
    """
    model_path = Path(model_path)
    if int(n) < 1:
        raise InputError(f"-n must be >= 1, got {n}", model_path)
    check_out_file(out)
    model = ShellModel.load(model_path)
    coeffs, stats = model.sample_coefficients(int(n), np.random.default_rng(seed), return_stats=True)
    write_shells(out, coeffs, model, seed=seed, redrawn=stats["redrawn"])
    return coeffs, stats


def descriptors_um(coeffs: np.ndarray, voxel_size_um: float, subdivisions: int = 4, desc: str = "") -> dict:
    """shell descriptors of shells in voxels, converted to µm (µm², µm³).

    Computed in chunks of 200 shells, with a progress bar on a terminal when ``desc`` is given.
    """

    coeffs = np.atleast_2d(np.asarray(coeffs))
    starts = range(0, coeffs.shape[0], 200)
    it = progress(starts, total=len(starts), desc=desc, unit="x200 shells") if desc else starts
    parts = [shell_descriptors(coeffs[i : i + 200], subdivisions=subdivisions) for i in it]
    d = (
        {k: np.concatenate([np.atleast_1d(p[k]) for p in parts]) for k in DESCRIPTORS}
        if parts
        else shell_descriptors(coeffs, subdivisions=subdivisions)
    )
    return {k: d[k] * voxel_size_um ** DESCRIPTOR_UNITS[k] for k in DESCRIPTORS}


def _write_descriptor_table(path, desc: dict, meta: dict) -> None:

    table = pa.table({k: np.asarray(v) for k, v in desc.items()})
    md = {"nmc_dataset": json.dumps(meta), "format": meta["format"], "format_version": str(meta["format_version"])}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(md), tmp)


def describe_shells(shells_path, out, *, against=None, subdivisions: int = 4, force: bool = False) -> dict:
    """Descriptors of sampled shells, optionally compared with a model's measured particles.

    Writes into the folder ``out`` (a new or empty folder, or an earlier describe-shells report,
    whose files are replaced atomically; ``force`` writes beside files the tool did not write):
    ``descriptors.parquet`` (µm units, one row per shell), ``summary.json``, and with ``against``
    also ``measured_descriptors.parquet``, the histogram PNGs, ``comparison.md`` and ``comparison.json``.

    Parameters
    ----------
    shells_path : path-like
        Parquet of sampled shells (``sample-shells``) or a model's coefficient table.
    out : path-like
        Report folder.
    against : path-like, optional
        Shell model JSON whose measured particles the shells are compared with.
    subdivisions : int, default 4
        Icosphere subdivisions of the descriptor computation (1..6).
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).

    Returns
    -------
    dict
        ``{"summary": ..., "comparison": ... or None}``.
    """

    shells_path = Path(shells_path)
    if not 1 <= int(subdivisions) <= 6:
        raise InputError(f"--subdivisions must be in 1..6, got {subdivisions}", shells_path)
    coeffs, meta = read_shells(shells_path)
    vs = float(meta["voxel_size_um"])
    claim_folder(check_out_name(out), "describe-shells", force=force, legacy=("summary.json",))
    model = measured = None
    if against is not None:
        model = ShellModel.load(against)
        measured = model.load_coefficients()
        if measured.shape[1] != coeffs.shape[1]:
            raise InputError(
                f"the model has degree {model.degree} but the shells have {coeffs.shape[1]} coefficients", against
            )
        if abs(model.voxel_size_um - vs) > 1e-9 * max(vs, 1):
            log.info("note: model voxel size %g µm differs from the shells' %g µm", model.voxel_size_um, vs)
    sim = descriptors_um(coeffs, vs, subdivisions, desc="descriptors")
    units = {k: _UNIT_NAMES[DESCRIPTOR_UNITS[k]] for k in DESCRIPTORS}
    summary = {
        "format": "nmc-dataset/shell-descriptors-summary",
        "format_version": 1,
        "shells_file": Path(os.fspath(shells_path)).name,
        "n_shells": int(coeffs.shape[0]),
        "units": units,
        "descriptors": {
            k: {
                "mean": float(np.nanmean(v)),
                "std": float(np.nanstd(v)),
                "median": float(np.nanmedian(v)),
                "min": float(np.nanmin(v)),
                "max": float(np.nanmax(v)),
            }
            for k, v in sim.items()
        },
    }
    comparison = None
    with output_folder(out, "describe-shells", force=force, legacy=("summary.json",)) as tmp:
        dmeta = {
            "format": "nmc-dataset/shell-descriptors",
            "format_version": 1,
            "units": units,
            "voxel_size_um": vs,
            "source": Path(os.fspath(shells_path)).name,
        }
        _write_descriptor_table(tmp / "descriptors.parquet", sim, dmeta)
        if model is not None:
            mes = descriptors_um(measured, model.voxel_size_um, subdivisions, desc="measured descriptors")
            _write_descriptor_table(
                tmp / "measured_descriptors.parquet", mes, dict(dmeta, source=Path(os.fspath(against)).name)
            )
            comparison = compare_descriptors(mes, sim, tmp, title="Shells: measured vs simulated", units=units)
            summary["against"] = Path(os.fspath(against)).name
        write_json_atomic(tmp / "summary.json", summary)
    return {"summary": summary, "comparison": comparison}
