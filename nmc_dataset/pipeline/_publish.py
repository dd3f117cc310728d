"""Publish a build folder to the Hugging Face Hub or to Zenodo.

Both targets first run :func:`~nmc_dataset.pipeline._manifest.verify_manifest` and refuse a folder
whose files no longer match ``manifest.json``. The uploaded set is the manifest's files plus
``manifest.json``; hidden local state (``.build/``, ``.publish/``) is never uploaded.

Hugging Face Hub (``huggingface_hub.HfApi``): the dataset repository is created if needed
(``exist_ok``), files that already exist remotely with the same content are skipped, the rest go up
in one commit per batch (data first, ``README.md`` and ``manifest.json`` in the last commit, so a
half-finished upload never looks complete), remote files that are not part of the build are
deleted in that last commit (stale shards of an earlier version would otherwise be loaded by
``load_dataset``), and the version is tagged (``--revision``, default ``v<version>``).
Token: the ``token`` argument, else ``HF_TOKEN``, else the login cache
(``huggingface_hub.get_token()``).

Zenodo (legacy REST deposit API, ``requests``): create a deposition (or a new version of a
published record), upload every file into the deposition's bucket with ``PUT``, set the metadata
(from the manifest's release block: title, creators, license, version, keywords, description),
publish. Zenodo has no folders: a file's key is its relative path with ``/`` replaced by ``__``.
The deposition id is remembered in ``<build>/.publish/zenodo-<host>.json``; an interrupted upload
resumes in the same draft and skips files whose MD5 checksum already matches in the bucket.
Sandbox (``https://sandbox.zenodo.org/api``) by default; ``production=True`` for zenodo.org.
Token: ``ZENODO_TOKEN``. Tokens are sent in ``Authorization`` headers only and never printed,
logged or written; error messages are scrubbed of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

import requests

from nmc_dataset import __version__
from nmc_dataset._util import human_bytes, log, progress, write_json_atomic
from nmc_dataset.errors import PublishError
from nmc_dataset.pipeline._build import sha256_file
from nmc_dataset.pipeline._manifest import MANIFEST, verify_manifest

SANDBOX_API = "https://sandbox.zenodo.org/api"
PRODUCTION_API = "https://zenodo.org/api"
METHOD_PAPER_ARXIV = "2407.05333"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- shared helpers
@dataclasses.dataclass
class UploadPlan:
    """What a publish would upload."""

    target: str
    version: str
    revision: str | None
    files: list  # [(relative path, size)]

    @property
    def total_bytes(self) -> int:
        return sum(s for _, s in self.files)

    def describe(self) -> str:
        lines = [f"target:   {self.target}", f"version:  {self.version}"]
        if self.revision:
            lines.append(f"revision: {self.revision}")
        lines.append(f"files:    {len(self.files)} ({human_bytes(self.total_bytes)})")
        lines += [f"  {s:>12d}  {p}" for p, s in self.files]
        return "\n".join(lines)


def _scrub(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def upload_files(folder: str | os.PathLike) -> tuple[dict, list[tuple[str, int]]]:
    """Verify the manifest and return ``(manifest, [(path, size), ...])`` of the files to upload."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError("build folder not found", folder)
    m = verify_manifest(folder)
    files = [(e["path"], int(e["size"])) for e in m["files"]]
    files.append((MANIFEST, (folder / MANIFEST).stat().st_size))
    return m, files


def parse_target(target: str) -> tuple[str, str | None]:
    """``"hf:ORG/NAME"`` -> ``("hf", "ORG/NAME")``; ``"zenodo"`` -> ``("zenodo", None)``.

    Parameters
    ----------
    target : str
        ``hf:ORG/NAME`` or ``zenodo``.

    Returns
    -------
    kind : str
        ``"hf"`` or ``"zenodo"``.
    repo_id : str or None
        ``ORG/NAME`` for the Hub.

    Raises
    ------
    PublishError
        For any other target.
    """
    if target == "zenodo":
        return "zenodo", None
    if target.startswith("hf:"):
        repo_id = target[3:]
        if not _REPO_ID.match(repo_id):
            raise PublishError(f"--to {target}: expected hf:ORG/NAME (letters, digits, '.', '_', '-')")
        return "hf", repo_id
    raise PublishError(f"--to {target!r}: expected hf:ORG/NAME or zenodo")


