"""Stereological calibration: least-squares GAN training of ``G_net`` on 2D fits.

One step (paper, Algorithm 2):

1. **G step** -- ``batch_g`` generated cutouts (T3D, soft, differentiable); loss
   ``mean((D(x) - 1)^2)``; one Adam step on ``G_net`` (gradient norm clipped). D sees the hard
   (rounded) image in the forward pass and passes the gradient to the soft image
   (straight-through, ``g_input="straight-through"``; ``"soft"`` feeds the soft image as in the
   paper's pseudocode). D gets ``batch_g`` measured cutouts alongside (not in the loss) so that its
   batch-norm layers see a mixed batch, as in D steps.
2. **D step** -- ``batch_d`` measured cutouts (T2D of augmented 2D fits) and ``batch_d``
   generated ones, all hard (exact one-hot of the hard tessellation, the limit of rounding); loss
   ``mean((D(real) - 1)^2) + mean(D(fake)^2)``; the Adam step is skipped while the loss is at or
   below ``d_skip_below`` (paper: 0.09 in the algorithm, 0.32 in the text).
3. **Intensity** -- ``mu <- mu (0.5 + 0.5 NG_gt / NG_gen)``, NG = visible grains per unit area in
   cutouts (after every step, or once per epoch with ``intensity_update="epoch"``).

Training is deterministic given the seed (``torch.manual_seed`` for the initial weights, one
``numpy.random.Generator`` for everything drawn) on the CPU; ``device="cuda"`` runs the networks
and cutout images on a GPU with the same draws. With ``TrainConfig.select_sections`` the model
keeps the epoch whose sections score best against the measured ones (:func:`train_restarts`
chooses between seeds by the same score). With an output folder it writes, after every
epoch, ``training/checkpoint-NNNNN.safetensors`` + ``training/checkpoint.json`` (networks, optimiser
states, random state, ``mu``, history; atomic), ``training/log.csv`` and ``training/training.png``;
``resume=True`` continues from the checkpoint and ends with the same weights as an uninterrupted
run. A NaN/inf loss raises :class:`~nmc_dataset.errors.TrainingError` naming the epoch and step;
the last good checkpoint stays on disk.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import time
from pathlib import Path

import numpy as np
import torch

from nmc_dataset._util import (
    atomic_path,
    check_format,
    log,
    progress,
    read_json,
    retain_freed_memory,
    write_json_atomic,
    write_text_atomic,
)
from nmc_dataset.calibration import _descriptors as De
from nmc_dataset.calibration._cutouts import CutoutSpec, t2d_batch, t3d_batch
from nmc_dataset.calibration._discriminator import Discriminator
from nmc_dataset.calibration._generator import GNet
from nmc_dataset.calibration._model import GrainModel
from nmc_dataset.ebsd._detection import (
    DEFAULT_MIN_CONFIDENT_PX,
    DetectionLimit,
    calibrate_rates,
    check_min_confident_px,
)
from nmc_dataset.errors import InputError, TrainingError
from nmc_dataset.tessellation._gbpd import DIAG_MIN, GBPD

CHECKPOINT_FORMAT = "nmc-dataset/grain-checkpoint"
CHECKPOINT_VERSION = 1
LOG_COLUMNS = [
    "epoch",
    "steps",
    "loss_g",
    "loss_d",
    "d_updates",
    "intensity_per_px3",
    "ng_gen",
    "ng_gt",
    "seconds",
    "d_real_train",
    "d_real_holdout",
    "d_fake",
    "select_score",
]
#: Cutouts per side in the held-out discriminator check (``TrainConfig.holdout_sections``).
HOLDOUT_CUTOUTS = 128


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """``G_net``'s architecture (the recipe's ``grains.generator``).

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths.
    r_bounds : (float, float)
        Range of the offsets ``r_i``.
    diag_bounds : (float, float)
        Range of each diagonal marker entry.
    input_scale_px : float
        Neighbour displacements are divided by this (pixels) before entering the network.
    depth_aware : bool
        Not in the paper (off by default): ``G_net`` also sees the seed's relative distance from
        the particle centre, and the discriminator a depth channel (docs/method.md#depth-aware).
    """

    hidden: tuple = (128, 128, 64)
    r_bounds: tuple = (1.0, 10.0)
    diag_bounds: tuple = (DIAG_MIN, 50.0)
    input_scale_px: float = 10.0
    depth_aware: bool = False


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator's architecture (the recipe's ``grains.discriminator``).

    Parameters
    ----------
    width : int
        Feature maps of the first block (doubled per block).
    blocks : int
        Convolution blocks.
    convs_per_block : int
        Convolutions per block.
    dense : int
        Units of the hidden dense layer.
    """

    width: int = 32
    blocks: int = 3
    convs_per_block: int = 2
    dense: int = 128


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Schedule, optimiser and model selection of the training (the recipe's ``grains.training``).

    The fields are those of the recipe section (docs/method.md#gan-training); the ones not in the
    paper are explained on :class:`TrainConfig`.

    Parameters
    ----------
    epochs, steps_per_epoch : int
        Schedule length.
    batch_g, batch_d : int
        Generated cutouts per G step; measured and generated cutouts (each) per D step.
    lr : float
        Adam learning rate.
    lr_schedule : {"constant", "cosine"}
        Learning-rate schedule.
    adam_betas : (float, float)
        Adam's betas.
    grad_clip : float
        Gradient-norm clipping.
    d_skip_below : float
        The D update is skipped while its loss is at or below this.
    augment : float
        Largest relative augmentation of the 2D fits' markers.
    intensity_update : {"step", "epoch"}
        When the seed intensity is adapted.
    g_input : {"straight-through", "soft"}
        What D sees in G steps.
    ng_gt_cutouts : int
        Measured cutouts that estimate the measured visible-grain density.
    ema_decay : float
        Moving-average decay of the generator weights (0: off).
    d_r1 : float
        R1 penalty weight (0: off).
    holdout_sections : int
        Sections kept out of training for the memorisation check (0: off).
    select_sections : int
        Sections drawn per epoch for the model selection (0: off, the last epoch).
    select_min_area_px : int
        Detection limit of the selection score (pixels).
    select_metric : {"max", "mean"}
        How the selection combines the four descriptor distances.
    select_min_confident_px : int
        The instrument limit's criterion of the selection: where the measured sections lost
        pixels, a grain counts on either side with at least this many confident pixels (0: off).
    """

    epochs: int = 200
    steps_per_epoch: int = 100
    batch_g: int = 64
    batch_d: int = 128
    lr: float = 1e-4
    lr_schedule: str = "constant"
    adam_betas: tuple = (0.5, 0.999)
    grad_clip: float = 1.0
    d_skip_below: float = 0.09
    augment: float = 0.2
    intensity_update: str = "step"
    g_input: str = "straight-through"
    ng_gt_cutouts: int = 512
    ema_decay: float = 0.0
    d_r1: float = 0.0
    holdout_sections: int = 0
    select_sections: int = 0
    select_min_area_px: int = 5
    select_metric: str = "max"
    select_min_confident_px: int = DEFAULT_MIN_CONFIDENT_PX


#: flat names of the stored configuration (model.json / checkpoints) -> (group, field)
_FLAT = {
    **{n: ("generator", n) for n in ["hidden", "r_bounds", "diag_bounds", "input_scale_px", "depth_aware"]},
    **{
        k: ("discriminator", v)
        for k, v in {
            "d_width": "width",
            "d_blocks": "blocks",
            "d_convs_per_block": "convs_per_block",
            "d_dense": "dense",
        }.items()
    },
    **{n: ("cutouts", n) for n in ["grid", "channels", "p_max_px", "margin_px", "beta", "ng_min_px"]},
    **{
        n: ("training", n)
        for n in [
            "epochs",
            "steps_per_epoch",
            "batch_g",
            "batch_d",
            "lr",
            "lr_schedule",
            "adam_betas",
            "grad_clip",
            "d_skip_below",
            "augment",
            "intensity_update",
            "g_input",
            "ng_gt_cutouts",
            "ema_decay",
            "d_r1",
            "holdout_sections",
            "select_sections",
            "select_min_area_px",
            "select_metric",
            "select_min_confident_px",
        ]
    },
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All hyper-parameters of the calibration, nested as the recipe's ``grains:`` section
    (defaults = the paper's numbers where it gives them).

    Parameters
    ----------
    kappa : int
        Nearest neighbours per seed fed to ``G_net``.
    intensity_init_per_px3 : float
        Initial Poisson seed intensity (seeds per pixel³).
    generator : GeneratorConfig
        ``G_net``'s architecture.
    discriminator : DiscriminatorConfig
        The discriminator's architecture.
    cutouts : nmc_dataset.calibration.CutoutSpec
        The discriminator's view.
    training : ScheduleConfig
        Schedule, optimiser and model selection.

    Notes
    -----

    Generator: ``kappa``, ``hidden``, ``r_bounds``, ``diag_bounds``, ``input_scale_px``.
    Discriminator: ``d_width``, ``d_blocks``, ``d_convs_per_block``, ``d_dense``.
    Cutouts: ``grid``, ``channels``, ``p_max_px``, ``margin_px``, ``beta``, ``ng_min_px``.
    Schedule: ``epochs``, ``steps_per_epoch``, ``batch_g``, ``batch_d``, ``lr``, ``adam_betas``,
    ``grad_clip``, ``d_skip_below``, ``augment``, ``intensity_init_per_px3``, ``intensity_update``,
    ``g_input``, ``ng_gt_cutouts``, ``ema_decay``, ``lr_schedule``, ``d_r1``.

    ``holdout_sections`` (not in the paper; 0 = off) keeps the last ``k`` sections out of training
    and, after every epoch, logs the discriminator's mean output (batch-norm in eval mode) on
    measured cutouts of the training sections (``d_real_train``), of the held-out ones
    (``d_real_holdout``) and on generated cutouts (``d_fake``). A discriminator that scores held-out
    sections like generated ones while it scores the training sections high has memorised the
    few sections it trains on (its loss then keeps falling whatever the generator does): the
    generator is then as close to fresh data as the discriminator can tell, and more training on
    the same sections mostly moves it around. The check draws from its own random stream, so it
    does not change the run.

    ``d_r1`` (not in the paper; 0 = off) adds the R1 penalty ``(d_r1 / 2) E ||grad_x D(x)||^2``
    on measured cutouts to the discriminator's loss (Mescheder et al. 2018), which keeps D smooth
    around the data so that the generator cannot fool it with small adversarial changes; the
    skip test still uses the plain least-squares loss.

    ``select_sections`` (not in the paper; 0 = off, the paper keeps the last epoch) draws, after
    every epoch, that many central sections of the current generator (radius: the measured
    sections' mean) and scores them against the measured sections with
    :func:`~nmc_dataset.calibration._descriptors.section_score` (W1 / measured spread for area, η, α and
    chords, grains of at least ``select_min_area_px`` on both sides; ``select_metric`` ``"max"``
    scores the worst of the four, ``"mean"`` their mean); the model
    keeps the generator and ``mu`` of the best-scoring epoch. An adversarial game does not
    settle: its last iterate wanders around the target while the discriminator memorises the few
    sections it sees, so early stopping on the quantity the calibration is for picks the epoch
    that matches best. The draws use their own random stream, so the training run is unchanged.

    ``lr_schedule`` (not in the paper): ``"constant"`` (the paper) or ``"cosine"``, which lowers
    both learning rates from ``lr`` to 0 over the whole schedule,
    ``lr_t = lr (1 + cos(pi t / T)) / 2``, so that a short run ends settled instead of in the
    middle of the adversarial oscillation.

    ``ema_decay`` (not in the paper; 0 = off) keeps an exponential moving average of the generator
    weights, ``w_ema <- d w_ema + (1 - d) w`` after every G step with the warm-up
    ``d = min(ema_decay, (1 + t) / (10 + t))``; the saved model then holds the averaged weights,
    which fluctuate far less than the last iterate of an adversarial game.

    The flat names of the stored form (:meth:`from_flat`, :meth:`to_dict`) and their defaults:

    kappa : int, default 12
        Nearest neighbours per seed that ``G_net`` sees.
    hidden : tuple of int, default (128, 128, 64)
        Hidden layer widths of ``G_net``.
    r_bounds : tuple of 2 floats, default (1.0, 10.0)
        Range of the offsets ``r_i``.
    diag_bounds : tuple of 2 floats, default (DIAG_MIN, 50.0)
        Range of each diagonal marker entry.
    input_scale_px : float, default 10.0
        Displacements are divided by this before entering ``G_net``.
    depth_aware : bool, default False
        ``G_net`` also sees the seed's relative distance from the particle centre and the
        discriminator a depth channel (stored only when on).
    d_width : int, default 32
        Feature maps of the discriminator's first block (doubled per block).
    d_blocks : int, default 3
        Discriminator conv blocks, each followed by max-pooling.
    d_convs_per_block : int, default 2
        Conv + BN + ReLU layers per block.
    d_dense : int, default 128
        Units of the discriminator's hidden dense layer.
    grid : int, default 32
        Cutout grid points per side.
    channels : int, default 12
        Cutout channels kept.
    p_max_px : float, default 80.0
        Cutout centres at ``p ~ U(0, p_max_px]`` from the particle centre.
    margin_px : float, default 16.0
        Seeds farther than this outside a cutout are ignored.
    beta : float, default 2.0
        Relative soft-assignment temperature.
    ng_min_px : int, default 1
        Grid points a grain must cover to count as visible in NG.
    epochs : int, default 200
        Training epochs.
    steps_per_epoch : int, default 100
        G/D steps per epoch.
    batch_g : int, default 64
        Generated cutouts per G step.
    batch_d : int, default 128
        Measured and generated cutouts (each) per D step.
    lr : float, default 1e-4
        Adam learning rate of both networks.
    lr_schedule : {"constant", "cosine"}, default "constant"
        Learning-rate schedule.
    adam_betas : tuple of 2 floats, default (0.5, 0.999)
        Adam ``(beta1, beta2)``.
    grad_clip : float, default 1.0
        Gradient-norm clip of both networks.
    d_skip_below : float, default 0.09
        The D step is skipped while its loss is at or below this.
    augment : float, default 0.2
        Largest relative change of the measured markers' augmentation (0 disables).
    intensity_init_per_px3 : float, default 0.0018
        Initial seed intensity ``mu`` (seeds per pixel³).
    intensity_update : {"step", "epoch"}, default "step"
        When ``mu`` is updated from the NG ratio.
    g_input : {"straight-through", "soft"}, default "straight-through"
        What D sees of generated cutouts in the G step.
    ng_gt_cutouts : int, default 512
        Measured cutouts that estimate the target NG.
    ema_decay : float, default 0.0
        Decay of the generator weights' moving average (0 = off).
    d_r1 : float, default 0.0
        Weight of the R1 penalty on measured cutouts (0 = off).
    holdout_sections : int, default 0
        Sections kept out of training for the memorisation check (0 = off).
    select_sections : int, default 0
        Sections drawn per epoch to select the best epoch (0 = off: keep the last one).
    select_min_area_px : int, default 5
        Detection limit (pixels) of the selection score's grains.
    select_metric : {"max", "mean"}, default "max"
        How the four descriptor scores combine into the selection score.
    """

    kappa: int = 12
    intensity_init_per_px3: float = 0.0018
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    cutouts: CutoutSpec = CutoutSpec()
    training: ScheduleConfig = ScheduleConfig()

    @classmethod
    def from_section(cls, cfg: dict) -> "TrainConfig":
        """Build from a recipe ``grains:`` section (nested keys; see the section schema).

        Parameters
        ----------
        cfg : dict
            The ``grains:`` section; ``training.restarts`` is the runner's and ignored here.

        Returns
        -------
        TrainConfig
        """

        def part(kind, key, drop=()):
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get(key, {}).items() if k not in drop}
            return kind(**values)

        kw = {k: cfg[k] for k in ("kappa", "intensity_init_per_px3") if k in cfg}
        return cls(
            **kw,
            generator=part(GeneratorConfig, "generator"),
            discriminator=part(DiscriminatorConfig, "discriminator"),
            cutouts=part(CutoutSpec, "cutouts"),
            training=part(ScheduleConfig, "training", drop=("restarts",)),
        )

    @classmethod
    def from_flat(cls, **flat) -> "TrainConfig":
        """Build from the flat names of the stored form (``hidden=...``, ``d_width=...``, ``epochs=...``).

        Parameters
        ----------
        **flat
            Keyword arguments named as in :meth:`to_dict`.

        Returns
        -------
        TrainConfig
        """
        groups = {"generator": {}, "discriminator": {}, "cutouts": {}, "training": {}}
        top = {}
        for k, v in flat.items():
            v = tuple(v) if isinstance(v, list) else v
            if k in _FLAT:
                groups[_FLAT[k][0]][_FLAT[k][1]] = v
            else:
                top[k] = v
        return cls(
            **top,
            generator=GeneratorConfig(**groups["generator"]),
            discriminator=DiscriminatorConfig(**groups["discriminator"]),
            cutouts=CutoutSpec(**groups["cutouts"]),
            training=ScheduleConfig(**groups["training"]),
        )

    def replace(self, **flat) -> "TrainConfig":
        """A copy with some fields changed, named as in :meth:`to_dict`.

        Parameters
        ----------
        **flat
            Keyword arguments named as in :meth:`to_dict`.

        Returns
        -------
        TrainConfig
        """
        return TrainConfig.from_flat(**{**self.to_dict(), **flat})

    def to_dict(self) -> dict:
        """The stored (flat) form, as in ``model.json`` and checkpoints: every field by its flat name.

        Returns
        -------
        dict
        """
        out = {"kappa": self.kappa}
        for flat, (group, name) in _FLAT.items():
            v = getattr(getattr(self, group), name)
            if (flat == "depth_aware" and not v) or (
                flat == "select_min_confident_px" and v == DEFAULT_MIN_CONFIDENT_PX
            ):
                continue  # defaults keep the stored config (and the checkpoints) they always had
            out[flat] = list(v) if isinstance(v, tuple) else v
        out["intensity_init_per_px3"] = self.intensity_init_per_px3
        return out


# --------------------------------------------------------------------------- state (de)serialisation
def _flatten_optimizer(opt, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state_keys": {}}
    for pid, st in sd["state"].items():
        meta["state_keys"][str(pid)] = sorted(st)
        for name, val in st.items():
            tensors[f"{prefix}.state.{pid}.{name}"] = torch.as_tensor(val).clone().contiguous()
    return tensors, meta


def _unflatten_optimizer(opt, prefix: str, tensors: dict, meta: dict) -> None:
    state = {}
    for pid, names in meta["state_keys"].items():
        state[int(pid)] = {n: tensors[f"{prefix}.state.{pid}.{n}"] for n in names}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def resolve_device(device) -> torch.device:
    """``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when available) or a
    ``torch.device``, checked, as a torch device.

    Parameters
    ----------
    device : str or torch.device or None
        The device name; None means ``"cpu"``.

    Returns
    -------
    torch.device
        The checked device.

    Raises
    ------
    InputError
        For an unknown name, or CUDA asked for without a GPU.
    """
    name = str(device or "cpu").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this torch build sees no CUDA GPU (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device {device!r}: {e}") from None


class Trainer:
    """One calibration run's state: networks, optimisers, intensity, random streams, history.

    :func:`train` drives it epoch by epoch and checkpoints it; benchmarks time its steps.

    Parameters
    ----------
    fits : list of GBPD
        Fitted 2D tessellations of the measured sections (pixels, section centre origin).
    pixel_size_um : float
        Their pixel size (µm).
    cfg : TrainConfig
        Hyper-parameters.
    seed : int
        Seed of every random stream of the run.
    device : str or torch.device
        Where the networks run (``"cpu"``, ``"cuda"``, ``"auto"``).
    radii_px : sequence of float, optional
        The particle radius of each section of ``fits`` (pixels); required by a depth-aware
        generator (``cfg.generator.depth_aware``).
    """

    def __init__(self, fits, pixel_size_um, cfg: TrainConfig, seed: int, device="cpu", radii_px=None):
        k = int(cfg.training.holdout_sections)
        if k < 0 or (k and k >= len(fits)):
            raise InputError(
                f"grains.training.holdout_sections must be >= 0 and leave at least one of the "
                f"{len(fits)} section(s) to train on, got {cfg.training.holdout_sections}"
            )
        fits = list(fits)
        self.radii, self.holdout_radii = None, None
        if cfg.generator.depth_aware:
            if radii_px is None or len(radii_px) != len(fits):
                raise InputError("grains.generator.depth_aware needs the radius of every section (fit-sections output)")
            radii = [float(r) for r in radii_px]
            if not all(np.isfinite(r) and r > 0 for r in radii):
                raise InputError(f"grains.generator.depth_aware: section radii must be > 0, got {radii}")
            self.radii, self.holdout_radii = radii[: len(fits) - k], radii[len(fits) - k :]
        self.holdout = fits[len(fits) - k :] if k else []
        fits = fits[: len(fits) - k]
        self.fits = fits
        self.pixel_size_um = float(pixel_size_um)
        self.cfg = cfg
        self.seed = int(seed)
        if cfg.training.lr_schedule not in ("constant", "cosine"):
            raise InputError(
                f"grains.training.lr_schedule must be 'constant' or 'cosine', got {cfg.training.lr_schedule!r}"
            )
        if not 0 <= cfg.training.ema_decay < 1:
            raise InputError(f"grains.training.ema_decay must be in [0, 1), got {cfg.training.ema_decay}")
        if not (np.isfinite(cfg.training.d_r1) and cfg.training.d_r1 >= 0):
            raise InputError(f"grains.training.d_r1 must be a number >= 0, got {cfg.training.d_r1}")
        if cfg.training.select_sections < 0 or cfg.training.select_min_area_px < 1:
            raise InputError(
                "grains.training.select_sections must be >= 0 and select_min_area_px >= 1, got "
                f"{cfg.training.select_sections} and {cfg.training.select_min_area_px}"
            )
        if cfg.training.select_metric not in ("mean", "max"):
            raise InputError(
                f"grains.training.select_metric must be 'mean' or 'max', got {cfg.training.select_metric!r}"
            )
        check_min_confident_px(cfg.training.select_min_confident_px, "grains.training.select_min_confident_px")
        self.device = resolve_device(device)
        # the weights are drawn on the CPU (same initial weights on every device), then moved
        torch.manual_seed(self.seed)
        self.gnet = new_gnet(cfg)
        self.disc = Discriminator(
            channels=cfg.cutouts.channels + int(cfg.generator.depth_aware),  # + the depth channel
            grid=cfg.cutouts.grid,
            width=cfg.discriminator.width,
            blocks=cfg.discriminator.blocks,
            convs_per_block=cfg.discriminator.convs_per_block,
            dense=cfg.discriminator.dense,
        )
        self.gnet_ema = None
        if cfg.training.ema_decay > 0:
            self.gnet_ema = new_gnet(cfg)
            self.gnet_ema.load_state_dict(self.gnet.state_dict())
            self.gnet_ema.requires_grad_(False)
        for net in (self.gnet, self.disc, self.gnet_ema):
            if net is not None:
                net.to(self.device)
        self.opt_g = torch.optim.Adam(self.gnet.parameters(), lr=cfg.training.lr, betas=tuple(cfg.training.adam_betas))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.training.lr, betas=tuple(cfg.training.adam_betas))
        self.rng = np.random.default_rng(self.seed)
        self.mu = float(cfg.intensity_init_per_px3)
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.ng_gt = None
        self.seconds = 0.0
        # checkpoint selection (cfg.training.select_sections): measured descriptors, section radius, best epoch
        self.select_measured, self.select_radius = None, None
        self.select_rates_measured, self.select_rates = (0.0, 0.0, 0.0), None
        self.best: dict | None = None

    def set_selection_reference(self, sections) -> None:
        """The measured sections (``fit2d.SectionFit``) that :meth:`select_check` scores against."""

        c = self.cfg
        if not c.training.select_sections:
            return
        if not sections:
            raise InputError("grains.training.select_sections needs the measured sections (fit-sections output)")
        # the instrument's detection limit (nmc_dataset.ebsd._detection): active only when the
        # measured sections lost pixels; the model's sections then go through the same loss
        self.select_measured = De.fitted_descriptors(
            sections, c.training.select_min_area_px, c.training.select_min_confident_px
        )
        self.select_rates_measured = De.measured_low_ci_rates(sections)
        self.select_rates = None  # calibrated on the model's sections, refined at every check
        self.select_radius = float(np.mean([f.radius_px for f in sections]))

    # ---------------------------------------------------------------- checkpoint
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"gnet.{k}": v for k, v in self.gnet.state_dict().items()}
        tensors.update({f"disc.{k}": v for k, v in self.disc.state_dict().items()})
        if self.gnet_ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.gnet_ema.state_dict().items()})
        tg, mg = _flatten_optimizer(self.opt_g, "opt_g")
        td, md = _flatten_optimizer(self.opt_d, "opt_d")
        tensors.update(tg)
        tensors.update(td)
        if self.best is not None:
            tensors.update({f"best.{k}": v for k, v in self.best["state"].items()})
        # CPU copies: a checkpoint written on a GPU resumes on the CPU and the other way round
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
        tensors["torch_rng"] = torch.get_rng_state()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "intensity_per_px3": self.mu,
            "ng_gt": self.ng_gt,
            "seed": self.seed,
            "seconds": self.seconds,
            "numpy_rng": self.rng.bit_generator.state,
            "opt_g": mg,
            "opt_d": md,
            "history": self.history,
            "config": self.cfg.to_dict(),
            "best": None if self.best is None else {k: self.best[k] for k in ("epoch", "score", "mu")},
            # the selection's loss rates, calibrated at every check: a resumed run refines them from here
            "select_rates": None if self.select_rates is None else [float(r) for r in self.select_rates],
        }
        # the weights go to a new file named by the epoch, then checkpoint.json (atomic) points at
        # it, then older weight files are removed: a crash at any moment leaves a consistent pair.
        with atomic_path(folder / f"checkpoint-{self.epoch:05d}.safetensors") as tmp:
            save_file(tensors, str(tmp))
        meta["weights"] = f"checkpoint-{self.epoch:05d}.safetensors"
        write_json_atomic(folder / "checkpoint.json", meta)
        for old in folder.glob("checkpoint-*.safetensors"):
            if old.name != meta["weights"]:
                old.unlink(missing_ok=True)

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        meta = read_json(folder / "checkpoint.json")
        check_format(meta, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, folder / "checkpoint.json")
        if meta["config"] != self.cfg.to_dict():
            raise InputError(
                "the checkpoint was made with other hyper-parameters; start again without --resume",
                folder / "checkpoint.json",
            )
        if meta["seed"] != self.seed:
            raise InputError(
                f"the checkpoint was made with seed {meta['seed']}, not {self.seed}", folder / "checkpoint.json"
            )
        tensors = load_file(str(folder / meta["weights"]))  # CPU tensors; load_state_dict copies them over
        self.gnet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("gnet.")})
        self.disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
        if self.gnet_ema is not None:
            self.gnet_ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _unflatten_optimizer(self.opt_g, "opt_g", tensors, meta["opt_g"])
        _unflatten_optimizer(self.opt_d, "opt_d", tensors, meta["opt_d"])
        torch.set_rng_state(tensors["torch_rng"])
        self.rng.bit_generator.state = meta["numpy_rng"]
        self.epoch = int(meta["epoch"])
        self.mu = float(meta["intensity_per_px3"])
        self.ng_gt = meta["ng_gt"]
        self.history = list(meta["history"])
        self.seconds = float(meta.get("seconds", 0.0))
        rates = meta.get("select_rates")
        self.select_rates = None if rates is None else tuple(float(r) for r in rates)
        if meta.get("best"):
            self.best = {**meta["best"], "state": {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}}

    # ---------------------------------------------------------------- steps
    def fake(self, batch: int):
        c = self.cfg
        return t3d_batch(
            self.gnet,
            self.rng,
            self.mu,
            batch,
            c.cutouts,
            kappa=c.kappa,
            input_scale_px=c.generator.input_scale_px,
            with_hard=True,
            radii=self.radii,
        )

    def real(self, batch: int):
        c = self.cfg
        return t2d_batch(
            self.fits,
            self.rng,
            batch,
            c.cutouts,
            augment_rel=c.training.augment,
            with_hard=True,
            device=self.device,
            radii=self.radii,
        )

    def measure_ng_gt(self) -> float:
        ngs = []
        left = self.cfg.training.ng_gt_cutouts
        while left > 0:
            b = min(left, 128)
            _, ng, _ = self.real(b)
            ngs.append(ng)
            left -= b
        return float(np.concatenate(ngs).mean())

    def steps_before(self, epoch: int, step: int) -> int:
        """Steps completed before step ``step`` (1-based) of epoch ``epoch`` (1-based)."""
        return (epoch - 1) * self.cfg.training.steps_per_epoch + step - 1

    def set_lr(self, epoch: int, step: int) -> float:
        """Set (and return) the learning rate of step ``step`` of epoch ``epoch``."""
        c = self.cfg
        lr = c.training.lr
        if c.training.lr_schedule == "cosine":
            t = self.steps_before(epoch, step)
            lr = c.training.lr * 0.5 * (1.0 + np.cos(np.pi * t / (c.training.epochs * c.training.steps_per_epoch)))
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def step(self, epoch: int, step: int) -> dict:
        c = self.cfg
        self.set_lr(epoch, step)
        # --- G step (D in train mode on a mixed batch, as in D steps, so batch-norm sees the same
        # statistics; only the generated half enters the loss)
        self.gnet.train()
        self.disc.train()
        imgs, ng_g, hard_g = self.fake(c.training.batch_g)
        imgs = imgs.float()
        x = hard_g.float() + imgs - imgs.detach() if c.training.g_input == "straight-through" else imgs
        _, _, real_g = self.real(c.training.batch_g)
        out_g = self.disc(torch.cat([real_g.float(), x]))
        loss_g = ((out_g[c.training.batch_g :] - 1.0) ** 2).mean()
        self._check(loss_g, "generator", epoch, step)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(self.gnet.parameters(), c.training.grad_clip)
        self.opt_g.step()
        self._check_params(self.gnet, "generator", epoch, step)
        self.update_ema(self.steps_before(epoch, step) + 1)
        # --- D step
        self.disc.train()
        with torch.no_grad():
            _, ng_d, fake = self.fake(c.training.batch_d)
        _, _, real = self.real(c.training.batch_d)
        real = real.float().requires_grad_(c.training.d_r1 > 0)
        out = self.disc(torch.cat([real, fake.float()]))
        loss_d = ((out[: c.training.batch_d] - 1.0) ** 2).mean() + (out[c.training.batch_d :] ** 2).mean()
        self._check(loss_d, "discriminator", epoch, step)
        updated = False
        if loss_d.item() > c.training.d_skip_below:
            total = loss_d
            if c.training.d_r1 > 0:
                total = loss_d + 0.5 * c.training.d_r1 * r1_penalty(out[: c.training.batch_d], real)
            self.opt_d.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), c.training.grad_clip)
            self.opt_d.step()
            self._check_params(self.disc, "discriminator", epoch, step)
            updated = True
        ng_gen = float(np.concatenate([ng_g, ng_d]).mean())
        if c.training.intensity_update == "step":
            self.adapt(ng_gen)
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "d_update": updated, "ng_gen": ng_gen}

    def holdout_check(self, epoch: int) -> dict:
        """Mean D output on training-section, held-out-section and generated cutouts (eval mode)."""
        none = {"d_real_train": None, "d_real_holdout": None, "d_fake": None}
        if not self.holdout:
            return none
        c = self.cfg
        rng = np.random.default_rng([self.seed, epoch, 0x40D])  # its own stream: the run is unchanged
        self.disc.eval()
        try:
            with torch.no_grad():
                _, _, tr = t2d_batch(
                    self.fits,
                    rng,
                    HOLDOUT_CUTOUTS,
                    c.cutouts,
                    augment_rel=c.training.augment,
                    with_hard=True,
                    device=self.device,
                    radii=self.radii,
                )
                _, _, ho = t2d_batch(
                    self.holdout,
                    rng,
                    HOLDOUT_CUTOUTS,
                    c.cutouts,
                    augment_rel=c.training.augment,
                    with_hard=True,
                    device=self.device,
                    radii=self.holdout_radii,
                )
                _, _, fk = t3d_batch(
                    self.final_gnet(),
                    rng,
                    self.mu,
                    HOLDOUT_CUTOUTS,
                    c.cutouts,
                    kappa=c.kappa,
                    input_scale_px=c.generator.input_scale_px,
                    with_hard=True,
                    radii=self.radii,
                )
                out = {
                    name: float(self.disc(x.float()).mean())
                    for name, x in (("d_real_train", tr), ("d_real_holdout", ho), ("d_fake", fk))
                }
        finally:
            self.disc.train()
        return out

    def select_check(self, epoch: int) -> dict:
        """Score the generator of this epoch against the measured sections; remember the best."""
        c = self.cfg
        if not c.training.select_sections:
            return {"select_score": None}

        rng = np.random.default_rng([self.seed, epoch, 0x5E1])  # its own stream: the run is unchanged
        model = self.current_model()
        sims = De.model_sections(model, rng, c.training.select_sections, self.select_radius)
        limit = self.selection_limit(sims, rng)
        simulated = De.pooled(
            De.limited_section_descriptors(lab, ctr, limit, rng, c.training.select_min_area_px) for lab, ctr in sims
        )
        score = De.section_score(self.select_measured, simulated, c.training.select_metric)
        if self.best is None or score < self.best["score"]:
            self.best = {
                "epoch": epoch,
                "score": score,
                "mu": self.mu,
                "state": {k: v.detach().cpu().clone() for k, v in model.gnet.state_dict().items()},
            }
        self.gnet.train()
        return {"select_score": score}

    def selection_limit(self, sims, rng):
        """The detection limit of :meth:`select_check`: the measured loss calibrated on this epoch's
        model sections (4 steps at the first check, then 1 step from the last estimate)."""
        measured, k = self.select_rates_measured, self.cfg.training.select_min_confident_px
        if k == 0 or not any(r > 0 for r in measured):
            return DetectionLimit((0.0, 0.0, 0.0), k)
        start, steps = (measured, 4) if self.select_rates is None else (self.select_rates, 1)
        rates = calibrate_rates(
            measured,
            [(lab, lab > 0) for lab, _c in sims],
            rng,
            steps,
            self.cfg.training.select_min_area_px,
            start=start,
        )
        self.select_rates = rates
        return DetectionLimit(rates, k)

    def update_ema(self, g_steps: int) -> None:
        """Fold the generator into its average after its ``g_steps``-th update."""
        if self.gnet_ema is None:
            return
        d = min(self.cfg.training.ema_decay, (1.0 + g_steps) / (10.0 + g_steps))
        with torch.no_grad():
            for pe, p in zip(self.gnet_ema.parameters(), self.gnet.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1.0 - d)

    def final_gnet(self):
        """The generator the model keeps: the weight average when ``ema_decay > 0``."""
        return self.gnet if self.gnet_ema is None else self.gnet_ema

    def current_model(self, source: dict | None = None, best: bool = False) -> GrainModel:
        """The model as it stands (``best``: the best-scoring epoch's, when selection is on)."""
        c = self.cfg
        mu = self.mu
        if best and self.best is not None:
            gnet = new_gnet(c)
            gnet.load_state_dict(self.best["state"])
            gnet.eval()
            mu = float(self.best["mu"])
        else:
            gnet = self.final_gnet().eval()
            if gnet.out_lo.device.type != "cpu":  # models live on the CPU (sampling feeds numpy inputs)
                gnet = copy.deepcopy(gnet).cpu()
        return GrainModel(
            gnet=gnet,
            intensity_per_px3=mu,
            pixel_size_um=self.pixel_size_um,
            beta=c.cutouts.beta,
            input_scale_px=c.generator.input_scale_px,
            cell_margin_px=c.cutouts.margin_px,
            training=summary(self, c, source),
            reference_radius_px=None if self.radii is None else float(np.mean(self.radii)),
        )

    def adapt(self, ng_gen: float) -> None:
        if ng_gen > 0:
            self.mu = self.mu * (0.5 + 0.5 * self.ng_gt / ng_gen)

    @staticmethod
    def _check(loss, what, epoch, step):
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{what} loss is {loss.item()} at epoch {epoch} step {step}; the last good "
                "checkpoint is kept (lower the learning rate or the temperature and resume)"
            )

    @staticmethod
    def _check_params(net, what, epoch, step):
        for p in net.parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(
                    f"{what} weights became NaN/inf at epoch {epoch} step {step}; the last good checkpoint is kept"
                )


