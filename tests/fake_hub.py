"""A Hub stand-in on loopback: the HTTP endpoints huggingface_hub uses to create a repo and branch and to commit
files (regular and LFS), recording every request and the files it received, so tests check the calls themselves."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import yaml


@dataclass
class FakeHub:
    """Runs the server in a thread; `url` is its endpoint. Files committed land in `files[(repo, revision)]`."""

    token: str
    requests: list[dict] = field(default_factory=list)
    repos: dict[str, dict] = field(default_factory=dict)
    branches: set[tuple[str, str]] = field(default_factory=set)
    files: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    lfs_store: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def is_private(self, repo_id: str) -> bool:
        """huggingface_hub 0.x sends `private`, 1.x and later `visibility`."""
        request = self.repos[repo_id]
        return request.get("private") is True or request.get("visibility") == "private"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"hub": hub})


class _Handler(BaseHTTPRequestHandler):
    """The endpoints, answering for `hub` (set on the subclass `_handler_for` makes)."""

    hub: FakeHub

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, payload: object | None = None, content_type: str = "application/json") -> None:
        body = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._reply(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def do_PUT(self) -> None:  # LFS basic transfer: the object's bytes
        body = self._body()
        path = urlparse(self.path).path
        self.hub.requests.append({"method": "PUT", "path": path, "size": len(body)})
        oid = path.rsplit("/", 1)[-1]
        if hashlib.sha256(body).hexdigest() != oid:
            self._reply(400, {"error": "sha256 mismatch"})
            return
        self.hub.lfs_store[oid] = body
        self._reply(200, {})

    def do_POST(self) -> None:
        body = self._body()
        path = unquote(urlparse(self.path).path)
        record = {"method": "POST", "path": path, "authorization": self.headers.get("Authorization")}
        self.hub.requests.append(record)
        if path.startswith("/lfs-verify/"):
            oid = json.loads(body)["oid"]
            self._reply(200 if oid in self.hub.lfs_store else 404, {})
            return
        if not self._authorized():
            return
        routes = (
            (path == "/api/validate-yaml", self._validate_yaml),
            (path == "/api/repos/create", self._create_repo),
            ("/branch/" in path, self._create_branch),
            ("/preupload/" in path, self._preupload),
            (path.endswith(".git/info/lfs/objects/batch"), self._lfs_batch),
            ("/commit/" in path, self._commit),
        )
        endpoint = next((endpoint for matches, endpoint in routes if matches), None)
        if endpoint is None:
            self._reply(404, {"error": f"fake hub has no {path}"})
        else:
            endpoint(path, body, record)

    def _validate_yaml(self, path: str, body: bytes, record: dict) -> None:
        """The Hub checks a README's front matter before the commit."""
        content = json.loads(body)["content"]
        record["json"] = {"content": content}
        try:
            yaml.safe_load(content.split("---\n")[1])
        except (IndexError, yaml.YAMLError) as error:
            self._reply(400, {"error": f"invalid model card metadata: {error}"})
            return
        self._reply(200, {"errors": [], "warnings": []})

    def _create_repo(self, path: str, body: bytes, record: dict) -> None:
        request = json.loads(body)
        record["json"] = request
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        self.hub.repos.setdefault(repo_id, request)
        self._reply(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _create_branch(self, path: str, body: bytes, record: dict) -> None:
        repo_id, branch = path.removeprefix("/api/models/").split("/branch/")
        self.hub.branches.add((repo_id, branch))
        self._reply(200, {})

    def _preupload(self, path: str, body: bytes, record: dict) -> None:
        request = json.loads(body)
        record["json"] = request
        modes = [
            {
                "path": item["path"],
                "uploadMode": "lfs" if item["path"].endswith(".safetensors") else "regular",
                "shouldIgnore": False,
            }
            for item in request["files"]
        ]
        self._reply(200, {"files": modes, "commitOid": None})

    def _lfs_batch(self, path: str, body: bytes, record: dict) -> None:
        request = json.loads(body)
        record["json"] = request
        objects = []
        for item in request["objects"]:
            actions = {
                "upload": {"href": f"{self.hub.url}/lfs-upload/{item['oid']}"},
                "verify": {"href": f"{self.hub.url}/lfs-verify/{item['oid']}"},
            }
            objects.append({"oid": item["oid"], "size": item["size"], "authenticated": True, "actions": actions})
        self._reply(200, {"transfer": "basic", "objects": objects}, "application/vnd.git-lfs+json")

    def _commit(self, path: str, body: bytes, record: dict) -> None:
        repo_id, revision = path.removeprefix("/api/models/").split("/commit/")
        if repo_id not in self.hub.repos:
            self._reply(404, {"error": f"Repository {repo_id} not found"})
            return
        if revision != "main" and (repo_id, revision) not in self.hub.branches:
            self._reply(404, {"error": f"Revision {revision} not found"})
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        stored = self.hub.files.setdefault((repo_id, revision), {})
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                stored[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                stored[value["path"]] = self.hub.lfs_store[value["oid"]]
        oid = hashlib.sha1(body).hexdigest()
        self.hub.commits.append({"repo_id": repo_id, "revision": revision, "lines": lines, "oid": oid})
        self._reply(200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
