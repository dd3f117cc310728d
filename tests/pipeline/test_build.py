"""The sharded builder: determinism across executors, resume after kill -9, recipe guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from nmc_dataset.errors import RecipeError
from nmc_dataset.pipeline._build import build_dataset, shard_name
from nmc_dataset.pipeline._manifest import write_manifest
from tests.pipeline import shardfns

CONFIGS = ["particles", "voxels_16"]
REPO = Path(__file__).resolve().parents[2]


def _tree_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".build" not in p.parts
    }


def _build(out, **kw):
    r = build_dataset(out, 23, 5, shardfns.make_shard, CONFIGS, recipe_hash="h1", **kw)
    write_manifest(out, dataset={"name": "t", "version": "1.0.0"}, recipe_hash="h1")
    return r


def test_items_recovered_exactly(tmp_path):
    """Closed loop: every item's row equals item(seed, k) recomputed directly (no loss, no reorder)."""
    r = _build(tmp_path / "b")
    assert r.counts == {"particles": 23, "voxels_16": 23}
    assert r.built == [0, 1, 2, 3, 4] and r.skipped == []
    t = pq.read_table([tmp_path / "b" / f for f in r.files["particles"]][0])
    assert t.schema.metadata[b"format"] == b"nmc-dataset/shard"
    parts = [pq.read_table(tmp_path / "b" / f).to_pydict() for f in r.files["voxels_16"]]
    ids = [k for p in parts for k in p["particle_id"]]
    assert ids == list(range(23))
    labels = [np.asarray(v, dtype=np.uint8) for p in parts for v in p["labels"]]
    for k in (0, 7, 22):
        assert np.array_equal(labels[k], shardfns.item(7, k)["labels"])
    assert all(v > 0 for v in r.peak_rss_mib.values())


def test_workers_and_dask_byte_identical(tmp_path):
    """1 worker, 2 spawned workers and a dask LocalCluster give identical shards and manifest bytes."""
    from distributed import LocalCluster

    _build(tmp_path / "w1", workers=1)
    _build(tmp_path / "w2", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        _build(tmp_path / "dask", executor="dask", scheduler=cluster)
    ref = _tree_bytes(tmp_path / "w1")
    assert len(ref) == 2 * 5 + 1  # 5 shards x 2 configs + manifest.json
    assert _tree_bytes(tmp_path / "w2") == ref
    assert _tree_bytes(tmp_path / "dask") == ref


def test_rerun_skips_and_repairs_damaged_shard(tmp_path):
    out = tmp_path / "b"
    _build(out)
    ref = _tree_bytes(out)
    r = _build(out)
    assert r.built == [] and r.skipped == [0, 1, 2, 3, 4]
    # damage one shard: the rerun rebuilds exactly that shard, to the same bytes
    victim = out / "data" / "voxels_16" / shard_name(2, 5)
    victim.write_bytes(victim.read_bytes()[:-10])
    r = _build(out)
    assert r.built == [2]
    assert _tree_bytes(out) == ref


def test_changed_recipe_refused_without_force(tmp_path):
    out = tmp_path / "b"
    _build(out)
    before = _tree_bytes(out)
    with pytest.raises(RecipeError, match="another recipe"):
        build_dataset(out, 23, 5, shardfns.make_shard, CONFIGS, recipe_hash="h2")
    assert _tree_bytes(out) == before
    with pytest.raises(RecipeError, match="other settings"):
        build_dataset(out, 23, 4, shardfns.make_shard, CONFIGS, recipe_hash="h1")
    r = build_dataset(out, 10, 4, shardfns.make_shard, CONFIGS, recipe_hash="h2", force=True)
    assert r.built == [0, 1, 2]
    names = sorted(p.name for p in (out / "data" / "particles").iterdir())
    assert names == [shard_name(i, 3) for i in range(3)]


def test_unknown_data_refused(tmp_path):
    """parquet data without build state (another tool, or a copy) is not overwritten silently."""
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "x" / "a.parquet").write_bytes(b"keep me")
    with pytest.raises(RecipeError, match="unknown build"):
        build_dataset(tmp_path, 4, 2, shardfns.make_shard, CONFIGS, recipe_hash="h1")
    assert (tmp_path / "data" / "x" / "a.parquet").read_bytes() == b"keep me"


