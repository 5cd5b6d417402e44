"""Preflight for the Qwen models people run now (issue 13): MoE memory and verdicts, architectures
as data, --quantization / LoRA / CPU offload in the plan, and flags the planner does not model."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import architectures, vllm_architectures
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.cli import main as cli_main
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import (
    facts_from_config,
    load_model_dir,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import (
    GIB,
    local_experts,
    lora_bytes,
    plan_memory,
    pp_partition,
    weight_bytes_per_rank,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check, format_plan

from tests.unit.shapes import qwen2_config, qwen3_moe_config

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "model_configs" / "qwen"
T4 = {"name": "T4", "memory_mib": 15360, "compute_capability": "7.5"}


def shipped(name: str):
    return load_model_dir(str(CONFIGS / name), name=f"qwen/{name}")


# --- MoE weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, measured_gib",
    [
        # "Model loading took 56.88 GiB" / 15.68 GiB: real vLLM 0.26 on an H200, dummy weights
        # (shared/facts.md, "The device kind and vLLM 0.26 there").
        ("Qwen3-30B-A3B", 56.88),
        ("Qwen3-30B-A3B-AWQ", 15.68),
    ],
)
def test_moe_weights_are_what_vllm_loads(name, measured_gib):
    weights = weight_bytes_per_rank(shipped(name)) / GIB
    assert abs(weights - measured_gib) <= 0.05 * measured_gib, weights


def test_the_issues_examples_are_no_longer_a_confident_ok():
    """Before: 6.23 GiB/GPU on an A100 and OK for the AWQ model on one T4 (one MLP per layer)."""
    dense_view = check(shipped("Qwen3-30B-A3B"), ["A100-80GB"], {})
    assert dense_view["weights_gib"] > 56
    one_t4 = check(shipped("Qwen3-30B-A3B-AWQ"), ["T4"], {})
    assert one_t4["verdict"] == "refused" and one_t4["errors"][0]["rule"] == "memory-fits"
    assert "tp 2" in one_t4["errors"][0]["fix"]
    two_t4 = check(shipped("Qwen3-30B-A3B-AWQ"), ["T4", "T4"], {"tensor-parallel-size": 2})
    assert two_t4["verdict"] == "ok", two_t4["errors"]
    assert 7.5 < two_t4["weights_gib"] < 8.2


def test_expert_parallel_gives_each_rank_whole_experts():
    facts = shipped("Qwen1.5-MoE-A2.7B-Chat")  # 60 experts
    assert local_experts(facts, 8) == 8  # 60 = 4 x 8 + 4 x 7: the busiest rank holds 8
    sliced = weight_bytes_per_rank(facts, tp=8)
    whole = weight_bytes_per_rank(facts, tp=8, expert_parallel=True)
    assert whole > sliced  # 8 of 60 experts is more than 1/8 of each
    ep4 = weight_bytes_per_rank(shipped("Qwen3-30B-A3B"), tp=4, expert_parallel=True)
    tp4 = weight_bytes_per_rank(shipped("Qwen3-30B-A3B"), tp=4)
    assert abs(ep4 - tp4) < 0.01 * tp4  # 128 experts divide evenly: the same bytes, cut the other way


def test_shared_expert_and_router_are_counted():
    """Qwen1.5-MoE-A2.7B has 14.3 B parameters (its model card): 26.6 GiB in 16 bits."""
    facts = shipped("Qwen1.5-MoE-A2.7B-Chat")
    params = weight_bytes_per_rank(facts) / 2
    assert 14.2e9 < params < 14.5e9
    no_shared = replace(facts, shared_expert_intermediate_size=0)
    assert weight_bytes_per_rank(no_shared) < weight_bytes_per_rank(facts) - 24 * 3 * 2048 * 5632 * 2 * 0.99


def test_moe_pipeline_stages_each_hold_the_vocabulary():
    """qwen3_moe.py builds embed_tokens and lm_head on every pp rank (qwen2.py does not)."""
    moe = shipped("Qwen3-30B-A3B")
    vocab = 2 * moe.vocab_size * moe.hidden_size * 2
    half = weight_bytes_per_rank(moe, pp=2)
    assert half > (weight_bytes_per_rank(moe) - vocab) / 2 + vocab * 0.99
    assert pp_partition(48, 5) == [9, 10, 10, 10, 9]  # vLLM's get_pp_indices


def test_the_plan_says_how_experts_land_on_each_gpu():
    sliced = check(shipped("Qwen3-30B-A3B-AWQ"), ["T4"] * 2, {"tensor-parallel-size": 2})
    assert sliced["moe"] == {
        "experts": 128,
        "active_per_token": 8,
        "sparse_layers": 48,
        "expert_parallel": False,
        "experts_per_gpu": 128,
        "expert_width_per_gpu": 384,
    }
    whole = check(shipped("Qwen3-30B-A3B-AWQ"), ["T4"] * 2, {"tensor-parallel-size": 2, "enable-expert-parallel": True})
    assert (whole["moe"]["experts_per_gpu"], whole["moe"]["expert_width_per_gpu"]) == (64, 768)
    assert "64 x 768 wide" in format_plan(whole)
    assert check(shipped("Qwen2.5-7B-Instruct-AWQ"), ["T4"], {})["moe"] is None


def test_mixed_dense_and_sparse_layers_are_summed_layer_by_layer():
    base = qwen3_moe_config(layers=8)
    all_sparse = facts_from_config(base)
    mixed = facts_from_config({**base, "mlp_only_layers": [0, 2, 4, 6]})
    all_dense = facts_from_config({**base, "mlp_only_layers": list(range(8))})
    for fn in (lambda f: weight_bytes_per_rank(f, pp=2), lambda f: lora_bytes(f, 1, 2, 2, 2, 8)):
        low, high = sorted((fn(all_dense), fn(all_sparse)))
        assert low < fn(mixed) < high


def test_sparse_layers_follow_mlp_only_layers_and_the_sparse_step():
    config = {**qwen3_moe_config(layers=8), "mlp_only_layers": [0], "decoder_sparse_step": 2}
    facts = facts_from_config(config)
    assert [facts.is_sparse_layer(i) for i in range(8)] == [False, True, False, True, False, True, False, True]
    assert facts.sparse_layers == 4


# --- architectures as data -----------------------------------------------------------------------


def test_the_modeled_architectures_are_known_to_the_pinned_vllm():
    assert {"Qwen2ForCausalLM", "Qwen2MoeForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM"} <= set(
        architectures.ARCHITECTURES
    )
    assert set(architectures.ARCHITECTURES) <= vllm_architectures.SUPPORTED
    for arch in architectures.ARCHITECTURES.values():
        assert arch.vllm_source.startswith("vllm/model_executor/models/")


def test_every_shipped_config_is_a_modeled_architecture():
    for cfg in CONFIGS.glob("*/config.json"):
        arch = json.loads(cfg.read_text())["architectures"][0]
        assert arch in architectures.ARCHITECTURES, cfg


def test_an_unmodeled_architecture_is_refused_never_planned_as_qwen2():
    llama = replace(facts_from_config(qwen2_config(4096, 11008, 32, 32, 8)), architecture="LlamaForCausalLM")
    plan = check(llama, ["A100-80GB"], {})
    assert plan["verdict"] == "refused" and plan["kv_tokens"] is None and plan["weights_gib"] is None
    assert [e["rule"] for e in plan["errors"]] == ["architecture-modeled"]
    assert "allow_unmodeled" in plan["errors"][0]["fix"]
    allowed = check(llama, ["A100-80GB"], {}, allow_unmodeled=True)
    assert allowed["verdict"] == "ok" and allowed["weights_gib"] is None and allowed["kv_tokens"] is None
    assert "memory is UNCHECKED" in format_plan(allowed)


def test_an_architecture_vllm_does_not_know_is_refused_in_vllms_words():
    made_up = replace(facts_from_config(qwen2_config(4096, 11008, 32, 32, 8)), architecture="MadeUpForCausalLM")
    plan = check(made_up, ["T4"], {}, allow_unmodeled=True)
    assert plan["verdict"] == "refused"
    assert "Model architectures ['MadeUpForCausalLM'] are not supported for now" in plan["errors"][0]["message"]


# --- flags that change memory --------------------------------------------------------------------


def test_online_fp8_halves_the_weights_and_is_said_in_the_plan():
    facts = shipped("Qwen3-8B")
    fp16 = check(facts, ["L4"], {"max-model-len": 8192})
    fp8 = check(facts, ["L4"], {"max-model-len": 8192, "quantization": "fp8"})
    assert fp8["quantization"] == "fp8" and fp8["verdict"] == "ok"
    assert 0.5 < fp8["weights_gib"] / fp16["weights_gib"] < 0.62  # embeddings and lm_head stay 16-bit
    assert fp8["kv_tokens"] > fp16["kv_tokens"]


def test_a_quantized_method_on_an_fp16_checkpoint_is_refused_as_vllm_refuses_it():
    plan = check(shipped("Qwen2.5-7B-Instruct"), ["T4"], {"quantization": "awq"})
    assert plan["verdict"] == "refused"
    (err,) = [e for e in plan["errors"] if e["rule"] == "quantization-matches-checkpoint"]
    assert "Cannot find the config file for awq" in err["message"]
    other = check(shipped("Qwen2.5-7B-Instruct-AWQ"), ["T4"], {"quantization": "gptq"})
    assert any("does not match the quantization method" in e["message"] for e in other["errors"])


def test_lora_buffers_are_planned():
    """Research worked example (vllm/lora/layers, docs/planner.md): a Qwen3-4B, 4 LoRAs of rank 16
    at tp 1 in fp16 take about 304 MB."""
    facts = shipped("Qwen3-4B")
    assert abs(lora_bytes(facts, 1, 1, 2, 4, 16) / 1e6 - 304) < 6
    base = plan_memory(facts, T4, max_model_len=4096)
    lora = plan_memory(facts, T4, max_model_len=4096, max_loras=4, max_lora_rank=16)
    assert lora.weights_gib_per_gpu > base.weights_gib_per_gpu + 0.27
    plan = check(facts, ["T4"], {"enable-lora": True, "max-loras": 4, "max-lora-rank": 16, "max-model-len": 4096})
    assert plan["weights_gib"] == round(lora.weights_gib_per_gpu, 2)


def test_cpu_offload_moves_weights_off_the_gpu():
    facts = shipped("Qwen2.5-7B-Instruct")
    base = plan_memory(facts, T4, max_model_len=4096)
    offload = plan_memory(facts, T4, max_model_len=4096, cpu_offload_gb=4)
    assert abs((base.weights_gib_per_gpu - offload.weights_gib_per_gpu) - 4.0) < 0.02
    assert not base.fits and offload.fits  # 14.2 GiB of weights do not fit a T4; 10.2 do


def test_flags_the_planner_does_not_model_are_named_in_the_plan():
    plan = check(shipped("Qwen2.5-7B-Instruct-AWQ"), ["T4"], {"speculative-config": {"method": "ngram"}})
    (note,) = [w for w in plan["warnings"] if w["rule"] == "flag-not-modeled"]
    assert "--speculative-config is not modeled" in note["message"]


def test_fp8_kv_cache_on_a_t4_is_refused_with_the_fix():
    plan = check(shipped("Qwen2.5-7B-Instruct-AWQ"), ["T4"], {"kv-cache-dtype": "fp8"})
    (err,) = [e for e in plan["errors"] if e["rule"] == "kv-cache-dtype-supported"]
    assert "--kv-cache-dtype float16" in err["fix"]


def test_a_v100_is_below_the_pinned_vllms_floor():
    plan = check(shipped("Qwen2.5-7B-Instruct"), ["V100-32GB"], {"dtype": "half"})
    assert plan["verdict"] == "refused" and plan["errors"][0]["rule"] == "gpu-capability-floor"


# --- speed ---------------------------------------------------------------------------------------


def test_check_stays_under_100_ms_a_model_in_process(capsys):
    models = sorted(p.name for p in CONFIGS.iterdir() if (p / "config.json").is_file())
    start = time.perf_counter()
    for name in models:
        cli_main(["check", f"qwen/{name}", "--gpu", "T4", "-tp", "2", "--no-fetch"])
    per_model = (time.perf_counter() - start) / len(models)
    capsys.readouterr()
    assert per_model < 0.1, f"{per_model * 1000:.0f} ms a model over {len(models)} models"


def test_expert_parallel_reaches_the_moe_kernel_bytes():
    """FP8 experts on a T4 run on Marlin: whole 768-wide experts need no padding, 192-wide slices do."""
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import kernel_repack_bytes

    facts = shipped("Qwen3-30B-A3B-FP8")
    plan = plan_memory(facts, T4, tp=4, expert_parallel=True, max_model_len=4096)
    expected = weight_bytes_per_rank(facts, tp=4, expert_parallel=True) + kernel_repack_bytes(
        facts, T4, tp=4, expert_parallel=True
    )
    assert plan.weights_gib_per_gpu == round(expected / GIB, 2)
    assert kernel_repack_bytes(facts, T4, tp=4, expert_parallel=True) < kernel_repack_bytes(facts, T4, tp=4)
