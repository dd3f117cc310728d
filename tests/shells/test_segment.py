"""docs/method.md#ct-segmentation segmentation: watershed split, merge/drop, border removal, input kinds."""

import numpy as np
import pytest

from nmc_dataset.errors import InputError
from nmc_dataset.shells._segment import classify_volume, segment_volume, voxel_sphericity
from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model


def _ball(shape, c, r):
    z, y, x = np.indices(shape)
    return ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= r * r


def test_touching_balls_are_split():
    shape = (40, 40, 60)
    m = _ball(shape, (20, 20, 20), 9) | _ball(shape, (36, 20, 20), 9)  # overlapping: one component
    seg = segment_volume(m.astype(np.uint8))
    assert seg.input_kind == "binary" and seg.skipped == ["gaussian smoothing", "Otsu threshold"]
    assert seg.n_particles == 2 and seg.counts["watershed_split"] == 1
    sizes = np.bincount(seg.labels.ravel())[1:]
    assert abs(int(sizes[0]) - int(sizes[1])) < 0.05 * sizes.max()  # split at the neck, symmetric


def test_small_pieces_merge_or_drop_and_border_is_removed():
    shape = (40, 40, 70)
    m = _ball(shape, (20, 20, 20), 8)
    m[20, 20, 29] = True  # a 1-voxel bump on the ball's face: stays with the ball (connected)
    m[30:32, 30:32, 30:32] = False
    stray = np.zeros(shape, bool)
    stray[5, 5, 45:48] = True  # 3 isolated voxels: dropped (no neighbour)
    edge = _ball(shape, (62, 20, 20), 8)  # crosses x = 69: removed
    far = _ball(shape, (45, 20, 20), 6)
    seg = segment_volume((m | stray | edge | far).astype(np.uint8))
    assert seg.n_particles == 2
    assert seg.counts["dropped"] == 1 and seg.counts["border_removed"] >= 1
    assert not seg.labels[5, 5, 45:48].any()


def test_merge_into_largest_shared_boundary():
    from nmc_dataset.shells import _segment as S

    labels = np.zeros((20, 20, 20), np.int32)
    labels[2:12, 2:12, 2:10] = 1
    labels[2:12, 2:12, 10:18] = 2
    labels[5, 5, 18] = 3  # touches only label 2 -> merged into 2
    labels[15, 15, 15] = 4  # alone -> dropped
    merged, dropped = S._merge_small(labels, 10, 0.5)
    assert (merged, dropped) == (1, 1)
    assert labels[5, 5, 18] == 2 and labels[15, 15, 15] == 0


def test_phase_label_volume():
    shape = (40, 40, 40)
    vol = np.ones(shape, np.uint8)  # phase 1: pores
    vol[_ball(shape, (20, 20, 20), 9)] = 2  # phase 2: NMC
    vol[_ball(shape, (5, 5, 5), 2)] = 3
    seg = segment_volume(vol, phase=2)
    assert seg.input_kind == "phase" and seg.n_particles == 1
    with pytest.raises(InputError, match="phase 7 does not occur"):
        segment_volume(vol, phase=7, where="v.tif")


def test_empty_segmentation_is_an_error():
    with pytest.raises(InputError, match="empty"):
        segment_volume(np.zeros((20, 20, 20), np.uint8), where="empty.npy")


def test_grey_phantom_count_is_exact(rng):
    ph = make_ct_phantom(reference_shell_model(7), shape=(80, 80, 80), n_particles=18, rng=rng)
    seg = segment_volume(ph.volume)
    assert seg.input_kind == "grey" and seg.threshold is not None and not seg.skipped
    assert seg.n_particles == ph.n_particles == 18
    # every found particle overlaps exactly one true particle
    for lab in range(1, seg.n_particles + 1):
        assert len(np.unique(ph.labels[seg.labels == lab])) <= 2


def test_classify_and_sphericity():
    assert classify_volume(np.zeros((3, 3, 3), bool)) == "binary"
    assert classify_volume(np.array([0, 255] * 14, np.uint8)[:27].reshape(3, 3, 3)) == "binary"
    assert classify_volume(np.arange(27, dtype=np.float32).reshape(3, 3, 3)) == "grey"
    assert classify_volume(np.arange(27).reshape(3, 3, 3), phase=2) == "phase"
    assert voxel_sphericity(_ball((30, 30, 30), (15, 15, 15), 10)) > 0.9
    rod = np.zeros((5, 5, 60), bool)
    rod[2, 2, 2:58] = True
    assert voxel_sphericity(rod) < 0.5
