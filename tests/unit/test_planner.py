"""The memory planner against real vLLM numbers (tests/data/planner/measured.json) and the T4
outcomes of the old recipe (shared/facts.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import gpus, rules
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import (
    MemoryPlan,
    capture_sizes,
    gpu_total_bytes,
    plan_memory,
    tp_allowed,
)

from tests.unit.shapes import qwen2_config

DATA = json.loads((Path(__file__).parents[1] / "data" / "planner" / "measured.json").read_text())
TOLERANCE = 0.05

GPTQ_INT4 = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
T4 = {"name": "T4", "memory_mib": 15360, "compute_capability": "7.5"}
H100 = DATA["gpus"]["H100"]


def qwen15(hidden, inter, layers, heads, kv_heads, vocab, *, tied=False, quant=None, name=""):
    """ModelFacts from the Qwen1.5 shapes table in facts.md."""
    config = qwen2_config(hidden, inter, layers, heads, kv_heads, vocab, tied=tied, quantization_config=quant)
    return facts_from_config(config, name=name)


Q7B = qwen15(4096, 11008, 32, 32, 32, 151936, name="Qwen1.5-7B-Chat")
Q7B_INT4 = qwen15(4096, 11008, 32, 32, 32, 151936, quant=GPTQ_INT4, name="Qwen1.5-7B-Chat-GPTQ-Int4")
Q14B_INT4 = qwen15(5120, 13696, 40, 40, 40, 152064, quant=GPTQ_INT4, name="Qwen1.5-14B-Chat-GPTQ-Int4")
Q32B_INT4 = qwen15(5120, 27392, 64, 40, 8, 152064, quant=GPTQ_INT4, name="Qwen1.5-32B-Chat-GPTQ-Int4")

# The old recipe's serve line: --dtype half --gpu-memory-utilization 0.95 (facts.md).
RECIPE = {"gpu_memory_utilization": 0.95}


def _plan(case: dict) -> MemoryPlan:
    facts = facts_from_config(DATA["models"][case["model"]], name=case["model"])
    return plan_memory(facts, DATA["gpus"][case["gpu"]], vllm_version=case["vllm_version"], **case["flags"])


def _within(predicted: float, measured: float) -> bool:
    return abs(predicted - measured) <= TOLERANCE * abs(measured)


# --- calibration: every measured case within ±5 % ----------------------------------------------


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["id"] for c in DATA["cases"]])
def test_kv_cache_gib_matches_measurement(case):
    plan = _plan(case)
    assert _within(plan.kv_cache_gib, case["measured"]["kv_gib"]), (plan.kv_cache_gib, case["measured"])


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["id"] for c in DATA["cases"]])
def test_kv_tokens_match_measurement(case):
    plan = _plan(case)
    assert _within(plan.kv_tokens, case["measured"]["kv_tokens"]), (plan.kv_tokens, case["measured"])


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["id"] for c in DATA["cases"]])
def test_weights_match_measurement(case):
    plan = _plan(case)
    assert _within(plan.weights_gib_per_gpu, case["measured"]["weights_gib"])


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["id"] for c in DATA["cases"]])
def test_measured_cases_start(case):
    assert _plan(case).fits


@pytest.mark.parametrize("case", DATA["refusals"], ids=[c["id"] for c in DATA["refusals"]])
def test_measured_refusals_are_predicted_with_vllms_words(case):
    plan = _plan(case)
    assert not plan.fits
    assert plan.kv_cache_gib <= 0 and plan.kv_tokens == 0
    assert case["measured"]["error"] in plan.problems[0]["message"]


def test_7b_server_numbers_are_near_exact():
    """The headline acceptance numbers: 114,384 tokens eager, 113,360 with CUDA graphs."""
    eager = plan_memory(Q7B, H100, gpu_memory_utilization=0.9, enforce_eager=True, vllm_version="0.26.0")
    graphs = plan_memory(Q7B, H100, gpu_memory_utilization=0.9, vllm_version="0.26.0")
    assert abs(eager.kv_tokens - 114_384) <= 0.005 * 114_384
    assert abs(graphs.kv_tokens - 113_360) <= 0.005 * 113_360
    assert eager.kv_bytes_per_token == 512 * 1024  # 0.5 MiB/token, facts.md


# --- the T4 outcomes of the old recipe --------------------------------------------------------


def test_t4_total_is_what_torch_sees_not_nvidia_smi():
    assert gpu_total_bytes(T4) == 15_655_829_504
    assert gpu_total_bytes({"name": "T4", "memory_bytes": 123}) == 123


@pytest.mark.parametrize("name", list(gpus.CATALOG))
def test_planner_reads_torch_totals_from_the_gpu_catalog(name):
    entry = gpus.lookup(name)
    bare = {
        "name": name,
        "memory_mib": entry["memory_mib"],
        "compute_capability": entry["compute_capability"],
    }
    assert gpu_total_bytes(bare) == gpu_total_bytes(entry) == gpus.usable_bytes(entry)


def test_an_uncatalogued_gpu_is_planned_from_nvidia_smi_less_450_mib():
    assert gpu_total_bytes({"name": "B999", "memory_mib": 99999}) == (99999 - 450) * 1024**2
    with pytest.raises(ValueError, match="memory_mib"):
        gpu_total_bytes({"name": "B999"})


SHAPES = [Q7B, Q7B_INT4, Q14B_INT4, Q32B_INT4, qwen15(2560, 6912, 40, 20, 20, 151936)]


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f.name or "4B")
@pytest.mark.parametrize("tp", [1, 2, 3, 4, 8])
def test_tp_allowed_is_what_the_rules_table_says(facts, tp):
    case = rules.Case(facts=facts, gpus=[], flags={}, vllm_version="0.32.0", tp=tp)
    errors, _warnings = rules.evaluate(case, "0.32.0", "model")
    refused = {e["rule"] for e in errors} & set(rules.TP_SHAPE_RULES)
    assert tp_allowed(facts, tp) == (not refused), refused


def test_a_rule_change_reaches_the_planners_fixes(monkeypatch):
    """The planner has no copy of the divisibility rules: make the MLP row refuse tp 2 and the
    7B's memory fix stops suggesting it."""
    assert tp_allowed(Q7B, 2) and "tp 2" in plan_memory(Q7B, T4, **RECIPE).problems[0]["fix"]

    def refuse_tp2(case):
        return [{"tp": 2, "mlp": "mlp", "inter": case.facts.intermediate_size, "ok": "1"}] if case.tp == 2 else []

    monkeypatch.setattr(
        rules,
        "RULES",
        tuple(replace(r, check=refuse_tp2) if r.id == "mlp-divisible-by-tp" else r for r in rules.RULES),
    )
    assert not tp_allowed(Q7B, 2)
    assert "tp 2" not in plan_memory(Q7B, T4, **RECIPE).problems[0]["fix"]


