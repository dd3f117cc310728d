"""Particles through the release builder: a real recipe (real shell model + real GrainModel) run with
``nmc-dataset run``, loaded back with ``datasets.load_dataset``, h5py and meshio, and rebuilt from the
params bit for bit; 1 vs 2 workers (and dask) byte-identical; kill -9 and resume; recipe guard.

Particles are tiny (shells of radius ~0.9 µm, ~50 grains, 0.08 µm voxels) so the module runs in
well under a minute on one core.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from nmc_dataset.cli._main import main
from nmc_dataset.particles._voxelize import cube_grid, voxelize_cube
from nmc_dataset.pipeline._particle_shards import grain_shape_descriptors
from nmc_dataset.testing import voxelize_cube_reference
from tests.particles.fixtures import teacher_particle, write_models

REPO = Path(__file__).resolve().parents[2]
N = 4
CUBE = 64
VOXEL = 0.08
SEED = 5
CONFIGS = ["grains", "particles", f"voxels_{CUBE}"]


def _tree_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".build" not in p.parts
    }


def _recipe(models, **particles) -> dict:
    shell, grain = models
    p = {
        "n": N,
        "voxel_size_um": VOXEL,
        "cubes": [CUBE],
        "formats": ["params", "voxels", "surface"],
        "shell_model": str(shell),
        "grain_model": str(grain),
        "mesh": {"smoothing_iterations": 2},
    }
    p.update(particles)
    return {
        "format_version": 1,
        "seed": SEED,
        "particles": p,
        "dataset": {
            "name": "nmc811-particles-test",
            "version": "1.0.0",
            "particles_shard_size": 1,
            "authors": [{"name": "Doe, Jane"}],
        },
    }


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def recipe_path(models, tmp_path_factory):
    return _write(tmp_path_factory.mktemp("recipe") / "particles.yaml", _recipe(models))


@pytest.fixture(scope="module")
def built(recipe_path, tmp_path_factory):
    """The reference build: 1 worker, via the CLI."""
    out = tmp_path_factory.mktemp("ref") / "build"
    assert main(["run", str(recipe_path), "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- the N³ cubes
def test_cube_equals_voxelize_on_the_same_lattice():
    """Closed loop against the owner's voxelize: at the cube's voxel size both grids share voxel centres,
    so every labelled voxel must agree, and none may be lost to the cube's border."""
    from nmc_dataset.particles._voxelize import voxelize

    part = teacher_particle(seed=3, radius_um=0.8)
    cube = voxelize_cube(part, 40)
    assert cube.labels.shape == (40, 40, 40) and cube.labels.dtype == np.uint16
    full = voxelize(part, cube.voxel_size_um)  # pad=2 and rounding: its grid may reach past the cube
    lo = np.maximum(full.grid.index_lo, cube.grid.index_lo)  # common lattice box (x, y, z)
    hi = np.minimum(
        np.asarray(full.grid.index_lo) + full.labels.shape[::-1],
        np.asarray(cube.grid.index_lo) + cube.labels.shape[::-1],
    )

    def window(v):
        a, b = lo - v.grid.index_lo, hi - v.grid.index_lo
        return v.labels[a[2] : b[2], a[1] : b[1], a[0] : b[0]]

    assert np.array_equal(window(cube), window(full))
    assert np.count_nonzero(window(full)) == np.count_nonzero(full.labels) == np.count_nonzero(cube.labels) > 1000
    # the shell fits with the pad: the cube's faces are empty
    for a in range(3):
        assert not np.moveaxis(cube.labels, a, 0)[[0, -1]].any()


def test_cube_fast_equals_slow():
    for seed in (1, 2):
        part = teacher_particle(seed=seed, radius_um=0.6)
        assert np.array_equal(voxelize_cube(part, 21).labels, voxelize_cube_reference(part, 21).labels)


