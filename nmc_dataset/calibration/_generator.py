"""The generator G of the stereological grain model (docs/method.md#generator).

Seeds, their noise ``n_i in [0,1]^2`` and roll angles ``gamma_i in [0, pi)`` come from a
homogeneous Poisson process of intensity ``mu`` (points per pixel^3). For seed ``i`` the radial
frame ``Q_i`` (``gbpd.radial_frames``) rotates the displacements to its ``kappa`` nearest
neighbours, ``v_ij = Q_i (s_ij - s_i)``; the network ``G_net`` maps
``(v_i1, n_i1, ..., v_ikappa, n_ikappa)`` (``kappa * 5`` numbers) to the markers through scaled
sigmoids ``phi_{a,b}(t) = a + (b - a) / (1 + exp(-t))``: the offset ``r_i in [r_min, r_max]`` and
the three diagonal entries of ``D_i`` in ``[diag_min, diag_max]`` (radial entry first). The
metric is ``M_i = Q_i^T D_i Q_i``; ``diag_min`` is a small positive number (default
``gbpd.DIAG_MIN``) instead of the paper's 0 so that every ``M_i`` is positive definite.

Seeds near the border of a window lack neighbours outside it, so every function that computes
markers for a window draws its seeds in a window extended by ``knn_margin_px`` and only returns
markers for the seeds it needs.

Displacements are divided by ``input_scale_px`` before they enter the network (a fixed constant
stored with the model, so the network sees numbers of order 1).

**Depth-aware generator** (``depth_aware=True``, not in the paper, off by default): one more input,
the seed's relative distance from the particle centre ``rho_i = min(|s_i| / R(s_i / |s_i|), 1)``
(:func:`depth_inputs`), appended after the ``5 kappa`` neighbour numbers. ``R`` is the particle
radius in the seed's direction (a star-shaped shell's radius function) or one radius for a ball;
seeds outside the particle count as rim seeds (``rho = 1``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from nmc_dataset.calibration._knn import box_mask, knn_inputs
from nmc_dataset.tessellation._gbpd import DIAG_MIN, GBPD, radial_frames
from nmc_dataset.tessellation._seeds import PoissonSeeds, poisson_seeds


# --------------------------------------------------------------------------- seeds
def poisson_seed_set(rng: np.random.Generator, intensity: float, lo, hi) -> PoissonSeeds:
    """Seeds, noise and roll of the marked Poisson process on the box ``[lo, hi]`` (3D).

    A thin wrapper of :func:`nmc_dataset.tessellation._seeds.poisson_seeds` that insists on ``mu > 0``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    intensity : float
        Seed intensity ``mu`` (seeds per pixel³), > 0.
    lo, hi : (3,) array-like
        Box corners in pixels.

    Returns
    -------
    PoissonSeeds
        Positions, noise marks and roll angles.
    """
    if not intensity > 0:
        raise ValueError(f"intensity must be > 0, got {intensity}")
    return poisson_seeds(rng, intensity, lo, hi)


# --------------------------------------------------------------------------- network inputs
def neighbour_inputs(
    seeds: np.ndarray,
    noise: np.ndarray,
    roll: np.ndarray,
    which=None,
    *,
    kappa: int = 12,
    input_scale_px: float = 10.0,
    group=None,
) -> np.ndarray:
    """The network inputs ``(v_i1, n_i1, ..., v_ikappa, n_ikappa)`` of the seeds ``which``.

    Computed by the fused compiled kernel :func:`nmc_dataset.calibration._knn.knn_inputs` (exact kNN on
    a cell grid, radial frames, rotated displacements and gathered noise in one pass); its plain
    twin is :func:`neighbour_inputs_reference` (scipy cKDTree + numpy).

    Parameters
    ----------
    seeds, noise, roll : arrays (N, 3), (N, 2), (N,)
        All seeds that may be neighbours.
    which : index array or boolean mask, optional
        The seeds whose inputs are wanted (default: all).
    kappa : int
        Number of nearest neighbours (the seed itself excluded).
    input_scale_px : float
        Displacements are divided by this.
    group : (N,) int array, optional
        Independent realisations stacked in one array: seeds only see neighbours of their own
        group (one call for a whole batch of cutouts).

    Returns
    -------
    (n, kappa * 5) float32 array
        Per neighbour ``j`` (nearest first; equal distances: lower index first):
        ``v_ij / input_scale_px`` (3 numbers) then ``n_ij`` (2).
    """

    seeds = np.asarray(seeds, dtype=np.float64)
    if len(seeds) < kappa + 1:
        raise ValueError(f"need at least kappa + 1 = {kappa + 1} seeds, got {len(seeds)}")
    return knn_inputs(seeds, noise, roll, which, kappa=kappa, input_scale_px=input_scale_px, group=group)


def neighbour_inputs_reference(
    seeds: np.ndarray,
    noise: np.ndarray,
    roll: np.ndarray,
    which=None,
    *,
    kappa: int = 12,
    input_scale_px: float = 10.0,
    tree=None,
    group=None,
) -> np.ndarray:
    """Plain twin of :func:`neighbour_inputs`: scipy's cKDTree query, ``radial_frames``, einsum.

    Same parameters; ``tree`` (a cKDTree over the seeds, group-shifted when ``group`` is given)
    is built if omitted. Neighbours at exactly equal distances may come in another order than
    in :func:`neighbour_inputs` (cKDTree's order).
    """

    seeds = np.asarray(seeds, dtype=np.float64)
    idx = np.arange(len(seeds)) if which is None else np.arange(len(seeds))[which]
    if len(seeds) < kappa + 1:
        raise ValueError(f"need at least kappa + 1 = {kappa + 1} seeds, got {len(seeds)}")
    pts = seeds if group is None else group_shifted(seeds, group)
    if tree is None:
        tree = cKDTree(pts)
    _, nb = tree.query(pts[idx], k=kappa + 1, workers=-1)
    nb = _drop_self(nb, idx)
    q = radial_frames(seeds[idx], roll[idx])
    disp = seeds[nb] - seeds[idx][:, None, :]  # (n, kappa, 3)
    v = np.einsum("nij,nkj->nki", q, disp) / float(input_scale_px)
    feats = np.concatenate([v, noise[nb]], axis=2)  # (n, kappa, 5)
    return feats.reshape(len(idx), kappa * 5).astype(np.float32)


def group_shifted(seeds: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Seeds moved far apart per group so that one kNN tree never mixes groups."""
    span = float(np.ptp(seeds, axis=0).max()) if len(seeds) else 0.0
    shifted = np.array(seeds, dtype=np.float64, copy=True)
    shifted[:, 0] += (4.0 * span + 1e3) * np.asarray(group, dtype=np.float64)
    return shifted


def _drop_self(nb: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Remove each query point's own index from its (kappa+1) neighbour list, keep kappa."""
    is_self = nb == idx[:, None]
    # normally column 0; with exact duplicates the self index may sit elsewhere (or be absent)
    keep = ~is_self
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False  # drop the farthest instead
    return nb[keep].reshape(len(idx), nb.shape[1] - 1)


def depth_inputs(seeds: np.ndarray, radius) -> np.ndarray:
    """The depth input ``rho_i = min(|s_i| / R(s_i / |s_i|), 1)`` of a depth-aware ``G_net``.

    Parameters
    ----------
    seeds : (n, 3) array
        Seed positions, particle centre at the origin (pixels).
    radius : float, (n,) array or callable
        The particle radius (pixels): one number (a ball), one per seed, or a function of unit
        directions ``(n, 3) -> (n,)`` (a star-shaped shell's radius in the seed's direction).

    Returns
    -------
    (n, 1) float32 array
        ``rho`` in ``[0, 1]`` (seeds outside the particle count as rim seeds).
    """
    seeds = np.asarray(seeds, dtype=np.float64).reshape(-1, 3)
    dist = np.linalg.norm(seeds, axis=1)
    if callable(radius):
        with np.errstate(invalid="ignore", divide="ignore"):
            dirs = np.where(dist[:, None] > 0, seeds / dist[:, None], np.array([1.0, 0.0, 0.0]))
        r = np.asarray(radius(dirs), dtype=np.float64).reshape(-1)
    else:
        r = np.broadcast_to(np.asarray(radius, dtype=np.float64), dist.shape)
    if r.shape != dist.shape or not np.all(np.isfinite(r) & (r > 0)):
        raise ValueError("the particle radius must be positive and finite (one per seed, or one number)")
    return np.minimum(dist / r, 1.0).astype(np.float32)[:, None]


def with_depth(inputs: np.ndarray, seeds: np.ndarray, radius) -> np.ndarray:
    """``inputs`` with the :func:`depth_inputs` column of ``seeds`` appended (float32).

    Parameters
    ----------
    inputs : (n, 5 kappa) array
        Rows of :func:`neighbour_inputs`.
    seeds : (n, 3) array
        The seeds of those rows (particle centre at the origin).
    radius : float, (n,) array or callable
        The particle radius, as in :func:`depth_inputs`.

    Returns
    -------
    (n, 5 kappa + 1) float32 array
    """
    return np.concatenate([np.asarray(inputs, dtype=np.float32), depth_inputs(seeds, radius)], axis=1)


# --------------------------------------------------------------------------- network
class GNet(nn.Module):
    """Fully connected marker network ``G_net``: ReLU hidden layers, 4 scaled-sigmoid outputs.

    ``forward(x)`` maps ``(n, 5 kappa)`` inputs (``5 kappa + 1`` when depth-aware) to
    ``(diag (n, 3), offsets (n,))``.

    Parameters
    ----------
    kappa : int
        Neighbours per seed; the input has ``5 * kappa`` numbers.
    hidden : sequence of int
        Widths of the hidden layers.
    r_bounds : (a, b)
        Range of the offsets ``r_i`` (paper: [1, 10]).
    diag_bounds : (a, b)
        Range of each diagonal entry of ``D_i`` (paper: [0, 50]; ``a > 0`` here).
    depth_aware : bool, default False
        One more input: the seed's relative distance from the particle centre (:func:`depth_inputs`).
    """

    def __init__(
        self,
        kappa: int = 12,
        hidden=(128, 128, 64),
        r_bounds=(1.0, 10.0),
        diag_bounds=(DIAG_MIN, 50.0),
        depth_aware: bool = False,
    ):
        super().__init__()
        if int(kappa) < 1:
            raise ValueError("kappa must be >= 1")
        if not (r_bounds[0] < r_bounds[1]) or not (0 < diag_bounds[0] < diag_bounds[1]):
            raise ValueError("marker bounds need a < b (and diag a > 0)")
        self.kappa = int(kappa)
        self.hidden = tuple(int(h) for h in hidden)
        self.r_bounds = (float(r_bounds[0]), float(r_bounds[1]))
        self.diag_bounds = (float(diag_bounds[0]), float(diag_bounds[1]))
        self.depth_aware = bool(depth_aware)
        layers = []
        width = self.n_inputs
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 4))
        self.body = nn.Sequential(*layers)
        lo = torch.tensor([self.r_bounds[0]] + [self.diag_bounds[0]] * 3, dtype=torch.float32)
        hi = torch.tensor([self.r_bounds[1]] + [self.diag_bounds[1]] * 3, dtype=torch.float32)
        self.register_buffer("out_lo", lo, persistent=False)
        self.register_buffer("out_span", hi - lo, persistent=False)

    @property
    def n_inputs(self) -> int:
        """Input width: ``5 kappa`` neighbour numbers (+ 1 depth input when depth-aware)."""
        return 5 * self.kappa + int(self.depth_aware)

    def forward(self, x):
        """Markers of a batch of seeds.

        Parameters
        ----------
        x : (n, n_inputs) tensor
            Neighbour inputs of each seed (then its depth input, when depth-aware).

        Returns
        -------
        diag : (n, 3) tensor
            Diagonal marker entries, in ``diag_bounds``.
        offsets : (n,) tensor
            Offsets ``r_i``, in ``r_bounds``.
        """
        out = self.out_lo + self.out_span * torch.sigmoid(self.body(x))
        return out[:, 1:], out[:, 0]

    def config(self) -> dict:
        """The architecture as a JSON-able dict (``GNet(**config)`` rebuilds it).

        ``depth_aware`` is written only when on: the paper's networks keep the dict (and the
        model files hashed from it) they always had.
        """
        out = {
            "kappa": self.kappa,
            "hidden": list(self.hidden),
            "r_bounds": list(self.r_bounds),
            "diag_bounds": list(self.diag_bounds),
        }
        if self.depth_aware:
            out["depth_aware"] = True
        return out