def test_7b_fp16_on_one_t4_refuses_and_suggests_tp2_or_a_quantized_model():
    plan = plan_memory(Q7B, T4, **RECIPE)
    assert not plan.fits and plan.kv_tokens == 0
    fix = plan.problems[0]["fix"]
    assert "tp 2" in fix and "GPTQ-Int4" in fix
    assert "14.39 GiB" in plan.problems[0]["message"]


def test_7b_fp16_tp2_on_t4_fits_only_with_a_bounded_max_model_len():
    full = plan_memory(Q7B, T4, tp=2, **RECIPE)
    assert not full.fits
    assert 8192 < full.max_model_len_fit < 32768
    assert f"estimated maximum model length is {full.max_model_len_fit}" in full.problems[0]["message"]
    assert f"--max-model-len {full.max_model_len_suggested}" in full.problems[0]["fix"]
    assert plan_memory(Q7B, T4, tp=2, max_model_len=full.max_model_len_suggested, **RECIPE).fits


def test_32b_gptq_tp2_on_t4_fits_a_bounded_len_and_more_with_enforce_eager():
    graphs = plan_memory(Q32B_INT4, T4, tp=2, **RECIPE)
    eager = plan_memory(Q32B_INT4, T4, tp=2, enforce_eager=True, **RECIPE)
    assert not graphs.fits and graphs.max_model_len_fit < 32768
    assert eager.max_model_len_fit > graphs.max_model_len_fit
    assert "--enforce-eager" in graphs.problems[0]["fix"]
    assert plan_memory(Q32B_INT4, T4, tp=4, **RECIPE).fits  # "tp 4 runs with defaults"


def test_14b_gptq_tp1_on_t4_runs_with_max_model_len_2048():
    plan = plan_memory(Q14B_INT4, T4, max_model_len=2048, **RECIPE)
    assert plan.fits and plan.kv_tokens > 2048