def test_cube_grid_is_centred():
    c = np.zeros(100)
    c[0] = 1.0 * np.sqrt(4 * np.pi)  # sphere of radius 1 µm
    g = cube_grid(c, 64, pad=1)
    x = g.axis_coords_um("x")
    assert x[32] == 0.0 and len(x) == 64
    # the sphere (+2 % slack) reaches exactly one voxel short of the smaller side: (31 - 1) * h = 1.02
    assert abs(g.voxel_size_um * 30 - 1.02) < 1e-3


def test_grain_shape_descriptors_known_truth():
    """Major axis along the radius -> alignment 1; tangential -> 0; elongation = SD ratio."""
    axes = np.stack([np.eye(3), np.eye(3)[[1, 0, 2]]])
    sd = np.array([[3.0, 1.0, 0.5], [2.0, 2.0, 2.0]])
    cen = np.array([[5.0, 0, 0], [4.0, 0, 0]])
    d = grain_shape_descriptors(axes, sd, cen)
    assert np.allclose(d["elongation"], [6.0, 1.0]) and np.allclose(d["radial_alignment"], [1.0, 0.0])
    d = grain_shape_descriptors(axes[:1], sd[:1], np.zeros((1, 3)))
    assert np.isnan(d["radial_alignment"][0])


# --------------------------------------------------------------------------- the release folder
def test_release_layout_and_load_dataset(built):
    """Every config loads with datasets; the voxels_64 arrays equal a fresh voxelize_cube of the particle
    rebuilt from the params rows, bit for bit; the HDF5 volumes equal a fresh voxelize at the recipe's size."""
    import datasets
    import h5py

    from nmc_dataset.export._tables import particle_from_rows
    from nmc_dataset.particles._voxelize import grain_statistics, voxelize
    from nmc_dataset.pipeline._manifest import verify_manifest

    m = verify_manifest(built)
    assert set(m["counts"]) == set(CONFIGS) and m["counts"]["particles"] == N
    for c in CONFIGS:
        assert len(list((built / "data" / c).glob("train-*-of-00004.parquet"))) == 4
    files = {f["path"] for f in m["files"]}
    assert {
        "models/grain_model/model.json",
        "models/grain_model/gnet.safetensors",
        "recipe.yaml",
        "README.md",
        f"figures/voxels_{CUBE}_labels_slices.png",
        "figures/rendered_particle_000000_cut_open.png",
    } <= files
    assert {f"voxels/voxels-{i:05d}-of-00004.h5" for i in range(4)} <= files

    ps = datasets.load_dataset(str(built), "particles", split="train")
    gs = datasets.load_dataset(str(built), "grains", split="train")
    vs = datasets.load_dataset(str(built), f"voxels_{CUBE}", split="train").with_format("numpy")
    assert ps.num_rows == N and vs.num_rows == N and gs.num_rows == sum(ps["n_grains"])
    assert vs.features["labels"].shape == (CUBE,) * 3 and vs.features["labels"].dtype == "uint16"
    gdf = gs.to_pandas()
    assert gdf["elongation"].ge(1.0).all() and gdf["radial_alignment"].between(0, 1).all()
    for i, row in enumerate(ps):
        g = gdf[gdf.particle_id == row["particle_id"]]
        part = particle_from_rows(row, {k: g[k].to_numpy() for k in g.columns})
        assert vs[i]["particle_id"] == row["particle_id"]
        cube = voxelize_cube(part, CUBE)
        assert np.array_equal(np.asarray(vs[i]["labels"]), cube.labels)
        assert vs[i]["voxel_size_um"] == cube.voxel_size_um
        full = voxelize(part, VOXEL)
        with h5py.File(built / f"voxels/voxels-{i:05d}-of-00004.h5", "r") as f:
            ds = f[f"particles/{row['particle_id']:06d}"]
            assert np.array_equal(ds[...], full.labels) and ds.attrs["voxel_size_um"] == VOXEL
        st = grain_statistics(full.labels, full.grid, part.n_grains)
        assert np.array_equal(g.sort_values("label")["voxels"].to_numpy(), st["voxels"])


