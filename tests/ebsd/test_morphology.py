"""Tests of nmc_dataset.ebsd._morphology: descriptors, chords, alpha density, centrality.

The formulas are those of docs/method.md#section-morphology.
"""

import numpy as np
import pytest

from nmc_dataset.ebsd._morphology import (
    CENTRALITY_THRESHOLD,
    alpha_kde,
    centrality_score,
    chord_arrow_table,
    chord_lengths,
    chord_table,
    grain_descriptors,
    grain_table,
    is_central,
    section_centrality,
)


def _descriptors_slow(labels, center):
    """Plain per-grain loop: np.cov of pixel centres + I/12, np.linalg.eigh, the formulas of the method."""
    out = {}
    for lab in np.unique(labels[labels > 0]):
        yy, xx = np.nonzero(labels == lab)
        pts = np.stack([xx, yy], 1).astype(float)
        cov = np.cov(pts.T, bias=True) if len(pts) > 1 else np.zeros((2, 2))
        cov = cov + np.eye(2) / 12
        evals, evecs = np.linalg.eigh(cov)
        e2, e1 = evals
        v1 = evecs[:, 1]
        c = pts.mean(0) - center
        alpha = np.arccos(min(abs(v1 @ c) / np.linalg.norm(c), 1.0)) if np.linalg.norm(c) > 0 else np.nan
        out[lab] = dict(area=len(pts), cx=c[0], cy=c[1], e1=e1, e2=e2, eta=1 - np.sqrt(e2 / e1), alpha=alpha)
    return out


def _random_labels(rng, shape=(60, 70), n=25):
    from scipy.spatial import cKDTree

    seeds = rng.uniform(0, shape[1], size=(n, 2)) * [1, shape[0] / shape[1]]
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    # anisotropic Voronoi-like cells plus unassigned holes
    _, lab = cKDTree(seeds * [1.0, 2.0]).query(np.stack([xx.ravel(), 2.0 * yy.ravel()], 1))
    lab = (lab + 1).reshape(shape)
    lab[rng.uniform(size=shape) < 0.05] = 0
    return lab * 7  # non-consecutive label values


def test_descriptors_match_plain_loop(rng):
    for _ in range(3):
        lab = _random_labels(rng)
        center = rng.uniform(10, 50, size=2)
        d = grain_descriptors(lab, center)
        slow = _descriptors_slow(lab, center)
        assert list(d["label"]) == sorted(slow)
        for k, lab_id in enumerate(d["label"]):
            s = slow[lab_id]
            assert d["area_px"][k] == s["area"]
            np.testing.assert_allclose([d["centroid_x_px"][k], d["centroid_y_px"][k]], [s["cx"], s["cy"]], atol=1e-9)
            np.testing.assert_allclose([d["eig1_px2"][k], d["eig2_px2"][k]], [s["e1"], s["e2"]], atol=1e-9)
            np.testing.assert_allclose(d["elongation"][k], s["eta"], atol=1e-9)
            if s["e1"] - s["e2"] > 1e-6:  # the axis is defined
                np.testing.assert_allclose(d["alpha_rad"][k], s["alpha"], atol=1e-7)


@pytest.mark.parametrize("a,b", [(9, 3), (12, 2), (5, 5), (1, 1), (7, 1)])
def test_rectangle_elongation_is_exact(a, b):
    # pixels as unit squares: an a x b rectangle has e1/e2 = a^2/b^2 exactly, so eta = 1 - b/a
    lab = np.zeros((40, 40), int)
    lab[5 : 5 + b, 3 : 3 + a] = 1
    d = grain_descriptors(lab, (30.0, 30.0))
    np.testing.assert_allclose(d["elongation"][0], 1 - b / a, atol=1e-12)


def test_alpha_radial_and_tangential_grains():
    size = 101
    c = 50.0
    yy, xx = np.mgrid[0:size, 0:size]
    lab = np.zeros((size, size), int)
    # a radial ellipse at 45 degrees from the centre, a tangential one on the x axis
    for k, (px, py, ang) in enumerate([(80, 80, np.pi / 4), (85, 50, np.pi / 2)], start=1):
        u = (xx - px) * np.cos(ang) + (yy - py) * np.sin(ang)
        v = -(xx - px) * np.sin(ang) + (yy - py) * np.cos(ang)
        lab[(u / 12) ** 2 + (v / 4) ** 2 <= 1] = k
    d = grain_descriptors(lab, (c, c))
    assert d["alpha_rad"][0] < np.radians(1)  # points at the centre
    assert d["alpha_rad"][1] > np.radians(89)  # perpendicular to the radius
    assert 0.55 < d["elongation"][0] < 0.75  # axes 12:4 -> 1 - 1/3, up to pixelisation


