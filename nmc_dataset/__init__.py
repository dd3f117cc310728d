"""nmc-dataset: virtual NMC811 cathode particles with radial grain architectures.

Subpackages
-----------
shells     outer shell of a secondary particle (docs/method.md#outer-shell)
grains     grain architecture: GBPD engine, EBSD sections, stereological GAN (docs/method.md#grain-architecture)
particles  multi-scale assembly (docs/method.md#particle-assembly)
export     voxel HDF5, meshes and tables
dataset    recipe-driven builds, cards and publishing
synthetic  known-truth phantoms (CT volumes, EBSD sections)
"""

__version__ = "0.1.0"
