"""Readers and writers of outside formats: CT volumes, EBSD scans, imported sections."""

from .ct import read_volume
from .ebsd import NMC811, EbsdPhase, EbsdScan, read_ang, read_ctf, read_ebsd, write_ang, write_ctf
from .sections import Section, read_section, read_sections, write_section

__all__ = ["read_volume", "NMC811", "EbsdPhase", "EbsdScan", "read_ang", "read_ctf", "read_ebsd", "write_ang",
           "write_ctf", "Section", "read_section", "read_sections", "write_section"]
