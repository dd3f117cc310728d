"""Slow twins of the shell descriptors."""

from __future__ import annotations

import numpy as np

from nmc_dataset.shells._radius import _inside


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


def ray_radius_reference(mask: np.ndarray, center, directions, step: float = 1e-3) -> np.ndarray:
    """Slow twin of :func:`ray_radius`: march each ray in small steps (error <= ``step``).

    Parameters
    ----------
    mask : (Z, Y, X) bool array
        The particle.
    center : (3,) array-like
        Star point (x, y, z) in voxels.
    directions : (n, 3) float array
        Unit ray directions (x, y, z).
    step : float, default 1e-3
        Marching step in voxels.

    Returns
    -------
    (n,) float array
        Radius along each ray (voxels).
    """
    mask = np.asarray(mask, dtype=bool)
    c = np.asarray(center, dtype=np.float64).reshape(3)
    out = []
    for u in np.asarray(directions, dtype=np.float64).reshape(-1, 3):
        u = u / np.linalg.norm(u)
        s = 0.0
        while _inside(mask, c + s * u):
            s += step
        out.append(max(s - step / 2, 0.0) if s > 0 else 0.0)
    return np.asarray(out)
