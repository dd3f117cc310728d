"""Cycling sequences: pull-back twins, protocol validation, zero and affine protocols, per-grain lattice
strain against the crystal orientations, cracks on grain interfaces, and the command-line contract."""

import json

import h5py
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from nmc_dataset import testing
from nmc_dataset.cli import _main as cli
from nmc_dataset.errors import InputError
from nmc_dataset.tomography import _evolve as ev
from nmc_dataset.tomography._volumes import read_table, read_volumes

H = 0.05
BOX = 3.2


@pytest.fixture(scope="module")
def electrode(oriented_electrode):
    return oriented_electrode


def _sequence(path, protocol, steps=3, seed=1):
    arrays, meta = read_volumes(path, ("phase", "particle", "grain"))
    return ev.Sequence(
        arrays,
        read_table(path, "particles"),
        read_table(path, "grains"),
        voxel_size_um=H,
        periodic=True,
        protocol=ev.validate_protocol(protocol),
        steps=steps,
        seed=seed,
    )


ZERO = {
    "soc": {"min": 0.0, "max": 0.0},
    "cracks": {"nuclei_per_cycle": 0},
    "compaction": {"strain": {}, "random_vox": 0.0},
    "rigid": {"translation_vox": 0, "rotation_deg": 0},
}


def test_pack_writes_one_orientation_per_grain(electrode):
    g = read_table(electrode, "grains")
    p = read_table(electrode, "particles")
    assert len(g["id"]) == int(p["n_grains"].sum()) and np.array_equal(g["id"], np.arange(1, len(g["id"]) + 1))
    assert np.allclose(np.linalg.norm(g["orientation_wxyz"], axis=1), 1.0)
    # every grain's particle column matches the particle that holds its voxels
    arrays, _ = read_volumes(electrode, ("particle", "grain"))
    m = arrays["grain"] > 0
    assert np.array_equal(g["particle"][arrays["grain"][m].astype(np.int64) - 1], arrays["particle"][m])


@pytest.mark.parametrize("periodic", [True, False])
def test_pull_back_matches_its_slow_twin(periodic):
    rng = np.random.default_rng(4)
    n = 12
    v = (ndimage.gaussian_filter(rng.normal(size=(n, n, n, 3)), (2, 2, 2, 0), mode="wrap") * 4).astype(np.float32)
    G = rng.normal(0, 0.02, (3, 3))
    a = ev.pull_back(v, G, [5.5] * 3, periodic, n_iter=12)
    b = testing.pull_back_reference(v, G, [5.5] * 3, periodic, n_iter=12)
    assert np.abs(a - b).max() < 1e-9
    # and it inverts the map: X + u(X) = y
    X = np.moveaxis(a, -1, 0).reshape(3, -1)
    mode = "grid-wrap" if periodic else "nearest"
    u = np.stack([ndimage.map_coordinates(v[..., k].astype(float), X, order=1, mode=mode) for k in range(3)])
    u += G @ (X - 5.5)
    assert np.abs(X + u - np.indices((n, n, n)).reshape(3, -1)).max() < 1e-6


def test_volume_ratio_matches_its_slow_twin():
    """The per-voxel det(I + ∇u) behind ``nmc_material_volume_change`` against numpy's det of the Jacobian."""
    rng = np.random.default_rng(0)
    u = ndimage.gaussian_filter(rng.normal(0, 1.0, (14, 15, 16, 3)), (1.5, 1.5, 1.5, 0)).astype(np.float32)
    flat = rng.choice(u[..., 0].size, 500, replace=False)
    J = np.stack([np.stack(np.gradient(u[..., a].astype(np.float64), axis=(0, 1, 2)), -1) for a in range(3)], -2)
    want = np.linalg.det(J.reshape(-1, 3, 3)[flat] + np.eye(3))
    assert np.abs(ev._volume_ratio(u, flat) - want).max() < 1e-6


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"crack": {}}, "unknown key 'crack'"),
        ({"cracks": {"width": 1}}, "unknown key cracks.width"),
        ({"cracks": {"width_vox": -1}}, "cracks.width_vox: must be >= 0"),
        ({"lattice": {"scale": 10}}, "beyond ±15%"),
        ({"compaction": {"strain": {"zz": -0.2}}}, "beyond ±15%"),
        ({"soc": {"min": 0.5, "max": 0.2}}, "above soc.max"),
        ({"rigid": {"translation_vox": "a"}}, "must be a number"),
        ({"rigid": {"rotation_deg": 20}}, "rigid.rotation_deg: must be <= 10"),
        ({"compaction": {"random_vox": "1e3"}}, "write it as 1.0e+03"),
        ({"compaction": {"random_vox": 0.2, "random_length_um": 0}}, "random_length_um: must be > 0"),
        ({"lattice": {"junction_vox": -1}}, "junction_vox: must be >= 0"),
        ({"lattice": {"table": {"x": [0, "a"], "a": [2.8, 2.7], "c": [14, 14]}}}, "lists of numbers"),
        ({"lattice": {"table": {"x": [0, 1], "a": [2.8, -2.7], "c": [14, 14]}}}, "positive a, c"),
        ({"lattice": {"table": {"x": [0, 1], "a": [2.8, 2.8], "c": [14, 11]}}}, "beyond ±15%"),
        ({"soc": {"max": 0.95}}, "soc.max: must be <= 0.85"),
        ({"soc": 0.5}, "soc must be a mapping"),
        ({"format": "other"}, "format must be"),
    ],
)
def test_bad_protocols_are_one_line_errors(raw, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace("+", r"\+")) as e:
        ev.validate_protocol(raw)
    assert "\n" not in str(e.value)


