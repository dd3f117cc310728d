"""Params tables: written by `generate`, read back, and regenerated bit for bit."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.export._hdf5 import read_volume
from nmc_dataset.export._tables import read_params, read_particles
from nmc_dataset.particles._assemble import make_particle, particle_seed
from nmc_dataset.particles._voxelize import grain_statistics, voxelize
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
        assert row["shell_model_id"].startswith("nmc-dataset/shell-model@v2:sha256:")
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


def test_orientation_columns_in_the_particle_frame(oriented_generated, generated):
    """Same seed with and without an orientation model: identical geometry, plus the new columns."""
    from scipy.spatial.transform import Rotation

    from nmc_dataset.ebsd._orientation import euler_to_matrix
    from tests.particles.fixtures import ORIENTED_KAPPA, ORIENTED_LAMBDA

    plain_p, plain_g = read_params(generated)
    p, g = read_params(oriented_generated)
    for a, b in ((plain_p, p), (plain_g, g)):
        for name in a.column_names:
            if name not in ("orientation_model_id", "orientation_quat_wxyz", "euler_bunge_rad", "c_axis_xyz"):
                assert a.column(name).equals(b.column(name)), name
    assert plain_g.column("orientation_quat_wxyz").null_count == plain_g.num_rows
    assert set(plain_p.column("orientation_model_id").to_pylist()) == {""}
    ids = p.column("orientation_model_id").to_pylist()
    assert all(s.startswith("nmc-dataset/orientation-model@v1:sha256:") for s in ids)
    q = np.array(g.column("orientation_quat_wxyz").to_pylist())
    e = np.array(g.column("euler_bunge_rad").to_pylist())
    c = np.array(g.column("c_axis_xyz").to_pylist())
    assert q.shape == (g.num_rows, 4) and e.shape == c.shape == (g.num_rows, 3)
    rot = Rotation.from_quat(q, scalar_first=True)  # crystal -> particle frame
    np.testing.assert_allclose(c, rot.apply([0.0, 0.0, 1.0]), atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(e), rot.inv().as_matrix(), atol=1e-9)
    # the c-axes avoid the radial direction (kappa < 0), measured from the voxel centroids
    cen = np.stack([g.column(f"centroid_{k}_um").to_numpy() for k in "xyz"], axis=1)
    ok = np.linalg.norm(cen, axis=1) > 0.3
    er = cen[ok] / np.linalg.norm(cen[ok], axis=1, keepdims=True)
    ang = np.degrees(np.arccos(np.abs(np.sum(c[ok] * er, axis=1))))
    assert ORIENTED_KAPPA < 0 and np.median(ang) > 65 and ORIENTED_LAMBDA > 0
    # read back: the Particle carries the same orientations, row k-1 = label k
    for part in read_particles(oriented_generated):
        sel = np.asarray(g.column("particle_id").to_numpy() == part.particle_id)
        np.testing.assert_array_equal(part.orientations_wxyz, q[sel])
    assert all(part.orientations_wxyz is None for part in read_particles(generated))
