"""Atomic writes, format-version checks and per-item seeds."""

import numpy as np
import pytest

from nmc_dataset._util import atomic_path, check_format, item_seed, read_json, write_json_atomic
from nmc_dataset.errors import FormatVersionError, InputError


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_json_roundtrip(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"b": 1, "a": [1.5]})
    assert read_json(tmp_path / "x.json") == {"a": [1.5], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_check_format_refuses_newer():
    meta = {"format": "k", "format_version": 9}
    with pytest.raises(FormatVersionError, match="format_version 9"):
        check_format(meta, "k", 1, "m.json")
    with pytest.raises(InputError, match="not a k file"):
        check_format({"format": "other", "format_version": 1}, "k", 1, "m.json")
    assert check_format({"format": "k", "format_version": 1}, "k", 1, "m.json") == 1


def test_item_seed_independent_of_order():
    a = np.random.default_rng(item_seed(7, 3)).random(3)
    b = np.random.default_rng(item_seed(7, 3)).random(3)
    c = np.random.default_rng(item_seed(7, 4)).random(3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
