"""Readers and writers of outside formats: CT volumes, EBSD scans, imported sections."""

from nmc_dataset.io._ct import read_volume
from nmc_dataset.io._ebsd import NMC811, EbsdPhase, EbsdScan, read_ang, read_ctf, read_ebsd, write_ang, write_ctf
from nmc_dataset.io._sections import Section, read_section, read_sections, write_section

__all__ = ["read_volume", "NMC811", "EbsdPhase", "EbsdScan", "read_ang", "read_ctf", "read_ebsd", "write_ang",
           "write_ctf", "Section", "read_section", "read_sections", "write_section"]
