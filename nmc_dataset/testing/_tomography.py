"""Slow twins of nmc_dataset.tomography."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from nmc_dataset.tomography._ctsim import _trapezoid_cdf


def project_reference(image: np.ndarray, thetas: np.ndarray, n_det: int) -> np.ndarray:
    """Slow twin of :func:`project` for one 2D slice (pixel units), ``(n_ang, n_det)``.

    Parameters
    ----------
    image : (n, n) float array
        One slice (attenuation per pixel).
    thetas : (n_ang,) float array
        Projection angles in radians.
    n_det : int
        Detector pixels.

    Returns
    -------
    (n_ang, n_det) float array
        Line integrals (pixel units).
    """
    ny, nx = image.shape
    out = np.zeros((len(thetas), n_det))
    yy, xx = np.meshgrid(np.arange(ny) - 0.5 * (ny - 1), np.arange(nx) - 0.5 * (nx - 1), indexing="ij")
    for a, th in enumerate(thetas):
        c, s = math.cos(th), math.sin(th)
        a1, a2 = max(abs(c), abs(s)), min(abs(c), abs(s))
        t = xx * c + yy * s + 0.5 * (n_det - 1)
        for k in range(n_det):
            hi = np.vectorize(_trapezoid_cdf.py_func)(k + 0.5 - t, a1, a2)
            lo = np.vectorize(_trapezoid_cdf.py_func)(k - 0.5 - t, a1, a2)
            out[a, k] = np.sum((hi - lo) * image)
    return out


def backproject_reference(q: np.ndarray, thetas: np.ndarray, n: int) -> np.ndarray:
    """Slow twin of the back-projection for one filtered sinogram ``(n_ang, n_det)``: ``(n, n)``.

    Parameters
    ----------
    q : (n_ang, n_det) float array
        Filtered sinogram of one slice.
    thetas : (n_ang,) float array
        Projection angles in radians.
    n : int
        Edge of the reconstructed slice (pixels).

    Returns
    -------
    (n, n) float array
    """
    n_det = q.shape[1]
    yy, xx = np.meshgrid(np.arange(n) - 0.5 * (n - 1), np.arange(n) - 0.5 * (n - 1), indexing="ij")
    out = np.zeros((n, n))
    for a, th in enumerate(thetas):
        t = xx * math.cos(th) + yy * math.sin(th) + 0.5 * (n_det - 1)
        k = np.floor(t).astype(int)
        w = t - k
        ok = (k >= 0) & (k + 1 < n_det)
        kk = np.where(ok, k, 0)
        out += np.where(ok, (1 - w) * q[a, kk] + w * q[a, np.minimum(kk + 1, n_det - 1)], 0.0)
    return out


def pull_back_reference(v, G, centre, periodic, n_iter=5):
    """Slow twin of :func:`pull_back` with ``scipy.ndimage.map_coordinates`` (order 1).

    Parameters
    ----------
    v : (Z, Y, X, 3) float array
        Smooth displacement part in voxels, components (z, y, x).
    G : (3, 3) float array
        Affine part of the displacement, ``u(X) = G (X - centre) + v(X)``.
    centre : (3,) array-like
        Centre of the affine part (voxels).
    periodic : bool
        Wrap ``v`` at the faces (otherwise clamp).
    n_iter : int, default 5
        Fixed-point iterations.

    Returns
    -------
    (Z, Y, X, 3) float array
        Reference positions ``X`` with ``X + u(X) = y`` for every voxel ``y``.
    """

    shape = v.shape[:3]
    y = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")).reshape(3, -1)
    c = np.asarray(centre, np.float64)[:, None]
    X = y.copy()
    mode = "grid-wrap" if periodic else "nearest"
    for _ in range(n_iter):
        vi = np.stack([ndimage.map_coordinates(v[..., a].astype(np.float64), X, order=1, mode=mode) for a in range(3)])
        X = y - (np.asarray(G) @ (X - c) + vi)
    return np.moveaxis(X.reshape((3,) + shape), 0, -1)
