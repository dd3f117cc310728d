"""Tests of nmc_dataset.ebsd._detection: pixel classes, loss rates, the simulated loss, the
confident-pixel criterion, the simulated import and the calibration of the loss."""

import numpy as np
import pytest

from nmc_dataset.ebsd import _detection as Dt
from nmc_dataset.ebsd._reconstruct import reconstruct_grains
from nmc_dataset.errors import InputError
from nmc_dataset.io._ebsd import read_ebsd
from nmc_dataset.synthetic._ebsd import (
    INSTRUMENTS,
    boundary_counts,
    radial_teacher_gbpd,
    slice_labels,
    synthetic_scan,
    write_scan,
)
from nmc_dataset.testing import adjusted_rand_index


def _three_grains():
    """A 6 x 9 map: grains 1 | 2 side by side over grain 3 (known junction / boundary pixels)."""
    lab = np.zeros((6, 9), np.int64)
    lab[:3, :4] = 1
    lab[:3, 4:] = 2
    lab[3:, :] = 3
    return lab


def test_pixel_classes_on_a_hand_made_map():
    lab = _three_grains()
    cls = Dt.pixel_classes(lab)
    # the 3 x 3 windows holding 1, 2 and 3: rows 2-3, columns 3-4
    junction = np.zeros(lab.shape, bool)
    junction[2:4, 3:5] = True
    np.testing.assert_array_equal(cls == 2, junction)
    assert cls[0, 0] == 0 and cls[5, 8] == 0  # interior
    assert cls[0, 3] == 1 and cls[0, 4] == 1  # the 1 | 2 boundary away from grain 3
    assert cls[2, 0] == 1 and cls[3, 8] == 1  # the boundaries with grain 3
    # same classes as the synthetic instrument's neighbourhood counts
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 5, size=(20, 23))
    np.testing.assert_array_equal(Dt.pixel_classes(rand), np.clip(boundary_counts(rand) - 1, 0, 2))


def test_low_ci_rates_count_each_class():
    lab = _three_grains()
    mask = np.ones(lab.shape, bool)
    cls = Dt.pixel_classes(lab)
    conf = np.ones(lab.shape, bool)
    conf[cls == 2] = False  # every junction pixel
    b = np.argwhere(cls == 1)
    conf[tuple(b[:3].T)] = False  # 3 boundary pixels
    conf[5, 0] = False  # one interior pixel
    j, bd, i = Dt.low_ci_rates([(lab, mask, conf)])
    assert j == 1.0
    assert bd == pytest.approx(3 / (cls == 1).sum())
    assert i == pytest.approx(1 / (cls == 0).sum())
    # no confident map: nothing lost; pooled over two sections
    assert Dt.low_ci_rates([(lab, mask, None)]) == (0.0, 0.0, 0.0)
    assert Dt.low_ci_rates([(lab, mask, conf), (lab, mask, None)])[0] == pytest.approx(0.5)


def test_simulated_loss_draws_nothing_without_loss_and_follows_the_rates():
    rng = np.random.default_rng(5)
    truth = slice_labels(radial_teacher_gbpd(rng, radius_px=40.0, margin_px=16.0), 0.0, 40.0)
    lab, mask = truth.labels, truth.mask
    r = np.random.default_rng(1)
    state = r.bit_generator.state
    np.testing.assert_array_equal(Dt.simulate_confident(lab, mask, (0, 0, 0), r), mask)
    assert r.bit_generator.state == state  # no random number drawn: the ideal path is unchanged
    cls = Dt.pixel_classes(lab)
    conf = Dt.simulate_confident(lab, mask, (1.0, 0.0, 0.0), r)
    np.testing.assert_array_equal(~conf & mask, (cls == 2) & mask)
    # measured rates of a simulated loss are the rates (binomial noise)
    rates = (0.5, 0.2, 0.05)
    got = Dt.low_ci_rates([(lab, mask, Dt.simulate_confident(lab, mask, rates, r)) for _ in range(10)])
    for g, want, cl in zip(got, rates, (2, 1, 0)):
        n = 10 * ((cls == cl) & mask).sum()
        assert abs(g - want) < 4 * np.sqrt(want * (1 - want) / n)


def test_detected_counts_confident_pixels():
    lab = _three_grains()
    conf = np.zeros(lab.shape, bool)
    conf[0, 0:2] = True  # grain 1: 2 confident pixels
    conf[0, 5:8] = True  # grain 2: 3
    conf[4:, :] = True  # grain 3: 18
    assert Dt.detected(lab, conf, 3).tolist() == [2, 3]
    assert Dt.detected(lab, conf, 2).tolist() == [1, 2, 3]
    assert Dt.detected(lab, conf, 19).tolist() == []
    assert Dt.detected(lab, None, 5).tolist() == [1, 2, 3]
    assert Dt.confident_counts(lab, conf).tolist() == [0, 2, 3, 18]


@pytest.mark.parametrize("bad", [-1, 1.5, "x", None, Dt.MAX_MIN_CONFIDENT_PX + 1])
def test_min_confident_px_out_of_range_is_an_input_error(bad):
    with pytest.raises(InputError, match="--min-confident-px must be an integer"):
        Dt.check_min_confident_px(bad)
    assert Dt.check_min_confident_px(3) == 3 and Dt.check_min_confident_px(0) == 0


