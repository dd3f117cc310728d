"""A small Zenodo stand-in on 127.0.0.1: the legacy REST deposit API the publisher uses.

Endpoints: ``POST/GET/PUT /api/deposit/depositions[/<id>]``, ``POST .../actions/publish``,
``POST .../actions/newversion`` (the response's ``links.latest_draft`` names the new draft, whose
bucket starts with the previous version's files), and the files REST API on buckets:
``GET /api/files/<bucket>`` (``{"contents": [...]}``), ``PUT`` / ``DELETE /api/files/<bucket>/<key>``.
``fail_put_after = n`` makes the n-th and later PUTs fail (an interrupted upload).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REQUIRED = ("title", "upload_type", "description", "creators")


class ZenodoState:
    def __init__(self, token: str):
        self.token = token
        self.depositions: dict[int, dict] = {}
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.puts: list[str] = []  # keys PUT (successful), in order
        self.fail_put_after: int | None = None
        self.n_put_calls = 0
        self.next_id = 1001
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ZenodoState
    base: str

    def log_message(self, *args):
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, obj=None):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        path = urlsplit(self.path).path
        body = self._body()
        if self.headers.get("Authorization") != f"Bearer {self.state.token}":
            return self._send(401, {"status": 401, "message": "The server could not verify that you are authorized."})
        routes = [
            ("POST", r"/api/deposit/depositions", self.create),
            ("GET", r"/api/deposit/depositions/(\d+)", self.get),
            ("PUT", r"/api/deposit/depositions/(\d+)", self.update),
            ("POST", r"/api/deposit/depositions/(\d+)/actions/publish", self.publish),
            ("POST", r"/api/deposit/depositions/(\d+)/actions/newversion", self.newversion),
            ("GET", r"/api/files/([0-9a-f-]+)", self.list_bucket),
            ("PUT", r"/api/files/([0-9a-f-]+)/(.+)", self.put_file),
            ("DELETE", r"/api/files/([0-9a-f-]+)/(.+)", self.delete_file),
        ]
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                with self.state.lock:
                    return fn(body, *[unquote(g) for g in match.groups()])
        self._send(404, {"status": 404, "message": f"no route {method} {path}"})

    # ------------------------------------------------------------------ helpers
    def _new_dep(self, concept: int | None = None, files: dict | None = None) -> dict:
        st = self.state
        dep_id = st.next_id
        st.next_id += 1
        bucket = str(uuid.uuid4())
        st.buckets[bucket] = dict(files or {})
        dep = {
            "id": dep_id,
            "conceptrecid": concept or dep_id,
            "submitted": False,
            "state": "unsubmitted",
            "metadata": {},
            "bucket": bucket,
        }
        st.depositions[dep_id] = dep
        return dep

    def _view(self, dep: dict) -> dict:
        b = f"{self.base}/api"
        v = {k: dep[k] for k in ("id", "conceptrecid", "submitted", "state", "metadata")}
        v["links"] = {
            "self": f"{b}/deposit/depositions/{dep['id']}",
            "bucket": f"{b}/files/{dep['bucket']}",
            "publish": f"{b}/deposit/depositions/{dep['id']}/actions/publish",
            "newversion": f"{b}/deposit/depositions/{dep['id']}/actions/newversion",
            "html": f"{self.base}/deposit/{dep['id']}",
        }
        if dep.get("latest_draft"):
            v["links"]["latest_draft"] = f"{b}/deposit/depositions/{dep['latest_draft']}"
        if dep["submitted"]:
            v["doi"] = f"10.5072/zenodo.{dep['id']}"
            v["record_id"] = dep["id"]
            v["links"]["record_html"] = f"{self.base}/records/{dep['id']}"
        v["files"] = [
            {"filename": k, "filesize": len(d), "checksum": hashlib.md5(d).hexdigest()}
            for k, d in sorted(self.state.buckets[dep["bucket"]].items())
        ]
        return v

    def _dep(self, dep_id) -> dict | None:
        dep = self.state.depositions.get(int(dep_id))
        if dep is None:
            self._send(404, {"status": 404, "message": "PID does not exist."})
        return dep

    def _bucket_dep(self, bucket) -> dict | None:
        for d in self.state.depositions.values():
            if d["bucket"] == bucket:
                return d
        return None

    # ------------------------------------------------------------------ endpoints
    def create(self, body):
        self._send(201, self._view(self._new_dep()))

    def get(self, body, dep_id):
        dep = self._dep(dep_id)
        if dep:
            self._send(200, self._view(dep))

    def update(self, body, dep_id):
        dep = self._dep(dep_id)
        if not dep:
            return
        if dep["submitted"]:
            return self._send(403, {"status": 403, "message": "Deposition is published; use edit first."})
        md = json.loads(body).get("metadata", {})
        errors = [
            {"field": f"metadata.{k}", "message": "Missing data for required field."} for k in REQUIRED if not md.get(k)
        ]
        if errors:
            return self._send(400, {"status": 400, "message": "Validation error.", "errors": errors})
        dep["metadata"] = md
        self._send(200, self._view(dep))

    def publish(self, body, dep_id):
        dep = self._dep(dep_id)
        if not dep:
            return
        if not dep["metadata"] or not self.state.buckets[dep["bucket"]]:
            return self._send(
                400,
                {"status": 400, "message": "Validation error.", "errors": [{"message": "Missing metadata or files."}]},
            )
        dep["submitted"], dep["state"] = True, "done"
        self._send(202, self._view(dep))

    def newversion(self, body, dep_id):
        dep = self._dep(dep_id)
        if not dep:
            return
        if not dep["submitted"]:
            return self._send(400, {"status": 400, "message": "The deposition is not published."})
        draft = self._new_dep(concept=dep["conceptrecid"], files=self.state.buckets[dep["bucket"]])
        dep["latest_draft"] = draft["id"]
        self._send(201, self._view(dep))

    def list_bucket(self, body, bucket):
        if bucket not in self.state.buckets:
            return self._send(404, {"status": 404, "message": "Bucket does not exist."})
        self._send(
            200,
            {
                "contents": [
                    {"key": k, "size": len(d), "checksum": "md5:" + hashlib.md5(d).hexdigest()}
                    for k, d in sorted(self.state.buckets[bucket].items())
                ]
            },
        )

    def put_file(self, body, bucket, key):
        dep = self._bucket_dep(bucket)
        if dep is None:
            return self._send(404, {"status": 404, "message": "Bucket does not exist."})
        if dep["submitted"]:
            return self._send(403, {"status": 403, "message": "Bucket is locked (published)."})
        if "/" in key:
            return self._send(400, {"status": 400, "message": "Invalid key."})
        self.state.n_put_calls += 1
        if self.state.fail_put_after is not None and self.state.n_put_calls >= self.state.fail_put_after:
            return self._send(503, {"status": 503, "message": "simulated outage"})
        self.state.buckets[bucket][key] = body
        self.state.puts.append(key)
        self._send(201, {"key": key, "size": len(body), "checksum": "md5:" + hashlib.md5(body).hexdigest()})

    def delete_file(self, body, bucket, key):
        dep = self._bucket_dep(bucket)
        if dep is None or key not in self.state.buckets[bucket]:
            return self._send(404, {"status": 404, "message": "Object does not exist."})
        if dep["submitted"]:
            return self._send(403, {"status": 403, "message": "Bucket is locked (published)."})
        del self.state.buckets[bucket][key]
        self._send(204)


class ZenodoServer:
    """``with ZenodoServer(token) as z: publish_zenodo(..., endpoint=z.api)``."""

    def __init__(self, token: str = "zenodo_test_token_0123456789"):
        self.state = ZenodoState(token)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.api = self.url + "/api"
        handler.base = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def files(self, dep_id: int) -> dict[str, bytes]:
        return self.state.buckets[self.state.depositions[dep_id]["bucket"]]
