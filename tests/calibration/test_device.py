"""Training on a GPU (``fit-grains --device``): the same cutouts and the same first step as on the
CPU, and checkpoints that move between devices. Skipped where torch sees no CUDA GPU (CI); the
device choice itself is checked everywhere."""

import numpy as np
import pytest
import torch

from nmc_dataset.calibration import _cutouts as C
from nmc_dataset.calibration._gan import Trainer, resolve_device, train
from nmc_dataset.calibration._generator import GNet
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.cli._main import main as cli
from nmc_dataset.errors import InputError
from tests.calibration.test_gan import TINY, _equal, _fits, _weights

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_device_names():
    assert resolve_device(None) == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fit_grains_refuses_cuda_without_a_gpu(tmp_path, capsys):
    rc = cli(
        [
            "fit-grains",
            str(tmp_path),
            "--recipe",
            "recipes/quick.yaml",
            "--out",
            str(tmp_path / "m"),
            "--device",
            "cuda",
        ]
    )
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@cuda
def test_cutouts_on_the_gpu_equal_the_cpu_ones():
    spec = C.CutoutSpec(grid=16, channels=6, p_max_px=40, margin_px=8)
    torch.manual_seed(0)
    gnet = GNet(hidden=(32,))
    gpu = GNet(hidden=(32,))
    gpu.load_state_dict(gnet.state_dict())
    gpu.cuda()
    for seed in range(3):
        a = C.t3d_batch(gnet, np.random.default_rng(seed), 0.004, 8, spec, with_hard=True)
        b = C.t3d_batch(gpu, np.random.default_rng(seed), 0.004, 8, spec, with_hard=True)
        assert b[0].device.type == "cuda"
        np.testing.assert_allclose(b[0].detach().cpu().numpy(), a[0].detach().numpy(), atol=1e-5)
        np.testing.assert_array_equal(b[1], a[1])
        assert (b[2].cpu() != a[2]).float().mean() < 1e-3  # float32 MLP: rare boundary pixels may flip
        fits = _fits(seed)
        r = C.t2d_batch(fits, np.random.default_rng(seed), 8, spec, with_hard=True)
        g = C.t2d_batch(fits, np.random.default_rng(seed), 8, spec, with_hard=True, device="cuda")
        np.testing.assert_allclose(g[0].cpu().numpy(), r[0].numpy(), atol=1e-9)
        np.testing.assert_array_equal(g[2].cpu().numpy(), r[2].numpy())


@cuda
def test_gpu_training_matches_the_cpu_and_resumes_across_devices(tmp_path):
    fits = _fits()
    cpu = Trainer(fits, 0.05, TINY, 4)
    gpu = Trainer(fits, 0.05, TINY, 4, device="cuda")
    for tr in (cpu, gpu):
        tr.ng_gt = tr.measure_ng_gt()
    assert cpu.ng_gt == gpu.ng_gt
    a, b = cpu.step(1, 1), gpu.step(1, 1)
    # same draws and weights; float32 convolutions (TF32 on the GPU) differ in the last bits
    assert b["loss_g"] == pytest.approx(a["loss_g"], rel=0.02, abs=1e-3)
    assert b["loss_d"] == pytest.approx(a["loss_d"], rel=0.02, abs=1e-3)
    # interrupted on the GPU, resumed on the CPU: a usable CPU model with the full schedule
    train(fits, 0.05, TINY, seed=4, out=tmp_path / "m", stop_after=1, device="cuda")
    model = train(fits, 0.05, TINY, seed=4, out=tmp_path / "m", resume=True, device="cpu")
    loaded = GrainModel.load(tmp_path / "m")
    assert loaded.training["epochs_done"] == TINY.epochs and _equal(_weights(model), _weights(loaded))
    assert next(loaded.gnet.parameters()).device.type == "cpu"
