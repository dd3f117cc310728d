"""Virtual tomography: electrode volumes packed from particles, CT renders with exact labels,
segmentation and its scoring.

File formats (HDF5, axes ``(z, y, x)``, lengths in µm unless a name says otherwise) are defined in
``nmc_dataset.tomography._volumes`` and docs/formats.md.
"""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_pack": ["BINDER_MODES", "pack_electrode"],
    "_ctsim": ["PRESETS", "render_ct", "resample_labels", "resolve_settings"],
    "_volumes": ["read_table", "read_volumes", "write_volumes"],
    "_classical": ["otsu_watershed"],
    "_scoring": ["score_segmentation"],
    "_segmenter": ["Segmenter", "SegmenterConfig"],
    "_training": ["run_training"],
    "_phantom": ["phantom_ct_arrays", "write_phantom_ct"],
    "_report": ["REPORT_FORMAT", "markdown", "particle_figure", "phase_figure"],
    "_evolve": ["Sequence", "load_protocol", "validate_protocol", "lattice_strain"],
    "_dvc": ["measure", "correlate", "compare", "subset_truth", "true_increment", "warp"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
