"""Volume files of the tomography stages: round trip, kinds and format versions."""

import h5py
import numpy as np
import pytest

from nmc_dataset.errors import FormatVersionError, InputError
from nmc_dataset.tomography._volumes import read_table, read_volumes, write_volumes


def test_round_trip_keeps_dtypes_attrs_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    phase = rng.integers(0, 3, (5, 6, 7))
    ct = rng.normal(size=(5, 6, 7))
    path = write_volumes(
        tmp_path / "e.h5",
        "ct",
        {"phase": phase, "ct": ct},
        voxel_size_um=0.1,
        origin_um=(1, 2, 3),
        attrs={"imaging": {"photons": 2000}},
        tables={"particles": {"id": np.arange(1, 4)}},
    )
    arrays, meta = read_volumes(path)
    assert arrays["phase"].dtype == np.uint8 and np.array_equal(arrays["phase"], phase)
    assert arrays["ct"].dtype == np.float32 and np.allclose(arrays["ct"], ct.astype(np.float32))
    assert meta["kind"] == "ct" and meta["voxel_size_um"] == 0.1
    assert meta["imaging"] == {"photons": 2000}
    assert list(meta["origin_um"]) == [1, 2, 3]
    assert list(read_table(path, "particles")["id"]) == [1, 2, 3]
    assert not list(tmp_path.glob("*.part"))


def test_wrong_kind_missing_dataset_and_newer_version_are_input_errors(tmp_path):
    path = write_volumes(tmp_path / "s.h5", "segmentation", {"phase": np.zeros((2, 2, 2))}, voxel_size_um=1)
    with pytest.raises(InputError, match="expected an nmc-dataset ct volume"):
        read_volumes(path, kinds=("ct",))
    with pytest.raises(InputError, match="has no particle volume"):
        read_volumes(path, ["particle"])
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FormatVersionError):
        read_volumes(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_volumes(tmp_path / "junk.h5")