def test_meshes_open_with_meshio_and_trimesh(built):
    import meshio
    import trimesh
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    for pid in range(N):
        stem = built / "meshes" / "surfaces" / f"particle_{pid:06d}"
        shell = trimesh.load(f"{stem}_shell.stl")
        assert shell.is_watertight
        sm = meshio.read(f"{stem}_shell.stl")
        assert len(sm.cells_dict["triangle"]) == len(shell.faces)
        # (meshio 5 cannot parse trimesh's binary PLY with per-face label properties: trimesh reads it)
        ply = trimesh.load(f"{stem}_grains.ply", process=False)
        assert len(ply.faces) > 0
        r = vtkXMLPolyDataReader()
        r.SetFileName(f"{stem}_grains.vtp")
        r.Update()
        pd = r.GetOutput()
        assert pd.GetNumberOfCells() == len(ply.faces)
        assert pd.GetCellData().GetArray("BoundaryLabels").GetNumberOfComponents() == 2
    assert (built / "voxels" / "voxels-00000-of-00004.xdmf").read_text().count("voxels-00000-of-00004.h5") == 1


def test_card_describes_the_configs(built):
    from nmc_dataset.pipeline._card import validate_card

    text = (built / "README.md").read_text()
    data = validate_card(text)
    assert sorted(c["config_name"] for c in data.configs) == CONFIGS
    for needle in (
        "## Grain descriptors",
        "`radial_alignment`",
        "`elongation`",
        "`volume_um3`",
        f'load_dataset("path/to/this/folder", "voxels_{CUBE}"',
        f"figures/voxels_{CUBE}_labels_slices.png",
        f"{CUBE}×{CUBE}×{CUBE} `uint16`",
    ):
        assert needle in text, needle


@pytest.mark.slow  # ~60 s; the builder's own 1-vs-2-worker test and the dask test run by default
def test_two_workers_byte_identical(built, recipe_path, tmp_path):
    out = tmp_path / "w2"
    assert main(["run", str(recipe_path), "--out", str(out), "--workers", "2"]) == 0
    ref = _tree_bytes(built)
    assert _tree_bytes(out) == ref
    assert (out / "manifest.json").read_bytes() == (built / "manifest.json").read_bytes()


