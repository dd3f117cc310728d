"""A small Hugging Face Hub stand-in on 127.0.0.1 for the publishing tests.

It implements exactly the endpoints ``huggingface_hub.HfApi`` (2.x, xet disabled) calls for
``create_repo``, ``create_commit`` (``validate-yaml``, ``preupload``, the git-LFS batch API with
basic transfer + verify, the NDJSON ``commit`` with ``file`` / ``lfsFile`` / ``deletedFile`` lines),
``create_tag``, ``list_repo_refs`` and ``list_repo_tree``, and keeps the repositories in memory so
tests can compare every file's bytes. Like the Hub's default ``.gitattributes``, binary files
(``*.parquet``, ``*.png``, ``*.h5``, ...) and files over ``lfs_threshold`` bytes (10 MB) go through
LFS; the others are sent base64-encoded in the commit body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_EXTENSIONS = (
    ".parquet",
    ".arrow",
    ".png",
    ".h5",
    ".hdf5",
    ".npy",
    ".npz",
    ".safetensors",
    ".vtu",
    ".msh",
    ".stl",
    ".tif",
    ".tiff",
    ".zip",
    ".gz",
)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    files: dict = field(default_factory=dict)  # path -> bytes (branch main)
    lfs_paths: set = field(default_factory=set)
    commits: list = field(default_factory=list)  # (oid, summary, [paths])
    tags: dict = field(default_factory=dict)  # tag -> commit oid

    @property
    def head(self) -> str:
        return self.commits[-1][0] if self.commits else "0" * 40


class HubState:
    def __init__(self, token: str, lfs_threshold: int):
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.presign = secrets.token_hex(8)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commit_after: int | None = None  # fail the Nth commit (1-based) for interruption tests
        self.n_commit_calls = 0
        self.lock = threading.Lock()


_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    base: str

    def log_message(self, *args):  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ helpers
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, obj=None, headers: dict | None = None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return False
        return True

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        repo = self.state.repos.get((_TYPES.get(kind, kind), repo_id))
        if repo is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    # ------------------------------------------------------------------ dispatch
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str):
        path = urlsplit(self.path).path
        body = self._body()
        with self.state.lock:
            self.state.requests.append((method, path))
        # LFS upload URLs are pre-signed (like S3 URLs on the real Hub): no Authorization header
        if path.startswith("/lfs-upload/"):
            if f"sig={self.state.presign}" not in (urlsplit(self.path).query or ""):
                return self._send(403, {"error": "bad signature"})
        elif not self._authorized():
            return
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/(datasets|models)/([^/]+/[^/]+)/preupload/([^/]+)", self.preupload),
            ("POST", r"/api/(datasets|models)/([^/]+/[^/]+)/commit/([^/]+)", self.commit),
            ("POST", r"/api/(datasets|models)/([^/]+/[^/]+)/tag/([^/]+)", self.tag),
            ("GET", r"/api/(datasets|models)/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", self.tree),
            ("GET", r"/api/(datasets|models)/([^/]+/[^/]+)/refs", self.refs),
            ("POST", r"/(datasets)/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/lfs-verify", self.lfs_verify),
        ]
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                with self.state.lock:
                    return fn(body, *[unquote(g) if g else g for g in match.groups()])
        self._send(404, {"error": f"no route {method} {path}"})

    # ------------------------------------------------------------------ endpoints
    def create_repo(self, body):
        p = json.loads(body)
        repo_id = f"{p['organization']}/{p['name']}" if p.get("organization") else p["name"]
        kind = p.get("type") or "model"
        url = f"{self.base}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        if (kind, repo_id) in self.state.repos:
            return self._send(409, {"error": "You already created this dataset repo", "url": url})
        self.state.repos[(kind, repo_id)] = Repo(kind, repo_id)
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, body):
        import yaml

        content = json.loads(body)["content"]
        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, body, kind, repo_id, rev):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["size"] > self.state.lfs_threshold or f["path"].endswith(LFS_EXTENSIONS)
            old = repo.files.get(f["path"])
            oid = None
            if old is not None:
                oid = hashlib.sha256(old).hexdigest() if lfs else git_blob_sha1(old)
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._send(200, {"files": files, "commitOid": repo.head})

    def lfs_batch(self, body, kind, repo_id):
        if self._repo(kind, repo_id) is None:
            return
        objs = []
        for o in json.loads(body)["objects"]:
            if o["oid"] in self.state.lfs_store:
                objs.append({"oid": o["oid"], "size": o["size"]})
            else:
                objs.append(
                    {
                        "oid": o["oid"],
                        "size": o["size"],
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{self.base}/lfs-upload/{o['oid']}?sig={self.state.presign}"},
                            "verify": {"href": f"{self.base}/lfs-verify"},
                        },
                    }
                )
        self._send(200, {"transfer": "basic", "objects": objs})

    def lfs_upload(self, body, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        self.state.lfs_store[oid] = body
        self._send(200, {})

    def lfs_verify(self, body):
        p = json.loads(body)
        ok = p["oid"] in self.state.lfs_store and len(self.state.lfs_store[p["oid"]]) == p["size"]
        self._send(200 if ok else 404, {} if ok else {"error": "object not found"})

    def commit(self, body, kind, repo_id, rev):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        self.state.n_commit_calls += 1
        if self.state.fail_commit_after is not None and self.state.n_commit_calls >= self.state.fail_commit_after:
            return self._send(500, {"error": "simulated outage"})
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        header = lines[0]
        assert header["key"] == "header"
        staged, lfs_paths, deleted = {}, set(), []
        for item in lines[1:]:
            v = item["value"]
            if item["key"] == "file":
                staged[v["path"]] = base64.b64decode(v["content"])
            elif item["key"] == "lfsFile":
                if v["oid"] not in self.state.lfs_store:
                    return self._send(422, {"error": f"LFS object {v['oid']} missing"})
                staged[v["path"]] = self.state.lfs_store[v["oid"]]
                lfs_paths.add(v["path"])
            elif item["key"] == "deletedFile":
                if v["path"] not in repo.files:
                    return self._send(
                        404, {"error": "A file with this name doesn't exist"}, {"X-Error-Code": "EntryNotFound"}
                    )
                deleted.append(v["path"])
            else:
                return self._send(400, {"error": f"unsupported operation {item['key']}"})
        repo.files.update(staged)
        for p in deleted:
            repo.files.pop(p)
            repo.lfs_paths.discard(p)
        repo.lfs_paths |= lfs_paths
        oid = hashlib.sha1(f"{repo.head}{header['value']['summary']}{sorted(staged)}".encode()).hexdigest()
        repo.commits.append((oid, header["value"]["summary"], sorted(staged)))
        self._send(
            200, {"commitUrl": f"{self.base}/datasets/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
        )

    def tag(self, body, kind, repo_id, rev):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        p = json.loads(body)
        if p["tag"] in repo.tags:
            return self._send(409, {"error": "Tag already exists"})
        repo.tags[p["tag"]] = repo.head
        self._send(200, {})

    def refs(self, body, kind, repo_id):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        self._send(
            200,
            {
                "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head}],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()],
                "converts": [],
            },
        )

    def tree(self, body, kind, repo_id, rev, sub):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        prefix = (sub or "").lstrip("/")
        out = []
        for p in sorted(repo.files):
            if prefix and not p.startswith(prefix.rstrip("/") + "/"):
                continue
            data = repo.files[p]
            entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
            if p in repo.lfs_paths:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
            out.append(entry)
        self._send(200, out)


class HubServer:
    """Run the stand-in Hub in a thread: ``with HubServer(token) as hub: HfApi(endpoint=hub.url)``."""

    def __init__(self, token: str = "hf_test_token_ABCDEFGHIJ", lfs_threshold: int = 10 * 1024 * 1024):
        self.state = HubState(token, lfs_threshold)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        handler.base = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.state.repos[(repo_type, repo_id)]
