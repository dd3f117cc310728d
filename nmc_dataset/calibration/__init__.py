"""Stereological calibration of the grain model: a least-squares GAN that sees only 2D sections.

Fitted 2D tessellations (:func:`fit_sections`) -> cutouts of measured and generated tessellations
(:func:`t2d_batch`, :func:`t3d_batch`) -> :class:`Discriminator` vs the generator :class:`GNet`
(:func:`train`) -> :class:`GrainModel` (weights + JSON) -> :func:`describe_grains`.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_fit2d": [
        "SectionFit",
        "augment",
        "fit_section",
        "fit_sections",
        "read_tessellations",
        "section_from_gbpd",
        "write_tessellations",
    ],
    "_generator": [
        "GNet",
        "default_knn_margin",
        "depth_inputs",
        "fused_layers",
        "generate_gbpd",
        "markers",
        "neighbour_inputs",
        "poisson_seed_set",
    ],
    "_knn": ["box_mask", "knn", "knn_inputs"],
    "_cutouts": ["CutoutSpec", "t2d_batch", "t3d_batch"],
    "_discriminator": ["Discriminator"],
    "_gan": [
        "DiscriminatorConfig",
        "GeneratorConfig",
        "ScheduleConfig",
        "TrainConfig",
        "Trainer",
        "resolve_device",
        "train",
        "train_restarts",
    ],
    "_model": ["GRAIN_MODEL_FORMAT", "GrainModel", "MODEL_JSON", "WEIGHTS"],
    "_descriptors": ["cut_height_study", "describe_grains", "grain_stats_3d", "section_descriptors", "shell_stats_3d"],
    "_radial_bins": ["compare_radial_bins", "radial_bin_descriptors"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
