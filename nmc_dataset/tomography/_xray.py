"""X-ray optical constants of the electrode phases, from the XrayDB database (``xraydb``, MIT).

Each phase is a material of a chemical formula and a density; the linear attenuation coefficient
``μ(E) = ρ · (μ/ρ)(E)`` (total cross-section: photo-absorption + coherent + incoherent scattering)
and the refractive-index decrement ``δ(E)`` come from ``xraydb.material_mu`` and
``xraydb.xray_delta_beta`` (Elam, Ravel & Sieber tables). Mixtures are mass-weighted:
``μ = ρ · Σ_k w_k (μ/ρ)_k`` and ``δ = Σ_k δ_k(ρ w_k)``.

=================  ======================================  ===============================================
phase              material                                 density
=================  ======================================  ===============================================
NMC (1)            LiNi0.8Mn0.1Co0.1O2                      4.75 g/cm³ (crystallographic, ~4.7-4.8)
carbon-binder (2)  carbon black : PVDF (C2H2F2) = 1 : 1     1.9 g/cm³ solid, 50 % nano-porosity → 0.95
                   by mass
pore (0)           air (N0.78 O0.21 Ar0.01 by atoms)        0.0012 g/cm³
  ``liquid``       1 M LiPF6 in EC:DMC (C3H4O3 : C3H6O3 1:1 1.3 g/cm³
                   by mass, 12 % LiPF6)
  ``solid``        argyrodite Li6PS5Cl                      1.64 g/cm³
=================  ======================================  ===============================================
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nmc_dataset.errors import InputError, MissingExtraError


@dataclasses.dataclass(frozen=True)
class Material:
    """A material as mass fractions of formulas and a density (g/cm³)."""

    name: str
    components: tuple  # ((formula, mass fraction), ...)
    density_g_cm3: float

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "components": [list(c) for c in self.components],
            "density_g_cm3": self.density_g_cm3,
        }


NMC811 = Material("NMC811", (("LiNi0.8Mn0.1Co0.1O2", 1.0),), 4.75)
CARBON_BINDER = Material("carbon-binder (carbon black + PVDF, 50 % porous)", (("C", 0.5), ("C2H2F2", 0.5)), 0.95)
AIR = Material("air", (("N1.56O0.42Ar0.01", 1.0),), 0.0012)
LIQUID = Material("1 M LiPF6 in EC:DMC", (("C3H4O3", 0.44), ("C3H6O3", 0.44), ("LiPF6", 0.12)), 1.3)
ARGYRODITE = Material("Li6PS5Cl (argyrodite)", (("Li6PS5Cl", 1.0),), 1.64)
PORE_MATERIALS = {"none": AIR, "liquid": LIQUID, "solid": ARGYRODITE}


def _xraydb():
    try:
        import xraydb
    except ImportError:  # pragma: no cover - a core dependency
        raise MissingExtraError("the CT simulator", "tomography", "xraydb") from None
    return xraydb


def attenuation_per_um(material: Material, energy_kev: float) -> float:
    """Linear attenuation coefficient μ in 1/µm at ``energy_kev``."""
    x = _xraydb()
    e = float(energy_kev) * 1000.0
    mu_rho = sum(w * x.material_mu(f, e, density=1.0) for f, w in material.components)  # cm²/g
    return float(mu_rho * material.density_g_cm3 * 1e-4)


def delta(material: Material, energy_kev: float) -> float:
    """Refractive-index decrement δ at ``energy_kev``."""
    x = _xraydb()
    e = float(energy_kev) * 1000.0
    return float(sum(x.xray_delta_beta(f, material.density_g_cm3 * w, e)[0] for f, w in material.components))


def phase_materials(electrolyte: str = "none") -> dict:
    """Material of phase labels 0, 1, 2 for a pore filling (``none`` = air, ``liquid``, ``solid``)."""
    if electrolyte not in PORE_MATERIALS:
        raise InputError(f"unknown electrolyte {electrolyte!r} (one of {', '.join(PORE_MATERIALS)})")
    return {0: PORE_MATERIALS[electrolyte], 1: NMC811, 2: CARBON_BINDER}


def phase_attenuation(energy_kev: float, electrolyte: str = "none") -> np.ndarray:
    """``μ`` (1/µm) of phases 0, 1, 2 as a lookup table."""
    if not (np.isfinite(energy_kev) and 1.0 <= energy_kev <= 500.0):
        raise InputError(f"photon energy must be within 1-500 keV, got {energy_kev}", "--energy-kev")
    mats = phase_materials(electrolyte)
    return np.array([attenuation_per_um(mats[k], energy_kev) for k in range(3)])


__all__ = [
    "AIR",
    "ARGYRODITE",
    "CARBON_BINDER",
    "LIQUID",
    "NMC811",
    "Material",
    "attenuation_per_um",
    "delta",
    "phase_attenuation",
    "phase_materials",
]
