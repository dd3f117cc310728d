"""The generator G: seeds, radial frames, neighbour inputs, G_net's bounded outputs."""

import numpy as np
import pytest
import torch

from nmc_dataset.calibration._generator import (
    GNet,
    default_knn_margin,
    fused_layers,
    generate_gbpd,
    markers,
    neighbour_inputs,
    poisson_seed_set,
)
from nmc_dataset.tessellation._gbpd import DIAG_MIN, radial_frames

needs_fused = pytest.mark.skipif(fused_layers(GNet()) is None, reason="torch without oneDNN's fused linear")


def _inputs_slow(seeds, noise, roll, i, kappa, scale):
    """Plain twin: sort all distances, skip self, rotate by Q_i."""
    d = np.linalg.norm(seeds - seeds[i], axis=1)
    d[i] = np.inf
    nb = np.argsort(d, kind="stable")[:kappa]
    q = radial_frames(seeds[i : i + 1], roll[i : i + 1])[0]
    rows = [np.concatenate([q @ (seeds[j] - seeds[i]) / scale, noise[j]]) for j in nb]
    return np.concatenate(rows)


def test_neighbour_inputs_match_plain_twin(rng):
    ss = poisson_seed_set(rng, 0.002, [-30] * 3, [30] * 3)
    which = np.flatnonzero(np.all(np.abs(ss.positions) < 20, axis=1))[:50]
    fast = neighbour_inputs(ss.positions, ss.noise, ss.roll, which, kappa=12, input_scale_px=10.0)
    assert fast.shape == (len(which), 60) and fast.dtype == np.float32
    for row, i in zip(fast, which):
        np.testing.assert_allclose(row, _inputs_slow(ss.positions, ss.noise, ss.roll, i, 12, 10.0), atol=1e-5)


def test_inputs_are_rotation_invariant(rng):
    """Rotating the whole seed pattern about the centre leaves the inputs unchanged up to the
    roll angle: with roll = 0 for both, the radial component (first of each v_ij) is invariant."""
    ss = poisson_seed_set(rng, 0.002, [-30] * 3, [30] * 3)
    a = np.deg2rad(37.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    zero = np.zeros(len(ss.positions))
    x1 = neighbour_inputs(ss.positions, ss.noise, zero, np.arange(40), kappa=12).reshape(40, 12, 5)
    x2 = neighbour_inputs(ss.positions @ rot.T, ss.noise, zero, np.arange(40), kappa=12).reshape(40, 12, 5)
    np.testing.assert_allclose(x1[..., 0], x2[..., 0], atol=1e-4)  # radial components
    np.testing.assert_allclose(np.linalg.norm(x1[..., :3], axis=2), np.linalg.norm(x2[..., :3], axis=2), atol=1e-4)


def test_group_shift_keeps_groups_apart(rng):
    a = poisson_seed_set(rng, 0.003, [-20] * 3, [20] * 3)
    b = poisson_seed_set(rng, 0.003, [-20] * 3, [20] * 3)
    pos = np.concatenate([a.positions, b.positions])
    noise = np.concatenate([a.noise, b.noise])
    roll = np.concatenate([a.roll, b.roll])
    group = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    joint = neighbour_inputs(pos, noise, roll, None, kappa=12, group=group)
    np.testing.assert_allclose(joint[: len(a)], neighbour_inputs(a.positions, a.noise, a.roll, kappa=12), atol=1e-6)
    np.testing.assert_allclose(joint[len(a) :], neighbour_inputs(b.positions, b.noise, b.roll, kappa=12), atol=1e-6)


def test_gnet_outputs_respect_bounds():
    torch.manual_seed(0)
    net = GNet(kappa=12, hidden=(16,), r_bounds=(1, 10), diag_bounds=(DIAG_MIN, 50))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50.0)  # saturate the sigmoids on both sides
    with torch.no_grad():
        diag, r = net(torch.randn(2000, 60) * 10)
    assert diag.shape == (2000, 3) and r.shape == (2000,)
    assert float(diag.min()) >= DIAG_MIN and float(diag.max()) <= 50
    assert float(r.min()) >= 1 and float(r.max()) <= 10
    assert float(diag.min()) < 0.01 and float(diag.max()) > 49  # both ends reachable
    with pytest.raises(ValueError):
        GNet(r_bounds=(10, 1))
    with pytest.raises(ValueError):
        GNet(diag_bounds=(0, 50))


