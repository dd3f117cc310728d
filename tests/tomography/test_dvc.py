"""Local DVC: sub-voxel shifts recovered on known textures (both engines), and the closed loop on a rendered
sequence (evolve -> render-ct -> check-dvc) against the exact displacement."""

import json

import numpy as np
import pytest
from scipy import ndimage

from nmc_dataset.cli import _main as cli
from nmc_dataset.testing import lucas_kanade_translation_reference
from nmc_dataset.tomography import _dvc as dvc


def _texture(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=(n, n, n)), 1.5, mode="wrap").astype(np.float32)


@pytest.mark.parametrize("engine", ["local", "spam"])
def test_subvoxel_shift_is_recovered(engine):
    if engine == "spam":
        pytest.importorskip("spam.DIC")
    f = _texture()
    shift = np.array([0.37, -0.81, 1.24])
    g = ndimage.shift(f, shift, order=3, mode="grid-wrap")  # content moves by +shift
    nodes = dvc.grid_nodes(f.shape, 8, 8, margin=4)
    d, q, _ = dvc.measure(f, g, nodes, 8, engine=engine)
    assert np.all(np.isfinite(d))
    assert np.abs(np.median(d, axis=0) - shift).max() < 0.02
    assert np.sqrt(np.mean((d - shift) ** 2)) < 0.05


def test_translation_refinement_removes_the_peak_locking_of_plain_correlation():
    """The FFT peak alone (no sub-voxel refinement) is biased to whole voxels; the Gauss–Newton step is not."""
    f = _texture(seed=1)
    g = ndimage.shift(f, (0.5, 0.0, 0.0), order=3, mode="grid-wrap")
    p = np.array([20, 20, 20])
    coeffs = ndimage.spline_filter(g.astype(np.float64), 3)
    for affine in (False, True):
        d, zncc, _, _, _ = dvc.icgn(f, coeffs, p, 8, np.zeros(3), affine=affine)
        assert abs(d[0] - 0.5) < 0.01 and np.abs(d[1:]).max() < 0.01 and zncc > 0.999


def test_true_increment_inverts_the_previous_state():
    n = 20
    X = np.indices((n, n, n)).astype(np.float32)
    u0 = np.stack([0.01 * (X[0] - 10), np.zeros_like(X[0]), 0.3 + 0 * X[0]], -1)
    u1 = np.stack([0.03 * (X[0] - 10), np.zeros_like(X[0]), 0.5 + 0 * X[0]], -1)
    p = np.array([[12.0, 5.0, 5.0]])
    # X solves X + 0.01 (X - 10) = 12 -> X = 12.1 / 1.01 ... in z; increment = 0.02 (X - 10) and 0.2 in x
    Xz = (12 + 0.1) / 1.01
    want = np.array([0.02 * (Xz - 10), 0.0, 0.2])
    assert np.allclose(dvc.true_increment(u0, u1, p)[0], want, atol=1e-5)


def test_icgn_translation_agrees_with_the_textbook_lucas_kanade():
    """The IC-GN engine (ZNSSD, composed updates) and the independent forward-additive translation
    refinement converge to the same shift on random textures and random sub-voxel shifts."""
    rng = np.random.default_rng(3)
    for seed in range(4):
        f = _texture(n=36, seed=10 + seed)
        shift = rng.uniform(-1.2, 1.2, 3)
        g = ndimage.shift(f, shift, order=3, mode="grid-wrap")
        p = rng.integers(14, 22, 3)
        d_slow, _ = lucas_kanade_translation_reference(f, g, p, 8, np.round(shift))
        d_fast, zncc, sigma, _, _ = dvc.icgn(
            f, ndimage.spline_filter(g.astype(np.float64), 3), p, 8, np.round(shift), affine=False
        )
        assert np.abs(d_fast - d_slow).max() < 2e-3, (seed, d_fast, d_slow)
        assert np.abs(d_fast - shift).max() < 0.01 and zncc > 0.999


