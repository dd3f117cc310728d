"""Tests of nmc_dataset.ebsd._orientation: Euler/quaternion conventions, point groups, misorientation."""

import numpy as np
import pytest

from nmc_dataset.ebsd._orientation import (
    axis_angle_to_quat,
    euler_to_matrix,
    euler_to_quat,
    grain_mean_orientations,
    matrix_to_quat,
    mean_orientation,
    misorientation_angle,
    perturb,
    qconj,
    qmul,
    quat_to_euler,
    quat_to_matrix,
    random_quaternions,
    rotation_angle,
    symmetry_ops,
)
from nmc_dataset.testing import misorientation_angle_bruteforce

GROUPS = {
    "-1": 1,
    "2/m": 2,
    "mmm": 4,
    "4/m": 4,
    "4/mmm": 8,
    "-3": 3,
    "-3m": 6,
    "6/m": 6,
    "6/mmm": 12,
    "m-3": 12,
    "m-3m": 24,
}


def _random_euler(rng, n):
    return rng.uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], size=(n, 3))


def test_euler_quaternion_matrix_consistent(rng):
    e = _random_euler(rng, 500)
    q = euler_to_quat(e)
    # the quaternion's matrix is the textbook Bunge matrix (plain formula, independent code path)
    np.testing.assert_allclose(quat_to_matrix(q), euler_to_matrix(e), atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(euler_to_matrix(e)), q, atol=1e-12)
    # Euler round trip (compare rotations: sign of q is canonical, angles in their ranges)
    np.testing.assert_allclose(euler_to_quat(quat_to_euler(q)), q, atol=1e-10)
    # a known case: phi1 = 90 deg alone maps sample x to crystal -y (passive rotation about z)
    g = euler_to_matrix(np.array([np.pi / 2, 0, 0]))
    np.testing.assert_allclose(g @ [1, 0, 0], [0, -1, 0], atol=1e-12)


def test_euler_degenerate_phi():
    # Phi = 0: only phi1 + phi2 matters; the reader-side conversion must keep the rotation
    e = np.array([[0.3, 0.0, 0.5], [0.2, np.pi, 0.1]])
    q = euler_to_quat(e)
    np.testing.assert_allclose(quat_to_matrix(euler_to_quat(quat_to_euler(q))), quat_to_matrix(q), atol=1e-12)


@pytest.mark.parametrize("group,order", GROUPS.items())
def test_group_order_and_closure(group, order):
    ops = symmetry_ops(group)
    assert ops.shape == (order, 4)
    np.testing.assert_allclose(ops[0], [1, 0, 0, 0])
    # closure: every product is again an operator (up to sign)
    prod = qmul(ops[:, None, :], ops[None, :, :]).reshape(-1, 4)
    d = np.abs(prod @ ops.T).max(axis=1)
    np.testing.assert_allclose(d, 1.0, atol=1e-12)


@pytest.mark.parametrize("group", ["-3m", "6/mmm", "m-3m", "-3", "mmm"])
def test_symmetry_equivalents_have_zero_misorientation(rng, group):
    ops = symmetry_ops(group)
    q = random_quaternions(rng, 50)
    for s in ops:
        eq = qmul(s, q)  # same crystal, other description
        np.testing.assert_allclose(misorientation_angle(q, eq, ops), 0.0, atol=1e-6)
        np.testing.assert_allclose(misorientation_angle(q, -eq, ops), 0.0, atol=1e-6)


def test_known_rotations_about_c_and_a():
    """32 = 3-fold about c + 2-fold axes along a1, a2, a3 (x at 0, 60, 120 deg)."""
    q0 = random_quaternions(np.random.default_rng(0), 20)

    def reduced(axis, deg, group):
        # a crystal-frame rotation: g' = R g (R applied on the crystal side)
        r = axis_angle_to_quat(np.array(axis, float), np.radians(deg))
        return np.degrees(misorientation_angle(q0, qmul(r, q0), group))

    np.testing.assert_allclose(reduced([0, 0, 1], 30, "-3m"), 30, atol=1e-6)
    np.testing.assert_allclose(reduced([0, 0, 1], 60, "-3m"), 60, atol=1e-6)  # not a symmetry of 32
    np.testing.assert_allclose(reduced([0, 0, 1], 60, "6/mmm"), 0, atol=1e-5)  # but of 622
    np.testing.assert_allclose(reduced([0, 0, 1], 90, "-3m"), 30, atol=1e-6)  # 90 - 120
    np.testing.assert_allclose(reduced([0, 0, 1], 120, "-3m"), 0, atol=1e-5)
    np.testing.assert_allclose(reduced([1, 0, 0], 180, "-3m"), 0, atol=1e-5)  # 2-fold along a1
    np.testing.assert_allclose(reduced([0.5, np.sqrt(3) / 2, 0], 180, "-3m"), 0, atol=1e-5)  # along a2 (60 deg)
    # 180 deg about y (perpendicular to a1, i.e. along a*) is not in 32: 2_y = 2_x * 2_z, and 2_z reduces to 60
    np.testing.assert_allclose(reduced([0, 1, 0], 180, "-3m"), 60, atol=1e-5)
    np.testing.assert_allclose(reduced([0, 1, 0], 180, "6/mmm"), 0, atol=1e-5)
    np.testing.assert_allclose(reduced([0, 0, 1], 4, "m-3m"), 4, atol=1e-6)
    np.testing.assert_allclose(reduced([1, 1, 1], 120, "m-3m"), 0, atol=1e-5)


