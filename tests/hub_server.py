"""A small Hugging Face Hub for tests: the HTTP API that `huggingface_hub` 2.x calls, on 127.0.0.1.

It really stores what is uploaded and serves it back, so a broken upload fails the test that made
it. Model and dataset repos (branch `main` plus every commit by its id): repo creation, preupload
(regular vs LFS by the repo's `.gitattributes`, binary content or size), the git-LFS batch API with
basic and multipart transfers (sha256 and size checked before an object is kept), ndjson commits
(an LFS file must have been uploaded first), revision info, tree listing, `resolve`
downloads (HEAD/GET, byte ranges, `ETag`/`X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`,
`X-Error-Code` on misses) and `/api/validate-yaml` for card metadata. Writes need the server's
token; Xet storage is not offered (clients must run with `HF_HUB_DISABLE_XET=1`).

    with HubServer(token="hf_test") as hub:
        os.environ["HF_ENDPOINT"] = hub.url   # in the client's process, before importing HF code
"""

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "test-user"
DEFAULT_GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n"
    for ext in ("safetensors", "bin", "pt", "pth", "ckpt", "h5", "onnx", "npy", "npz", "parquet")
    + ("arrow", "zip", "gz", "tar", "pkl", "model", "msgpack")
)
LFS_SIZE = 10 * 1024 * 1024  # files from this size go to LFS whatever their name
REPO_ID = r"(?P<repo>[\w.-]+/[\w.-]+)"
REV = r"(?P<rev>[^/]+)"
API = r"/api/(?P<kind>models|datasets)/" + REPO_ID
PREFIX = r"/(?P<prefix>datasets/)?"
RESOLVE = PREFIX + REPO_ID + r"/resolve/" + REV + r"/(?P<path>.+)"
LFS_STORE = r"/lfs-store/(?P<oid>[0-9a-f]{64})"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    ).encode()


@dataclass(frozen=True)
class Entry:
    """A file at one commit: its bytes inline, or an LFS object by sha256."""

    size: int
    blob_id: str
    data: bytes | None = None
    sha256: str | None = None

    @classmethod
    def regular(cls, data: bytes) -> "Entry":
        return cls(size=len(data), blob_id=git_blob_id(data), data=data)

    @classmethod
    def lfs(cls, sha256: str, size: int) -> "Entry":
        return cls(size=size, blob_id=git_blob_id(lfs_pointer(sha256, size)), sha256=sha256)


