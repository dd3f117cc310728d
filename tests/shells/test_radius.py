"""Star-shaped radius (exact crossing method vs plain marching) and the star-volume fraction."""

import numpy as np
import pytest

from nmc_dataset.shells._harmonics import icosphere, radius
from nmc_dataset.shells._radius import measure_particles, ray_radius, star_fraction
from nmc_dataset.synthetic._ct_phantom import render_shells
from nmc_dataset.testing import ray_radius_reference


def _blob(rng, n=22):
    """A random lumpy, not necessarily star-shaped voxel set."""
    z, y, x = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    m = ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2) <= (n / 3) ** 2
    for _ in range(6):
        p = rng.uniform(2, n - 3, 3)
        m ^= ((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) <= rng.uniform(1.5, 3.5) ** 2
    return m


def test_exact_rays_match_marching(rng):
    u, _ = icosphere(1)
    for _ in range(2):
        m = _blob(rng)
        zz, yy, xx = np.nonzero(m)
        c = np.array([xx.mean(), yy.mean(), zz.mean()]) + rng.uniform(-0.3, 0.3, 3)
        fast = ray_radius(m, c, u)
        slow = ray_radius_reference(m, c, u, step=4e-3)
        # the marching twin is exact to its step; a ray grazing a voxel corner for less than a
        # step can be missed by it, so allow a rare larger miss
        err = np.abs(fast - slow)
        assert np.mean(err <= 4e-3) > 0.97 and np.all(fast <= slow + 4e-3)


def test_ball_radius():
    n, R = 41, 15.0
    z, y, x = np.mgrid[:n, :n, :n]
    m = ((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) <= R**2
    u, _ = icosphere(3)
    r = ray_radius(m, [20, 20, 20], u)
    # voxel-centre discretisation of a ball: the boundary lies within half a voxel (diagonal)
    assert np.abs(r - R).max() < 0.9 and abs(r.mean() - R) < 0.3


def _star_fraction_brute(m, c, step=2e-3):
    zz, yy, xx = np.nonzero(m)
    ok = 0
    for p in np.stack([xx, yy, zz], 1).astype(float):
        d = p - c
        t = np.linalg.norm(d)
        s = np.arange(0, t, step)[:, None]
        idx = np.rint(c + s * d / max(t, 1e-12)).astype(int)
        ok += m[idx[:, 2], idx[:, 1], idx[:, 0]].all()
    return ok / len(zz)


def test_star_fraction(rng):
    n = 21
    z, y, x = np.mgrid[:n, :n, :n]
    ball = ((x - 10) ** 2 + (y - 10) ** 2 + (z - 10) ** 2) <= 8**2
    assert star_fraction(ball, [10.2, 9.9, 10.1]) == 1.0
    notched = ball.copy()
    notched[9:12, 9:12, 14] = False  # a wall shadowing the voxels behind it
    f = star_fraction(notched, [10.0, 10.0, 10.0])
    assert 0.9 < f < 1.0
    assert f == pytest.approx(_star_fraction_brute(notched, np.array([10.0, 10.0, 10.0])), abs=0.004)
    assert star_fraction(ball, [0.0, 0.0, 0.0]) == 0.0  # star point outside the particle


def test_measure_particles_recovers_a_rendered_shell(rng):
    """Render two known smooth shells (R ~ 18 voxels), measure them: the per-degree power of the
    coefficients (rotation invariant) comes back within the voxelisation error."""
    a = np.zeros((2, 100))
    a[:, 0] = 18 * np.sqrt(4 * np.pi)
    a[:, 4:9] = rng.normal(0, 2.0, (2, 5))
    a[:, 9:16] = rng.normal(0, 1.0, (2, 7))
    labels = render_shells((50, 50, 100), a, np.array([[25.0, 25.0, 25.0], [75.3, 24.6, 25.2]]))
    pc = measure_particles(labels, 9, rng)
    assert pc.coeffs.shape == (2, 100) and np.all(pc.star_volume_fraction > 0.99)
    assert np.all(pc.fit_rms < 0.5)
    np.testing.assert_allclose(pc.centroid_xyz[:, 0], [25, 75.3], atol=0.5)
    for l, tol in ((0, 0.3), (2, 0.35), (3, 0.35)):
        sl = slice(l * l, (l + 1) ** 2)
        np.testing.assert_allclose(np.linalg.norm(pc.coeffs[:, sl], axis=1), np.linalg.norm(a[:, sl], axis=1), atol=tol)
    # the radius of the fitted functions matches the true ones to a voxel everywhere
    u, _ = icosphere(3)
    assert np.abs(radius(pc.coeffs, u).mean(1) - radius(a, u).mean(1)).max() < 0.3
