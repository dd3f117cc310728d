"""The pipeline: recipe stages and their orchestration, from user data to a published release.

Each stage is a function the command line and ``nmc-dataset run RECIPE`` share: fit the shells
(:func:`fit_shells`), import EBSD scans (:func:`import_ebsd`), generate particles
(:func:`generate_particles`, one particle end to end in :func:`export_particle`), build a sharded
release (:func:`build_dataset`), write its card and manifest, and publish it. The pipeline uses
the library packages and never the command line.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_recipe": ["RunContext", "load_recipe", "recipe_hash", "recipe_schema", "run_recipe", "validate_recipe"],
    "_shells": [
        "FitResult",
        "describe_shells",
        "fit_shells",
        "fit_volume",
        "read_shells",
        "sample_shells",
        "write_shells",
    ],
    "_ebsd_import": ["expand_scans", "import_ebsd"],
    "_generate": [
        "generate_particles",
        "load_grain_model",
        "load_shell_model",
        "parse_formats",
        "write_particle_meshes",
    ],
    "_particles": ["ParticleFailure", "ParticleResult", "export_particle", "export_particles"],
    "_build": ["BuildResult", "ShardResult", "array3d_column", "build_dataset", "check_build_folder"],
    "_particle_shards": ["build_particle_release", "particle_shard", "release_configs"],
    "_manifest": ["read_manifest", "verify_manifest", "write_manifest"],
    "_card": ["render_card", "validate_card", "write_card"],
    "_card_figures": ["card_figures"],
    "_publish": ["parse_target", "publish_hf", "publish_zenodo"],
    "_stage_tomography": ["volume_draws"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
