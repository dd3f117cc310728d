"""Electrode packing: fraction reached, no overlaps (checked with the analytic shells, not the packer's
tables), walls, necks, binder placement, determinism and bad input."""

import numpy as np
import pytest
from scipy import ndimage

from nmc_dataset.errors import InputError
from nmc_dataset.particles._voxelize import inside_shell, particle_grid
from nmc_dataset.tomography import _pack as pack

H = 0.1
BOX = 5.0
FRACTION = 0.5  # small boxes (~25 particles) jam near 0.55; see docs for the fractions reached


@pytest.fixture(scope="module")
def electrode(models):
    shell, grain = models
    return pack.pack_electrode(
        shell, grain, box_um=BOX, solid_fraction=FRACTION, voxel_size_um=H, binder=("bridge", 0.08), seed=3
    )


def _inside_counts(e, periodic=True):
    """Per voxel: how many analytic shells (from the particle table) contain its centre."""
    n = e.phase.shape[0]
    L = n * H
    c = (np.arange(n) + 0.5) * H
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    count = np.zeros(pts.shape[0], np.int32)
    for cen, coef in zip(e.table["center_um"], e.table["coeffs_um"]):
        d = pts - cen[::-1]
        if periodic:
            d -= L * np.round(d / L)
        r_max = 1.1 * coef[0] / np.sqrt(4 * np.pi) + 1.0
        near = np.einsum("ij,ij->i", d, d) < r_max**2
        count[near] += inside_shell(coef, d[near])
    return count.reshape(e.phase.shape)


def test_reaches_the_fraction_without_overlap(electrode):
    e = electrode
    assert abs(e.info["solid_fraction"] - FRACTION) <= 0.02
    count = _inside_counts(e)
    active = count > 0
    # the labels are the analytic shells: NMC exactly where some shell contains the voxel centre
    assert np.array_equal(active, e.phase == 1) or np.mean(active != (e.phase == 1)) < 1e-4
    # no voxel centre lies inside two shells (each shell voxelised on its own, exactly)
    assert (count > 1).sum() == 0
    assert e.info["overlap_voxels"] == 0


def test_labels_are_consistent_and_grains_global(electrode):
    e = electrode
    assert np.array_equal(e.particle > 0, e.phase == 1) and np.array_equal(e.grain > 0, e.phase == 1)
    ids = np.unique(e.particle[e.particle > 0])
    assert len(ids) == e.info["n_particles"]
    # every grain id belongs to exactly one particle, inside its id range
    g, p = e.grain[e.phase == 1].astype(np.int64), e.particle[e.phase == 1].astype(np.int64)
    off, ng = e.table["grain_id_offset"][p - 1], e.table["n_grains"][p - 1]
    assert np.all((g > off) & (g <= off + ng))
    assert e.info["n_grains"] == int(e.table["n_grains"].sum())
    assert e.table["center_um"].shape == (e.info["n_particles"], 3)


def test_binder_hits_its_fraction_and_bridges_contacts(electrode, models):
    e = electrode
    assert (e.phase == 2).sum() == round(0.08 * e.phase.size)
    coat = pack.place_binder((e.particle > 0).astype(np.uint8), "coating", 0.08, periodic=True)[0]
    assert (coat == 2).sum() == (e.phase == 2).sum()

    def near_two(phase):  # binder voxels within 2 voxels of two different particles
        big = np.iinfo(np.uint32).max
        lab = e.particle
        hi = ndimage.maximum_filter(lab, size=5, mode="wrap")
        lo = ndimage.minimum_filter(np.where(lab > 0, lab, big), size=5, mode="wrap")
        return np.mean((lo != big)[phase == 2] & (hi != lo)[phase == 2])

    assert near_two(e.phase) > near_two(coat) + 0.2  # bridges sit between particles, coatings everywhere
    # coating: a layer, every binder voxel closer to NMC than any remaining pore voxel
    from nmc_dataset.tomography._edt import distance_to

    m = 16
    d = distance_to(np.pad(e.particle > 0, m, mode="wrap"))[m:-m, m:-m, m:-m]
    assert d[coat == 2].max() <= d[coat == 0].min() + 1e-9


