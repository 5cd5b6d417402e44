"""A stand-in ModelScope hub: the HTTP API the real `modelscope` 1.40.2 SDK downloads through.

    python -m tests.support.hub --root DIR [--host 127.0.0.1] [--port 0]

serves DIR laid out as ``DIR/<owner>/<name>/<revision>/<files...>`` (any number of revisions per
model; "master" is reported as a branch, every other revision as a tag) and prints its URL.

Commits: each revision directory's commit id is the sha1 of its file list (path and sha256 of each
file), 40 hex digits as a git commit id is: content-addressed, so the same bytes are the same
commit. The file listing carries it in every entry's "Revision" field, as the real hub's listing
carries a commit id there (modelscope/hub/utils/caching.py compares it with a commit id), and any
request takes a commit id where it takes a branch or tag. ``publish`` keeps each commit it
writes under ``DIR/<owner>/<name>/.commits/<commit>/`` (hard links), so a commit stays
downloadable after its branch moves on, as on a real hub.
Point the SDK at it with ``MODELSCOPE_ENDPOINT=<url>`` (a full URL: a bare host gets https).

Endpoints, as read from modelscope_hub 0.5.1 (_legacy_api.py, _download.py, errors.py):

    GET  /api/v1/models/<owner>/<name>                      repo info
    GET  /api/v1/models/<owner>/<name>/revisions            {"Data": {"RevisionMap": ...}}
    GET  /api/v1/models/<owner>/<name>/repo/files?Revision=&Recursive=&Root=
                                                            {"Data": {"Files": [...]}}
    GET  /api/v1/models/<owner>/<name>/repo?Revision=&FilePath=
    HEAD (same)                                             file bytes; "Range: bytes=N-" and
                                                            "bytes=N-M" give 206 + Content-Range
    GET  /api/v1/repos/internalAccelerationInfo             404: no intra-cloud region here

Errors are what the SDK parses: an HTTP status with a JSON body carrying "Code", "Message",
"RequestId" and "Success": false (a 404 becomes NotExistError, which snapshot_download re-raises
as requests' HTTPError).

Every request is recorded (`StandInHub.requests`) so a test can assert what the SDK asked for,
and faults can be injected: cut a file's body once (`cut_body_once`) or list a wrong sha256
(`serve_wrong_sha256`). It binds loopback unless the caller passes another address (the test
hosts reach the controller over 10.77.N.1 veth addresses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

API = "/api/v1"
DEFAULT_BRANCH = "master"
CHUNK = 64 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".msgpack", ".h5", ".onnx")

_REPO_ROUTE = re.compile(rf"^{API}/models/(?P<owner>[^/]+)/(?P<name>[^/]+)(?P<rest>/revisions|/repo/files|/repo)?/?$")


@dataclass
class RecordedRequest:
    """One request as the hub saw it: enough to assert what an SDK run fetched."""

    method: str
    path: str
    query: dict[str, str]
    kind: str  # repo_info, revisions, files, content, region, unknown
    status: int = 0
    repo_id: str | None = None
    revision: str | None = None
    file_path: str | None = None
    range: str | None = None  # the Range header as sent, e.g. "bytes=1048576-"
    bytes_sent: int = 0  # body bytes of file content actually written
    headers: dict[str, str] = field(default_factory=dict)
    client: str = ""  # the address the request came from (which test host asked)


@dataclass
class _Faults:
    cut_after: dict[tuple[str, str | None, str], int] = field(default_factory=dict)
    wrong_sha256: set[tuple[str, str | None, str]] = field(default_factory=set)


def split_spec(spec: str) -> tuple[str, str]:
    """'owner/name@revision' -> ('owner/name', 'revision'); the revision defaults to master."""
    repo_id, _at, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"model spec {spec!r} is not 'owner/name[@revision]'")
    return repo_id, revision or DEFAULT_BRANCH


COMMITS_DIR = ".commits"  # under <owner>/<name>/: every commit publish wrote, by id
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")


def commit_id(revision_dir: str | os.PathLike, sha256_of=None) -> str:
    """The commit id of a revision directory: sha1 over each file's path and sha256, in order."""
    base = Path(revision_dir)
    sha256_of = sha256_of or _sha256
    digest = hashlib.sha1()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(base).as_posix()}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _keep_commit(root: str | os.PathLike, repo_id: str, revision_dir: Path) -> Path:
    """Keep the revision's content under .commits/<id> (hard links: no second copy of the bytes)."""
    kept = Path(root, repo_id, COMMITS_DIR, commit_id(revision_dir))
    if not kept.exists():
        shutil.copytree(revision_dir, kept, copy_function=os.link)
    return kept


