"""The outer shell of a secondary particle (docs/method.md#outer-shell).

CT volume -> :func:`segment_volume` -> :func:`measure_particles_subvoxel` (sub-voxel star-shaped
radius, SH least squares; :func:`measure_particles` the nearest-voxel one) -> :func:`select_model`
(independent or scale-mixture models, chosen on held-out particles) -> :meth:`ShellModel.sample_coefficients`
-> :func:`shell_descriptors` -> :func:`nmc_dataset.compare.compare_descriptors`. The CLI's steps
(fit, sample, describe) are :mod:`nmc_dataset.pipeline`'s ``fit_shells``, ``sample_shells``, ``describe_shells``.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_descriptors": ["DESCRIPTORS", "DESCRIPTOR_UNITS", "mesh_descriptors", "shell_descriptors"],
    "_harmonics": [
        "coeff_index",
        "degree_of_index",
        "fit_coefficients",
        "icosphere",
        "n_coeffs",
        "radius",
        "random_rotations",
        "sh_basis",
        "vertex_weights",
    ],
    "_mixture": ["ScaleMixture"],
    "_model": [
        "COEFF_TABLE_FORMAT",
        "DegreeLaw",
        "ShellModel",
        "coefficient_columns",
        "read_coefficients_table",
        "write_coefficients_table",
    ],
    "_radius": ["ParticleCoefficients", "measure_particles", "ray_radius", "star_fraction"],
    "_segment": ["Segmentation", "segment_volume"],
    "_selection": ["CANDIDATES", "fit_candidate", "format_table", "select_model"],
    "_subvoxel": ["measure_particles_subvoxel"],
    "_ellipsoid": ["EllipsoidMixture", "fit_ellipsoids", "ellipsoid_coefficients"],
    "_sigma_rule": ["auto_sigma", "suggest_sigma"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
