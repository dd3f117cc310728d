"""otsu-watershed on volumes whose answer is known."""

import numpy as np
from scipy import ndimage

from nmc_dataset.tomography._classical import otsu_watershed


def _balls(shape, centres, r):
    zz, yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.uint32)
    for i, c in enumerate(centres, 1):
        lab[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r) & (lab == 0)] = i
    return lab


def test_three_phases_and_touching_particles_are_separated(rng):
    shape = (40, 40, 56)
    lab = _balls(shape, [(20, 20, 14), (20, 20, 29), (20, 20, 44)], 8)  # the first two touch (neck)
    phase = (lab > 0).astype(np.uint8)
    phase[(lab == 0) & (ndimage.distance_transform_edt(lab == 0) <= 3)] = 2  # a binder coating
    grey = np.array([0.1, 0.8, 0.4], np.float32)[phase]
    grey = ndimage.gaussian_filter(grey, 0.7) + rng.normal(0, 0.02, shape).astype(np.float32)
    seg_phase, particle, info = otsu_watershed(grey)
    assert len(info["thresholds"]) == 2
    for k in range(3):
        t, p = phase == k, seg_phase == k
        assert 2 * np.sum(t & p) / (t.sum() + p.sum()) > 0.8, k
    assert info["n_particles"] == 3
    # each true ball is mostly one predicted particle
    for i in (1, 2, 3):
        ids, counts = np.unique(particle[lab == i], return_counts=True)
        assert counts.max() > 0.9 * (lab == i).sum() and ids[np.argmax(counts)] > 0


def test_two_classes_give_no_binder(rng):
    lab = _balls((32, 32, 32), [(16, 16, 16)], 8)
    grey = np.where(lab > 0, 0.9, 0.1).astype(np.float32) + rng.normal(0, 0.02, lab.shape).astype(np.float32)
    phase, _particle, info = otsu_watershed(grey, classes=2)
    assert set(np.unique(phase)) == {0, 1} and info["n_particles"] == 1
