"""One pass case and one fail case per row of rules.RULES (each row's check, through evaluate)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rules
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.gpus import resolve
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.inventory import normalize_model
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import (
    ModelFacts,
    QuantFacts,
    facts_from_config,
)

from tests.unit.shapes import qwen2_config, qwen3_moe_config

GPTQ = QuantFacts("gptq", 4, 128, desc_act=False, sym=True)
AWQ = QuantFacts("awq", 4, 128, zero_point=True)


def qwen(hidden=4096, inter=11008, layers=32, heads=32, kv=32, quant=None, dtype="float16") -> ModelFacts:
    cfg = qwen2_config(hidden, inter, layers, heads, kv, torch_dtype=dtype)
    return replace(facts_from_config(cfg), quant=quant)


class Plan:  # a MemoryPlan stand-in: the memory-fits row reads only fits and problems
    def __init__(self, fits, problems=()):
        self.fits, self.problems = fits, list(problems)


def moe(quant=None, **shape) -> ModelFacts:
    """Qwen3-30B-A3B's shapes (or others), with the given checkpoint quantization."""
    return replace(facts_from_config(qwen3_moe_config(**shape)), quant=quant)


def arch(name: str) -> ModelFacts:
    return replace(qwen(), architecture=name)


FP8_BLOCK = QuantFacts("fp8", 8, -1, weight_block_size=(128, 128))


def case(
    facts=None,
    gpus=("T4",),
    flags=None,
    tp=1,
    pp=1,
    dtype="auto",
    version="0.32.0",
    memory=None,
    notes=(),
    allow_unmodeled=False,
):
    return rules.Case(
        facts=facts or qwen(),
        gpus=[resolve(g) for g in gpus],
        flags=flags or {},
        vllm_version=version,
        tp=tp,
        pp=pp,
        dtype_requested=dtype,
        memory=memory,
        notes=list(notes),
        allow_unmodeled=allow_unmodeled,
    )


def host(models, gpus=("T4", "T4")):
    return rules.HostCase(gpus=[resolve(g) for g in gpus], models=models, vllm_version="0.32.0")


M = {"name": "a", "port": 9000, "gpus": [0], "flags": {"gpu-memory-utilization": 0.5}}
REFUSE = {
    "flag": "speculative-model",
    "action": "refuse",
    "message": "--speculative-model is gone",
    "fix": "--speculative-config ...",
}
DROP = {"flag": "max-paddings", "action": "drop", "message": "--max-paddings is gone", "fix": "remove it"}

# rule id -> (passing case, failing case, words the message or fix must contain)
C1, C2 = "3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43", "9b1d07e6c2aa5f3e8d1c0b4a7e6f5d4c3b2a1908"

# One model over two hosts, tp 2 on each (docs/multinode.md).
BIG = {
    "name": "big",
    "model": "o/m",
    "revision": C1,
    "port": 9000,
    "gpus": [0, 1],
    "cluster": {"hosts": ["n1", "n2"]},
    "flags": {"tensor-parallel-size": 2, "pipeline-parallel-size": 2},
}

RAY_BIG = dict(BIG, cluster={"hosts": ["n1", "n2"], "executor": "ray"})


def member(item=None, **over):
    item = BIG if item is None else item
    view = {"in_inventory": True, "in_play": True, "vllm_version": "0.32.0", "vllm_device": "cuda", "model": item}
    return {**view, "gpus": None, "address": "10.0.0.1", **over}


def cluster(host="n1", item=None, **members):
    item = BIG if item is None else item
    views = {"n1": member(item), "n2": member(item)}
    views.update(members)
    return rules.ClusterCase(host=host, model=normalize_model(item), members=views, vllm_version="0.32.0")


