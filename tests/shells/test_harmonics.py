"""Real SH basis, icospheres, rotations and the least-squares fit."""

import numpy as np
import pytest
from scipy.special import sph_harm_y

from nmc_dataset.shells._harmonics import (
    coeff_index,
    degree_of_index,
    fit_coefficients,
    icosphere,
    n_coeffs,
    radius,
    random_rotations,
    sh_basis,
    vertex_weights,
)


def _unit(rng, n):
    d = rng.standard_normal((n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _scipy_real_sh(L, d):
    """Slow twin: real SH from scipy's complex ones (which carry the Condon-Shortley phase)."""
    th = np.arccos(np.clip(d[:, 2], -1, 1))
    ph = np.arctan2(d[:, 1], d[:, 0])
    out = np.empty((d.shape[0], n_coeffs(L)))
    for l in range(L + 1):
        for m in range(-l, l + 1):
            Y = sph_harm_y(l, abs(m), th, ph)
            if m == 0:
                v = Y.real
            elif m > 0:
                v = (-1) ** m * np.sqrt(2) * Y.real  # (-1)^m removes the CS phase
            else:
                v = (-1) ** m * np.sqrt(2) * Y.imag
            out[:, l * l + l + m] = v
    return out


def test_basis_matches_scipy_on_random_directions(rng):
    d = _unit(rng, 300)
    d[:3] = [[0, 0, 1], [0, 0, -1], [1, 0, 0]]  # poles and the equator
    for L in (0, 1, 9, 16):
        np.testing.assert_allclose(sh_basis(L, d), _scipy_real_sh(L, d), atol=1e-11)


def test_no_condon_shortley_phase():
    # Y_11 = sqrt(3/4pi) sin(theta) cos(phi) > 0 at +x
    B = sh_basis(1, [[1.0, 0, 0]])
    assert B[0, coeff_index(1, 1)] == pytest.approx(np.sqrt(3 / (4 * np.pi)))


def test_index_contract():
    assert n_coeffs(9) == 100
    ls, ms = degree_of_index(9)
    for k in range(100):
        assert coeff_index(int(ls[k]), int(ms[k])) == k


def test_icosphere_sizes_and_orientation():
    for s, nv in ((0, 12), (3, 642), (4, 2562)):
        v, f = icosphere(s)
        assert v.shape == (nv, 3) and f.shape == (20 * 4**s, 3)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        assert np.all(np.einsum("ij,ij->i", a, np.cross(b, c)) > 0)  # outward
    # subdividing keeps the coarse vertices first (used by the fast d_max search)
    np.testing.assert_array_equal(icosphere(4)[0][:642], icosphere(3)[0])
    assert vertex_weights(3).sum() == pytest.approx(4 * np.pi)


def test_orthonormal_by_quadrature():
    v, _ = icosphere(5)
    w = vertex_weights(5)
    B = sh_basis(9, v)
    G = (B * w[:, None]).T @ B
    # quadrature error of a 10242-point icosphere for degree-18 products: < 1e-3
    assert np.abs(G - np.eye(100)).max() < 1e-3


def test_fit_recovers_known_coefficients(rng):
    u, _ = icosphere(3)
    a = rng.standard_normal((5, 100))
    got = fit_coefficients(9, u, radius(a, u))
    np.testing.assert_allclose(got, a, atol=1e-9)  # noise-free: exact up to round-off
    # random rotation of the point set (docs/method.md#spherical-harmonics): P~(R u_k) = P(u_k) is still solved exactly
    R = random_rotations(1, rng)[0]
    np.testing.assert_allclose(fit_coefficients(9, u @ R.T, radius(a, u @ R.T)), a, atol=1e-9)


def test_rotation_keeps_degree_power(rng):
    """A rotation mixes orders within a degree only: the per-degree norm is invariant."""
    u, _ = icosphere(3)
    a = rng.standard_normal(100)
    R = random_rotations(1, rng)[0]
    b = fit_coefficients(9, u, radius(a, u @ R))  # the same function, rotated
    for l in range(10):
        sl = slice(l * l, (l + 1) ** 2)
        assert np.linalg.norm(b[sl]) == pytest.approx(np.linalg.norm(a[sl]), rel=1e-8)


def test_random_rotations_are_uniform(rng):
    R = random_rotations(20000, rng)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    z = R[:, :, 2]
    # Haar measure: R e_z uniform on S^2 -> mean 0, E[z_i^2] = 1/3 (std err ~ 0.004)
    assert np.abs(z.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose((z**2).mean(axis=0), 1 / 3, atol=0.015)


def test_radius_broadcasts(rng):
    u = _unit(rng, 7)
    a = rng.standard_normal((2, 3, 16))
    assert radius(a, u).shape == (2, 3, 7)
    with pytest.raises(ValueError):
        radius(np.zeros(15), u)


def test_fused_radius_kernel_equals_basis_product():
    """The numba fast path of ``radius`` (one shell, many directions) vs ``c @ sh_basis(L, d).T``."""
    from nmc_dataset.shells import _harmonics as harmonics

    if harmonics._radius_fused is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(5)
    for L in (0, 1, 4, 9):
        c = rng.normal(size=(L + 1) ** 2)
        d = rng.normal(size=(6000, 3))
        d[:3] = [[0, 0, 1], [0, 0, -1], [0, 0, 0]]  # poles and a zero row
        d[3:] /= np.linalg.norm(d[3:], axis=1, keepdims=True)
        fast = harmonics.radius(c, d)
        slow = c @ harmonics.sh_basis(L, d).T
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