@pytest.mark.parametrize("group", ["-3m", "6/mmm", "m-3m", "4/mmm", "2/m"])
def test_fast_misorientation_matches_all_pairs_bruteforce(rng, group):
    qa = random_quaternions(rng, 300)
    qb = random_quaternions(rng, 300)
    np.testing.assert_allclose(
        misorientation_angle(qa, qb, group), misorientation_angle_bruteforce(qa, qb, group), atol=1e-9
    )


@pytest.mark.parametrize("group,max_deg", [("-3m", 104.48), ("6/mmm", 93.84), ("m-3m", 62.80)])
def test_disorientation_never_exceeds_known_maximum(rng, group, max_deg):
    # maximal disorientation angles of the proper point groups 32, 622, 432 (literature values)
    qa = random_quaternions(rng, 20000)
    qb = random_quaternions(rng, 20000)
    ang = np.degrees(misorientation_angle(qa, qb, group))
    assert ang.max() <= max_deg + 0.01
    assert ang.max() > max_deg - 8  # and the bound is approached


def test_random_quaternions_uniform_on_so3(rng):
    from scipy import stats

    q = random_quaternions(rng, 20000)
    w = rotation_angle(q)
    # Haar measure: the rotation angle has density (1 - cos w) / pi on [0, pi]
    cdf = lambda x: (x - np.sin(x)) / np.pi  # noqa: E731
    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_perturb_spread(rng):
    q = random_quaternions(rng, 20000)
    p = perturb(q, rng, np.radians(0.5))
    ang = np.degrees(misorientation_angle(q, p))
    # |N(0, s^2 I3)| is Maxwell distributed with mean 2 s sqrt(2/pi) = 0.798 deg for s = 0.5 deg
    assert abs(ang.mean() - 2 * 0.5 * np.sqrt(2 / np.pi)) < 0.01


def test_mean_orientation_recovers_grain_orientation(rng):
    ops = symmetry_ops("-3m")
    q0 = random_quaternions(rng, 1)[0]
    noisy = perturb(np.repeat(q0[None], 400, 0), rng, np.radians(1.0))
    # mix symmetry-equivalent descriptions and signs, as an instrument reports them
    k = rng.integers(0, len(ops), size=len(noisy))
    mixed = qmul(ops[k], noisy) * rng.choice([-1.0, 1.0], size=(len(noisy), 1))
    m = mean_orientation(mixed, ops)
    assert np.degrees(misorientation_angle(q0, m, ops)) < 0.2  # 1 deg noise / sqrt(400) ~ 0.1 deg per axis
    # the vectorised per-grain version agrees with the plain one
    labels = np.repeat([1, 2], 200)
    both = grain_mean_orientations(mixed, labels, ops)
    assert np.all(np.isnan(both[0]))
    for lab in (1, 2):
        ref = mean_orientation(mixed[labels == lab], ops)
        assert np.degrees(misorientation_angle(ref, both[lab], ops)) < 1e-6


def test_conjugate_is_inverse(rng):
    q = random_quaternions(rng, 10)
    np.testing.assert_allclose(np.abs(qmul(q, qconj(q))[:, 0]), 1.0, atol=1e-12)


def test_against_orix_if_installed(rng):
    """Optional GPL cross-check (orix is never a dependency). Cubic: no axis-setting ambiguity."""
    pytest.importorskip("orix")
    from orix.quaternion import Orientation
    from orix.quaternion.symmetry import Oh

    e = _random_euler(rng, 200)
    f = _random_euler(rng, 200)
    ref = np.asarray(Orientation.from_euler(e, Oh).angle_with(Orientation.from_euler(f, Oh))).ravel()
    ours = misorientation_angle(euler_to_quat(e), euler_to_quat(f), "m-3m")
    np.testing.assert_allclose(ours, ref, atol=1e-6)
