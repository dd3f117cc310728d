"""Grain descriptors per shell of normalised radius: does the architecture change with depth?

A grain of a planar section belongs to the shell of its centroid's normalised distance from the
particle centre, ``ρ = |c| / R`` (``c`` the centroid relative to the section's centre, ``R`` the
section disc's radius: for a central section, the particle radius). Shells are equal-width in
``ρ`` (default three: inner ``[0, 1/3)``, middle ``[1/3, 2/3)``, outer ``[2/3, 1]``; grains with
``ρ > 1`` — centroids outside the disc, which a non-convex rim grain can have — go to the last
one). Chords belong to their grain's shell. Per shell, the four descriptors of
:data:`DESCRIPTORS_2D` are returned, at the detection limit.

NMC811 secondary particles often have small equiaxed grains near the core and long radial ones
outside; the paper's generator sees only its neighbours in the seed's radial frame, so a trend of
the markers with depth is out of its reach. These bins make such a trend measurable on measured
sections, fitted tessellations and model sections alike.
"""

from __future__ import annotations

import numpy as np

from nmc_dataset.compare import distribution_distances
from nmc_dataset.ebsd._detection import detected
from nmc_dataset.ebsd._morphology import chord_table, grain_descriptors

#: The descriptors of every shell (those of ``descriptors.DESCRIPTORS_2D``).
DESCRIPTORS_2D = ("area_px", "elongation", "alpha_rad", "chord_px")

#: Default number of radial shells (inner, middle, outer third).
DEFAULT_RADIAL_BINS = 3


def radial_bin_edges(bins: int = DEFAULT_RADIAL_BINS) -> np.ndarray:
    """Edges ``0, 1/bins, ..., 1`` of the shells of normalised radius."""
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return np.linspace(0.0, 1.0, int(bins) + 1)


def radial_bin_descriptors(
    labels: np.ndarray,
    center_px,
    radius_px: float,
    bins: int = DEFAULT_RADIAL_BINS,
    min_area_px: int = 1,
    height_px: float = 0.0,
    confident=None,
    min_confident_px: int = 0,
) -> list[dict]:
    """Descriptors of one section's grains split by the shell of their centroid.

    For a section at height ``h`` from the particle centre (the cut-height study), the shell is
    the one of the centroid's 3D distance, ``ρ = sqrt(|c|² + h²) / R`` with ``R`` the particle
    radius (``radius_px``); ``h = 0`` is the central-section case above.

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = none.
    center_px : (2,) sequence
        ``(x, y)`` of the section's centre.
    radius_px : float
        Radius of the section disc (normalises the centroid distance).
    bins : int
        Number of equal-width shells of ``ρ`` in ``[0, 1]``.
    min_area_px : int
        Detection limit: smaller grains (and their chords) are left out.
    height_px : float, default 0.0
        Distance of the section's plane from the particle centre (pixels).
    confident : (ny, nx) bool array, optional
        Confident pixels of the section (None: all).
    min_confident_px : int, default 0
        Grains with fewer confident pixels are left out too (0: no such criterion;
        :func:`nmc_dataset.ebsd._detection.detected`).

    Returns
    -------
    list of dict
        One per shell, inner first: ``{"area_px", "elongation", "alpha_rad", "chord_px"}`` arrays.
    """
    if not radius_px > 0:
        raise ValueError(f"radius_px must be > 0, got {radius_px}")
    labels = np.asarray(labels)
    d = grain_descriptors(labels, center_px)
    rho = np.sqrt(np.hypot(d["centroid_x_px"], d["centroid_y_px"]) ** 2 + float(height_px) ** 2) / float(radius_px)
    edges = radial_bin_edges(bins)
    shell = np.clip(np.searchsorted(edges, rho, side="right") - 1, 0, len(edges) - 2)
    area = np.asarray(d["area_px"], float)
    keep = area >= min_area_px
    if confident is not None and int(min_confident_px) > 0:
        keep &= np.isin(np.asarray(d["label"]), detected(labels, confident, min_confident_px))
    ch = chord_table(labels)
    shell_of = dict(zip(np.asarray(d["label"]).tolist(), np.where(keep, shell, -1).tolist()))
    chord_shell = np.array([shell_of.get(int(v), -1) for v in ch["label"]], dtype=np.int64)
    chord_len = np.asarray(ch["length_px"], float)
    out = []
    for b in range(len(edges) - 1):
        s = keep & (shell == b)
        out.append(
            {
                "area_px": area[s],
                "elongation": np.asarray(d["elongation"], float)[s],
                "alpha_rad": np.asarray(d["alpha_rad"], float)[s],
                "chord_px": chord_len[chord_shell == b],
            }
        )
    return out


def pooled_bins(per_section) -> list[dict]:
    """Concatenate :func:`radial_bin_descriptors` results of several sections, shell by shell."""
    per_section = list(per_section)
    if not per_section:
        return []
    nb = len(per_section[0])
    return [{k: np.concatenate([sec[b][k] for sec in per_section]) for k in DESCRIPTORS_2D} for b in range(nb)]


def compare_radial_bins(measured: list[dict], simulated: list[dict]) -> list[dict]:
    """Per shell: the summary of both sides and W1 / KS of every descriptor (``None`` where a side is empty).

    Parameters
    ----------
    measured : list of dict
        Measured descriptors per shell, inner first, as from :func:`pooled_bins` or
        :func:`radial_bin_descriptors` (arrays ``area_px``, ``elongation``, ``alpha_rad``, ``chord_px``;
        pixels and radians).
    simulated : list of dict
        The model's descriptors per shell, same form and the same number of shells.

    Returns
    -------
    list of dict
        One per shell: ``rho_low``, ``rho_high``, ``measured`` and ``model`` (the rows of
        :func:`radial_bin_summary`) and, per descriptor of :data:`DESCRIPTORS_2D`, the
        :func:`~nmc_dataset.compare.distribution_distances` of the two samples or ``None``.
    """

    rows = []
    for m, s, sm, ss in zip(measured, simulated, radial_bin_summary(measured), radial_bin_summary(simulated)):
        row = {"rho_low": sm["rho_low"], "rho_high": sm["rho_high"], "measured": sm, "model": ss}
        for k in DESCRIPTORS_2D:
            a, b = np.asarray(m[k], float), np.asarray(s[k], float)
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            row[k] = distribution_distances(a, b) if a.size and b.size else None
        rows.append(row)
    return rows


def radial_bin_summary(bins_desc: list[dict]) -> list[dict]:
    """Per shell: grain count and the median of every descriptor (None where a shell is empty)."""
    edges = radial_bin_edges(len(bins_desc))
    rows = []
    for b, d in enumerate(bins_desc):
        row = {"rho_low": float(edges[b]), "rho_high": float(edges[b + 1]), "n_grains": int(len(d["area_px"]))}
        for k in DESCRIPTORS_2D:
            v = np.asarray(d[k], float)
            v = v[np.isfinite(v)]
            row[f"median_{k}"] = float(np.median(v)) if v.size else None
        rows.append(row)
    return rows


__all__ = [
    "DESCRIPTORS_2D",
    "DEFAULT_RADIAL_BINS",
    "compare_radial_bins",
    "radial_bin_edges",
    "radial_bin_descriptors",
    "pooled_bins",
    "radial_bin_summary",
]
