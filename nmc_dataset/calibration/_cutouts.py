"""Cutouts: the discriminator's view of measured (T2D) and generated (T3D) tessellations.

Both produce ``(B, C, G, G)`` "multichannel images" (paper: ``C = 12`` channels, ``G = 32``):

- a ``G x G`` grid with unit spacing, local coordinates ``u, v in {-(G-1)/2, ..., (G-1)/2}``
  (image index ``[row, col] = [v, u]``), is centred on the x axis at distance ``p ~ U(0, p_max]``;
- **T2D** rotates it about the section centre by ``beta ~ U[0, 2 pi)``: the grid point ``(u, v)``
  sits at ``R(beta) (p + u, v)`` in the fitted 2D tessellation (optionally augmented: every
  ``r_i`` and diagonal marker times ``1 + U(-a, a)``, ``a = 0.2``);
- **T3D** puts the grid in the plane ``z = 0`` of a generated 3D tessellation at ``(p + u, v, 0)``;
  seeds are drawn only in a box around the cutout (``margin_px`` around it in x, y and z, plus a
  kNN margin so that the seeds that matter have their true neighbours).

Channel ``i`` holds the soft assignment ``T_i = softmax_i(-(|x - s_i|^2_{M_i} - r_i) / beta_eff)``;
the ``C`` channels with the largest sums are kept, sorted by that sum (descending, ties by seed
order). The temperature is relative: ``beta_eff = beta * mean(diag markers of the cutout's seeds)``,
which makes the width of the soft boundaries (a fraction of a pixel for the default ``beta = 2``)
independent of the overall scale of the markers (dividing every power distance by one positive number does not
change the hard tessellation). The discriminator sees hard images: the exact one-hot images of
the hard tessellation in the kept channels (``with_hard=True``; the ``beta -> 0`` limit of
rounding the soft values to {0, 1}, :func:`harden`), so neither side's temperature shows.

**Depth** (a depth-aware generator, not in the paper): both sides are then given the particle
radius ``R`` of every cutout (T2D: its section's radius; T3D: the radius of a section drawn
uniformly from the same list, so both sides see the same law of ``R``), the generated seeds get
their depth input ``min(|s| / R, 1)``, and every image gets one more channel after the ``C`` cell
channels, the normalised radius of each grid point, ``rho(u, v) = |(p + u, v)| / R`` (the same
formula on both sides: the rotation about the section centre keeps distances). The
discriminator is thereby conditioned on where the cutout lies (a conditional GAN whose condition
is an input channel), so generated grains must match the measured ones at each depth, not only
in the mixture over depths.

Fast path: every power distance restricted to the grid plane is a quadratic in ``(u, v)``, so one
batched matrix product of grid features ``[1, u, v, u^2, u v, v^2]`` with six coefficients per seed
gives all of them. Seeds that cannot carry weight above ``exp(-prune)`` anywhere on the grid
(checked exactly, without gradients) are dropped before the differentiable pass. The plain twins
(:func:`soft_images_reference`) evaluate ``gbpd.power_distances`` point by point.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from nmc_dataset.calibration._fit2d import augment
from nmc_dataset.calibration._generator import default_knn_margin, neighbour_inputs, poisson_seed_set, with_depth
from nmc_dataset.tessellation._gbpd import GBPD, radial_frames


@dataclasses.dataclass(frozen=True)
class CutoutSpec:
    """Geometry and temperature of cutouts.

    Parameters
    ----------
    grid : int
        Grid points per side (paper: 32).
    channels : int
        Channels kept (paper: 12).
    p_max_px : float
        Cutout centres at ``p ~ U(0, p_max_px]`` from the particle centre (paper: 80).
    margin_px : float
        Seeds farther than this outside the cutout (in x, y, z) are ignored.
    beta : float
        Relative soft-assignment temperature.
    prune : float
        Seeds whose softmax weight stays below ``exp(-prune)`` on the whole grid are dropped.
    ng_min_px : int
        A grain counts as visible in NG (grains per unit area) when it covers at least this many
        grid points. Set it to EBSD import's ``min_grain_px`` so that generated cutouts are counted
        with the detection limit the measured sections went through (1 = every grain, the paper).
    """

    grid: int = 32
    channels: int = 12
    p_max_px: float = 80.0
    margin_px: float = 16.0
    beta: float = 2.0
    prune: float = 25.0
    ng_min_px: int = 1


def cutout_grid_points(grid: int) -> np.ndarray:
    """Local grid coordinates ``(u, v)`` of the ``grid^2`` points, row-major (row = v, col = u)."""
    c = np.arange(grid, dtype=np.float64) - (grid - 1) / 2.0
    vv, uu = np.meshgrid(c, c, indexing="ij")
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


def _grid_features(grid: int, dtype=torch.float64, device=None) -> torch.Tensor:
    uv = torch.as_tensor(cutout_grid_points(grid), dtype=dtype, device=device)
    u, v = uv[:, 0], uv[:, 1]
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=1)  # (P, 6)


def quad_coefs(seeds_local, metrics, offsets):
    """Coefficients ``c`` with ``power distance = [1, u, v, u^2, u v, v^2] . c`` on the grid plane.

    Parameters
    ----------
    seeds_local : (n, d) tensor
        Seeds in cutout coordinates (grid plane ``z = 0`` for d = 3).
    metrics : (n, d, d) tensor
        ``M_i`` in cutout coordinates.
    offsets : (n,) tensor
        ``r_i``.

    Returns
    -------
    (n, 6) tensor
    """
    ms = torch.einsum("nij,nj->ni", metrics, seeds_local)
    const = (seeds_local * ms).sum(1) - offsets
    return torch.stack(
        [const, -2 * ms[:, 0], -2 * ms[:, 1], metrics[:, 0, 0], metrics[:, 0, 1] + metrics[:, 1, 0], metrics[:, 1, 1]],
        dim=1,
    )


def metric_tensors(frames, diag):
    """``M_i = Q_i^T D_i Q_i`` for torch tensors ``frames (n, d, d)`` and ``diag (n, d)``."""
    return torch.einsum("nki,nk,nkj->nij", frames, diag, frames)


# --------------------------------------------------------------------------- the batched kernel
@dataclasses.dataclass
class Padded:
    """Per-cutout seed data padded to a common length (``valid`` marks real seeds)."""

    coefs: torch.Tensor  # (B, N, 6)
    valid: torch.Tensor  # (B, N) bool
    scale: torch.Tensor  # (B,) mean diag marker (no grad)


def pad_coefs(coef_list, scale_list, device=None) -> Padded:
    """Stack per-cutout ``(n_b, 6)`` coefficient tensors into a padded batch (on ``device``;
    default: the coefficients' own)."""
    n = max(max((len(c) for c in coef_list), default=0), 1)
    lengths = torch.as_tensor([len(c) for c in coef_list])
    valid = torch.arange(n)[None, :] < lengths[:, None]
    rows = [torch.cat([c, c.new_zeros((n - len(c), 6))]) if len(c) < n else c for c in coef_list]
    coefs = torch.stack(rows)
    device = coefs.device if device is None else torch.device(device)
    coefs = coefs.to(device)
    scale = torch.as_tensor(np.asarray(scale_list, dtype=np.float64), dtype=coefs.dtype, device=device)
    return Padded(coefs, valid.to(device), scale)


def soft_images(batch: Padded, spec: CutoutSpec, *, with_labels: bool = False, with_hard: bool = False):
    """Soft top-``C`` cutout images of a padded batch (the fast path).

    Returns
    -------
    images : (B, C, G, G) tensor (differentiable w.r.t. ``batch.coefs``)
    ng : (B,) numpy array
        Visible grains per unit area (distinct hard labels / G^2).
    labels : (B, G, G) numpy array, only with ``with_labels``
        Hard label (index into the padded seeds) of every grid point.
    hard : (B, C, G, G) tensor, only with ``with_hard``
        The exact hard images: 1 where the grid point's cell (argmin over all seeds) is the
        channel's cell (the ``beta -> 0`` limit of rounding ``images``; no gradient).
    """
    g, c_keep = spec.grid, spec.channels
    feats = _grid_features(g, batch.coefs.dtype, batch.coefs.device)  # (P, 6)
    temp = (spec.beta * batch.scale).clamp_min(1e-12)[:, None, None]  # (B,1,1)
    big = torch.finfo(batch.coefs.dtype).max / 4
    with torch.no_grad():
        pd = torch.einsum("pk,bnk->bpn", feats, batch.coefs.detach())
        pd.masked_fill_(~batch.valid[:, None, :], big)  # in place: no second (B, P, N) tensor
        lab = pd.argmin(dim=2)  # (B, P)
        gap = (pd - pd.min(dim=2, keepdim=True).values) / temp
        relevant = (gap < spec.prune).any(dim=1) & batch.valid  # (B, N)
    # candidates: relevant seeds, in their original order (so ties sort the same way as the twin)
    k = max(int(relevant.sum(1).max()), 1)
    order = torch.argsort((~relevant).to(torch.int8), dim=1, stable=True)[:, :k]  # relevant first
    cand_valid = torch.gather(relevant, 1, order)
    coefs = torch.gather(batch.coefs, 1, order[:, :, None].expand(-1, -1, 6))
    pd_c = torch.einsum("pk,bnk->bpn", feats, coefs)
    invalid = ~cand_valid[:, None, :]
    logits = (-pd_c / temp).masked_fill(invalid, -torch.inf)
    soft = torch.softmax(logits, dim=2).masked_fill(invalid, 0.0)  # (B, P, k); all-invalid rows: 0, not NaN
    sums = soft.detach().sum(1).masked_fill(~cand_valid, -1.0)  # (B, k)
    # sort by sum descending, ties by candidate position (= seed order)
    top = torch.argsort(-sums, dim=1, stable=True)[:, :c_keep]
    imgs = torch.gather(soft, 2, top[:, None, :].expand(-1, soft.shape[1], -1))  # (B, P, <=C)
    keep_valid = torch.gather(cand_valid, 1, top)
    imgs = imgs * keep_valid[:, None, :].to(imgs.dtype)
    if imgs.shape[2] < c_keep:
        imgs = torch.cat([imgs, imgs.new_zeros((imgs.shape[0], imgs.shape[1], c_keep - imgs.shape[2]))], dim=2)
    images = imgs.permute(0, 2, 1).reshape(-1, c_keep, g, g)
    lab_np = lab.cpu().numpy()
    ng = np.array([visible_grains(row, spec.ng_min_px) for row in lab_np], dtype=np.float64) / (g * g)
    out = [images, ng]
    if with_labels:
        out.append(lab_np.reshape(-1, g, g))
    if with_hard:
        chan_seed = torch.gather(order, 1, top)  # (B, <=C) padded seed index of each channel
        chan_seed = torch.where(keep_valid, chan_seed, torch.full_like(chan_seed, -1))
        hard = (lab[:, None, :] == chan_seed[:, :, None]).to(images.dtype)  # (B, <=C, P)
        if hard.shape[1] < c_keep:
            hard = torch.cat([hard, hard.new_zeros((hard.shape[0], c_keep - hard.shape[1], hard.shape[2]))], 1)
        out.append(hard.reshape(-1, c_keep, g, g))
    return tuple(out)


def visible_grains(labels: np.ndarray, min_px: int = 1) -> int:
    """Number of distinct labels covering at least ``min_px`` of the points."""
    _, counts = np.unique(labels, return_counts=True)
    return int((counts >= min_px).sum())


def harden(images: torch.Tensor) -> torch.Tensor:
    """Round cutout images to {0, 1} (what the discriminator sees; no gradient)."""
    return (images.detach() > 0.5).to(images.dtype)


def radius_map(p, radius, grid: int) -> torch.Tensor:
    """The depth channel ``rho(u, v) = |(p + u, v)| / R`` of cutouts at ``p`` with particle radius ``R``.

    Parameters
    ----------
    p, radius : (B,) arrays
        Cutout centre's distance from the particle centre and the particle radius (pixels).
    grid : int
        Grid points per side.

    Returns
    -------
    (B, 1, G, G) float64 tensor
    """
    uv = cutout_grid_points(grid)
    p = np.asarray(p, dtype=np.float64).reshape(-1, 1)
    rho = np.hypot(p + uv[None, :, 0], uv[None, :, 1]) / np.asarray(radius, dtype=np.float64).reshape(-1, 1)
    return torch.from_numpy(rho.reshape(-1, 1, grid, grid))


def _with_radius_map(res: tuple, p, radius, grid: int) -> tuple:
    """Append the :func:`radius_map` channel to the images (and the hard images) of a result tuple."""
    rmap = radius_map(p, radius, grid)
    out = list(res)
    idx = [0] + [i for i, x in enumerate(out) if i > 0 and isinstance(x, torch.Tensor) and x.dim() == 4]
    for i in idx:
        out[i] = torch.cat([out[i], rmap.to(dtype=out[i].dtype, device=out[i].device)], dim=1)
    return tuple(out)


# --------------------------------------------------------------------------- T3D (generated side)
@dataclasses.dataclass
class T3DSeeds:
    """Seeds of a batch of T3D cutouts, stacked in cutout order (``group`` = cutout index, non-decreasing).

    ``inner`` marks the seeds within ``margin_px`` of their cutout (they get markers and enter
    the soft tessellation); the others only serve as neighbours. ``radius`` (depth-aware
    training only) is the particle radius of each cutout.
    """

    seeds: np.ndarray
    noise: np.ndarray
    roll: np.ndarray
    group: np.ndarray
    inner: np.ndarray
    p: np.ndarray
    radius: np.ndarray | None = None


def draw_t3d_seeds(
    rng: np.random.Generator, intensity: float, batch: int, spec: CutoutSpec, kappa: int = 12, radii=None
) -> T3DSeeds:
    """Poisson seeds in a box around each of ``batch`` cutouts at ``p ~ U(0, p_max]``; with
    ``radii`` (the measured sections' radii) each cutout also draws its particle radius from them
    (after the seeds, so that the paper's runs draw exactly what they always did)."""
    half = (spec.grid - 1) / 2.0 + 0.5
    km = default_knn_margin(intensity, kappa)
    parts = []
    ps = spec.p_max_px * (1.0 - rng.random(batch))  # (0, p_max]
    for b, p in enumerate(ps):
        lo_in = np.array([p - half - spec.margin_px, -half - spec.margin_px, -spec.margin_px])
        hi_in = np.array([p + half + spec.margin_px, half + spec.margin_px, spec.margin_px])
        ss = poisson_seed_set(rng, intensity, lo_in - km, hi_in + km)
        inner = np.all((ss.positions >= lo_in) & (ss.positions <= hi_in), axis=1)
        parts.append((ss, inner, np.full(len(ss), b)))
    cat = lambda f: np.concatenate([f(x) for x in parts])  # noqa: E731
    return T3DSeeds(
        seeds=cat(lambda x: x[0].positions),
        noise=cat(lambda x: x[0].noise),
        roll=cat(lambda x: x[0].roll),
        group=cat(lambda x: x[2]),
        inner=cat(lambda x: x[1]),
        p=ps,
        radius=None if radii is None else np.asarray(radii, dtype=np.float64)[rng.integers(len(radii), size=batch)],
    )


def t3d_markers(gnet, ts: T3DSeeds, *, kappa: int, input_scale_px: float):
    """Markers of the inner seeds (with gradient): ``(diag (n, 3), offsets (n,))`` tensors."""
    x = neighbour_inputs(
        ts.seeds, ts.noise, ts.roll, ts.inner, kappa=kappa, input_scale_px=input_scale_px, group=ts.group
    )
    if getattr(gnet, "depth_aware", False):
        if ts.radius is None:
            raise ValueError("a depth-aware G_net needs the cutouts' particle radii")
        x = with_depth(x, ts.seeds[ts.inner], ts.radius[ts.group[ts.inner]])
    device = next(gnet.parameters()).device
    return gnet(torch.from_numpy(x).to(device))


def t3d_batch_from_markers(ts: T3DSeeds, diag, offsets, spec: CutoutSpec, *, with_labels=False, with_hard=False):
    """T3D images from seeds and (differentiable) markers of the inner seeds (on the markers' device)."""
    dtype, device = torch.float64, diag.device
    seeds = ts.seeds[ts.inner]
    group = ts.group[ts.inner]
    frames = torch.from_numpy(radial_frames(seeds, ts.roll[ts.inner])).to(device)
    met = metric_tensors(frames, diag.to(dtype))
    local = seeds.copy()
    local[:, 0] -= ts.p[group]
    coefs = quad_coefs(torch.from_numpy(local).to(device), met, offsets.to(dtype))
    diag_np = diag.detach().double().cpu().numpy()
    if np.any(np.diff(group) < 0):
        raise ValueError("T3D seeds must come grouped by cutout (group non-decreasing)")
    counts = np.bincount(group, minlength=len(ts.p))
    coef_list = list(torch.split(coefs, counts.tolist()))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    scales = [diag_np[bounds[b] : bounds[b + 1]].mean() if counts[b] else 1.0 for b in range(len(ts.p))]
    res = soft_images(pad_coefs(coef_list, scales), spec, with_labels=with_labels, with_hard=with_hard)
    return res if ts.radius is None else _with_radius_map(res, ts.p, ts.radius, spec.grid)


def t3d_batch(
    gnet,
    rng: np.random.Generator,
    intensity: float,
    batch: int,
    spec: CutoutSpec,
    *,
    kappa: int = 12,
    input_scale_px: float = 10.0,
    with_hard: bool = False,
    radii=None,
):
    """Draw ``batch`` generated cutouts: ``(images (B, C, G, G) with gradient, ng (B,)[, hard])``,
    on the device of ``gnet``'s weights.

    Parameters
    ----------
    gnet : GNet
        The marker network.
    rng : numpy.random.Generator
        Source of the seeds.
    intensity : float
        Seed intensity ``mu`` (seeds per pixel³).
    batch : int
        Cutouts to draw.
    spec : CutoutSpec
        Cutout geometry and temperature.
    kappa : int, default 12
        Neighbours per seed fed to ``gnet``.
    input_scale_px : float, default 10.0
        Displacements are divided by this before entering ``gnet``.
    with_hard : bool, default False
        Also return the hard images.
    radii : sequence of float, optional
        Depth-aware training: the measured sections' radii; each cutout draws its particle radius
        from them, the seeds get their depth input and the images the :func:`radius_map` channel
        (``C + 1`` channels).

    Returns
    -------
    images : (B, C, G, G) tensor
        Soft cutout images, differentiable with respect to ``gnet``'s weights.
    ng : (B,) array
        Visible grains per unit area of each cutout.
    hard : (B, C, G, G) tensor, only with ``with_hard``
        The exact hard images.
    """
    ts = draw_t3d_seeds(rng, intensity, batch, spec, kappa, radii=radii)
    diag, off = t3d_markers(gnet, ts, kappa=kappa, input_scale_px=input_scale_px)
    return t3d_batch_from_markers(ts, diag, off, spec, with_hard=with_hard)


# --------------------------------------------------------------------------- T2D (measured side)
def _rot2(beta: float) -> np.ndarray:
    c, s = np.cos(beta), np.sin(beta)
    return np.array([[c, -s], [s, c]])


def t2d_local(g: GBPD, p: float, beta: float, spec: CutoutSpec) -> GBPD:
    """The sub-GBPD (global coordinates) of the seeds within ``margin_px`` of the cutout ``(p, beta)``."""
    rot = _rot2(beta)
    loc = g.seeds @ rot - np.array([p, 0.0])  # R^T s - (p, 0)
    half = (spec.grid - 1) / 2.0 + 0.5 + spec.margin_px
    sel = np.all(np.abs(loc) <= half, axis=1)
    return g.subset(sel)


def t2d_batch(
    fits,
    rng: np.random.Generator,
    batch: int,
    spec: CutoutSpec,
    *,
    augment_rel: float = 0.2,
    with_labels: bool = False,
    with_hard: bool = False,
    return_draws: bool = False,
    device=None,
    radii=None,
):
    """Draw ``batch`` measured cutouts from a list of fitted 2D GBPDs (pixels, centre origin).

    Each cutout picks a section uniformly, augments its markers (``fit2d.augment`` with
    ``augment_rel`` = max relative change; 0 disables), draws ``p ~ U(0, p_max]`` and ``beta ~ U[0, 2 pi)``.

    Parameters
    ----------
    fits : list of GBPD
        2D GBPDs fitted to central sections (pixels, section centre at the origin).
    rng : numpy.random.Generator
        Source of the draws.
    batch : int
        Cutouts to draw.
    spec : CutoutSpec
        Cutout geometry and temperature.
    augment_rel : float, default 0.2
        Largest relative change of the marker augmentation (0 disables).
    with_labels : bool, default False
        Also return the hard label (seed index) of every grid point.
    with_hard : bool, default False
        Also return the hard (one-hot) images.
    return_draws : bool, default False
        Also return what was drawn.
    device : torch.device or str, optional
        Where the images are computed (default: the CPU).
    radii : sequence of float, optional
        Depth-aware training: the particle radius of each section of ``fits``; the images get the
        :func:`radius_map` channel (``C + 1`` channels). No extra draws.

    Returns
    -------
    images : (B, C, G, G) tensor (no gradient)
        Soft cutout images.
    ng : (B,) array
        Visible grains per unit area of each cutout.
    labels, hard : as in :func:`soft_images`, with ``with_labels`` / ``with_hard``
        Hard seed index per grid point, and the exact hard images.
    draws : list of (GBPD used, p, beta), only with ``return_draws``
        What each cutout was made from.
    """
    coef_list, scales, draws, picked = [], [], [], []
    for _ in range(batch):
        picked.append(int(rng.integers(len(fits))))
        g = fits[picked[-1]]
        p = float(spec.p_max_px * (1.0 - rng.random()))
        beta = float(2 * np.pi * rng.random())
        sub = t2d_local(g, p, beta, spec)
        if sub.n == 0:  # the cutout misses every seed: use the nearest one
            rot = _rot2(beta)
            d = np.linalg.norm(g.seeds @ rot - np.array([p, 0.0]), axis=1)
            sub = g.subset(np.array([int(np.argmin(d))]))
        if augment_rel > 0:  # per-seed independent factors: augmenting only the seeds used is the same law
            sub = augment(sub, rng, max_rel=augment_rel)
        rot = _rot2(beta)  # numpy: tiny arrays, no gradient needed on the measured side
        met_loc = np.einsum("ki,nkl,lj->nij", rot, sub.metrics(), rot)  # R^T M R
        loc = sub.seeds @ rot - np.array([p, 0.0])
        coef_list.append(quad_coefs(torch.from_numpy(loc), torch.from_numpy(met_loc), torch.from_numpy(sub.offsets)))
        scales.append(float(sub.diag.mean()))
        draws.append((sub, p, beta))
    with torch.no_grad():
        res = soft_images(pad_coefs(coef_list, scales, device), spec, with_labels=with_labels, with_hard=with_hard)
    if radii is not None:
        res = _with_radius_map(res, [d[1] for d in draws], np.asarray(radii, dtype=np.float64)[picked], spec.grid)
    return (*res, draws) if return_draws else res
