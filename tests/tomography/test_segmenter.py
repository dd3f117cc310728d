"""The baseline network: settings, targets, instances, inference, saving and deterministic training."""

import json

import numpy as np
import pytest
import torch

from nmc_dataset.errors import InputError
from nmc_dataset.tomography._phantom import phantom_ct_arrays
from nmc_dataset.tomography._scoring import instance_scores
from nmc_dataset.tomography._segmenter import (
    Segmenter,
    SegmenterConfig,
    SegNet3D,
    core_distance,
    instances_from_maps,
    prepare_sample,
    train_segmenter,
)

TINY = {
    "channels": [4, 8],
    "crop": 16,
    "batch": 2,
    "epochs": 2,
    "steps_per_epoch": 2,
    "tile": 16,
    "overlap": 4,
    "threads": 1,
}


def test_settings_are_checked():
    with pytest.raises(InputError, match="unknown segmenter setting"):
        SegmenterConfig.from_dict({"epochz": 3})
    with pytest.raises(InputError, match="crop: must be an integer multiple of 4"):
        SegmenterConfig.from_dict({"crop": 30})
    with pytest.raises(InputError, match="overlap"):
        SegmenterConfig.from_dict({"tile": 32, "overlap": 16})
    assert SegmenterConfig.from_dict(TINY).channels == (4, 8)


def test_core_distance_cuts_touching_particles_apart():
    lab = np.zeros((9, 9, 16), np.uint32)
    lab[1:8, 1:8, 1:8] = 1
    lab[1:8, 1:8, 8:15] = 2
    d = core_distance(lab, clip_vox=5)
    assert d[lab == 0].max() == 0
    assert np.all(d[:, :, 7][lab[:, :, 7] > 0] == 0) and np.all(d[:, :, 8][lab[:, :, 8] > 0] == 0)
    assert d[4, 4, 4] == pytest.approx(3 / 5)  # 3 voxels from the nearest boundary voxel


def test_instances_from_the_true_core_distance_recover_touching_particles():
    a = phantom_ct_arrays(2, size=40, n_particles=60, mean_radius_vox=5)
    cfg = SegmenterConfig()
    particle = instances_from_maps(a["particle"] > 0, core_distance(a["particle"], cfg.distance_clip_vox), cfg)
    q = instance_scores(a["particle"], particle)
    assert q["recall"] > 0.9 and q["merged_pred"] <= 0.05 * q["n_truth"]


@pytest.mark.parametrize("shape", [(16, 16, 16), (21, 30, 17), (9, 40, 12)])
def test_sliding_window_covers_any_shape(shape):
    torch.manual_seed(0)
    seg = Segmenter(SegNet3D((4, 8), "factorised").eval(), SegmenterConfig.from_dict(TINY), {})
    ct = np.random.default_rng(0).random(shape).astype(np.float32)
    prob, dist = seg.predict_maps(ct)
    assert prob.shape == (3,) + shape and dist.shape == shape
    assert np.allclose(prob.sum(axis=0), 1, atol=1e-5) and (dist >= 0).all() and (dist <= 1).all()


def test_sliding_window_blends_tiles_like_one_pass_in_the_interior():
    # with the same reflected context, a tiled pass and one pass over the whole volume agree where the
    # tiles see enough context (the network's border effects reach a few voxels into each tile)
    torch.manual_seed(1)
    cfg = SegmenterConfig.from_dict({**TINY, "tile": 32, "overlap": 8})
    seg = Segmenter(SegNet3D((4, 8), "factorised").eval(), cfg, {})
    ct = phantom_ct_arrays(3, size=48, n_particles=40, mean_radius_vox=5)["ct"]
    tiled, _ = seg.predict_maps(ct)
    whole = Segmenter(seg.net, SegmenterConfig.from_dict({**TINY, "tile": 64, "overlap": 8}), {})
    one, _ = whole.predict_maps(ct)
    agree = (tiled.argmax(0) == one.argmax(0)).mean()
    assert agree > 0.97 and np.abs(tiled - one).mean() < 0.02


def _samples(cfg, seeds):
    out = []
    for s in seeds:
        a = phantom_ct_arrays(s, size=24, n_particles=20, mean_radius_vox=4)
        out.append(prepare_sample(f"p{s}", a["ct"], a["phase"], a["particle"], cfg))
    return out


def test_training_is_deterministic_and_round_trips_without_pickles(tmp_path):
    from safetensors.torch import load_file

    cfg = SegmenterConfig.from_dict(TINY)
    train, val = _samples(cfg, [1, 2]), _samples(cfg, [3])
    threads = torch.get_num_threads()
    a = train_segmenter(train, val, cfg)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    b = train_segmenter(train, val, cfg)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["settings"]["channels"] == [4, 8] and len(meta["training"]["history"]) == 2
    assert set(load_file(str(tmp_path / "a" / "model.safetensors"))) == set(a.net.state_dict())
    c = Segmenter.load(tmp_path / "a")
    ct = phantom_ct_arrays(4, size=24, n_particles=20, mean_radius_vox=4)["ct"]
    pa, pb = a.predict_maps(ct), c.predict_maps(ct)
    assert np.array_equal(pa[0], pb[0]) and np.array_equal(pa[1], pb[1])
    phase, particle, _ = c.segment(ct)
    assert phase.dtype == np.uint8 and particle.dtype == np.uint32 and phase.shape == ct.shape
    d = train_segmenter(train, [], SegmenterConfig.from_dict({**TINY, "seed": 1, "epochs": 1}))
    assert not torch.equal(d.net.head.weight, a.net.head.weight)


def test_loading_a_broken_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        Segmenter.load(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    with pytest.raises(InputError, match="not a segmenter folder"):
        Segmenter.load(tmp_path / "m")