def new_gnet(cfg: TrainConfig) -> GNet:
    """A freshly initialised ``G_net`` of the configuration's architecture (draws from torch's RNG).

    Parameters
    ----------
    cfg : TrainConfig
        Its ``kappa`` and ``generator`` fields.

    Returns
    -------
    GNet
    """
    return GNet(
        kappa=cfg.kappa,
        hidden=cfg.generator.hidden,
        r_bounds=cfg.generator.r_bounds,
        diag_bounds=cfg.generator.diag_bounds,
        depth_aware=cfg.generator.depth_aware,
    )


def r1_penalty(out_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x D(x)||^2`` over the measured cutouts ``real`` (which require grad) from D's
    outputs on them, differentiable (for the R1 term of ``TrainConfig.d_r1``)."""
    (grad,) = torch.autograd.grad(out_real.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def train(
    fits,
    pixel_size_um: float,
    cfg: TrainConfig | None = None,
    *,
    seed: int = 0,
    out=None,
    resume: bool = False,
    stop_after: int | None = None,
    source: dict | None = None,
    on_epoch=None,
    device: str = "cpu",
    sections=None,
    radii_px=None,
) -> GrainModel:
    """Calibrate a :class:`GrainModel` on fitted 2D tessellations.

    Parameters
    ----------
    fits : list of GBPD
        2D GBPDs fitted to central sections (pixels, section centre at the origin).
    pixel_size_um : float
        Their pixel size (µm).
    cfg : TrainConfig, optional
        Hyper-parameters (default ``TrainConfig()``).
    seed : int
        Root seed (weights init and every random draw).
    out : path-like, optional
        Model folder; training state goes to ``out/training/`` and the model is written there at
        the end. Without it nothing is written.
    resume : bool
        Continue from ``out/training/checkpoint.json``.
    stop_after : int, optional
        Stop (as if interrupted) after this many epochs in total; the model is still returned.
    source : dict, optional
        Recorded in the model's training summary (where the sections came from).
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, model)`` after every epoch with the model as it stands (for
        learning curves); it must not draw from the training's random state. The model's
        network is the live one (or its average): copy it if you keep it.
    device : str
        Where the networks and the cutout images live: ``"cpu"`` (default), ``"cuda"``,
        ``"cuda:N"`` or ``"auto"``. Seeds, kNN inputs and the measured cutouts' seed selection stay
        on the CPU either way. CPU runs are bit-for-bit reproducible; CUDA runs use the same
        random draws and initial weights but their floating-point sums may differ in the last
        bits (cuDNN), so two GPU runs, or a GPU and a CPU run, drift apart over training.
        Checkpoints hold CPU tensors: a run may resume on another device.
    sections : list of fit2d.SectionFit, optional
        The measured sections behind ``fits`` (needed with ``cfg.select_sections``, and with
        ``cfg.generator.depth_aware`` unless ``radii_px`` is given).
    radii_px : sequence of float, optional
        The particle radius of each section (default: the sections' ``radius_px``); used by a
        depth-aware generator only.

    Returns
    -------
    GrainModel
        The calibrated model (the selected epoch's with ``cfg.select_sections``, else the last).
    """
    cfg = cfg or TrainConfig()
    fits = list(fits)
    if not fits:
        raise InputError("no 2D tessellation to train on")
    for g in fits:
        if not isinstance(g, GBPD) or g.dim != 2:
            raise InputError("training needs 2D GBPD fits")
    if radii_px is None and sections is not None and cfg.generator.depth_aware:
        radii_px = [float(f.radius_px) for f in sections]
    retain_freed_memory()  # every step frees and re-allocates the same large tensors
    tr = Trainer(fits, pixel_size_um, cfg, seed, device=device, radii_px=radii_px)
    tr.set_selection_reference(sections)
    ckdir = None if out is None else Path(out) / "training"
    if resume:
        if ckdir is None or not (ckdir / "checkpoint.json").is_file():
            raise InputError("--resume: no checkpoint to resume from", ckdir or "training")
        tr.load(ckdir)
        log.info("resuming after epoch %d (mu = %.5g)", tr.epoch, tr.mu)
    if tr.ng_gt is None:
        tr.ng_gt = tr.measure_ng_gt()
    last = cfg.training.epochs if stop_after is None else min(cfg.training.epochs, stop_after)
    total = cfg.training.epochs * cfg.training.steps_per_epoch
    bar = progress(total=total, desc="fit-grains", unit="step")
    bar.update(tr.epoch * cfg.training.steps_per_epoch)
    try:
        while tr.epoch < last:
            e = tr.epoch + 1
            t0 = time.perf_counter()
            rows = []
            for s in range(1, cfg.training.steps_per_epoch + 1):
                rows.append(tr.step(e, s))
                bar.update(1)
                bar.set_postfix(mu=f"{tr.mu:.4g}", lg=f"{rows[-1]['loss_g']:.3f}", ld=f"{rows[-1]['loss_d']:.3f}")
            ng_gen = float(np.mean([r["ng_gen"] for r in rows]))
            if cfg.training.intensity_update == "epoch":
                tr.adapt(ng_gen)
            dt = time.perf_counter() - t0
            tr.seconds += dt
            tr.epoch = e
            tr.history.append(
                {
                    "epoch": e,
                    "steps": cfg.training.steps_per_epoch,
                    "loss_g": float(np.mean([r["loss_g"] for r in rows])),
                    "loss_d": float(np.mean([r["loss_d"] for r in rows])),
                    "d_updates": int(sum(r["d_update"] for r in rows)),
                    "intensity_per_px3": tr.mu,
                    "ng_gen": ng_gen,
                    "ng_gt": tr.ng_gt,
                    "seconds": dt,
                    **tr.holdout_check(e),
                    **tr.select_check(e),
                }
            )
            if ckdir is not None:
                tr.save(ckdir)
                write_log(ckdir, tr.history)
            log.debug("epoch %d: %s", e, tr.history[-1])
            if on_epoch is not None:
                on_epoch(e, tr.current_model(source))
                tr.gnet.train()
    finally:
        bar.close()
    model = tr.current_model(source, best=True)
    if out is not None and tr.epoch >= cfg.training.epochs:
        model.write(out)
    return model


def train_restarts(
    fits,
    pixel_size_um: float,
    cfg: TrainConfig,
    *,
    seeds,
    out,
    resume: bool = False,
    source: dict | None = None,
    device: str = "cpu",
    sections=None,
    radii_px=None,
) -> GrainModel:
    """Train once per seed and keep the run whose selected epoch scored best.

    Each run is a full :func:`train` into ``out/restarts/seed-<seed>/`` (its own checkpoints,
    log and model). The runs are compared by their ``select_score`` (``cfg.training.select_sections``
    must be on: the measured sections are the only yardstick a user has), the lowest wins (ties:
    the lower seed), and its model is written to ``out`` with the list of runs in its training
    summary (``restarts``). With ``resume``, finished runs are reused and an interrupted one
    continues from its checkpoint.

    Parameters
    ----------
    fits : list of GBPD
        2D GBPDs fitted to central sections (pixels, section centre at the origin).
    pixel_size_um : float
        Their pixel size (µm).
    cfg : TrainConfig
        Hyper-parameters (``select_sections`` must be > 0).
    seeds : sequence of int
        Distinct root seeds, one run each.
    out : path-like
        Model folder; the runs go to ``out/restarts/seed-<seed>/``.
    resume : bool, default False
        Reuse finished runs and continue an interrupted one from its checkpoint.
    source : dict, optional
        Recorded in the model's training summary.
    device : str, default "cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (see :func:`train`).
    sections : list of SectionFit, optional
        The measured sections behind ``fits`` (for the selection score).
    radii_px : sequence of float, optional
        The particle radius of each section (see :func:`train`).

    Returns
    -------
    GrainModel
        The chosen run's model.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"restarts need distinct seeds, got {seeds}")
    if not cfg.training.select_sections:
        raise InputError("--restarts needs grains.training.select_sections > 0: the section score picks the run")
    runs = []
    for s in seeds:
        sub = Path(out) / "restarts" / f"seed-{s}"
        if resume and (sub / "model.json").is_file():
            model = GrainModel.load(sub)
            if model.training.get("config") != cfg.to_dict() or model.training.get("seed") != s:
                raise InputError(
                    "this restart was made with other hyper-parameters; start again without --resume",
                    sub / "model.json",
                )
            log.info("restart seed %d: finished earlier (score %.4f)", s, model.training["select_score"])
        else:
            ck = resume and (sub / "training" / "checkpoint.json").is_file()
            model = train(
                fits,
                pixel_size_um,
                cfg,
                seed=s,
                out=sub,
                resume=ck,
                source=source,
                device=device,
                sections=sections,
                radii_px=radii_px,
            )
            log.info(
                "restart seed %d: score %.4f (epoch %s)",
                s,
                model.training["select_score"],
                model.training["selected_epoch"],
            )
        runs.append(model)
    best = min(runs, key=lambda m: (m.training["select_score"], m.training["seed"]))
    best.training["restarts"] = [
        {
            "seed": m.training["seed"],
            "select_score": m.training["select_score"],
            "selected_epoch": m.training["selected_epoch"],
        }
        for m in runs
    ]
    best.write(out)
    return best


def summary(tr: Trainer, cfg: TrainConfig, source: dict | None) -> dict:
    """The training summary stored in model.json."""
    # Only what the inputs determine: wall-clock times stay in training/log.csv, so the model file
    # (and every id hashed from it) is the same bytes wherever and however fast it was trained.
    last = {k: v for k, v in (tr.history[-1] if tr.history else {}).items() if k != "seconds"}
    src = dict(source or {})
    if src.get("tessellations"):
        src["tessellations"] = Path(str(src["tessellations"])).name
    return {
        "seed": tr.seed,
        "epochs_done": tr.epoch,
        "config": cfg.to_dict(),
        "ng_gt": tr.ng_gt,
        "final": last,
        "sections": len(tr.fits),
        "holdout_sections": len(tr.holdout),
        "source": src,
        "selected_epoch": None if tr.best is None else int(tr.best["epoch"]),
        "select_score": None if tr.best is None else float(tr.best["score"]),
        "discriminator": tr.disc.config(),
    }


def write_log(folder: Path, history: list[dict]) -> None:
    """Write ``log.csv`` and ``training.png`` (losses, mu, NG per epoch)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k) for k in LOG_COLUMNS})
    write_text_atomic(folder / "log.csv", buf.getvalue())
    try:
        plot_history(history, folder / "training.png")
    except Exception as e:  # a plot must never stop training
        log.warning("could not draw training.png: %s", e)


def plot_history(history: list[dict], path) -> None:
    """Losses, intensity and visible grains per area against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    held = any(h.get("d_real_holdout") is not None for h in history)
    scored = any(h.get("select_score") is not None for h in history)
    n = 3 + held + scored
    fig, ax = plt.subplots(1, n, figsize=(4 * n, 3.2))
    ax[0].plot(ep, [h["loss_g"] for h in history], label="G")
    ax[0].plot(ep, [h["loss_d"] for h in history], label="D")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("LSGAN loss")
    ax[0].legend()
    ax[1].plot(ep, [h["intensity_per_px3"] for h in history])
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("μ (seeds / px³)")
    ax[2].plot(ep, [h["ng_gen"] for h in history], label="generated")
    ax[2].plot(ep, [h["ng_gt"] for h in history], "--", label="measured")
    ax[2].set_xlabel("epoch")
    ax[2].set_ylabel("visible grains / px²")
    ax[2].legend()
    if held:
        for key, label, style in (
            ("d_real_train", "training sections", "-"),
            ("d_real_holdout", "held-out sections", "-"),
            ("d_fake", "generated", "--"),
        ):
            ax[3].plot(ep, [np.nan if h.get(key) is None else h[key] for h in history], style, label=label)
        ax[3].set_xlabel("epoch")
        ax[3].set_ylabel("mean D output (eval)")
        ax[3].legend()
    if scored:
        sc = np.array([np.nan if h.get("select_score") is None else h["select_score"] for h in history])
        ax[-1].plot(ep, sc, "o-", ms=3)
        if np.isfinite(sc).any():
            i = int(np.nanargmin(sc))
            ax[-1].plot([ep[i]], [sc[i]], "r*", ms=12, label=f"kept: epoch {ep[i]}")
            ax[-1].legend()
        if np.nanmin(sc) > 0 and np.isfinite(sc).all():
            ax[-1].set_yscale("log")  # the first epochs score 10x worse than the rest
        ax[-1].set_xlabel("epoch")
        ax[-1].set_ylabel("section score (W1 / spread)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