def test_affine_shape_function_recovers_an_affine_field():
    """x -> x + G (x - x0) + t with 3 % strains and shear: the first-order subset finds u at its centre."""
    f = _texture(n=48, seed=4)
    G = np.array([[-0.03, 0.01, 0.0], [0.0, 0.02, -0.015], [0.01, 0.0, 0.025]])
    x0 = np.array([20.0, 25.0, 23.0])
    t = np.array([0.4, -0.7, 0.25])
    X = np.indices(f.shape, dtype=np.float64)
    u = (np.einsum("ij,j...->i...", G, X - x0[:, None, None, None]) + t[:, None, None, None]).transpose(1, 2, 3, 0)
    g = dvc.warp(f, u.astype(np.float32))
    nodes = dvc.grid_nodes(f.shape, 10, 8, margin=4)
    want = dvc.true_increment(np.zeros_like(u), u, nodes - 0.5)
    r = dvc.correlate(f, g, nodes, 10, prefilter_sigma=0.0, shape="affine")
    err = np.linalg.norm(r["displacement"] - want, axis=1)
    assert r["reliable"].all() and err.max() < 0.02
    # the subset truth of an affine field is the field itself
    st = dvc.subset_truth(f, u, nodes, 10, prefilter_sigma=0.0)
    assert np.abs(st - want).max() < 1e-4


def test_correlate_refuses_subsets_outside_the_volume():
    from nmc_dataset.errors import InputError

    f = _texture(n=24)
    with pytest.raises(InputError, match="rim leave the volume"):
        dvc.correlate(f, f, dvc.grid_nodes(f.shape, 8, 4, margin=0), 8)
    with pytest.raises(InputError, match="differ in shape"):
        dvc.correlate(f, f[:-1], dvc.grid_nodes(f.shape, 8, 4, margin=1), 8)


def test_median_test_flags_a_planted_outlier_and_nothing_else():
    z, y, x = np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij")
    d = np.stack([0.02 * z, -0.01 * y + 0.3, 0.05 * np.sin(x)], -1).reshape(-1, 3)
    d[62] += [0.8, 0.0, 0.0]
    d[10] = np.nan
    out, med = dvc.median_outliers(d, (5, 5, 5))
    assert set(np.flatnonzero(out)) == {10, 62}
    assert np.allclose(med[62], d[62] - [0.8, 0, 0], atol=0.05)
    # a large uniform strain (0.4 voxel per node step) flags nothing, faces included
    rng = np.random.default_rng(0)
    steep = np.stack([0.4 * z, -0.3 * x, 0.2 * y], -1).reshape(-1, 3) + rng.normal(0, 0.02, (125, 3))
    assert not dvc.median_outliers(steep, (5, 5, 5))[0].any()