def test_builtin_lattice_table_keeps_the_literature_landmarks():
    """The built-in NMC811 table against values stated in the literature (docs/method.md#literature-values)."""
    t = ev.NMC811_LATTICE
    x, a, c = (np.asarray(t[k]) for k in "xac")
    at = dict(zip(x.round(3).tolist(), range(len(x))))
    # pristine cell: within 0.4 % of the cell that indexes the EBSD of NMC811 (a = 2.875, c = 14.248 Å)
    assert abs(a[0] / 2.875 - 1) < 0.004 and abs(c[0] / 14.248 - 1) < 0.004
    # c peaks where Ni-rich NMC starts to collapse, below 40 % Li in the layers (x = 0.6) ...
    assert abs(x[np.argmax(c)] - 0.6) < 0.05 + 1e-12
    # ... and has shrunk by about 5 % (4-6 %) from its maximum at 80 mol% Li removal
    assert -0.06 < c[at[0.8]] / c.max() - 1 < -0.04
    # a shrinks monotonically up to x = 0.75
    assert np.all(np.diff(a[x <= 0.75]) < 0)
    # unit-cell volume change at x = 0.8: of the order of the 7.8 % quoted for NMC811 (6-9 %)
    v = a**2 * c / (a[0] ** 2 * c[0]) - 1
    assert -0.09 < v[at[0.8]] < -0.06
    # and the strains the model imposes are those of the table
    ea, ec = ev.lattice_strain(ev.validate_protocol(None)["lattice"], 0.8, 0.0)
    assert np.isclose(ea, a[at[0.8]] / a[0] - 1) and np.isclose(ec, c[at[0.8]] / c[0] - 1)


def test_a_random_field_steeper_than_the_strain_limit_is_refused(electrode):
    # 0.5 voxel rms over a correlation length of one voxel: gradients ~1, beyond ±15 %
    with pytest.raises(InputError, match="random field .* beyond ±15%") as e:
        _sequence(electrode, dict(ZERO, compaction={"random_vox": 0.5, "random_length_um": H}))
    assert "\n" not in str(e.value)


def test_zero_protocol_gives_identical_states(electrode):
    s = _sequence(electrode, ZERO, steps=3)
    arrays, _ = read_volumes(electrode, ("phase", "particle", "grain"))
    for t in range(3):
        st = s.state(t)
        for k in ("phase", "particle", "grain"):
            assert np.array_equal(st[k], arrays[k])
        assert not st["crack"].any()
        assert np.array_equal(st["displacement"], np.zeros_like(st["displacement"]))
        assert not st["strain"].any()
        assert np.array_equal(st["nmc_fraction"], (arrays["phase"] == 1).astype(np.float32))
        sm = st["summary"]
        assert sm["nmc_material_volume_change"] == sm["nmc_volume_change"] == sm["crack_area_um2"] == 0


