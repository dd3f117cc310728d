"""Small known-truth CT volumes for segmentation tests and training: touching particles, a binder
phase at their contacts, and a simple imaging forward model.

The particles come from :func:`nmc_dataset.synthetic._ct_phantom.make_ct_phantom` (star-shaped shells
of the reference shell model) placed with *overlapping* bounding spheres, so that many touch: the
contacts are flat faces where the first-placed shell wins, which is what watershed segmentation gets
wrong. The carbon-binder phase fills the pore voxels within ``binder_reach_vox`` of two different
particles (a "bridge" at every contact). The grey volume is

    g = blur_σ(μ[phase] · (1 + δ_particle)) + n,    n ~ N(0, noise_sigma²)

with per-phase levels μ (pore < binder < NMC), a per-particle brightness jitter δ, a Gaussian
point-spread blur of σ voxels and additive Gaussian noise. Grains are a Voronoi partition of every
particle by a few random seeds (unique ids over the volume). The output follows the ``ct`` kind of
:mod:`nmc_dataset.tomography._volumes`; the real CT renderer writes the same layout, so everything
that reads these volumes reads real renders unchanged.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model
from nmc_dataset.tomography._volumes import write_volumes

__all__ = ["phantom_ct_arrays", "write_phantom_ct"]

#: keyword defaults of :func:`phantom_ct_arrays` (the training-config ``phantom:`` section accepts these keys)
PHANTOM_DEFAULTS = {
    "size": 96,
    "n_particles": 250,
    "mean_radius_vox": 7.0,
    "overlap_vox": 5.0,
    "binder_reach_vox": 3.0,
    "levels": [0.1, 0.8, 0.35],
    "jitter": 0.05,
    "blur_sigma": 1.0,
    "noise_sigma": 0.07,
    "voxel_size_um": 0.1,
}


def phantom_ct_arrays(
    seed: int,
    *,
    size: int = 96,
    n_particles: int = 250,
    mean_radius_vox: float = 7.0,
    overlap_vox: float = 5.0,
    binder_reach_vox: float = 3.0,
    levels=(0.1, 0.8, 0.35),
    jitter: float = 0.05,
    blur_sigma: float = 1.0,
    noise_sigma: float = 0.07,
    voxel_size_um: float = 0.1,
) -> dict:
    """Draw one known-truth CT volume.

    Parameters
    ----------
    seed : int
        Seed of everything drawn (same seed, same arrays).
    size : int
        Cube edge in voxels.
    n_particles : int
        Particles to place (fewer when the cube is full).
    mean_radius_vox : float
        Mean particle radius in voxels (reference shell model).
    overlap_vox : float
        How far the bounding spheres of two particles may overlap (> 0 makes touching contacts).
    binder_reach_vox : float
        Pore voxels within this distance of two different particles become binder (0: no binder).
    levels : sequence of 3 floats
        Grey levels of pore, NMC and binder before blur and noise.
    jitter : float
        Standard deviation of the relative per-particle brightness.
    blur_sigma, noise_sigma : float
        Gaussian PSF σ (voxels) and additive noise σ (grey units).
    voxel_size_um : float
        Stored voxel size.

    Returns
    -------
    dict
        ``ct`` (float32), ``phase`` (uint8), ``particle`` (uint32), ``grain`` (uint32) arrays.
    """

    rng = np.random.default_rng(seed)
    model = reference_shell_model(mean_radius_vox=mean_radius_vox, voxel_size_um=voxel_size_um)
    ph = make_ct_phantom(
        model,
        shape=(size,) * 3,
        n_particles=n_particles,
        rng=rng,
        gap_vox=-overlap_vox,
        border_vox=-0.5 * mean_radius_vox,
        blur_sigma=0,
        noise_sigma=0,
        max_tries=60,
    )
    particle = ph.labels.astype(np.uint32)
    solid = particle > 0
    phase = solid.astype(np.uint8)
    if binder_reach_vox > 0:
        r = int(np.ceil(binder_reach_vox))
        zz, yy, xx = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
        ball = zz**2 + yy**2 + xx**2 <= binder_reach_vox**2
        big = np.uint32(np.iinfo(np.uint32).max)
        hi = ndimage.maximum_filter(particle, footprint=ball, mode="nearest")
        lo = ndimage.minimum_filter(np.where(solid, particle, big), footprint=ball, mode="nearest")
        phase[(~solid) & (lo != big) & (hi != lo)] = 2
    grain = _voronoi_grains(particle, rng, mean_radius_vox)
    lv = np.asarray(levels, dtype=np.float32)
    grey = lv[phase]
    n = int(particle.max())
    if jitter > 0 and n:
        factor = np.concatenate([[1.0], 1.0 + jitter * rng.standard_normal(n)]).astype(np.float32)
        grey = np.where(solid, grey * factor[particle], grey)
    if blur_sigma > 0:
        grey = ndimage.gaussian_filter(grey, blur_sigma, output=np.float32, mode="nearest")
    if noise_sigma > 0:
        grey += rng.standard_normal(grey.shape, dtype=np.float32) * np.float32(noise_sigma)
    return {"ct": grey.astype(np.float32), "phase": phase, "particle": particle, "grain": grain}


def _voronoi_grains(particle: np.ndarray, rng: np.random.Generator, mean_radius_vox: float) -> np.ndarray:
    """Partition each particle by nearest random seed (about 8 grains per mean particle)."""

    idx = np.flatnonzero(particle)
    grain = np.zeros(particle.shape, dtype=np.uint32)
    if idx.size == 0:
        return grain
    per_grain = max(1.0, (4 / 3) * np.pi * mean_radius_vox**3 / 8)
    n_seeds = max(1, round(idx.size / per_grain))
    seeds = rng.choice(idx, size=min(n_seeds, idx.size), replace=False)
    coords = np.column_stack(np.unravel_index(idx, particle.shape))
    scoords = np.column_stack(np.unravel_index(seeds, particle.shape))
    # nearest seed of the same particle: the particle id as a far-away 4th coordinate
    scale = 4.0 * particle.shape[0]
    tree = cKDTree(np.column_stack([scoords, particle.ravel()[seeds] * scale]))
    _, nearest = tree.query(np.column_stack([coords, particle.ravel()[idx] * scale]))
    key = particle.ravel()[idx].astype(np.int64) * (len(seeds) + 1) + nearest
    _, inv = np.unique(key, return_inverse=True)
    grain.ravel()[idx] = inv.astype(np.uint32) + 1
    return grain


def write_phantom_ct(path: str | os.PathLike, seed: int, **kwargs) -> os.PathLike:
    """Draw a volume with :func:`phantom_ct_arrays` and write it as a ``ct`` volume file.

    The ``imaging`` attribute records the forward model and every parameter.

    Parameters
    ----------
    path : str or path-like
        Output volume file.
    seed : int
        Seed of the draw.
    **kwargs
        Overrides of :data:`PHANTOM_DEFAULTS`, passed to :func:`phantom_ct_arrays`.

    Returns
    -------
    path-like
        The file written.
    """
    params = {**PHANTOM_DEFAULTS, **kwargs}
    arrays = phantom_ct_arrays(seed, **params)
    imaging = {
        "model": "phantom (gaussian blur + gaussian noise)",
        "seed": int(seed),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
    }
    return write_volumes(path, "ct", arrays, voxel_size_um=float(params["voxel_size_um"]), attrs={"imaging": imaging})
