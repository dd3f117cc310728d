"""segment, score-segmentation and train-segmenter through the command line, and their bad inputs."""

import json

import h5py
import numpy as np
import pytest

from nmc_dataset.cli._main import main
from nmc_dataset.tomography._phantom import write_phantom_ct
from nmc_dataset.tomography._volumes import read_volumes, write_volumes

SMALL = {"size": 40, "n_particles": 60, "mean_radius_vox": 5}


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    return write_phantom_ct(tmp_path_factory.mktemp("ct") / "ct.h5", 11, **SMALL)


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_segment_then_score_writes_the_report(ct_file, tmp_path, capsys):
    seg = tmp_path / "seg.h5"
    assert main(["segment", str(ct_file), "--method", "otsu-watershed", "--out", str(seg)]) == 0
    arrays, meta = read_volumes(seg, kinds=("segmentation",))
    assert set(arrays) == {"phase", "particle"} and meta["method"] == "otsu-watershed"
    assert meta["voxel_size_um"] == pytest.approx(0.1) and len(meta["method_info"]["thresholds"]) == 2
    out = tmp_path / "report"
    assert main(["score-segmentation", str(seg), "--truth", str(ct_file), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"score.json", "score.md", "phases.png", "particles.png"}
    doc = json.loads((out / "score.json").read_text())
    s = doc["score"]
    assert doc["format"] == "nmc-dataset/segmentation-score" and s["method"] == "otsu-watershed"
    assert 0.5 < s["mean_dice"] < 1 and s["particles"]["n_truth"] > 10
    assert set(s["phases"]) == {"pore", "nmc", "binder"}
    md = (out / "score.md").read_text()
    assert "| nmc |" in md and "Euler" in md and "split" in md
    # the report folder is ours: scoring again replaces it; same inputs, same JSON
    before = (out / "score.json").read_bytes()
    assert main(["score-segmentation", str(seg), "--truth", str(ct_file), "--out", str(out)]) == 0
    assert (out / "score.json").read_bytes() == before
    # the same segmentation again gives the same file content
    seg2 = tmp_path / "seg2.h5"
    assert main(["segment", str(ct_file), "--method", "otsu-watershed", "--out", str(seg2)]) == 0
    assert np.array_equal(read_volumes(seg2)[0]["particle"], arrays["particle"])


def test_truth_without_labels_and_other_bad_inputs_are_one_line_errors(ct_file, tmp_path, capsys):
    ct_only = write_volumes(tmp_path / "ct_only.h5", "ct", {"ct": np.zeros((40, 40, 40))}, voxel_size_um=0.1)
    seg = tmp_path / "seg.h5"
    write_volumes(
        seg,
        "segmentation",
        {"phase": np.zeros((40, 40, 40)), "particle": np.zeros((40, 40, 40))},
        voxel_size_um=0.1,
        attrs={"method": "x"},
    )
    assert main(["score-segmentation", str(seg), "--truth", str(ct_only), "--out", str(tmp_path / "r")]) == 2
    assert "a volume without labels given as truth" in _err(capsys)
    small = write_volumes(tmp_path / "small.h5", "segmentation", {"phase": np.zeros((8, 8, 8))}, voxel_size_um=0.1)
    assert main(["score-segmentation", str(small), "--truth", str(ct_file), "--out", str(tmp_path / "r")]) == 2
    assert "differs from the truth's" in _err(capsys)
    coarse = write_volumes(tmp_path / "coarse.h5", "segmentation", {"phase": np.zeros((40, 40, 40))}, voxel_size_um=0.2)
    assert main(["score-segmentation", str(coarse), "--truth", str(ct_file), "--out", str(tmp_path / "r")]) == 2
    assert "voxel size" in _err(capsys)
    odd = write_volumes(tmp_path / "odd.h5", "segmentation", {"phase": np.full((40, 40, 40), 3)}, voxel_size_um=0.1)
    assert main(["score-segmentation", str(odd), "--truth", str(ct_file), "--out", str(tmp_path / "r")]) == 2
    assert "phase holds the value 3" in _err(capsys)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["score-segmentation", str(seg), "--truth", str(ct_file), "--out", str(foreign)]) == 2
    assert "not written by this command" in _err(capsys)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(["segment", str(ct_file), "--method", "kmeans", "--out", str(tmp_path / "s.h5")]) == 2
    assert "unknown --method" in _err(capsys)
    assert (
        main(["segment", str(ct_file), "--method", f"net:{tmp_path / 'nomodel'}", "--out", str(tmp_path / "s.h5")]) == 2
    )
    assert "model folder not found" in _err(capsys)
    user_file = tmp_path / "data.h5"
    with h5py.File(user_file, "w") as f:
        f["x"] = np.arange(3)
    assert main(["segment", str(ct_file), "--method", "otsu-watershed", "--out", str(user_file)]) == 2
    assert "not written by nmc-dataset" in _err(capsys)
    with h5py.File(user_file, "r") as f:
        assert list(f["x"][...]) == [0, 1, 2]
    assert main(["segment", str(seg), "--method", "otsu-watershed", "--out", str(tmp_path / "s.h5")]) == 2
    assert "expected an nmc-dataset ct volume" in _err(capsys)
    assert not (tmp_path / "s.h5").exists()


