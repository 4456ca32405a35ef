"""A small Hub-compatible HTTP server for the tests: the real huggingface_hub client talks to it.

It implements the part of the Hub API that pushing and loading a model use, on 127.0.0.1 only:

    GET  /api/whoami-v2                                   who a token belongs to (401 if unknown)
    POST /api/repos/create                                create a repo (409 if it exists, 403 if not yours)
    POST /api/validate-yaml                               README metadata check (always valid)
    GET  /api/models/{repo}[/revision/{rev}]              model_info / repo_info
    POST /api/models/{repo}/preupload/{rev}               upload mode per file: always "regular" (no LFS/Xet)
    POST /api/models/{repo}/commit/{rev}                  ndjson commit: header, file (base64), deletedFile
    POST /api/models/{repo}/branch/{branch}               create a branch from main
    GET  /api/models/{repo}/tree/{rev}[/{path}]           file listing
    POST /api/models/{repo}/paths-info/{rev}              metadata of given paths
    HEAD|GET /{repo}/resolve/{rev}/{path}                 file download, with X-Repo-Commit and ETag

Repos live in memory: each branch is a list of commits, each commit a full snapshot {path: bytes}.
Private repos are invisible (RepoNotFound, like the Hub) to anyone outside the owner's namespaces.
Every request is recorded in `HubServer.state.requests` so tests can see what the client sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_sha1(content: bytes) -> str:
    """The oid git (and the Hub) gives a regular file; the client compares it to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class User:
    name: str
    orgs: list[str] = field(default_factory=list)
    role: str = "write"


@dataclass
class Repo:
    repo_id: str
    private: bool
    # branch -> commits, oldest first; a commit is (oid, message, snapshot of every file)
    branches: dict[str, list[tuple[str, str, dict[str, bytes]]]] = field(default_factory=dict)

    def head(self, revision: str) -> tuple[str, str, dict[str, bytes]] | None:
        if revision in self.branches:
            return self.branches[revision][-1]
        for commits in self.branches.values():
            for commit in commits:
                if commit[0] == revision:
                    return commit
        return None

    def commit(self, branch: str, message: str, files: dict[str, bytes]) -> str:
        oid = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.branches.setdefault(branch, []).append((oid, message, files))
        return oid


class HubState:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.rejected_commits: set[str] = set()  # repo ids whose commits fail, to test a failed push
        self.unreachable = False  # drop every connection unanswered, like a network failure
        self.lock = threading.Lock()

    def add_user(self, token: str, name: str, orgs: list[str] | None = None, role: str = "write") -> None:
        self.users[token] = User(name, orgs or [], role)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].head(revision)[2]

    def commits(self, repo_id: str, branch: str = "main") -> list[str]:
        return [message for _, message, _ in self.repos[repo_id].branches[branch]]


