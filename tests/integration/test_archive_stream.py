"""The real archive_stream action and module, run by the real `ansible` CLI over the local
connection (no ssh to stream through: copied first, then unpacked by the module; the streamed way
into a real test host is in test_test_hosts.py). Unpacked once: the marker is made last, a re-run
changes nothing, an interrupted unpack is done again, --check sends nothing, and a failed unpack
fails by its cause and leaves no marker.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.integration.ansible_run import module_json, run


def module(target: str, args: dict, *flags: str) -> tuple[int, dict]:
    result = run(
        "ansible", *flags, target, "-m", "vllm_fleet.fleet.archive_stream", "-a", json.dumps(args), timeout=120
    )
    return result.returncode, module_json(result.output, target)


def make_archive(tmp_path: Path) -> Path:
    """A tar with a nested directory, an executable and a private file, as `tar -c` makes them."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.whl").write_bytes(b"wheel" * 1000)
    (tree / "sub" / "run").write_text("#!/bin/sh\n")
    (tree / "sub" / "run").chmod(0o755)
    (tree / "sub" / "private").write_text("p\n")
    (tree / "sub" / "private").chmod(0o600)
    path = tmp_path / "tree.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(tree, arcname=".")
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_archive(tmp_path)


def test_local_connection_copies_then_unpacks_once(archive, tmp_path):
    dest = tmp_path / "out"
    args = {"src": str(archive), "dest": str(dest), "marker": ".done"}

    rc, out = module("localhost", args, "--check")
    assert rc == 0 and out["changed"] and not dest.exists()  # check mode sends and writes nothing

    rc, out = module("localhost", args)
    assert rc == 0 and out["changed"] and out["streamed"] is False, out  # no ssh: copied first
    assert out["archive_bytes"] == archive.stat().st_size
    assert (dest / "a.whl").read_bytes() == b"wheel" * 1000
    assert oct((dest / "sub" / "run").stat().st_mode & 0o777) == "0o755"
    assert oct((dest / "sub" / "private").stat().st_mode & 0o777) == "0o600"
    assert (dest / ".done").exists()

    rc, out = module("localhost", args)
    assert rc == 0 and not out["changed"], out

    # An interrupted unpack (files, no marker) is done again, whole.
    (dest / ".done").unlink()
    (dest / "a.whl").write_bytes(b"trunc")
    rc, out = module("localhost", args)
    assert rc == 0 and out["changed"] and (dest / "a.whl").read_bytes() == b"wheel" * 1000


def test_refusals_name_their_cause(archive, tmp_path):
    rc, out = module("localhost", {"src": str(tmp_path / "none.tar"), "dest": str(tmp_path / "o")})
    assert rc != 0 and f"no archive at {tmp_path / 'none.tar'} on the controller" in out["msg"]
    rc, out = module("localhost", {"src": str(archive), "dest": "relative/dir"})
    assert rc != 0 and "dest must be an absolute path" in out["msg"]
    rc, out = module("localhost", {"src": str(archive), "dest": str(tmp_path / "o"), "marker": "../escape"})
    assert rc != 0 and "marker must be a plain file name" in out["msg"]
    # Not an archive: tar's own error, and no marker.
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar" * 100)
    rc, out = module("localhost", {"src": str(bogus), "dest": str(tmp_path / "o"), "marker": ".done"})
    assert rc != 0 and not (tmp_path / "o" / ".done").exists(), out
