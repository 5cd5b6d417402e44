"""Which files of a pinned model revision a host still needs, and proof of what it has.

The ModelScope SDK verifies every file it downloads against the hub's sha256,
and re-hashes every file already on disk on each call. Re-hashing 15 GB of
weights on every play is slow, so a manifest records, per file, the sha256 the
hub listed and the size and mtime the file had once verified: a file whose
size and mtime still match is trusted ("fast" verification), anything else is
handed back to the SDK, which re-hashes, repairs and resumes it.  "full"
verification re-hashes every file here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = ".vllm-fleet-manifest.json"
# SDK temp files and our own bookkeeping are never model files.
IGNORED_PREFIXES = (".", "._____temp")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None


@dataclass
class DownloadPlan:
    needed: list[RemoteFile] = field(default_factory=list)
    present: list[RemoteFile] = field(default_factory=list)

    @property
    def bytes_needed(self) -> int:
        return sum(f.size for f in self.needed)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(local_dir: Path) -> dict:
    try:
        return json.loads((Path(local_dir) / MANIFEST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_manifest(local_dir: Path, repo: str, revision: str, files: list[RemoteFile]) -> dict:
    """Record each file as verified now (its size and mtime on disk, the hub's sha256)."""
    entries = {}
    for remote in files:
        stat = (Path(local_dir) / remote.path).stat()
        entries[remote.path] = {"sha256": remote.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    manifest = {"repo": repo, "revision": revision, "files": entries}
    tmp = Path(local_dir) / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, Path(local_dir) / MANIFEST_NAME)
    return manifest


def _file_is_verified(local_dir: Path, remote: RemoteFile, manifest: dict, verify: str) -> bool:
    path = Path(local_dir) / remote.path
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != remote.size:
        return False
    if verify == "full":
        return remote.sha256 is None or sha256_file(path) == remote.sha256
    entry = manifest.get("files", {}).get(remote.path)
    return bool(
        entry
        and entry.get("sha256") == remote.sha256
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
    )


def plan_download(local_dir: Path, files: list[RemoteFile], verify: str = "fast") -> DownloadPlan:
    """Split the hub's listing into files to fetch and files already verified here."""
    if verify not in ("fast", "full"):
        raise ValueError(f"verify must be 'fast' or 'full', not {verify!r}")
    manifest = read_manifest(local_dir)
    plan = DownloadPlan()
    for remote in files:
        verified = _file_is_verified(local_dir, remote, manifest, verify)
        (plan.present if verified else plan.needed).append(remote)
    return plan


def manifest_is_complete(local_dir: Path, repo: str, revision: str) -> bool:
    """True when every file the manifest lists for this revision is still as verified.

    Lets a re-run (or a rollback) confirm the weights without reaching the hub.
    """
    manifest = read_manifest(local_dir)
    if manifest.get("repo") != repo or manifest.get("revision") != revision or not manifest.get("files"):
        return False
    files = [RemoteFile(p, e["size"], e.get("sha256")) for p, e in manifest["files"].items()]
    return not plan_download(local_dir, files, "fast").needed


def is_model_file(path: str) -> bool:
    return not any(part.startswith(IGNORED_PREFIXES) for part in Path(path).parts)


def space_problem(bytes_needed: int, free_bytes: int, reserve_bytes: int) -> str | None:
    """A message when the download would not leave reserve_bytes free, else None."""
    if bytes_needed + reserve_bytes <= free_bytes:
        return None
    gib = 1 << 30
    return (
        f"not enough disk space: the download needs {bytes_needed / gib:.2f} GiB and "
        f"{reserve_bytes / gib:.2f} GiB must stay free, but only {free_bytes / gib:.2f} GiB is free: "
        "free space, point model_weights_root at a larger disk, or lower model_weights_reserve_gib"
    )


def take_over_download(pid_file: Path, wait_s: float = 10.0) -> tuple[int | None, int]:
    """One download into a revision directory at a time. The downloading process holds an flock on
    pid_file with its pid written in, for as long as it lives. Held by another process, it is a run
    that lost this host (Ansible gave up on the host, its module process went on, and the SDK's file
    locks would hold this download back up to 600 s, or for ever behind a stuck one): that process is
    stopped (TERM, then KILL after wait_s) and its pid returned, else None. Not by command line: with
    pipelining a module's is the interpreter's alone. Returns (pid stopped, the descriptor that holds
    the lock: keep it open while downloading)."""
    import fcntl
    import signal
    import time

    pid_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pid_file, os.O_RDWR | os.O_CREAT, 0o600)
    stopped = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = int(os.pread(fd, 32, 0).split()[0])
        except (ValueError, IndexError):  # the holder has not written its pid yet: only wait
            holder = None
        deadline = time.monotonic() + wait_s
        if holder:
            os.kill(holder, signal.SIGTERM)
            stopped = holder
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline and holder:
                    os.kill(holder, signal.SIGKILL)
                    holder = None  # once: then wait for the kernel to let the lock go
                time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return stopped, fd
