"""Slow twins of the cutouts: every seed of the tessellation, the window and temperature from their definition.

The fast path keeps only the seeds within ``margin_px`` of a cutout and scales the temperature by
the mean diagonal marker of those seeds. These twins take *all* seeds, so a margin too small to
be exact shows up, and they rebuild the window from the definition (a box of half width
``(G - 1) / 2 + 1/2 + margin_px`` around the cutout in its plane, ``margin_px`` across it, in
cutout coordinates) instead of reusing the fast path's selection.
"""

from __future__ import annotations

import numpy as np

from nmc_dataset.calibration._knn import _as_index
from nmc_dataset.tessellation._gbpd import GBPD, power_distances


def cutout_grid(grid: int) -> np.ndarray:
    """Grid points ``(u, v)`` of a ``grid``×``grid`` cutout centred on 0, rows (v) outer, columns (u) inner.

    Parameters
    ----------
    grid : int
        Points per side.

    Returns
    -------
    (grid * grid, 2) float array
    """
    c = np.arange(grid, dtype=np.float64) - (grid - 1) / 2.0
    v, u = np.meshgrid(c, c, indexing="ij")
    return np.column_stack([u.ravel(), v.ravel()])


def _images(pd: np.ndarray, beta_eff: float, channels: int, grid: int, ng_min_px: int, with_hard: bool):
    z = -(pd - pd.min(1, keepdims=True)) / beta_eff
    soft = np.exp(z)
    soft /= soft.sum(1, keepdims=True)
    sums = soft.sum(0)
    order = np.lexsort((np.arange(len(sums)), -sums))[:channels]  # most soft mass first, ties by index
    img = np.zeros((channels, pd.shape[0]))
    img[: len(order)] = soft[:, order].T
    labels = pd.argmin(1)
    ids, counts = np.unique(labels, return_counts=True)
    ng = int((counts >= ng_min_px).sum()) / pd.shape[0]
    out = [img.reshape(channels, grid, grid), ng]
    if with_hard:
        out.append(
            np.stack([labels == s for s in order] + [np.zeros(pd.shape[0], bool)] * (channels - len(order)))
            .astype(np.float64)
            .reshape(channels, grid, grid)
        )
    return tuple(out)


def t2d_cutout_reference(g: GBPD, p: float, beta: float, spec, with_hard: bool = False):
    """One T2D cutout of the whole 2D tessellation ``g`` at ``(p, beta)``.

    Parameters
    ----------
    g : GBPD
        The fitted 2D tessellation, every seed (pixels, centre origin).
    p : float
        Distance of the cutout centre from the section centre along the rotated x axis (pixels).
    beta : float
        Rotation of the cutout about the section centre (radians).
    spec : nmc_dataset.calibration.CutoutSpec
        Grid, channels, margin, temperature and detection limit.
    with_hard : bool
        Also return the hard images.

    Returns
    -------
    tuple
        ``(image (C, G, G), ng[, hard (C, G, G)])``.
    """
    c, s = np.cos(beta), np.sin(beta)
    rot = np.array([[c, -s], [s, c]])
    pts = (cutout_grid(spec.grid) + np.array([p, 0.0])) @ rot.T  # R (p + u, v)
    local = g.seeds @ rot - np.array([p, 0.0])  # seeds in cutout coordinates
    window = np.all(np.abs(local) <= (spec.grid - 1) / 2.0 + 0.5 + spec.margin_px, axis=1)
    if not window.any():
        window[np.argmin(np.linalg.norm(local, axis=1))] = True
    beta_eff = spec.beta * g.diag[window].mean()
    return _images(power_distances(g, pts), beta_eff, spec.channels, spec.grid, spec.ng_min_px, with_hard)


