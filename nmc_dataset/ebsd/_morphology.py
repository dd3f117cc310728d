"""2D morphology of grain sections (docs/method.md#section-morphology): per-grain descriptors, chord
lengths, the α density and the centrality criterion that separates central from off-centre planar sections.

Everything here is plain: a label image (``labels[y, x]``, 0 = unassigned) and the particle
section's centre ``center_px = (x, y)`` in, numpy arrays or a pyarrow table out. The same
functions describe measured sections (``import-ebsd``), fitted tessellations and generated
slices, so the calibration and the dataset card compare like with like.

Definitions
-----------
* Pixels are unit squares: the second-moment (covariance) matrix of a grain is the covariance of
  its pixel centres plus ``I/12`` (each pixel's own moment). A grain of one pixel is then round
  (``e1 = e2 = 1/12``, ``η = 0``) rather than undefined, and a ``1 × n`` row of pixels gets the
  elongation of a ``1 × n`` rectangle, ``η = 1 - 1/n``.
* ``e1 ≥ e2`` are the eigenvalues (px²), ``v1`` (unit, sign fixed so that ``v1·c ≥ 0``, or
  ``v1_x ≥ 0`` when ``c = 0``) the principal direction of ``e1``.
* Elongation ``η = 1 - sqrt(e2 / e1)`` ∈ [0, 1).
* Orientation ``α = arccos(|<v1, c>| / (|v1| |c|))`` ∈ [0, π/2] with ``c`` the grain centroid
  relative to the section centre. ``α`` is NaN when ``c = 0`` (a grain centred exactly on the
  section centre has no radial direction).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

HALF_PI = 0.5 * np.pi

#: Default threshold of :func:`centrality_score`: sections scoring at least this are central.
#: Chosen on synthetic slices of :func:`nmc_dataset.synthetic._ebsd.radial_teacher_gbpd`
#: (see :data:`CENTRALITY_CALIBRATION`).
CENTRALITY_THRESHOLD = 0.65

#: How :data:`CENTRALITY_THRESHOLD` was picked (written into ``selection.json``).
CENTRALITY_CALIBRATION = (
    "score = area*elongation-weighted mean of cos(2 alpha) over the grains; threshold 0.65 = midpoint "
    "between the lowest central (|h| <= 0.1 R: 0.79) and the highest off-centre (|h| >= 0.5 R: 0.54) "
    "score of slices through 12 radial_teacher_gbpd particles (R = 50 and 100 px, random plane normals)"
)


# --------------------------------------------------------------------------- per-grain moments
def _moments(labels: np.ndarray):
    """Label ids (sorted, > 0), areas, centroid (x, y) in pixel index units, covariance entries."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2D array [y, x], got shape {labels.shape}")
    flat = labels.ravel()
    ny, nx = labels.shape
    sel = np.flatnonzero(flat > 0)
    if sel.size == 0:
        empty = np.zeros(0)
        return np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, empty, empty, empty
    ids, inv = np.unique(flat[sel], return_inverse=True)
    y = (sel // nx).astype(np.float64)
    x = (sel % nx).astype(np.float64)
    area = np.bincount(inv, minlength=len(ids)).astype(np.int64)
    a = area.astype(np.float64)
    mx = np.bincount(inv, weights=x, minlength=len(ids)) / a
    my = np.bincount(inv, weights=y, minlength=len(ids)) / a
    dx = x - mx[inv]
    dy = y - my[inv]
    cxx = np.bincount(inv, weights=dx * dx, minlength=len(ids)) / a + 1.0 / 12.0
    cyy = np.bincount(inv, weights=dy * dy, minlength=len(ids)) / a + 1.0 / 12.0
    cxy = np.bincount(inv, weights=dx * dy, minlength=len(ids)) / a
    return ids.astype(np.int64), area, mx, my, cxx, cyy, cxy


def _eig2(cxx, cyy, cxy):
    """Eigen-decomposition of symmetric 2×2 matrices [[cxx, cxy], [cxy, cyy]] (vectorised)."""
    tr = 0.5 * (cxx + cyy)
    d = np.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    e1 = tr + d
    e2 = np.maximum(tr - d, 0.0)
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)  # angle of the major axis
    v1 = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return e1, e2, v1