def test_pure_affine_protocol_exports_exactly_the_affine_map(electrode):
    strain = {"zz": -0.03, "yy": 0.01, "xy": 0.005}
    s = _sequence(electrode, dict(ZERO, compaction={"strain": strain, "random_vox": 0.0}), steps=3)
    st = s.state(2)  # the last state: the full strain
    G = np.array([[-0.03, 0, 0], [0, 0.01, 0.005], [0, 0.005, 0]])
    X = np.indices(st["phase"].shape).astype(np.float64)
    c = (np.array(st["phase"].shape) - 1) / 2
    want = np.einsum("ab,b...->...a", G, X - c[:, None, None, None])
    assert np.abs(st["displacement"] - want).max() < 1e-5
    strain_field = st["strain"][5:-5, 5:-5, 5:-5]
    assert np.allclose(strain_field[..., 0], -0.03, atol=1e-5) and np.allclose(strain_field[..., 5], 0.005, atol=1e-5)
    # the NMC's volume changes by det(I + G) (the label count in a periodic box does not say so: the box
    # is refilled by the compacted periodic images)
    assert abs(st["summary"]["nmc_material_volume_change"] - (np.linalg.det(np.eye(3) + G) - 1)) < 1e-6
    # the deformed labels are the reference labels carried by the map: a particle's centroid (interior
    # particles, no wrap) moves by G (x - c)
    p0, p1 = s.particle, st["particle"]
    for k in np.unique(p0[p0 > 0]):
        a, b = np.argwhere(p0 == k), np.argwhere(p1 == k)
        if a.min() < 3 or a.max() > 60 or len(b) == 0:
            continue
        ca = a.mean(0)
        assert np.allclose(b.mean(0), ca + G @ (ca - c), atol=0.05)


def test_grain_volume_change_matches_the_lattice_strain(electrode):
    """Lattice only: the displacement gradient fitted in each grain's interior has det = (a/a₀)²(c/c₀) and
    stretches most/least along the grain's crystal c-axis (from the quaternions, independently rotated)."""
    s = _sequence(
        electrode, dict(ZERO, cycles=0.5, soc={"min": 0.0, "max": 0.6}, lattice={"junction_vox": 1.0}), steps=2
    )  # state 1: half a cycle, fully charged to x = 0.6
    st = s.state(1)
    t = ev.NMC811_LATTICE
    a_r = np.interp(0.6, t["x"], t["a"]) / t["a"][0]
    c_r = np.interp(0.6, t["x"], t["c"]) / t["c"][0]
    want_det = a_r**2 * c_r
    grains = read_table(electrode, "grains")
    arrays, _ = read_volumes(electrode, ("grain",))
    u = st["displacement"]
    checked = 0
    for g in np.argsort(-np.bincount(arrays["grain"].ravel())[1:])[:40] + 1:
        inner = ndimage.binary_erosion(arrays["grain"] == g, iterations=3)  # beyond the junction layer (3σ)
        if (
            inner.sum() < 30
            or np.argwhere(arrays["grain"] == g).min() == 0
            or np.argwhere(arrays["grain"] == g).max() == arrays["grain"].shape[0] - 1
        ):
            continue  # small, or wrapped across the periodic faces
        X = np.argwhere(inner).astype(float)
        A = np.c_[X, np.ones(len(X))]
        coef = np.linalg.lstsq(A, u[inner].astype(float), rcond=None)[0]  # u ≈ X @ grad.T + b
        F = np.eye(3) + coef[:3].T
        # rigid parts are zero here: F is the stretch itself
        assert abs(np.linalg.det(F) - want_det) < 2e-3
        c_xyz = Rotation.from_quat(grains["orientation_wxyz"][g - 1], scalar_first=True).apply([0, 0, 1.0])
        c_zyx = c_xyz[::-1]
        assert abs(c_zyx @ F @ c_zyx - c_r) < 2e-3
        checked += 1
    assert checked >= 5
    # the NMC as a whole: the mean det F_g - 1, up to the junction layers
    sm = st["summary"]
    assert abs(sm["mean_grain_volume_change"] - (want_det - 1)) < 2e-3
    assert abs(sm["nmc_material_volume_change"] - sm["mean_grain_volume_change"]) < 2e-3


