"""Voxel HDF5 + XDMF: layout, schema, and that ParaView's reader (VTK Xdmf) opens it."""

import json
import xml.etree.ElementTree as ET
from importlib import resources

import h5py
import jsonschema
import numpy as np

from nmc_dataset.export._hdf5 import describe_layout, list_volumes, read_label_volume
from tests.particles.fixtures import N_GEN, VOXEL


def test_layout_matches_schema(generated):
    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "voxels-hdf5.schema.json").read_text())
    layout = describe_layout(generated / "voxels.h5")
    jsonschema.Draft202012Validator(schema).validate(layout)
    assert list_volumes(generated / "voxels.h5") == list(range(N_GEN))
    with h5py.File(generated / "voxels.h5") as f:
        ds = f["particles/000000"]
        assert ds.compression == "gzip" and ds.chunks is not None
        assert ds.attrs["voxel_size_um"] == VOXEL
        origin = ds.attrs["origin_um"]
        # the lattice is anchored at the particle centre: origin is an integer number of voxels
        np.testing.assert_allclose(origin / VOXEL, np.rint(origin / VOXEL), atol=1e-9)


def test_xdmf_points_at_the_datasets_and_parses(generated):
    root = ET.parse(generated / "voxels.xdmf").getroot()
    grids = root.findall(".//Grid[@GridType='Uniform']")
    assert len(grids) == N_GEN
    with h5py.File(generated / "voxels.h5") as f:
        for g in grids:
            item = g.find("Attribute/DataItem")
            fname, path = item.text.strip().split(":")
            assert fname == "voxels.h5"
            shape = tuple(int(x) for x in item.get("Dimensions").split())
            assert f[path].shape == shape
            topo = tuple(int(x) for x in g.find("Topology").get("Dimensions").split())
            assert topo == tuple(s + 1 for s in shape)


def test_vtk_xdmf_reader_opens_the_sidecar(generated):
    """ParaView's Xdmf reader (VTK) reads the labels on the right geometry."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXdmf2 import vtkXdmfReader

    vol = read_label_volume(generated / "voxels.h5", 0)
    r = vtkXdmfReader()
    r.SetFileName(str(generated / "voxels.xdmf"))
    r.UpdateInformation()
    r.UpdateTimeStep(0.0)
    img = r.GetOutputDataObject(0)
    if img.IsA("vtkMultiBlockDataSet"):  # pragma: no cover - depends on the reader's collection handling
        img = img.GetBlock(0)
    a = vtk_to_numpy(img.GetCellData().GetArray("grain"))
    np.testing.assert_array_equal(a, vol.labels.ravel())
    b = img.GetBounds()
    lo = vol.origin_um - VOXEL / 2
    np.testing.assert_allclose([b[0], b[2], b[4]], lo, atol=1e-9)


def test_per_label_orientation_table(oriented_generated, generated):
    import pyarrow.parquet as pq

    from nmc_dataset.export._hdf5 import read_orientations

    schema = json.loads((resources.files("nmc_dataset") / "schemas" / "voxels-hdf5.schema.json").read_text())
    layout = describe_layout(oriented_generated / "voxels.h5")
    jsonschema.Draft202012Validator(schema).validate(layout)
    assert sorted(layout["grain_tables"]) == [f"grains/{i:06d}" for i in range(N_GEN)]
    assert "grain_tables" not in describe_layout(generated / "voxels.h5")
    g = pq.read_table(oriented_generated / "grains.parquet")
    with h5py.File(oriented_generated / "voxels.h5") as f:
        for pid in range(N_GEN):
            sel = g.column("particle_id").to_numpy() == pid
            t = f[f"grains/{pid:06d}"]
            assert f[f"particles/{pid:06d}"].attrs["grain_table"] == f"grains/{pid:06d}"
            np.testing.assert_array_equal(t["label"][...], g.column("label").to_numpy()[sel])
            for col in ("orientation_quat_wxyz", "euler_bunge_rad", "c_axis_xyz"):
                np.testing.assert_array_equal(t[col][...], np.array(g.column(col).to_pylist())[sel])
            assert "particle frame" in t.attrs["frame"]
            vol = read_label_volume(oriented_generated / "voxels.h5", pid)
            np.testing.assert_array_equal(
                vol.orientations_wxyz, read_orientations(oriented_generated / "voxels.h5", pid)
            )
    assert read_orientations(generated / "voxels.h5", 0) is None
