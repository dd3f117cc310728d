"""fit-orientations: closed loops through the user's path (phantom-ebsd -> import-ebsd -> fit-orientations)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from nmc_dataset.cli import _main as cli
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._orientations import fibre_symmetry_check, fit_orientations, section_radial_vectors


def _loop(tmp_path, texture, n_central=3, radius_px=45, seed=1, extra=()):
    scans, sections, model = tmp_path / "scans", tmp_path / "sections", tmp_path / "grain_model"
    assert (
        cli.main(
            [
                "phantom-ebsd",
                "--out",
                str(scans),
                "--n-central",
                str(n_central),
                "--n-off-center",
                "0",
                "--radius-px",
                str(radius_px),
                "--low-ci",
                "0,0,0",
                f"--texture={texture}",
                "--seed",
                str(seed),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            ["import-ebsd", *sorted(str(p) for p in scans.glob("*.ang")), "--out", str(sections), "--central", "all"]
        )
        == 0
    )
    assert cli.main(["fit-orientations", str(sections), "--out", str(model), *extra]) == 0
    truth = json.loads((scans / "truth" / "truth.json").read_text())
    return json.loads((model / "orientation_model.json").read_text()), truth


def test_known_radial_texture_is_recovered_within_the_sampling_noise(tmp_path):
    meta, truth = _loop(tmp_path, "-8,0")
    assert truth["texture"]["kappa"] == -8.0 and truth["texture"]["lambda"] == 0.0
    fit = meta["fit"]
    assert fit["n"] > 150 and fit["n_sections"] == 3
    assert fit["textured"] and fit["p_value_no_texture"] < 1e-10
    # the 2D radial direction (centroid in the plane) blurs the 3D one a little: a few % bias in kappa
    assert abs(fit["kappa"] - (-8.0)) < 3 * fit["kappa_se"], fit
    assert abs(fit["lambda"]) < 3 * fit["lambda_se"], fit
    assert abs(fit["fibre_symmetry_check"]["z"]) < 4
    assert meta["kappa"] == fit["kappa"] and meta["format"] == "nmc-dataset/orientation-model"


def test_random_orientations_give_no_texture(tmp_path):
    meta, truth = _loop(tmp_path, "random", seed=2)
    assert truth["texture"] is None
    assert not meta["fit"]["textured"] and meta["fit"]["p_value_no_texture"] > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("texture,kappa,lam", [("default", -8.0, 0.0), ("-12,3", -12.0, 3.0), ("4,0", 4.0, 0.0)])
def test_closed_loop_full_size(tmp_path, texture, kappa, lam):
    """Eight central sections of R = 60 px particles: the fit lands within 3 standard errors."""
    meta, _ = _loop(tmp_path, texture, n_central=8, radius_px=60, seed=5)
    fit = meta["fit"]
    assert abs(fit["kappa"] - kappa) < 3 * fit["kappa_se"], fit
    assert abs(fit["lambda"] - lam) < 3 * fit["lambda_se"], fit


def test_sample_frame_options_rotate_the_radial_directions():
    q = np.array([[1.0, 0.0, 0.0, 0.0]] * 2)
    t = pa.table(
        {
            "centroid_x_px": [10.0, 0.0],
            "centroid_y_px": [0.0, 10.0],
            "q_w": q[:, 0],
            "q_x": q[:, 1],
            "q_y": q[:, 2],
            "q_z": q[:, 3],
        }
    )
    v, _, e, rho = section_radial_vectors(t, 20.0, 0.1)
    np.testing.assert_allclose(rho, [10.0, 10.0])
    np.testing.assert_allclose(e, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(v, e, atol=1e-12)  # identity orientation: crystal = sample frame
    _, _, e_up, _ = section_radial_vectors(t, 20.0, 0.1, sample_frame="y-up")
    np.testing.assert_allclose(e_up, [[1, 0, 0], [0, -1, 0]], atol=1e-12)
    _, _, e_rot, _ = section_radial_vectors(t, 20.0, 0.1, frame_rotation_deg=90.0)
    np.testing.assert_allclose(e_rot, [[0, -1, 0], [1, 0, 0]], atol=1e-12)
    # the centre grain is skipped
    v_far, _, _, _ = section_radial_vectors(t, 20.0, 0.6)
    assert len(v_far) == 0
    # c-axes all near the section normal: not fibre-symmetric about the in-plane radial direction
    c_n = np.tile([0.0, 0.0, 1.0], (50, 1)) + np.random.default_rng(0).normal(scale=0.2, size=(50, 3))
    c_n /= np.linalg.norm(c_n, axis=1, keepdims=True)
    assert fibre_symmetry_check(c_n, np.tile([1.0, 0.0, 0.0], (50, 1)))["z"] < -4


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    not_model = tmp_path / "notes.json"
    not_model.write_text('{"mine": 1}')
    (tmp_path / "empty").mkdir()
    assert cli.main(["fit-orientations", str(tmp_path / "empty"), "--out", str(tmp_path / "o.json")]) == 2
    assert "no sections found" in capsys.readouterr().err
    with pytest.raises(InputError, match="not an orientation model"):
        fit_orientations(tmp_path / "empty", not_model)
    assert json.loads(not_model.read_text()) == {"mine": 1}
    assert (
        cli.main(["fit-orientations", str(tmp_path), "--out", str(tmp_path / "o.json"), "--min-radius-frac", "1.5"])
        == 2
    )
    assert "--min-radius-frac" in capsys.readouterr().err
    assert cli.main(["phantom-ebsd", "--out", str(tmp_path / "s"), "--texture", "strong"]) == 2
    assert "--texture" in capsys.readouterr().err
