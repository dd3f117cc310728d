"""Readers and writers of outside formats: CT volumes, EBSD scans (.ang, .ctf) and imported 2D sections."""

from nmc_dataset._util import lazy_exports

_EXPORTS = {
    "_ct": ["read_volume", "parse_shape"],
    "_ebsd": ["NMC811", "EbsdPhase", "EbsdScan", "read_ang", "read_ctf", "read_ebsd", "write_ang", "write_ctf"],
    "_sections": ["Section", "read_section", "read_sections", "write_section"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