class HubServer:
    """ThreadingHTTPServer on a free loopback port; `url` goes into HF_ENDPOINT.

    The port is bound at once (so the url is known early) but only listens after `start()`:
    until then a connection is refused at once instead of waiting in the backlog.
    """

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        self.httpd.server_bind()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self.httpd.server_activate()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class _Handler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received = {key.lower(): value for key, value in self.headers.items()}
        self.state.requests.append({"method": method, "path": path, "headers": received})
        if self.state.unreachable:
            self.close_connection = True
            return
        try:
            with self.state.lock:
                for route_method, pattern, name in ROUTES:
                    match = re.fullmatch(pattern, path)
                    if match and (route_method == method or (route_method == "GET" and method == "HEAD")):
                        status, headers, payload = getattr(self, name)(body=body, query=query, **match.groupdict())
                        break
                else:
                    raise HTTPError(404, f"no route for {method} {path}")
        except HTTPError as err:
            status, payload = err.status, json.dumps({"error": err.message, **err.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    # -- auth ---------------------------------------------------------------------------------

    def _user(self, required: bool = False) -> User | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            if required:
                raise HTTPError(401, "Invalid credentials in Authorization header")
            return None
        user = self.state.users.get(auth.removeprefix("Bearer "))
        if user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _readable(self, repo_id: str) -> Repo:
        repo = self.state.repos.get(repo_id)
        user = self._user()
        if repo is None or (repo.private and (user is None or _namespace(repo_id) not in _namespaces(user))):
            raise HTTPError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_id: str) -> Repo:
        user = self._user(required=True)
        repo = self._readable(repo_id)
        if _namespace(repo_id) not in _namespaces(user) or user.role != "write":
            raise HTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _revision(self, repo: Repo, revision: str) -> tuple[str, str, dict[str, bytes]]:
        head = repo.head(revision)
        if head is None:
            raise HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return head

    # -- routes -------------------------------------------------------------------------------

    def whoami(self, body, query):
        user = self._user(required=True)
        return _json({"type": "user", "name": user.name, "orgs": [{"name": org} for org in user.orgs],
                      "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": user.role}}})

    def create_repo(self, body, query):
        user = self._user(required=True)
        request = json.loads(body)
        namespace = request.get("organization") or user.name
        repo_id = f"{namespace}/{request['name']}"
        if namespace not in _namespaces(user) or user.role != "write":
            raise HTTPError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
        if repo_id in self.state.repos:
            # The Hub names the existing repo, and the client reads that url with exist_ok=True.
            raise HTTPError(409, "You already created this model repo", url=f"{self._base()}/{repo_id}")
        repo = Repo(repo_id, private=request.get("visibility") == "private")
        repo.commit("main", "initial commit", {".gitattributes": b"*.safetensors filter=lfs -text\n"})
        self.state.repos[repo_id] = repo
        return _json({"url": f"{self._base()}/{repo_id}", "name": repo_id})

    def validate_yaml(self, body, query):
        return _json({"errors": [], "warnings": []})

    def repo_info(self, body, query, repo, revision="main"):
        found = self._readable(repo)
        oid, _, files = self._revision(found, revision)
        return _json({"id": repo, "author": _namespace(repo), "sha": oid, "private": found.private,
                      "siblings": [{"rfilename": path} for path in sorted(files)], "tags": [],
                      "lastModified": "2026-01-01T00:00:00.000Z"})

    def preupload(self, body, query, repo, revision):
        files = self._revision(self._writable(repo), revision)[2]
        requested = json.loads(body)["files"]
        return _json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                 "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
                                for f in requested]})

    def commit(self, body, query, repo, revision):
        found = self._writable(repo)
        if repo in self.state.rejected_commits:
            raise HTTPError(422, "commit rejected by the test Hub")
        files = dict(self._revision(found, revision)[2])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif line["key"] != "header":
                raise HTTPError(400, f"unsupported commit operation {line['key']!r} (this server takes regular files)")
        oid = found.commit(revision, header["summary"], files)
        return _json({"commitUrl": f"{self._base()}/{repo}/commit/{oid}", "commitOid": oid})

    def create_branch(self, body, query, repo, branch):
        found = self._writable(repo)
        if branch in found.branches:
            raise HTTPError(409, f"Reference already exists: refs/heads/{branch}")
        starting_point = (json.loads(body) if body else {}).get("startingPoint") or "main"
        oid, message, files = self._revision(found, starting_point)
        found.branches[branch] = [(oid, message, files)]
        return _json({})

    def tree(self, body, query, repo, revision, path=None):
        files = self._revision(self._readable(repo), revision)[2]
        path = (path or "").strip("/")
        prefix = f"{path}/" if path else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append(_file_entry(name, files[name]))
        if prefix and not entries and not folders:
            raise HTTPError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        return _json([{"type": "directory", "oid": git_blob_sha1(f.encode()), "size": 0, "path": f}
                      for f in sorted(folders)] + entries)

    def paths_info(self, body, query, repo, revision):
        files = self._revision(self._readable(repo), revision)[2]
        paths = parse_qs(body.decode()).get("paths", []) if body[:1] != b"{" else json.loads(body)["paths"]
        return _json([_file_entry(p, files[p]) for p in paths if p in files])

    def resolve(self, body, query, repo, revision, path):
        oid, _, files = self._revision(self._readable(repo), revision)
        if path not in files:
            raise HTTPError(404, f"Entry not found: {path}", "EntryNotFound")
        content = files[path]
        return 200, {"X-Repo-Commit": oid, "ETag": f'"{git_blob_sha1(content)}"',
                     "Content-Type": "application/octet-stream"}, content

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"/api/models/{REPO}", "repo_info"),
    ("GET", rf"/api/models/{REPO}/revision/(?P<revision>.+)", "repo_info"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<revision>.+)", "preupload"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<revision>.+)", "commit"),
    ("POST", rf"/api/models/{REPO}/branch/(?P<branch>.+)", "create_branch"),
    ("GET", rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/models/{REPO}/paths-info/(?P<revision>.+)", "paths_info"),
    ("GET", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
]


def _namespace(repo_id: str) -> str:
    return repo_id.split("/")[0]


def _namespaces(user: User) -> set[str]:
    return {user.name, *user.orgs}


def _file_entry(path: str, content: bytes) -> dict:
    return {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}


def _json(value) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()