CASES = {
    "dtype-bfloat16-capability": (
        case(gpus=["A10"], dtype="bfloat16"),
        case(dtype="bfloat16"),
        "--dtype half",
    ),
    "dtype-auto-to-half": (
        case(facts=qwen(dtype="float16")),
        case(facts=qwen(dtype="bfloat16")),
        "dtype: half",
    ),
    "quant-capability": (
        case(facts=qwen(quant=GPTQ)),
        case(facts=qwen(quant=GPTQ), gpus=["V100-32GB"]),
        "7.5",
    ),
    "quant-type": (
        case(facts=qwen(quant=GPTQ)),
        case(facts=qwen(quant=QuantFacts("gptq", 3, 128, sym=True))),
        "4 or 8 bits",
    ),
    "gptq-group-size": (
        case(facts=qwen(quant=GPTQ)),
        case(facts=qwen(quant=QuantFacts("gptq", 4, 256))),
        "group_size 128",
    ),
    "gptq-desc-act": (
        case(facts=qwen(quant=GPTQ)),
        case(facts=qwen(quant=QuantFacts("gptq", 4, 128, desc_act=True, sym=True))),
        "desc_act=false",
    ),
    "attention-heads-tp": (
        case(facts=qwen(heads=20, kv=20, hidden=2560, inter=6912), tp=4),
        case(facts=qwen(heads=20, kv=20, hidden=2560, inter=6912), tp=8),
        "use tp 1, 2, 4",
    ),
    "kv-heads-tp": (
        case(facts=qwen(heads=40, kv=8, hidden=5120), tp=8),
        case(facts=qwen(heads=36, kv=12, hidden=4608, inter=12288), tp=9),
        "use tp",
    ),
    "mlp-divisible-by-tp": (case(tp=2), case(facts=qwen(inter=11001), tp=2), "use tp 1"),
    "row-parallel-group-alignment": (
        case(facts=qwen(5120, 13696, 40, 40, 40, GPTQ), tp=1),
        case(facts=qwen(5120, 13696, 40, 40, 40, GPTQ), tp=2),
        "padded checkpoint",
    ),
    "column-parallel-pack-alignment": (
        case(facts=qwen(quant=AWQ), tp=2),
        case(facts=qwen(hidden=4096, inter=11012, quant=QuantFacts("awq", 4, 4)), tp=2),
        "pack factor 8",
    ),
    "architecture-supported": (
        case(facts=arch("Qwen3MoeForCausalLM")),
        case(facts=arch("MadeUpForCausalLM")),
        "are not supported for now",
    ),
    "architecture-modeled": (
        case(facts=arch("LlamaForCausalLM"), allow_unmodeled=True),
        case(facts=arch("LlamaForCausalLM")),
        "allow_unmodeled: true",
    ),
    "architecture-unmodeled-allowed": (
        case(facts=arch("Qwen2ForCausalLM"), allow_unmodeled=True),
        case(facts=arch("LlamaForCausalLM"), allow_unmodeled=True),
        "memory is UNCHECKED",
    ),
    "flag-not-modeled": (
        case(flags={"enforce-eager": True, "served-model-name": ["a"]}),
        case(flags={"speculative-config": {"method": "ngram"}}),
        "--speculative-config is not modeled",
    ),
    "kv-cache-dtype-supported": (
        case(gpus=["L4"], flags={"kv-cache-dtype": "fp8"}),
        case(gpus=["T4"], flags={"kv-cache-dtype": "fp8"}),
        "native FP8 (fp8e4nv) requires SM89+",
    ),
    "kv-cache-dtype-backend-unmodeled": (
        case(gpus=["T4"], flags={"kv-cache-dtype": "float16"}),
        case(gpus=["A100-80GB"], flags={"kv-cache-dtype": "fp8"}),
        "FlashInfer",
    ),
    "gpu-capability-floor": (case(gpus=["T4"]), case(gpus=["V100-16GB"]), "compute capability 7.5 or higher"),
    "quantization-matches-checkpoint": (
        case(facts=qwen(quant=GPTQ), flags={"quantization": "gptq_marlin"}),
        case(facts=qwen(), flags={"quantization": "awq"}),
        "Cannot find the config file for awq",
    ),
    "quantization-modeled": (
        case(facts=qwen(), flags={"quantization": "fp8_per_tensor"}),
        case(facts=qwen(), flags={"quantization": "mxfp4"}),
        "--allow-unmodeled",
    ),
    "online-quantization-capability": (
        case(facts=qwen(), flags={"quantization": "fp8"}),
        case(facts=qwen(), gpus=["V100-16GB"], flags={"quantization": "fp8"}),
        "7.5",
    ),
    # Qwen3-30B-A3B: 128 experts of width 768 (vllm-project/vllm#17604 for AWQ at tp 4).
    "moe-experts-tp": (case(facts=moe(experts=8), tp=8), case(facts=moe(experts=4), tp=8), "use tp 4 or less"),
    "moe-wna16-group": (
        case(facts=moe(AWQ), tp=4),
        case(facts=moe(AWQ, moe_inter=1400), tp=2),
        "--enable-expert-parallel",
    ),
    "moe-wna16-fallback": (
        case(facts=moe(AWQ), tp=2),
        case(facts=moe(AWQ), tp=4),
        "MoE WNA16 Triton kernels",
    ),
    "moe-wna16-block-k": (
        case(facts=moe(AWQ), tp=2, version="0.26.0"),
        case(facts=moe(AWQ), tp=4, version="0.26.0"),
        "size_k must divisible by BLOCK_SIZE_K",
    ),
    "fp8-moe-block-alignment": (
        case(facts=moe(FP8_BLOCK), gpus=["L4"], tp=4),
        case(facts=moe(FP8_BLOCK), tp=4, version="0.26.0"),
        "--enable-expert-parallel",
    ),
    "fp8-block-alignment": (
        case(facts=qwen(4096, 12288, quant=FP8_BLOCK), tp=4),
        case(facts=qwen(2560, 9728, heads=32, kv=8, quant=FP8_BLOCK), tp=8),
        "not a multiple of the weight block 128",
    ),
    "unquantized-modules-unmodeled": (
        case(facts=moe(replace(AWQ, modules_not_converted=("model.layers.0.mlp.gate", "lm_head")))),
        case(facts=moe(replace(AWQ, modules_not_converted=("model.layers.0.self_attn",)))),
        "safetensors headers give the real bytes",
    ),
    "cpu-pp-eager": (
        replace(
            case(gpus=["T4", "T4"], pp=2, flags={"compilation-config": {"mode": 2, "backend": "eager"}}), device="cpu"
        ),
        replace(case(gpus=["T4", "T4"], pp=2, flags={"enforce-eager": True}), device="cpu"),
        '"mode": 2, "backend": "eager"',
    ),
    "pp-layers": (
        case(facts=qwen(layers=2), gpus=["T4", "T4"], pp=2),
        case(facts=qwen(layers=2), gpus=["T4", "T4", "T4"], pp=3),
        "pipeline-parallel-size 2 or less",
    ),
    "cluster-host-named": (cluster(), cluster(host="n3"), "add n3 to cluster.hosts of big"),
    "cluster-members-known": (
        cluster(),
        cluster(n2={"in_inventory": False, "in_play": False}),
        "add n2 to the inventory",
    ),
    "cluster-in-play": (cluster(), cluster(n2=member(in_play=False)), "run with -l n1,n2"),
    "cluster-same-model": (
        cluster(),
        cluster(n2=member(dict(BIG, revision=C2))),
        "differs in revision for big",
    ),
    "cluster-same-runtime": (
        cluster(),
        cluster(n2=member(vllm_version="0.26.0")),
        "n2 would run big on vLLM 0.26.0 on cuda",
    ),
    "cluster-address-ip": (
        cluster(),
        cluster(n2=member(address="t4-node-08.example")),
        "set vllm_cluster_address for n2 to its IPv4 address",
    ),
    "cluster-ray-platform": (
        cluster(item=RAY_BIG),
        replace(cluster(item=RAY_BIG), vllm_device="cpu"),
        "use executor: mp",
    ),
    "cluster-ray-installed": (
        cluster(
            item=RAY_BIG,
            n1=member(RAY_BIG, runtime_packages=["ray==2.58.0"]),
            n2=member(RAY_BIG, runtime_packages=["ray==2.58.0"]),
        ),
        cluster(
            item=RAY_BIG, n1=member(RAY_BIG, runtime_packages=["ray==2.58.0"]), n2=member(RAY_BIG, runtime_packages=[])
        ),
        "n2's vLLM environment does not install it",
    ),
    "ray-cluster-per-host": (
        host([{"name": "a", "cluster": {"executor": "ray"}}, {"name": "b", "cluster": {"hosts": ["n1", "n2"]}}]),
        host([{"name": "a", "cluster": {"executor": "ray"}}, {"name": "b", "cluster": {"executor": "ray"}}]),
        "serve one of them with executor: mp",
    ),
    "cluster-gpus-split": (
        cluster(),
        cluster(item=dict(BIG, gpus=[0])),
        "give each of the 2 hosts the same number of GPUs",
    ),
    "gpus-enough": (case(gpus=["T4", "T4"], tp=2), case(gpus=["T4"], tp=2), "2 GPUs"),
    "gpus-all-used": (case(gpus=["T4"], tp=1), case(gpus=["T4", "T4"], tp=1), "tensor-parallel-size"),
    "max-model-len-supported": (
        case(flags={"max-model-len": 32768}),
        case(flags={"max-model-len": 65536}),
        "--max-model-len 32768",
    ),
    "memory-fits": (
        case(memory=Plan(True)),
        case(
            memory=Plan(
                False,
                [{"message": "estimated maximum model length is 15216", "fix": "use --max-model-len 14336"}],
            )
        ),
        "--max-model-len 14336",
    ),
    "old-flag-refused": (case(notes=[DROP]), case(notes=[REFUSE]), "--speculative-config"),
    "old-flag-translated": (case(), case(notes=[DROP]), "remove it"),
    "flag-unknown": (case(flags={"enforce-eager": True}), case(flags={"enforce-eagre": True}), "spelling"),
    "flag-owned-by-role": (case(flags={"dtype": "half"}), case(flags={"port": 9000}), "port: key"),
    "gpu-index-exists": (host([M]), host([{**M, "gpus": [2]}]), "below 2"),
    "gpu-shared-utilization": (
        host([M, {**M, "name": "b", "port": 9001}]),
        host([M, {**M, "name": "b", "port": 9001, "flags": {"gpu-memory-utilization": 0.6}}]),
        "1.0 or less",
    ),
    "ports-unique": (
        host([M, {**M, "name": "b", "gpus": [1], "port": 9001}]),
        host([M, {**M, "name": "b", "gpus": [1]}]),
        "own port",
    ),
    "names-unique": (
        host([M, {**M, "gpus": [1], "port": 9001, "name": "b"}]),
        host([M, {**M, "gpus": [1], "port": 9001}]),
        "rename",
    ),
    "unit-values-printable": (
        replace(host([M]), raw_models=[{**M, "revision": "v1.0", "env": {"A": "b c"}}]),
        replace(host([M]), raw_models=[{**M, "revision": "master\nExecStartPre=/bin/sh -c id"}]),
        "remove a newline from vllm_models[a].revision",
    ),
    "api-key-required": (
        replace(host([M]), service={"vllm_service_bind_address": "0.0.0.0", "api_key_set": True}),
        replace(host([M]), service={"vllm_service_bind_address": "0.0.0.0", "api_key_set": False}),
        "vllm_service_api_key: generate",
    ),
    "revision-pinned": (
        replace(host([M]), revisions={"a": {"model": "o/m", "revision": C1, "kind": "commit", "commit": C1}}),
        replace(host([M]), revisions={"a": {"model": "o/m", "revision": "master", "kind": "branch", "commit": C1}}),
        f"pin the commit: revision: {C1} (what master names now",
    ),
    "revision-exists": (
        replace(host([M]), revisions={"a": {"model": "o/m", "revision": "v1", "kind": "tag", "commit": C1}}),
        replace(
            host([M]),
            revisions={
                "a": {
                    "model": "o/m",
                    "revision": "v9",
                    "kind": "missing",
                    "error": "the hub has no branch or tag v9 of o/m",
                }
            },
        ),
        "the hub has no branch or tag v9",
    ),
    "revision-unresolved-allowed": (
        replace(
            host([M]),
            revisions={"a": {"model": "o/m", "revision": "master", "kind": "branch", "commit": C1}},
            allow_floating_revisions=True,
        ),
        replace(
            host([M]),
            revisions={"a": {"model": "o/m", "revision": "master", "kind": "unknown", "error": "cannot reach the hub"}},
            allow_floating_revisions=True,
        ),
        "o/m@master was not resolved to a commit (cannot reach the hub)",
    ),
    "revision-moved": (
        replace(
            host([M]), revisions={"a": {"model": "o/m", "revision": "v1", "kind": "tag", "commit": C1, "previous": C1}}
        ),
        replace(
            host([M]),
            revisions={"a": {"model": "o/m", "revision": "master", "kind": "branch", "commit": C2, "previous": C1}},
            allow_floating_revisions=True,
        ),
        f"o/m master: {C1[:12]} -> {C2[:12]}",
    ),
}