def test_cracks_lie_on_grain_interfaces_and_grow(electrode):
    s = _sequence(electrode, {"cycles": 2.0, "cracks": {"nuclei_per_cycle": 2.0, "width_vox": 2.0}}, steps=5)
    arrays, _ = read_volumes(electrode, ("grain", "particle"))
    grain = arrays["grain"]
    prev = None
    for t in range(5):
        crack, summary = s.crack_at(t)
        if t == 0:
            assert not crack.any()
        if prev is not None:
            assert np.all(crack[prev > 0] == prev[prev > 0])  # cracks never heal or change id
        prev = crack
    assert crack.any() and len(np.unique(crack[crack > 0])) == len(summary) >= 2
    # every crack voxel lies within half the width (+ half a voxel) of a voxel of another grain of its particle
    reach = 0.5 + 0.5 * s.protocol["cracks"]["width_vox"]
    for c in summary:
        vox = np.argwhere(crack == c["id"])
        own = grain[tuple(vox.T)]
        assert set(own.tolist()) <= set(c["grains"])
        for g in set(own.tolist()):
            others = np.isin(grain, [h for h in c["grains"] if h != g])
            d = ndimage.distance_transform_edt(~np.pad(others, 4, mode="wrap"))[4:-4, 4:-4, 4:-4]
            assert d[tuple(vox[own == g].T)].max() <= reach + 1e-9
        assert len({int(arrays["particle"][tuple(v)]) for v in vox}) == 1


