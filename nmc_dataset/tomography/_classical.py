"""The classical segmentation baseline ``otsu-watershed``.

1. Gaussian smoothing of the grey volume (σ voxels, float32).
2. Phases by multi-Otsu thresholds (:func:`skimage.filters.threshold_multiotsu`, 3 classes, which
   maximise the between-class variance of the grey histogram): the darkest class is pore, the middle
   one carbon-binder, the brightest NMC (NMC attenuates most, the carbon-binder little more than
   pore or electrolyte). With ``classes=2`` a single Otsu threshold splits pore and NMC.
3. Particles: distance-transform watershed of the NMC voxels, one marker per h-maximum (depth ``h``
   voxels) of the smoothed distance, per connected component; disconnected pieces become separate
   instances and pieces under ``min_volume`` voxels merge into the neighbour they share most faces
   with (the steps of :mod:`nmc_dataset.shells._segment`, without its border removal: a volume's
   segmentation keeps the particles the border cuts).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.segmentation import relabel_sequential

from nmc_dataset.shells._segment import _merge_small, _split_disconnected, _watershed_components

__all__ = ["otsu_watershed"]


def otsu_watershed(
    ct: np.ndarray, *, sigma: float = 1.0, classes: int = 3, h: float = 2.0, min_volume: int = 10
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment a grey CT volume into phases and particle instances.

    Parameters
    ----------
    ct : ndarray (Z, Y, X)
        Grey values (higher = more attenuating).
    sigma : float
        Gaussian smoothing σ in voxels (0: none).
    classes : {2, 3}
        3: pore / binder / NMC by two multi-Otsu thresholds; 2: pore / NMC by one Otsu threshold.
    h : float
        Minimum depth (voxels) of a distance maximum to seed its own particle.
    min_volume : int
        Instances with fewer voxels merge into a neighbour.

    Returns
    -------
    phase : ndarray of uint8
        0 pore, 1 NMC, 2 binder.
    particle : ndarray of uint32
        Instance ids 1..n (0 outside NMC).
    info : dict
        ``thresholds`` and ``n_particles``.
    """

    if classes not in (2, 3):
        raise ValueError("classes must be 2 or 3")
    ct = np.asarray(ct, dtype=np.float32)
    smooth = ndimage.gaussian_filter(ct, sigma, output=np.float32, mode="nearest") if sigma > 0 else ct
    sample = smooth if smooth.size <= 2**24 else smooth[::2, ::2, ::2]
    if classes == 3:
        t = [float(v) for v in threshold_multiotsu(sample, classes=3)]
    else:
        t = [float(threshold_otsu(sample))]
    phase = np.zeros(ct.shape, dtype=np.uint8)
    nmc = smooth > t[-1]
    phase[nmc] = 1
    if classes == 3:
        phase[(smooth > t[0]) & ~nmc] = 2
    del smooth
    labels, _ = _watershed_components(nmc, h)
    _split_disconnected(labels)
    _merge_small(labels, min_volume, 0.0)
    labels, _, _ = relabel_sequential(labels)
    particle = labels.astype(np.uint32, copy=False)
    return phase, particle, {"thresholds": t, "n_particles": int(particle.max())}
