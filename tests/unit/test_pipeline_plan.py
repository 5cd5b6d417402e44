"""Pipeline parallel in the planner (issue 17): each stage's own budget, vLLM's layer split, every
stage sized to the stage that affords the fewest blocks, and the per-stage plan of the CLI."""

from __future__ import annotations

import json

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.cli import main as cli_main
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.hub_configs import load_facts
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import (
    GIB,
    plan_memory,
    pp_partition,
    weight_bytes_per_rank,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check

from tests.unit.shapes import qwen2_config

T4 = {"name": "T4", "memory_mib": 15360, "compute_capability": "7.5"}
Q72B_AWQ = "Qwen/Qwen2.5-72B-Instruct-AWQ"


def facts(name: str):
    return load_facts(name, None, fetch=False)


@pytest.mark.parametrize(
    "layers, pp, split",
    [
        (80, 2, [40, 40]),
        # vLLM's get_pp_indices: 80 // 3 = 26 each, the remainder 2 to the two stages before the last.
        (80, 3, [27, 27, 26]),
        (28, 8, [3, 3, 3, 4, 4, 4, 4, 3]),
        (2, 2, [1, 1]),
    ],
)
def test_layers_split_as_vllm_splits_them(layers, pp, split):
    assert pp_partition(layers, pp) == split
    config = qwen2_config(1024, 2816, layers, 16, 16)
    plan = plan_memory(facts_from_config(config), T4, pp=pp, max_model_len=2048)
    assert [st["layers"][1] - st["layers"][0] for st in plan.stages] == split
    assert plan.stages[0]["layers"][0] == 0 and plan.stages[-1]["layers"][1] == layers
    assert all(a["layers"][1] == b["layers"][0] for a, b in zip(plan.stages, plan.stages[1:], strict=False))


def test_the_stages_hold_the_whole_model_once():
    # Split over pp stages, the weights add up to the unsplit model's, plus one rotary cache per
    # stage (each stage builds its own): nothing is lost or counted twice.
    model = facts(Q72B_AWQ)
    whole = weight_bytes_per_rank(model, tp=2)
    rotary = model.max_supported_len * model.head_dim * 2
    for pp in (2, 4):
        stages = [weight_bytes_per_rank(model, tp=2, pp=pp, stage=s) for s in range(pp)]
        assert sum(stages) - (pp - 1) * rotary == pytest.approx(whole, rel=1e-6)


def test_first_and_last_stages_hold_the_embedding_and_the_head():
    model = facts(Q72B_AWQ)  # untied: embed_tokens and lm_head are each vocab x hidden
    plan = plan_memory(model, T4, tp=2, pp=4, max_model_len=32768)
    first, middle, middle_too, last = (st["weights_gib_per_gpu"] for st in plan.stages)
    assert middle == middle_too
    ends = 152064 * 8192 * 2 / 2 / GIB  # one of them, fp16, split over tp 2
    assert first - middle == pytest.approx(ends, abs=0.02)
    assert last - middle == pytest.approx(ends, abs=0.02)


def test_every_stage_gets_the_blocks_of_the_stage_that_affords_fewest():
    # vLLM: get_kv_cache_configs gives every rank the smallest num_blocks of all ranks.
    plan = plan_memory(facts(Q72B_AWQ), T4, tp=2, pp=4, max_model_len=32768)
    blocks = [st["num_blocks"] for st in plan.stages]
    assert len(set(blocks)) > 1, "the end stages hold more weights: their budgets differ"
    assert plan.num_blocks == min(blocks)
    limiting = [st for st in plan.stages if st["limits_kv_cache"]]
    assert len(limiting) == 1 and limiting[0]["num_blocks"] == min(blocks)
    assert plan.kv_cache_gib == limiting[0]["kv_cache_gib"]
    per_request = -(-32768 // 16)
    assert plan.kv_tokens == int(plan.num_blocks / per_request * 32768)
    # Only the limiting stage's layers count in the bytes per token of the cache that binds.
    first, end = limiting[0]["layers"]
    # K and V x 4 KV heads per GPU (8 over tp 2) x head_dim 128 x 2 bytes, per layer of the stage.
    assert plan.kv_bytes_per_token == 2 * 4 * 128 * 2 * (end - first)


def test_one_stage_is_the_plan_it_always_was():
    plan = plan_memory(facts(Q72B_AWQ), T4, tp=4, max_model_len=8192)
    (only,) = plan.stages
    assert only["layers"] == [0, 80] and only["limits_kv_cache"]
    assert (only["weights_gib_per_gpu"], only["kv_cache_gib"], only["num_blocks"]) == (
        plan.weights_gib_per_gpu,
        plan.kv_cache_gib,
        plan.num_blocks,
    )
    # The figures the planner gave before it planned stages (8f3b8b1), to the block.
    figures = (plan.weights_gib_per_gpu, plan.kv_cache_gib, plan.num_blocks, plan.kv_tokens, plan.max_model_len_fit)
    assert figures == (9.69, 2.0, 1635, 26160, 8192)
    assert (plan.activation_gib, plan.cuda_graph_gib) == (0.21, 1.25)


def test_the_stage_with_most_memory_can_be_the_one_with_fewest_blocks():
    # Qwen2.5-7B's 28 layers over 3 stages: 9, 10, 9 (vLLM's split). The middle stage holds neither
    # the embedding nor lm_head, so it has the most memory left, but caches 10 layers: it affords
    # the fewest blocks, and every stage gets its count.
    plan = plan_memory(facts("Qwen/Qwen2.5-7B-Instruct"), T4, pp=3, max_model_len=4096)
    first, middle, last = plan.stages
    assert [st["layers"] for st in plan.stages] == [[0, 9], [9, 19], [19, 28]]
    assert middle["kv_cache_gib"] > max(first["kv_cache_gib"], last["kv_cache_gib"])
    assert middle["num_blocks"] < min(first["num_blocks"], last["num_blocks"])
    assert middle["limits_kv_cache"] and plan.num_blocks == middle["num_blocks"]
    assert plan.kv_cache_gib == middle["kv_cache_gib"]


def test_weights_too_big_for_a_stage_name_the_stage():
    model = facts("Qwen/Qwen2.5-72B-Instruct")  # 145 GB in bf16: 8 T4s at tp 4 x pp 2 cannot hold it
    plan = plan_memory(model, T4, tp=4, pp=2)
    assert not plan.fits
    assert "(pipeline stage" in plan.problems[0]["message"], plan.problems


def test_more_stages_than_layers_is_refused_without_a_memory_plan():
    model = facts_from_config(qwen2_config(1024, 2816, 2, 16, 16))
    plan = check(model, ["T4"] * 3, {"pipeline-parallel-size": 3, "max-model-len": 2048})
    assert plan["verdict"] == "refused"
    assert [e["rule"] for e in plan["errors"]] == ["pp-layers"], plan["errors"]
    assert "use pipeline-parallel-size 2 or less" in plan["errors"][0]["fix"]


def test_cli_prints_the_plan_of_each_stage(capsys):
    code = cli_main(["check", Q72B_AWQ, "--gpu", "T4", "--gpu-count", "8", "-tp", "4", "-pp", "2", "--no-fetch"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tp 4  pp 2" in out
    assert "stage 0: GPUs 0,1,2,3  layers 0-39  weights " in out
    assert "stage 1: GPUs 4,5,6,7  layers 40-79  weights " in out
    assert out.count("<- every stage gets this stage's blocks") == 1

    code = cli_main(
        ["check", Q72B_AWQ, "--gpu", "T4", "--gpu-count", "8", "-tp", "2", "-pp", "4", "--no-fetch", "--json"]
    )
    plan = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [st["layers"] for st in plan["stages"]] == [[0, 20], [20, 40], [40, 60], [60, 80]]
    assert plan["kv_cache_gib"] == min(st["kv_cache_gib"] for st in plan["stages"])
