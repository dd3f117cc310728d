"""Slow twins of nmc_dataset.ebsd."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix

from nmc_dataset.ebsd._orientation import quat_to_matrix, symmetry_ops


def misorientation_angle_bruteforce(qa: np.ndarray, qb: np.ndarray, ops) -> np.ndarray:
    """Slow twin of :func:`misorientation_angle`: min over all operator *pairs*, with matrices.

    Parameters
    ----------
    qa, qb : (..., 4) float arrays
        Unit quaternions (w, x, y, z) of the two orientations of each pair.
    ops : (K, 4) float array
        Proper rotations of the point group (:func:`nmc_dataset.ebsd.symmetry_ops`).

    Returns
    -------
    (...) float array
        Misorientation angles in radians.
    """
    if isinstance(ops, str):
        ops = symmetry_ops(ops)
    ga = quat_to_matrix(np.atleast_2d(qa))
    gb = quat_to_matrix(np.atleast_2d(qb))
    sm = quat_to_matrix(ops)
    best = np.full(np.broadcast_shapes(ga.shape[:-2], gb.shape[:-2]), np.inf)
    for si in sm:
        for sj in sm:
            dm = (si @ gb) @ np.swapaxes(sj @ ga, -1, -2)
            cosang = np.clip((np.trace(dm, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
            best = np.minimum(best, np.arccos(cosang))
    return best


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings (Hubert & Arabie 1985), from the contingency table.

    ``ARI = (Σ_ij C(n_ij, 2) - E) / (½ (Σ_i C(a_i, 2) + Σ_j C(b_j, 2)) - E)`` with
    ``E = Σ_i C(a_i, 2) Σ_j C(b_j, 2) / C(n, 2)``. 1 for identical partitions (up to renaming),
    about 0 for independent ones. Sparse-safe: only non-zero cells are summed.

    Parameters
    ----------
    a, b : int arrays of one shape
        Two labellings of the same items.

    Returns
    -------
    float
        1 for identical partitions, about 0 for independent ones.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    n = len(a)
    if n != len(b):
        raise ValueError("labellings must have the same length")
    if n < 2:
        return 1.0
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    pair = ia.astype(np.int64) * (ib.max() + 1) + ib
    _, nij = np.unique(pair, return_counts=True)

    def c2(x):
        x = np.asarray(x, dtype=np.float64)
        return x * (x - 1) / 2.0

    s_ij = c2(nij).sum()
    s_a = c2(np.bincount(ia)).sum()
    s_b = c2(np.bincount(ib)).sum()
    expected = s_a * s_b / c2(n)
    max_index = 0.5 * (s_a + s_b)
    if max_index == expected:
        return 1.0
    return float((s_ij - expected) / (max_index - expected))


def contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Contingency table of two labellings of the same items (dense, rows = labels of ``a``).

    Parameters
    ----------
    a, b : int arrays of one shape
        Two labellings of the same items.

    Returns
    -------
    (n_a, n_b) int64 array
        Counts of items per pair of labels.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)

    return coo_matrix((np.ones(len(a), dtype=np.int64), (ia, ib))).toarray()
