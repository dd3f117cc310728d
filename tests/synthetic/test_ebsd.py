"""Tests of nmc_dataset.synthetic._ebsd: the radial teacher GBPD, exact slicing, instrument-like scans."""

import json

import numpy as np
import pytest

from nmc_dataset.synthetic._ebsd import (
    boundary_counts,
    plane_basis,
    radial_teacher_gbpd,
    slice_labels,
    synthetic_scan,
    write_synthetic_sections,
)
from nmc_dataset.tessellation._labels import hard_labels
from nmc_dataset.testing._tessellation import hard_labels_bruteforce


def test_teacher_parameters(rng):
    r, mu = 60.0, 0.0018
    counts = []
    for _ in range(5):
        g = radial_teacher_gbpd(
            rng, radius_px=r, intensity=mu, radial_diag=(0.2, 0.3), tangential_diag=(0.9, 1.1), offset_range=(2.0, 3.0)
        )
        counts.append(g.n)
        assert g.dim == 3
        assert np.all(np.linalg.norm(g.seeds, axis=1) <= r)
        assert np.all((g.diag[:, 0] >= 0.2) & (g.diag[:, 0] <= 0.3))
        assert np.all((g.diag[:, 1:] >= 0.9) & (g.diag[:, 1:] <= 1.1))
        assert np.all((g.offsets >= 2) & (g.offsets <= 3))
        # the radial marker acts along the seed's radial direction
        q = g.frames()
        u = g.seeds / np.linalg.norm(g.seeds, axis=1, keepdims=True)
        np.testing.assert_allclose(np.abs(np.einsum("nj,nj->n", q[:, 0, :], u)), 1.0, atol=1e-9)
    expected = mu * 4 / 3 * np.pi * r**3  # Poisson mean 1629, sd 40
    assert abs(np.mean(counts) - expected) < 4 * np.sqrt(expected / len(counts))
    with pytest.raises(ValueError):
        radial_teacher_gbpd(rng, radial_diag=(0.0, 0.1))


def test_teacher_cells_are_radially_elongated(rng):
    """Closed loop on the 3D truth: each cell's major axis points at the centre."""
    r = 40.0
    g = radial_teacher_gbpd(rng, radius_px=r)
    ax = np.arange(-r, r + 1)
    pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    pts = pts[np.linalg.norm(pts, axis=1) <= r]
    lab = hard_labels(g, pts)
    cosines, weights = [], []
    for i in np.unique(lab):
        p = pts[lab == i]
        c = p.mean(0)
        if len(p) < 30 or np.linalg.norm(c) < 0.4 * r:
            continue
        w, v = np.linalg.eigh(np.cov(p.T))
        cosines.append(abs(v[:, -1] @ c) / np.linalg.norm(c))
        weights.append(1 - np.sqrt(w[1] / w[2]))
    cosines = np.array(cosines)
    # isotropic 3D axes would give median |cos| = 0.5; radial cells ~1 (a few cells flattened by the
    # particle surface are tangential, hence the median)
    assert np.median(cosines) > 0.9, np.median(cosines)
    assert np.mean(cosines > 0.8) > 0.75
    assert np.median(weights) > 0.2


def test_plane_basis_orthonormal(rng):
    for n in [(0, 0, 1), (1, 0, 0), rng.normal(size=3)]:
        b = plane_basis(n)
        np.testing.assert_allclose(b @ b.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(b), 1.0, atol=1e-12)
        np.testing.assert_allclose(b[2], np.asarray(n) / np.linalg.norm(n), atol=1e-12)


def test_slice_labels_matches_bruteforce_and_disc(rng):
    r = 25.0
    g = radial_teacher_gbpd(rng, radius_px=r, intensity=0.004)
    h = 10.0
    s = slice_labels(g, h, r, normal=(0, 0, 1))
    size = s.labels.shape[0]
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - c) ** 2 + (yy - c) ** 2 + h * h <= r * r
    assert np.array_equal(s.mask, disc)
    pts = np.stack([xx - c, yy - c, np.full_like(xx, h)], -1).reshape(-1, 3).astype(float)
    ref = hard_labels_bruteforce(g, pts).reshape(size, size) + 1
    assert np.array_equal(s.labels[disc], ref[disc])
    assert np.all(s.labels[~disc] == 0)


def test_boundary_counts():
    lab = np.array([[1, 1, 2], [1, 3, 2], [0, 0, 0]])
    nb = boundary_counts(lab)
    assert nb[0, 0] == 2 and nb[1, 1] == 3 and nb[2, 0] == 2 and nb[0, 2] == 3


def test_synthetic_scan_channels(rng):
    from nmc_dataset.ebsd._orientation import euler_to_quat, misorientation_angle

    g = radial_teacher_gbpd(rng, radius_px=40.0)
    s = slice_labels(g, 0.0, 40.0)
    scan = synthetic_scan(s.labels, s.mask, rng, noise_deg=0.5)
    out = ~s.mask
    assert np.all(scan.ci[out] == -1) and np.all(scan.phase[out] == 0)
    np.testing.assert_allclose(scan.euler_rad[out], 4 * np.pi)
    assert np.all(scan.phase[s.mask] == 1)
    # good pixels carry their grain's orientation within the noise
    good = s.mask & ~scan.low_ci
    q = euler_to_quat(scan.euler_rad[good])
    dev = np.degrees(misorientation_angle(scan.grain_quat[s.labels[good]], q))
    assert 0.6 < np.median(dev) < 1.0 and dev.max() < 4.0  # Maxwell(0.5 deg): median 0.77 deg
    # low CI sits mostly at junctions and stays below the usual 0.1 threshold
    nb = boundary_counts(s.labels)
    low = scan.low_ci
    assert np.all(scan.ci[low] < 0.1) and np.all(scan.ci[good] >= 0.2)
    assert low[s.mask & (nb >= 3)].mean() > 0.3
    assert low[s.mask & (nb == 1)].mean() < 0.01
    # IQ darker at boundaries than inside grains
    assert np.median(scan.iq[s.mask & (nb >= 2)]) < np.median(scan.iq[s.mask & (nb == 1)])


def test_write_synthetic_sections(tmp_path, rng):
    recs = write_synthetic_sections(tmp_path, rng, n_central=1, n_off_center=1, radius_px=20.0, formats=("ang", "ctf"))
    assert [r["central"] for r in recs] == [True, False]
    assert (tmp_path / "synthetic_00.ang").is_file() and (tmp_path / "synthetic_01.ctf").is_file()
    truth = json.loads((tmp_path / "truth" / "truth.json").read_text())
    assert truth["format"] == "nmc-dataset/synthetic-ebsd-truth"
    assert abs(recs[0]["height_px"]) <= 0.05 * 20 and 0.5 * 20 <= abs(recs[1]["height_px"]) <= 0.75 * 20
