"""manifest.json: byte-identical for identical content; verify_manifest names the first bad file."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from nmc_dataset.errors import FormatVersionError, InputError, PublishError
from nmc_dataset.pipeline._manifest import (
    compute_manifest,
    content_files,
    read_manifest,
    update_manifest_entries,
    verify_manifest,
    write_manifest,
)


def _folder(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


FILES = {
    "README.md": b"# card\n",
    "data/particles/train-00000-of-00001.parquet": b"PAR1...",
    "models/shell_model.json": b"{}",
    "figures/a.png": b"\x89PNG",
}


def test_identical_bytes_for_identical_content(tmp_path):
    a = _folder(tmp_path / "a", FILES)
    # b: same content, created in another order, other mtimes, plus hidden local state
    b = tmp_path / "b"
    for rel in reversed(list(FILES)):
        _folder(b, {rel: FILES[rel]})
        os.utime(b / rel, (1, 1))
    _folder(b, {".build/done/shard-00000.json": b"{}", ".publish/zenodo.json": b"{}"})
    ma = write_manifest(a, dataset={"name": "x", "version": "1.0.0"}, recipe_hash="abc", counts={"particles": 3})
    write_manifest(b, dataset={"version": "1.0.0", "name": "x"}, recipe_hash="abc", counts={"particles": 3})
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert [e["path"] for e in ma["files"]] == sorted(FILES)
    entry = {e["path"]: e for e in ma["files"]}["README.md"]
    assert entry == {"path": "README.md", "size": 7, "sha256": hashlib.sha256(b"# card\n").hexdigest()}
    assert ma["format"] == "nmc-dataset/manifest" and ma["format_version"] == 1
    assert verify_manifest(a)["recipe_hash"] == "abc"


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda f: (f / "models/shell_model.json").unlink(), "missing"),
        (lambda f: (f / "figures/a.png").write_bytes(b"\x89PNG+"), "size"),
        (lambda f: (f / "README.md").write_bytes(b"# card!"), "sha256"),
        (lambda f: _folder(f, {"data/particles/extra.parquet": b"x"}), "not listed"),
    ],
)
def test_verify_names_the_file(tmp_path, damage, needle):
    f = _folder(tmp_path / "f", FILES)
    write_manifest(f, dataset={"version": "1"}, counts={})
    damage(f)
    with pytest.raises(PublishError, match=needle) as e:
        verify_manifest(f)
    assert str(f) in str(e.value)


def test_exclude_and_skip(tmp_path):
    f = _folder(tmp_path / "f", {**FILES, "grain_model/checkpoints/c1.pt": b"big", "sections/s.json": b"{}"})
    m = write_manifest(f, dataset={"version": "1"}, counts={}, exclude=["grain_model/checkpoints/*", "sections/"])
    assert m["exclude"] == ["grain_model/checkpoints/*", "sections/"]
    assert "sections/s.json" not in [e["path"] for e in m["files"]]
    assert content_files(f, m["exclude"]) == sorted(FILES)
    (f / "sections" / "s.json").write_bytes(b"changed")  # excluded: does not matter
    verify_manifest(f)
    (f / "README.md").write_bytes(b"# new card\n")
    with pytest.raises(PublishError, match="README.md"):
        verify_manifest(f)
    verify_manifest(f, skip={"README.md"})
    update_manifest_entries(f, ["README.md"])
    verify_manifest(f)


def test_format_checks(tmp_path):
    f = _folder(tmp_path / "f", FILES)
    with pytest.raises(PublishError, match="no manifest.json"):
        read_manifest(f)
    with pytest.raises(InputError, match="not a readable parquet") as e:
        compute_manifest(f)  # the fake parquet: counts are read from real footers
    assert "train-00000-of-00001.parquet" in str(e.value)
    m = compute_manifest(f, counts={})
    m["format_version"] = 2
    (f / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatVersionError, match="format_version 2"):
        verify_manifest(f)
