"""shell descriptors: analytic bodies, trimesh as an independent twin, fast d_max vs all pairs."""

import numpy as np
import pytest
import trimesh

from nmc_dataset.shells._descriptors import DESCRIPTORS, mesh_descriptors, shell_descriptors
from nmc_dataset.shells._harmonics import fit_coefficients, icosphere, sh_basis
from nmc_dataset.synthetic._ct_phantom import reference_shell_model
from nmc_dataset.testing import pairwise_max_distance


def _ellipsoid_coeffs(axes, L=9):
    v, _ = icosphere(4)
    r = 1 / np.sqrt(((v / np.asarray(axes, float)) ** 2).sum(1))
    return fit_coefficients(L, v, r)


def test_ball():
    a = np.zeros(100)
    a[0] = 10 * np.sqrt(4 * np.pi)
    d = {k: float(v[0]) for k, v in shell_descriptors(a[None]).items()}
    assert list(shell_descriptors(a[None])) == list(DESCRIPTORS)
    # the 2562-vertex polyhedron inscribed in the ball: volume/area low by < 0.3 %
    assert d["volume"] == pytest.approx(4 / 3 * np.pi * 1000, rel=3e-3)
    assert d["area"] == pytest.approx(4 * np.pi * 100, rel=3e-3)
    assert d["d_max"] == pytest.approx(20.0, rel=1e-9)
    assert d["compactness"] == pytest.approx(1.0, abs=1e-9)
    assert d["aspect_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert d["sphericity"] == pytest.approx(1.0, abs=1e-3)


def test_ellipsoid():
    # semi-axes 12, 8, 6 (a degree-9 fit of an ellipsoid: ~0.2 % shape error)
    d = {k: float(v[0]) for k, v in shell_descriptors(_ellipsoid_coeffs([12, 8, 6])[None]).items()}
    assert d["volume"] == pytest.approx(4 / 3 * np.pi * 12 * 8 * 6, rel=0.01)
    assert d["d_max"] == pytest.approx(24.0, rel=0.01)
    assert d["aspect_ratio"] == pytest.approx(2.0, rel=0.01)  # longest / shortest principal semi-axis
    assert d["compactness"] == pytest.approx(1.0, abs=2e-3)
    assert 0.9 < d["sphericity"] < 0.96  # Ψ of the 12:8:6 ellipsoid is 0.94


def test_against_trimesh(rng):
    """Volume, area, hull volume and principal axes from an independent library."""
    c = reference_shell_model().draw_raw(4, rng)
    c[:, 9:25] *= 3  # rougher: clearly non-convex
    v, f = icosphere(4)
    pts = (c @ sh_basis(9, v).T)[:, :, None] * v
    d = mesh_descriptors(pts, f)
    for i in range(4):
        tm = trimesh.Trimesh(pts[i], f, process=False)
        assert d["volume"][i] == pytest.approx(tm.volume, rel=1e-9)
        assert d["area"][i] == pytest.approx(tm.area, rel=1e-9)
        assert d["compactness"][i] == pytest.approx(tm.volume / tm.convex_hull.volume, rel=1e-9)
        # principal moments of the solid: covariance eigenvalues from trimesh's inertia tensor
        I = tm.moment_inertia / tm.volume  # about the centre of mass, unit density / volume
        lam_i = np.linalg.eigvalsh(I)
        tr = lam_i.sum() / 2  # trace of the covariance
        cov_eig = np.sort(tr - lam_i)
        assert d["aspect_ratio"][i] == pytest.approx(np.sqrt(cov_eig[-1] / cov_eig[0]), rel=1e-6)
    assert np.all(d["compactness"] < 0.99)


def test_dmax_is_exact(rng):
    """d_max from the hull vertices equals the all-pairs maximum, on smooth, rough and spiky bodies."""
    c = reference_shell_model().draw_raw(30, rng)
    c[10:20, 4:16] *= 3
    c[20:, 25:] *= 6  # high-degree spikes: many hull vertices far from the coarse optimum
    v, f = icosphere(3)
    pts = np.clip(c @ sh_basis(9, v).T, 0, None)[:, :, None] * v
    np.testing.assert_allclose(mesh_descriptors(pts, f)["d_max"], pairwise_max_distance(pts), rtol=1e-12)
    ell = v * np.array([3.0, 1.0, 0.5])  # an ellipsoid sampled off the icosphere: 2 * 3 exactly
    assert mesh_descriptors(ell[None], f)["d_max"][0] == pytest.approx(6.0, rel=1e-12)


def test_units_scale(rng):
    c = reference_shell_model().draw_raw(3, rng)
    a, b = shell_descriptors(c), shell_descriptors(2 * c)
    for k, p in (("d_max", 1), ("area", 2), ("volume", 3), ("sphericity", 0), ("aspect_ratio", 0)):
        np.testing.assert_allclose(b[k], a[k] * 2**p, rtol=1e-9)


def test_threaded_hull_volumes_equal_the_plain_loop(rng):
    from scipy.spatial import ConvexHull

    from nmc_dataset.shells._descriptors import hull_volumes

    pts = rng.normal(size=(40, 162, 3)) * rng.uniform(0.5, 2.0, (40, 1, 3))
    plain = np.array([ConvexHull(p).volume for p in pts])
    assert np.array_equal(hull_volumes(pts, threads=4), plain)
    assert np.array_equal(hull_volumes(pts, threads=1), plain)


def test_threaded_batches_equal_one_thread():
    c = reference_shell_model().sample_coefficients(150, np.random.default_rng(9))
    one = shell_descriptors(c, subdivisions=2, threads=1)
    many = shell_descriptors(c, subdivisions=2, threads=4, batch=20)
    for k in DESCRIPTORS:
        assert np.allclose(one[k], many[k], rtol=1e-12, atol=0), k