def test_grain_table_columns_units_and_orientation():
    from nmc_dataset.ebsd._orientation import euler_to_quat

    lab = np.zeros((5, 9), int)
    lab[2, 5:8] = 3
    lab[0, 0] = 1
    q = np.full((4, 4), np.nan)
    e = np.array([0.3, 0.8, 1.9])
    q[3] = euler_to_quat(e)
    t = grain_table(lab, (4, 2), pixel_size_um=0.05, mean_orientation=q)
    assert t.schema.metadata[b"format"] == b"nmc-dataset/grain-table"
    df = t.to_pandas()
    assert list(df["label"]) == [1, 3]
    np.testing.assert_allclose(df["area_um2"], df["area_px"] * 0.0025)
    row = df[df.label == 3].iloc[0]
    np.testing.assert_allclose(np.radians([row.phi1_deg, row.Phi_deg, row.phi2_deg]), e, atol=1e-9)
    assert np.isnan(df[df.label == 1].iloc[0].q_w)


def _chords_slow(labels, drop_border=False):
    out = []
    for direction, arr in ((0, labels), (1, labels.T)):
        for row in arr:
            j = 0
            while j < len(row):
                k = j
                while k + 1 < len(row) and row[k + 1] == row[j]:
                    k += 1
                if row[j] > 0 and not (drop_border and (j == 0 or k == len(row) - 1)):
                    out.append((row[j], direction, k - j + 1))
                j = k + 1
    return out


@pytest.mark.parametrize("drop_border", [False, True])
def test_chords_match_plain_loop(rng, drop_border):
    for _ in range(3):
        lab = _random_labels(rng, shape=(23, 31), n=12)
        t = chord_table(lab, drop_border=drop_border)
        fast = list(zip(t["label"].tolist(), t["direction"].tolist(), t["length_px"].tolist()))
        assert fast == _chords_slow(lab, drop_border)


def test_chord_lengths_of_a_rectangle_and_arrow_table():
    lab = np.zeros((10, 10), int)
    lab[2:5, 1:8] = 4  # 3 rows of 7, 7 columns of 3
    assert sorted(chord_lengths(lab).tolist()) == [3] * 7 + [7] * 3
    t = chord_arrow_table(lab, pixel_size_um=0.05)
    assert t.schema.metadata[b"border_chords"] == b"kept"
    np.testing.assert_allclose(t.column("length_um").to_numpy(), t.column("length_px").to_numpy() * 0.05)


def test_alpha_kde_normalised_and_reflecting(rng):
    a = rng.uniform(0, np.pi / 2, size=2000)
    g, f = alpha_kde(a)
    np.testing.assert_allclose(np.trapezoid(f, g), 1.0, atol=1e-3)
    # a flat sample: no boundary dip (an unreflected kernel estimate would halve the density at 0)
    assert abs(f[0] - 2 / np.pi) < 0.12 and abs(f[-1] - 2 / np.pi) < 0.12
    # a radial sample: mass near 0
    g, f = alpha_kde(np.abs(rng.normal(0, 0.15, size=500)))
    assert f[0] > 3 * f[len(f) // 2]
    np.testing.assert_allclose(np.trapezoid(f, g), 1.0, atol=1e-3)


def test_centrality_score_limits(rng):
    assert centrality_score(np.zeros(10)) == pytest.approx(1.0)
    assert centrality_score(np.full(10, np.pi / 2)) == pytest.approx(-1.0)
    assert abs(centrality_score(rng.uniform(0, np.pi / 2, 20000))) < 0.02
    assert np.isnan(centrality_score([np.nan]))
    assert not is_central(float("nan"))


def _slice_scores(rng, n_particles, radius, fracs):
    from nmc_dataset.synthetic._ebsd import radial_teacher_gbpd, slice_labels

    scores = {f: [] for f in fracs}
    for _ in range(n_particles):
        g = radial_teacher_gbpd(rng, radius_px=radius)
        normal = rng.normal(size=3)
        for f in fracs:
            s = slice_labels(g, f * radius, radius, normal=normal)
            scores[f].append(section_centrality(s.labels, s.center_px))
    return scores


def test_centrality_separates_central_from_off_centre_slices(rng):
    # central = |h| <= 0.1 R, off-centre = |h| >= 0.5 R (the definition the threshold was picked on)
    scores = _slice_scores(rng, 2, 45.0, [0.0, 0.1, 0.5, 0.7])
    for f in (0.0, 0.1):
        assert all(is_central(s) for s in scores[f]), scores
    for f in (0.5, 0.7):
        assert not any(is_central(s) for s in scores[f]), scores


@pytest.mark.slow
def test_centrality_threshold_margin_on_many_particles():
    rng = np.random.default_rng(2024)
    scores = _slice_scores(rng, 10, 100.0, [0.0, 0.1, 0.5, 0.6])
    central = scores[0.0] + scores[0.1]
    off = scores[0.5] + scores[0.6]
    # a margin of 0.05 on each side of the threshold over 40 slices
    assert min(central) > CENTRALITY_THRESHOLD + 0.05
    assert max(off) < CENTRALITY_THRESHOLD - 0.05
