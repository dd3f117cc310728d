"""Card figures: the histogram shows the data's distribution, slices show the volume, bytes are stable."""

from __future__ import annotations

import numpy as np
import pytest

from nmc_dataset.pipeline._card_figures import descriptor_histograms, example_slices


def _rgb(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)[..., :3]


def test_histograms_deterministic_and_drawn(tmp_path, rng):
    gen = {"d_max_um": rng.normal(10, 1, 500), "sphericity": rng.beta(8, 2, 500)}
    meas = {"d_max_um": rng.normal(10.5, 1, 300)}
    a = descriptor_histograms(gen, tmp_path / "a.png", measured=meas, units={"d_max_um": "µm"}, title="t")
    b = descriptor_histograms(gen, tmp_path / "b.png", measured=meas, units={"d_max_um": "µm"}, title="t")
    assert a.read_bytes() == b.read_bytes()
    img = _rgb(a)
    bar = 0.75 * np.array([0x4C, 0x72, 0xB0]) / 255 + 0.25  # generated bars: alpha 0.75 over white
    blue = np.abs(img - bar).sum(-1) < 0.05
    red = np.abs(img - np.array([0xC4, 0x4E, 0x52]) / 255).sum(-1) < 0.1  # measured outline
    assert blue.sum() > 2000 and red.sum() > 100
    # both panels are used: bars on the left half and on the right half
    h, w = blue.shape
    assert blue[:, : w // 2].sum() > 500 and blue[:, w // 2 :].sum() > 500
    with pytest.raises(ValueError):
        descriptor_histograms({}, tmp_path / "c.png")


def test_slices_show_the_body(tmp_path):
    vol = np.zeros((20, 30, 40), np.uint8)
    vol[5:15, 10:20, 10:30] = 3
    p = example_slices(vol, tmp_path / "s.png", voxel_size_um=0.128)
    img = _rgb(p)
    coloured = (img.max(-1) - img.min(-1)) > 0.1
    assert coloured.sum() > 1000  # the label block is drawn in colour on white
    with pytest.raises(ValueError, match="3D"):
        example_slices(vol[0], tmp_path / "t.png")
