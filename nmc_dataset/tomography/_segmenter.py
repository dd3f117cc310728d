"""The baseline segmentation network: a small 3D U-Net of depthwise-separable convolutions.

Network
    Input one grey channel, normalised per volume: ``(g − median) / (q99.5 − q0.5)`` (so renders of
    any attenuation unit look alike). A stem 3×3×3 convolution, then per level a block of two
    depthwise-separable convolutions (depthwise 3×3×3 with one filter per channel, then a 1×1×1
    pointwise mix; batch norm and ReLU after each), 2× max-pool down, trilinear 2× up with skip
    concatenation, and a 1×1×1 head with four outputs: three phase logits (pore, NMC, binder) and one
    *core distance* logit. ``block: factorised`` replaces each 3×3×3 by a 3×1×1·1×3×3 (2+1)D pair.

Targets and loss
    Phase: cross-entropy. Core distance: ``c = min(d, D) / D`` with ``d`` the distance (voxels) of a
    particle voxel to the nearest voxel *not inside the same particle* (pore, binder or another
    particle, so touching particles are cut apart at their contact), ``D = distance_clip_vox``; binary
    cross-entropy against the sigmoid of the distance logit (``c = 0`` outside particles).

Instances (post-processing)
    NMC = argmax phase 1; markers = connected components of ``σ(distance) > marker_threshold`` inside
    NMC with at least ``min_marker_vox`` voxels; marker-controlled watershed of ``−σ(distance)``
    restricted to NMC (:func:`skimage.segmentation.watershed`); unreached NMC pieces become their own
    instances and pieces under ``min_volume`` voxels merge into a neighbour.

Inference runs tiles of ``tile`` voxels with ``overlap`` voxels of overlap (the volume is padded by
reflection), blending the outputs with a separable Hann window. A model folder holds
``model.safetensors`` (weights and batch-norm statistics) and ``config.json`` (architecture,
normalisation, post-processing and the training record); nothing is pickled.

Training is deterministic for a seed (random crops and augmentations from one NumPy generator, torch
seeded, deterministic algorithms) on one device and thread count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import relabel_sequential, watershed
from torch import nn
from torch.nn import functional as F

from nmc_dataset._util import check_format, log, read_json, write_bytes_atomic, write_json_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.shells._segment import _merge_small, _split_disconnected
from nmc_dataset.tomography._scoring import confusion, inner_surfaces, instance_scores

MODEL_FORMAT = "nmc-dataset/segmenter"
MODEL_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- network
class _Conv(nn.Module):
    """One 3×3×3-equivalent convolution: depthwise-separable or factorised (2+1)D, BN, ReLU."""

    def __init__(self, cin: int, cout: int, block: str):
        super().__init__()
        if block == "separable":
            self.conv = nn.Sequential(
                nn.Conv3d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv3d(cin, cout, 1, bias=False)
            )
        elif block == "factorised":
            self.conv = nn.Sequential(
                nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1), bias=False),
                nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False),
            )
        else:
            raise ValueError(f"unknown block {block!r}")
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SegNet3D(nn.Module):
    """U-Net-like 3D network; input (B, 1, Z, Y, X) with sides divisible by 2^(levels-1).

    Parameters
    ----------
    channels : sequence of int
        Channels per level (e.g. ``(16, 32, 64)``: three levels, two downsamplings).
    block : {"separable", "factorised"}
    n_out : int
        Output channels (3 phase logits + 1 distance logit).
    """

    def __init__(self, channels=(16, 32, 64), block: str = "separable", n_out: int = 4):
        super().__init__()
        ch = [int(c) for c in channels]
        self.stem = nn.Sequential(
            nn.Conv3d(1, ch[0], 3, padding=1, bias=False), nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True)
        )
        self.down = nn.ModuleList()
        for i, c in enumerate(ch):
            cin = ch[0] if i == 0 else ch[i - 1]
            self.down.append(nn.Sequential(_Conv(cin, c, block), _Conv(c, c, block)))
        self.up = nn.ModuleList()
        for i in range(len(ch) - 2, -1, -1):
            self.up.append(nn.Sequential(_Conv(ch[i] + ch[i + 1], ch[i], block), _Conv(ch[i], ch[i], block)))
        self.head = nn.Conv3d(ch[0], n_out, 1)

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for i, level in enumerate(self.down):
            if i:
                x = F.max_pool3d(x, 2)
            x = level(x)
            skips.append(x)
        for j, level in enumerate(self.up):
            skip = skips[-2 - j]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = level(torch.cat([skip, x], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------- config
@dataclasses.dataclass
class SegmenterConfig:
    """Architecture, training and post-processing settings (the training CONFIG minus its data).

    Parameters
    ----------
    channels : tuple of int, default (8, 16, 32)
        Feature channels per U-Net level (at least two levels).
    block : {"factorised", "separable"}, default "factorised"
        Convolution block: (2+1)D factorised or depthwise-separable 3×3×3.
    crop : int, default 32
        Edge length (voxels) of the random training crops; a multiple of ``2**(levels-1)``.
    batch : int, default 4
        Crops per training step.
    epochs : int, default 12
        Training epochs; the epoch with the best validation score is kept.
    steps_per_epoch : int, default 40
        Optimiser steps per epoch.
    lr : float, default 3e-3
        Peak learning rate of the one-cycle schedule (AdamW).
    weight_decay : float, default 1e-4
        AdamW weight decay.
    distance_clip_vox : float, default 5.0
        Clip ``D`` (voxels) of the core-distance target ``min(d, D) / D``.
    distance_weight : float, default 1.0
        Weight of the core-distance loss against the phase loss.
    class_weights : tuple of 3 floats, default (1.0, 1.0, 2.0)
        Cross-entropy weights of pore, NMC and binder.
    marker_threshold : float, default 0.35
        Watershed markers: the core-distance probability above which NMC voxels seed an instance.
    min_marker_vox : int, default 4
        Smallest marker (voxels).
    min_volume : int, default 10
        Instances under this many voxels merge into a neighbour.
    tile : int, default 64
        Edge length (voxels) of the inference tiles; a multiple of ``2**(levels-1)``.
    overlap : int, default 8
        Overlap (voxels) of neighbouring inference tiles, in ``[0, tile / 2)``.
    seed : int, default 0
        Seed of the crops, augmentations and torch.
    threads : int or None, default 1
        torch CPU threads during training (None: torch's default).
    """

    channels: tuple = (8, 16, 32)
    block: str = "factorised"
    crop: int = 32
    batch: int = 4
    epochs: int = 12
    steps_per_epoch: int = 40
    lr: float = 3e-3
    weight_decay: float = 1e-4
    distance_clip_vox: float = 5.0
    distance_weight: float = 1.0
    class_weights: tuple = (1.0, 1.0, 2.0)
    marker_threshold: float = 0.35
    min_marker_vox: int = 4
    min_volume: int = 10
    tile: int = 64
    overlap: int = 8
    seed: int = 0
    threads: int | None = 1

    @classmethod
    def from_dict(cls, d: dict, where=None) -> SegmenterConfig:
        """Build from a mapping; unknown keys and bad values are :class:`InputError`.

        Parameters
        ----------
        d : dict
            Settings by field name (lists become tuples).
        where : str or path-like, optional
            Named in error messages.

        Returns
        -------
        SegmenterConfig
            The checked settings.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(
                f"unknown segmenter setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})", where
            )
        cfg = cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
        levels = len(cfg.channels)
        m = 2 ** (levels - 1)
        if levels < 2 or any(int(c) < 1 for c in cfg.channels):
            raise InputError("channels: need at least two positive channel counts", where)
        for name in ("crop", "tile"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or v < 2 * m or v % m:
                raise InputError(f"{name}: must be an integer multiple of {m} and at least {2 * m}, got {v!r}", where)
        if not 0 <= cfg.overlap < cfg.tile // 2:
            raise InputError(f"overlap must be in [0, tile/2), got {cfg.overlap}", where)
        if cfg.block not in ("separable", "factorised"):
            raise InputError(f"block must be separable or factorised, got {cfg.block!r}", where)
        for name in ("batch", "epochs", "steps_per_epoch"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise InputError(f"{name} must be a positive integer", where)
        if cfg.lr <= 0 or cfg.distance_clip_vox <= 0 or len(cfg.class_weights) != 3:
            raise InputError("need lr > 0, distance_clip_vox > 0 and three class_weights", where)
        return cfg

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (tuples as lists; :meth:`from_dict` reads it)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when torch sees a GPU) as a checked torch device."""
    from nmc_dataset.calibration._gan import resolve_device as _resolve

    return _resolve(device)


# --------------------------------------------------------------------------- data
def normalise(ct: np.ndarray) -> np.ndarray:
    """Per-volume grey normalisation ``(g − median) / (q99.5 − q0.5)`` (float32)."""
    g = np.asarray(ct, dtype=np.float32)
    sample = g[::2, ::2, ::2] if g.size > 2**21 else g
    lo, med, hi = np.percentile(sample, [0.5, 50, 99.5])
    return ((g - np.float32(med)) / np.float32(max(hi - lo, 1e-12))).astype(np.float32)


def core_distance(particle: np.ndarray, clip_vox: float) -> np.ndarray:
    """Training target ``min(d, D) / D``: distance to the nearest voxel outside the same particle."""

    inside = (particle > 0) & ~inner_surfaces(particle)
    d = ndimage.distance_transform_edt(inside).astype(np.float32)
    return np.minimum(d, np.float32(clip_vox)) / np.float32(clip_vox)


@dataclasses.dataclass
class Sample:
    """One training volume: normalised grey values and targets."""

    name: str
    x: np.ndarray
    phase: np.ndarray
    dist: np.ndarray
    particle: np.ndarray


def prepare_sample(name: str, ct: np.ndarray, phase: np.ndarray, particle: np.ndarray, cfg: SegmenterConfig) -> Sample:
    """Normalised grey values and the training targets of one labelled volume."""
    return Sample(
        name,
        normalise(ct),
        phase.astype(np.int64),
        core_distance(particle, cfg.distance_clip_vox),
        np.asarray(particle),
    )


def _random_crop(s: Sample, crop: int, rng: np.random.Generator):
    shape = s.x.shape
    if min(shape) < crop:
        raise InputError(f"{s.name}: volume {shape} is smaller than the crop ({crop})")
    o = [int(rng.integers(0, n - crop + 1)) for n in shape]
    sl = tuple(slice(a, a + crop) for a in o)
    x, p, d = s.x[sl], s.phase[sl], s.dist[sl]
    perm = rng.permutation(3)
    flips = [ax for ax in range(3) if rng.random() < 0.5]
    arrs = []
    for a in (x, p, d):
        a = np.transpose(a, perm)
        if flips:
            a = np.flip(a, axis=flips)
        arrs.append(np.ascontiguousarray(a))
    x = arrs[0] * np.float32(1 + 0.1 * rng.standard_normal()) + np.float32(0.05 * rng.standard_normal())
    return x.astype(np.float32), arrs[1], arrs[2]


# --------------------------------------------------------------------------- model folder
@dataclasses.dataclass
class Segmenter:
    """A trained network with its settings.

    Parameters
    ----------
    net : SegNet3D
        The network (weights and batch-norm statistics).
    cfg : SegmenterConfig
        Its architecture, training and post-processing settings.
    record : dict
        The training record (``history`` per epoch, ``kept_epoch``, device, threads, torch version,
        training and validation volume names).
    """

    net: SegNet3D
    cfg: SegmenterConfig
    record: dict

    def save(self, folder: Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``folder``.

        Parameters
        ----------
        folder : Path
            Model folder (created).
        """
        from safetensors.torch import save

        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        write_bytes_atomic(folder / "model.safetensors", save(state, metadata={"format": MODEL_FORMAT}))
        # wall-clock times stay out of config.json (log.csv has them): same data and seed, same bytes
        record = {k: v for k, v in self.record.items() if k != "seconds"}
        if "history" in record:
            record["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in record["history"]]
        write_json_atomic(
            folder / "config.json",
            {
                "format": MODEL_FORMAT,
                "format_version": MODEL_FORMAT_VERSION,
                "settings": self.cfg.to_dict(),
                "training": record,
                "normalisation": "(g - median) / (q99.5 - q0.5)",
            },
        )

    @classmethod
    def load(cls, folder: str | os.PathLike, device="cpu") -> Segmenter:
        """Read a model folder written by :meth:`save` (``InputError`` if missing or malformed).

        Parameters
        ----------
        folder : str or path-like
            Model folder (``config.json`` + ``model.safetensors``).
        device : str or torch.device, default "cpu"
            Where the network is put.

        Returns
        -------
        Segmenter
            The model, in eval mode.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("model folder not found (train one with train-segmenter)", folder)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise InputError("not a segmenter folder (needs config.json and model.safetensors)", folder)
        meta = read_json(folder / "config.json")
        check_format(meta, MODEL_FORMAT, MODEL_FORMAT_VERSION, folder / "config.json")
        cfg = SegmenterConfig.from_dict(meta.get("settings", {}), folder / "config.json")
        net = SegNet3D(cfg.channels, cfg.block)
        try:
            state = load_file(str(folder / "model.safetensors"))
            net.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as e:
            raise InputError(
                f"cannot load the weights: {str(e).splitlines()[0]}", folder / "model.safetensors"
            ) from None
        net.to(device).eval()
        return cls(net, cfg, meta.get("training", {}))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_maps(self, ct: np.ndarray, device=None, *, normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Sliding-window inference: phase probabilities (3, Z, Y, X) and core distance (Z, Y, X).

        ``normalised=True`` skips the grey normalisation (the input is already normalised).

        Parameters
        ----------
        ct : (Z, Y, X) array
            Grey volume.
        device : torch.device or str, optional
            Where inference runs (default: the network's device).
        normalised : bool, default False
            The input is already normalised.

        Returns
        -------
        prob : (3, Z, Y, X) float32 array
            Probabilities of pore, NMC and binder.
        dist : (Z, Y, X) float32 array
            Predicted core distance (sigmoid, 0..1).
        """
        device = next(self.net.parameters()).device if device is None else device
        self.net.eval()
        x = np.asarray(ct, dtype=np.float32) if normalised else normalise(ct)
        t, ov = self.cfg.tile, self.cfg.overlap
        step = t - 2 * ov
        shape = np.array(x.shape)
        # ov voxels of reflected context below, at least ov above, and a whole number of steps
        n_tiles = np.maximum(1, np.ceil((shape + 2 * ov - t) / step).astype(int) + 1)
        length = (n_tiles - 1) * step + t
        pad = [(ov, int(length[i] - shape[i] - ov)) for i in range(3)]
        xp = np.pad(x, pad, mode="reflect")
        acc = np.zeros((4,) + xp.shape, dtype=np.float32)
        wsum = np.zeros(xp.shape, dtype=np.float32)
        w1 = np.hanning(t + 2).astype(np.float32)[1:-1] + np.float32(1e-3)
        w = w1[:, None, None] * w1[None, :, None] * w1[None, None, :]
        for iz in range(n_tiles[0]):
            for iy in range(n_tiles[1]):
                for ix in range(n_tiles[2]):
                    o = (iz * step, iy * step, ix * step)
                    sl = tuple(slice(a, a + t) for a in o)
                    inp = torch.from_numpy(np.ascontiguousarray(xp[sl]))[None, None].to(device)
                    out = self.net(inp)[0]
                    prob = torch.cat([torch.softmax(out[:3], 0), torch.sigmoid(out[3:])], 0).cpu().numpy()
                    acc[(slice(None),) + sl] += prob * w
                    wsum[sl] += w
        acc /= np.maximum(wsum, 1e-12)
        crop = tuple(slice(p[0], p[0] + s) for p, s in zip(pad, shape))
        acc = acc[(slice(None),) + crop]
        return acc[:3], acc[3]

    def segment(self, ct: np.ndarray, device=None) -> tuple[np.ndarray, np.ndarray, dict]:
        """Phase labels (uint8) and particle instances (uint32) of a grey volume.

        Parameters
        ----------
        ct : (Z, Y, X) array
            Grey volume.
        device : torch.device or str, optional
            Where inference runs (default: the network's device).

        Returns
        -------
        phase : (Z, Y, X) uint8 array
            0 pore, 1 NMC, 2 binder.
        particle : (Z, Y, X) uint32 array
            Particle instances, 0 = none.
        info : dict
            ``n_particles``.
        """
        prob, dist = self.predict_maps(ct, device)
        phase = np.argmax(prob, axis=0).astype(np.uint8)
        particle = instances_from_maps(phase == 1, dist, self.cfg)
        return phase, particle, {"n_particles": int(particle.max())}


def instances_from_maps(nmc: np.ndarray, dist: np.ndarray, cfg: SegmenterConfig) -> np.ndarray:
    """Marker-controlled watershed of the predicted core distance inside the NMC mask."""

    seeds = (dist > cfg.marker_threshold) & nmc
    markers, n = ndimage.label(seeds)
    if n:
        sizes = np.bincount(markers.ravel())
        small = sizes < cfg.min_marker_vox
        small[0] = False
        markers[small[markers]] = 0
    labels = watershed(-dist, markers, mask=nmc).astype(np.int32)
    rest, nr = ndimage.label(nmc & (labels == 0))
    if nr:
        labels[rest > 0] = rest[rest > 0] + labels.max()
    _split_disconnected(labels)
    _merge_small(labels, cfg.min_volume, 0.0)
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.uint32)


# --------------------------------------------------------------------------- training
def train_segmenter(train: list, val: list, cfg: SegmenterConfig, *, device="cpu", progress=None) -> Segmenter:
    """Train the network on random crops of the training volumes; keep the epoch that scores best on val.

    Parameters
    ----------
    train, val : list of Sample
        Prepared volumes (:func:`prepare_sample`); ``val`` may be empty (then the last epoch is kept).
    cfg : SegmenterConfig
    device : str or torch.device
    progress : callable, optional
        Called with one dict per epoch.

    Returns
    -------
    Segmenter
        With ``record``: per-epoch losses and validation scores, the kept epoch, timings.
    """

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _train(train, val, cfg, torch.device(device), progress)
    finally:  # the process's torch settings are the caller's again
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(train, val, cfg, device, progress) -> Segmenter:

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = SegNet3D(cfg.channels, cfg.block).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    cw = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
    seg = Segmenter(net, cfg, {})
    history, best, best_state = [], -np.inf, None
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        losses = []
        for _ in range(cfg.steps_per_epoch):
            xs, ps, ds = zip(
                *(_random_crop(train[int(rng.integers(len(train)))], cfg.crop, rng) for _ in range(cfg.batch))
            )
            x = torch.from_numpy(np.stack(xs))[:, None].to(device)
            p = torch.from_numpy(np.stack(ps)).to(device)
            d = torch.from_numpy(np.stack(ds)).to(device)
            out = net(x)
            loss_p = F.cross_entropy(out[:, :3], p, weight=cw)
            loss_d = F.binary_cross_entropy_with_logits(out[:, 3], d)
            loss = loss_p + cfg.distance_weight * loss_d
            if not torch.isfinite(loss):
                from nmc_dataset.errors import TrainingError

                raise TrainingError(f"loss is not finite at epoch {epoch}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append((float(loss_p.detach()), float(loss_d.detach())))
        row = {
            "epoch": epoch,
            "loss_phase": float(np.mean([a for a, _ in losses])),
            "loss_distance": float(np.mean([b for _, b in losses])),
            "seconds": time.perf_counter() - t0,
        }
        if val:
            dices, f1s = [], []
            for s in val:
                prob, dist = seg.predict_maps(s.x, device, normalised=True)
                ph = np.argmax(prob, axis=0)
                cm = confusion(s.phase, ph, 3)
                dice = [2 * cm[k, k] / max(cm[k].sum() + cm[:, k].sum(), 1) for k in range(3) if cm[k].sum()]
                dices.append(float(np.mean(dice)))
                f1s.append(instance_scores(s.particle, instances_from_maps(ph == 1, dist, cfg))["f1"])
            row["val_mean_dice"] = float(np.mean(dices))
            row["val_instance_f1"] = float(np.mean(f1s))
            score = row["val_mean_dice"] + row["val_instance_f1"]
        else:
            score = epoch
        row["val_score"] = float(score)
        history.append(row)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        log.info(
            "epoch %d/%d: loss phase %.4f distance %.4f%s (%.0f s)",
            epoch,
            cfg.epochs,
            row["loss_phase"],
            row["loss_distance"],
            (f", val Dice {row['val_mean_dice']:.4f} instance F1 {row['val_instance_f1']:.4f}") if val else "",
            row["seconds"],
        )
        if progress:
            progress(row)
    net.load_state_dict(best_state)
    net.eval()
    seg.record = {
        "history": history,
        "kept_epoch": int(best_epoch),
        "seconds": time.perf_counter() - t0,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "train": [s.name for s in train],
        "val": [s.name for s in val],
    }
    return seg


def config_hash(obj) -> str:
    """Short SHA-256 of a JSON-able object (records which settings a model was trained with)."""

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