def test_generate_gbpd_covers_window_with_right_intensity():
    torch.manual_seed(0)
    net = GNet(hidden=(16,))
    mu = 0.002
    g = generate_gbpd(net, np.random.default_rng(3), mu, [-40] * 3, [40] * 3, cell_margin_px=8.0)
    assert g.dim == 3 and np.all(g.diag > 0)
    # the kept seeds are a Poisson process on the 96^3 box: count within 5 sigma
    expected = mu * 96.0**3
    assert abs(g.n - expected) < 5 * np.sqrt(expected)
    assert np.all(np.abs(g.seeds) <= 48 + 1e-9)
    # markers depend on the true neighbours: recomputing with a larger kNN margin changes nothing
    g1 = generate_gbpd(
        net, np.random.default_rng(3), mu, [-40] * 3, [40] * 3, cell_margin_px=8.0, knn_margin_px=default_knn_margin(mu)
    )
    np.testing.assert_array_equal(g.diag, g1.diag)


def test_markers_are_batched_consistently(rng):
    torch.manual_seed(1)
    net = GNet(hidden=(32, 16))
    x = rng.normal(size=(300, 60)).astype(np.float32)
    d_all, r_all = markers(net, x, chunk=64)
    d_one, r_one = markers(net, x[:7])
    np.testing.assert_allclose(d_all[:7], d_one, rtol=1e-6)
    np.testing.assert_allclose(r_all[:7], r_one, rtol=1e-6)


@needs_fused
@pytest.mark.parametrize("kappa, hidden", [(12, (128, 128, 64)), (5, (32, 16)), (3, (7,))])
def test_fused_markers_match_the_module_forward(rng, kappa, hidden):
    """Fast path (oneDNN fused linear + ReLU / sigmoid) against its plain twin, GNet.forward,
    on random inputs with a wide range of magnitudes: equal to float32 rounding."""
    torch.manual_seed(kappa)
    net = GNet(kappa=kappa, hidden=hidden, r_bounds=(1.0, 10.0), diag_bounds=(DIAG_MIN, 50.0))
    x = (rng.normal(size=(3001, 5 * kappa)) * rng.choice([0.1, 1.0, 8.0], size=(3001, 1))).astype(np.float32)
    d_fast, r_fast = markers(net, x, fused=True)
    d_plain, r_plain = markers(net, x, fused=False)
    np.testing.assert_allclose(d_fast, d_plain, rtol=1e-5, atol=50.0 * 2e-6)
    np.testing.assert_allclose(r_fast, r_plain, rtol=1e-5, atol=10.0 * 2e-6)
    assert np.all((d_fast >= DIAG_MIN) & (d_fast <= 50.0)) and np.all((r_fast >= 1.0) & (r_fast <= 10.0))


@needs_fused
def test_fused_markers_do_not_depend_on_the_chunking(rng):
    """A row's markers are the same bits whatever chunk (and position in it) computes them, so a
    seed's markers never depend on how many other seeds a window holds."""
    torch.manual_seed(4)
    net = GNet()
    x = rng.normal(size=(1000, 60)).astype(np.float32)
    d_ref, r_ref = markers(net, x, fused=True)
    for chunk in (1, 2, 3, 17, 64, 333):
        d, r = markers(net, x, chunk=chunk, fused=True)
        np.testing.assert_array_equal(d, d_ref)
        np.testing.assert_array_equal(r, r_ref)
    d, r = markers(net, x[5:9], fused=True)
    np.testing.assert_array_equal(d, d_ref[5:9])


