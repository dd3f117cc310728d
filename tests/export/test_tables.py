"""Params tables: written by `generate`, read back, and regenerated bit for bit."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.export.hdf5 import read_volume
from nmc_dataset.export.tables import read_params, read_particles
from nmc_dataset.particles.assemble import make_particle, particle_seed
from nmc_dataset.particles.voxelize import grain_statistics, voxelize
from tests.particles.fixtures import N_GEN, SEED, VOXEL


def test_voxels_regenerated_from_params_equal_written_bit_for_bit(generated):
    parts = read_particles(generated)
    assert [p.particle_id for p in parts] == list(range(N_GEN))
    for p in parts:
        written = read_volume(generated / "voxels.h5", p.particle_id)
        again = voxelize(p, VOXEL)
        assert again.labels.dtype == written.labels.dtype
        np.testing.assert_array_equal(again.labels, written.labels)
        assert again.grid == written.grid


def test_particles_redrawn_from_seed_and_models_equal_params(generated, models):
    shell, grain = models
    ptab, _ = read_params(generated)
    rows = ptab.to_pylist()
    for p in read_particles(generated):
        q = make_particle(shell, grain, particle_seed(SEED, p.particle_id), particle_id=p.particle_id)
        np.testing.assert_array_equal(q.coeffs_um, p.coeffs_um)
        np.testing.assert_array_equal(q.grains.seeds, p.grains.seeds)
        np.testing.assert_array_equal(q.grains.diag, p.grains.diag)
        np.testing.assert_array_equal(q.grains.offsets, p.grains.offsets)
        np.testing.assert_array_equal(q.grains.roll, p.grains.roll)
        row = rows[p.particle_id]
        assert row["seed_entropy"] == str(SEED) and row["seed_spawn_key"][-1] == p.particle_id
        assert row["shell_model_id"].startswith("nmc-dataset/shell-model@v1:sha256:")
        assert row["grain_model_id"].startswith("nmc-dataset/grain-model@v1:sha256:")


def test_tables_content_is_consistent(generated):
    ptab, gtab = read_params(generated)
    assert ptab.num_rows == N_GEN
    assert gtab.num_rows == sum(ptab.column("n_grains").to_pylist())
    meta = ptab.schema.metadata
    assert meta[b"format"] == b"nmc-dataset/particle-params" and meta[b"format_version"] == b"1"
    g = gtab.to_pandas()
    p0 = ptab.to_pylist()[0]
    vol = read_volume(generated / "voxels.h5", 0)
    st = grain_statistics(vol.labels, vol.grid, p0["n_grains"])
    g0 = g[g.particle_id == 0].sort_values("label")
    np.testing.assert_array_equal(g0["voxels"].to_numpy(), st["voxels"])
    np.testing.assert_array_equal(g0["touches_shell"].to_numpy(), st["touches_shell"])
    np.testing.assert_allclose(g0["volume_um3"].sum(), p0["voxel_volume_um3"])
    # the analytic shell volume and the voxel volume agree within 2 % (SH shell, 0.05 µm voxels)
    assert abs(p0["voxel_volume_um3"] / p0["shell_volume_um3"] - 1) < 0.02
    assert len(p0["sh_coeffs_um"]) == 100 and p0["sh_degree"] == 9
    axes = np.array(g0["principal_axes"].tolist()).reshape(-1, 3, 3)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", axes, axes), np.broadcast_to(np.eye(3), axes.shape), atol=1e-9)


def test_newer_params_version_is_refused(generated, tmp_path):
    t = pq.read_table(generated / "particles.parquet")
    meta = dict(t.schema.metadata)
    meta[b"format_version"] = b"2"
    (tmp_path / "p").mkdir()
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "p" / "particles.parquet")
    pq.write_table(pq.read_table(generated / "grains.parquet"), tmp_path / "p" / "grains.parquet")
    with pytest.raises(FormatVersionError, match="particles.parquet"):
        read_params(tmp_path / "p")
    with pytest.raises(InputError, match="not found"):
        read_params(tmp_path / "nothing")
