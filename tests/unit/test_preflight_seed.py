"""The old recipe's outcomes on T4s (shared/facts.md), reached by preflight with vLLM 0.32.0.

Rows marked PLANNER depend on the memory planner (planner.py): their verdict is a memory verdict.
The others are shape/dtype rules that need no memory numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.cli import main as cli_main
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.hub_configs import load_facts
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check, check_host

ROOT = Path(__file__).resolve().parents[2]
UNPADDED_14B_GPTQ = str(ROOT / "tests/data/configs/Qwen1.5-14B-Chat-GPTQ-Int4-unpadded")
RECIPE = {"dtype": "half", "gpu-memory-utilization": 0.95}

# (id, model, tp, extra flags, verdict, rule that decides, words the fix must name, needs planner)
SEED = [
    ("7b-gptq-tp1", "qwen/Qwen1.5-7B-Chat-GPTQ-Int4", 1, {"max-model-len": 8192}, "ok", None, None, True),
    ("7b-awq-tp2", "qwen/Qwen1.5-7B-Chat-AWQ", 2, {}, "ok", None, None, True),
    ("7b-fp16-tp1-oom", "qwen/Qwen1.5-7B-Chat", 1, {}, "refused", "memory-fits", "tp 2", True),
    (
        "7b-fp16-tp2-unbounded",
        "qwen/Qwen1.5-7B-Chat",
        2,
        {},
        "refused",
        "memory-fits",
        "--max-model-len",
        True,
    ),
    ("7b-fp16-tp2-14000", "qwen/Qwen1.5-7B-Chat", 2, {"max-model-len": 14000}, "ok", None, None, True),
    (
        "14b-gptq-tp2",
        UNPADDED_14B_GPTQ,
        2,
        {"max-model-len": 2048},
        "refused",
        "row-parallel-group-alignment",
        "use tp 1",
        False,
    ),
    (
        "14b-gptq-tp4",
        UNPADDED_14B_GPTQ,
        4,
        {"max-model-len": 2048},
        "refused",
        "row-parallel-group-alignment",
        "use tp 1",
        False,
    ),
    (
        "14b-awq-tp2",
        "qwen/Qwen1.5-14B-Chat-AWQ",
        2,
        {"max-model-len": 2048},
        "refused",
        "row-parallel-group-alignment",
        "use tp 1",
        False,
    ),
    (
        "14b-awq-tp4",
        "qwen/Qwen1.5-14B-Chat-AWQ",
        4,
        {"max-model-len": 2048},
        "refused",
        "row-parallel-group-alignment",
        "use tp 1",
        False,
    ),
    ("14b-gptq-tp1-2048", UNPADDED_14B_GPTQ, 1, {"max-model-len": 2048}, "ok", None, None, True),
    ("14b-awq-tp1-2048", "qwen/Qwen1.5-14B-Chat-AWQ", 1, {"max-model-len": 2048}, "ok", None, None, True),
    (
        "32b-gptq-tp2-default",
        "qwen/Qwen1.5-32B-Chat-GPTQ-Int4",
        2,
        {},
        "refused",
        "memory-fits",
        "--max-model-len",
        True,
    ),
    (
        "32b-gptq-tp2-7000",
        "qwen/Qwen1.5-32B-Chat-GPTQ-Int4",
        2,
        {"max-model-len": 7000},
        "ok",
        None,
        None,
        True,
    ),
    (
        "32b-gptq-tp2-eager",
        "qwen/Qwen1.5-32B-Chat-GPTQ-Int4",
        2,
        {"max-model-len": 12000, "enforce-eager": True},
        "ok",
        None,
        None,
        True,
    ),
    ("32b-gptq-tp4", "qwen/Qwen1.5-32B-Chat-GPTQ-Int4", 4, {}, "ok", None, None, True),
    (
        "bf16-on-t4",
        "qwen/Qwen1.5-7B-Chat",
        2,
        {"dtype": "bfloat16", "max-model-len": 14000},
        "refused",
        "dtype-bfloat16-capability",
        "--dtype half",
        False,
    ),
]


@pytest.mark.parametrize(
    ("model", "tp", "extra", "verdict", "rule", "fix", "planner"),
    [row[1:] for row in SEED],
    ids=[row[0] for row in SEED],
)
def test_old_recipe_outcomes_on_t4(model, tp, extra, verdict, rule, fix, planner):
    plan = check(load_facts(model), ["T4"] * tp, {**RECIPE, "tensor-parallel-size": tp, **extra}, "0.32.0")
    if planner:
        assert plan["kv_cache_gib"] is not None, "PLANNER: this row's verdict is a memory verdict"
    assert plan["verdict"] == verdict, plan["errors"]
    if rule:
        hits = [e for e in plan["errors"] if e["rule"] == rule]
        assert hits and any(fix in h["fix"] for h in hits)


def test_the_padded_14b_gptq_release_splits_over_two_t4s():
    """Qwen re-published 14B GPTQ with intermediate_size 14336 (QwenLM/Qwen3#258): tp 2 aligns."""
    plan = check(
        load_facts("qwen/Qwen1.5-14B-Chat-GPTQ-Int4"),
        ["T4", "T4"],
        {**RECIPE, "tensor-parallel-size": 2, "max-model-len": 2048},
    )
    assert not [e for e in plan["errors"] if e["rule"] == "row-parallel-group-alignment"]


def test_auto_dtype_on_a_bf16_model_on_t4_becomes_half_with_a_warning():
    plan = check(load_facts("qwen/Qwen1.5-0.5B-Chat"), ["T4"], {"max-model-len": 4096})
    assert plan["verdict"] == "ok" and plan["dtype"] == "float16"
    assert plan["translated_flags"]["dtype"] == "half" and "--dtype" in plan["argv"]
    assert [w["rule"] for w in plan["warnings"]] == ["dtype-auto-to-half"]


def test_plan_has_the_documented_keys():
    plan = check(load_facts("qwen/Qwen1.5-7B-Chat-AWQ"), ["T4", "T4"], {"tensor-parallel-size": 2})
    for key in (
        "verdict",
        "model",
        "gpus",
        "gpu_name",
        "tp",
        "dtype",
        "quantization",
        "weights_gib",
        "kv_cache_gib",
        "kv_tokens",
        "max_model_len_fit",
        "errors",
        "warnings",
        "translated_flags",
        "argv",
    ):
        assert key in plan


def test_check_host_reports_every_problem_at_once():
    host = {
        "vllm_gpus": ["T4", "T4"],
        "vllm_models": [
            {
                "name": "a",
                "model": "qwen/Qwen1.5-14B-Chat-AWQ",
                "port": 9000,
                "gpus": [0, 1],
                "flags": {"tensor-parallel-size": 2, "max-model-len": 2048, "gpu-memory-utilization": 0.6},
            },
            {
                "name": "b",
                "model": "qwen/Qwen1.5-7B-Chat",
                "port": 9000,
                "gpus": [1],
                "flags": {"dtype": "bfloat16", "gpu-memory-utilization": 0.6},
            },
        ],
    }
    result = check_host(host)
    rules = {e["rule"] for m in result["models"] for e in m["errors"]} | {e["rule"] for e in result["errors"]}
    assert result["verdict"] == "refused"
    assert {
        "row-parallel-group-alignment",
        "dtype-bfloat16-capability",
        "gpu-shared-utilization",
        "ports-unique",
    } <= rules


def _production_models():
    inv = yaml.safe_load((ROOT / "inventories/production/hosts.yml").read_text())
    group = yaml.safe_load((ROOT / "inventories/production/group_vars/t4-nodes.yml").read_text())
    hosts = inv["all"]["children"]["t4-nodes"]["hosts"]
    return group, hosts


def test_production_inventory_is_refused_only_until_its_branches_are_pinned():
    # The example names master, a branch: refused (rule revision-pinned) with the commit to write,
    # and for nothing else. Pinned (here master resolved to one commit, as the play's resolution
    # step returns it; the shipped configs stand in for that commit's), every host passes.
    group, hosts = _production_models()
    commit = "3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43"

    def shipped(item):
        assert item["revision"] == commit, "preflight reads the config at the resolved commit"
        return load_facts(item["model"])

    for name, hv in hosts.items():
        refused = check_host({**group, **hv})
        models = [m["name"] for m in hv["vllm_models"]]
        assert refused["verdict"] == "refused"
        assert [e["rule"] for e in refused["errors"]] == ["revision-pinned"] * len(models), (name, refused["errors"])
        pairs = zip(refused["errors"], models, strict=True)
        assert all(e["message"].startswith(f"{m}: revision master of ") for e, m in pairs)
        resolved = [
            {"model": m["model"], "revision": m["revision"], "kind": "branch", "commit": commit}
            for m in hv["vllm_models"]
        ]
        unpinned = check_host({**group, **hv, "vllm_revisions": resolved}, facts_for=shipped)
        assert [e["rule"] for e in unpinned["errors"]] == ["revision-pinned"] * len(models)
        assert all(f"pin the commit: revision: {commit} (what master names now" in e["fix"] for e in unpinned["errors"])
        pinned = [dict(m, revision=commit) for m in hv["vllm_models"]]
        result = check_host({**group, **hv, "vllm_models": pinned}, facts_for=shipped)
        assert result["verdict"] == "ok", (name, result)


def test_vllm_fleet_check_of_every_production_model_takes_under_a_second(capsys):
    group, hosts = _production_models()
    runs = []
    for hv in hosts.values():
        for m in hv["vllm_models"]:
            argv = ["check", m["model"], "--gpu", group["vllm_gpus"][0], "--no-fetch"]
            for k, v in m["flags"].items():
                argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
            runs.append(argv)
    start = time.perf_counter()
    codes = [cli_main(argv) for argv in runs]
    elapsed = time.perf_counter() - start
    capsys.readouterr()
    assert codes == [0] * len(runs)
    assert elapsed < 1.0, f"{len(runs)} checks took {elapsed:.2f} s"


def test_cli_exits_non_zero_with_the_fix_printed(capsys):
    code = cli_main(
        [
            "check",
            "qwen/Qwen1.5-14B-Chat-AWQ",
            "--gpu",
            "Tesla T4",
            "-tp",
            "2",
            "--max-model-len",
            "2k",
            "--no-fetch",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED" in out and "use tp 1, or a padded checkpoint/revision" in out