def test_markers_fall_back_to_the_module_forward():
    """Networks the fused path does not take (float64 weights) run through GNet.forward;
    asking for the fused path then is an error."""
    torch.manual_seed(5)
    net = GNet(hidden=(16,)).double()
    assert fused_layers(net) is None
    x = np.random.default_rng(0).normal(size=(10, 60)).astype(np.float32)
    d, r = markers(net, x)
    with torch.no_grad():
        d_ref, r_ref = net(torch.from_numpy(x).double())
    np.testing.assert_allclose(d, d_ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(r, r_ref.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="fused"):
        markers(net, x, fused=True)


def test_generate_gbpd_equals_the_reference_path():
    """The fused kernel + chunked network pass reproduce the plain path (np.all mask, cKDTree
    inputs, one unchunked no_grad network call) on the same random stream: same seeds, markers
    equal to float32 rounding of the network outputs (rtol 1e-6)."""
    from nmc_dataset.calibration._generator import neighbour_inputs_reference

    torch.manual_seed(2)
    net = GNet(hidden=(32, 16))
    mu, lo, hi, cm = 0.002, np.array([-30.0] * 3), np.array([30.0] * 3), 8.0
    g = generate_gbpd(net, np.random.default_rng(7), mu, lo, hi, cell_margin_px=cm)
    km = default_knn_margin(mu)
    ss = poisson_seed_set(np.random.default_rng(7), mu, lo - cm - km, hi + cm + km)
    keep = np.all((ss.positions >= lo - cm) & (ss.positions <= hi + cm), axis=1)
    x = neighbour_inputs_reference(ss.positions, ss.noise, ss.roll, keep)
    with torch.no_grad():
        d, r = net(torch.from_numpy(x))
    np.testing.assert_array_equal(g.seeds, ss.positions[keep])
    np.testing.assert_array_equal(g.roll, ss.roll[keep])
    np.testing.assert_allclose(g.diag, d.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g.offsets, r.double().numpy(), rtol=1e-6)


def test_depth_input_is_the_relative_radius_in_the_seeds_direction():
    from nmc_dataset.calibration._generator import depth_inputs

    s = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, -30.0, 0.0], [0.0, 0.0, 80.0]])
    np.testing.assert_allclose(depth_inputs(s, 40.0)[:, 0], [0.0, 0.25, 0.75, 1.0])  # outside: the rim
    # a radius function of the direction (a prolate shell, twice as long along z)
    rad = lambda u: 40.0 * np.sqrt(1.0 / (u[:, 0] ** 2 + u[:, 1] ** 2 + (u[:, 2] / 2) ** 2))  # noqa: E731
    np.testing.assert_allclose(depth_inputs(s, rad)[:, 0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(depth_inputs(s[3:] / 2, rad)[:, 0], [0.5])
    with pytest.raises(ValueError):
        depth_inputs(s, 0.0)


def test_depth_aware_gnet_takes_one_more_input_and_generate_needs_the_radius():
    """The exact path: a depth-aware network sees the kNN inputs then rho, and its markers change
    with rho (the same seeds drawn for two particle radii get other markers)."""
    from nmc_dataset.calibration._generator import depth_inputs, neighbour_inputs_reference

    torch.manual_seed(4)
    net = GNet(hidden=(16,), depth_aware=True)
    assert net.n_inputs == 61 and net.body[0].in_features == 61 and net.config()["depth_aware"] is True
    assert "depth_aware" not in GNet(hidden=(16,)).config()  # the paper's config dict is unchanged
    with torch.no_grad():
        net.body[0].weight[:, -1].mul_(50)  # make rho matter
    mu, lo, hi = 0.002, np.full(3, -20.0), np.full(3, 20.0)
    with pytest.raises(ValueError, match="radius"):
        generate_gbpd(net, np.random.default_rng(1), mu, lo, hi)
    g = generate_gbpd(net, np.random.default_rng(1), mu, lo, hi, cell_margin_px=8.0, radius=25.0)
    g2 = generate_gbpd(net, np.random.default_rng(1), mu, lo, hi, cell_margin_px=8.0, radius=250.0)
    np.testing.assert_array_equal(g.seeds, g2.seeds)
    assert np.abs(g.diag - g2.diag).max() > 1e-2
    km = default_knn_margin(mu)
    ss = poisson_seed_set(np.random.default_rng(1), mu, lo - 8 - km, hi + 8 + km)
    keep = np.all((ss.positions >= lo - 8) & (ss.positions <= hi + 8), axis=1)
    x = np.concatenate(
        [neighbour_inputs_reference(ss.positions, ss.noise, ss.roll, keep), depth_inputs(ss.positions[keep], 25.0)], 1
    )
    with torch.no_grad():
        d, r = net(torch.from_numpy(x))
    np.testing.assert_allclose(g.diag, d.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g.offsets, r.double().numpy(), rtol=1e-6)