@pytest.mark.parametrize("processes", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dask_local_cluster_byte_identical(built, recipe_path, tmp_path, processes):
    """--executor dask --scheduler ADDRESS: an in-process LocalCluster (2 worker threads) by default,
    2 worker processes in the slow twin; both give the reference bytes."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        assert (
            main(
                [
                    "run",
                    str(recipe_path),
                    "--out",
                    str(out),
                    "--executor",
                    "dask",
                    "--scheduler",
                    cluster.scheduler_address,
                ]
            )
            == 0
        )
    assert _tree_bytes(out) == _tree_bytes(built)


def test_kill9_then_resume_same_manifest(built, recipe_path, tmp_path):
    """kill -9 a CLI build when its third shard starts; the rerun finishes the rest, to the reference bytes."""
    out = tmp_path / "killed"
    code = (
        "import sys; from nmc_dataset.cli._main import main; "
        f"sys.exit(main(['run', {str(recipe_path)!r}, '--out', {str(out)!r}]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, NMC_DATASET_FAULTS="kill-shard:2"),
    )
    assert proc.wait(timeout=600) == -signal.SIGKILL
    done = out / ".build" / "shards-particles+grains+voxels_64" / "done"
    n_done = len(list(done.glob("*.json")))
    assert 1 <= n_done < 4, "the kill must land mid-build"
    assert not (out / "manifest.json").exists()
    assert main(["run", str(recipe_path), "--out", str(out)]) == 0
    assert _tree_bytes(out) == _tree_bytes(built)
    assert not [p for p in out.rglob("*.part") if ".build" not in p.parts]


def test_damaged_extra_file_rebuilt_and_changed_recipe_guarded(built, models, tmp_path, capsys):
    """A shard whose HDF5 file is damaged is rebuilt (its extra files are part of the shard's record);
    a changed recipe is refused (exit 2, nothing touched) unless --force, which leaves no stale files."""
    out = tmp_path / "b"
    shutil.copytree(built, out)
    h5 = out / "voxels" / "voxels-00002-of-00004.h5"
    h5.write_bytes(h5.read_bytes()[:100])
    path = _write(tmp_path / "particles.yaml", _recipe(models))
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert _tree_bytes(out) == _tree_bytes(built)

    changed = _write(tmp_path / "changed.yaml", _recipe(models, n=2, formats=["params"], cubes=[16]))
    before = _tree_bytes(out)
    capsys.readouterr()
    assert main(["run", str(changed), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another recipe" in err and str(out) in err
    assert _tree_bytes(out) == before
    assert main(["run", str(changed), "--out", str(out), "--force"]) == 0
    files = set(_tree_bytes(out))
    assert not any(f.startswith(("voxels/", "meshes/")) or "voxels_64" in f for f in files), files
    assert "figures/voxels_16_labels_slices.png" in files
    assert {p.name for p in (out / "data" / "voxels_16").iterdir()} == {
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    }
    assert pq.read_table(out / "data" / "particles").num_rows == 2


def test_bad_inputs_write_nothing(models, tmp_path, capsys):
    out = tmp_path / "out"
    bad = _recipe(models, cubes=[4])
    assert main(["run", str(_write(tmp_path / "a.yaml", bad)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "particles.cubes.0" in err and "a.yaml" in err
    missing = _recipe(models, grain_model=str(tmp_path / "no-such-model"))
    assert main(["run", str(_write(tmp_path / "b.yaml", missing)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-model" in err
    bad = _recipe(models)
    bad["dataset"]["particles_shard_size"] = 0
    assert main(["run", str(_write(tmp_path / "c.yaml", bad)), "--out", str(out)]) == 2
    assert "dataset.particles_shard_size" in capsys.readouterr().err
    assert not out.exists()


def test_particles_carry_a_glb_preview_and_the_card_an_orientation_figure(built):
    """``preview_glb`` loads as a datasets Mesh (a trimesh scene), the GLB bytes load in trimesh
    with one colour per grain patch (grey: this release has no orientation model), and the card
    lists the orientation rendering."""
    import io

    import datasets
    import trimesh

    from nmc_dataset.export._preview import NO_ORIENTATION_RGB
    from nmc_dataset.pipeline._previews import PREVIEW_COLUMN

    ps = datasets.load_dataset(str(built), "particles", split="train")
    assert isinstance(ps.features[PREVIEW_COLUMN], datasets.Mesh)
    for row in ps:
        scene = row[PREVIEW_COLUMN]
        assert isinstance(scene, trimesh.Scene)
        (mesh,) = scene.geometry.values()
        assert len(mesh.faces) > 500 and scene.metadata["particle_id"] == row["particle_id"]
        assert (mesh.visual.vertex_colors[:, :3] == NO_ORIENTATION_RGB).all()
    raw = ps.cast_column(PREVIEW_COLUMN, datasets.Mesh(decode=False))[0][PREVIEW_COLUMN]
    assert raw["path"] == "particle_000000.glb" and raw["bytes"][:4] == b"glTF"
    assert len(raw["bytes"]) < 1_000_000
    again = trimesh.load(io.BytesIO(raw["bytes"]), file_type="glb")
    assert len(next(iter(again.geometry.values())).faces) > 500
    fig = "figures/particle_000000_grains_coloured_by_c_axis_orientation.png"
    assert (built / fig).is_file() and fig in (built / "README.md").read_text()
