"""The planner and the rules table against real vLLM 0.26.0 on CUDA (docs/gpu-truth.md).

tests/data/gpu/measured.json: `vllm serve` starts on an H100 with the argv the vllm_service role
renders (bench/gpu/matrix.py, run_matrix.py); the planner must predict each within ±5 %.
tests/data/gpu/layer_check.json: vLLM building each model's layers for cc 7.5 / 7.0 at tp
1/2/4/8 (bench/gpu/layer_check.py); the rules table must give the same verdict every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rules
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import (
    facts_from_config,
    load_model_dir,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import kwargs_from_flags, plan_memory
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import normalize, to_argv

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data" / "gpu"
MEASURED = json.loads((DATA / "measured.json").read_text())
LAYERS = json.loads((DATA / "layer_check.json").read_text())
TOLERANCE = 0.05
RULE_ROWS = (*rules.TP_SHAPE_RULES, "quant-capability", "quant-type", "gptq-group-size", "gptq-desc-act")
ROWS = LAYERS["rows"]
T4 = {"name": "T4", "compute_capability": "7.5", "memory_mib": 15360}
CASES = MEASURED["cases"]
# vLLM's refusal while building a quantized layer split off its group boundary (a tp worker
# raises it before any memory is measured); the rules table, not the planner, must predict it.
SHAPE_REFUSAL = "The input size is not aligned with the quantized weight shape"
SIZED = [c for c in CASES if c["measured"].get("weights_gib") is not None]
STARTED = [c for c in CASES if not c["measured"].get("error")]
REFUSED = [c for c in SIZED if c["measured"].get("error")]
TP_CASES = [c for c in CASES if c["flags"].get("tensor-parallel-size", 1) > 1]


def _plan(case):
    config = json.loads((ROOT / "model_configs" / "qwen" / case["model"] / "config.json").read_text())
    kwargs = kwargs_from_flags(case["flags"])
    return plan_memory(facts_from_config(config, name=case["model"]), MEASURED["gpu"], vllm_version="0.26.0", **kwargs)


def _within(predicted: float, measured: float) -> bool:
    return abs(predicted - measured) <= TOLERANCE * abs(measured)


def _ids(cases):
    return [c["id"] for c in cases]


def test_the_table_covers_fp16_gptq_awq_sizes_budgets_and_graphs():
    models = {c["model"] for c in CASES}
    assert {"Qwen1.5-0.5B-Chat", "Qwen1.5-32B-Chat-GPTQ-Int4", "Qwen1.5-14B-Chat-AWQ"} <= models
    assert any(c["flags"]["gpu-memory-utilization"] < 0.2 for c in CASES)  # a T4's budget
    assert any(not c["flags"].get("enforce-eager") for c in CASES)  # CUDA graphs
    assert any(c["measured"].get("completion_tokens") for c in CASES)  # served a request
    assert REFUSED and STARTED


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_argv_is_what_the_role_renders(case):
    """The measured argv is the role's: vllm_argv (normalize + to_argv) of the case's flags."""
    assert case["argv"][1:3] == ["serve", f"MODELS/{case['model']}"]
    assert case["argv"][7:] == to_argv(normalize(case["flags"]))


@pytest.mark.parametrize("case", SIZED, ids=_ids(SIZED))
def test_weights_within_5_percent(case):
    plan = _plan(case)
    assert _within(plan.weights_gib_per_gpu, case["measured"]["weights_gib"]), (plan.weights_gib_per_gpu, case)


@pytest.mark.parametrize("case", SIZED, ids=_ids(SIZED))
def test_kv_cache_gib_within_5_percent(case):
    plan = _plan(case)
    assert _within(plan.kv_cache_gib, case["measured"]["kv_gib"]), (plan.kv_cache_gib, case["measured"])


@pytest.mark.parametrize("case", STARTED, ids=_ids(STARTED))
def test_started_cases_fit_and_kv_tokens_within_5_percent(case):
    plan = _plan(case)
    assert plan.fits, plan.problems
    assert _within(plan.kv_tokens, case["measured"]["kv_tokens"]), (plan.kv_tokens, case["measured"])


@pytest.mark.parametrize("case", REFUSED, ids=_ids(REFUSED))
def test_refusals_are_predicted_in_vllms_words(case):
    plan = _plan(case)
    assert not plan.fits
    assert case["measured"]["error"] in plan.problems[0]["message"]


@pytest.mark.parametrize(
    "case", [c for c in REFUSED if c["measured"].get("estimated_max_model_len")], ids=lambda c: c["id"]
)
def test_estimated_maximum_model_length_within_5_percent(case):
    plan = _plan(case)
    assert _within(plan.max_model_len_fit, case["measured"]["estimated_max_model_len"]), (
        plan.max_model_len_fit,
        case["measured"],
    )
    assert f"estimated maximum model length is {plan.max_model_len_fit}" in plan.problems[0]["message"]


# --- tensor parallel on real GPUs (issue 7: two H100s, each at a T4's budget) -------------------


def test_tp_cases_ran_on_as_many_real_gpus_as_tp():
    assert {c["model"] for c in TP_CASES} >= {
        "Qwen1.5-14B-Chat-AWQ",
        "Qwen1.5-14B-Chat-GPTQ-Int4",
        "Qwen1.5-7B-Chat-AWQ",
        "Qwen1.5-7B-Chat",
        "Qwen1.5-32B-Chat-GPTQ-Int4",
    }
    for case in TP_CASES:
        gpus = [line for line in case["device"].splitlines() if "H100" in line]
        assert len(gpus) >= case["flags"]["tensor-parallel-size"], case["device"]
    assert any(c["measured"].get("completion_tokens") for c in TP_CASES)  # tp 2 served a request


@pytest.mark.parametrize("case", TP_CASES, ids=_ids(TP_CASES))
def test_rules_give_vllms_tp_verdict(case):
    """vLLM's verdict at tp N on N real GPUs (refused while building layers, or not) is the rules
    table's, on the H100s it ran on and on the T4s whose budget it emulated."""
    facts = facts_from_config(
        json.loads((ROOT / "model_configs" / "qwen" / case["model"] / "config.json").read_text()), name=case["model"]
    )
    tp = case["flags"]["tensor-parallel-size"]
    refused_by_shape = case["measured"].get("error") == SHAPE_REFUSAL
    for gpu in ({"name": "H100", "compute_capability": "9.0", "memory_mib": 81559}, T4):
        rule_case = rules.Case(facts=facts, gpus=[gpu] * tp, flags={}, vllm_version="0.26.0", tp=tp)
        errors, _warnings = rules.evaluate(rule_case, "0.26.0", "model", only=RULE_ROWS)
        assert bool(errors) == refused_by_shape, (gpu["name"], errors, case["measured"])
        if refused_by_shape:
            assert [e["rule"] for e in errors] == ["row-parallel-group-alignment"]


