"""Publishing with the real clients (huggingface_hub, requests) against loopback servers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nmc_dataset.cli._main import main
from nmc_dataset.pipeline._publish import zenodo_key
from tests.pipeline.conftest import RELEASE, make_release
from tests.pipeline.hub_server import HubServer
from tests.pipeline.zenodo_server import ZenodoServer

REPO = "org/nmc811-test"


def _expected_files(folder: Path) -> dict[str, bytes]:
    m = json.loads((folder / "manifest.json").read_text())
    files = {e["path"]: (folder / e["path"]).read_bytes() for e in m["files"]}
    files["manifest.json"] = (folder / "manifest.json").read_bytes()
    return files


def _one_line_error(err: str, *needles: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def hub():
    with HubServer() as h:
        yield h


@pytest.fixture
def zenodo():
    with ZenodoServer() as z:
        yield z


# --------------------------------------------------------------------------- Hugging Face Hub
def test_hf_every_file_arrives_and_tag(release, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.state.token)
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 0
    repo = hub.repo(REPO)
    expected = _expected_files(release)
    assert set(repo.files) == set(expected)
    for path, data in expected.items():
        assert repo.files[path] == data, path
    # both transfer paths were exercised: large parquet via LFS, small text files inline
    assert any(p.startswith("data/voxels_16/") for p in repo.lfs_paths)
    assert "README.md" not in repo.lfs_paths and "manifest.json" not in repo.lfs_paths
    # card and manifest come last, so a half-done upload never looks complete
    assert {"README.md", "manifest.json"} <= set(repo.commits[-1][2])
    assert repo.tags == {"v1.0.0": repo.head}
    assert "published org/nmc811-test v1.0.0" in capsys.readouterr().out

    # the same version again: refused (tag exists), nothing committed
    n_commits = len(repo.commits)
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 2
    _one_line_error(capsys.readouterr().err, "tag v1.0.0 already exists")
    assert len(repo.commits) == n_commits

    # another tag on unchanged content: nothing re-uploaded, no empty commit
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url, "--revision", "v1.0.0-b"]) == 0
    assert len(repo.commits) == n_commits and repo.tags["v1.0.0-b"] == repo.head


def test_hf_new_version_replaces_stale_shards(tmp_path, hub, monkeypatch):
    """v2 has fewer shards: the Hub repo must not keep v1's extra shards (load_dataset would read them)."""
    monkeypatch.setenv("HF_TOKEN", hub.state.token)
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    make_release(v1)
    make_release(v2, n_items=10, shard_size=5, release={**RELEASE, "version": "2.0.0"})
    assert main(["publish", str(v1), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 0
    assert main(["publish", str(v2), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 0
    repo = hub.repo(REPO)
    assert repo.files == _expected_files(v2)
    assert set(repo.tags) == {"v1.0.0", "v2.0.0"}


def test_hf_interrupted_upload_resumes(release, hub, monkeypatch, capsys):
    """The Hub fails after the first commit: the rerun uploads only what is missing, then tags."""
    from nmc_dataset.pipeline._publish import publish_hf

    token = hub.state.token
    hub.state.fail_commit_after = 2
    with pytest.raises(Exception, match="500"):
        publish_hf(release, REPO, endpoint=hub.url, token=token, batch_files=5)
    repo = hub.repo(REPO)
    first = set(repo.commits[0][2])
    assert len(repo.commits) == 1 and len(first) == 5 and repo.tags == {}
    hub.state.fail_commit_after = None
    r = publish_hf(release, REPO, endpoint=hub.url, token=token, batch_files=5)
    assert set(r["skipped"]) == first and not first & set(r["uploaded"])
    assert repo.files == _expected_files(release) and repo.tags == {"v1.0.0": repo.head}


def test_hf_token_from_login_cache(release, hub, monkeypatch):
    import huggingface_hub.constants as hc

    Path(hc.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(hc.HF_TOKEN_PATH).write_text(hub.state.token)
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 0
    assert hub.repo(REPO).files == _expected_files(release)


def test_hf_dry_run_changes_nothing(release, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.state.token)
    before = {p: p.read_bytes() for p in release.rglob("*") if p.is_file()}
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.state.requests == []
    assert {p: p.read_bytes() for p in release.rglob("*") if p.is_file()} == before
    assert REPO in out and "version:  1.0.0" in out and "revision: v1.0.0" in out
    size = (release / "data/voxels_16/train-00000-of-00005.parquet").stat().st_size
    assert f"{size:>12d}  data/voxels_16/train-00000-of-00005.parquet" in out
    assert f"files:    {len(_expected_files(release))} (" in out
    assert hub.state.repos == {}


def test_hf_missing_credentials(release, hub, capsys):
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 2
    _one_line_error(capsys.readouterr().err, "no Hugging Face token", "HF_TOKEN")
    assert hub.state.requests == []


def test_token_never_leaks(release, hub, zenodo, monkeypatch, capfd, caplog, tmp_path):
    """A token must not appear in output, logs, errors or any written file, on success or on refusal."""
    caplog.set_level(logging.DEBUG)
    secret_hf, secret_z = hub.state.token, zenodo.state.token
    monkeypatch.setenv("HF_TOKEN", secret_hf)
    monkeypatch.setenv("ZENODO_TOKEN", secret_z)
    assert main(["-v", "publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 0
    assert main(["-v", "publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    # refused tokens: the servers answer 401 and the error is reported without echoing the token
    monkeypatch.setenv("HF_TOKEN", "hf_WRONGwrongWRONG123456")
    monkeypatch.setenv("ZENODO_TOKEN", "zen_WRONGwrongWRONG123456")
    assert main(["publish", str(release), "--to", "hf:org/other", "--endpoint", hub.url]) == 2
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api, "--new-version-of", "1001"]) == 2
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert "401" in err
    for secret in (secret_hf, secret_z, "hf_WRONGwrongWRONG123456", "zen_WRONGwrongWRONG123456"):
        assert secret not in text
        for p in tmp_path.rglob("*"):
            if p.is_file() and "hf_home" not in p.parts:
                assert secret.encode() not in p.read_bytes(), p


def test_checksum_mismatch_refused_naming_file(release, hub, zenodo, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.state.token)
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    victim = release / "data" / "particles" / "train-00003-of-00005.parquet"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(data))
    assert main(["publish", str(release), "--to", f"hf:{REPO}", "--endpoint", hub.url]) == 2
    _one_line_error(capsys.readouterr().err, "train-00003-of-00005.parquet", "sha256")
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 2
    _one_line_error(capsys.readouterr().err, "train-00003-of-00005.parquet")
    assert hub.state.requests == [] and zenodo.state.depositions == {}


def test_bad_target_and_folder(release, tmp_path, capsys):
    assert main(["publish", str(release), "--to", "s3:bucket"]) == 2
    _one_line_error(capsys.readouterr().err, "hf:ORG/NAME or zenodo")
    assert main(["publish", str(release)]) == 2
    _one_line_error(capsys.readouterr().err, "--to")
    assert main(["publish", str(tmp_path / "nope"), "--to", "zenodo"]) == 2
    _one_line_error(capsys.readouterr().err, "manifest.json")


# --------------------------------------------------------------------------- Zenodo
def test_zenodo_publish_every_file(release, zenodo, monkeypatch, capsys):
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    ((dep_id, dep),) = zenodo.state.depositions.items()
    assert dep["submitted"]
    expected = {zenodo_key(p): d for p, d in _expected_files(release).items()}
    assert zenodo.files(dep_id) == expected
    md = dep["metadata"]
    assert md["title"] == "NMC811 test particles" and md["upload_type"] == "dataset"
    assert md["creators"] == [{"name": "Doe, Jane", "affiliation": "Test Lab", "orcid": "0000-0002-1825-0097"}]
    assert md["license"] == "cc-by-4.0" and md["version"] == "1.0.0"
    assert "10.5072/zenodo" in capsys.readouterr().out
    # publishing the same build again is a no-op that reports the record
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    assert len(zenodo.state.depositions) == 1 and "already published" in capsys.readouterr().out


def test_zenodo_interrupted_upload_resumes_without_duplicates(release, zenodo, monkeypatch, capsys):
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    zenodo.state.fail_put_after = 5  # the 5th PUT fails: 4 files are in the bucket
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 2
    _one_line_error(capsys.readouterr().err, "503")
    ((dep_id, dep),) = zenodo.state.depositions.items()
    assert not dep["submitted"] and len(zenodo.files(dep_id)) == 4
    zenodo.state.fail_put_after = None
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    assert list(zenodo.state.depositions) == [dep_id]  # the same draft was resumed
    expected = {zenodo_key(p): d for p, d in _expected_files(release).items()}
    assert zenodo.files(dep_id) == expected
    assert sorted(zenodo.state.puts) == sorted(expected)  # every file PUT exactly once
    assert zenodo.state.depositions[dep_id]["submitted"]


def test_zenodo_new_version(tmp_path, zenodo, monkeypatch):
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    make_release(v1)
    make_release(v2, n_items=10, shard_size=5, release={**RELEASE, "version": "1.1.0"})
    assert main(["publish", str(v1), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    (first,) = zenodo.state.depositions
    assert main(["publish", str(v2), "--to", "zenodo", "--endpoint", zenodo.api, "--new-version-of", str(first)]) == 0
    deps = zenodo.state.depositions
    assert len(deps) == 2
    second = max(deps)
    assert deps[second]["conceptrecid"] == deps[first]["conceptrecid"] and deps[second]["submitted"]
    assert zenodo.files(second) == {zenodo_key(p): d for p, d in _expected_files(v2).items()}
    assert zenodo.files(first) == {zenodo_key(p): d for p, d in _expected_files(v1).items()}
    assert deps[second]["metadata"]["version"] == "1.1.0"


def test_zenodo_draft_then_publish(release, zenodo, monkeypatch, capsys):
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api, "--draft"]) == 0
    ((dep_id, dep),) = zenodo.state.depositions.items()
    assert not dep["submitted"] and dep["metadata"]["title"] == "NMC811 test particles"
    assert "ready for review" in capsys.readouterr().out
    n_puts = len(zenodo.state.puts)
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api]) == 0
    assert list(zenodo.state.depositions) == [dep_id] and dep["submitted"]
    assert len(zenodo.state.puts) == n_puts  # nothing uploaded twice


def test_zenodo_missing_token_and_metadata(tmp_path, zenodo, monkeypatch, capsys):
    out = tmp_path / "b"
    make_release(out, release={k: v for k, v in RELEASE.items() if k != "authors"})
    capsys.readouterr()  # the build's own log lines
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    assert main(["publish", str(out), "--to", "zenodo", "--endpoint", zenodo.api]) == 2
    _one_line_error(capsys.readouterr().err, "authors")
    monkeypatch.delenv("ZENODO_TOKEN")
    make_release(tmp_path / "c")
    capsys.readouterr()
    assert main(["publish", str(tmp_path / "c"), "--to", "zenodo", "--endpoint", zenodo.api]) == 2
    _one_line_error(capsys.readouterr().err, "ZENODO_TOKEN")
    assert zenodo.state.depositions == {}


def test_zenodo_dry_run_changes_nothing(release, zenodo, monkeypatch, capsys):
    monkeypatch.setenv("ZENODO_TOKEN", zenodo.state.token)
    assert main(["publish", str(release), "--to", "zenodo", "--endpoint", zenodo.api, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert zenodo.api in out and "version:  1.0.0" in out and "dry run" in out
    assert zenodo.state.depositions == {} and not (release / ".publish").exists()
