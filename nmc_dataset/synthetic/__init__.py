"""Known-truth phantoms: CT volumes of known shells and EBSD scans of a known 3D grain architecture."""

from nmc_dataset.synthetic._ct_phantom import CTPhantom, make_ct_phantom, reference_shell_model, render_shells
from nmc_dataset.synthetic._ebsd import TEACHER_DEFAULTS, radial_teacher_gbpd, slice_labels, synthetic_scan, write_synthetic_sections

__all__ = ["CTPhantom", "make_ct_phantom", "reference_shell_model", "render_shells", "TEACHER_DEFAULTS",
           "radial_teacher_gbpd", "slice_labels", "synthetic_scan", "write_synthetic_sections"]
