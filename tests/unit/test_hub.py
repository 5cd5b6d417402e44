"""The real modelscope SDK (1.40.2) against the stand-in hub, over loopback only.

What the weights role relies on, proven with the SDK itself rather than assumed: a pinned
revision arrives byte-identical, a second run moves no file content, a file damaged on disk is
found by its sha256 and fetched again, a cut download resumes with a Range request, a listing
whose sha256 the bytes do not match is refused, and unknown repos/revisions fail clearly.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests
from modelscope import snapshot_download
from modelscope.hub.file_download import model_file_download
from modelscope_hub import _download as sdk_download
from modelscope_hub.errors import FileDownloadError, FileIntegrityError

from tests.support.hub import publish_tiny_model

# Fixtures (modelscope_env, hub_server, hub_root) come from tests/support/fixtures.py,
# registered in tests/conftest.py.
REPO = "qwen/tiny-chat"
WEIGHTS = "model.safetensors"


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path (SDK lock/partial files excluded)."""
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.endswith(".incomplete")
    }


@pytest.fixture
def published(hub_root):
    """Two revisions of one model that differ in every weight: v1 (normal) and master (newline)."""
    return {
        "v1": publish_tiny_model(hub_root, f"{REPO}@v1", variant="normal"),
        "master": publish_tiny_model(hub_root, f"{REPO}@master", variant="newline"),
    }


def download(local_dir: Path, revision: str = "v1", repo: str = REPO) -> Path:
    return Path(snapshot_download(repo, revision=revision, local_dir=str(local_dir)))


def test_snapshot_download_pins_revision_byte_identical(modelscope_env, published, tmp_path):
    hub = modelscope_env
    started = time.monotonic()
    out = download(tmp_path / "out", revision="v1")
    elapsed = time.monotonic() - started
    print(f"snapshot_download of {sum(p.stat().st_size for p in out.iterdir())} bytes took {elapsed:.2f} s")

    assert digests(out) == digests(published["v1"])
    assert digests(out)[WEIGHTS] != digests(published["master"])[WEIGHTS]
    fetched = hub.content_requests()
    assert sorted(r.file_path for r in fetched) == sorted(digests(published["v1"]))
    assert {r.revision for r in fetched} == {"v1"}
    assert all(r.status == 200 and r.range is None for r in fetched)
    # Only endpoints the hub implements were asked for.
    assert {r.kind for r in hub.requests} <= {"files", "region", "content"}


def test_second_download_fetches_no_file_content(modelscope_env, published, tmp_path):
    hub = modelscope_env
    download(tmp_path / "out")
    hub.clear_log()

    download(tmp_path / "out")

    assert hub.content_requests() == []
    assert [r.kind for r in hub.requests] == ["files"]  # the listing only
    assert digests(tmp_path / "out") == digests(published["v1"])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: bytes([data[0] ^ 0xFF]) + data[1:], id="flipped-byte-same-size"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    ],
)
def test_file_damaged_on_disk_is_detected_by_sha256_and_fetched_again(modelscope_env, published, tmp_path, damage):
    # The SDK re-hashes every file already on disk (a same-size change too) and re-downloads
    # the one that no longer matches the listing; it does not raise.
    hub = modelscope_env
    out = download(tmp_path / "out")
    weights = out / WEIGHTS
    weights.write_bytes(damage(weights.read_bytes()))
    hub.clear_log()

    download(tmp_path / "out")

    assert [r.file_path for r in hub.content_requests()] == [WEIGHTS]
    assert digests(out) == digests(published["v1"])


def test_interrupted_download_resumes_with_range_request(modelscope_env, published, tmp_path):
    hub = modelscope_env
    size = (published["v1"] / WEIGHTS).stat().st_size
    cut_at = 1_500_000  # past the SDK's first 1 MiB chunk, so a partial file is kept
    hub.cut_body_once(REPO, WEIGHTS, after_bytes=cut_at)

    out = download(tmp_path / "out")

    first, resumed = hub.content_requests(WEIGHTS)
    assert first.range is None and first.bytes_sent == cut_at
    assert resumed.range is not None and resumed.range.startswith("bytes=")
    offset = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= cut_at
    assert resumed.status == 206 and resumed.bytes_sent == size - offset
    assert digests(out) == digests(published["v1"])
    assert not (out / f"{WEIGHTS}.incomplete").exists()