def test_walls_keep_particles_inside_and_necks_overlap_a_little(models):
    shell, grain = models
    e = pack.pack_electrode(
        shell, grain, box_um=5.0, solid_fraction=0.4, voxel_size_um=H, binder=None, periodic=False, neck_um=0.15, seed=1
    )
    # 17 particles: the population is the whole number of particles closest to the request
    # (here 0.421), and the voxels hold it less the shared neck voxels
    assert abs(e.info["analytic_fraction"] - 0.4) <= 0.5 * e.table["volume_um3"].max() / 5.0**3
    assert 0 < e.info["analytic_fraction"] - e.info["solid_fraction"] <= 0.01
    from nmc_dataset.shells._harmonics import icosphere, radius

    dirs = np.asarray(icosphere(3)[0])
    for cen, coef in zip(e.table["center_um"], e.table["coeffs_um"]):
        surf = cen[::-1] + dirs * np.asarray(radius(coef, dirs))[:, None]
        assert surf.min() > -H and surf.max() < 5.0 + H
    count = _inside_counts(e, periodic=False)
    assert (count > 1).sum() > 0  # necks
    # neck depth: at a voxel inside two shells, the depths below the two surfaces (along the radii)
    # add up to at most the requested neck
    n = e.phase.shape[0]
    c = (np.arange(n) + 0.5) * H
    kk, jj, ii = np.nonzero(count > 1)
    pts = np.stack([c[ii], c[jj], c[kk]], 1)
    depths = []
    for cen, coef in zip(e.table["center_um"], e.table["coeffs_um"]):
        d = pts - cen[::-1]
        r = np.linalg.norm(d, axis=1)
        depths.append(np.asarray(radius(coef, d / r[:, None])) - r)
    depths = np.sort(np.where(np.array(depths) >= 0, np.array(depths), -np.inf), axis=0)
    assert np.all(np.isfinite(depths[-2]))
    assert (depths[-1] + depths[-2]).max() <= 0.15
    assert (depths[-1] + depths[-2]).max() > 0.15 - 3 * H  # the necks are about as deep as requested


