"""Exports of particles: parameter tables (parquet), voxel HDF5 + XDMF, surface and tetrahedral meshes,
solver decks and simulator hand-offs.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_hdf5": ["VoxelsWriter", "list_volumes", "read_label_volume", "read_orientations", "write_voxels"],
    "_meshes": [
        "GrainSurface",
        "TetMesh",
        "grain_surface_mesh",
        "shell_surface_mesh",
        "tet_mesh",
        "write_surfaces",
        "write_tet_mesh",
    ],
    "_cleanup": ["clean_labels"],
    "_decimate": ["coarsen_surface", "repair_self_intersections", "tet_mesh_coarsened"],
    "_collapse": ["collapse_edges", "decimate_surface"],
    "_intersect": ["self_intersections"],
    "_simulators": ["check_simulator_formats", "write_simulator_files"],
    "_tables": ["params_tables", "particle_from_rows", "read_params", "read_particles", "write_params"],
    "_preview": ["c_axis_colours", "orientation_rendering", "preview_glb"],
    "_glb": ["grains_glb_bytes"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
