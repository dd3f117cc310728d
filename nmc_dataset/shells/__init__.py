"""The outer shell of a secondary particle (docs/method.md#outer-shell).

CT volume -> :func:`segment_volume` -> :func:`measure_particles_subvoxel` (sub-voxel star-shaped
radius, SH least squares; :func:`measure_particles` the nearest-voxel one) -> :func:`select_model`
(independent or scale-mixture models, chosen on held-out particles) -> :meth:`ShellModel.sample_coefficients`
-> :func:`shell_descriptors` -> :func:`nmc_dataset.compare.compare_descriptors`.
:func:`fit_shells`, :func:`sample_shells` and :func:`describe_shells` are the CLI's three steps.
"""

from nmc_dataset.shells._descriptors import DESCRIPTORS, mesh_descriptors, shell_descriptors
from nmc_dataset.shells._harmonics import coeff_index, fit_coefficients, icosphere, n_coeffs, radius, random_rotations, sh_basis, vertex_weights
from nmc_dataset.shells._mixture import ScaleMixture
from nmc_dataset.shells._model import DegreeLaw, ShellModel, coefficient_columns
from nmc_dataset.pipeline._shells import FitResult, describe_shells, fit_shells, fit_volume, read_shells, sample_shells, write_shells
from nmc_dataset.shells._radius import ParticleCoefficients, measure_particles, ray_radius, star_fraction
from nmc_dataset.shells._segment import Segmentation, segment_volume
from nmc_dataset.shells._selection import select_model
from nmc_dataset.shells._subvoxel import measure_particles_subvoxel

__all__ = [
    "DESCRIPTORS", "mesh_descriptors", "shell_descriptors",
    "coeff_index", "fit_coefficients", "icosphere", "n_coeffs", "radius", "random_rotations", "sh_basis",
    "vertex_weights",
    "DegreeLaw", "ShellModel", "ScaleMixture", "coefficient_columns", "select_model",
    "FitResult", "describe_shells", "fit_shells", "fit_volume", "read_shells", "sample_shells", "write_shells",
    "ParticleCoefficients", "measure_particles", "measure_particles_subvoxel", "ray_radius", "star_fraction",
    "Segmentation", "segment_volume",
]