def grain_descriptors(labels: np.ndarray, center_px) -> dict:
    """Per-grain 2D descriptors as a dict of arrays (one entry per label > 0, sorted by label).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned.
    center_px : (2,) sequence
        ``(x, y)`` of the particle section's centre in pixels.

    Returns
    -------
    dict
        ``label, area_px, centroid_x_px, centroid_y_px`` (relative to the centre),
        ``axis1_x, axis1_y`` (unit major axis), ``axis2_x, axis2_y``, ``eig1_px2, eig2_px2``,
        ``elongation`` (η), ``alpha_rad`` (α).
    """
    cx, cy = (float(v) for v in np.asarray(center_px, dtype=np.float64).reshape(2))
    ids, area, mx, my, cxx, cyy, cxy = _moments(labels)
    e1, e2, v1 = _eig2(cxx, cyy, cxy)
    c = np.stack([mx - cx, my - cy], axis=-1)
    cn = np.linalg.norm(c, axis=1)
    dot = np.sum(v1 * c, axis=1)
    # fix the sign of v1: towards +c, or +x when the centroid is the centre
    flip = np.where(cn > 0, dot < 0, v1[:, 0] < 0)
    v1 = np.where(flip[:, None], -v1, v1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosang = np.clip(np.abs(dot) / cn, 0.0, 1.0)
        alpha = np.where(cn > 1e-12, np.arccos(cosang), np.nan)
        elong = np.where(e1 > 0, 1.0 - np.sqrt(e2 / np.where(e1 > 0, e1, 1.0)), 0.0)
    v2 = np.stack([-v1[:, 1], v1[:, 0]], axis=-1)
    return {
        "label": ids,
        "area_px": area,
        "centroid_x_px": c[:, 0],
        "centroid_y_px": c[:, 1],
        "axis1_x": v1[:, 0],
        "axis1_y": v1[:, 1],
        "axis2_x": v2[:, 0],
        "axis2_y": v2[:, 1],
        "eig1_px2": e1,
        "eig2_px2": e2,
        "elongation": elong,
        "alpha_rad": alpha,
    }


def grain_table(labels: np.ndarray, center_px, pixel_size_um: float | None = None, mean_orientation=None):
    """The per-grain morphology table of one section (docs/method.md#section-morphology).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels ``[y, x]``, 0 = unassigned.
    center_px : (2,) sequence
        ``(x, y)`` of the particle section's centre, in pixels.
    pixel_size_um : float, optional
        Adds ``area_um2``, ``centroid_x_um``, ``centroid_y_um`` columns when given.
    mean_orientation : mapping label -> (4,) quaternion, or (max_label + 1, 4) array, optional
        Mean crystal orientation per grain (unit quaternion ``w, x, y, z``, Bunge passive
        convention, see :mod:`nmc_dataset.ebsd._orientation`); adds ``q_w, q_x, q_y, q_z``
        and ``phi1_deg, Phi_deg, phi2_deg``.

    Returns
    -------
    pyarrow.Table
        One row per grain (label > 0), sorted by label; columns as in
        :func:`grain_descriptors` (+ the optional ones above). Schema metadata carries
        ``format = nmc-dataset/grain-table``, ``format_version = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((5, 9), int); lab[2, 5:8] = 1
    >>> t = grain_table(lab, (4, 2))
    >>> round(t.column("elongation")[0].as_py(), 3), t.column("alpha_rad")[0].as_py()
    (0.667, 0.0)
    """

    d = grain_descriptors(labels, center_px)
    if pixel_size_um is not None:
        s = float(pixel_size_um)
        d["area_um2"] = d["area_px"] * s * s
        d["centroid_x_um"] = d["centroid_x_px"] * s
        d["centroid_y_um"] = d["centroid_y_px"] * s
    if mean_orientation is not None:
        from nmc_dataset.ebsd._orientation import quat_to_euler

        q = np.full((len(d["label"]), 4), np.nan)
        if isinstance(mean_orientation, dict):
            for k, lab in enumerate(d["label"]):
                if int(lab) in mean_orientation:
                    q[k] = mean_orientation[int(lab)]
        else:
            arr = np.asarray(mean_orientation, dtype=np.float64)
            ok = d["label"] < len(arr)
            q[ok] = arr[d["label"][ok]]
        e = np.degrees(quat_to_euler(np.nan_to_num(q, nan=1.0)))
        e[~np.isfinite(q).all(axis=1)] = np.nan
        for k, name in enumerate("wxyz"):
            d[f"q_{name}"] = q[:, k]
        d["phi1_deg"], d["Phi_deg"], d["phi2_deg"] = e[:, 0], e[:, 1], e[:, 2]
    table = pa.table({k: pa.array(np.asarray(v)) for k, v in d.items()})
    meta = {
        b"format": b"nmc-dataset/grain-table",
        b"format_version": b"1",
        b"center_px": f"{float(center_px[0])},{float(center_px[1])}".encode(),
    }
    if pixel_size_um is not None:
        meta[b"pixel_size_um"] = repr(float(pixel_size_um)).encode()
    return table.replace_schema_metadata(meta)


# --------------------------------------------------------------------------- chord lengths
def _runs_1d(rows: np.ndarray):
    """Maximal runs along the last axis of a 2D array: (label, length, touches_border)."""
    rows = np.asarray(rows, dtype=np.int64)
    n, m = rows.shape
    if n == 0 or m == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, bool)
    pad = np.full((n, 1), -1, dtype=np.int64)
    a = np.concatenate([pad, rows, pad], axis=1).ravel()
    change = np.flatnonzero(a[1:] != a[:-1]) + 1  # index where a new run starts
    starts = change[:-1]
    lengths = np.diff(change)
    labs = a[starts]
    keep = labs > 0
    starts, lengths, labs = starts[keep], lengths[keep], labs[keep]
    col = starts % (m + 2)  # 1..m within the padded row
    border = (col == 1) | (col + lengths - 1 == m)
    return labs, lengths.astype(np.int64), border


