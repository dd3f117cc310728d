"""Tests of the GBPD engine: exact fast hard labels, the torch soft form, disconnected cells."""

import numpy as np
import pytest
import torch

from nmc_dataset import tessellation as G
from nmc_dataset.tessellation._connectivity import count_disconnected
from nmc_dataset.tessellation._gbpd import GBPD, grid_points, power_distances, radial_frames
from nmc_dataset.tessellation._labels import hard_labels, hard_labels_grid, near_candidates
from nmc_dataset.tessellation._soft import soft_assign, torch_frames
from nmc_dataset.testing import count_disconnected_reference, hard_labels_bruteforce


def _random_gbpd(rng, n, d, kind, extent=40.0):
    seeds = rng.uniform(-extent, extent, (n, d))
    if kind == "mild":
        diag = rng.uniform(0.5, 5.0, (n, d))
        offsets = rng.uniform(1, 10, n)
    elif kind == "spec":  # the generator's ranges (docs/method.md#generator): D in [DIAG_MIN, 50], r in [1, 10]
        diag = rng.uniform(G.DIAG_MIN, 50.0, (n, d))
        offsets = rng.uniform(1, 10, n)
    else:  # strongly anisotropic: markers spread over 5 decades, large offsets (big Laguerre cells)
        diag = np.exp(rng.uniform(np.log(G.DIAG_MIN), np.log(50.0), (n, d)))
        offsets = rng.uniform(0, 500, n)
    return GBPD(seeds, diag, offsets, rng.uniform(0, np.pi, n))


CASES = [(d, kind, k) for d in (2, 3) for kind in ("mild", "spec", "aniso") for k in range(3)]


@pytest.mark.parametrize("d,kind,k", CASES)
def test_fast_labels_equal_bruteforce(d, kind, k):
    """100 % agreement with the brute-force argmin, compiled kernel and numpy twin, grid and points."""
    rng = np.random.default_rng(1000 * d + 10 * k + len(kind))
    g = _random_gbpd(rng, int(rng.integers(20, 400)), d, kind)
    shape = (37, 29) if d == 2 else (13, 17, 19)
    origin = rng.uniform(-50, -10, d)
    spacing = float(rng.uniform(0.5, 4.0))
    pts = grid_points(shape, origin, spacing).reshape(-1, d)
    ref = hard_labels_bruteforce(g, pts)
    for use_numba in (True, False):
        grid = hard_labels_grid(g, shape, origin, spacing, use_numba=use_numba, block=int(rng.integers(2, 9)))
        np.testing.assert_array_equal(grid.ravel(), ref)
    # arbitrary (unstructured) points, jittered so boxes are irregular
    pts2 = pts + rng.normal(0, 0.3 * spacing, pts.shape)
    ref2 = hard_labels_bruteforce(g, pts2)
    for use_numba in (True, False):
        np.testing.assert_array_equal(hard_labels(g, pts2, use_numba=use_numba), ref2)


@pytest.mark.parametrize("kind", ["mild", "spec", "aniso"])
@pytest.mark.parametrize("block,sub", [(8, 4), (16, 8), (12, 5), (6, 1)])
def test_grid_rows_and_sub_boxes_equal_bruteforce(kind, block, sub):
    """Sub-boxes smaller than the blocks (uneven splits too), their planes and rows, with a mask
    and many small cells (~40 grid points each, as the assembly lattice): equal to the brute force."""
    rng = np.random.default_rng(block * 100 + sub * 10 + len(kind))
    shape = (23, 26, 29)
    spacing = float(rng.uniform(0.8, 2.5))
    ext = 0.5 * spacing * np.array(shape[::-1])
    n = int(np.prod(shape) / 40)
    g = GBPD(
        rng.uniform(-ext, ext, (n, 3)),
        _random_gbpd(rng, n, 3, kind).diag,
        _random_gbpd(rng, n, 3, kind).offsets,
        rng.uniform(0, np.pi, n),
    )
    pts = grid_points(shape, None, spacing)
    mask = (pts**2).sum(-1) < (0.45 * spacing * shape[0]) ** 2
    mask |= rng.random(shape) < 0.05
    ref = hard_labels_bruteforce(g, pts.reshape(-1, 3)).reshape(shape)
    full = hard_labels_grid(g, shape, spacing=spacing, block=block, sub=sub)
    np.testing.assert_array_equal(full, ref)
    masked = hard_labels_grid(g, shape, spacing=spacing, mask=mask, block=block, sub=sub)
    np.testing.assert_array_equal(masked[mask], ref[mask])
    assert (masked[~mask] == -1).all()
    # 2D (one plane of rows)
    g2 = GBPD(g.seeds[:, :2], g.diag[:, :2], g.offsets)
    lab2 = hard_labels_grid(g2, shape[1:], spacing=spacing, block=block, sub=sub)
    pts2 = grid_points(shape[1:], None, spacing).reshape(-1, 2)
    np.testing.assert_array_equal(lab2.ravel(), hard_labels_bruteforce(g2, pts2))


