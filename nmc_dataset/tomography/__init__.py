"""Virtual tomography: electrode volumes packed from particles, CT renders with exact labels,
segmentation and its scoring.

File formats (HDF5, axes ``(z, y, x)``, lengths in µm unless a name says otherwise) are defined in
:mod:`nmc_dataset.tomography._volumes`.
"""