# --------------------------------------------------------------------------- G: seeds -> GBPD
def markers(gnet, inputs: np.ndarray, *, chunk: int | None = None, fused: bool | None = None):
    """Evaluate ``G_net`` without gradients: ``(diag (n, 3), offsets (n,))`` float64 arrays.

    The float32 inputs go through the network under ``torch.inference_mode`` in row chunks of
    ``chunk`` rows (default 8192: the activations then stay in the CPU caches).

    Parameters
    ----------
    gnet : GNet
        The marker network.
    inputs : (n, n_inputs) array
        Rows of :func:`neighbour_inputs` (with :func:`with_depth` for a depth-aware network).
    chunk : int, optional
        Rows per network pass.
    fused : bool, optional
        Run the layers as oneDNN's fused linear + ReLU / sigmoid (:func:`fused_layers`), still in
        float32: about 2x faster than torch's default CPU matmul, whose BLAS takes a slower code path on
        some CPUs (AMD Zen: 384 vs 179 GFLOP/s on 2 threads). Default: when available (a GNet on
        the CPU in float32 with oneDNN built in). ``False``: the module's own ``forward`` (the
        plain twin; results agree to float32 rounding). Either way a row's result does not
        depend on the chunking, to float32 rounding (the fused path: bit for bit).

    Returns
    -------
    diag : (n, 3) float64 array
        Diagonal marker entries.
    offsets : (n,) float64 array
        Offsets ``r_i``.
    """
    if chunk is None:
        chunk = 8192
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    n = x.shape[0]
    layers = fused_layers(gnet) if fused is not False else None
    if fused and layers is None:
        raise RuntimeError("the fused oneDNN path is not available for this network (CPU float32 GNet needed)")
    dtype = next(gnet.parameters()).dtype
    diag = np.empty((n, 3))
    off = np.empty(n)
    chunk = max(int(chunk), 1)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            xb = x[start : start + chunk]
            if layers is None:
                d, r = gnet(xb.to(dtype))
            else:
                d, r = _fused_forward(gnet, layers, xb)
            diag[start : start + len(d)] = d.numpy()
            off[start : start + len(r)] = r.numpy()
    return diag, off


