"""Attenuation of the phases from the X-ray database."""

import numpy as np
import pytest

from nmc_dataset.errors import InputError
from nmc_dataset.tomography import _xray as xray


def test_attenuation_orders_and_falls_with_energy():
    mu8, mu20 = xray.phase_attenuation(8.0), xray.phase_attenuation(20.0)
    assert mu8[1] > mu8[2] > mu8[0] > 0  # NMC >> carbon-binder >> air
    assert np.all(mu20 < mu8)
    # NMC811 at 20 keV: (mu/rho) ~ 18.8 cm^2/g (Ni/Co/Mn oxides), rho 4.75 -> ~0.0089 /um
    assert mu20[1] == pytest.approx(0.0089, rel=0.05)
    # the Ni K edge (8.33 keV) raises NMC's attenuation across it
    assert xray.attenuation_per_um(xray.NMC811, 8.4) > 2 * xray.attenuation_per_um(xray.NMC811, 8.2)


def test_solid_electrolyte_fills_the_pores_with_a_visible_phase():
    air, solid = xray.phase_attenuation(20.0, "none"), xray.phase_attenuation(20.0, "solid")
    assert solid[0] > 100 * air[0] and solid[1] == air[1]
    assert xray.delta(xray.NMC811, 20.0) > xray.delta(xray.ARGYRODITE, 20.0) > 0


def test_bad_energy_and_electrolyte_are_input_errors():
    with pytest.raises(InputError, match="energy"):
        xray.phase_attenuation(0.1)
    with pytest.raises(InputError, match="electrolyte"):
        xray.phase_materials("gel")