def chord_table(labels: np.ndarray, drop_border: bool = False) -> dict:
    """All chords of a label image: maximal runs of one grain along rows and along columns.

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned (never forms a chord; it ends chords).
    drop_border : bool
        Drop chords that touch the image border (they may be cut by the field of view).
        Default False: a particle section normally lies inside the scan, so border chords are
        rare; chords ending at the particle boundary or at unassigned pixels are always kept.

    Returns
    -------
    dict
        ``label`` (int64), ``direction`` (0 = along a row / x, 1 = along a column / y),
        ``length_px`` (int64); row chords first (row-major order), then column chords.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2D array [y, x], got shape {labels.shape}")
    out = {"label": [], "direction": [], "length_px": []}
    for direction, arr in ((0, labels), (1, labels.T)):
        lab, length, border = _runs_1d(arr)
        if drop_border:
            lab, length = lab[~border], length[~border]
        out["label"].append(lab)
        out["length_px"].append(length)
        out["direction"].append(np.full(len(lab), direction, dtype=np.int8))
    return {k: np.concatenate(v) for k, v in out.items()}


def chord_lengths(labels: np.ndarray, drop_border: bool = False) -> np.ndarray:
    """Chord lengths (pixels) along rows and columns, excluding label 0 (see :func:`chord_table`).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned.
    drop_border : bool, default False
        Drop chords that touch the image border.

    Returns
    -------
    int64 array
        Lengths in pixels: row chords first, then column chords.

    Examples
    --------
    >>> import numpy as np
    >>> chord_lengths(np.array([[1, 1, 0, 2], [1, 2, 2, 2]])).tolist()
    [2, 1, 1, 3, 2, 1, 1, 1, 2]
    """
    return chord_table(labels, drop_border=drop_border)["length_px"]


def chord_arrow_table(labels: np.ndarray, drop_border: bool = False, pixel_size_um: float | None = None):
    """:func:`chord_table` as a pyarrow table (``format = nmc-dataset/chord-table``).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned.
    drop_border : bool, default False
        Drop chords that touch the image border.
    pixel_size_um : float, optional
        Pixel size in µm; when given, a ``length_um`` column is added and the size is stored in the metadata.

    Returns
    -------
    pyarrow.Table
        Columns ``label``, ``direction`` (0 = along x, 1 = along y), ``length_px`` [, ``length_um``].
    """

    d = chord_table(labels, drop_border=drop_border)
    cols = {"label": pa.array(d["label"]), "direction": pa.array(d["direction"]), "length_px": pa.array(d["length_px"])}
    meta = {
        b"format": b"nmc-dataset/chord-table",
        b"format_version": b"1",
        b"direction": b"0 = along rows (x), 1 = along columns (y)",
        b"border_chords": b"dropped" if drop_border else b"kept",
    }
    if pixel_size_um is not None:
        cols["length_um"] = pa.array(d["length_px"] * float(pixel_size_um))
        meta[b"pixel_size_um"] = repr(float(pixel_size_um)).encode()
    return pa.table(cols).replace_schema_metadata(meta)


# --------------------------------------------------------------------------- alpha density
def _finite(alpha, weights=None):
    a = np.asarray(alpha, dtype=np.float64).ravel()
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(w) & (w > 0)
    return np.clip(a[ok], 0.0, HALF_PI), w[ok]


def alpha_kde(alpha, grid=None, bandwidth: float | None = None, weights=None):
    """Kernel density of α on [0, π/2] with reflecting boundaries.

    The Gaussian kernel of each sample ``a`` is mirrored at both ends (``-a`` and ``π - a``), so
    no mass leaks out of [0, π/2] and the density has zero slope at 0 and π/2.

    Parameters
    ----------
    alpha : array
        Orientations α in radians (NaNs are ignored).
    grid : array, optional
        Where to evaluate (default 181 points on [0, π/2]).
    bandwidth : float, optional
        Kernel σ in radians (default: Silverman's rule ``0.9 min(sd, IQR/1.34) n^(-1/5)``,
        at least 0.02).
    weights : array, optional
        Non-negative sample weights (e.g. grain areas).

    Returns
    -------
    grid, density : arrays
        The density integrates to 1 over [0, π/2] (up to the grid's quadrature error).
    """
    grid = np.linspace(0.0, HALF_PI, 181) if grid is None else np.asarray(grid, dtype=np.float64)
    a, w = _finite(alpha, weights)
    if a.size == 0:
        return grid, np.full(grid.shape, np.nan)
    if bandwidth is None:
        sd = float(np.sqrt(np.cov(a, aweights=w))) if a.size > 1 else 0.0
        q75, q25 = np.percentile(a, [75, 25])
        spread = min(sd, (q75 - q25) / 1.34) if q75 > q25 else sd
        bandwidth = max(0.9 * spread * a.size ** (-0.2), 0.02)
    h = float(bandwidth)
    w = w / w.sum()
    dens = np.zeros_like(grid)
    for centre in (a, -a, np.pi - a):
        z = (grid[:, None] - centre[None, :]) / h
        dens += np.exp(-0.5 * z * z) @ w
    return grid, dens / (h * np.sqrt(2.0 * np.pi))


def centrality_score(alpha, area=None, elongation=None) -> float:
    """How strongly radial a section's grains are: the weighted mean of ``cos 2α``.

    ``cos 2α`` is 1 for a grain pointing at the centre (α = 0), 0 at α = π/4 and -1 for a
    tangential grain; for a flat (isotropic) α distribution its mean is 0. A central section of
    a radial particle has α mass near 0 and scores high; an off-centre section (whose grains are
    cut obliquely, so their cross-sections are round near the section centre and randomly
    oriented) scores near 0. Grains are weighted by ``area × elongation`` when given: a round
    grain's axis is noise, and small grains are mostly junction debris.

    Parameters
    ----------
    alpha : array
        α per grain (radians; NaN ignored).
    area, elongation : arrays, optional
        Per-grain area (px) and η, used as weights (each defaults to 1).

    Returns
    -------
    float
        Score in [-1, 1]; NaN when there is no usable grain. Compare with
        :data:`CENTRALITY_THRESHOLD` (see :func:`is_central`).
    """
    a = np.asarray(alpha, dtype=np.float64).ravel()
    w = np.ones_like(a)
    if area is not None:
        w = w * np.asarray(area, dtype=np.float64).ravel()
    if elongation is not None:
        w = w * np.asarray(elongation, dtype=np.float64).ravel()
    a, w = _finite(a, w)
    if a.size == 0 or w.sum() <= 0:
        return float("nan")
    return float(np.sum(w * np.cos(2.0 * a)) / np.sum(w))


def section_centrality(labels: np.ndarray, center_px) -> float:
    """:func:`centrality_score` of a label image (weights ``area × elongation``).

    Parameters
    ----------
    labels : (ny, nx) int array
        Grain labels, 0 = unassigned.
    center_px : (2,) sequence
        ``(x, y)`` of the particle section's centre in pixels.

    Returns
    -------
    float
        The score (higher = more central; NaN when it cannot be computed).
    """
    d = grain_descriptors(labels, center_px)
    return centrality_score(d["alpha_rad"], d["area_px"], d["elongation"])


def is_central(score: float, threshold: float = CENTRALITY_THRESHOLD) -> bool:
    """The automatic decision: ``score >= threshold`` (NaN scores are not central).

    Parameters
    ----------
    score : float
        Centrality score of a section (:func:`section_centrality`).
    threshold : float, default CENTRALITY_THRESHOLD
        Smallest score of a central section.

    Returns
    -------
    bool
        Whether the section counts as central.
    """
    return bool(np.isfinite(score) and score >= threshold)
