"""Known-truth CT phantom: placement, rendering, grey levels."""

import numpy as np
import pytest
from scipy import ndimage

from nmc_dataset.shells._descriptors import shell_descriptors
from nmc_dataset.shells._harmonics import icosphere, sh_basis, vertex_weights
from nmc_dataset.synthetic._ct_phantom import make_ct_phantom, reference_shell_model, render_shells, truth_coefficients


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


def test_partial_volume_render_keeps_labels_and_volume(rng):
    c = truth_coefficients("ellipsoid", 3, rng, degree=6, r_median=9.0, r_range=(8.0, 10.0))
    centers = np.array([[15.2, 15.7, 16.1], [40.4, 16.3, 15.5], [27.9, 38.2, 16.0]])
    occ = np.zeros((34, 56, 56), dtype=np.float32)
    labels = render_shells(occ.shape, c, centers, occupancy=occ)
    assert np.array_equal(labels, render_shells(occ.shape, c, centers))  # same labels as the binary render
    assert occ.min() >= 0 and occ.max() <= 1 and np.all(occ[labels > 0] >= 0.5) and np.all(occ[labels == 0] < 0.5)
    # body volumes: the fractions sum to the analytic volume (∫ r³/3 dΩ); binary counts miss by ~ the area / 2
    v, _ = icosphere(5)
    w = vertex_weights(5)
    r = c @ sh_basis(6, v).T
    vol_true = (r**3 / 3) @ (w / w.sum() * 4 * np.pi)
    lab = ndimage.label(occ > 0.01)[0]
    got = ndimage.sum(occ, lab, index=lab[tuple(np.rint(centers[:, ::-1]).astype(int).T)])
    np.testing.assert_allclose(got, vol_true, rtol=0.004)
    ph = make_ct_phantom(coefficients=c, shape=(34, 56, 56), n_particles=3, rng=rng, partial_volume=True, noise_sigma=0)
    assert len(np.unique(ph.volume)) > 100  # grey values between the two levels, not two levels blurred