def test_wrong_sha256_in_listing_raises_integrity_error(modelscope_env, published, tmp_path, monkeypatch):
    # The SDK waits 1 s, then 2 s between its hash retries; the retries matter, the waits don't.
    monkeypatch.setattr(sdk_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    hub = modelscope_env
    hub.serve_wrong_sha256(REPO, "config.json")

    with pytest.raises(FileDownloadError) as raised:
        download(tmp_path / "out")

    assert list(raised.value.failed_files) == ["config.json"]
    assert isinstance(raised.value.failed_files["config.json"], FileIntegrityError)
    assert "Hash mismatch" in str(raised.value.failed_files["config.json"])
    assert len(hub.content_requests("config.json")) == sdk_download.DOWNLOAD_HASH_RETRY_TIMES
    # Bad bytes are not left looking finished; the other files are complete and kept.
    assert not (tmp_path / "out" / "config.json").exists()
    assert digests(tmp_path / "out")[WEIGHTS] == digests(published["v1"])[WEIGHTS]


def test_unknown_revision_is_a_clear_http_error(modelscope_env, published, tmp_path):
    with pytest.raises(requests.exceptions.HTTPError, match="has no revision v9"):
        download(tmp_path / "out", revision="v9")
    assert modelscope_env.content_requests() == []
    assert not any((tmp_path / "out").glob("*.json"))


def test_unknown_repo_is_a_clear_http_error(modelscope_env, published, tmp_path):
    with pytest.raises(requests.exceptions.HTTPError, match="model qwen/absent does not exist"):
        download(tmp_path / "out", repo="qwen/absent")


def test_single_file_download_without_revision_resolves_master(modelscope_env, published, tmp_path):
    hub = modelscope_env
    path = Path(model_file_download(REPO, "tokenizer.json", local_dir=str(tmp_path / "one")))

    assert path.read_bytes() == (published["master"] / "tokenizer.json").read_bytes()
    assert "revisions" in [r.kind for r in hub.requests]
    assert [r.revision for r in hub.content_requests()] == ["master"]


def test_loopback_guard_refuses_anything_else(loopback_only):
    # The guard under every SDK test above: it must really refuse, or those prove nothing.
    with pytest.raises(OSError, match="non-loopback host"):
        socket.getaddrinfo("www.modelscope.cn", 443)
    with socket.socket() as sock, pytest.raises(OSError, match="non-loopback address"):
        sock.connect(("192.0.2.1", 443))


# -- the hub's own HTTP behaviour ------------------------------------------------------------


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def content_url(hub, file_path: str, revision: str = "v1") -> str:
    return f"{hub.url}/api/v1/models/{REPO}/repo?Revision={revision}&FilePath={file_path}"


def test_listing_reports_path_type_size_sha256(hub_server, published):
    status, _headers, body = get(f"{hub_server.url}/api/v1/models/{REPO}/repo/files?Revision=v1&Recursive=True")
    assert status == 200
    files = {entry["Path"]: entry for entry in json.loads(body)["Data"]["Files"]}
    assert {path: entry["Sha256"] for path, entry in files.items()} == digests(published["v1"])
    assert files[WEIGHTS]["Type"] == "blob"
    assert files[WEIGHTS]["Size"] == (published["v1"] / WEIGHTS).stat().st_size


def test_revisions_list_master_as_branch_and_others_as_tags(hub_server, published):
    status, _headers, body = get(f"{hub_server.url}/api/v1/models/{REPO}/revisions")
    revision_map = json.loads(body)["Data"]["RevisionMap"]
    assert status == 200
    assert [b["Revision"] for b in revision_map["Branches"]] == ["master"]
    assert [t["Revision"] for t in revision_map["Tags"]] == ["v1"]


def test_range_request_gets_206_with_content_range(hub_server, published):
    data = (published["v1"] / "config.json").read_bytes()
    status, headers, body = get(content_url(hub_server, "config.json"), {"Range": "bytes=100-"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert body == data[100:]
    assert int(headers["Content-Length"]) == len(data) - 100


def test_range_past_the_end_gets_416(hub_server, published):
    size = (published["v1"] / "config.json").stat().st_size
    status, headers, _body = get(content_url(hub_server, "config.json"), {"Range": f"bytes={size}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{size}"


def test_path_outside_the_revision_is_not_served(hub_server, published):
    status, _headers, body = get(content_url(hub_server, "../master/config.json"))
    assert status == 404
    assert json.loads(body)["Success"] is False


def test_command_line_prints_url_and_serves(hub_root, published):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hub", "--root", str(hub_root), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, _headers, body = get(f"{url}/api/v1/models/{REPO}/revisions")
        assert status == 200 and json.loads(body)["Success"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
