"""Grain statistics of generated architectures: 3D (label volumes) and 2D (planar sections).

3D, per grain of a label volume ``[z, y, x]`` (for the closed-loop validation):

- ``volume_px``: voxel count;
- ``centroid_*_px``: centre of mass in model coordinates (particle centre at the origin);
- ``eig1..3_px2``: eigenvalues of the second-moment (covariance) matrix, ``eig1 >= eig2 >= eig3``
  (each voxel counted as a unit cube: ``+1/12`` per axis);
- ``elongation``: ``1 - sqrt(eig3 / eig1)`` (the 3D analogue of the 2D η; 0 for a ball);
- ``aspect``: ``sqrt(eig1 / eig3)``;
- ``radial_alignment``: ``|cos|`` of the angle between the major axis and the direction from the
  particle centre to the centroid (1 = pointing at the centre; a random direction averages 0.5).

2D: :func:`section_descriptors` reuses :mod:`nmc_dataset.ebsd._morphology` (area, η, α, chord
lengths) on labels of planar sections; :func:`model_sections` draws central (or off-centre)
sections of a :class:`~nmc_dataset.calibration._model.GrainModel` or of any 3D GBPD sampler.
"""

from __future__ import annotations

import numpy as np

from nmc_dataset._util import atomic_path, write_json_atomic, write_text_atomic
from nmc_dataset.calibration._fit2d import read_tessellations
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.calibration._radial_bins import (
    compare_radial_bins,
    pooled_bins,
    radial_bin_descriptors,
    radial_bin_edges,
    radial_bin_summary,
)
from nmc_dataset.compare import compare_descriptors, distribution_distances
from nmc_dataset.ebsd._detection import (
    DEFAULT_MIN_CONFIDENT_PX,
    DetectionLimit,
    calibrate_rates,
    check_min_confident_px,
    complete_as_imported,
    detected,
    low_ci_rates,
)
from nmc_dataset.ebsd._morphology import alpha_kde, centrality_score, chord_table, grain_descriptors
from nmc_dataset.errors import InputError
from nmc_dataset.outputs import check_out_name, claim_folder, output_folder
from nmc_dataset.tessellation._labels import hard_labels, hard_labels_grid

#: the 2D descriptors compared by describe-grains and the closed loop, with units
DESCRIPTORS_2D = {"area_px": "px²", "elongation": "", "alpha_rad": "rad", "chord_px": "px"}


