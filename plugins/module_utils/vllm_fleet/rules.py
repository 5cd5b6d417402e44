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

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from .gpus import cc_int, has_bf16
from .model_facts import ModelFacts, kv_heads_per_rank
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
TP_SHAPE_RULES = (*TP_SPLIT_RULES, "row-parallel-group-alignment", "column-parallel-pack-alignment")

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


@dataclass
class HostCase:
    """What a host-scope rule sees: host GPUs and every model item (name, port, gpus, flags)."""

    gpus: list[dict]
    models: list[dict]
    vllm_version: str


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


# --- helpers --------------------------------------------------------------------------------


def _gpu0(case: Case) -> dict | None:
    return case.gpus[0] if case.gpus else None


def _quant(case: Case):
    return case.facts.quant


def _ok_tps(case: Case, bad: Callable[[int], bool]) -> str:
    ok = [t for t in TP_CANDIDATES if not bad(t)]
    return ", ".join(str(t) for t in ok) or "none of 1, 2, 4, 8"


def _row_parallel_inputs(f: ModelFacts) -> list[tuple[str, int]]:
    # Row-parallel layers split their input dimension across TP ranks.
    return [("down_proj", f.intermediate_size), ("o_proj", f.num_attention_heads * f.head_dim)]


def _column_parallel_outputs(f: ModelFacts, tp: int) -> list[tuple[str, int]]:
    # Column-parallel layers split their output dimension; KV heads replicate when tp > kv heads.
    kv_per_rank = kv_heads_per_rank(f, tp) * f.head_dim
    return [
        ("gate_up_proj", f.intermediate_size // tp),
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
    inter = case.facts.intermediate_size
    if inter % case.tp:
        return [{"inter": inter, "tp": case.tp, "ok": _ok_tps(case, lambda t: inter % t != 0)}]
    return []


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
        total = sum(u for _, u in users)
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


def check_names(host: HostCase) -> list[dict]:
    counts = Counter(m["name"] for m in host.models)
    return [{"name": n} for n, c in counts.items() if c > 1]


Q = "vllm/model_executor/layers/quantization/"
K = "vllm/model_executor/kernels/linear/mixed_precision/"

RULES: tuple[Rule, ...] = (
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
        "tp {tp} does not divide intermediate_size {inter}",
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


def shape_problems(facts: ModelFacts, tp: int, vllm_version: str = DEFAULT_VLLM_VERSION) -> list[dict]:
    """The errors of the TP_SHAPE_RULES rows for ``facts`` split over ``tp`` GPUs (heads, KV heads,
    intermediate size, quantization groups and packing): [] when tp can split the model."""
    case = Case(facts=facts, gpus=[], flags={}, vllm_version=vllm_version, tp=tp)
    errors, _ = evaluate(case, vllm_version, "model", only=TP_SHAPE_RULES)
    return errors