def fused_layers(gnet):
    """The layers of ``gnet`` for oneDNN's fused linear + activation, or None where unavailable.

    Returns ``[(weight, bias, "relu" | "sigmoid"), ...]`` (detached float32 CPU tensors) for a
    :class:`GNet` on the CPU in float32 when torch has oneDNN (``torch.backends.mkldnn``) and its
    ``mkldnn::_linear_pointwise`` operator (the one torch's compiler uses for CPU linear layers).

    Parameters
    ----------
    gnet : GNet
        The marker network (anything else gives None).

    Returns
    -------
    list of (torch.Tensor, torch.Tensor, str) or None
        ``(weight, bias, activation)`` per linear layer.
    """
    if not isinstance(gnet, GNet) or not _fused_op_available():
        return None
    params = list(gnet.parameters())
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return None
    mods = list(gnet.body)
    layers = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            if i + 1 == len(mods):
                act = "sigmoid"  # GNet.forward's sigmoid, fused (oneDNN's own: same result for any row count)
            elif isinstance(mods[i + 1], nn.ReLU):
                act = "relu"
            else:
                return None
            layers.append((m.weight.detach(), m.bias.detach(), act))
        elif not isinstance(m, nn.ReLU):
            return None
    return layers


@functools.lru_cache(maxsize=None)
def _fused_op_available() -> bool:
    """Whether oneDNN's fused linear operator exists here and agrees with torch's own layers
    (checked once on a small random case: a private operator may change between torch versions)."""
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=gen) for s in ((5, 7), (3, 7), (3,)))
        with torch.inference_mode():
            relu = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [None], "")
            sig = torch.ops.mkldnn._linear_pointwise(x, w, b, "sigmoid", [None], "")
            lin = torch.nn.functional.linear(x, w, b)
        return bool(
            torch.allclose(relu, torch.relu(lin), rtol=1e-5, atol=1e-6)
            and torch.allclose(sig, torch.sigmoid(lin), rtol=1e-5, atol=1e-6)
        )
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - torch builds without it
        return False


