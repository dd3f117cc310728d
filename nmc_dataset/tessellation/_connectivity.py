"""Connectivity of grain label volumes: cells that fall apart into several face-connected pieces.

A GBPD cell is not convex in general, and a voxelised one can split; counting such cells is the
check of every labelling the tool writes.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label as _label_components


def count_disconnected(labels: np.ndarray, connectivity: int = 1) -> int:
    """Number of cells whose label occurs in more than one connected component.

    Parameters
    ----------
    labels : 2D or 3D int array
        Cell labels; negative values are background and ignored.
    connectivity : int
        Neighbourhood as in :func:`skimage.measure.label` (1 = faces only: 4-connectivity in 2D,
        6 in 3D; ``labels.ndim`` = full).

    Returns
    -------
    int
        Number of disconnected cells.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError("labels must be 2D or 3D")
    if labels.size == 0:
        return 0
    lab = labels.astype(np.int64, copy=True)
    lab[lab < 0] = -1
    # equal neighbouring values form one component; background (-1) is component 0
    comp = _label_components(lab, background=-1, connectivity=connectivity)
    n = int(comp.max())
    if n == 0:
        return 0
    label_of = np.empty(n + 1, dtype=np.int64)
    label_of[comp.ravel()] = lab.ravel()
    _, pieces = np.unique(label_of[1:], return_counts=True)
    return int((pieces > 1).sum())
