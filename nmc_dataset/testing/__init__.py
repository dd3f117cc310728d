"""Test support: the slow twins of the fast kernels, and closed loops run through the command line.

A slow twin computes the same result as a fast path by the plainest method (every seed checked,
one library call per cell, ...); the test suite compares the two on random inputs. Nothing in the
package imports this module.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_tessellation": ["count_disconnected_reference", "hard_labels_bruteforce"],
    "_particles": [
        "gbpd_grid_labels_reference",
        "shell_mask_reference",
        "voxelize_cube_reference",
        "voxelize_reference",
    ],
    "_shells": ["pairwise_max_distance", "ray_radius_reference"],
    "_calibration": [
        "cutout_grid",
        "grain_stats_3d_reference",
        "knn_reference",
        "t2d_cutout_reference",
        "t3d_cutout_reference",
    ],
    "_shell_loop": ["format_loop_table", "run_truth_loop"],
    "_ebsd": ["misorientation_angle_bruteforce", "adjusted_rand_index", "contingency"],
    "_tomography": ["project_reference", "backproject_reference", "pull_back_reference"],
    "_export": ["decimation_violations", "int_rows_reference", "write_grains_glb_trimesh"],
    "_tetfiles": [
        "block_bad_reference",
        "components_reference",
        "grain_blocks_reference",
        "mesh_faces_reference",
        "second_order_reference",
        "write_inp_reference",
        "write_msh_reference",
        "write_ply_trimesh",
        "write_vtp_vtk",
        "write_vtu_vtk",
        "write_xdmf_meshio",
    ],
    "_dvc": ["lucas_kanade_translation_reference"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
