"""nmc-dataset: virtual NMC811 cathode particles with radial grain architectures.

Subpackages
-----------
shells     outer shell of a secondary particle (SPEC section 1)
grains     grain architecture: GBPD engine, EBSD sections, stereological GAN (SPEC section 2)
particles  multi-scale assembly (SPEC section 3)
export     voxel HDF5, meshes and tables
dataset    recipe-driven builds, cards and publishing
synthetic  known-truth phantoms (CT volumes, EBSD sections)
"""

__version__ = "0.1.0"
