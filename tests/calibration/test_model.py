"""GrainModel: write / load round trip (safetensors + JSON), versions, bad files, sampling."""

import json

import numpy as np
import pytest
import torch

from nmc_dataset.calibration._generator import GNet
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.tessellation._gbpd import GBPD


@pytest.fixture
def model():
    torch.manual_seed(7)
    return GrainModel(
        GNet(kappa=12, hidden=(32, 16)),
        intensity_per_px3=0.0021,
        pixel_size_um=0.05,
        beta=0.4,
        input_scale_px=8.0,
        cell_margin_px=12.0,
        training={"epochs_done": 3, "ng_gt": np.float64(0.02)},
    )


def test_round_trip_is_exact(model, tmp_path):
    model.write(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format"] == "nmc-dataset/grain-model" and meta["format_version"] == 1
    assert meta["kappa"] == 12 and meta["architecture"]["hidden"] == [32, 16]
    assert meta["marker_bounds"] == {"r": [1.0, 10.0], "diag": [0.001, 50.0]}
    assert meta["pixel_size_um"] == 0.05 and meta["training"]["ng_gt"] == 0.02
    back = GrainModel.load(tmp_path / "m")
    assert back.intensity_per_px3 == 0.0021 and back.beta == 0.4 and back.input_scale_px == 8.0
    for (k, a), (k2, b) in zip(model.gnet.state_dict().items(), back.gnet.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    g1 = model.sample(np.random.default_rng(5), -20, 20)
    g2 = back.sample(np.random.default_rng(5), -20, 20)
    np.testing.assert_array_equal(g1.seeds, g2.seeds)
    np.testing.assert_array_equal(g1.diag, g2.diag)
    np.testing.assert_array_equal(g1.offsets, g2.offsets)


def test_sample_is_a_3d_gbpd_in_bounds(model):
    g = model.sample(np.random.default_rng(1), [-30, -20, -10], [30, 20, 10])
    assert isinstance(g, GBPD) and g.dim == 3
    assert np.all(g.seeds >= np.array([-30, -20, -10]) - 12 - 1e-9)
    assert np.all(g.seeds <= np.array([30, 20, 10]) + 12 + 1e-9)
    assert np.all((g.diag >= 0.001) & (g.diag <= 50)) and np.all((g.offsets >= 1) & (g.offsets <= 10))
    assert np.all((g.roll >= 0) & (g.roll <= np.pi))
    expected = 0.0021 * 84 * 64 * 44
    assert abs(g.n - expected) < 5 * np.sqrt(expected)


def test_newer_version_is_refused(model, tmp_path):
    model.write(tmp_path / "m")
    p = tmp_path / "m" / "model.json"
    meta = json.loads(p.read_text())
    meta["format_version"] = 2
    p.write_text(json.dumps(meta))
    with pytest.raises(FormatVersionError, match="format_version 2"):
        GrainModel.load(tmp_path / "m")


@pytest.mark.parametrize(
    "breakage, match",
    [
        (lambda d: (d / "gnet.safetensors").unlink(), "weights file not found"),
        (lambda d: (d / "gnet.safetensors").write_bytes(b"\x80\x04 pickle? no"), "safetensors"),
        (lambda d: (d / "model.json").write_text("{"), "not valid JSON"),
        (
            lambda d: (d / "model.json").write_text(
                json.dumps({"format": "nmc-dataset/shell-model", "format_version": 1})
            ),
            "not a nmc-dataset/grain-model",
        ),
    ],
)
def test_broken_files_are_input_errors(model, tmp_path, breakage, match):
    model.write(tmp_path / "m")
    breakage(tmp_path / "m")
    with pytest.raises(InputError, match=match):
        GrainModel.load(tmp_path / "m")


def test_weights_of_another_architecture_are_refused(model, tmp_path):
    model.write(tmp_path / "m")
    p = tmp_path / "m" / "model.json"
    meta = json.loads(p.read_text())
    meta["architecture"]["hidden"] = [64, 16]
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not match the architecture"):
        GrainModel.load(tmp_path / "m")


def test_invalid_values_are_refused(model, tmp_path):
    model.write(tmp_path / "m")
    p = tmp_path / "m" / "model.json"
    meta = json.loads(p.read_text())
    meta["intensity_per_px3"] = -1
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="intensity_per_px3"):
        GrainModel.load(tmp_path / "m")


def test_written_model_bytes_do_not_depend_on_the_process(tmp_path):
    """Same weights -> same bytes, whichever process writes them (safetensors keeps metadata in a
    hash map whose order varies between processes) and wherever; no wall-clock time in model.json."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from nmc_dataset.calibration._generator import GNet; "
        "from nmc_dataset.calibration._model import GrainModel; torch.manual_seed(0); "
        "GrainModel(gnet=GNet(hidden=(8, 8)), intensity_per_px3=0.0018, pixel_size_um=0.05).write(sys.argv[1])"
    )
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    for f in ("gnet.safetensors", "model.json"):
        blobs = {(tmp_path / n / f).read_bytes() for n in ("a", "b", "c")}
        assert len(blobs) == 1, f
    assert b"seconds" not in (tmp_path / "a" / "model.json").read_bytes()


def test_depth_aware_model_round_trip_and_old_models_load_as_paper_models(model, tmp_path):
    torch.manual_seed(3)
    deep = GrainModel(GNet(kappa=12, hidden=(8,), depth_aware=True), 0.002, 0.05, reference_radius_px=30.0)
    deep.write(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "model.json").read_text())
    assert meta["architecture"]["depth_aware"] is True and meta["architecture"]["inputs"] == 61
    assert meta["depth"]["reference_radius_px"] == 30.0
    back = GrainModel.load(tmp_path / "d")
    assert back.depth_aware and back.reference_radius_px == 30.0
    # sampling without a radius uses the stored one; given one, it is used
    a = back.sample(np.random.default_rng(2), -15, 15)
    b = deep.sample(np.random.default_rng(2), -15, 15, radius=30.0)
    np.testing.assert_array_equal(a.diag, b.diag)
    c = deep.sample(np.random.default_rng(2), -15, 15, radius=lambda u: np.full(len(u), 30.0))
    np.testing.assert_array_equal(a.diag, c.diag)
    # a model written before the option (no depth keys): not depth-aware, sampling unchanged
    model.write(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "depth" not in meta and "depth_aware" not in meta["architecture"] and meta["architecture"]["inputs"] == 60
    old = GrainModel.load(tmp_path / "m")
    assert not old.depth_aware and old.reference_radius_px is None
    np.testing.assert_array_equal(
        old.sample(np.random.default_rng(5), -20, 20, radius=7.0).diag,
        model.sample(np.random.default_rng(5), -20, 20).diag,
    )
    # weights of a paper model under a depth-aware architecture do not load
    meta["architecture"]["depth_aware"] = True
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="weights do not match"):
        GrainModel.load(tmp_path / "m")
