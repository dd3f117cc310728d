"""Slow twin of nmc_dataset.tomography._dvc: the textbook Lucas–Kanade translation of one subset."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _window(a, p, half):
    return a[p[0] - half : p[0] + half, p[1] - half : p[1] + half, p[2] - half : p[2] + half]


def lucas_kanade_translation_reference(f, g, p, half: int, d0, n_iter: int = 100, tol: float = 1e-3):
    """Slow twin of :func:`nmc_dataset.tomography._dvc.icgn` (translation): forward-additive Gauss–Newton.

    The textbook Lucas–Kanade translation of the SSD subset ``f[p ± half]`` into ``g`` from ``d0``,
    written independently of the IC-GN engine (block-local spline, additive updates, SSD): ``g``
    interpolated by cubic B-splines on a block around the subset, the reference gradient as the
    Jacobian, additive updates. Returns ``(d, quality)``, ``d`` at the subset centre ``p − ½`` and
    quality the final rms residual over the std of the reference subset (NaN if the shift leaves
    the block).

    Parameters
    ----------
    f, g : ndarray (nz, ny, nx)
        Reference and deformed volumes.
    p : array of int (3,)
        Node.
    half : int
        Subset half-width.
    d0 : array (3,)
        Start displacement.
    n_iter : int, default 100
        Largest number of iterations.
    tol : float, default 1e-3
        Convergence threshold (voxels).

    Returns
    -------
    d : ndarray (3,)
        Displacement (voxels).
    quality : float
        Normalised rms residual.
    """
    a = _window(f, p, half).astype(np.float64)
    a = a - a.mean()
    sa = float(a.std())
    d = np.asarray(d0, np.float64).copy()
    m = int(np.ceil(np.abs(d).max())) + 4
    lo = np.asarray(p) - half - m
    hi = np.asarray(p) + half + m
    shape = np.array(g.shape)
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    block = g[clo[0] : chi[0], clo[1] : chi[1], clo[2] : chi[2]].astype(np.float64)
    if np.any(clo != lo) or np.any(chi != hi):  # near a face: edge values beyond the volume
        block = np.pad(block, [(int(clo[a] - lo[a]), int(hi[a] - chi[a])) for a in range(3)], mode="edge")
    block = ndimage.spline_filter(block, order=3)
    base = np.stack(np.meshgrid(*[np.arange(2 * half, dtype=np.float64) + m] * 3, indexing="ij")).reshape(3, -1)
    J = np.stack([x.ravel() for x in np.gradient(a)], 1)
    J = J - J.mean(axis=0)
    H = J.T @ J
    if np.linalg.cond(H) > 1e10:
        return np.full(3, np.nan), np.nan
    Hinv = np.linalg.inv(H)
    res = np.nan
    for _ in range(n_iter):
        if np.abs(d).max() > m - 2:
            return np.full(3, np.nan), np.nan
        b = ndimage.map_coordinates(block, base + d[:, None], order=3, prefilter=False, mode="nearest")
        r = b - b.mean() - a.ravel()
        step = -Hinv @ (J.T @ r)
        d += step
        res = float(np.sqrt(np.mean(r**2))) / max(sa, 1e-30)
        if np.abs(step).max() < tol:
            break
    return d, res
