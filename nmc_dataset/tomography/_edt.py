"""Exact Euclidean distance transform of 3D binary volumes (compiled).

``scipy.ndimage.distance_transform_edt`` takes ~35 s for a 400³ volume on one core; the separable
algorithm of Felzenszwalb & Huttenlocher ("Distance transforms of sampled functions", Theory of
Computing 8, 2012) computes the same exact squared distances in three 1D lower-envelope passes,
linear in the number of voxels. :func:`distance_to` is that algorithm in numba; its slow twin
is scipy's transform (the tests compare them on random volumes).
"""

from __future__ import annotations

import numba
import numpy as np

_INF = 1e20


@numba.njit(cache=True)
def _envelope_1d(f, n, out, v, z):
    """Squared 1D distance transform of the sampled function ``f[:n]`` into ``out[:n]``."""
    k = -1
    for q in range(n):
        if f[q] >= _INF:
            continue
        while True:
            if k < 0:
                k = 0
                v[0] = q
                z[0] = -_INF
                z[1] = _INF
                break
            p = v[k]
            s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * q - 2.0 * p)
            if s <= z[k]:
                k -= 1
                continue
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = _INF
            break
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d = q - v[k]
        out[q] = d * d + f[v[k]]


@numba.njit(parallel=True, cache=True)
def _pass_last(a):
    """In-place squared distance pass along the last (contiguous) axis."""
    n0, n1, m = a.shape
    for o in numba.prange(n0):
        out = np.empty(m)
        v = np.empty(m, dtype=np.int64)
        z = np.empty(m + 1)
        for i in range(n1):
            _envelope_1d(a[o, i], m, out, v, z)
            a[o, i, :] = out


@numba.njit(parallel=True, cache=True)
def _pass_0(a):
    """In-place pass along axis 0, through transposed (contiguous) y-slabs."""
    m, n1, n2 = a.shape
    for o in numba.prange(n1):
        t = np.ascontiguousarray(a[:, o, :].T)
        out = np.empty(m)
        v = np.empty(m, dtype=np.int64)
        z = np.empty(m + 1)
        for i in range(n2):
            _envelope_1d(t[i], m, out, v, z)
            t[i] = out
        a[:, o, :] = t.T


@numba.njit(parallel=True, cache=True)
def _pass_1(a):
    """In-place pass along axis 1, through transposed (contiguous) z-slabs."""
    n0, m, n2 = a.shape
    for o in numba.prange(n0):
        t = np.ascontiguousarray(a[o].T)
        out = np.empty(m)
        v = np.empty(m, dtype=np.int64)
        z = np.empty(m + 1)
        for i in range(n2):
            _envelope_1d(t[i], m, out, v, z)
            t[i] = out
        a[o] = t.T


def distance_to(features: np.ndarray, *, squared: bool = False) -> np.ndarray:
    """Distance (in voxels) from every voxel centre to the nearest ``True`` voxel of ``features``.

    Parameters
    ----------
    features : (nz, ny, nx) bool array
        The set distances are measured to (distance 0 there).
    squared : bool
        Return squared distances (exact integers as float64).

    Returns
    -------
    ndarray, float64
        ``inf`` everywhere if ``features`` has no ``True`` voxel. Equals
        ``scipy.ndimage.distance_transform_edt(~features)``.
    """
    f = np.asarray(features, dtype=bool)
    if f.ndim != 3:
        raise ValueError("distance_to needs a 3D volume")
    if not f.any():
        return np.full(f.shape, np.inf)
    a = np.where(f, 0.0, _INF)
    _pass_last(a)
    _pass_1(a)
    _pass_0(a)
    return a if squared else np.sqrt(a)


__all__ = ["distance_to"]
