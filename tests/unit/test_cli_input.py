"""Bad input to `vllm-fleet check` is one line on stderr and exit 2: never a traceback, never a
nonsense plan, never a hub request (docs/preflight.md). Each case runs the real command
(bin/vllm-fleet) with the hub pointed at a loopback listener that counts connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.cli import main as cli_main

ROOT = Path(__file__).parents[2]
BIN = ROOT / "bin" / "vllm-fleet"
GOOD = "qwen/Qwen1.5-7B-Chat"


@pytest.fixture(scope="module")
def hub_listener():
    """A loopback socket standing where the hub would be: it only counts who connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    hits: list[int] = []

    def accept():
        while True:
            try:
                conn, _address = server.accept()
            except OSError:
                return
            hits.append(1)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", hits
    server.close()


def _bad_config_dir(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text('{"hidden_size": 4096,')  # cut off mid-object
    return str(tmp_path)


# id -> argv after "check" (a callable gets tmp_path), and words stderr must contain
CASES = {
    "config-not-json": (lambda tmp: [_bad_config_dir(tmp), "--gpu", "T4"], "is not valid JSON"),
    "tp-zero": ([GOOD, "--gpu", "T4", "-tp", "0"], "--tensor-parallel-size must be a whole number of at least 1"),
    "tp-negative": ([GOOD, "--gpu", "T4", "--tensor-parallel-size", "-2"], "at least 1"),
    "pp-zero": ([GOOD, "--gpu", "T4", "--pipeline-parallel-size", "0"], "--pipeline-parallel-size must be"),
    "utilization-zero": ([GOOD, "--gpu", "T4", "--gpu-memory-utilization", "0"], "must be in (0, 1]"),
    "utilization-above-one": ([GOOD, "--gpu", "T4", "--gpu-memory-utilization", "1.5"], "must be in (0, 1]"),
    "absolute-path-missing": (["/no/such/model", "--gpu", "T4"], "no such file or directory"),
    "dot-slash-path-missing": (["./no-such-model", "--gpu", "T4"], "not sent to the hub"),
    "home-path-missing": (["~/no-such-model", "--gpu", "T4"], "not sent to the hub"),
    "dotdot-path-missing": (["../no-such-model", "--gpu", "T4"], "not sent to the hub"),
    "repo-id-with-dotdot": (["qwen/..", "--gpu", "T4"], "is not a hub repo id"),
    "repo-id-three-parts": (["qwen/a/b", "--gpu", "T4"], "is not a hub repo id"),
    "repo-id-no-owner": (["Qwen1.5-7B-Chat", "--gpu", "T4"], "is not a hub repo id"),
    "repo-id-bad-characters": (["qwen/Qwen 7B;rm", "--gpu", "T4"], "is not a hub repo id"),
    "newline-in-value": ([GOOD, "--gpu", "T4", "--served-model-name", "a\nExecStartPre=/bin/sh"], "a newline"),
    "carriage-return-in-name": ([GOOD, "--gpu", "T4", "--enforce-eager\r"], "a carriage return"),
    "unknown-gpu": ([GOOD, "--gpu", "Voodoo5"], "Voodoo5"),
    "gpu-count-zero": ([GOOD, "--gpu", "T4", "--gpu-count", "0"], "--gpu-count must be at least 1"),
}


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input_is_one_line_exit_2_fast_and_never_reaches_the_hub(case_id, hub_listener, tmp_path):
    endpoint, hits = hub_listener
    argv, words = CASES[case_id]
    argv = argv(tmp_path) if callable(argv) else argv
    env = {
        **os.environ,
        "MODELSCOPE_ENDPOINT": endpoint,
        "VLLM_FLEET_CONFIG_CACHE": str(tmp_path / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    before = len(hits)
    start = time.perf_counter()
    argv = [sys.executable, str(BIN), "check", *argv]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert words in run.stderr, run.stderr
    assert elapsed < 1.0, f"{case_id} took {elapsed:.2f} s"
    assert len(hits) == before, "a bad input reached the hub"


def test_a_nul_byte_in_a_flag_is_refused(capsys):
    """argv cannot carry NUL through exec, but an in-process caller can: the same refusal."""
    code = cli_main(["check", GOOD, "--gpu", "T4", "--served-model-name", "a\x00b"])
    err = capsys.readouterr().err
    assert code == 2 and "a NUL byte" in err and len(err.strip().splitlines()) == 1


def test_good_input_still_plans(capsys):
    assert cli_main(["check", GOOD, "--gpu", "T4", "-tp", "2", "--max-model-len", "8192", "--no-fetch"]) == 0
    assert "OK" in capsys.readouterr().out
