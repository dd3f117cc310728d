"""Slow twins of voxelisation: the exact shell test at every voxel centre, brute-force GBPD labels."""

from __future__ import annotations

import numpy as np

from nmc_dataset.particles._voxelize import (
    CUBE_PAD,
    Grid,
    VoxelVolume,
    _to_labels,
    cube_grid,
    grid_points_px,
    inside_shell,
    label_dtype,
    particle_grid,
)
from nmc_dataset.testing._tessellation import hard_labels_bruteforce


def gbpd_grid_labels_reference(g, grid: Grid, pixel_size_um: float, mask=None) -> np.ndarray:
    """Slow twin of :func:`gbpd_grid_labels`: brute-force argmin over every seed.

    Parameters
    ----------
    g : GBPD
        Grain tessellation in pixels.
    grid : Grid
        The voxel grid.
    pixel_size_um : float
        µm per GBPD pixel.
    mask : (Z, Y, X) bool array, optional
        Voxels to label; the others get -1.

    Returns
    -------
    (Z, Y, X) int64 array
        Seed index per voxel, -1 outside ``mask``.
    """
    out = np.full(grid.n_voxels, -1, dtype=np.int64)
    idx = np.arange(grid.n_voxels) if mask is None else np.flatnonzero(np.asarray(mask).ravel())
    for start in range(0, len(idx), 1 << 16):
        sel = idx[start : start + (1 << 16)]
        out[sel] = hard_labels_bruteforce(g, grid_points_px(grid, pixel_size_um, sel))
    return out.reshape(grid.shape)


def shell_mask_reference(coeffs_um: np.ndarray, grid: Grid) -> np.ndarray:
    """Slow twin of :func:`shell_mask`: the exact test at every voxel centre.

    Parameters
    ----------
    coeffs_um : (K,) float array
        Shell SH coefficients in µm.
    grid : Grid
        The voxel grid.

    Returns
    -------
    (Z, Y, X) bool array
        Voxels whose centre lies inside the shell.
    """
    x = grid.axis_coords_um("x")
    y = grid.axis_coords_um("y")
    z = grid.axis_coords_um("z")
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    return inside_shell(coeffs_um, pts).reshape(grid.shape)


def voxelize_reference(particle, voxel_size_um: float, *, pad: int = 2) -> VoxelVolume:
    """Slow twin of :func:`voxelize`: SH radius at every voxel, brute-force GBPD labels.

    Parameters
    ----------
    particle : Particle
        The particle (shell in µm, GBPD in pixels).
    voxel_size_um : float
        Voxel edge length in µm.
    pad : int, default 2
        Empty voxels around the shell's bounding box.

    Returns
    -------
    VoxelVolume
        Labels 0 outside, ``k`` = grain ``k``.
    """
    grid = particle_grid(particle, voxel_size_um, pad)
    mask = shell_mask_reference(particle.coeffs_um, grid)
    lab = gbpd_grid_labels_reference(particle.grains, grid, particle.pixel_size_um, mask)
    return VoxelVolume(
        _to_labels(lab, mask, particle.grains.n),
        grid,
        particle.particle_id,
        getattr(particle, "orientations_wxyz", None),
    )


def voxelize_cube_reference(particle, n: int, pad: int = CUBE_PAD):
    """Slow twin of :func:`voxelize_cube` (SH radius at every voxel, brute-force GBPD labels).

    Parameters
    ----------
    particle : Particle
        The particle (shell in µm, GBPD in pixels).
    n : int
        Cube edge length in voxels.
    pad : int, default CUBE_PAD
        Empty voxels between the shell's bounding box and the cube's faces.

    Returns
    -------
    VoxelVolume
        Labels 0 outside, ``k`` = grain ``k``.
    """
    grid = cube_grid(particle.coeffs_um, n, pad)
    mask = shell_mask_reference(particle.coeffs_um, grid)
    lab = gbpd_grid_labels_reference(particle.grains, grid, particle.pixel_size_um, mask)
    out = np.zeros(grid.shape, dtype=label_dtype(particle.grains.n))
    out[mask] = (lab[mask] + 1).astype(out.dtype)
    return VoxelVolume(out, grid, particle.particle_id)