@pytest.mark.parametrize(
    "opts, where",
    [
        (["--subset", "15"], "--subset"),
        (["--step", "0"], "--step"),
        (["--prefilter-sigma", "-1"], "--prefilter-sigma"),
        (["--zncc-min", "1.5"], "--zncc-min"),
        (["--margin", "0"], "--margin"),
        (["--engine", "nope"], "--engine"),
    ],
)
def test_check_dvc_refuses_bad_options_in_one_line(tmp_path, capsys, opts, where):
    out = tmp_path / "rep"
    assert cli.main(["check-dvc", str(tmp_path), *opts, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and where in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def lab_pair(oriented_electrode):
    """The test electrode tiled 2³ (a periodic 128³ label box, 0.05 µm) rendered with the lab-nanoct preset
    as it is (binning 2: 64³ CT of 0.1 µm voxels, 2000 photons, rings 0.01): the reference CT without
    noise, and two noise draws of the same object (noise = noisy − noiseless render)."""
    from nmc_dataset.tomography._ctsim import render_ct, resolve_settings
    from nmc_dataset.tomography._volumes import read_volumes

    arrays, _ = read_volumes(oriented_electrode, ("phase",))
    phase = np.tile(arrays["phase"], (2, 2, 2))
    lab = resolve_settings("lab-nanoct")
    clean = resolve_settings("lab-nanoct", photons=1e9, rings=0.0)
    f0, _ = render_ct(phase, 0.05, settings=clean, seed=1, gain_seed=3)
    n0 = render_ct(phase, 0.05, settings=lab, seed=11, gain_seed=3)[0] - f0
    n1 = render_ct(phase, 0.05, settings=lab, seed=12, gain_seed=3)[0] - f0
    return f0, n0, n1


def test_closed_loop_on_a_warped_pair_at_lab_noise(lab_pair):
    """Pure DVC error: the deformed CT is the noiseless reference warped by a known smooth field (compaction
    -2 % zz, +1 % xx, shear 0.5 %, 0.3-voxel sinusoids of two box lengths' period and a translation), each CT with its
    own lab-preset noise. Defaults of check-dvc (affine 24³ subsets, σ = 2 prefilter): RMS ≤ 0.1 voxel;
    the translation shape function under this gradient does worse."""
    f0, n0, n1 = lab_pair
    n = f0.shape[0]
    X = np.indices(f0.shape, dtype=np.float64)
    c = (n - 1) / 2
    u = np.stack(
        [
            -0.02 * (X[0] - c) + 0.005 * (X[1] - c) + 0.3 * np.sin(np.pi * X[2] / n) + 0.35,
            0.3 * np.sin(np.pi * (X[0] + X[1]) / n) - 0.2,
            0.01 * (X[2] - c) + 0.3 * np.cos(np.pi * X[1] / n),
        ],
        -1,
    ).astype(np.float32)
    f, g = f0 + n0, dvc.warp(f0, u) + n1
    nodes = dvc.grid_nodes(f.shape, 12, 8, margin=4)
    truth = dvc.true_increment(np.zeros_like(u), u, nodes - 0.5)
    r = dvc.correlate(f, g, nodes, 12, prefilter_sigma=2.0, shape="affine")
    st = dvc.subset_truth(f0, u, nodes, 12, prefilter_sigma=2.0)
    res = dvc.compare(
        r["displacement"], truth, r["quality"], np.zeros(len(nodes), bool), reliable=r["reliable"], subset=st
    )
    keys = ("rms_error_vox", "median_error_vox", "coverage", "rms_error_vs_subset_truth_vox")
    print("warped pair at lab noise", {k: round(res[k], 4) for k in keys + ("subset_truth_vs_point_rms_vox",)})
    assert res["coverage"] >= 0.9
    assert res["rms_error_vox"] <= 0.1
    assert np.abs(res["bias_vox"]).max() < 0.05
    # the same pair through a translation subset at the old defaults (16³, σ = 1) is noticeably worse
    r16 = dvc.correlate(f, g, dvc.grid_nodes(f.shape, 8, 8, margin=4), 8, prefilter_sigma=1.0, shape="translation")
    t16 = dvc.true_increment(np.zeros_like(u), u, dvc.grid_nodes(f.shape, 8, 8, margin=4) - 0.5)
    e16 = np.sqrt(np.nanmean(np.sum((r16["displacement"] - t16) ** 2, axis=1)))
    print("translation 16³, σ = 1:", e16)
    assert e16 > 1.3 * res["rms_error_vox"]


def test_an_imposed_crack_raises_the_residual_where_it_is_at_lab_noise(lab_pair):
    """Material removed on a known slab (2 CT voxels thick, in a corner octant) between two lab-noise CTs of a
    translated object: the nodes whose subsets hold the slab are the worst-matched ones, and the residual ranks
    the nodes by how much of the slab they hold."""
    f0, n0, n1 = lab_pair
    u = np.zeros(f0.shape + (3,), np.float32)
    u[..., 0], u[..., 2] = 0.3, -0.4
    g = dvc.warp(f0, u)
    slab = np.zeros(f0.shape, np.float32)
    slab[4:20, 4:20, 13:15] = 1.0
    pore = float(np.percentile(f0, 5))
    w = ndimage.gaussian_filter(slab, 1.0) * (g > pore)  # the PSF's width; only material can vanish
    g = g * (1 - w) + pore * w
    nodes = dvc.grid_nodes(f0.shape, 12, 8, margin=4)
    r = dvc.correlate(f0 + n0, g + n1, nodes, 12, prefilter_sigma=2.0)
    frac = dvc.new_crack_fraction(np.zeros_like(slab), slab, nodes, 12)
    res = dvc.compare(
        r["displacement"], np.tile([0.3, 0.0, -0.4], (len(nodes), 1)), r["quality"], frac > 0, crack_fraction=frac
    )
    keys = (
        "crack_nodes",
        "crack_share_of_worst_decile",
        "crack_share_of_nodes",
        "quality_vs_new_crack_spearman",
        "quality_median_crack",
        "quality_median_clean",
    )
    print("imposed crack", {k: res[k] for k in keys})
    assert res["crack_share_of_worst_decile"] == 1.0 and res["crack_share_of_nodes"] < 0.2
    # 56 of 64 nodes hold no slab (tied ranks), which caps the rank correlation well below 1: measured 0.57
    assert res["quality_vs_new_crack_spearman"] > 0.4
    assert res["quality_median_crack"] > 1.1 * res["quality_median_clean"]  # measured 1.21 vs 0.98
    assert res["rms_error_vox"] < 0.1  # the crack-free nodes still follow the translation


@pytest.mark.slow
def test_closed_loop_on_a_rendered_sequence(oriented_electrode, tmp_path):
    """Smooth protocol (compaction + random field), bright noiseless CT: DVC follows the exact field; with
    cracks, the worst-correlated and the rejected nodes are crack nodes more often than nodes are."""
    proto = tmp_path / "smooth.yaml"
    proto.write_text(
        "soc: {min: 0.0, max: 0.0}\ncracks: {nuclei_per_cycle: 0}\n"
        "compaction: {strain: {zz: -0.02}, random_vox: 0.2, random_length_um: 0.8}\n"
        "rigid: {translation_vox: 0.0, rotation_deg: 0.0}\n"
    )
    seq, ct, rep = tmp_path / "seq", tmp_path / "ct", tmp_path / "dvc"
    assert (
        cli.main(["evolve", str(oriented_electrode), "--protocol", str(proto), "--steps", "2", "--out", str(seq)]) == 0
    )
    assert (
        cli.main(["render-ct", str(seq), "--binning", "1", "--photons", "1e7", "--rings", "0", "--out", str(ct)]) == 0
    )
    assert cli.main(["check-dvc", str(ct), "--out", str(rep)]) == 0  # the defaults: affine 24³, σ = 2
    r = json.loads((rep / "dvc_report.json").read_text())["pairs"][0]
    keys = ("rms_error_vox", "truth_rms_vox", "bias_vox", "coverage", "rms_error_vs_subset_truth_vox")
    print("smooth loop", {k: r[k] for k in keys + ("subset_truth_vs_point_rms_vox", "increment_strain_rms")})
    assert r["coverage"] >= 0.9 and r["photons"] == 1e7 and r["binning"] == 1
    # measured on this loop: rms 0.15 voxel for a truth rms 0.45, of which 0.06 is the engine's (vs the subset
    # truth) and 0.12 the random field's variation inside a 24³ subset (0.28 with the former translation 16³)
    assert r["rms_error_vox"] < 0.2
    assert r["rms_error_vs_subset_truth_vox"] < 0.1
    assert np.abs(r["bias_vox"]).max() < 0.1
    # cracks: the default protocol at a bright noiseless CT
    seq2, ct2, rep2 = tmp_path / "seq2", tmp_path / "ct2", tmp_path / "dvc2"
    proto.write_text("cycles: 2.0\ncracks: {nuclei_per_cycle: 2.0, width_vox: 3.0}\n")
    assert (
        cli.main(["evolve", str(oriented_electrode), "--protocol", str(proto), "--steps", "2", "--out", str(seq2)]) == 0
    )
    assert (
        cli.main(["render-ct", str(seq2), "--binning", "1", "--photons", "1e7", "--rings", "0", "--out", str(ct2)]) == 0
    )
    assert cli.main(["check-dvc", str(ct2), "--subset", "16", "--step", "6", "--out", str(rep2)]) == 0
    r2 = json.loads((rep2 / "dvc_report.json").read_text())["pairs"][0]
    print(
        "crack loop",
        {
            k: r2.get(k)
            for k in (
                "crack_nodes",
                "crack_share_of_worst_decile",
                "crack_share_of_nodes",
                "crack_share_of_unreliable",
                "quality_median_crack",
                "quality_median_clean",
                "coverage",
            )
        },
    )
    assert r2["crack_nodes"] > 0
    assert r2["crack_share_of_worst_decile"] > r2["crack_share_of_nodes"]
    assert r2["quality_median_crack"] > r2["quality_median_clean"]
    assert r2["crack_share_of_unreliable"] > r2["crack_share_of_nodes"]  # measured 0.93 vs 0.66
    assert r2["quality_vs_new_crack_spearman"] > 0.6  # measured 0.92
