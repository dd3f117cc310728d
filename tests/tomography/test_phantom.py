"""Known-truth CT volumes: labels consistent with each other, binder at contacts, deterministic."""

import numpy as np
from scipy import ndimage

from nmc_dataset.tomography._phantom import phantom_ct_arrays, write_phantom_ct
from nmc_dataset.tomography._volumes import read_volumes


def test_labels_are_consistent_and_binder_sits_at_contacts():
    a = phantom_ct_arrays(1, size=40, n_particles=60, mean_radius_vox=5)
    phase, particle, grain = a["phase"], a["particle"], a["grain"]
    assert np.array_equal(phase == 1, particle > 0)
    assert np.array_equal(grain > 0, particle > 0)
    # every grain lies in one particle
    pairs = np.unique(np.column_stack([grain[grain > 0], particle[grain > 0]]), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs)
    # touching particles exist (a face between two different ids)
    touching = (particle[:, :, 1:] != particle[:, :, :-1]) & (particle[:, :, 1:] > 0) & (particle[:, :, :-1] > 0)
    assert touching.any()
    # binder voxels are within 3 voxels of two different particles
    binder = np.argwhere(phase == 2)
    assert len(binder) > 0
    for z, y, x in binder[:: max(1, len(binder) // 50)]:
        win = particle[max(z - 3, 0) : z + 4, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4]
        assert len(np.unique(win[win > 0])) >= 2
    # the grey levels order pore < binder < NMC
    g = ndimage.gaussian_filter(a["ct"], 0)
    means = [g[phase == k].mean() for k in range(3)]
    assert means[0] < means[2] < means[1]


def test_same_seed_same_bytes_and_file_layout(tmp_path):
    p1 = write_phantom_ct(tmp_path / "a.h5", 5, size=32, n_particles=20, mean_radius_vox=4)
    p2 = write_phantom_ct(tmp_path / "b.h5", 5, size=32, n_particles=20, mean_radius_vox=4)
    a1, m1 = read_volumes(p1, kinds=("ct",))
    a2, _ = read_volumes(p2, kinds=("ct",))
    assert set(a1) == {"ct", "phase", "particle", "grain"}
    for k in a1:
        assert np.array_equal(a1[k], a2[k])
    assert m1["imaging"]["seed"] == 5 and m1["imaging"]["size"] == 32
    b = phantom_ct_arrays(6, size=32, n_particles=20, mean_radius_vox=4)
    assert not np.array_equal(a1["ct"], b["ct"])