def _default_revision(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


def check_revision(revision: str | None, version: str) -> str:
    """The tag to publish: ``revision`` or ``v<version>``.

    A revision that reads as a version number (``v1.0.0``, ``1.0``, ``v1.0.0-rc1``) must carry the
    dataset's own version, so that a tag never claims a version the files do not have; other
    names (``preview``) are accepted as given.
    """

    if not revision:
        return _default_revision(version)
    m = re.match(r"^v?(\d+(?:\.\d+)*)(?:[-+].*)?$", revision)
    if m and m.group(1) != version.lstrip("v"):
        raise PublishError(
            f"--revision {revision} names version {m.group(1)} but the dataset is version {version} "
            f"(manifest.json); set dataset.version in the recipe and re-run, or use --revision "
            f"{_default_revision(version)}"
        )
    return revision


# --------------------------------------------------------------------------- Hugging Face Hub
def hf_token(token: str | None = None) -> str | None:
    """The Hugging Face token: ``token``, else :func:`huggingface_hub.get_token` (``HF_TOKEN``, then
    the login cache)."""
    from huggingface_hub import get_token

    return token or get_token()


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _batches(files: list[tuple[str, int]], max_files: int, max_bytes: int) -> list[list[tuple[str, int]]]:
    out, cur, size = [], [], 0
    for p, s in files:
        if cur and (len(cur) >= max_files or size + s > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append((p, s))
        size += s
    if cur:
        out.append(cur)
    return out


def publish_hf(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    batch_files: int = 200,
    batch_bytes: int = 2 << 30,
    echo: Callable[[str], None] = print,
) -> dict:
    """Upload a build folder to a Hugging Face dataset repository and tag the version.

    Parameters
    ----------
    folder : path-like
        Build folder with ``manifest.json``.
    repo_id : str
        ``ORG/NAME``.
    revision : str, optional
        Tag to create (default ``v<dataset version>``).
    endpoint : str, optional
        Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
    token : str, optional
        Access token (default: ``HF_TOKEN`` or the login cache).
    private : bool
        Create the repository private.
    dry_run : bool
        Print the plan and change nothing.
    batch_files, batch_bytes : int
        Upper bounds of one commit.
    echo : callable
        Where the plan/summary lines go.

    Returns
    -------
    dict
        ``{"repo_id", "revision", "uploaded": [...], "skipped": [...], "deleted": [...], "commits": [...]}``.
    """
    folder = Path(folder)
    m, files = upload_files(folder)
    version = str(m["dataset"].get("version"))
    revision = check_revision(revision, version)
    plan = UploadPlan(
        f"huggingface hub dataset {repo_id} at {endpoint or 'https://huggingface.co'}", version, revision, files
    )
    token = hf_token(token)
    if dry_run:
        echo(plan.describe())
        echo("credentials: " + ("found" if token else "MISSING (set HF_TOKEN or run `hf auth login`)"))
        echo("dry run: nothing uploaded")
        return {"repo_id": repo_id, "revision": revision, "dry_run": True, "files": [p for p, _ in files]}
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=endpoint, token=token, library_name="nmc-dataset", library_version=__version__)
    result = {"repo_id": repo_id, "revision": revision, "uploaded": [], "skipped": [], "deleted": [], "commits": []}
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        try:
            refs = api.list_repo_refs(repo_id, repo_type="dataset")
            if any(t.name == revision for t in refs.tags):
                raise PublishError(
                    f"tag {revision} already exists in {repo_id}; publish a new version "
                    "(dataset.version in the recipe) or pass another --revision"
                )
        except (RepositoryNotFoundError, RevisionNotFoundError):
            pass
        try:
            remote = {
                e.path: e
                for e in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
                if hasattr(e, "blob_id")
            }
        except (RepositoryNotFoundError, RevisionNotFoundError):
            remote = {}
        sha = {e["path"]: e["sha256"] for e in m["files"]}
        todo = []
        for p, size in files:
            r = remote.get(p)
            local = folder / p
            if r is not None and r.size == size:
                if r.lfs is not None:
                    same = r.lfs.sha256 == (sha.get(p) or sha256_file(local))
                else:
                    same = r.blob_id == _git_blob_sha1(local)
                if same:
                    result["skipped"].append(p)
                    continue
            todo.append((p, size))
        keep = {p for p, _ in files} | {".gitattributes"}
        stale = sorted(p for p in remote if p not in keep)
        last = {"README.md", MANIFEST}
        first = [f for f in todo if f[0] not in last]
        batches = _batches(first, batch_files, batch_bytes)
        final = [f for f in todo if f[0] in last]
        if final or stale or not batches:
            batches.append(final)
        n = len(batches)
        for k, batch in enumerate(batches, 1):
            ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p, _ in batch]
            if k == n:
                ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
            if not ops:
                continue
            info = api.create_commit(
                repo_id,
                operations=ops,
                repo_type="dataset",
                commit_message=f"nmc-dataset {version}: upload part {k}/{n}",
                commit_description=f"Files of dataset version {version} (recipe {str(m.get('recipe_hash'))[:12]}).",
            )
            result["commits"].append(info.oid)
            result["uploaded"] += [p for p, _ in batch]
            log.info("committed part %d/%d (%d files)", k, n, len(batch))
        result["deleted"] = stale
        api.create_tag(repo_id, tag=revision, tag_message=f"nmc-dataset {version}", repo_type="dataset")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        msg = _scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, token)
        if status == 401:
            msg = "the Hub refused the token (401 unauthorized); check HF_TOKEN / `hf auth login`"
        raise PublishError(f"Hugging Face Hub error ({status}): {msg}", repo_id) from None
    except PublishError:
        raise
    except Exception as e:  # noqa: BLE001 - network (httpx/requests), file and protocol errors alike
        text = " ".join(_scrub(str(e), token).split()) or type(e).__name__
        cause = " ".join(_scrub(str(e.__cause__), token).split()) if e.__cause__ else ""
        cause = f" ({cause})" if cause and cause != text else ""
        raise PublishError(
            f"upload to the Hugging Face Hub failed ({type(e).__name__}: {text}{cause}); nothing "
            "was tagged, and re-running the same command uploads only what is missing",
            repo_id,
        ) from None
    echo(
        f"published {repo_id} {revision}: {len(result['uploaded'])} files uploaded, "
        f"{len(result['skipped'])} unchanged, {len(result['deleted'])} stale removed"
    )
    return result