def test_every_rule_row_has_a_pass_and_a_fail_case():
    assert set(CASES) == {r.id for r in rules.RULES}


def _hits(rule_id, subject):
    rule = rules.RULES_BY_ID[rule_id]
    errors, warnings = rules.evaluate(subject, subject.vllm_version, rule.scope)
    return [e for e in errors + warnings if e["rule"] == rule_id]


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_passes_its_good_case(rule_id):
    assert _hits(rule_id, CASES[rule_id][0]) == []


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_refuses_its_bad_case_naming_the_fix(rule_id):
    hits = _hits(rule_id, CASES[rule_id][1])
    assert hits, f"{rule_id} did not fire"
    text = " ".join(h["message"] + " " + h["fix"] for h in hits)
    assert CASES[rule_id][2] in text


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.id)
def test_every_row_says_what_why_and_where_in_vllm(rule):
    assert rule.checks and rule.why and rule.message and rule.fix
    assert rule.scope in ("model", "host", "cluster") and rule.severity in ("error", "warning")
    assert all(src.startswith("vllm/") for src in rule.vllm_source)


def test_desc_act_rule_applies_from_vllm_0_32_only():
    bad = CASES["gptq-desc-act"][1]
    assert _hits("gptq-desc-act", replace(bad, vllm_version="0.26.0")) == []
    assert _hits("gptq-desc-act", bad)