@dataclass
class Commit:
    id: str
    title: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    kind: str  # "models" or "datasets"
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    head: str = ""

    def commit(self, title: str, files: dict[str, Entry]) -> Commit:
        digest = hashlib.sha1(f"{self.head}\n{title}\n{time.time_ns()}".encode())
        for path, entry in sorted(files.items()):
            digest.update(f"{path}\0{entry.blob_id}\n".encode())
        commit = Commit(digest.hexdigest(), title, time.strftime("%Y-%m-%dT%H:%M:%S.000Z"), files)
        self.commits[commit.id] = commit
        self.head = commit.id
        return commit


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubServer:
    """The server and its storage; a context manager that serves on a free port in a thread.

    Args:
        token: the only token allowed to write (and to read private repos).
        chunk_size: LFS objects larger than this are uploaded in parts of this size (multipart).
    """

    def __init__(self, token: str = "hf_test_token", chunk_size: int = 1024 * 1024):
        self.token = token
        self.chunk_size = chunk_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.parts: dict[tuple[str, int], bytes] = {}
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str, kind: str = "models") -> dict[str, bytes]:
        """The bytes of every file at the head of a repo."""
        commit = self.repos[(kind, repo_id)].commits[self.repos[(kind, repo_id)].head]
        return {path: self.content(entry) for path, entry in commit.files.items()}

    def content(self, entry: Entry) -> bytes:
        return entry.data if entry.sha256 is None else self.lfs_objects[entry.sha256]

    # ---- lookups -------------------------------------------------------------------------
    def repo(self, kind: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((kind, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def revision(self, repo: Repo, rev: str) -> Commit:
        rev = unquote(rev)
        commit = repo.commits.get(repo.head if rev == "main" else rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-test"

    def log_message(self, *args):  # requests are kept in hub.requests instead
        pass

    # ---- plumbing ------------------------------------------------------------------------
    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _require_token(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                chunk = self.rfile.read(size) if size else b""
                self.rfile.readline()
                if not size:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self):
        try:
            return json.loads(self._body() or b"null")
        except ValueError as e:
            raise HubError(400, f"invalid JSON body: {e}") from None

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        headers.setdefault("Content-Type", "application/octet-stream")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.hub.requests.append(f"{self.command} {url.path}")
        try:
            for method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if method == self.command and match:
                    with self.hub.lock:
                        handler(self, **match.groupdict())
                    return
            raise HubError(404, f"no route for {self.command} {url.path}")
        except Exception as e:
            if not isinstance(e, HubError):  # malformed input or a bug: a 500 the test will see
                self.hub.errors.append(f"{self.command} {url.path}: {e!r}")
                e = HubError(500, f"internal error: {e!r}")
            # The request body may be unread: answer, then close the connection.
            self.close_connection = True
            headers = {"X-Error-Message": e.message, "Connection": "close"}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send_json({"error": e.message, **e.extra}, e.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # ---- account and repos ---------------------------------------------------------------
    def whoami(self):
        self._require_token()
        self._send_json({"type": "user", "name": USER, "fullname": USER, "orgs": [], "auth": {}})

    def create_repo(self):
        self._require_token()
        payload = self._json_body()
        kind = {"model": "models", "dataset": "datasets"}.get(payload.get("type") or "model")
        if kind is None:
            raise HubError(400, f"unsupported repo type {payload.get('type')!r}")
        name, namespace = payload.get("name", ""), payload.get("organization") or USER
        if namespace != USER or not re.fullmatch(r"[\w.-]{1,96}", name):
            raise HubError(400, f"invalid repo name {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{'' if kind == 'models' else 'datasets/'}{repo_id}"
        if (kind, repo_id) in self.hub.repos:
            raise HubError(409, "You already created this repo", url=url)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(kind, repo_id, private)
        repo.commit(
            "initial commit", {".gitattributes": Entry.regular(DEFAULT_GITATTRIBUTES.encode())}
        )
        self.hub.repos[(kind, repo_id)] = repo
        self._send_json({"url": url, "name": repo_id})

    def repo_info(self, kind: str, repo: str, rev: str = "main"):
        hub_repo = self.hub.repo(kind, repo, self._authorized())
        commit = self.hub.revision(hub_repo, rev)
        with_blobs = self.query.get("blobs", "").lower() == "true"
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.sha256:
                    pointer_size = len(lfs_pointer(entry.sha256, entry.size))
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": pointer_size,
                    }
            siblings.append(sibling)
        card = commit.files.get("README.md")
        self._send_json(
            {
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "id": repo,
                "author": repo.split("/")[0],
                "sha": commit.id,
                "private": hub_repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "createdAt": hub_repo.commits[next(iter(hub_repo.commits))].date,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": siblings,
                "cardData": _front_matter(self.hub.content(card).decode()) if card else None,
            }
        )

    # ---- reading files -------------------------------------------------------------------
    def _entry_json(self, path: str, entry: Entry, commit: Commit, expand: bool) -> dict:
        item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
        if entry.sha256:
            pointer_size = len(lfs_pointer(entry.sha256, entry.size))
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
        if expand:
            item["lastCommit"] = {"id": commit.id, "title": commit.title, "date": commit.date}
        return item

    def _folder_json(self, path: str, commit: Commit, expand: bool) -> dict:
        item = {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}
        if expand:
            item["lastCommit"] = {"id": commit.id, "title": commit.title, "date": commit.date}
        return item

    def tree(self, kind: str, repo: str, rev: str, path: str = ""):
        commit = self.hub.revision(self.hub.repo(kind, repo, self._authorized()), rev)
        path = unquote(path or "").strip("/")
        recursive = self.query.get("recursive", "").lower() == "true"
        expand = self.query.get("expand", "").lower() == "true"
        prefix = f"{path}/" if path else ""
        under = sorted(p for p in commit.files if p.startswith(prefix))
        if path and not under:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        items, folders = [], set()
        for file_path in under:
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                items.append(self._entry_json(file_path, commit.files[file_path], commit, expand))
        items += [self._folder_json(f, commit, expand) for f in sorted(folders)]
        self._send_json(items)

    def resolve(self, prefix: str | None, repo: str, rev: str, path: str):
        kind = "datasets" if prefix else "models"
        hub_repo = self.hub.repo(kind, repo, self._authorized())
        commit = self.hub.revision(hub_repo, rev)
        entry = commit.files.get(unquote(path))
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self.hub.content(entry)
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{entry.sha256 or entry.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if entry.sha256:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if byte_range:
            start = int(byte_range[1])
            end = min(int(byte_range[2] or len(data) - 1), len(data) - 1)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}", **headers})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start : end + 1], headers)
            return
        self._send(200, data, headers)

    # ---- uploading -----------------------------------------------------------------------
    def _is_lfs(self, commit: Commit, path: str, size: int, sample: bytes) -> bool:
        attributes = commit.files.get(".gitattributes")
        rules = self.hub.content(attributes).decode().splitlines() if attributes else []
        patterns = [line.split()[0] for line in rules if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        by_name = any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)
        return by_name or size >= LFS_SIZE or b"\0" in sample

    def preupload(self, kind: str, repo: str, rev: str):
        self._require_token()
        commit = self.hub.revision(self.hub.repo(kind, repo, True), rev)
        files = []
        for item in self._json_body()["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = self._is_lfs(commit, item["path"], item["size"], sample)
            existing = commit.files.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.blob_id if existing else None,
                }
            )
        self._send_json({"files": files, "commitOid": commit.id})

    def lfs_batch(self, prefix: str | None, repo: str):
        self._require_token()
        kind = "datasets" if prefix else "models"
        self.hub.repo(kind, repo, True)
        payload = self._json_body()
        if payload.get("operation") != "upload" or payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, "only sha256 uploads are supported")
        multipart = "multipart" in payload.get("transfers", [])
        objects, transfer = [], "basic"
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            item = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                base = f"{self.hub.url}/lfs-store/{oid}"
                upload = {"href": base}
                if multipart and size > self.hub.chunk_size:
                    transfer = "multipart"
                    n = -(-size // self.hub.chunk_size)
                    header = {f"{i:05d}": f"{base}/part/{i}" for i in range(1, n + 1)}
                    upload["header"] = {"chunk_size": str(self.hub.chunk_size), **header}
                item["actions"] = {"upload": upload, "verify": {"href": f"{base}/verify"}}
            objects.append(item)
        self._send_json({"transfer": transfer, "objects": objects})

    def _store_object(self, oid: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match its sha256 {oid}")
        self.hub.lfs_objects[oid] = data

    def lfs_put(self, oid: str):
        self._store_object(oid, self._body())
        self._send(200)

    def lfs_put_part(self, oid: str, part: str):
        data = self._body()
        self.hub.parts[(oid, int(part))] = data
        self._send(200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def lfs_complete(self, oid: str):
        parts = self._json_body()["parts"]
        chunks = []
        for part in parts:
            data = self.hub.parts.pop((oid, part["partNumber"]), None)
            if data is None or part["etag"].strip('"') != hashlib.md5(data).hexdigest():
                raise HubError(400, f"part {part['partNumber']} of {oid} is missing or altered")
            chunks.append(data)
        self._store_object(oid, b"".join(chunks))
        self._send_json({"success": True})

    def lfs_verify(self, oid: str):
        payload = self._json_body()
        data = self.hub.lfs_objects.get(oid)
        if data is None or len(data) != payload.get("size"):
            raise HubError(404, f"LFS object {oid} was not uploaded completely")
        self._send_json({"success": True})

    def commit(self, kind: str, repo: str, rev: str):
        self._require_token()
        hub_repo = self.hub.repo(kind, repo, True)
        if unquote(rev) != "main":
            raise HubError(400, "commits go to main only", "RevisionNotFound")
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != hub_repo.head:
            raise HubError(412, f"parent commit {parent} is not the head {hub_repo.head}")
        files = dict(hub_repo.commits[hub_repo.head].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"].strip("/")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"{path}: only base64 content is accepted")
                files[path] = Entry.regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None or ("size" in value and len(data) != value["size"]):
                    raise HubError(422, f"{path}: LFS object {value['oid']} was never uploaded")
                files[path] = Entry.lfs(value["oid"], len(data))
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        commit = hub_repo.commit(header.get("summary", ""), files)
        prefix = "" if kind == "models" else "datasets/"
        self._send_json(
            {
                "success": True,
                "commitOid": commit.id,
                "commitUrl": f"{self.hub.url}/{prefix}{repo}/commit/{commit.id}",
                "pullRequestUrl": None,
            }
        )

    # ---- cards ---------------------------------------------------------------------------
    def validate_yaml(self):
        payload = self._json_body()
        try:
            _validate_card(payload.get("content", ""), payload.get("repoType") or "model")
        except ValueError as e:
            self._send_json({"errors": [{"message": str(e)}], "warnings": []}, 400)
            return
        self._send_json({"errors": [], "warnings": []})


def _front_matter(text: str) -> dict:
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
    if not match:
        raise ValueError("the card has no YAML front matter between '---' lines")
    try:
        meta = yaml.safe_load(match[1])
    except yaml.YAMLError as e:
        raise ValueError(f"the card's YAML does not parse: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError("the card's YAML metadata must be a mapping")
    return meta


def _validate_card(content: str, repo_type: str) -> None:
    """The Hub's documented rules for card metadata (types of the known keys, model-index shape)."""
    meta = _front_matter(content)
    for key in ("tags", "datasets", "metrics", "language"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise ValueError(f'"{key}" must be a string or a list of strings')
    for key in ("license", "library_name", "pipeline_tag", "model_name"):
        if key in meta and not isinstance(meta[key], str):
            raise ValueError(f'"{key}" must be a string')
    if repo_type != "model" or "model-index" not in meta:
        return
    index = meta["model-index"]
    if not isinstance(index, list) or not index:
        raise ValueError('"model-index" must be a non-empty list')
    for model in index:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise ValueError('"model-index[].name" must be a string')
        for result in model.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not isinstance(task.get("type"), str):
                raise ValueError('"model-index[].results[].task.type" must be a string')
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                raise ValueError('"model-index[].results[].dataset" needs "type" and "name"')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                raise ValueError('"model-index[].results[].metrics" must be a non-empty list')
            for metric in metrics:
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    raise ValueError('each metric needs a "type" and a "value"')


ROUTES = [
    ("GET", r"/api/whoami-v2", _Handler.whoami),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("GET", API, _Handler.repo_info),
    ("GET", API + r"/revision/" + REV, _Handler.repo_info),
    ("GET", API + r"/tree/" + REV + r"(?:/(?P<path>.*))?", _Handler.tree),
    ("POST", API + r"/preupload/" + REV, _Handler.preupload),
    ("POST", API + r"/commit/" + REV, _Handler.commit),
    ("POST", PREFIX + REPO_ID + r"\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", LFS_STORE, _Handler.lfs_put),
    ("PUT", LFS_STORE + r"/part/(?P<part>\d+)", _Handler.lfs_put_part),
    ("POST", LFS_STORE, _Handler.lfs_complete),
    ("POST", LFS_STORE + r"/verify", _Handler.lfs_verify),
    ("HEAD", RESOLVE, _Handler.resolve),
    ("GET", RESOLVE, _Handler.resolve),
]
