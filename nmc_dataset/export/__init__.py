"""Exports of particles: parameter tables (parquet), voxel HDF5 + XDMF, surface and tetrahedral meshes."""

from nmc_dataset.export._hdf5 import VoxelsWriter, list_volumes, read_volume, write_voxels
from nmc_dataset.export._meshes import GrainSurface, TetMesh, grain_surface_mesh, shell_surface_mesh, tet_mesh, write_surfaces, write_tet_mesh
from nmc_dataset.export._tables import params_tables, read_params, read_particles, write_params

__all__ = ["VoxelsWriter", "list_volumes", "read_volume", "write_voxels", "GrainSurface", "TetMesh",
           "grain_surface_mesh", "shell_surface_mesh", "tet_mesh", "write_surfaces", "write_tet_mesh",
           "params_tables", "read_params", "read_particles", "write_params"]