# --------------------------------------------------------------------------- Zenodo
def zenodo_key(rel: str) -> str:
    """Zenodo file key of a relative path (Zenodo records have no folders)."""
    return rel.replace("/", "__")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def zenodo_metadata(manifest: dict) -> dict:
    """Zenodo deposition metadata from the manifest's release block (raises if a required field is missing)."""
    d = manifest.get("dataset", {})
    title = d.get("pretty_name") or d.get("name")
    authors = d.get("authors") or []
    missing = [
        k for k, v in (("name/pretty_name", title), ("authors", authors), ("license", d.get("license"))) if not v
    ]
    if missing:
        raise PublishError(
            f"Zenodo needs {', '.join(missing)} in the dataset section of the recipe (manifest.json 'dataset' block)"
        )
    creators = []
    for a in authors:
        a = {"name": a} if isinstance(a, str) else dict(a)
        c = {"name": a["name"]}
        for k in ("affiliation", "orcid"):
            if a.get(k):
                c[k] = a[k]
        creators.append(c)
    description = d.get("description") or f"{title}: virtual NMC811 cathode particles generated with nmc-dataset."
    counts = manifest.get("counts", {})
    if counts:
        description += "<p>Configs: " + ", ".join(f"{k} ({v} rows)" for k, v in sorted(counts.items())) + ".</p>"
    md = {
        "title": title,
        "upload_type": "dataset",
        "description": description,
        "creators": creators,
        "license": str(d["license"]).lower(),
        "version": str(d.get("version")),
        "keywords": list(d.get("tags") or []),
        "related_identifiers": [
            {
                "identifier": f"arXiv:{METHOD_PAPER_ARXIV}",
                "relation": "isDerivedFrom",
                "scheme": "arxiv",
                "resource_type": "publication-preprint",
            }
        ],
        "notes": f"Built with nmc-dataset {manifest.get('tool', {}).get('version')}; recipe sha256 "
        f"{manifest.get('recipe_hash')}. File keys are paths with '/' replaced by '__'.",
    }
    if d.get("access_right"):
        md["access_right"] = d["access_right"]
    return md


class _Zenodo:
    def __init__(self, base: str, token: str):

        self.base = base.rstrip("/")
        self.token = token
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"
        self.s.trust_env = False if base.startswith("http://127.0.0.1") else True

    def call(self, method: str, url: str, ok=(200, 201, 202, 204), **kw):

        if not url.startswith("http"):
            url = self.base + url
        try:
            r = self.s.request(method, url, timeout=kw.pop("timeout", 600), **kw)
        except requests.RequestException as e:
            raise PublishError(f"Zenodo request failed: {_scrub(str(e), self.token)}") from None
        if r.status_code not in ok:
            try:
                body = r.json()
                detail = body.get("message") or body.get("error") or ""
                if body.get("errors"):
                    detail += " " + "; ".join(f"{x.get('field', '')}: {x.get('message', x)}" for x in body["errors"])
            except ValueError:
                detail = r.text[:200]
            if r.status_code in (401, 403) and "publish" not in url:
                detail = detail or "the token was refused; check ZENODO_TOKEN (scopes deposit:write, deposit:actions)"
            raise PublishError(
                f"Zenodo {method} {url.split('?')[0]} -> {r.status_code}: {_scrub(detail.strip(), self.token)}"
            )
        return r.json() if r.content else {}