def _fused_forward(gnet, layers, xb):
    """``gnet(xb)`` through oneDNN's fused linear + activation (float32)."""
    rows = xb.shape[0]
    if rows == 1:  # a single row takes oneDNN's matrix-vector kernel (other rounding): pad to two
        xb = torch.cat([xb, xb])
    for w, b, act in layers:
        xb = torch.ops.mkldnn._linear_pointwise(xb, w, b, act, [None], "")
    # two separate elementwise ops (no fused multiply-add): each rounds the same in any code path
    out = gnet.out_lo + gnet.out_span * xb[:rows]
    return out[:, 1:], out[:, 0]


def generate_gbpd(
    gnet,
    rng: np.random.Generator,
    intensity: float,
    lo,
    hi,
    *,
    kappa: int = 12,
    input_scale_px: float = 10.0,
    cell_margin_px: float = 16.0,
    knn_margin_px: float | None = None,
    radius=None,
) -> GBPD:
    """Draw a 3D grain architecture covering the box ``[lo, hi]`` (analytic: seeds + markers).

    Seeds are drawn in the box extended by ``cell_margin_px + knn_margin_px``; markers are
    computed (one fused kNN + input kernel call, :func:`nmc_dataset.calibration._knn.knn_inputs`, then
    one network pass) for the seeds within ``cell_margin_px`` of the box, which are the ones
    whose cells can reach into it. All of them get markers: they are part of the returned GBPD
    (about 43,500 for the box [-128, 128]^3 at mu = 0.0018, of which ~30,500 lie inside it).

    Parameters
    ----------
    gnet : GNet
        The trained marker network.
    rng : numpy.random.Generator
        Source of the seeds and their marks.
    intensity : float
        Seeds per pixel^3.
    lo, hi : (3,) array-like
        The box in pixels (particle centre at the origin).
    kappa : int, default 12
        Neighbours per seed, as the network was trained with.
    input_scale_px : float, default 10.0
        Input scaling of the displacements, as the network was trained with.
    cell_margin_px : float
        Seeds this far outside the box are kept (their cells may reach into it).
    knn_margin_px : float, optional
        Extra margin so that kept seeds have their true neighbours (default: 3 mean spacings).
    radius : float, (n,) array or callable, optional
        The particle radius for a depth-aware ``gnet`` (:func:`depth_inputs`; required then,
        ignored otherwise).

    Returns
    -------
    GBPD
        3D, pixels, with roll angles.
    """
    if getattr(gnet, "depth_aware", False) and radius is None:
        raise ValueError("a depth-aware G_net needs the particle radius")

    lo = np.asarray(lo, dtype=np.float64).reshape(3)
    hi = np.asarray(hi, dtype=np.float64).reshape(3)
    if knn_margin_px is None:
        knn_margin_px = default_knn_margin(intensity, kappa)
    m = cell_margin_px + knn_margin_px
    ss = poisson_seed_set(rng, intensity, lo - m, hi + m)
    pos = ss.positions
    keep = box_mask(pos, lo - cell_margin_px, hi + cell_margin_px)
    x = neighbour_inputs(pos, ss.noise, ss.roll, keep, kappa=kappa, input_scale_px=input_scale_px)
    if getattr(gnet, "depth_aware", False):
        x = with_depth(x, pos[keep], radius)
    diag, off = markers(gnet, x)
    return GBPD(pos[keep], diag, off, ss.roll[keep])


def default_knn_margin(intensity: float, kappa: int = 12) -> float:
    """A margin wide enough that a seed's ``kappa`` nearest neighbours almost surely lie inside it.

    The kappa-th neighbour distance of a Poisson process has mean ~ ``(3 kappa / (4 pi mu))^(1/3)``;
    twice that is used.

    Parameters
    ----------
    intensity : float
        Seed intensity ``mu`` (seeds per pixel³).
    kappa : int, default 12
        Neighbours per seed.

    Returns
    -------
    float
        Margin in pixels.
    """
    return 2.0 * (3.0 * (kappa + 1) / (4.0 * np.pi * float(intensity))) ** (1.0 / 3.0)
