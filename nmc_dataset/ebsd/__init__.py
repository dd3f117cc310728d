"""EBSD sections: crystal orientations, grain reconstruction, section morphology and the orientation model.

A scan (:mod:`nmc_dataset.io`) -> :func:`reconstruct_grains` (misorientation-based grain labels)
-> :func:`grain_table` / :func:`section_centrality` (2D morphology, central-section choice); the
orientations of the grains -> :class:`OrientationModel` (radial texture, sampled per 3D grain).
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_orientation": [
        "euler_to_quat",
        "quat_to_euler",
        "misorientation_angle",
        "mean_orientation",
        "symmetry_ops",
        "random_quaternions",
        "perturb",
    ],
    "_reconstruct": ["reconstruct_grains"],
    "_morphology": [
        "CENTRALITY_CALIBRATION",
        "CENTRALITY_THRESHOLD",
        "alpha_kde",
        "centrality_score",
        "chord_arrow_table",
        "chord_lengths",
        "chord_table",
        "grain_descriptors",
        "grain_table",
        "is_central",
        "section_centrality",
    ],
    "_orientation_model": [
        "ORIENTATION_MODEL_FILE",
        "ORIENTATION_MODEL_FORMAT",
        "OrientationModel",
        "fit_texture",
        "fit_texture_deblurred",
        "orientation_columns",
        "radial_directions",
    ],
    "_completion": ["complete_grains"],
    "_detection": [
        "DetectionLimit",
        "calibrate_rates",
        "complete_as_imported",
        "detected",
        "low_ci_rates",
        "simulate_confident",
    ],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