def t3d_cutout_reference(
    seeds: np.ndarray, diag: np.ndarray, offsets: np.ndarray, roll: np.ndarray, p: float, spec, with_hard: bool = False
):
    """One T3D cutout (the plane ``z = 0`` around ``(p, 0, 0)``) of a 3D tessellation, every seed.

    Parameters
    ----------
    seeds : (n, 3) float array
        Seed positions (pixels, particle centre origin).
    diag : (n, 3) float array
        Diagonal markers.
    offsets : (n,) float array
        Offsets ``r_i``.
    roll : (n,) float array
        Roll angles of the radial frames.
    p : float
        x of the cutout centre (pixels).
    spec : nmc_dataset.calibration.CutoutSpec
        Grid, channels, margin, temperature and detection limit.
    with_hard : bool
        Also return the hard images.

    Returns
    -------
    tuple
        ``(image (C, G, G), ng[, hard (C, G, G)])``.
    """
    g = GBPD(np.asarray(seeds, float), np.asarray(diag, float), np.asarray(offsets, float), np.asarray(roll, float))
    uv = cutout_grid(spec.grid)
    pts = np.column_stack([uv[:, 0] + p, uv[:, 1], np.zeros(len(uv))])
    half = (spec.grid - 1) / 2.0 + 0.5 + spec.margin_px
    reach = np.array([half, half, spec.margin_px])  # the plane z = 0: margin_px above and below
    window = np.all(np.abs(g.seeds - np.array([p, 0.0, 0.0])) <= reach, axis=1)
    beta_eff = spec.beta * g.diag[window].mean()
    return _images(power_distances(g, pts), beta_eff, spec.channels, spec.grid, spec.ng_min_px, with_hard)


def knn_reference(points: np.ndarray, kappa: int, which=None, group=None):
    """Plain twin of :func:`knn`: all distances per query, stable sort, self excluded.

    O(n N) time; for tests. Same ordering and tie rule as :func:`knn`.

    Parameters
    ----------
    points : (N, 3) float array
        Seed positions.
    kappa : int
        Neighbours per query (the point itself excluded).
    which : index array or bool mask, optional
        Queries (default: all points).
    group : (N,) int array, optional
        Realisations stacked in one array: neighbours only within a group.

    Returns
    -------
    nb : (n, kappa) int64 array
        Neighbour indices, nearest first (ties: lower index).
    d2 : (n, kappa) float64 array
        Their squared distances.
    """
    points = np.asarray(points, dtype=np.float64)
    idx = _as_index(which, len(points))
    gid = np.zeros(len(points), dtype=np.int64) if group is None else np.asarray(group).reshape(-1)
    nb = np.empty((len(idx), kappa), dtype=np.int64)
    d2 = np.empty((len(idx), kappa))
    for r, i in enumerate(idx):
        diff = points - points[i]
        dd = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]
        dd[i] = np.inf
        dd[gid != gid[i]] = np.inf
        order = np.argsort(dd, kind="stable")[:kappa]
        nb[r] = order
        d2[r] = dd[order]
    return nb, d2


def grain_stats_3d_reference(labels: np.ndarray, origin_px=(0.0, 0.0, 0.0)) -> dict:
    """Plain twin of :func:`grain_stats_3d` (one grain at a time, ``numpy.cov``; no border filter).

    Parameters
    ----------
    labels : (Z, Y, X) int array
        Grain labels (> 0), 0 outside.
    origin_px : (3,) array-like, default (0, 0, 0)
        Position (x, y, z) of voxel ``[0, 0, 0]`` in pixels.

    Returns
    -------
    dict
        As :func:`nmc_dataset.calibration.grain_stats_3d`.
    """
    lab = np.asarray(labels)
    out = {k: [] for k in ("label", "volume_px", "eig1_px2", "eig3_px2", "radial_alignment")}
    for g in np.unique(lab[lab > 0]):
        zz, yy, xx = np.nonzero(lab == g)
        pts = np.stack([xx + origin_px[0], yy + origin_px[1], zz + origin_px[2]], 1).astype(float)
        cov = np.cov(pts.T, bias=True) + np.eye(3) / 12.0
        w, v = np.linalg.eigh(cov)
        c = pts.mean(0)
        out["label"].append(g)
        out["volume_px"].append(len(pts))
        out["eig1_px2"].append(w[2])
        out["eig3_px2"].append(w[0])
        out["radial_alignment"].append(abs(v[:, 2] @ c) / np.linalg.norm(c))
    return {k: np.asarray(v) for k, v in out.items()}