def test_14b_row_parallel_message_names_the_numbers():
    (hit,) = _hits("row-parallel-group-alignment", CASES["row-parallel-group-alignment"][1])
    assert "13696" in hit["message"] and "6848" in hit["message"] and "128" in hit["message"]
    assert hit["fix"].startswith("use tp 1, or a padded checkpoint/revision")
    assert "fp16 model" in hit["fix"]


def test_shape_rule_ids_are_rows_of_the_table():
    """The planner asks these rows (rules.shape_problems) before it suggests a tp."""
    assert set(rules.TP_SPLIT_RULES) <= set(rules.TP_SHAPE_RULES) <= set(rules.RULES_BY_ID)


def test_shape_problems_are_the_shape_rows_errors():
    facts = qwen(5120, 13696, 40, 40, 40, GPTQ)  # the 14B GPTQ release: 6848 inputs per GPU at tp 2
    assert rules.shape_problems(facts, 1) == []
    assert [e["rule"] for e in rules.shape_problems(facts, 2)] == ["row-parallel-group-alignment"]
    assert {e["rule"] for e in rules.shape_problems(qwen(heads=20, kv=20), 8)} >= {"attention-heads-tp"}


def test_fp8_moe_blocks_refined_by_032_are_refused_where_marlin_runs_them():
    """0.32 refines 128x128 blocks to 64x64 for a 192-wide slice; only Triton (cc >= 8.9) takes them."""
    t4 = case(facts=moe(FP8_BLOCK), gpus=["T4"], tp=4)
    (hit,) = _hits("fp8-moe-block-alignment", t4)
    assert "refines the blocks to 64x64" in hit["message"] and "use tp 1, 2" in hit["fix"]
    assert _hits("fp8-moe-block-alignment", replace(t4, tp=2)) == []
    assert _hits("fp8-moe-block-alignment", case(facts=moe(FP8_BLOCK), gpus=["L4"], tp=8)) == []  # 96: 32x32


def test_moe_tp_fixes_name_the_tps_that_work_and_expert_parallel():
    (hit,) = _hits("moe-wna16-block-k", CASES["moe-wna16-block-k"][1])
    assert hit["fix"] == "use tp 1, 2, or --enable-expert-parallel (whole experts per GPU, none split)"
    ep = replace(CASES["moe-wna16-block-k"][1], flags={"enable-expert-parallel": True})
    assert _hits("moe-wna16-block-k", ep) == []  # whole experts: the 768 width is not split


def test_an_ipv6_cluster_address_is_refused_not_deployed_untested():
    # Clusters were measured on IPv4 only; the service role looks the interface up with `ip -4`.
    refused = _hits("cluster-address-ip", cluster(n2=member(address="fd00:78::2")))
    assert refused and "fd00:78::2, not an IPv4 address" in refused[0]["message"], refused
