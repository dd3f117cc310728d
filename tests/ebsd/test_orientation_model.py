"""The radial orientation texture: symmetry, quadrature vs Monte Carlo, sampler vs rejection, fit, files."""

import json

import numpy as np
import pytest

from nmc_dataset.ebsd._orientation import euler_to_matrix, quat_to_matrix, symmetry_ops
from nmc_dataset.ebsd._orientation_model import (
    OrientationModel,
    crystal_to_frame_quat,
    fit_texture,
    log_partition,
    orientation_columns,
    texture_statistics,
)
from nmc_dataset.errors import FormatVersionError, InputError


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_statistics_are_invariant_under_the_laue_group_and_match_spherical_formulas(rng):
    v = _unit(rng, 500)
    t = texture_statistics(v)
    for s in quat_to_matrix(symmetry_ops("-3m")):  # the six proper rotations of 32 ...
        np.testing.assert_allclose(texture_statistics(v @ s.T), t, atol=1e-12)
    np.testing.assert_allclose(texture_statistics(-v), t, atol=1e-12)  # ... and the inversion
    theta, psi = np.arccos(v[:, 2]), np.arctan2(v[:, 1], v[:, 0])
    np.testing.assert_allclose(t[:, 0], np.cos(theta) ** 2, atol=1e-12)
    np.testing.assert_allclose(t[:, 1], np.sin(theta) ** 6 * np.cos(6 * psi), atol=1e-12)


@pytest.mark.parametrize("kappa,lam", [(0.0, 0.0), (-8.0, 0.0), (5.0, -3.0), (-20.0, 6.0)])
def test_quadrature_normaliser_and_moments_match_monte_carlo(kappa, lam):
    rng = np.random.default_rng(1)
    v = _unit(rng, 400_000)
    w = np.exp(texture_statistics(v) @ [kappa, lam])
    log_z, mean, _ = log_partition(kappa, lam)
    z_mc, z_se = w.mean(), w.std() / np.sqrt(len(w))
    assert abs(np.exp(log_z) - z_mc) < 5 * z_se + 1e-12
    mean_mc = (w[:, None] * texture_statistics(v)).sum(0) / w.sum()
    np.testing.assert_allclose(mean, mean_mc, atol=0.01)


