"""Top-level (picklable) ``make_shard`` functions for the build tests and benchmark.

Each item's numbers come from ``item_seed(seed, index)`` only, like real particle shards:
scalar descriptors plus a small fixed-shape ``Array3D`` label volume (a random ellipsoid).
"""

from __future__ import annotations

import os
import time

import numpy as np

from nmc_dataset._util import item_seed

VOX = 16


def features():
    import datasets

    return {
        "particles": datasets.Features(
            {
                "particle_id": datasets.Value("int64"),
                "volume_um3": datasets.Value("float64"),
                "sphericity": datasets.Value("float64"),
                "n_grains": datasets.Value("int32"),
            }
        ),
        f"voxels_{VOX}": datasets.Features(
            {
                "particle_id": datasets.Value("int64"),
                "labels": datasets.Array3D(shape=(VOX, VOX, VOX), dtype="uint8"),
            }
        ),
    }


def item(seed: int, k: int) -> dict:
    rng = np.random.default_rng(item_seed(seed, k))
    axes = rng.uniform(3.0, 7.5, size=3)
    z, y, x = np.mgrid[:VOX, :VOX, :VOX] - (VOX - 1) / 2
    body = (x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2 <= 1
    labels = np.where(body, rng.integers(1, 6, size=body.shape), 0).astype(np.uint8)
    return {
        "particle_id": k,
        "volume_um3": float(4 / 3 * np.pi * axes.prod() * 0.128**3),
        "sphericity": float(axes.min() / axes.max()),
        "n_grains": int(rng.integers(20, 200)),
        "labels": labels,
    }


def make_shard(shard_index, items, seed=7, delay=0.0):
    """Two configs per shard: scalar descriptors and 16^3 voxel labels."""
    import pyarrow as pa

    feats = features()
    rows = [item(seed, k) for k in items]
    if delay:
        time.sleep(delay)
    out = {}
    for config, f in feats.items():
        cols = {name: [r[name] for r in rows] for name in f}
        if "labels" in cols:
            cols["labels"] = [a.tolist() for a in cols["labels"]]
        out[config] = pa.Table.from_pydict(f.encode_batch(cols), schema=f.arrow_schema)
    return out


def make_shard_slow(shard_index, items, seed=7):
    """As :func:`make_shard` but slow enough that a test can kill the build mid-way."""
    return make_shard(shard_index, items, seed=seed, delay=float(os.environ.get("NMC_TEST_SHARD_DELAY", "0.4")))


def make_shard_bad(shard_index, items):
    """Returns the wrong configs (a programming error the builder must report)."""
    import pyarrow as pa

    return {"other": pa.table({"a": [1]})}