def test_train_segmenter_then_segment_with_the_network(tmp_path, capsys):
    cfg = tmp_path / "seg.yaml"
    vols = tmp_path / "vols"
    for i, split in enumerate(("train", "train", "val", "test")):
        write_phantom_ct(vols / split / f"v{i}.h5", 20 + i, size=24, n_particles=20, mean_radius_vox=4)
    cfg.write_text(
        "data: {train: [vols/train], val: [vols/val/v2.h5], test: vols/test}\n"
        "model: {channels: [4, 8], crop: 16, batch: 2, epochs: 2, steps_per_epoch: 2, tile: 16, "
        "overlap: 4, threads: 1}\n"
    )
    model = tmp_path / "segmenter"
    assert main(["train-segmenter", str(cfg), "--out", str(model), "--device", "cpu"]) == 0
    assert {p.name for p in model.iterdir()} == {
        "model.safetensors",
        "config.json",
        "log.csv",
        "evaluation.json",
        "evaluation.md",
    }
    ev = json.loads((model / "evaluation.json").read_text())
    assert set(ev["summary"]) == {"net", "otsu-watershed"} and len(ev["volumes"]) == 2
    assert len((model / "log.csv").read_text().splitlines()) == 3
    seg = tmp_path / "net.h5"
    assert (
        main(
            ["segment", str(vols / "test" / "v3.h5"), "--method", f"net:{model}", "--out", str(seg), "--device", "cpu"]
        )
        == 0
    )
    arrays, meta = read_volumes(seg)
    assert meta["method"] == f"net:{model}" and arrays["phase"].shape == (24, 24, 24)
    # retraining into our own folder is allowed; a foreign folder or a bad config is refused
    assert main(["train-segmenter", str(cfg), "--out", str(model), "--device", "cpu", "--epochs", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert main(["train-segmenter", str(cfg), "--out", str(tmp_path / "other")]) == 2
    assert "not written by this command" in _err(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: [nowhere/]}\n")
    assert main(["train-segmenter", str(bad), "--out", str(tmp_path / "m2")]) == 2
    assert "not found" in _err(capsys)
    bad.write_text("phantom: {train: 1}\nmodel: {crop: 30}\n")
    assert main(["train-segmenter", str(bad), "--out", str(tmp_path / "m2")]) == 2
    assert "crop" in _err(capsys)
    unlabelled = tmp_path / "u"
    write_volumes(unlabelled / "a.h5", "ct", {"ct": np.zeros((24, 24, 24))}, voxel_size_um=0.1)
    bad.write_text("data: {train: [u]}\n")
    assert main(["train-segmenter", str(bad), "--out", str(tmp_path / "m2")]) == 2
    assert "has no phase, particle volume" in _err(capsys)
