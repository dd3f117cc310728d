"""Fixtures of the dataset tests: a complete release folder (shards, figures, card, manifest)."""

from __future__ import annotations

import shutil

import pytest

from nmc_dataset.pipeline._build import build_dataset
from nmc_dataset.pipeline._card import write_card
from nmc_dataset.pipeline._card_figures import card_figures
from nmc_dataset.pipeline._manifest import write_manifest
from tests.pipeline import shardfns

RELEASE = {
    "name": "nmc811-test",
    "pretty_name": "NMC811 test particles",
    "version": "1.0.0",
    "license": "cc-by-4.0",
    "authors": [{"name": "Doe, Jane", "affiliation": "Test Lab", "orcid": "0000-0002-1825-0097"}],
    "tags": ["batteries", "nmc811"],
    "hub_id": "org/nmc811-test",
}


def make_release(out, *, n_items=23, shard_size=5, release=RELEASE):
    build_dataset(out, n_items, shard_size, shardfns.make_shard, ["particles", "voxels_16"], recipe_hash="h1")
    figs = card_figures(out)
    write_card(out, release, recipe_hash="h1", figures=figs)
    return write_manifest(out, dataset=release, recipe_hash="h1")


@pytest.fixture(scope="session")
def _release_template(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "build"
    make_release(out)
    return out


@pytest.fixture
def release(tmp_path, _release_template):
    """A fresh copy of a built release folder (23 items, 2 configs, 5 shards each)."""
    out = tmp_path / "build"
    shutil.copytree(_release_template, out)
    return out


@pytest.fixture(autouse=True)
def _isolated_credentials(monkeypatch, tmp_path):
    """No real tokens or login caches leak into the tests; xet off (the loopback Hub speaks LFS)."""
    import huggingface_hub.constants as hc

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ZENODO_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(hc, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hc, "HF_HOME", str(home))
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hc, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    yield
    if not was_disabled:
        enable_progress_bars()
    # cli.main() binds the nmc_dataset log handler to this test's captured stderr: drop it, so a
    # later test does not log into a closed stream
    from nmc_dataset._util import log

    log.handlers[:] = []
