"""Slow twins of the shell descriptors."""

from __future__ import annotations

import numpy as np


def pairwise_max_distance(points: np.ndarray) -> np.ndarray:
    """Largest distance between two vertices of each body, over all pairs of vertices.

    Parameters
    ----------
    points : (n, P, 3) float array
        Vertices of ``n`` bodies.

    Returns
    -------
    (n,) float array
        The slow twin of ``d_max`` in :func:`nmc_dataset.shells.mesh_descriptors`.
    """
    out = []
    for p in np.asarray(points, dtype=np.float64):
        d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        out.append(np.sqrt(d2.max()))
    return np.array(out)
