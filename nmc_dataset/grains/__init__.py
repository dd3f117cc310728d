"""The grain architecture (docs/method.md#grain-architecture): GBPD engine, EBSD sections, 2D fits, stereological GAN.

Names are imported lazily (PEP 562) so that ``import nmc_dataset.tessellation._labels`` and the CLI do not
pay for torch until a torch-backed name is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "gbpd": ["GBPD", "DIAG_MIN", "radial_frames", "power_distances", "hard_labels", "hard_labels_grid",
             "hard_labels_bruteforce", "grid_points", "count_disconnected", "soft_assign", "torch_frames",
             "near_candidates", "candidate_seeds"],
    "seeds": ["PoissonSeeds", "poisson_seeds", "poisson_seeds_near", "roi_window"],
    "fit2d": ["SectionFit", "fit_section", "fit_sections", "augment", "read_tessellations", "write_tessellations"],
    "orientation": ["symmetry_ops", "misorientation_angle", "euler_to_quat", "quat_to_euler", "mean_orientation"],
    "reconstruct": ["reconstruct_grains", "adjusted_rand_index"],
    "morphology": ["grain_table", "chord_lengths", "alpha_kde", "centrality_score", "section_centrality",
                   "CENTRALITY_THRESHOLD"],
    "commands_ebsd": ["import_ebsd"],
    "model": ["GrainModel"],
    "generator": ["GNet", "generate_gbpd"],
    "gan": ["TrainConfig", "train"],
    "cutouts": ["CutoutSpec", "t2d_batch", "t3d_batch"],
    "discriminator": ["Discriminator"],
    "descriptors": ["grain_stats_3d", "section_descriptors", "describe_grains", "cut_height_study"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
