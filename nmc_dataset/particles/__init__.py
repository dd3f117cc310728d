"""Multi-scale particles: a shell and a grain architecture in one frame, voxelised.

See docs/method.md#particle-assembly.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_assemble": ["Particle", "assemble", "cell_centres_of_mass", "make_particle", "particle_seed"],
    "_voxelize": [
        "CUBE_PAD",
        "cube_grid",
        "voxelize_cube",
        "Grid",
        "VoxelVolume",
        "check_memory",
        "gbpd_grid_labels",
        "grain_statistics",
        "inside_shell",
        "label_dtype",
        "particle_grid",
        "shell_extent",
        "shell_grid",
        "shell_mask",
        "voxelize",
    ],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
