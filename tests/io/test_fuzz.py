"""Fuzzing the readers users feed by hand: damaged .ang/.ctf scans and recipes.

Random truncations, byte flips and header edits must end in a correct read or in a clean
:class:`~nmc_dataset.errors.NmcError` (one line at the CLI), never in another exception.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmc_dataset.errors import NmcError
from nmc_dataset.io._ebsd import read_ebsd, write_ang, write_ctf
from nmc_dataset.pipeline._recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _scan_bytes(suffix: str) -> bytes:
    import tempfile

    rng = np.random.default_rng(0)
    ny, nx = 6, 7
    euler = rng.uniform(0, [2 * np.pi, np.pi, 2 * np.pi], (ny, nx, 3))
    phase = np.ones((ny, nx), np.int64)
    phase[0, 0] = 0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"s{suffix}"
        if suffix == ".ang":
            write_ang(path, euler, rng.uniform(0, 1, (ny, nx)), rng.uniform(0, 1, (ny, nx)), phase, 0.05)
        else:
            write_ctf(path, euler, phase, 0.05)
        return path.read_bytes()


VALID = {s: _scan_bytes(s) for s in (".ang", ".ctf")}


def _read_or_clean_error(path: Path):
    try:
        scan = read_ebsd(path)
    except NmcError as e:
        assert "\n" not in str(e).strip()
        return None
    # a read that succeeds is self-consistent
    ny, nx = scan.shape
    assert scan.euler_rad.shape == (ny, nx, 3)
    assert scan.ci.shape == scan.iq.shape == scan.indexed.shape == (ny, nx)
    assert all(np.isfinite(scan.step_um)) and min(scan.step_um) > 0
    return scan


@pytest.mark.parametrize("suffix", [".ang", ".ctf"])
def test_valid_scans_read(tmp_path, suffix):
    p = tmp_path / f"s{suffix}"
    p.write_bytes(VALID[suffix])
    assert _read_or_clean_error(p).shape == (6, 7)


@pytest.mark.parametrize("suffix", [".ang", ".ctf"])
@FUZZ
@given(data=st.data())
def test_truncated_scans(tmp_path, suffix, data):
    raw = VALID[suffix]
    cut = data.draw(st.integers(0, len(raw) - 1))
    p = tmp_path / f"t{suffix}"
    p.write_bytes(raw[:cut])
    _read_or_clean_error(p)


@pytest.mark.parametrize("suffix", [".ang", ".ctf"])
@FUZZ
@given(data=st.data())
def test_byte_flips(tmp_path, suffix, data):
    raw = bytearray(VALID[suffix])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    p = tmp_path / f"f{suffix}"
    p.write_bytes(bytes(raw))
    _read_or_clean_error(p)


@pytest.mark.parametrize("suffix", [".ang", ".ctf"])
@FUZZ
@given(data=st.data())
def test_header_edits(tmp_path, suffix, data):
    lines = VALID[suffix].decode("latin-1").splitlines(keepends=True)
    header = [i for i, ln in enumerate(lines) if ln.startswith("#") or (suffix == ".ctf" and i < 15)]
    i = data.draw(st.sampled_from(header))
    words = lines[i].split()
    value = data.draw(
        st.one_of(
            st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "abc", "3.5", "999999999"]), st.text(max_size=12)
        )
    )
    if len(words) > 1 and data.draw(st.booleans()):
        words[data.draw(st.integers(1, len(words) - 1))] = value
        lines[i] = " ".join(words) + "\n"
    else:
        lines[i] = "" if data.draw(st.booleans()) else value + "\n"
    p = tmp_path / f"h{suffix}"
    p.write_bytes("".join(lines).encode("latin-1", "replace"))
    _read_or_clean_error(p)


RECIPE = (ROOT / "recipes" / "quick.yaml").read_bytes()


def _load_or_clean_error(path: Path):
    try:
        recipe = load_recipe(path)
    except NmcError as e:
        assert "\n" not in str(e).strip()
        return None
    assert isinstance(recipe, dict) and "seed" in recipe
    return recipe


def test_quick_recipe_loads(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes(RECIPE)
    assert _load_or_clean_error(p)["name"] == "quick"


@FUZZ
@given(data=st.data())
def test_damaged_recipes(tmp_path, data):
    raw = bytearray(RECIPE)
    how = data.draw(st.sampled_from(["truncate", "flip", "edit"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    else:
        lines = bytes(raw).decode().splitlines(keepends=True)
        i = data.draw(st.integers(0, len(lines) - 1))
        if ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            value = data.draw(
                st.sampled_from(
                    ["-1", "0", "1e400", "[]", "{}", "null", "abc", "[1, 2", "!!python/object:os.system 'x'"]
                )
            )
            lines[i] = f"{key}: {value}\n"
        raw = bytearray("".join(lines).encode())
    p = tmp_path / "r.yaml"
    p.write_bytes(bytes(raw))
    _load_or_clean_error(p)