def test_detection_limit_inactive_without_loss():
    lim = Dt.DetectionLimit((0.0, 0.0, 0.0), 3)
    assert not lim.active and lim.confident(np.ones((3, 3), int), np.ones((3, 3), bool), None) is None
    assert not Dt.DetectionLimit((0.5, 0.0, 0.0), 0).active
    assert Dt.DetectionLimit((0.5, 0.0, 0.0), 3).to_dict()["low_ci_rates"]["junction"] == 0.5


def _scan_of(truth, instrument, seed):
    p = INSTRUMENTS[instrument]
    j, b, r = p["low_ci"]
    s = synthetic_scan(
        truth.labels,
        truth.mask,
        np.random.default_rng(seed),
        noise_deg=p["noise_deg"],
        junction_low_ci=j,
        boundary_low_ci=b,
        random_low_ci=r,
        misindex_fraction=p["misindex_fraction"],
    )
    return s


@pytest.mark.parametrize("instrument", ["default", "harsh"])
def test_simulated_import_is_the_import_on_known_truth(instrument, tmp_path):
    """complete_as_imported(truth, confident) gives the map import-ebsd --fill shape makes of the scan."""
    rng = np.random.default_rng(21)
    truth = slice_labels(radial_teacher_gbpd(rng, radius_px=40.0, margin_px=16.0), 0.0, 40.0)
    s = _scan_of(truth, instrument, 3)
    path = write_scan(tmp_path / "s.ang", s, 0.05)
    scan = read_ebsd(path)
    gm = reconstruct_grains(scan, min_grain_px=5, fill="shape")
    conf = scan.indexed & (scan.ci >= 0.1) & gm.mask
    sim = Dt.complete_as_imported(truth.labels, gm.mask, conf, min_grain_px=5)
    assert adjusted_rand_index(sim[gm.mask], gm.labels[gm.mask]) > 0.995


def test_calibrated_rates_recover_the_instrument():
    """Rates measured on completed maps are biased (junctions move); calibrated on other sections
    of the same grain model they come back to the instrument's."""
    rng = np.random.default_rng(8)
    secs = [slice_labels(radial_teacher_gbpd(rng, radius_px=40.0, margin_px=16.0), 0.0, 40.0) for _ in range(5)]
    true_rates = INSTRUMENTS["harsh"]["low_ci"]
    data = []
    for t in secs[:3]:
        conf = Dt.simulate_confident(t.labels, t.mask, true_rates, rng)
        data.append((Dt.complete_as_imported(t.labels, t.mask, conf), t.mask, conf))
    measured = Dt.low_ci_rates(data)
    assert measured[0] < 0.85 and measured[1] > 0.05  # the completed map's junctions are not the truth's
    got = Dt.calibrate_rates(measured, [(t.labels, t.mask) for t in secs[3:]], np.random.default_rng(0), 4)
    assert abs(got[0] - 1.0) < 0.08 and abs(got[1] - 0.01) < 0.03 and abs(got[2] - 0.01) < 0.01
    assert Dt.calibrate_rates((0, 0, 0), [(t.labels, t.mask) for t in secs[3:]], None) == (0.0, 0.0, 0.0)


@pytest.mark.slow
def test_closed_loop_harsh_scans_match_the_truth_at_the_limit(tmp_path):
    """Harsh scans of the radial teacher, imported with --fill shape: far from the teacher on η, α
    and chords against the raw truth, within the sampling noise's range once the limit is applied
    to the teacher too (calibrated on it, never the imported data)."""
    from nmc_dataset.calibration import _descriptors as De
    from nmc_dataset.cli._main import main
    from nmc_dataset.compare import distribution_distances
    from nmc_dataset.io._sections import read_sections
    from nmc_dataset.synthetic._yardsticks import teacher_sampler

    radius, n = 50.0, 4
    scans = tmp_path / "scans"
    argv = ["phantom-ebsd", "--out", str(scans), "--n-central", str(n), "--n-off-center", "0"]
    assert main([*argv, "--radius-px", str(radius), "--formats", "ang", "--seed", "0", "--instrument", "harsh"]) == 0
    out = tmp_path / "sections"
    assert (
        main(["import-ebsd", *sorted(str(p) for p in scans.glob("*.ang")), "--out", str(out), "--central", "all"]) == 0
    )
    secs = read_sections(out)
    data_rates = Dt.low_ci_rates((s.labels, s.mask, s.confident) for s in secs)
    rng = np.random.default_rng(1)
    samples = [De.model_sections(teacher_sampler(radius), rng, n, radius) for _ in range(6)]
    limit = De.detection_limit(data_rates, samples[0], np.random.default_rng(2))
    assert limit.active and limit.rates[0] > 0.9

    def ratios(lim):
        r = np.random.default_rng(3)
        pooled = [
            De.pooled(
                De.section_descriptors(lab, c, 5) if lim is None else De.limited_section_descriptors(lab, c, lim, r, 5)
                for lab, c in s
            )
            for s in samples
        ]
        ref, other = pooled[:3], pooled[3:]
        data = De.pooled(
            De.section_descriptors(
                s.labels, s.center_px, 5, s.confident if lim else None, lim.min_confident_px if lim else 0
            )
            for s in secs
        )
        out = {}
        for k in De.DESCRIPTORS_2D:
            noise = np.mean([distribution_distances(a[k], b[k])["wasserstein1"] for a, b in zip(ref, other)])
            out[k] = np.mean([distribution_distances(a[k], data[k])["wasserstein1"] for a in ref]) / noise
        return out

    raw, at_limit = ratios(None), ratios(limit)
    assert max(raw.values()) > 2.5  # 3.4 (η) when written
    assert max(at_limit.values()) < 1.6, at_limit  # 1.2 (chords) when written