# --- the rules table against vLLM building the layers -----------------------------------------


def _row_id(row):
    return f"{row['config'].split('/')[-1]}-{row['gpu']}-tp{row['tp']}"


def test_layer_check_covers_t4_and_v100_at_every_tp():
    assert LAYERS["vllm_version"] == "0.26.0"
    assert {(r["gpu"], r["tp"]) for r in ROWS} == {(g, t) for g in ("T4", "V100") for t in (1, 2, 4, 8)}
    assert all(r["vllm"] in ("accept", "refuse") for r in ROWS)  # no row where the check itself broke
    configs = {r["config"] for r in ROWS}
    assert len(configs) >= 12 and any("unpadded" in c for c in configs)


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_rules_agree_with_vllm(row):
    facts = load_model_dir(str(ROOT / row["config"]))
    gpu = {"name": row["gpu"], "compute_capability": row["cc"], "memory_mib": 15360}
    case = rules.Case(facts=facts, gpus=[gpu] * row["tp"], flags={}, vllm_version="0.26.0", tp=row["tp"])
    errors, _warnings = rules.evaluate(case, "0.26.0", "model", only=RULE_ROWS)
    verdict = "refuse" if errors else "accept"
    assert verdict == row["vllm"], (row.get("error"), errors)


def test_quantized_layers_really_were_quantized():
    """A GPTQ config without modules_in_block_to_quantize silently builds fp16 layers from dummy
    weights; layer_check adds it, and every accepted quantized row used a quantized method."""
    for row in ROWS:
        if row["vllm"] == "accept" and ("GPTQ" in row["config"] or "AWQ" in row["config"]):
            methods = {layer["method"] for layer in row["layers"].values() if isinstance(layer, dict)}
            assert methods <= {"AutoGPTQLinearMethod", "AutoAWQMarlinLinearMethod"}, (row["config"], methods)


