"""Assembly of shell + grains: selection by centre of mass, determinism, independence.

See docs/method.md#particle-assembly.
"""

import numpy as np
import pytest

from nmc_dataset.particles._assemble import assemble, cell_centres_of_mass, make_particle, particle_seed
from nmc_dataset.particles._voxelize import inside_shell, lattice_grid, shell_extent
from nmc_dataset.testing import gbpd_grid_labels_reference
from tests.particles.fixtures import teacher_particle


def test_selection_is_centre_of_mass_inside_shell():
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd

    rng = np.random.default_rng(4)
    c = np.zeros(100)
    c[0] = 0.8 * np.sqrt(4 * np.pi)
    c[5] = 0.08
    g = radial_teacher_gbpd(rng, radius_px=20, margin_px=10)
    p = assemble(c, g, 0.05)
    com, count = cell_centres_of_mass(g, c, 0.05)
    inside = np.zeros(g.n, dtype=bool)
    inside[count > 0] = inside_shell(c, com[count > 0] * 0.05)
    # kept == cells with lattice points whose centre of mass is inside, nothing else
    np.testing.assert_array_equal(p.kept_index, np.flatnonzero(inside))
    assert 0 < p.n_grains < g.n
    # the seeds are not the criterion: some kept seeds lie outside the shell or removed ones inside
    seed_in = inside_shell(c, g.seeds * 0.05)
    assert (seed_in != inside).any()
    # kept grains are exactly the subset, in order
    np.testing.assert_array_equal(p.grains.seeds, g.seeds[p.kept_index])


def test_centres_of_mass_match_the_brute_force_lattice():
    """The fast labelling kernel and the brute-force twin give the same centres of mass."""
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd

    rng = np.random.default_rng(7)
    c = np.zeros(16)
    c[0] = 0.5 * np.sqrt(4 * np.pi)
    g = radial_teacher_gbpd(rng, radius_px=10, margin_px=8)
    com, count = cell_centres_of_mass(g, c, 0.05, spacing_px=1.0, margin_px=4.0)
    _, rmax, lo, hi = shell_extent(c)
    slack = 0.02 * rmax + 4.0 * 0.05
    grid = lattice_grid(lo - slack, hi + slack, 0.05, pad=0)
    lab = gbpd_grid_labels_reference(g, grid, 0.05).ravel()
    np.testing.assert_array_equal(np.bincount(lab, minlength=g.n), count)
    x = np.broadcast_to(grid.axis_coords_um("x")[None, None, :], grid.shape).ravel() / 0.05
    sel = count > 0
    np.testing.assert_allclose(
        com[sel, 0], (np.bincount(lab, weights=x, minlength=g.n) / np.maximum(count, 1))[sel], rtol=0, atol=1e-9
    )


def test_lattice_centre_of_mass_error_is_small():
    """Halving the lattice spacing moves cells' centres of mass by ~0.1 px (a grain is ~10 px across)."""
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd

    rng = np.random.default_rng(8)
    c = np.zeros(4)
    c[0] = 0.8 * np.sqrt(4 * np.pi)
    g = radial_teacher_gbpd(rng, radius_px=16, margin_px=8)
    a, na = cell_centres_of_mass(g, c, 0.05, spacing_px=1.0, margin_px=4.0)
    b, nb = cell_centres_of_mass(g, c, 0.05, spacing_px=0.5, margin_px=4.0)
    interior = (np.linalg.norm(a, axis=1) < 12) & (na > 0)
    assert interior.sum() >= 5
    d = np.linalg.norm(a[interior] - b[interior], axis=1)
    assert np.median(d) < 0.15 and d.max() < 0.4


def test_make_particle_is_deterministic_and_scales_independent(models):
    shell, grain = models
    a = make_particle(shell, grain, particle_seed(3, 1), particle_id=1)
    b = make_particle(shell, grain, particle_seed(3, 1), particle_id=1)
    np.testing.assert_array_equal(a.coeffs_um, b.coeffs_um)
    np.testing.assert_array_equal(a.grains.seeds, b.grains.seeds)
    np.testing.assert_array_equal(a.grains.diag, b.grains.diag)
    np.testing.assert_array_equal(a.kept_index, b.kept_index)
    c = make_particle(shell, grain, particle_seed(3, 2), particle_id=2)
    assert not np.array_equal(a.coeffs_um, c.coeffs_um)
    # the shell is the model's draw from the particle's first child stream, in µm
    ss = np.random.SeedSequence(particle_seed(3, 1).entropy, spawn_key=particle_seed(3, 1).spawn_key + (0,))
    expect = shell.sample_coefficients(1, np.random.default_rng(ss))[0] * shell.voxel_size_um
    np.testing.assert_array_equal(a.coeffs_um, expect)
    # grains at the paper's intensity: count ~ mu * shell volume in px^3 (Poisson, 4 sd + boundary)
    from nmc_dataset.shells._descriptors import shell_descriptors

    vol_px = shell_descriptors(a.coeffs_um[None])["volume"][0] / 0.05**3
    expected = 0.0018 * vol_px
    assert abs(a.n_grains - expected) < 4 * np.sqrt(expected) + 0.1 * expected