@pytest.mark.parametrize("kappa,lam", [(-8.0, 2.0), (4.0, -1.5), (0.0, 0.0)])
def test_inverse_transform_sampler_agrees_with_rejection_sampling(kappa, lam):
    """Fast path (inverse CDFs) vs slow twin (rejection from the uniform sphere)."""
    m = OrientationModel(kappa, lam)
    rng = np.random.default_rng(2)
    n = 40_000
    v, beta = m.sample_crystal_directions(rng.uniform(size=(3, n)))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    assert 0 <= beta.min() and beta.max() < 2 * np.pi and abs(beta.mean() - np.pi) < 0.05
    cand = _unit(rng, 600_000)
    ld = m.log_density(cand)
    acc = cand[rng.uniform(size=len(cand)) < np.exp(ld - ld.max())]
    t_fast, t_slow = texture_statistics(v), texture_statistics(acc)
    se = np.sqrt(t_fast.var(0) / len(t_fast) + t_slow.var(0) / len(t_slow))
    assert np.all(np.abs(t_fast.mean(0) - t_slow.mean(0)) < 4 * se + 1e-4)
    mean, _ = m.moments()
    assert np.all(np.abs(t_fast.mean(0) - mean) < 4 * np.sqrt(t_fast.var(0) / n) + 1e-4)
    # the c-axis angle distribution too (not only the sufficient statistics)
    qs = np.quantile(np.degrees(np.arccos(np.abs(v[:, 2]))), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(qs, m.c_axis_angle_quantiles(), atol=1.0)


@pytest.mark.parametrize("kappa,lam", [(-8.0, 0.0), (-12.0, 3.0), (3.0, 0.0)])
def test_fit_recovers_parameters_within_its_standard_errors(kappa, lam):
    m = OrientationModel(kappa, lam)
    v, _ = m.sample_crystal_directions(np.random.default_rng(3).uniform(size=(3, 3000)))
    f = fit_texture(v)
    assert abs(f["kappa"] - kappa) < 4 * f["kappa_se"]
    assert abs(f["lambda"] - lam) < 4 * f["lambda_se"]
    assert f["textured"] and f["p_value_no_texture"] < 1e-6


def test_fit_of_uniform_orientations_says_no_texture():
    from nmc_dataset.ebsd._orientation import random_quaternions

    # truth outside the model's textured members: orientations uniform on SO(3), any radial direction
    rng = np.random.default_rng(4)
    q = random_quaternions(rng, 2000)
    v = np.einsum("nij,nj->ni", quat_to_matrix(q), _unit(rng, 2000))
    f = fit_texture(v)
    assert not f["textured"] and f["p_value_no_texture"] > 0.01
    assert abs(f["kappa"]) < 4 * f["kappa_se"] and abs(f["lambda"]) < 4 * f["lambda_se"]


def test_fit_needs_grains():
    with pytest.raises(ValueError, match="at least 3"):
        fit_texture(np.zeros((2, 3)) + [1.0, 0, 0])


def test_orientations_take_the_radial_direction_to_the_sampled_crystal_direction(rng):
    m = OrientationModel(-8.0, 2.0)
    radial = rng.normal(size=(300, 3))
    u = rng.uniform(size=(3, 300))
    g = m.orientations(radial, u)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", g, g), np.broadcast_to(np.eye(3), g.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(g), 1.0, atol=1e-12)
    v, _ = m.sample_crystal_directions(u)
    er = radial / np.linalg.norm(radial, axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", g, er), v, atol=1e-12)
    # export conventions: quaternion = active crystal -> frame (g^T), Bunge angles of g, c-axis column
    q = crystal_to_frame_quat(g)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(quat_to_matrix(q), np.swapaxes(g, 1, 2), atol=1e-12)
    cols = orientation_columns(q)
    np.testing.assert_allclose(euler_to_matrix(cols["euler_bunge_rad"]), g, atol=1e-9)
    np.testing.assert_allclose(cols["c_axis_xyz"], g[:, 2, :], atol=1e-12)
    # with a girdle texture the c-axes are far from the radial direction
    cos = np.abs(np.sum(cols["c_axis_xyz"] * er, axis=1))
    assert np.median(np.degrees(np.arccos(cos))) > 70


def test_fibre_about_the_radial_direction_is_uniform(rng):
    """The rotation about e_r is uniform: the c-axis azimuth about a fixed e_r has no preference."""
    m = OrientationModel(-8.0, 0.0)
    n = 20000
    g = m.orientations(np.tile([0.0, 0.0, 1.0], (n, 1)), rng.uniform(size=(3, n)))
    c = g[:, 2, :]  # c-axis in the frame
    phi = np.arctan2(c[:, 1], c[:, 0])
    for k in (1, 2, 4):
        assert abs(np.mean(np.cos(k * phi))) < 4 / np.sqrt(n)
        assert abs(np.mean(np.sin(k * phi))) < 4 / np.sqrt(n)


def test_save_load_round_trip_and_refusals(tmp_path):
    m = OrientationModel(-7.5, 1.25, fit={"n": 10})
    path = m.save(tmp_path / "orientation_model.json")
    back = OrientationModel.load(path)
    assert back == m and back.fit == {"n": 10} and back.model_id == m.model_id
    meta = json.loads(path.read_text())
    assert meta["format"] == "nmc-dataset/orientation-model" and meta["format_version"] == 1
    assert meta["kappa"] == -7.5 and meta["lambda"] == 1.25
    assert 60 < meta["summary"]["c_axis_radial_angle_deg_quartiles"][1] < 90
    meta["format_version"] = 99
    (tmp_path / "newer.json").write_text(json.dumps(meta))
    with pytest.raises(FormatVersionError):
        OrientationModel.load(tmp_path / "newer.json")
    with pytest.raises(InputError, match="fit-orientations"):
        OrientationModel.load(tmp_path / "missing.json")
    with pytest.raises(ValueError):
        OrientationModel(np.nan, 0.0)
    with pytest.raises(ValueError, match="-3m"):
        OrientationModel(-8.0, 0.0, point_group="m-3m")
    assert OrientationModel(-8.0, 0.0).model_id != OrientationModel(-8.0, 0.1).model_id


def test_tabulated_von_mises_inverse_matches_exact_inversion():
    """Fast path (bilinear table) vs slow twin (fine-grid CDF inversion per sample)."""
    rng = np.random.default_rng(5)
    u = rng.uniform(size=300)
    u[:15], u[15:30] = rng.uniform(0, 1e-3, 15), 1 - rng.uniform(0, 1e-3, 15)
    a = rng.uniform(0, 300, size=300)
    a[:60] = rng.uniform(0, 2, 60)
    x = OrientationModel._inverse_vonmises(u, a)
    xg = np.linspace(-np.pi, np.pi, 200_001)
    for ui, ai, xi in zip(u, a, x):
        if min(ui, 1 - ui) < 1e-5:  # the outermost 1e-5 of probability lies between the first two nodes
            continue
        cdf = np.cumsum(np.exp(ai * np.cos(xg) - ai))
        assert abs(np.interp(ui, cdf / cdf[-1], xg) - xi) < 2e-3
    # a < 0 is the law shifted by pi
    xn = OrientationModel._inverse_vonmises(u, -a)
    np.testing.assert_allclose(np.cos(xn), -np.cos(x), atol=1e-9)


def test_blur_correction_recovers_the_texture_behind_noisy_radial_directions():
    """Radial directions with an angular error of variance D/rho² (as in-plane directions have)."""
    from scipy.spatial.transform import Rotation

    from nmc_dataset.ebsd._orientation_model import fit_texture_deblurred

    rng = np.random.default_rng(6)
    m = OrientationModel(-12.0, 3.0)
    n, d_true = 4000, 12.0
    v, _ = m.sample_crystal_directions(rng.uniform(size=(3, n)))
    rho = rng.uniform(20.0, 60.0, n)
    axis = np.cross(v, _unit(rng, n))  # a random direction perpendicular to v
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    eps = rng.normal(size=n) * np.sqrt(d_true / rho**2 / 2) * np.sqrt(2)  # E[eps²] = D/rho²
    v_obs = Rotation.from_rotvec(axis * eps[:, None]).apply(v)
    f = fit_texture_deblurred(v_obs, rho, n_boot=40)
    raw = f["raw"]
    assert abs(raw["lambda"] - 3.0) > 4 * raw["lambda_se"]  # the blur biases the plain fit
    assert f["blur_corrected"] and abs(f["blur_D"] - d_true) < 0.35 * d_true
    assert abs(f["kappa"] + 12.0) < 3 * f["kappa_se"] and abs(f["lambda"] - 3.0) < 3 * f["lambda_se"]
    # no texture: nothing to correct, the plain fit is returned
    flat = fit_texture_deblurred(_unit(rng, 1000), rng.uniform(20.0, 60.0, 1000))
    assert not flat["blur_corrected"] and not flat["textured"]