@pytest.mark.slow
def test_same_seed_same_volume_and_workers_do_not_matter(models):
    shell, grain = models
    kw = {"box_um": 4.0, "solid_fraction": 0.4, "voxel_size_um": H, "binder": ("coating", 0.05), "seed": 7}
    a = pack.pack_electrode(shell, grain, **kw)
    b = pack.pack_electrode(shell, grain, workers=2, **kw)
    for k in ("phase", "particle", "grain"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_penetration_kernel_equals_its_numpy_twin(models):
    shell, _ = models
    c = shell.sample_coefficients(12, np.random.default_rng(0)) * shell.voxel_size_um
    sh = pack._Shapes(c)
    rng = np.random.default_rng(1)
    i = rng.integers(0, 12, 300)
    j = (i + 1 + rng.integers(0, 11, 300)) % 12
    d = rng.normal(0, 1.0, (300, 3))
    for fine in (False, True):
        a = pack._penetration(sh, 0.9, 0.02, i, j, d, fine)[0]
        ref_caps = sh.caps[int(fine)]
        sh.cap_dirs, sh.cap_r = ref_caps
        assert np.allclose(a, pack._penetration_reference(sh, 0.9, 0.02, i, j, d)[0])


def test_bad_input_is_an_input_error(models):
    shell, grain = models
    coeffs, _ = pack.draw_shells(shell, 1, 0.8 * 27.0)
    with pytest.raises(InputError, match="not reachable.*maximum reached without overlap is 0\\.[3-7]"):
        pack.pack_centres(coeffs, 3.0, periodic=True, pad_um=0.02, rng=np.random.default_rng(0), final_iter=300)
    with pytest.raises(InputError, match="too coarse"):
        pack.pack_electrode(shell, grain, box_um=20.0, solid_fraction=0.5, voxel_size_um=0.5, seed=1)
    with pytest.raises(InputError, match="binder"):
        pack.pack_electrode(shell, grain, box_um=3.0, solid_fraction=0.5, voxel_size_um=H, binder=("glue", 0.1))
    with pytest.raises(InputError, match="solid-fraction"):
        pack.pack_electrode(shell, grain, box_um=3.0, solid_fraction=1.2, voxel_size_um=H)


def test_gap_fields_parallel_rows_equal_a_serial_pass(models):
    """The binder's gap fields (threads over z rows, blocks taller than a periodic box in slabs) equal
    the kernel's own serial Python pass over whole blocks."""
    from types import SimpleNamespace

    shell, _ = models
    rng = np.random.default_rng(4)
    n, h, width = 12, 0.1, 4.0
    parts = []
    for k in range(3):
        c = shell.sample_coefficients(1, rng)[0] * shell.voxel_size_um * 0.6  # ~0.55 µm: blocks > 12 voxels
        g0 = particle_grid(SimpleNamespace(coeffs_um=c, pixel_size_um=0.05), h, pad=1)
        grid = pack.OffsetGrid(g0.shape, g0.index_lo, h, rng.uniform(-0.05, 0.05, 3))
        parts.append((SimpleNamespace(coeffs_um=c, degree=round(np.sqrt(len(c))) - 1), grid, rng.integers(0, n, 3)))
    assert max(g.shape[0] for _, g, _ in parts) + 8 > n  # exercises the slabs
    for periodic in (True, False):
        d1, d2 = pack._gap_fields(parts, n, h, periodic, width)
        r1 = np.full((n, n, n), np.inf, np.float32)
        r2 = r1.copy()
        from nmc_dataset.particles._voxelize import _cubemap_centres
        from nmc_dataset.shells._harmonics import sh_basis

        centres = _cubemap_centres(pack._CUBE_BINS).reshape(-1, 3)
        w = int(np.ceil(width))
        for p, grid, start in parts:
            table = p.coeffs_um @ sh_basis(p.degree, centres).T
            shape = np.array([s + 2 * w for s in grid.shape], dtype=np.int64)
            pack._gap_update.py_func(
                r1,
                r2,
                table,
                np.asarray(grid.index_lo, np.int64) - w,
                shape,
                np.asarray(grid.offset_um, np.float64),
                h,
                np.asarray(start, np.int64) - w,
                periodic,
                width,
                pack._CUBE_BINS,
            )
        assert np.array_equal(d1, r1) and np.array_equal(d2, r2)
        assert np.isfinite(d1).any()


def test_packed_particles_are_the_ones_make_particle_draws(electrode, models):
    """Each packed particle is ``make_particle`` of its seed (same selection lattice), voxelised at its
    centre: its voxels in the box carry exactly those grain labels (less the voxels it lost at contacts)."""
    from nmc_dataset.particles._assemble import make_particle

    shell, grain = models
    e = electrode
    n = e.phase.shape[0]
    lost = 0
    for k in range(e.info["n_particles"]):
        p = make_particle(shell, grain, pack.particle_seed(3, k), particle_id=k + 1, spacing_px=e.info["spacing_px"])
        assert p.n_grains == e.table["n_grains"][k]
        assert np.array_equal(p.coeffs_um, e.table["coeffs_um"][k])
        local, start, _ = pack._voxelize_at(p, e.table["center_um"][k][::-1], H)
        idx, sel = pack._box_indices(start, local.shape, n, True)
        loc = local[np.ix_(*sel)]
        box_p, box_g = e.particle[np.ix_(*idx)], e.grain[np.ix_(*idx)]
        mine = box_p == k + 1
        assert np.all(loc[mine] > 0)
        assert np.array_equal(box_g[mine], loc[mine] + e.table["grain_id_offset"][k])
        lost += int(((loc > 0) & ~mine).sum())
    assert lost <= e.info["overlap_voxels"]


def test_binder_from_fields_folded_during_the_scatter_equals_a_fresh_pass(models):
    """``place_binder`` with the gap fields folded particle by particle (as ``pack_electrode`` does while
    the workers voxelise) gives the same volume as computing them at the end, also when the first
    width holds too few pore voxels and it must widen."""
    from nmc_dataset.particles._assemble import make_particle

    shell, grain = models
    rng = np.random.default_rng(2)
    n = 40
    phase = np.zeros((n, n, n), np.uint8)
    particle = np.zeros((n, n, n), np.uint32)
    grains = np.zeros_like(particle)
    parts = []
    for k in range(3):
        p = make_particle(shell, grain, pack.particle_seed(9, k), particle_id=k + 1, spacing_px=2.0)
        local, start, grid = pack._voxelize_at(p, rng.uniform(0, n * H, 3), H)
        pack._scatter(particle, grains, k, local, start, grid, p, parts, n, True, 0)
        parts.append((p, grid, start))
    phase[particle > 0] = 1
    for frac in (0.05, float((phase == 0).mean()) - 1e-3):
        gaps = pack._GapFields(n, H, True, pack._BRIDGE_WIDTH)
        for part in parts:
            gaps.add(*part)
        within = int((np.isfinite(gaps.d1 + gaps.d2) & (phase == 0)).sum())
        assert (within < round(frac * phase.size)) == (frac > 0.5)  # the second one must widen
        a, ia = pack.place_binder(phase, "bridge", frac, parts=parts, h=H, periodic=True, gaps=gaps)
        b, ib = pack.place_binder(phase, "bridge", frac, parts=parts, h=H, periodic=True)
        assert np.array_equal(a, b) and ia == ib


@pytest.mark.slow
def test_benchmark_population_packs_at_055_and_names_the_maximum_when_jammed():
    """The benchmark population (mean radius 3.2 µm) in a (20 µm)³ box: 0.55 packs with no shared
    voxel (exact check), 0.58 jams even when shaken and the error names the fraction reached."""
    from nmc_dataset.synthetic._ct_phantom import reference_shell_model

    shell = reference_shell_model(mean_radius_vox=25, voxel_size_um=0.128)

    def rng():  # the positions stream of ``pack --seed 4``
        return np.random.default_rng(np.random.SeedSequence(4, spawn_key=(pack.POSITION_STREAM,)))

    coeffs, vols = pack.draw_shells(shell, 4, 0.55 * 20.0**3)
    x, stats = pack.pack_centres(coeffs, 20.0, periodic=True, pad_um=0.025, rng=rng())
    assert abs(stats["analytic_fraction"] - 0.55) < 0.01 and stats["trimmed"] == 0
    blocks = [pack._shell_block(c, xx, H) for c, xx in zip(coeffs, x)]
    assert pack.voxel_contacts(coeffs, blocks, 200, True) == {}
    coeffs, vols = pack.draw_shells(shell, 4, 0.58 * 20.0**3)
    with pytest.raises(InputError, match="maximum reached without overlap is 0\\.5[4-7]"):
        pack.pack_centres(coeffs, 20.0, periodic=True, pad_um=0.025, rng=rng(), min_fraction=0.56)


def _brute_contacts(coeffs, centres, n, periodic):
    """Slow twin of ``voxel_contacts``: every voxel centre of the box tested against every shell."""
    from nmc_dataset.shells._harmonics import radius

    L = n * H
    c = (np.arange(n) + 0.5) * H
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    depth = np.full((len(coeffs), len(pts)), -np.inf)
    for k, (cen, coef) in enumerate(zip(centres, coeffs)):
        d = pts - cen
        if periodic:
            d -= L * np.round(d / L)
        r = np.maximum(np.linalg.norm(d, axis=1), 1e-12)
        dk = np.asarray(radius(coef, d / r[:, None])) - r
        depth[k] = np.where(dk >= 0, dk, -np.inf)
    out = {}
    for i in range(len(coeffs)):
        for j in range(i + 1, len(coeffs)):
            both = np.isfinite(depth[i]) & np.isfinite(depth[j])
            if both.any():
                out[(i, j)] = (int(both.sum()), float((depth[i] + depth[j])[both].max()))
    return out


@pytest.mark.parametrize("periodic", [True, False])
def test_voxel_contacts_equal_a_brute_force_count(models, periodic):
    """The exact voxel check (each shell voxelised on its own block, blocks intersected, across the
    periodic faces too) finds the same shared voxels and neck depths as testing every voxel centre
    of the box against every shell."""
    shell, _ = models
    rng = np.random.default_rng(5 + periodic)
    coeffs = shell.sample_coefficients(6, rng) * shell.voxel_size_um
    n = 24
    centres = rng.uniform(0.6, n * H - 0.6, (6, 3)) if not periodic else rng.uniform(0, n * H, (6, 3))
    blocks = [pack._shell_block(c, x, H) for c, x in zip(coeffs, centres)]
    got = pack.voxel_contacts(coeffs, blocks, n, periodic)
    ref = _brute_contacts(coeffs, centres, n, periodic)
    assert len(ref) >= 3 and got.keys() == ref.keys()
    for ij in ref:
        if periodic:  # the box holds every voxel of a periodic block
            assert got[ij][0] == ref[ij][0], ij
            assert np.isclose(got[ij][1], ref[ij][1]), ij
        else:  # blocks reach out of the box: the check also counts voxels beyond the walls
            assert got[ij][0] >= ref[ij][0] and got[ij][1] >= ref[ij][1] - 1e-12, ij


@pytest.mark.parametrize("neck", [0.0, 0.1])
def test_clearing_separates_shells_that_share_voxels(models, neck):
    """Bodies placed into each other (much deeper than the packer leaves them) come out of the exact
    voxel check sharing no voxel centre, or only necks no deeper than requested."""
    shell, _ = models
    rng = np.random.default_rng(11)
    coeffs = shell.sample_coefficients(6, rng) * shell.voxel_size_um
    n = 40
    L = n * H
    centres = rng.uniform(0, L, (6, 3))
    assert _brute_contacts(coeffs, centres, n, True)  # they start overlapping
    x, blocks, stats = pack.clear_voxel_overlaps(
        coeffs, centres, L, H, periodic=True, pad_um=0.25 * H - 0.5 * neck, neck_um=neck, rng=rng
    )
    assert stats["voxel_pairs_separated"] > 0 and stats["voxel_rounds"] >= 2
    after = _brute_contacts(coeffs, x, n, True)
    if neck == 0:
        assert after == {}
    else:
        assert after and max(d for _, d in after.values()) <= neck
    # the returned blocks are the shells' voxels at the returned centres
    for k in range(6):
        m, start, _ = pack._shell_block(coeffs[k], x[k], H)
        assert np.array_equal(m, blocks[k][0]) and np.array_equal(start, blocks[k][1])


def test_a_box_narrower_than_two_particles_packs_without_shared_voxels(models):
    """In a periodic box narrower than two particle diameters a pair can touch through two images
    (the packer then relaxes both): the exact voxels of such a packing share no voxel centre."""
    shell, _ = models
    L = 3.6
    coeffs, _ = pack.draw_shells(shell, 2, 0.3 * L**3)
    sh = pack._Shapes(coeffs)
    assert L < 2 * (2 * sh.rmax.max() + 2 * 0.025)  # second images are within reach
    rng = np.random.default_rng(np.random.SeedSequence(2, spawn_key=(pack.POSITION_STREAM,)))
    x, _ = pack.pack_centres(coeffs, L, periodic=True, pad_um=0.025, rng=rng)
    x, _, stats = pack.clear_voxel_overlaps(coeffs, x, L, H, periodic=True, pad_um=0.025, rng=rng)
    assert _brute_contacts(coeffs, x, round(L / H), True) == {}