def test_teacher_particle_has_plausible_grains():
    p = teacher_particle(seed=2, radius_um=0.8)
    r = np.linalg.norm(p.com_px * p.pixel_size_um, axis=1)
    assert r.max() < 0.8 * 1.2  # all kept centres of mass inside the (near-spherical) shell
    expected = 0.0018 * 4 / 3 * np.pi * 16**3  # mu * V in px^3 (Poisson: sd = sqrt)
    assert abs(p.n_grains - expected) < 4 * np.sqrt(expected)


def test_orientations_come_from_their_own_stream_and_leave_the_geometry_unchanged(models):
    from nmc_dataset.ebsd._orientation_model import OrientationModel, texture_statistics

    shell, grain = models
    assert getattr(grain, "orientation_model", None) is None
    plain = make_particle(shell, grain, particle_seed(3, 1), particle_id=1)
    assert plain.orientations_wxyz is None and plain.orientation_model_id == ""
    om = OrientationModel(-8.0, 2.0)
    a = make_particle(shell, grain, particle_seed(3, 1), particle_id=1, orientation_model=om)
    b = make_particle(shell, grain, particle_seed(3, 1), particle_id=1, orientation_model=om)
    for x in (a, b):
        np.testing.assert_array_equal(x.coeffs_um, plain.coeffs_um)
        np.testing.assert_array_equal(x.grains.seeds, plain.grains.seeds)
        np.testing.assert_array_equal(x.kept_index, plain.kept_index)
        np.testing.assert_array_equal(x.com_px, plain.com_px)
    np.testing.assert_array_equal(a.orientations_wxyz, b.orientations_wxyz)
    q = a.orientations_wxyz
    assert q.shape == (a.n_grains, 4) and q.dtype == np.float64 and np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert a.orientation_model_id == om.model_id
    # the orientation stream is the particle seed's third child
    ss = particle_seed(3, 1)
    from nmc_dataset.particles._assemble import draw_orientations, grain_radial_directions

    again = draw_orientations(plain, om, np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (2,)))
    np.testing.assert_array_equal(again.orientations_wxyz, q)
    # row k-1 = label k: the crystal direction of each grain's own radial direction follows the texture
    from scipy.spatial.transform import Rotation

    er = grain_radial_directions(a)
    v = Rotation.from_quat(q, scalar_first=True).inv().apply(er)  # g e_r, crystal coordinates
    mean, cov = om.moments()
    t = texture_statistics(v)
    assert np.all(np.abs(t.mean(0) - mean) < 4.5 * np.sqrt(np.diag(cov) / len(t)))
    assert not np.array_equal(
        make_particle(shell, grain, particle_seed(3, 2), particle_id=2, orientation_model=om).orientations_wxyz[:3],
        q[:3],
    )


def test_grain_model_loader_attaches_the_orientation_model(model_paths, oriented_model_paths, tmp_path):
    from nmc_dataset.errors import InputError
    from nmc_dataset.pipeline._generate import load_grain_model

    plain, pid = load_grain_model(model_paths[1])
    assert plain.orientation_model is None
    with pytest.raises(InputError, match="fit-orientations"):
        load_grain_model(model_paths[1], orientations=True)
    with pytest.raises(InputError, match="no orientation model"):
        load_grain_model(model_paths[1], orientations=tmp_path / "none.json")
    g, oid = load_grain_model(oriented_model_paths[1])
    assert g.orientation_model.kappa == -8.0 and oid == pid  # the grain model's id is its own
    assert load_grain_model(oriented_model_paths[1], orientations=False)[0].orientation_model is None


def test_make_particle_gives_a_depth_aware_model_the_shells_radius(models):
    """A depth-aware grain model sees each seed's distance over the shell's radius in the seed's
    direction (pixels), not its stored reference radius."""
    import torch

    from nmc_dataset.calibration._generator import GNet
    from nmc_dataset.calibration._model import GrainModel
    from nmc_dataset.particles._assemble import grain_window_px
    from nmc_dataset.shells._harmonics import radius

    shell, _ = models
    torch.manual_seed(5)
    net = GNet(hidden=(16,), depth_aware=True)
    with torch.no_grad():
        net.body[0].weight[:, -1].mul_(50)
    grain = GrainModel(gnet=net, intensity_per_px3=0.0018, pixel_size_um=0.05, reference_radius_px=1e4)
    ss = particle_seed(3, 1)
    part = make_particle(shell, grain, ss, particle_id=1, orientation_model=False)
    grain_ss = np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (1,))
    lo, hi = grain_window_px(part.coeffs_um, 0.05)
    by_hand = grain.sample(
        np.random.default_rng(grain_ss), lo, hi, radius=lambda u: np.asarray(radius(part.coeffs_um, u)) / 0.05
    )
    np.testing.assert_array_equal(by_hand.seeds[part.kept_index], part.grains.seeds)
    np.testing.assert_array_equal(by_hand.diag[part.kept_index], part.grains.diag)
    stored = grain.sample(np.random.default_rng(grain_ss), lo, hi)  # the reference radius: other markers
    assert not np.allclose(stored.diag[part.kept_index], part.grains.diag)