def test_array3d_column_fast_equals_slow(tmp_path, rng):
    """The list-free Array3D column equals datasets' own encoding (Python lists), down to parquet bytes."""
    import datasets
    import pyarrow as pa

    from nmc_dataset.pipeline._build import array3d_column, write_table_deterministic

    for dtype, shape in (("uint8", (3, 4, 5, 6)), ("uint16", (2, 7, 3, 5)), ("float32", (1, 2, 2, 2))):
        v = (rng.random(shape) * 300).astype(dtype)
        col, feature = array3d_column(v)
        assert feature.shape == shape[1:] and feature.dtype == dtype
        f = datasets.Features({"v": feature})
        fast = pa.Table.from_arrays([col], schema=f.arrow_schema)
        slow = pa.Table.from_pydict(f.encode_batch({"v": [x.tolist() for x in v]}), schema=f.arrow_schema)
        assert fast.equals(slow)
        write_table_deterministic(fast, tmp_path / "fast.parquet")
        write_table_deterministic(slow, tmp_path / "slow.parquet")
        assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "slow.parquet").read_bytes()
    with pytest.raises(ValueError, match="shape"):
        array3d_column(np.zeros((2, 3, 4)))


def test_bad_arguments(tmp_path):
    with pytest.raises(RecipeError, match="shard_size"):
        build_dataset(tmp_path, 10, 0, shardfns.make_shard, CONFIGS)
    with pytest.raises(RecipeError, match="executor"):
        build_dataset(tmp_path, 10, 2, shardfns.make_shard, CONFIGS, executor="slurm")
    with pytest.raises(ValueError, match="expected tables for configs"):
        build_dataset(tmp_path / "bad", 4, 2, shardfns.make_shard_bad, CONFIGS)
    assert not (tmp_path / "bad" / "data").exists()


_SCRIPT = textwrap.dedent("""
    import sys
    from tests.pipeline import shardfns
    from nmc_dataset.pipeline._build import build_dataset
    from nmc_dataset.pipeline._manifest import write_manifest
    out, workers = sys.argv[1], int(sys.argv[2])
    build_dataset(out, 24, 2, shardfns.make_shard_slow, ["particles", "voxels_16"], workers=workers,
                  recipe_hash="h1")
    write_manifest(out, dataset={"name": "t", "version": "1.0.0"}, recipe_hash="h1")
""")


def _run_script(out, workers, env):
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(out), str(workers)], cwd=REPO, env=env, start_new_session=True
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_then_resume_same_manifest(tmp_path, workers):
    """kill -9 the whole build (process group) when shard 5 starts; rerun finishes only the missing shards."""
    env = dict(os.environ, NMC_TEST_SHARD_DELAY="0", PYTHONPATH=str(REPO))
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-c", _SCRIPT, str(ref), "1"], cwd=REPO, env=env, check=True)
    out = tmp_path / "killed"
    proc = _run_script(out, workers, dict(env, NMC_DATASET_FAULTS="kill-shard:5"))
    assert proc.wait(timeout=300) == -signal.SIGKILL
    done_dir = out / ".build" / "shards-particles+voxels_16" / "done"
    n_done = len(list(done_dir.glob("*.json")))
    assert 2 <= n_done < 12, "the kill must land mid-build"
    assert not (out / "manifest.json").exists()
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(out), str(workers)],
        cwd=REPO,
        env=dict(env, NMC_TEST_SHARD_DELAY="0"),
        check=True,
    )
    assert (out / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    assert _tree_bytes(out) == _tree_bytes(ref)
    assert not list(out.rglob("*.part"))


@pytest.mark.slow
def test_large_build_dask_processes_vs_local(tmp_path):
    """Full-size twin: 2000 items, dask with 2 worker processes vs a 2-process local pool vs 1 worker."""
    from distributed import LocalCluster

    kw = dict(n_items=2000, shard_size=100, make_shard=shardfns.make_shard, configs=CONFIGS, recipe_hash="big")
    build_dataset(tmp_path / "w1", **kw)
    build_dataset(tmp_path / "w2", workers=2, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        r = build_dataset(tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address, **kw)
    assert r.counts == {"particles": 2000, "voxels_16": 2000}
    ref = _tree_bytes(tmp_path / "w1")
    assert _tree_bytes(tmp_path / "w2") == ref and _tree_bytes(tmp_path / "dask") == ref
