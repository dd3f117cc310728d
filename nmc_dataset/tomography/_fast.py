"""Compiled kernels of the scores: the Euler number and the surface-distance ball search.

(The exact distance transform the scores use is :func:`nmc_dataset.tomography._edt.distance_to`.)

``euler_number_6(mask)``: the Euler characteristic of a 6-connected foreground (26-connected
background), from the histogram of the 256 configurations of 2×2×2 voxel cubes weighted by
scikit-image's coefficients (Ohser, Nagel & Schladitz 2002; Rivollier 2010), as
:func:`skimage.measure.euler_number` uses them;
the codes are counted in one compiled pass instead of an integer convolution of the whole volume.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from skimage.measure._regionprops_utils import EULER_COEFS3D_26


@nb.njit(cache=True)
def _cube_histogram(m):
    """Histogram of skimage's 2×2×2 configuration codes over a 2-voxel zero-padded uint8 volume."""
    h = np.zeros(256, dtype=np.int64)
    n0, n1, n2 = m.shape[0] - 2, m.shape[1] - 2, m.shape[2] - 2
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                # the cube ending at (i, j, k): image[(i, j, k) - off], off in {0, 1}^3
                code = (
                    m[i + 1, j + 1, k + 1]
                    + 4 * m[i + 1, j + 1, k]
                    + 2 * m[i + 1, j, k + 1]
                    + 8 * m[i + 1, j, k]
                    + 16 * m[i, j + 1, k + 1]
                    + 64 * m[i, j + 1, k]
                    + 32 * m[i, j, k + 1]
                    + 128 * m[i, j, k]
                )
                h[code] += 1
    return h


def euler_number_6(mask: np.ndarray) -> int:
    """Euler characteristic of a 6-connected 3D foreground (= ``skimage.measure.euler_number(mask, 1)``)."""

    m = np.pad(np.asarray(mask, dtype=bool), 2).view(np.uint8)
    h = _cube_histogram(m)
    return int(0.125 * (np.asarray(EULER_COEFS3D_26[::-1]) @ h))


@nb.njit(cache=True, parallel=True)
def band_search(padded, flat, offsets, lengths, out):
    """For each start index ``flat[i]`` into the flat ``padded`` mask, the length of the first offset
    (offsets sorted by length) that lands on a ``True`` voxel, or -1 when none does (in ``out``)."""
    for i in nb.prange(flat.shape[0]):
        out[i] = -1.0
        base = flat[i]
        for k in range(offsets.shape[0]):
            if padded[base + offsets[k]]:
                out[i] = lengths[k]
                break


@nb.njit(cache=True)
def _count_labels(flat, n):
    out = np.zeros(n + 1, dtype=np.int64)
    for i in range(flat.shape[0]):
        out[flat[i]] += 1
    return out


def label_sizes(labels: np.ndarray) -> np.ndarray:
    """Voxels per label of a non-negative integer label volume (``np.bincount(labels.ravel())``).

    One compiled pass over the labels as stored; ``np.bincount`` first converts a 32-bit volume to
    64-bit integers, which costs more than the counting.
    """
    flat = np.ascontiguousarray(labels).reshape(-1)
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    if flat.dtype.kind not in "iu" or (flat.dtype.kind == "i" and int(flat.min()) < 0):
        return np.bincount(flat)  # the reference rejects negative labels the same way
    return _count_labels(flat, int(flat.max()))