def publish(root: str | os.PathLike, spec: str, source_dir: str | os.PathLike) -> Path:
    """Copy a model directory into the hub root as 'owner/name@revision'; returns its folder."""
    repo_id, revision = split_spec(spec)
    target = Path(root, repo_id, revision)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_dir, target)
    _keep_commit(root, repo_id, target)
    return target


def publish_tiny_model(root: str | os.PathLike, spec: str, variant: str = "normal", seed: int = 0) -> Path:
    """Generate the tiny model (tests.support.tiny_model) straight into the hub root."""
    # Imported here so the server itself needs nothing beyond the standard library.
    from tests.support.tiny_model import make_tiny_model

    repo_id, revision = split_spec(spec)
    target = Path(root, repo_id, revision)
    if target.exists():
        shutil.rmtree(target)
    made = make_tiny_model(target, variant=variant, seed=seed)
    _keep_commit(root, repo_id, target)
    return made


class StandInHub:
    """The hub server. Use as a context manager, or start()/stop()."""

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._faults = _Faults()
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        # A short poll interval makes stop() (shutdown waits for one poll) take ~50 ms, not 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="stand-in-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> StandInHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- request log -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def content_requests(self, file_path: str | None = None) -> list[RecordedRequest]:
        """File-content GETs (optionally of one file): what actually moved bytes."""
        return [
            r
            for r in self.requests
            if r.kind == "content" and r.method == "GET" and (file_path is None or r.file_path == file_path)
        ]

    def content_bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.content_requests())

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- faults ----------------------------------------------------------------------------
    def cut_body_once(self, repo_id: str, file_path: str, after_bytes: int, revision: str | None = None) -> None:
        """The next full GET of the file sends `after_bytes` bytes, then drops the connection
        (the announced Content-Length stays whole, as a proxy timing out would leave it)."""
        with self._lock:
            self._faults.cut_after[(repo_id, revision, file_path)] = after_bytes

    def serve_wrong_sha256(self, repo_id: str, file_path: str, revision: str | None = None) -> None:
        """List the file with a sha256 its bytes do not have, until clear_faults()."""
        with self._lock:
            self._faults.wrong_sha256.add((repo_id, revision, file_path))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def _take_cut(self, repo_id: str, revision: str, file_path: str) -> int | None:
        with self._lock:
            for key in ((repo_id, revision, file_path), (repo_id, None, file_path)):
                if key in self._faults.cut_after:
                    return self._faults.cut_after.pop(key)
        return None

    def _lists_wrong_sha(self, repo_id: str, revision: str, file_path: str) -> bool:
        with self._lock:
            wrong = self._faults.wrong_sha256
            return (repo_id, revision, file_path) in wrong or (repo_id, None, file_path) in wrong

    # -- repository data -------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path | None:
        owner, _slash, name = repo_id.partition("/")
        if not owner or not name or {owner, name} & {".", ".."} or "/" in name:
            return None
        path = self.root / owner / name
        return path if path.is_dir() else None

    def revisions(self, repo_id: str) -> list[str]:
        """Branch and tag names: the revision directories (.commits holds commits, not names)."""
        repo = self.repo_dir(repo_id)
        return sorted(p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")) if repo else []

    def commit(self, repo_id: str, revision: str) -> str:
        """The commit id a branch or tag points at now (what a test pins or expects)."""
        found = self.revision_dir(repo_id, revision)
        if found is None:
            raise KeyError(f"{repo_id} has no revision {revision}")
        return self._commit_of(found)

    def revision_dir(self, repo_id: str, revision: str) -> Path | None:
        """The directory a branch, tag or commit id names, or None."""
        repo = self.repo_dir(repo_id)
        if repo is None:
            return None
        if revision in self.revisions(repo_id):
            return repo / revision
        if _COMMIT_ID.fullmatch(revision):
            for name in self.revisions(repo_id):
                if self._commit_of(repo / name) == revision:
                    return repo / name
            kept = repo / COMMITS_DIR / revision
            if kept.is_dir():
                return kept
        return None

    def _commit_of(self, revision_dir: Path) -> str:
        return commit_id(revision_dir, self.sha256)  # the cached sha256 of each file

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._sha_cache.get(key)
        if cached is None:
            cached = _sha256(path)
            with self._lock:
                self._sha_cache[key] = cached
        return cached

    def file_entries(self, repo_id: str, revision: str, recursive: bool, root: str | None) -> list[dict]:
        base = self.revision_dir(repo_id, revision)
        commit = self._commit_of(base)
        committed = int(base.stat().st_mtime)
        start = base / root.strip("/") if root else base
        paths = sorted(start.rglob("*") if recursive else start.iterdir())
        entries = []
        for path in paths:
            rel = path.relative_to(base).as_posix()
            if path.is_dir():
                entries.append(self._entry(rel, "tree", 0, "", commit, committed))
            elif path.is_file():
                sha = self.sha256(path)
                if self._lists_wrong_sha(repo_id, revision, rel):
                    sha = hashlib.sha256(b"not the bytes: " + sha.encode()).hexdigest()
                entries.append(self._entry(rel, "blob", path.stat().st_size, sha, commit, committed))
        return entries

    @staticmethod
    def _entry(rel: str, kind: str, size: int, sha: str, commit: str, committed: int) -> dict:
        # Field names as the hub's repo/files answer spells them; the SDK reads Path, Type,
        # Size and Sha256 (modelscope_hub/_download.py, download_repo); Revision is the commit.
        return {
            "Id": hashlib.sha1(f"{commit}:{rel}".encode()).hexdigest(),
            "Name": rel.rsplit("/", 1)[-1],
            "Path": rel,
            "Type": kind,
            "Size": size,
            "Sha256": sha,
            "IsLFS": kind == "blob" and rel.endswith(LFS_SUFFIXES),
            "Mode": "40000" if kind == "tree" else "100644",
            "Revision": commit,
            "CommitMessage": "stand-in hub",
            "CommitterName": "stand-in-hub",
            "CommittedDate": committed,
        }


def _make_handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    server_version = "stand-in-modelscope-hub/1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log is the record; stderr noise would only clutter test output

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        record = RecordedRequest(
            method=self.command,
            path=url.path,
            query=query,
            kind="unknown",
            range=self.headers.get("Range"),
            headers=dict(self.headers.items()),
            client=self.client_address[0],
        )
        try:
            self._route(url.path, query, record)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.hub._record(record)

    def _route(self, path: str, query: dict[str, str], record: RecordedRequest) -> None:
        if path == f"{API}/repos/internalAccelerationInfo":
            record.kind = "region"
            self._error(record, HTTPStatus.NOT_FOUND, "no intra-cloud acceleration on this hub")
            return
        match = _REPO_ROUTE.match(unquote(path))
        if not match:
            self._error(record, HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            return
        repo_id = f"{match['owner']}/{match['name']}"
        record.repo_id = repo_id
        record.kind = {
            None: "repo_info",
            "/revisions": "revisions",
            "/repo/files": "files",
            "/repo": "content",
        }[match["rest"]]
        if self.hub.repo_dir(repo_id) is None:
            self._error(record, HTTPStatus.NOT_FOUND, f"model {repo_id} does not exist")
            return
        if record.kind == "repo_info":
            self._repo_info(record, repo_id)
        elif record.kind == "revisions":
            self._revisions(record, repo_id)
        else:
            revision = query.get("Revision") or DEFAULT_BRANCH
            record.revision = revision
            if self.hub.revision_dir(repo_id, revision) is None:
                self._error(record, HTTPStatus.NOT_FOUND, f"model {repo_id} has no revision {revision}")
            elif record.kind == "files":
                self._files(record, repo_id, revision, query)
            else:
                self._content(record, repo_id, revision, query.get("FilePath", ""))

    # -- JSON endpoints --------------------------------------------------------------------
    def _repo_info(self, record: RecordedRequest, repo_id: str) -> None:
        owner, name = repo_id.split("/")
        self._json(record, HTTPStatus.OK, {"Id": 1, "Name": name, "Path": owner, "Private": False})

    def _revisions(self, record: RecordedRequest, repo_id: str) -> None:
        branches, tags = [], []
        for revision in self.hub.revisions(repo_id):
            created = int((self.hub.root / repo_id / revision).stat().st_mtime)
            item = {"Revision": revision, "CreatedAt": created, "Message": "", "CreatedBy": "stand-in-hub"}
            (branches if revision == DEFAULT_BRANCH else tags).append(item)
        self._json(record, HTTPStatus.OK, {"RevisionMap": {"Branches": branches, "Tags": tags}})

    def _files(self, record: RecordedRequest, repo_id: str, revision: str, query: dict[str, str]) -> None:
        recursive = query.get("Recursive", "False").lower() == "true"
        root = query.get("Root")
        if root and not self._inside(self.hub.revision_dir(repo_id, revision), root, want_dir=True):
            self._error(record, HTTPStatus.NOT_FOUND, f"no directory {root} in {repo_id}@{revision}")
            return
        files = self.hub.file_entries(repo_id, revision, recursive, root)
        self._json(record, HTTPStatus.OK, {"Files": files})

    def _json(self, record: RecordedRequest, status: HTTPStatus, data: dict) -> None:
        request_id = uuid.uuid4().hex
        body = {"Code": 200, "Data": data, "Message": "success", "RequestId": request_id, "Success": True}
        self._send_json(record, status, body)

    def _error(self, record: RecordedRequest, status: HTTPStatus, message: str) -> None:
        # The SDK's raise_for_status reads "Message" (the error text) and "Code"; an HTTP 404
        # maps to NotExistError. "Code" repeats the HTTP status: no business code applies.
        body = {"Code": int(status), "Message": message, "RequestId": uuid.uuid4().hex, "Success": False}
        self._send_json(record, status, body)

    def _send_json(self, record: RecordedRequest, status: HTTPStatus, body: dict) -> None:
        payload = json.dumps(body).encode()
        record.status = int(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # -- file content ----------------------------------------------------------------------
    @staticmethod
    def _inside(base: Path, rel: str, want_dir: bool = False) -> Path | None:
        """The path `rel` names under `base`, if it stays inside and exists."""
        candidate = (base / rel.lstrip("/")).resolve()
        if not candidate.is_relative_to(base.resolve()):
            return None
        exists = candidate.is_dir() if want_dir else candidate.is_file()
        return candidate if exists else None

    def _content(self, record: RecordedRequest, repo_id: str, revision: str, file_path: str) -> None:
        record.file_path = file_path
        path = self._inside(self.hub.revision_dir(repo_id, revision), file_path) if file_path else None
        if path is None:
            self._error(record, HTTPStatus.NOT_FOUND, f"file {file_path!r} not in {repo_id}@{revision}")
            return
        size = path.stat().st_size
        span = self._range(record, size)
        if span is None:
            return
        start, end, status = span
        length = end - start
        record.status = int(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{self.hub.sha256(path)}"')
        self.send_header("Content-Disposition", f'attachment; filename="{path.name}"')
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self.hub._take_cut(repo_id, revision, file_path)
        limit = length if cut is None else min(cut, length)
        self._stream(path, start, limit, record)
        if cut is not None:
            # Drop the connection mid-body: the client sees a short read and must resume.
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _range(self, record: RecordedRequest, size: int) -> tuple[int, int, HTTPStatus] | None:
        """(start, end exclusive, status) for the request's Range; answers 416 itself."""
        header = record.range
        if not header:
            return 0, size, HTTPStatus.OK
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
        if not match:
            return 0, size, HTTPStatus.OK  # what servers do with a Range they do not support
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
        if start >= size or end <= start:
            record.status = int(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start, end, HTTPStatus.PARTIAL_CONTENT

    def _stream(self, path: Path, start: int, count: int, record: RecordedRequest) -> None:
        with path.open("rb") as fh:
            fh.seek(start)
            while count > 0:
                block = fh.read(min(CHUNK, count))
                if not block:
                    break
                self.wfile.write(block)
                record.bytes_sent += len(block)
                count -= len(block)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a directory as a stand-in ModelScope hub.")
    parser.add_argument("--root", required=True, type=Path, help="ROOT/<owner>/<name>/<revision>/files")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", default=0, type=int, help="0 picks a free port")
    args = parser.parse_args(argv)
    hub = StandInHub(args.root, args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with hub:
        print(hub.url, flush=True)
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
