"""Multi-scale particles: a shell and a grain architecture in one frame, voxelised.

See docs/method.md#particle-assembly.
"""

from nmc_dataset.particles._assemble import Particle, assemble, cell_centres_of_mass, make_particle, particle_seed
from nmc_dataset.particles._voxelize import Grid, VoxelVolume, check_memory, grain_statistics, shell_mask, voxelize

__all__ = ["Particle", "assemble", "cell_centres_of_mass", "make_particle", "particle_seed", "Grid",
           "VoxelVolume", "check_memory", "grain_statistics", "shell_mask", "voxelize"]
