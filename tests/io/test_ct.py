"""CT volume readers: formats, datasets, raw, and the errors users see."""

import h5py
import numpy as np
import pytest
import tifffile

from nmc_dataset.errors import InputError
from nmc_dataset.io._ct import parse_shape, read_volume


@pytest.fixture
def vol(rng):
    return rng.integers(0, 65535, (6, 7, 8), dtype=np.uint16)


def test_tiff_npy_h5_raw_roundtrip(tmp_path, vol):
    tifffile.imwrite(tmp_path / "v.tif", vol)
    np.save(tmp_path / "v.npy", vol)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["scan/volume"] = vol
        f["scan/pixel"] = np.ones(3)
    vol.astype("<u2").tofile(tmp_path / "v.raw")
    for p, kw in (
        ("v.tif", {}),
        ("v.npy", {}),
        ("v.h5", {"dataset": "scan/volume"}),
        ("v.h5", {}),
        ("v.raw", {"shape": "6,7,8", "dtype": "uint16"}),
    ):
        got = read_volume(tmp_path / p, **kw)
        assert got.shape == (6, 7, 8) and got.dtype == np.uint16
        np.testing.assert_array_equal(got, vol)
    assert isinstance(read_volume(tmp_path / "v.npy"), np.memmap)  # no copy of big volumes


def test_errors_name_the_file(tmp_path, vol):
    with pytest.raises(InputError, match="missing.tif: file not found"):
        read_volume(tmp_path / "missing.tif")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="bad.tif: cannot read TIFF"):
        read_volume(tmp_path / "bad.tif")
    np.save(tmp_path / "flat.npy", vol[0])
    with pytest.raises(InputError, match="flat.npy: expected a 3D volume"):
        read_volume(tmp_path / "flat.npy")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = vol
        f["b"] = vol
    with pytest.raises(InputError, match="two.h5: name the volume with --dataset; datasets in the file: a, b"):
        read_volume(tmp_path / "two.h5")
    with pytest.raises(InputError, match="no dataset 'c'; datasets in the file: a, b"):
        read_volume(tmp_path / "two.h5", dataset="c")
    vol.tofile(tmp_path / "v.raw")
    with pytest.raises(InputError, match="needs --shape"):
        read_volume(tmp_path / "v.raw")
    with pytest.raises(InputError, match="bytes but shape"):
        read_volume(tmp_path / "v.raw", shape=(6, 7, 9), dtype="uint16")
    (tmp_path / "v.xyz").write_text("x")
    with pytest.raises(InputError, match="unknown volume format"):
        read_volume(tmp_path / "v.xyz")
    with pytest.raises(InputError, match="Z,Y,X"):
        parse_shape("3,4")