def test_grid_ties_on_rows_go_to_lowest_index():
    """Duplicated seeds tie everywhere on their cells: the lowest index wins on every row."""
    rng = np.random.default_rng(3)
    base = rng.uniform(-12, 12, (60, 3))
    seeds = np.concatenate([base, base])
    g = GBPD(seeds, np.ones((120, 3)), np.zeros(120))
    out = hard_labels_grid(g, (14, 15, 16), block=8, sub=4)
    assert out.max() < 60
    np.testing.assert_array_equal(out.ravel(), hard_labels_bruteforce(g, grid_points((14, 15, 16)).reshape(-1, 3)))


def test_masked_grid_and_default_origin(rng):
    g = _random_gbpd(rng, 300, 3, "spec")
    shape = (20, 24, 28)
    mask = rng.random(shape) < 0.3
    out = hard_labels_grid(g, shape, mask=mask)
    assert out.dtype == np.int64 and out.shape == shape
    assert (out[~mask] == -1).all()
    ref = hard_labels_bruteforce(g, grid_points(shape)[mask])
    np.testing.assert_array_equal(out[mask], ref)
    # the default origin centres the grid on 0
    pts = grid_points(shape)
    np.testing.assert_allclose(pts.reshape(-1, 3).mean(0), 0, atol=1e-12)


def test_grid_points_convention():
    """Arrays are indexed [z, y, x]; point index (k, j, i) is origin + spacing * (i, j, k)."""
    pts = grid_points((2, 3, 4), origin=(10.0, 20.0, 30.0), spacing=0.5)
    np.testing.assert_allclose(pts[1, 2, 3], [10 + 1.5, 20 + 1.0, 30 + 0.5])
    g = GBPD(np.array([[-5.0, 0.0], [5.0, 0.0]]), np.ones((2, 2)), np.zeros(2))
    lab = hard_labels_grid(g, (3, 11), origin=(-5.0, -1.0))
    assert (lab[:, :5] == 0).all() and (lab[:, 6:] == 1).all()


def test_ties_go_to_lowest_index():
    seeds = np.array([[3.0, 1.0], [3.0, 1.0], [-4.0, 2.0]] * 10)
    g = GBPD(seeds, np.ones((30, 2)), np.zeros(30))
    out = hard_labels_grid(g, (16, 16))
    assert set(np.unique(out)) <= {0, 2}
    np.testing.assert_array_equal(out.ravel(), hard_labels_bruteforce(g, grid_points((16, 16)).reshape(-1, 2)))


def test_large_realistic_subset_exact():
    """A paper-sized GBPD (mu = 0.0018 in [-64, 64]^3: ~4700 seeds) on a 64^3 grid; brute force on a random subset."""
    rng = np.random.default_rng(7)
    n = rng.poisson(0.0018 * 128**3)
    g = GBPD(
        rng.uniform(-64, 64, (n, 3)),
        rng.uniform(G.DIAG_MIN, 50, (n, 3)),
        rng.uniform(1, 10, n),
        rng.uniform(0, np.pi, n),
    )
    out = hard_labels_grid(g, (64, 64, 64))
    pts = grid_points((64, 64, 64)).reshape(-1, 3)
    sel = rng.choice(len(pts), 8000, replace=False)
    np.testing.assert_array_equal(out.ravel()[sel], hard_labels_bruteforce(g, pts[sel]))