def test_cli_sequence_render_and_refusals(electrode, model_paths, tmp_path):
    seq = tmp_path / "seq"
    proto = tmp_path / "p.yaml"
    proto.write_text("cycles: 1.0\nrigid: {translation_vox: 0.3}\n")
    assert (
        cli.main(["evolve", str(electrode), "--protocol", str(proto), "--steps", "3", "--seed", "3", "--out", str(seq)])
        == 0
    )
    man = json.loads((seq / "sequence.json").read_text())
    again = tmp_path / "again"  # same inputs + seed -> same bytes
    assert (
        cli.main(
            ["evolve", str(electrode), "--protocol", str(proto), "--steps", "3", "--seed", "3", "--out", str(again)]
        )
        == 0
    )
    for name in ("sequence.json", "state_002.h5"):
        assert (again / name).read_bytes() == (seq / name).read_bytes()
    assert [s["file"] for s in man["states"]] == ["state_000.h5", "state_001.h5", "state_002.h5"]
    with h5py.File(seq / "state_002.h5") as f:
        u = f["displacement"][...]
        assert u.shape == f["phase"].shape + (3,) and f["strain"].shape == f["phase"].shape + (6,)
        # NaN exactly on the reference voxels that vanished into cracks (the manifest's count)
        assert np.isnan(u[..., 0]).sum() == man["states"][2]["crack_voxels"] > 0
        assert np.array_equal(f["crack"][...] > 0, (f["phase"][...] == 0) & (f["crack"][...] > 0))
    ct = tmp_path / "ct"
    assert cli.main(["render-ct", str(seq), "--binning", "2", "--seed", "4", "--out", str(ct)]) == 0
    with h5py.File(ct / "ct_000.h5") as a, h5py.File(ct / "ct_001.h5") as b:
        assert a["displacement"].shape == a["ct"].shape + (3,)
        assert json.loads(a.attrs["sequence"])["noise_seed"] != json.loads(b.attrs["sequence"])["noise_seed"]
    # an electrode without orientations is refused, naming the command that adds them
    plain = tmp_path / "plain.h5"
    assert (
        cli.main(
            [
                "pack",
                "--shell-model",
                str(model_paths[0]),
                "--grain-model",
                str(model_paths[1]),
                "--voxel-size-um",
                "0.1",
                "--box-um",
                "4",
                "--solid-fraction",
                "0.3",
                "--out",
                str(plain),
            ]
        )
        == 0
    )
    with pytest.raises(InputError, match="pack .* --orientation-model"):
        cli.main(["--debug", "evolve", str(plain), "--out", str(tmp_path / "s2")])
    # a folder mixing two electrodes is refused
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in seq.iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    with h5py.File(mixed / "state_001.h5", "r+") as f:
        info = json.loads(f.attrs["sequence"])
        info["electrode_sha256"] = "0" * 64
        f.attrs["sequence"] = json.dumps(info)
    with pytest.raises(InputError, match="mixed sequence folder"):
        cli.main(["--debug", "render-ct", str(mixed), "--out", str(tmp_path / "ct2")])
    with pytest.raises(InputError, match="unknown key"):
        proto.write_text("cycle: 1\n")
        cli.main(["--debug", "evolve", str(electrode), "--protocol", str(proto), "--out", str(tmp_path / "s3")])


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_cli_sequence_folders_are_checked_and_reproducible(electrode, tmp_path, capsys):
    """Same seed -> same bytes (evolve and render-ct); a user's folder is never written into; a folder
    mixing runs, electrodes or indices is refused by render-ct and by check-dvc's reader, one line each."""
    ev_args = ["evolve", str(electrode), "--steps", "3", "--seed", "3"]
    seq, other = tmp_path / "seq", tmp_path / "other"
    assert cli.main(ev_args + ["--out", str(seq)]) == 0
    assert cli.main(["evolve", str(electrode), "--steps", "2", "--seed", "4", "--out", str(other)]) == 0
    man, man_other = (json.loads((d / "sequence.json").read_text()) for d in (seq, other))
    assert man["sequence_id"] != man_other["sequence_id"]
    # the states' volume change: lattice strain, compaction and cracks, in the manifest per state
    s2 = man["states"][1]
    assert s2["nmc_material_volume_change"] < 0 and s2["crack_area_um2"] > 0
    ct_args = ["render-ct", "--binning", "2", "--seed", "4", "--photons", "1e4"]
    ct, ct_again = tmp_path / "ct", tmp_path / "ct_again"
    assert cli.main(ct_args[:1] + [str(seq)] + ct_args[1:] + ["--out", str(ct)]) == 0
    assert cli.main(ct_args[:1] + [str(seq)] + ct_args[1:] + ["--out", str(ct_again)]) == 0
    for name in ("sequence.json", "ct_000.h5", "ct_002.h5"):
        assert (ct / name).read_bytes() == (ct_again / name).read_bytes()
    capsys.readouterr()

    def refused(argv, words):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and words in err, err

    # a non-empty folder the tool did not write is refused, and left as it was
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    refused(ev_args + ["--out", str(user)], "did not write (notes.txt)")
    refused(["render-ct", str(seq), "--out", str(user)], "did not write (notes.txt)")
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "mine"
    # a state of another run (same electrode, other seed and steps) in the folder
    mixed = _copy(seq, tmp_path / "mixed_run")
    (mixed / "state_001.h5").write_bytes((other / "state_001.h5").read_bytes())
    refused(["render-ct", str(mixed), "--out", str(tmp_path / "x1")], "another run")
    # two states swapped
    swapped = _copy(seq, tmp_path / "swapped")
    (swapped / "state_001.h5").write_bytes((seq / "state_002.h5").read_bytes())
    (swapped / "state_002.h5").write_bytes((seq / "state_001.h5").read_bytes())
    refused(["render-ct", str(swapped), "--out", str(tmp_path / "x2")], "holds state 2")
    # check-dvc reads CT folders with the same checks: a CT of another electrode, of another render
    # (other seed), a stray CT file, or an evolve folder given instead of its CTs
    ct_mixed = _copy(ct, tmp_path / "ct_mixed")
    with h5py.File(ct_mixed / "ct_001.h5", "r+") as f:
        info = json.loads(f.attrs["sequence"])
        info["electrode_sha256"] = "0" * 64
        f.attrs["sequence"] = json.dumps(info)
    refused(["check-dvc", str(ct_mixed), "--out", str(tmp_path / "d1")], "another electrode")
    assert not (tmp_path / "d1").exists()
    ct_run = _copy(ct, tmp_path / "ct_run")
    with h5py.File(ct_run / "ct_002.h5", "r+") as f:
        info = json.loads(f.attrs["sequence"])
        info["sequence_id"] = man["sequence_id"]  # the evolve run's id, not this render's
        f.attrs["sequence"] = json.dumps(info)
    refused(["check-dvc", str(ct_run), "--out", str(tmp_path / "d2")], "another run")
    ct_stray = _copy(ct, tmp_path / "ct_stray")
    (ct_stray / "ct_007.h5").write_bytes((ct / "ct_001.h5").read_bytes())
    refused(["check-dvc", str(ct_stray), "--out", str(tmp_path / "d3")], "not in sequence.json")
    refused(["check-dvc", str(seq), "--out", str(tmp_path / "d4")], "is an evolve folder")
    refused(["render-ct", str(ct), "--out", str(tmp_path / "x3")], "is a CT sequence")
    refused(["evolve", str(seq), "--out", str(tmp_path / "x4")], "is a folder")
    refused(["evolve", str(electrode), "--seed", "-1", "--out", str(tmp_path / "x5")], "--seed: must be >= 0")
    refused(["render-ct", str(seq), "--seed", "-1", "--out", str(tmp_path / "x6")], "--seed: must be >= 0")
