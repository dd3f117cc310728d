"""The ``ct`` release config: a real recipe (real shell model + real GrainModel, packed electrodes
rendered by the CT simulator) run with ``nmc-dataset run``; 1 vs 2 workers byte-identical; loaded
back with ``datasets.load_dataset`` as train / validation / test splits; resume after a lost shard;
the card's figure and split metadata; bad sections refused before anything is written.

Volumes are tiny (20³ CT voxels of 0.2 µm from 40³ labels, shells of radius ~0.9 µm) so the module
runs in well under a minute on one core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nmc_dataset.cli._main import main
from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._recipe import run_recipe
from nmc_dataset.pipeline._stage_tomography import volume_draws
from tests.particles.fixtures import write_models

SIZE = 20
SPLITS = {"train": 2, "validation": 1, "test": 1}


def _tree_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".build" not in p.parts
    }


def _recipe(models, **tomo) -> dict:
    shell, grain = models
    t = {
        "splits": SPLITS,
        "size": SIZE,
        "voxel_size_um": 0.1,
        "solid_fraction": [0.4, 0.5],
        "binder": {"mode": "bridge", "fraction": 0.08},
        "ct": {"preset": "lab-nanoct", "binning": 2},
        "shard_size": 1,
        "shell_model": str(shell),
        "grain_model": str(grain),
    }
    t.update(tomo)
    return {
        "format_version": 1,
        "seed": 3,
        "tomography": t,
        "dataset": {"name": "nmc811-ct-test", "version": "1.0.0", "authors": [{"name": "Doe, Jane"}]},
    }


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    """The same recipe built with 1 and with 2 workers."""
    root = tmp_path_factory.mktemp("ct")
    recipe = _write(root / "ct.yaml", _recipe(models))
    outs = []
    for w in (1, 2):
        out = root / f"w{w}"
        assert main(["run", str(recipe), "--out", str(out), "--workers", str(w)]) == 0
        outs.append(out)
    return recipe, outs


def test_one_and_two_workers_give_the_same_bytes(built):
    _, (a, b) = built
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert sorted(ta) == sorted(tb)
    names = sorted(k for k in ta if k.startswith("data/ct/"))
    assert names == [
        "data/ct/test-00000-of-00001.parquet",
        "data/ct/train-00000-of-00002.parquet",
        "data/ct/train-00001-of-00002.parquet",
        "data/ct/validation-00000-of-00001.parquet",
    ]
    assert all(ta[k] == tb[k] for k in ta), [k for k in ta if ta[k] != tb[k]]


def test_load_dataset_gives_the_splits_and_consistent_volumes(built):
    import datasets

    _, (out, _) = built
    ds = datasets.load_dataset(str(out), "ct")
    assert {s: ds[s].num_rows for s in ds} == SPLITS
    seen = set()
    for split in SPLITS:
        feats = ds[split].features
        assert [feats[k].dtype for k in ("ct", "phase", "particle", "grain")] == [
            "float32",
            "uint8",
            "uint32",
            "uint32",
        ]
        d = ds[split].with_format("numpy")
        for i in range(d.num_rows):
            row = d[i]
            ct, phase, particle, grain = (np.asarray(row[k]) for k in ("ct", "phase", "particle", "grain"))
            assert ct.shape == phase.shape == particle.shape == grain.shape == (SIZE,) * 3
            assert ct.dtype == np.float32
            assert row["split"] == split and int(row["index"]) == i
            # the draws come from (seed, split, index) alone
            d0 = volume_draws(3, split, i, (0.4, 0.5))
            assert row["pack_seed"] == d0["pack_seed"] and row["ct_seed"] == d0["ct_seed"]
            assert abs(row["target_solid_fraction"] - d0["solid_fraction"]) < 1e-12
            # the voxel fraction is the packed particles' (a 4 µm box holds few whole particles, so the
            # count closest to the target can miss it by a few percent: the packer's own tests check ±0.02)
            packing = yaml.safe_load(row["packing"])
            assert abs(row["solid_fraction"] - packing["analytic_fraction"]) <= 0.01
            assert packing["target_solid_fraction"] == row["target_solid_fraction"]
            # labels: instances and grains exactly where the phase is NMC, all three phases present
            assert np.array_equal(particle > 0, phase == 1) and np.array_equal(grain > 0, phase == 1)
            assert set(np.unique(phase)) == {0, 1, 2}
            # the grey values are a CT of these labels: NMC attenuates more than binder, binder more than air
            m = [float(ct[phase == k].mean()) for k in range(3)]
            assert m[1] > m[2] > m[0]
            im = yaml.safe_load(row["imaging"])
            assert im["voxel_size_um"] == pytest.approx(0.2) and im["binning"] == 2 and im["seed"] == row["ct_seed"]
            assert row["voxel_size_um"] == pytest.approx(0.2)
            seen.add(row["pack_seed"])
    assert len(seen) == sum(SPLITS.values())  # every volume is a different electrode


def test_card_lists_the_splits_and_shows_ct_beside_labels(built):
    from huggingface_hub import DatasetCard

    _, (out, _) = built
    card = DatasetCard((out / "README.md").read_text())
    cfg = {c["config_name"]: c for c in card.data.configs}["ct"]
    assert [f["split"] for f in cfg["data_files"]] == ["train", "validation", "test"]
    assert cfg["data_files"][1]["path"] == "data/ct/validation-*.parquet"
    png = out / "figures" / "ct_slices_beside_phase_particle_grain_labels.png"
    assert png.is_file() and png.stat().st_size > 10_000
    # the generic label-slice figure draws a label volume (phase), never the grey values as labels
    assert (out / "figures" / "ct_phase_slices.png").is_file() and not (out / "figures" / "ct_ct_slices.png").exists()
    assert "figures/ct_slices_beside_phase_particle_grain_labels.png" in (out / "README.md").read_text()


def test_resume_rebuilds_only_a_lost_shard(built, tmp_path):
    import shutil

    recipe, (out, _) = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _tree_bytes(copy)
    victim = copy / "data" / "ct" / "train-00001-of-00002.parquet"
    victim.unlink()
    ctx = run_recipe(recipe, copy)
    assert ctx.outputs["ct_release"] == SPLITS
    assert _tree_bytes(copy) == before


def test_bad_sections_are_refused_before_writing(models, tmp_path):
    out = tmp_path / "out"
    cases = [
        ({"solid_fraction": [0.5, 0.4]}, "not an interval"),
        ({"solid_fraction": 0.95}, "no pore space"),
        ({"ct": {"preset": "lab-nanoct", "binning": 8}}, "too coarse"),
        ({"grain_model": str(tmp_path / "missing")}, "not found"),
    ]
    for i, (bad, msg) in enumerate(cases):
        recipe = _write(tmp_path / f"bad{i}.yaml", _recipe(models, **bad))
        with pytest.raises(Exception, match=msg):
            run_recipe(recipe, out)
        assert not out.exists()
    with pytest.raises(RecipeError, match="preset"):
        run_recipe(_write(tmp_path / "p.yaml", _recipe(models, ct={"preset": "medical"})), out)


def test_the_shipped_ct_quick_recipe_validates():
    from nmc_dataset.pipeline._recipe import load_recipe

    r = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "ct-quick.yaml")
    assert set(r["tomography"]["splits"]) == {"train", "validation", "test"}


@pytest.mark.slow  # ~30 s: four more volumes; the builder's own dask test runs by default
def test_dask_local_cluster_gives_the_same_bytes(built, tmp_path):
    from distributed import LocalCluster

    recipe, (ref, _) = built
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        assert (
            main(
                ["run", str(recipe), "--out", str(out), "--executor", "dask", "--scheduler", cluster.scheduler_address]
            )
            == 0
        )
    assert _tree_bytes(out) == _tree_bytes(ref)