def publish_zenodo(
    folder: str | os.PathLike,
    *,
    production: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    new_version_of: int | None = None,
    dry_run: bool = False,
    publish: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Upload a build folder to a Zenodo deposition and publish it.

    Parameters
    ----------
    folder : path-like
        Build folder with ``manifest.json``.
    production : bool
        Use zenodo.org instead of the sandbox.
    endpoint : str, optional
        API base URL (overrides ``production``), e.g. ``http://127.0.0.1:8000/api``.
    token : str, optional
        Access token (default ``ZENODO_TOKEN``).
    new_version_of : int, optional
        Deposition id of a published record to make a new version of.
    dry_run : bool
        Print the plan and change nothing.
    publish : bool
        Publish after uploading (``False`` leaves a draft to review on the website).
    echo : callable, default print
        Receives the dry-run plan and status lines.

    Returns
    -------
    dict
        ``{"deposition_id", "uploaded", "skipped", "deleted", "doi", "url"}``.
    """
    folder = Path(folder)
    m, files = upload_files(folder)
    md = zenodo_metadata(m)
    base = (endpoint or (PRODUCTION_API if production else SANDBOX_API)).rstrip("/")
    version = str(m["dataset"].get("version"))
    token = token or os.environ.get("ZENODO_TOKEN")
    plan = UploadPlan(
        f"zenodo deposition at {base}" + (f" (new version of {new_version_of})" if new_version_of else ""),
        version,
        None,
        files,
    )
    if dry_run:
        echo(plan.describe())
        echo("credentials: " + ("found" if token else "MISSING (set ZENODO_TOKEN)"))
        echo("dry run: nothing uploaded")
        return {"dry_run": True, "files": [p for p, _ in files]}
    if not token:
        raise PublishError("no Zenodo token: set ZENODO_TOKEN (a personal access token with deposit scopes)")

    host = re.sub(r"[^A-Za-z0-9.-]+", "_", base.split("://", 1)[-1])
    state_path = folder / ".publish" / f"zenodo-{host}.json"
    state = {}
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except ValueError:
            state = {}
    z = _Zenodo(base, token)
    dep = None
    if state.get("version") == version and state.get("deposition_id"):
        dep = z.call("GET", f"/deposit/depositions/{state['deposition_id']}", ok=(200, 404, 410))
        if dep.get("submitted"):
            echo(f"already published: {dep.get('doi_url') or dep.get('links', {}).get('html')}")
            return {
                "deposition_id": dep["id"],
                "uploaded": [],
                "skipped": [p for p, _ in files],
                "deleted": [],
                "doi": dep.get("doi"),
                "url": dep.get("links", {}).get("html"),
            }
        if "id" not in dep:
            dep = None
        else:
            log.info("resuming Zenodo draft %s", dep["id"])
    if dep is None:
        if new_version_of:
            old = z.call("POST", f"/deposit/depositions/{int(new_version_of)}/actions/newversion")
            dep = z.call("GET", old["links"]["latest_draft"])
        else:
            dep = z.call("POST", "/deposit/depositions", json={})
        write_json_atomic(state_path, {"deposition_id": dep["id"], "version": version, "base": base})
    bucket = dep["links"]["bucket"]

    listing = z.call("GET", bucket).get("contents", [])
    remote = {c["key"]: c for c in listing}
    wanted = {zenodo_key(p): p for p, _ in files}
    result = {"deposition_id": dep["id"], "uploaded": [], "skipped": [], "deleted": []}
    for key in sorted(set(remote) - set(wanted)):  # carried over from the previous version
        z.call("DELETE", f"{bucket}/{key}")
        result["deleted"].append(key)

    for p, size in progress(files, total=len(files), desc="zenodo", unit="file"):
        key = zenodo_key(p)
        local = folder / p
        r = remote.get(key)
        if r is not None and r.get("size") == size and r.get("checksum") == f"md5:{_md5(local)}":
            result["skipped"].append(p)
            continue
        with open(local, "rb") as f:
            z.call("PUT", f"{bucket}/{key}", data=f, headers={"Content-Type": "application/octet-stream"})
        result["uploaded"].append(p)
    z.call("PUT", f"/deposit/depositions/{dep['id']}", json={"metadata": md})
    if publish:
        done = z.call("POST", f"/deposit/depositions/{dep['id']}/actions/publish")
        result["doi"] = done.get("doi")
        result["url"] = done.get("links", {}).get("record_html") or done.get("links", {}).get("html")
        write_json_atomic(
            state_path,
            {"deposition_id": dep["id"], "version": version, "base": base, "published": True, "doi": result["doi"]},
        )
        echo(
            f"published on Zenodo: {result['url']} (doi {result['doi']}); {len(result['uploaded'])} files "
            f"uploaded, {len(result['skipped'])} already there"
        )
    else:
        result["doi"] = None
        result["url"] = dep.get("links", {}).get("html")
        echo(f"Zenodo draft {dep['id']} ready for review: {result['url']}")
    return result