def test_empty_inputs():
    g = GBPD(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    assert hard_labels(g, np.zeros((0, 3))).shape == (0,)
    g2 = GBPD(np.array([[1.0, 2.0]]), np.ones((1, 2)), np.zeros(1))
    assert (hard_labels_grid(g2, (4, 5)) == 0).all()
    assert (hard_labels_grid(g2, (4, 5), mask=np.zeros((4, 5), bool)) == -1).all()


# --------------------------------------------------------------------------- soft form
@pytest.mark.parametrize("d", [2, 3])
def test_torch_frames_match_numpy(d, rng):
    seeds = rng.normal(size=(50, d)) * 10
    seeds[0] = 0.0  # degenerate: at the centre
    seeds[1] = 0.0
    seeds[1, 0] = -3.0  # degenerate in 3D: on -e1
    roll = rng.uniform(0, np.pi, 50)
    ref = radial_frames(seeds, roll)
    got = torch_frames(torch.tensor(seeds), torch.tensor(roll)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
    # rotations whose first row is the radial direction
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", got, got), np.broadcast_to(np.eye(d), got.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(got), 1.0, atol=1e-12)
    u = seeds[2:] / np.linalg.norm(seeds[2:], axis=1, keepdims=True)
    np.testing.assert_allclose(got[2:, 0, :], u, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_soft_assign_limits_and_gradients(d, rng):
    g = _random_gbpd(rng, 40, d, "mild", extent=15)
    shape = (12, 12) if d == 2 else (6, 8, 8)
    pts = grid_points(shape).reshape(-1, d)
    hard = hard_labels(g, pts)
    seeds = torch.tensor(g.seeds, requires_grad=True)
    diag = torch.tensor(g.diag, requires_grad=True)
    off = torch.tensor(g.offsets, requires_grad=True)
    frames = torch_frames(seeds, torch.tensor(g.roll))
    tp = torch.tensor(pts)
    full = soft_assign(tp, seeds, diag, off, frames, 1e-4)
    np.testing.assert_allclose(full.sum(1).detach().numpy(), 1.0, atol=1e-12)
    assert (full.argmax(1).numpy() == hard).mean() > 0.99  # beta -> 0 is the hard tessellation (ties aside)
    # candidates: the 10 nearest seeds plus padding; padding gets probability 0, and where the
    # candidates hold every cell with non-negligible weight the result equals the full softmax
    cand = G.candidate_seeds(pts, g.seeds, 10)
    cand = np.concatenate([cand, -np.ones((len(pts), 2), np.int64)], 1)
    part = soft_assign(tp, seeds, diag, off, frames, 1.0, torch.tensor(cand))
    assert part.shape == (len(pts), 12)
    assert (part[:, 10:] == 0).all()
    np.testing.assert_allclose(part.sum(1).detach().numpy(), 1.0, atol=1e-12)
    full1 = soft_assign(tp, seeds, diag, off, frames, 1.0)
    gathered = torch.gather(full1, 1, torch.tensor(cand[:, :10]))
    close = gathered.sum(1) > 1 - 1e-9
    assert close.float().mean() > 0.5
    np.testing.assert_allclose(part[close, :10].detach().numpy(), gathered[close].detach().numpy(), atol=1e-8)
    # differentiable w.r.t. seeds (through the frames too), markers and offsets
    (part[:, 0] * torch.arange(len(pts), dtype=part.dtype)).sum().backward()
    for t in (seeds, diag, off):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("d,kind", [(2, "mild"), (3, "spec"), (3, "aniso")])
def test_near_candidates_exact(d, kind):
    """The candidate sets equal the brute-force sets {i : f_i(x) <= min_j f_j(x) + margin}."""
    rng = np.random.default_rng(40 + d + len(kind))
    g = _random_gbpd(rng, 250, d, kind)
    pts = rng.uniform(-45, 45, (3000, d))
    f = power_distances(g, pts)
    for margin in (0.0, 5.0, 60.0):
        cand = near_candidates(g, pts, margin)
        assert cand.dtype == np.int64 and cand.shape[0] == len(pts)
        np.testing.assert_array_equal(cand[:, 0], hard_labels_bruteforce(g, pts))
        ref = f <= f.min(1, keepdims=True) + margin
        got = np.zeros_like(ref)
        rows = np.repeat(np.arange(len(pts)), cand.shape[1])
        valid = cand.ravel() >= 0
        got[rows[valid], cand.ravel()[valid]] = True
        np.testing.assert_array_equal(got, ref)
        fc = np.where(cand >= 0, np.take_along_axis(f, np.maximum(cand, 0), 1), 1e300)
        assert (np.diff(fc, axis=1) >= 0).all()  # sorted by power distance, padding last


def test_soft_assign_gradcheck():
    rng = np.random.default_rng(3)
    seeds = torch.tensor(rng.uniform(-5, 5, (5, 3)), requires_grad=True)
    diag = torch.tensor(rng.uniform(0.5, 2, (5, 3)), requires_grad=True)
    off = torch.tensor(rng.uniform(0, 2, 5), requires_grad=True)
    pts = torch.tensor(rng.uniform(-5, 5, (7, 3)))
    cand = torch.tensor(rng.integers(0, 5, (7, 4)))

    def f(s, dg, o):
        return soft_assign(pts, s, dg, o, torch_frames(s), 3.0, cand)

    assert torch.autograd.gradcheck(f, (seeds, diag, off))


# --------------------------------------------------------------------------- disconnected cells
def test_count_disconnected_2d_3d():
    a = np.zeros((10, 10), np.int64)
    a[:, 5:] = 1
    assert count_disconnected(a) == 0
    a[0, 0] = 1  # cell 1 gains a detached piece
    a[9, 9] = 0  # cell 0 gains a detached piece (corner touch only: 4-connectivity)
    assert count_disconnected(a) == 2
    assert count_disconnected(a, connectivity=2) == 2  # both pieces are far from their cell
    b = np.full((6, 6, 6), 3, np.int64)
    b[0, 0, 0] = 7
    b[5, 5, 5] = 7
    b[2, :, :] = -1  # background splits cell 3 but is itself ignored
    assert count_disconnected(b) == 2
    assert count_disconnected(np.full((4, 4), -1)) == 0
    for lab in (a, b):
        assert count_disconnected_reference(lab) == 2


def test_count_disconnected_on_gbpd_matches_reference(rng):
    """Compare with a direct per-cell scipy.ndimage count on a strongly anisotropic GBPD."""
    from scipy import ndimage

    g = _random_gbpd(rng, 200, 2, "aniso")
    lab = hard_labels_grid(g, (120, 120))
    ref = sum(ndimage.label(lab == c)[1] > 1 for c in np.unique(lab))
    assert ref > 0
    assert count_disconnected(lab) == ref
    assert count_disconnected_reference(lab) == ref
    g3 = _random_gbpd(rng, 300, 3, "aniso")
    lab3 = hard_labels_grid(g3, (24, 30, 36), mask=rng.random((24, 30, 36)) < 0.9)
    ids = np.where(lab3 >= 0, lab3 * 1000 + 7, -1)  # arbitrary (large, sparse) label values
    assert count_disconnected(ids) == count_disconnected_reference(ids) > 0
    for connectivity in (1, 2, 3):  # random labels with background: many pieces
        noisy = np.where(rng.random((12, 14, 16)) < 0.15, -1, rng.integers(0, 25, (12, 14, 16)))
        assert count_disconnected(noisy, connectivity) == count_disconnected_reference(noisy, connectivity)