def test_14b_gptq_fix_never_suggests_a_tp_its_groups_cannot_split():
    assert not tp_allowed(Q14B_INT4, 2)  # 13696 / 2 = 6848 = 53.5 x 128
    plan = plan_memory(Q14B_INT4, T4, **RECIPE)
    assert not plan.fits
    assert "tp 2" not in plan.problems[0]["fix"] and "tp 4" not in plan.problems[0]["fix"]


def test_7b_gptq_int4_fits_one_t4_with_a_capped_length():
    plan = plan_memory(Q7B_INT4, T4, max_model_len=8192, **RECIPE)
    assert plan.fits and plan.weights_gib_per_gpu < 6


# --- mechanics --------------------------------------------------------------------------------


def test_server_defaults_follow_the_gpu():
    assert plan_memory(Q7B, H100).max_num_batched_tokens == 8192
    t4 = plan_memory(Q7B_INT4, T4, max_model_len=4096)
    assert (t4.max_num_batched_tokens, t4.max_num_seqs) == (2048, 256)


def test_capture_sizes_match_vllm():
    sizes = capture_sizes(1024, 8192)
    assert len(sizes) == 51 and sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 512
    assert capture_sizes(4, 8192) == [1, 2, 4, 8]


def test_fp8_kv_cache_doubles_tokens():
    fp16 = plan_memory(Q7B, H100, enforce_eager=True)
    fp8 = plan_memory(Q7B, H100, enforce_eager=True, kv_cache_dtype_bytes=1)
    assert fp8.kv_bytes_per_token * 2 == fp16.kv_bytes_per_token
    assert abs(fp8.kv_tokens - 2 * fp16.kv_tokens) <= 32


def test_gqa_kv_heads_split_then_replicate():
    assert plan_memory(Q32B_INT4, H100, tp=8).kv_bytes_per_token == 2 * 64 * 1 * 128 * 2
    assert plan_memory(Q32B_INT4, H100, tp=4).kv_bytes_per_token == 2 * 64 * 2 * 128 * 2


def test_max_model_len_above_the_model_is_refused():
    plan = plan_memory(Q7B, H100, max_model_len=65536)
    assert not plan.fits and "above the model's own maximum 32768" in plan.problems[0]["message"]


def test_utilization_leaving_no_room_for_the_cuda_context_is_refused():
    plan = plan_memory(Q7B_INT4, T4, gpu_memory_utilization=0.99, max_model_len=2048)
    assert not plan.fits and "--gpu-memory-utilization 0.97" in plan.problems[0]["fix"]


def test_plan_is_plain_data():
    d = plan_memory(Q7B, {"name": "H100", "memory_bytes": 85_017_493_504}).as_dict()
    json.dumps(d)
    assert {
        "weights_gib_per_gpu",
        "activation_gib",
        "non_torch_gib",
        "cuda_graph_gib",
        "kv_cache_gib",
        "kv_tokens",
        "kv_bytes_per_token",
        "max_model_len",
        "max_model_len_fit",
        "fits",
        "problems",
        "max_concurrency",
    } <= set(d)


def test_gpu_may_be_an_object():
    class Gpu:
        name, memory_bytes, compute_capability = "H100", 85_017_493_504, "9.0"

    assert plan_memory(Q7B, Gpu()).kv_tokens == plan_memory(Q7B, H100).kv_tokens


def test_awq_zero_points_grow_only_under_hoppers_machete_kernel():
    """vLLM 0.26 runs GPTQ/AWQ through Machete on cc 9.0 (AWQ zero points become fp16) and
    through Marlin on a T4 (packed): tests/data/gpu/measured.json, 14B AWQ on an H100."""
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import kernel_repack_bytes

    awq = qwen15(
        5120, 13696, 40, 40, 40, 152064, quant={"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}
    )
    assert kernel_repack_bytes(awq, T4) == 0 and kernel_repack_bytes(Q14B_INT4, H100) == 0
    extra = kernel_repack_bytes(awq, H100)
    assert 0.13 < extra / 1024**3 < 0.15
    assert kernel_repack_bytes(awq, H100, tp=2) == extra // 2
    assert plan_memory(awq, H100).weights_gib_per_gpu > plan_memory(awq, T4, max_model_len=2048).weights_gib_per_gpu
