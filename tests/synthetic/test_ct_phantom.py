"""Known-truth CT phantom: placement, rendering, grey levels."""

import numpy as np
import pytest

from nmc_dataset.shells._descriptors import shell_descriptors
from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model, render_shells


def test_reference_model_is_plausible(rng):
    m = reference_shell_model()
    assert [law.family for law in m.laws] == ["lognormal"] + ["t"] * 9
    c = m.sample_coefficients(500, rng)
    d = shell_descriptors(c, subdivisions=3)
    r_eq = (3 * d["volume"] / (4 * np.pi)) ** (1 / 3)
    assert 8 < np.percentile(r_eq, 5) and np.percentile(r_eq, 95) < 12  # radius ~ 8-12 voxels
    assert 1.1 < np.median(d["aspect_ratio"]) < 1.5


def test_phantom_truth(rng):
    ph = make_ct_phantom(
        reference_shell_model(7), shape=(64, 72, 80), n_particles=10, rng=rng, noise_sigma=0.0, blur_sigma=0.0
    )
    assert ph.n_particles == 10 and ph.volume.shape == (64, 72, 80)
    assert set(np.unique(ph.labels)) == set(range(11))
    # rendering is reproducible from the truth, and no particle touches the border
    np.testing.assert_array_equal(render_shells(ph.labels.shape, ph.coefficients, ph.centers_xyz), ph.labels)
    for face in (ph.labels[0], ph.labels[-1], ph.labels[:, 0], ph.labels[:, -1], ph.labels[..., 0], ph.labels[..., -1]):
        assert not face.any()
    # voxel counts match the analytic volumes (voxelisation error ~ area * 0 on average, < 3 %)
    vol = shell_descriptors(ph.coefficients)["volume"]
    counts = np.bincount(ph.labels.ravel())[1:]
    np.testing.assert_allclose(counts, vol, rtol=0.03)
    # without blur/noise the grey levels are exactly the two levels
    assert set(np.unique(ph.volume)) == {np.float32(0.2), np.float32(0.8)}


def test_phantom_noise_and_dtype(rng):
    ph = make_ct_phantom(reference_shell_model(6), shape=(48, 48, 48), n_particles=4, rng=rng, dtype="uint16")
    assert ph.volume.dtype == np.uint16
    bg = ph.volume[ph.labels == 0].astype(float) / 65535
    assert np.median(bg) == pytest.approx(0.2, abs=0.02) and 0.05 < bg.std() < 0.12
