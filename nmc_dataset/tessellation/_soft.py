"""The differentiable (soft) form of the GBPD in torch: frames, power distances, soft assignment.

The GAN trains through this form; :mod:`nmc_dataset.tessellation._labels` is its exact hard twin.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def torch_frames(seeds, roll=None):
    """Differentiable torch twin of :func:`radial_frames`.

    Parameters
    ----------
    seeds : (N, d) torch tensor
        Seed positions ``(x, y[, z])`` relative to the particle centre.
    roll : (N,) torch tensor, optional
        Roll angles (3D).

    Returns
    -------
    (N, d, d) tensor
        Rotations ``Q_i``; row 0 of each is the radial direction.
    """
    import torch

    n, d = seeds.shape
    norm = torch.linalg.vector_norm(seeds, dim=1, keepdim=True)
    ok = norm > 1e-12
    e1 = torch.zeros_like(seeds)
    e1[:, 0] = 1.0
    u = torch.where(ok, seeds / torch.where(ok, norm, torch.ones_like(norm)), e1)
    if d == 2:
        c, s = u[:, 0], u[:, 1]
        return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)
    a = u + e1
    an = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    good = an > 1e-9
    e2 = torch.zeros_like(seeds)
    e2[:, 1] = 1.0
    a = torch.where(good, a / torch.where(good, an, torch.ones_like(an)), e2)
    eye = torch.eye(3, dtype=seeds.dtype, device=seeds.device)
    flip = 2.0 * a[:, :, None] * a[:, None, :] - eye
    g = torch.zeros(n, dtype=seeds.dtype, device=seeds.device) if roll is None else roll.to(seeds.dtype)
    cg, sg = torch.cos(g), torch.sin(g)
    one, zero = torch.ones_like(cg), torch.zeros_like(cg)
    rot = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cg, -sg], -1), torch.stack([zero, sg, cg], -1)], 1
    )
    return rot @ flip


def soft_power_distances(points, seeds, diag, offsets, frames, candidates=None):
    """Power distances ``|x - s_i|^2_{M_i} - r_i`` in torch, over each point's candidates.

    Parameters
    ----------
    points : (P, d) tensor
        Query points ``(x, y[, z])``.
    seeds, diag : (N, d) tensors
        Seed positions and the diagonal marker entries of each seed's metric in its local frame.
    offsets : (N,) tensor
        Power offsets ``r_i``.
    frames : (N, d, d) tensor (see :func:`torch_frames`)
        Rotations ``Q_i`` of the seeds (row 0 = the radial direction).
    candidates : (P, K) int64 tensor, optional
        Seed indices per point; negative entries are padding. ``None``: all seeds (K = N).

    Returns
    -------
    (P, K) tensor
        Padding entries are ``+inf``.
    """
    import torch

    if candidates is None:
        diff = points[:, None, :] - seeds[None, :, :]  # (P, N, d)
        local = torch.einsum("nij,pnj->pni", frames, diff)
        return (local * local * diag[None]).sum(-1) - offsets[None, :]
    candidates = torch.as_tensor(candidates, device=points.device)
    pad = candidates < 0
    idx = candidates.clamp_min(0)
    diff = points[:, None, :] - seeds[idx]  # (P, K, d)
    local = torch.einsum("pkij,pkj->pki", frames[idx], diff)
    dist = (local * local * diag[idx]).sum(-1) - offsets[idx]
    return dist.masked_fill(pad, float("inf"))


def soft_assign(points, seeds, diag, offsets, frames, beta, candidates=None):
    """Soft GBPD assignment ``T_i(x) = softmax_i(-(|x - s_i|^2_{M_i} - r_i) / beta)``.

    Differentiable with respect to ``seeds``, ``diag``, ``offsets`` (and ``frames``; build them
    with :func:`torch_frames` from the seeds to differentiate through the radial frames too).

    Parameters
    ----------
    points : (P, d) tensor
        Query points ``(x, y[, z])``.
    seeds, diag : (N, d) tensors
        Seed positions and the diagonal marker entries of each seed's metric in its local frame.
    offsets : (N,) tensor
        Power offsets ``r_i``.
    frames : (N, d, d) tensor
        Rotations ``Q_i`` of the seeds (row 0 = the radial direction; see :func:`torch_frames`).
    beta : float or 0-d tensor
        Temperature, > 0; ``beta -> 0`` gives the hard tessellation.
    candidates : (P, K) int64 tensor, optional
        The seeds each point may belong to (e.g. from :func:`candidate_seeds`); negative entries
        are padding and get probability 0. ``None`` uses every seed (memory O(P N)).

    Returns
    -------
    (P, K) tensor
        Probabilities over each point's candidates (rows sum to 1).
    """
    import torch

    dist = soft_power_distances(points, seeds, diag, offsets, frames, candidates)
    return torch.softmax(-dist / beta, dim=-1)


def candidate_seeds(points: np.ndarray, seeds: np.ndarray, k: int = 16) -> np.ndarray:
    """The ``k`` Euclidean-nearest seeds of each point (a heuristic candidate set for :func:`soft_assign`).

    Parameters
    ----------
    points : (P, d) float array
        Query points ``(x, y[, z])``.
    seeds : (N, d) float array
        Seed positions, same units as ``points``.
    k : int, default 16
        Candidates per point (capped at N).

    Returns
    -------
    (P, min(k, N)) int64 array
        Seed indices, nearest first.
    """

    seeds = np.asarray(seeds, dtype=np.float64)
    k = min(int(k), len(seeds))
    _, idx = cKDTree(seeds).query(np.asarray(points, dtype=np.float64), k=k)
    return np.asarray(idx, dtype=np.int64).reshape(len(points), k)
