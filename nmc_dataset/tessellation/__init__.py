"""The tessellation engine: generalized balanced power diagrams (GBPD) with the radial marker restriction.

:class:`GBPD` (model and radial frames) -> :func:`hard_labels` / :func:`hard_labels_grid` (exact,
compiled labelling) or :func:`soft_assign` (the differentiable torch form the GAN trains through);
:func:`count_disconnected` checks a labelling; :func:`poisson_seeds` draws the seeds.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_gbpd": ["DIAG_MIN", "GBPD", "grid_points", "power_distances", "radial_frames"],
    "_labels": ["hard_labels", "hard_labels_grid", "near_candidates"],
    "_connectivity": ["count_disconnected"],
    "_soft": ["candidate_seeds", "soft_assign", "soft_power_distances", "torch_frames"],
    "_seeds": ["PoissonSeeds", "poisson_seeds", "poisson_seeds_near", "roi_window"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
