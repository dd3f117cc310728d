"""Known-truth phantoms: CT volumes of known shells, EBSD scans of a known 3D grain architecture,
yardstick architectures.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_ct_phantom": [
        "CTPhantom",
        "TRUTH_KINDS",
        "make_ct_phantom",
        "reference_shell_model",
        "render_shells",
        "truth_coefficients",
    ],
    "_ebsd": [
        "TEACHER_DEFAULTS",
        "radial_teacher_gbpd",
        "slice_labels",
        "synthetic_scan",
        "write_scan",
        "write_synthetic_sections",
    ],
    "_yardsticks": ["laguerre_sampler", "teacher_sampler"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
