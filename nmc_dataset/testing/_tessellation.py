"""Slow twins of the tessellation kernels: every seed checked, one ``scipy.ndimage.label`` per cell."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nmc_dataset.tessellation._gbpd import GBPD, power_distances


def hard_labels_bruteforce(g: GBPD, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Exact hard labels (index of the minimising seed) by checking every seed.

    The slow twin of the fast kernels: O(P N) time, O(chunk N) memory. Ties go to the
    lowest index.

    Parameters
    ----------
    g : GBPD
        The diagram.
    points : (P, d) float array
        Query points ``(x, y[, z])`` in the diagram's units.
    chunk : int, default 4096
        Points per block of the distance matrix.

    Returns
    -------
    (P,) int64 array
        Index of the nearest seed in power distance.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, g.dim)
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), chunk):
        out[start : start + chunk] = np.argmin(power_distances(g, points[start : start + chunk]), axis=1)
    return out


def count_disconnected_reference(labels: np.ndarray, connectivity: int = 1) -> int:
    """Plain twin of :func:`count_disconnected`: one ``scipy.ndimage.label`` per cell.

    Parameters
    ----------
    labels : int array, 2D or 3D
        Cell labels; negative values are ignored.
    connectivity : int, default 1
        Neighbourhood of ``scipy.ndimage.generate_binary_structure`` (1 = faces only).

    Returns
    -------
    int
        Number of cells with more than one connected component.
    """

    labels = np.asarray(labels).astype(np.int64)
    valid = labels >= 0
    lab = np.zeros(labels.shape, dtype=np.int64)
    if valid.any():
        _, inv = np.unique(labels[valid], return_inverse=True)
        lab[valid] = np.asarray(inv).reshape(-1) + 1
    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    count = 0
    for i, sl in enumerate(ndimage.find_objects(lab)):
        if sl is None:
            continue
        _, ncomp = ndimage.label(lab[sl] == i + 1, structure=structure)
        count += ncomp > 1
    return int(count)