# --- MoE and Qwen3 on an H200 (issue 13: tests/data/gpu/measured-h200.json) --------------------

H200 = json.loads((DATA / "measured-h200.json").read_text())
H200_CASES = H200["cases"]
H200_STARTED = [c for c in H200_CASES if c["measured"].get("kv_tokens")]
H200_REFUSED = [c for c in H200_CASES if c["measured"].get("error")]


def _plan_h200(case):
    facts = load_model_dir(str(ROOT / "model_configs" / "qwen" / case["model"]), name=case["model"])
    return plan_memory(facts, H200["gpu"], vllm_version=H200["vllm_version"], **kwargs_from_flags(case["flags"]))


def test_the_h200_table_covers_moe_fp16_awq_gptq_fp8_qwen3_dense_and_t4_budgets():
    models = {c["model"] for c in H200_CASES}
    assert {"Qwen3-30B-A3B", "Qwen3-30B-A3B-AWQ", "Qwen3-30B-A3B-GPTQ-Int4", "Qwen3-30B-A3B-FP8"} <= models
    assert {"Qwen1.5-MoE-A2.7B-Chat", "Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4", "Qwen3-8B", "Qwen3-4B"} <= models
    assert H200["gpu"]["memory_bytes"] == 150_109_880_320 and H200["vllm_version"] == "0.26.0"
    assert any(c["flags"]["gpu-memory-utilization"] < 0.1 for c in H200_STARTED)  # a T4's budget, started
    assert H200_REFUSED and all("No available memory" in c["measured"]["error"] for c in H200_REFUSED)


@pytest.mark.parametrize("case", H200_CASES, ids=_ids(H200_CASES))
def test_h200_argv_is_what_the_role_renders(case):
    assert case["argv"][7:] == to_argv(normalize(case["flags"]))


@pytest.mark.parametrize("case", H200_CASES, ids=_ids(H200_CASES))
def test_h200_weights_and_kv_cache_within_5_percent(case):
    plan, measured = _plan_h200(case), case["measured"]
    assert _within(plan.weights_gib_per_gpu, measured["weights_gib"]), (plan.weights_gib_per_gpu, measured)
    assert _within(plan.kv_cache_gib, measured["kv_gib"]), (plan.kv_cache_gib, measured)


@pytest.mark.parametrize("case", H200_STARTED, ids=_ids(H200_STARTED))
def test_h200_started_cases_fit_with_kv_tokens_within_5_percent(case):
    plan = _plan_h200(case)
    assert plan.fits, plan.problems
    assert _within(plan.kv_tokens, case["measured"]["kv_tokens"]), (plan.kv_tokens, case["measured"])


@pytest.mark.parametrize("case", H200_REFUSED, ids=_ids(H200_REFUSED))
def test_h200_refusals_are_predicted_in_vllms_words(case):
    plan = _plan_h200(case)
    assert not plan.fits and case["measured"]["error"] in plan.problems[0]["message"]


def test_moe_kernels_vllm_used_are_the_ones_the_rules_assume():
    """Marlin took the 4-bit experts (no WNA16 fallback at tp 1: 768 is whole groups) and Triton
    the fp16 and FP8 ones, as rules.py and planner.moe_kernel_bytes assume on cc 9.0."""
    kernels = {c["model"]: c["measured"].get("moe_method", "") for c in H200_CASES}
    assert "MARLIN" in kernels["Qwen3-30B-A3B-AWQ"] and "MARLIN" in kernels["Qwen3-30B-A3B-GPTQ-Int4"]
    assert "TRITON" in kernels["Qwen3-30B-A3B"] and "TRITON" in kernels["Qwen3-30B-A3B-FP8"]
    assert not any(c["measured"].get("moe_fallback") for c in H200_CASES)