# --------------------------------------------------------------------------- 3D
def grain_stats_3d(
    labels: np.ndarray,
    origin_px=(0.0, 0.0, 0.0),
    spacing: float = 1.0,
    exclude_border: bool = True,
    min_voxels: int = 4,
) -> dict:
    """Per-grain 3D statistics of a label volume (see the module docstring).

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        Grain labels; values <= 0 are background.
    origin_px : (3,) sequence
        Model coordinates ``(x, y, z)`` of voxel ``[0, 0, 0]`` (particle centre at the origin).
    spacing : float
        Voxel edge in model pixels.
    exclude_border : bool
        Drop grains touching the volume's faces (they are cut by the window).
    min_voxels : int
        Drop grains smaller than this (their axes are noise).

    Returns
    -------
    dict of 1-D arrays
        ``label, volume_px, centroid_x_px, centroid_y_px, centroid_z_px, eig1_px2, eig2_px2,
        eig3_px2, elongation, aspect, radial_alignment``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3D [z, y, x], got shape {lab.shape}")
    flat = lab.ravel().astype(np.int64)
    inside = flat > 0
    ids, inv = np.unique(flat[inside], return_inverse=True)
    if ids.size == 0:
        return {k: np.zeros(0) for k in _KEYS3}
    zz, yy, xx = np.unravel_index(np.flatnonzero(inside), lab.shape)
    ox, oy, oz = (float(v) for v in origin_px)
    x = ox + spacing * xx
    y = oy + spacing * yy
    z = oz + spacing * zz
    n = len(ids)
    vol = np.bincount(inv, minlength=n).astype(np.float64)
    m = [np.bincount(inv, c, n) / vol for c in (x, y, z)]
    d = [c - mc[inv] for c, mc in zip((x, y, z), m)]
    cov = np.empty((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[:, i, j] = cov[:, j, i] = np.bincount(inv, d[i] * d[j], n) / vol
    cov[:, [0, 1, 2], [0, 1, 2]] += spacing**2 / 12.0
    w, v = np.linalg.eigh(cov)  # ascending
    w = w[:, ::-1]
    major = v[:, :, -1]
    cen = np.stack(m, axis=1)
    cn = np.linalg.norm(cen, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        align = np.abs(np.sum(major * cen, axis=1)) / cn
        align = np.where(cn > 1e-9, align, np.nan)
        elong = 1.0 - np.sqrt(np.maximum(w[:, 2], 0) / w[:, 0])
        aspect = np.sqrt(w[:, 0] / np.maximum(w[:, 2], 1e-12))
    keep = vol * spacing**3 >= min_voxels * spacing**3
    if exclude_border:
        border = np.zeros(n, bool)
        for axis in range(3):
            for face in (0, lab.shape[axis] - 1):
                border[
                    np.searchsorted(ids, np.unique(np.take(lab, face, axis=axis)[np.take(lab, face, axis=axis) > 0]))
                ] = True
        keep &= ~border
    out = {
        "label": ids,
        "volume_px": vol * spacing**3,
        "centroid_x_px": cen[:, 0],
        "centroid_y_px": cen[:, 1],
        "centroid_z_px": cen[:, 2],
        "eig1_px2": w[:, 0],
        "eig2_px2": w[:, 1],
        "eig3_px2": w[:, 2],
        "elongation": elong,
        "aspect": aspect,
        "radial_alignment": align,
    }
    return {k: a[keep] for k, a in out.items()}


def shell_stats_3d(stats: dict, radius_px: float, bins: int = 3) -> list[dict]:
    """The 3D statistics of :func:`grain_stats_3d` per shell of the centroid's normalised radius.

    Parameters
    ----------
    stats : dict
        Output of :func:`grain_stats_3d` (pooled over volumes if wished).
    radius_px : float
        Particle radius (pixels): a grain belongs to the shell of ``|centroid| / radius_px``
        (equal-width shells of ``[0, 1]``); grains centred outside the particle (``> 1``) are left out.
    bins : int, default 3
        Number of shells.

    Returns
    -------
    list of dict
        One per shell, inner first: ``rho_low``, ``rho_high``, ``n_grains``, ``median_volume_px``,
        ``mean_radial_alignment``, ``mean_elongation`` (None for an empty shell) and the grains'
        ``volume_px``, ``radial_alignment``, ``elongation`` arrays.
    """
    cen = np.stack([stats["centroid_x_px"], stats["centroid_y_px"], stats["centroid_z_px"]], axis=1)
    rho = np.linalg.norm(cen, axis=1) / float(radius_px)
    edges = radial_bin_edges(bins)
    shell = np.clip(np.searchsorted(edges, rho, side="right") - 1, 0, len(edges) - 2)
    shell[~(rho <= 1.0)] = -1
    rows = []
    for b in range(len(edges) - 1):
        s = shell == b
        v, a, e = (np.asarray(stats[k], float)[s] for k in ("volume_px", "radial_alignment", "elongation"))
        rows.append(
            {
                "rho_low": float(edges[b]),
                "rho_high": float(edges[b + 1]),
                "n_grains": int(s.sum()),
                "median_volume_px": float(np.median(v)) if v.size else None,
                "mean_radial_alignment": float(np.nanmean(a)) if np.isfinite(a).any() else None,
                "mean_elongation": float(np.nanmean(e)) if np.isfinite(e).any() else None,
                "volume_px": v,
                "radial_alignment": a,
                "elongation": e,
            }
        )
    return rows


_KEYS3 = (
    "label",
    "volume_px",
    "centroid_x_px",
    "centroid_y_px",
    "centroid_z_px",
    "eig1_px2",
    "eig2_px2",
    "eig3_px2",
    "elongation",
    "aspect",
    "radial_alignment",
)


# --------------------------------------------------------------------------- 2D
def section_descriptors(
    labels: np.ndarray, center_px, min_area_px: int = 1, confident=None, min_confident_px: int = 0
) -> dict:
    """Grain descriptors (area, elongation, orientation, chords) of one section's label image (0 = none).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned.
    center_px : (2,) sequence
        ``(x, y)`` of the particle section's centre, in pixels.
    min_area_px : int
        Grains smaller than this (and their chords) are left out: the detection limit. Compare
        model sections with measured ones at the ``min_grain_px`` their EBSD import used (grains
        below it were dropped from the measured sections).
    confident : (ny, nx) bool array, optional
        Confident pixels of the section (None: all).
    min_confident_px : int
        Grains with fewer confident pixels are left out too (0: no such criterion;
        :func:`nmc_dataset.ebsd._detection.detected`).

    Returns
    -------
    dict
        ``{"area_px", "elongation", "alpha_rad", "chord_px"}`` (per grain, chords per chord),
        computed by :mod:`nmc_dataset.ebsd._morphology`.
    """

    d = grain_descriptors(np.asarray(labels), center_px)
    ch = chord_table(labels)
    area = np.asarray(d["area_px"], float)
    keep = area >= min_area_px
    if confident is not None and int(min_confident_px) > 0:
        keep &= np.isin(np.asarray(d["label"]), detected(labels, confident, min_confident_px))
    chord_keep = np.isin(ch["label"], np.asarray(d["label"])[keep])
    return {
        "area_px": area[keep],
        "elongation": np.asarray(d["elongation"], float)[keep],
        "alpha_rad": np.asarray(d["alpha_rad"], float)[keep],
        "chord_px": np.asarray(ch["length_px"], float)[chord_keep],
    }


def pooled(dicts) -> dict:
    """Concatenate per-section descriptor dicts."""
    dicts = list(dicts)
    return {k: np.concatenate([d[k] for d in dicts]) if dicts else np.zeros(0) for k in DESCRIPTORS_2D}


def fitted_descriptors(fits, min_area_px: int = 5, min_confident_px: int = 0) -> dict:
    """Pooled descriptors of fitted 2D tessellations (``fit2d.SectionFit``), rendered on their
    section grids, at the detection limit: grains of ``min_area_px`` pixels and more, with at least
    ``min_confident_px`` confident pixels (the sections' own, ``SectionFit.confident``; a section
    without them counts every pixel). The measured side of every comparison."""
    return pooled(
        section_descriptors(f.label_image(), f.center_px, min_area_px, f.confident, min_confident_px) for f in fits
    )


def measured_low_ci_rates(fits) -> tuple:
    """Loss rates per pixel class measured on fitted tessellations (their label images and the
    sections' confident pixels; :func:`nmc_dataset.ebsd._detection.low_ci_rates`)."""
    return low_ci_rates((f.label_image(), f.mask, f.confident) for f in fits)


def detection_limit(
    measured_rates,
    sections,
    rng,
    min_confident_px: int = DEFAULT_MIN_CONFIDENT_PX,
    iterations: int = 4,
    min_grain_px: int = 5,
) -> DetectionLimit:
    """The measured sections' instrument loss, calibrated on the other side's sections.

    Parameters
    ----------
    measured_rates : (3,) sequence of float
        :func:`measured_low_ci_rates` of the measured sections.
    sections : sequence of (labels, center_px)
        The other side's sections (as :func:`model_sections` returns them).
    rng : numpy.random.Generator
        Source of the simulated losses.
    min_confident_px : int
        The criterion's ``k`` (0: off).
    iterations : int
        Steps of :func:`nmc_dataset.ebsd._detection.calibrate_rates`.
    min_grain_px : int
        The import's ``--min-grain-px``.

    Returns
    -------
    DetectionLimit
        Inactive (rates 0, nothing drawn) when the measured sections lost no pixel or ``k = 0``.
    """
    k = check_min_confident_px(min_confident_px)
    if k == 0 or not any(r > 0 for r in measured_rates):
        return DetectionLimit((0.0, 0.0, 0.0), k)
    rates = calibrate_rates(
        measured_rates, [(lab, np.asarray(lab) > 0) for lab, _c in sections], rng, iterations, min_grain_px
    )
    return DetectionLimit(rates, k)


def limited_section(labels, limit: DetectionLimit, rng, min_area_px: int = 5):
    """A true or modelled section as the instrument and ``import-ebsd --fill shape`` would give it:
    the loss drawn and the map completed (:func:`nmc_dataset.ebsd._detection.complete_as_imported`,
    ``min_area_px`` as the import's ``--min-grain-px``).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels (0 outside the particle).
    limit : DetectionLimit
        The measured sections' loss and criterion.
    rng : numpy.random.Generator
        Source of the simulated loss (nothing is drawn when the limit is not active).
    min_area_px : int
        Detection limit in pixels.

    Returns
    -------
    (ndarray, ndarray or None)
        The completed labels and their confident pixels; without an active limit the labels
        unchanged and ``None``.
    """
    lab = np.asarray(labels)
    if not limit.active:
        return lab, None
    mask = lab > 0
    conf = limit.confident(lab, mask, rng)
    return complete_as_imported(lab, mask, conf, min_area_px), conf


def limited_section_descriptors(labels, center_px, limit: DetectionLimit, rng, min_area_px: int = 5) -> dict:
    """Descriptors of a true or modelled section at the detection limit: :func:`limited_section`,
    then the criterion applied. Without an active limit: :func:`section_descriptors`.

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels (0 outside the particle).
    center_px : (2,) sequence
        ``(x, y)`` of the section centre.
    limit : DetectionLimit
        The measured sections' loss and criterion.
    rng : numpy.random.Generator
        Source of the simulated loss.
    min_area_px : int
        Detection limit in pixels.

    Returns
    -------
    dict
        As :func:`section_descriptors`.
    """
    done, conf = limited_section(labels, limit, rng, min_area_px)
    return section_descriptors(done, center_px, min_area_px, conf, limit.criterion)


def section_score(measured: dict, simulated: dict, reduce: str = "mean") -> float:
    """How far simulated section descriptors are from measured ones, in one number.

    ``W1(measured, simulated) / std(measured)`` per descriptor of :data:`DESCRIPTORS_2D` (each
    Wasserstein-1 distance in units of the measured spread, so the four weigh alike), reduced
    by ``"mean"`` or ``"max"`` (the worst descriptor); ``inf`` when a side has no grain.
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")

    terms = []
    for k in DESCRIPTORS_2D:
        a = np.asarray(measured[k], dtype=np.float64)
        a = a[np.isfinite(a)]
        w = distribution_distances(a, simulated[k])["wasserstein1"]
        if w is None or a.size < 2 or not np.std(a) > 0:
            return float("inf")
        terms.append(w / float(np.std(a)))
    return float(np.mean(terms) if reduce == "mean" else np.max(terms))


def gbpd_section_labels(g, radius_px: float, height_px: float = 0.0, size_px: int | None = None):
    """Labels (cell + 1, 0 outside) of the plane ``z = height_px`` of a 3D GBPD inside a disc.

    The disc has radius ``sqrt(radius_px^2 - height_px^2)`` (a section of the ball of radius
    ``radius_px``); the image is centred on the plane's centre. Returns ``(labels, center_px)``.
    """

    if size_px is None:
        size_px = 2 * int(np.ceil(radius_px)) + 3
    c = (size_px - 1) / 2.0
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    rr = max(radius_px**2 - height_px**2, 0.0)
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= rr
    lab = np.zeros((size_px, size_px), np.int64)
    if mask.any():
        pts = np.column_stack([xx[mask] - c, yy[mask] - c, np.full(int(mask.sum()), float(height_px))])
        lab[mask] = hard_labels(g, pts) + 1
    return lab, np.array([c, c])


def model_sections(sampler, rng, n: int, radius_px: float, height_px: float = 0.0):
    """``n`` planar sections at ``z = height_px`` of independent draws of a 3D grain model.

    Parameters
    ----------
    sampler : GrainModel or callable
        ``sampler.sample(rng, lo, hi) -> GBPD`` or ``sampler(rng, lo, hi)``.
    rng : numpy.random.Generator
    n : int
    radius_px : float
        Particle (ball) radius; the section is its intersection with the plane.
    height_px : float

    Returns
    -------
    list of (labels, center_px)

    A depth-aware :class:`GrainModel` draws its grains for a particle of radius ``radius_px``.
    """
    r = float(radius_px)
    draw = _drawer(sampler, r)
    lo = np.array([-r - 1, -r - 1, height_px - 1.0])
    hi = np.array([r + 1, r + 1, height_px + 1.0])
    out = []
    for _ in range(n):
        g = draw(rng, lo, hi)
        out.append(gbpd_section_labels(g, r, height_px))
    return out


def _drawer(sampler, radius_px=None):
    """``(rng, lo, hi) -> GBPD`` of a sampler; a depth-aware model draws for a particle of ``radius_px``."""
    if getattr(sampler, "depth_aware", False) and radius_px is not None:
        return lambda rng, lo, hi: sampler.sample(rng, lo, hi, radius=float(radius_px))
    return sampler.sample if hasattr(sampler, "sample") else sampler


def volume_labels(sampler, rng, size_px: int, radius_px: float | None = None):
    """Hard labels (cell + 1) of a cube of ``size_px`` voxels centred on the particle centre.

    ``radius_px``: the particle radius a depth-aware model draws for (default: its reference
    radius). Returns ``(labels, origin_px)``.
    """

    half = (size_px - 1) / 2.0
    draw = _drawer(sampler, radius_px)
    g = draw(rng, np.full(3, -half - 0.5), np.full(3, half + 0.5))
    origin = np.full(3, -half)
    return hard_labels_grid(g, (size_px,) * 3, origin=origin) + 1, origin


def compare_at_limit(
    fits,
    sims,
    rng,
    min_area_px: int = 5,
    min_confident_px: int = DEFAULT_MIN_CONFIDENT_PX,
    with_sections: bool = False,
):
    """Both sides of a comparison of fitted sections with other sections, at the detection limit.

    Parameters
    ----------
    fits : list of SectionFit
        The measured side (their confident pixels, when recorded, decide the instrument's loss).
    sims : list of (labels, center_px)
        The other side (a model's or the truth's sections).
    rng : numpy.random.Generator
        Source of the simulated loss (nothing is drawn without one).
    min_area_px : int
        Grains smaller than this are left out on both sides.
    min_confident_px : int
        The instrument limit's criterion (0: off).
    with_sections : bool, default False
        Also return the other side's sections at the limit.

    Returns
    -------
    (dict, dict, DetectionLimit) or (dict, dict, DetectionLimit, list)
        Pooled descriptors of the measured and of the other side, the limit applied and, with
        ``with_sections``, the other side's sections as ``(labels, confident or None, center_px)``
        (:func:`limited_section`).
    """
    k = check_min_confident_px(min_confident_px)
    measured = fitted_descriptors(fits, min_area_px, k)
    limit = detection_limit(measured_low_ci_rates(fits), sims, rng, k, min_grain_px=min_area_px)
    limited = [(*limited_section(lab, limit, rng, min_area_px), c) for lab, c in sims]
    simulated = pooled(section_descriptors(lab, c, min_area_px, conf, limit.criterion) for lab, conf, c in limited)
    if with_sections:
        return measured, simulated, limit, limited
    return measured, simulated, limit


# --------------------------------------------------------------------------- describe-grains
def describe_grains(
    model_dir,
    tessellations,
    out,
    *,
    samples: int = 8,
    radius_px: float | None = None,
    seed: int = 0,
    heights=(0.0, 0.25, 0.5, 0.75),
    min_area_px: int = 5,
    force: bool = False,
    min_confident_px: int = DEFAULT_MIN_CONFIDENT_PX,
) -> dict:
    """Compare central sections of a model with fitted tessellations; write a report folder.

    Both sides are described at the detection limit ``min_area_px`` (import-ebsd's
    ``min_grain_px``, default 5): model grains smaller than that are left out, as the measured
    ones were at import.

    When the measured sections carry confident pixels (an instrument that lost some), the
    instrument's limit is applied to both sides (:mod:`nmc_dataset.ebsd._detection`): the loss per
    pixel class measured on the fitted sections is calibrated on the model's sections, drawn on
    them, they are completed as ``import-ebsd --fill shape`` would, and grains count on both sides
    when they have at least ``min_confident_px`` confident pixels; the radial shells and the
    cut-height study are described at the same limit. ``detection_limit.json`` records the rates
    and the criterion (written only then; without lost pixels nothing changes but the cut-height
    study, which leaves out grains under ``min_area_px`` as the comparison does).

    Writes ``comparison.md``, ``comparison.json`` and histograms (via
    :func:`nmc_dataset.compare.compare_descriptors`), ``cut_height.png`` (α distribution of model
    sections at ``heights`` × radius from the centre), ``cut_height.json`` (with descriptors per
    shell of radius at every height), ``radial_bins.json`` and ``radial_bins.md`` (both sides per
    shell of normalised radius, :mod:`nmc_dataset.calibration._radial_bins`). A depth-aware model
    draws its sections for the particle radius ``radius_px``.

    Parameters
    ----------
    model_dir : path-like
        Grain model folder (``model.json``).
    tessellations : path-like
        Folder written by ``fit-sections``.
    out : path-like
        Report folder.
    samples : int, default 8
        Central model sections drawn (half as many per cut height, at least 2).
    radius_px : float, optional
        Particle radius of the model sections (default: the mean equal-area radius of the fitted sections).
    seed : int, default 0
        Seed of the model draws.
    heights : sequence of float, default (0.0, 0.25, 0.5, 0.75)
        Cut heights of the study, relative to the radius.
    min_area_px : int, default 5
        Detection limit (pixels) applied to both sides.
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).
    min_confident_px : int, default DEFAULT_MIN_CONFIDENT_PX
        The instrument limit's criterion (0: the instrument's loss is not applied).

    Returns
    -------
    dict
        The comparison (``{descriptor: {wasserstein1, ks, n_measured, n_simulated}}``).
    """

    claim_folder(check_out_name(out), "describe-grains", force=force, legacy=("cut_height.json",))
    model = GrainModel.load(model_dir)
    fits = read_tessellations(tessellations)
    if not fits:
        raise InputError("no tessellation to compare with", tessellations)
    if samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    if min_area_px < 1:
        raise InputError(f"--min-area-px must be >= 1, got {min_area_px}")
    k = check_min_confident_px(min_confident_px)
    r = float(radius_px) if radius_px else float(np.mean([f.radius_px for f in fits]))
    rng = np.random.default_rng(seed)
    sims = model_sections(model, rng, samples, r)
    # the limit draws from its own stream: the model's sections are the same with or without it
    limit_rng = np.random.default_rng([seed, 0xDE7])
    measured, simulated, limit, limited = compare_at_limit(fits, sims, limit_rng, min_area_px, k, with_sections=True)
    kk = limit.criterion
    study = cut_height_study(model, rng, r, heights, max(2, samples // 2), min_area_px, limit, limit_rng)
    shells = compare_radial_bins(
        pooled_bins(
            radial_bin_descriptors(
                f.label_image(),
                f.center_px,
                f.radius_px,
                min_area_px=min_area_px,
                confident=f.confident,
                min_confident_px=kk,
            )
            for f in fits
        ),
        pooled_bins(
            radial_bin_descriptors(lab, c, r, min_area_px=min_area_px, confident=conf, min_confident_px=kk)
            for lab, conf, c in limited
        ),
    )
    with output_folder(out, "describe-grains", force=force, legacy=("cut_height.json",)) as tmp:
        result = compare_descriptors(
            measured,
            simulated,
            tmp,
            title="Grain sections: fitted tessellations vs model",
            units=DESCRIPTORS_2D,
            labels=("measured", "model"),
        )
        write_json_atomic(tmp / "cut_height.json", study)
        if limit.active:
            write_json_atomic(
                tmp / "detection_limit.json",
                {
                    **limit.to_dict(),
                    "measured_low_ci_rates": dict(
                        zip(("junction", "boundary", "interior"), measured_low_ci_rates(fits))
                    ),
                    "min_area_px": int(min_area_px),
                    "applies_to": "comparison.json, the histograms, radial_bins.json and the cut-height study",
                },
            )
        write_json_atomic(
            tmp / "radial_bins.json",
            {
                "bins": "equal-width shells of the grain centroid's distance "
                "from the section centre / the section radius",
                "model_depth_aware": model.depth_aware,
                "shells": shells,
            },
        )
        write_text_atomic(tmp / "radial_bins.md", radial_bins_markdown(shells))
        plot_cut_height(study, tmp / "cut_height.png")
    return result


def radial_bins_markdown(shells: list[dict]) -> str:
    """A Markdown table of :func:`~nmc_dataset.calibration._radial_bins.compare_radial_bins` rows:
    per shell, the grain counts, the medians of both sides and the W1 of every descriptor.

    Parameters
    ----------
    shells : list of dict
        The rows (inner shell first).

    Returns
    -------
    str
    """
    lines = [
        "# Grain descriptors per shell of normalised radius (measured vs model)",
        "",
        "| shell ρ | grains measured / model | "
        + " | ".join(f"median {k} measured / model | W1 {k}" for k in DESCRIPTORS_2D)
        + " |",
        "|---|---|" + "---|---|" * len(DESCRIPTORS_2D),
    ]

    def num(x):
        return "–" if x is None else f"{x:.4g}"

    for row in shells:
        m, s = row["measured"], row["model"]
        cells = [f"{row['rho_low']:.2f}–{row['rho_high']:.2f}", f"{m['n_grains']} / {s['n_grains']}"]
        for k in DESCRIPTORS_2D:
            cells.append(f"{num(m[f'median_{k}'])} / {num(s[f'median_{k}'])}")
            cells.append(num(None if row[k] is None else row[k]["wasserstein1"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cut_height_study(
    sampler, rng, radius_px: float, heights, n: int, min_area_px: int = 1, limit=None, limit_rng=None
) -> dict:
    """α samples and their KDE at section heights ``h * radius_px`` (the cut-height study).

    Parameters
    ----------
    sampler : GrainModel or callable
        ``sampler.sample(rng, lo, hi) -> GBPD`` or ``sampler(rng, lo, hi)``.
    rng : numpy.random.Generator
        Source of the draws.
    radius_px : float
        Particle radius in pixels.
    heights : sequence of float
        Section heights relative to ``radius_px`` (0 = through the centre).
    n : int
        Sections per height.
    min_area_px : int, default 1
        Grains smaller than this are left out (the import's ``--min-grain-px``).
    limit : DetectionLimit, optional
        An instrument's loss, drawn on every section (:func:`limited_section`) before it is
        described, as the instrument would see a section at that height.
    limit_rng : numpy.random.Generator, optional
        Source of that loss (its own stream: the sections drawn are the same with or without it).

    Returns
    -------
    dict
        ``radius_px``, ``min_area_px``, ``detection_limit`` (the limit's record or None) and, per
        height, ``relative_height``, ``height_px``, ``n_grains``, ``centrality_score``,
        ``alpha_grid``, ``alpha_density`` (the KDE of α) and ``radial_bins``: count and median
        descriptors per shell of the grains' 3D normalised radius ``sqrt(|c|² + h²) / R``
        (:func:`~nmc_dataset.calibration._radial_bins.radial_bin_summary`; a section at height
        ``h`` only reaches the shells beyond ``h / R``).
    """

    active = limit is not None and limit.active
    if active and limit_rng is None:
        raise ValueError("cut_height_study: a detection limit needs limit_rng")
    k = limit.criterion if active else 0
    res = {
        "radius_px": float(radius_px),
        "min_area_px": int(min_area_px),
        "detection_limit": limit.to_dict() if active else None,
        "heights": [],
    }
    for h in heights:
        secs = [
            (*(limited_section(lab, limit, limit_rng, min_area_px) if active else (lab, None)), c)
            for lab, c in model_sections(sampler, rng, n, radius_px, h * radius_px)
        ]
        d = pooled(section_descriptors(lab, c, min_area_px, conf, k) for lab, conf, c in secs)
        shells = radial_bin_summary(
            pooled_bins(
                radial_bin_descriptors(
                    lab,
                    c,
                    radius_px,
                    min_area_px=min_area_px,
                    height_px=h * radius_px,
                    confident=conf,
                    min_confident_px=k,
                )
                for lab, conf, c in secs
            )
        )
        grid, dens = alpha_kde(d["alpha_rad"])
        res["heights"].append(
            {
                "relative_height": float(h),
                "height_px": float(h * radius_px),
                "n_grains": int(np.isfinite(d["alpha_rad"]).sum()),
                "centrality_score": centrality_score(d["alpha_rad"], d["area_px"], d["elongation"]),
                "alpha_grid": np.asarray(grid).tolist(),
                "alpha_density": np.asarray(dens).tolist(),
                "radial_bins": shells,
            }
        )
    return res


def plot_cut_height(study: dict, path) -> None:
    """α densities per relative cut height."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for h in study["heights"]:
        ax.plot(
            h["alpha_grid"],
            h["alpha_density"],
            label=f"z = {h['relative_height']:.2f} R (score {h['centrality_score']:.2f})",
        )
    ax.set_xlabel("α (rad)")
    ax.set_ylabel("density")
    ax.set_xlim(0, np.pi / 2)
    ax.set_title("Cut-height study: α of model sections")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
