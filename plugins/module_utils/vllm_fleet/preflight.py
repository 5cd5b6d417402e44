"""Preflight: can this model run on these GPUs with these flags? Refuse before any host change.

``check`` judges one model and returns the plan a person reads (documented keys below);
``check_host`` judges every model of a host at once (so an operator sees all problems in one
run) plus the host-wide rules (GPU sharing, ports). The rules are rows of rules.RULES; the
memory numbers come from planner.plan_memory.

Plan keys: verdict ("ok"/"refused"), model, gpus, gpu_name, tp, pp, dtype (effective),
quantization, weights_gib (per GPU), kv_cache_gib, kv_tokens, max_model_len,
max_model_len_fit, errors / warnings ([{rule, message, fix}]), translated_flags, argv,
vllm_version, weights_source, moe (None for a dense model).
"""

from __future__ import annotations

from . import cluster, layout, old_flags, quantization, revisions, rules
from .calibration import note as calibration_note
from .calibration import terms_for as calibration_terms_for
from .gpus import UnknownGPUError, has_bf16, resolve, usable_bytes
from .inventory import InventoryError, normalize_model
from .model_facts import DTYPE_BYTES, ModelConfigError, ModelFacts, weight_bytes
from .planner import GIB, local_experts, plan_cpu_kv_cache, plan_memory
from .serve_args import ServeArgsError, normalize, to_argv
from .versions import DEFAULT_VLLM_VERSION

# vLLM's --dtype spellings to one name each (bytes per element: model_facts.DTYPE_BYTES).
DTYPE_NAMES = {
    "half": "float16",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float": "float32",
    "float32": "float32",
    "auto": "auto",
}


def effective_dtype(requested: str, torch_dtype: str, gpu: dict | None) -> str:
    """The dtype vLLM will run (vllm/config/model.py _resolve_auto_dtype, platforms/cuda.py)."""
    requested = DTYPE_NAMES.get(str(requested), str(requested))
    if requested != "auto":
        return requested
    bf16 = gpu is None or has_bf16(gpu)
    stored = DTYPE_NAMES.get(torch_dtype, torch_dtype)
    if stored == "float32":  # vLLM downcasts fp32 checkpoints to the platform's preferred dtype
        return "bfloat16" if bf16 else "float16"
    if stored == "bfloat16" and not bf16:
        return "float16"
    return stored


def _kv_bytes(flags: dict, dtype: str) -> int:
    kv = str(flags.get("kv-cache-dtype") or "auto")
    if kv.startswith("fp8") or kv.startswith("int8"):
        return 1
    return DTYPE_BYTES.get(DTYPE_NAMES.get(kv, dtype), DTYPE_BYTES.get(dtype, 2))


def _memory(
    facts: ModelFacts,
    gpus: list[dict],
    flags: dict,
    tp: int,
    pp: int,
    dtype: str,
    vllm_version: str,
    calibration: dict | None = None,
):
    if not gpus or not rules.architecture_modeled(facts):
        return None
    gpu = min(gpus, key=usable_bytes)  # the smallest GPU bounds a TP group
    asked = flags.get("max-model-len")
    # A length above the model's own maximum is the max-model-len-supported rule's refusal;
    # plan memory for the longest the model supports instead of reporting it twice.
    if isinstance(asked, int) and (asked > facts.max_supported_len or asked <= 0):
        asked = None
    return plan_memory(
        facts,
        gpu,
        tp=tp,
        pp=pp,
        dtype_bytes=DTYPE_BYTES.get(dtype, 2),
        kv_cache_dtype_bytes=_kv_bytes(flags, dtype),
        gpu_memory_utilization=float(flags.get("gpu-memory-utilization") or rules.DEFAULT_GPU_MEMORY_UTILIZATION),
        max_model_len=asked,
        max_num_seqs=flags.get("max-num-seqs"),
        max_num_batched_tokens=flags.get("max-num-batched-tokens"),
        enforce_eager=bool(flags.get("enforce-eager")),
        expert_parallel=bool(flags.get("enable-expert-parallel")),
        cpu_offload_gb=float(flags.get("cpu-offload-gb") or 0),
        max_loras=int(flags.get("max-loras") or 1) if flags.get("enable-lora") else 0,
        max_lora_rank=int(flags.get("max-lora-rank") or 16),
        vllm_version=vllm_version,
        calibration=calibration_terms_for(calibration, gpu.get("name"), vllm_version),
    )


def _weights_gib(memory, facts: ModelFacts, wbytes: int, tp: int, pp: int) -> float | None:
    """Per GPU: the planner's figure; without a plan (no GPU given) the checkpoint split evenly;
    None for an architecture the planner does not model (its memory is unchecked, not guessed)."""
    if memory is not None:
        return round(memory.weights_gib_per_gpu, 2)
    if not rules.architecture_modeled(facts):
        return None
    return round(wbytes / GIB / (tp * pp), 2)


def _refused(model: str, rule: str, message: str, fix: str, vllm_version: str) -> dict:
    return _refused_by(model, [{"rule": rule, "message": message, "fix": fix}], vllm_version)


def _refused_by(model: str, errors: list[dict], vllm_version: str) -> dict:
    """A plan that refuses ``model`` for ``errors`` before anything about it was planned."""
    return {
        "verdict": "refused",
        "model": model,
        "gpus": [],
        "gpu_name": None,
        "tp": None,
        "pp": None,
        "dtype": None,
        "quantization": None,
        "weights_gib": None,
        "kv_cache_gib": None,
        "kv_tokens": None,
        "max_model_len": None,
        "max_model_len_fit": None,
        "errors": errors,
        "warnings": [],
        "translated_flags": {},
        "argv": [],
        "vllm_version": vllm_version,
        "weights_source": None,
    }


def check(
    model_facts: ModelFacts,
    gpus: list,
    flags: dict | None,
    vllm_version: str = DEFAULT_VLLM_VERSION,
    *,
    name: str = "",
    gpu_indices: list | None = None,
    allow_unmodeled: bool = False,
    device: str = "cuda",
    calibration: dict | None = None,
    cpu_kv_cache_gib: float | None = None,
) -> dict:
    """The plan for one model on ``gpus`` (the GPUs given to it: catalog names or dicts).

    ``allow_unmodeled``: an architecture vLLM supports but the planner does not model is planned
    without memory figures (a warning says memory is unchecked) instead of refused.
    ``calibration``: a calibration file's content (calibration.py); the plan uses the terms it
    holds for these GPUs and this vLLM version, and says which (``calibration``).
    ``cpu_kv_cache_gib``: on a CPU host, the VLLM_CPU_KVCACHE_SPACE the unit gets: the plan then
    predicts the KV cache vLLM's CPU build reports (planner.plan_cpu_kv_cache)."""
    model = name or model_facts.name
    try:
        gpus = [resolve(g) for g in gpus]
        flags = normalize(flags or {})
    except (UnknownGPUError, ServeArgsError) as e:
        return _refused(model, "input", str(e), "fix the GPU or flag named above", vllm_version)
    translated, notes = old_flags.translate(flags, vllm_version)
    tp = int(translated.get("tensor-parallel-size") or 1)
    pp = int(translated.get("pipeline-parallel-size") or 1)
    requested = DTYPE_NAMES.get(str(translated.get("dtype") or "auto"), str(translated.get("dtype")))
    gpu0 = gpus[0] if gpus else None
    dtype = effective_dtype(requested, model_facts.torch_dtype, gpu0)
    if requested == "auto" and dtype != DTYPE_NAMES.get(model_facts.torch_dtype, model_facts.torch_dtype):
        translated["dtype"] = "half" if dtype == "float16" else dtype  # say in the unit what runs
    memory = fit_len = None
    case = rules.Case(
        facts=model_facts,
        gpus=gpus,
        flags=translated,
        vllm_version=vllm_version,
        tp=tp,
        pp=pp,
        dtype_requested=requested,
        notes=notes,
        name=model,
        allow_unmodeled=allow_unmodeled,
        device=device,
    )
    errors, warnings = rules.evaluate(case, vllm_version, "model")
    # The weights vLLM builds: --quantization fp8 on an unquantized checkpoint quantizes it at load.
    model_facts = quantization.loaded_facts(model_facts, translated.get("quantization"))
    shape_ok = not any(e["rule"] in rules.SPLIT_RULES for e in errors)
    if shape_ok:
        try:
            memory = _memory(model_facts, gpus, translated, tp, pp, dtype, vllm_version, calibration)
        except ValueError as e:
            errors.append(
                {
                    "rule": "memory-fits",
                    "message": f"the memory plan failed: {e}",
                    "fix": "check gpu-memory-utilization and the GPU's memory",
                }
            )
        case.memory = memory
        if memory is not None and translated.get("max-model-len"):
            # "The largest safe --max-model-len" is the model's, not capped by the one asked for.
            widest = _memory(
                model_facts, gpus, {**translated, "max-model-len": None}, tp, pp, dtype, vllm_version, calibration
            )
            fit_len = widest.max_model_len_suggested if widest else None
        else:
            fit_len = memory.max_model_len_suggested if memory else None
        mem_errors, _warnings = rules.evaluate(case, vllm_version, "model", only=("memory-fits",))
        errors += mem_errors
    cpu_kv = None
    if device == "cpu" and cpu_kv_cache_gib and shape_ok and rules.architecture_modeled(model_facts):
        cpu_kv = plan_cpu_kv_cache(
            model_facts,
            kv_cache_space_gib=float(cpu_kv_cache_gib),
            tp=tp,
            pp=pp,
            kv_cache_dtype_bytes=_kv_bytes(translated, dtype),
            max_model_len=translated.get("max-model-len"),
            block_size=translated.get("block-size"),
        )
    wbytes = weight_bytes(model_facts)
    return {
        "verdict": "refused" if errors else "ok",
        "model": model,
        "gpus": gpu_indices if gpu_indices is not None else [g.get("index", i) for i, g in enumerate(gpus)],
        "gpu_name": gpu0["name"] if gpu0 else None,
        "tp": tp,
        "pp": pp,
        "dtype": dtype,
        "quantization": model_facts.quant.method if model_facts.quant else None,
        "weights_gib": _weights_gib(memory, model_facts, wbytes, tp, pp),
        "kv_cache_gib": round(memory.kv_cache_gib, 2) if memory else (cpu_kv or {}).get("kv_cache_gib"),
        "kv_tokens": memory.kv_tokens if memory else (cpu_kv or {}).get("kv_tokens"),
        "max_model_len": translated.get("max-model-len") or model_facts.max_supported_len,
        "max_model_len_fit": fit_len if memory else None,
        "errors": errors,
        "warnings": warnings,
        "translated_flags": translated,
        "argv": to_argv(translated),
        "vllm_version": vllm_version,
        "weights_source": model_facts.weight_bytes_source,
        "moe": _moe_summary(model_facts, tp, bool(translated.get("enable-expert-parallel"))),
        # Per pipeline stage (pp > 1): its layers and its own budget; the one that limits the KV cache.
        "stages": memory.stages if memory and pp > 1 else [],
        # The budget of the GPU that limits the KV cache, term by term: what a start's record keeps
        # beside what vLLM reported, and what `vllm-fleet calibrate` fits (calibration.py).
        "terms": budget_terms(memory) if memory else None,
        "calibration": calibration_note(calibration, memory.gpu_name if memory else None, vllm_version, memory),
    }


def _moe_summary(facts: ModelFacts, tp: int, expert_parallel: bool) -> dict | None:
    """How a mixture-of-experts model's experts land on each GPU (None for a dense model)."""
    if not facts.is_moe:
        return None
    return {
        "experts": facts.num_experts,
        "active_per_token": facts.num_experts_per_tok,
        "sparse_layers": facts.sparse_layers,
        "expert_parallel": expert_parallel,
        # Whole experts on the busiest GPU with expert parallel; else a 1/tp slice of every expert.
        "experts_per_gpu": local_experts(facts, tp) if expert_parallel else facts.num_experts,
        "expert_width_per_gpu": facts.moe_intermediate_size if expert_parallel else facts.moe_intermediate_size // tp,
    }


def host_gpus(host_vars: dict, detected: list[dict] | None = None) -> list[dict]:
    """The host's GPUs: detected ones (gpu_facts) win over those declared in vllm_gpus."""
    if detected:
        return [resolve(g) for g in detected]
    return [dict(resolve(g), index=i) for i, g in enumerate(host_vars.get("vllm_gpus") or [])]


def service_inputs(host_vars: dict) -> dict:
    """What the vllm_service role will write beside the models and whether their endpoints are keyed,
    named as the operator sets them: ``host_vars["vllm_service"]`` when the caller resolved it (the
    module), else from the inventory's own variables with the role's defaults (layout.py)."""
    if "vllm_service" in host_vars:
        return dict(host_vars["vllm_service"] or {})
    key = host_vars.get("vllm_service_api_key", layout.API_KEY_SETTING)
    return {
        "vllm_service_bind_address": host_vars.get("vllm_service_bind_address") or layout.BIND_ADDRESS,
        "vllm_service_environment": dict(host_vars.get("vllm_service_environment") or {}),
        "api_key_set": bool(key),
        "allow_no_api_key": bool(host_vars.get("vllm_service_allow_no_api_key", False)),
        "cpu_kvcache_space_gib": host_vars.get("vllm_service_cpu_kvcache_space_gib", layout.CPU_KVCACHE_SPACE_GIB),
    }


def _cpu_kv_cache_gib(item: dict, service: dict):
    """The VLLM_CPU_KVCACHE_SPACE a model's unit gets, as the service role composes its environment:
    the role's setting, then vllm_service_environment, then the model's own env (the last wins)."""
    value = service.get("cpu_kvcache_space_gib")
    for env in (service.get("vllm_service_environment") or {}, item.get("env") or {}):
        value = env.get("VLLM_CPU_KVCACHE_SPACE", value)
    try:
        # Whole GiB, as vLLM reads it (vllm/envs.py: int(VLLM_CPU_KVCACHE_SPACE)).
        return int(str(value)) if value is not None else None
    except ValueError:
        return None  # not a whole number: vLLM will refuse it; the plan predicts nothing


def check_host(
    host_vars: dict, *, detected_gpus: list[dict] | None = None, facts_for=None, calibration: dict | None = None
) -> dict:
    """Every problem of one host at once: each model's plan, then the host-wide rules.

    ``facts_for(model_item) -> ModelFacts`` resolves a model's config (hub_configs.load_facts by
    default: a local dir, model_configs/, the cache, or the hub). ``calibration``: a calibration
    file's content, as check() takes it (each plan says what it used of it).
    """
    version = str(host_vars.get("vllm_version") or DEFAULT_VLLM_VERSION)
    device = host_vars.get("vllm_device") or "cuda"
    if facts_for is None:
        from .hub_configs import load_facts

        def facts_for(item):
            return load_facts(item["model"], item.get("revision"))

    errors: list[dict] = []
    try:
        gpus = host_gpus(host_vars, detected_gpus)
    except UnknownGPUError as e:
        gpus = []
        errors.append({"rule": "gpu-known", "message": str(e), "fix": "use a catalog name or a dict"})
    models = [m for m in host_vars.get("vllm_models") or [] if (m.get("state") or "present") == "present"]
    host = str(host_vars.get("inventory_hostname") or "")
    cluster_views = host_vars.get("vllm_cluster_members") or {}
    service = service_inputs(host_vars)
    # Each model's revision as the play resolved it: its config is read at that commit, so the
    # verdict is about the bytes the hosts download (rule revision-pinned; revisions.py).
    resolved = revisions.lookup(host_vars.get("vllm_revisions"))
    model_revisions = [revisions.of(resolved, str(m.get("model")), m.get("revision")) for m in models]
    plans = []
    unprintable = set()
    for item, revision in zip(models, model_revisions, strict=True):
        # A control character in a value bound for the unit refuses the model with the field named
        # (row unit-values-printable); planning it would only fail later on the same value.
        alone = rules.HostCase(gpus=[], models=[], vllm_version=version, raw_models=[item])
        value_errors, _warnings = rules.evaluate(alone, version, "host", only=("unit-values-printable",))
        if value_errors:
            unprintable.add(item.get("name"))
            plans.append(_refused_by(item.get("name", item.get("model", "?")), value_errors, version))
            plans[-1]["repo"] = item.get("model")
            continue
        given = [gpus[i] for i in item.get("gpus") or [] if isinstance(i, int) and 0 <= i < len(gpus)]
        indices = list(item.get("gpus") or [])
        cluster_model = _cluster_model(item)
        cluster_errors: list[dict] = []
        if cluster_model:
            members = cluster_views.get(cluster_model["name"]) or {}
            cluster_case = rules.ClusterCase(
                host=host, model=cluster_model, members=members, vllm_version=version, vllm_device=device
            )
            cluster_errors, _none = rules.evaluate(cluster_case, version, "cluster")
            given, indices = _cluster_gpus(cluster_model, host, gpus, members)
        if device == "cpu":
            given = []
        at_commit = dict(item, revision=revision["commit"]) if revision.get("commit") else item
        try:
            facts = facts_for(at_commit)
        except (ModelConfigError, OSError) as e:
            plans.append(
                _refused(
                    item.get("name", item.get("model", "?")),
                    "model-config-found",
                    str(e),
                    "add its config to model_configs/, or let the controller reach the hub",
                    version,
                )
            )
            continue
        plan = check(
            facts,
            given,
            item.get("flags") or {},
            version,
            name=item.get("name", ""),
            gpu_indices=indices,
            allow_unmodeled=bool(item.get("allow_unmodeled")),
            device=device,
            calibration=calibration,
            cpu_kv_cache_gib=_cpu_kv_cache_gib(item, service) if device == "cpu" else None,
        )
        if device == "cpu":  # no GPU rules on a CPU host: only shapes, flags and lengths count
            plan["errors"] = [e for e in plan["errors"] if e["rule"] not in ("gpus-enough",)]
        plan["errors"] = cluster_errors + plan["errors"]
        plan["verdict"] = "refused" if plan["errors"] else "ok"
        if cluster_model:
            hosts = cluster_model["cluster"]["hosts"]
            stages = _stage_hosts(cluster_model, cluster_views.get(cluster_model["name"]) or {})
            # node_rank: the host's place in the pipeline (with Ray, vLLM's order, not cluster.hosts').
            plan["cluster"] = {
                "hosts": hosts,
                "head": hosts[0],
                "node_rank": stages.index(host) if host in stages else None,
            }
        plan["port"] = item.get("port")
        plan["repo"] = item.get("model")
        plan["revision"], plan["commit"] = revision["revision"], revision.get("commit")
        plans.append(plan)
    host_case = rules.HostCase(
        gpus=gpus,
        vllm_version=version,
        models=[
            {
                "name": m.get("name", "?"),
                "port": m.get("port"),
                "gpus": m.get("gpus") or [],
                "flags": normalize(m.get("flags") or {}),
                "cluster": m.get("cluster") if isinstance(m.get("cluster"), dict) else None,
            }
            for m in models
            if m.get("name") not in unprintable
        ],
        # The models' own values were judged above, one by one.
        service=service,
        revisions={
            m.get("name", "?"): revision
            for m, revision in zip(models, model_revisions, strict=True)
            if m.get("name") not in unprintable
        },
        allow_floating_revisions=bool(host_vars.get("vllm_allow_floating_revisions", False)),
    )
    host_errors, host_warnings = rules.evaluate(host_case, version, "host")
    errors += host_errors
    refused = bool(errors) or any(p["verdict"] == "refused" for p in plans)
    return {
        "verdict": "refused" if refused else "ok",
        "vllm_version": version,
        "device": device,
        "gpus": gpus,
        "models": plans,
        "errors": errors,
        "warnings": host_warnings,
    }


def _cluster_model(item: dict) -> dict | None:
    """The item normalized when it names a cluster; None otherwise, or when it cannot be
    normalized (the model rules then say what is wrong with it)."""
    if not item.get("cluster"):
        return None
    try:
        model = normalize_model(item)
    except InventoryError:
        return None
    return model if model["cluster"] else None


def _stage_hosts(model: dict, members: dict) -> list[str]:
    """cluster.stage_hosts with the members' addresses from their views (the item has none yet)."""
    addresses = {m: v["address"] for m, v in members.items() if isinstance(v, dict) and v.get("address")}
    return cluster.stage_hosts(model, addresses)


def _cluster_gpus(model: dict, host: str, own_gpus: list[dict], members: dict) -> tuple[list[dict], list[str]]:
    """The GPUs a cluster gives its model, in vLLM's rank order (the stages' hosts in order:
    cluster.stage_hosts), and their names as host:index. A member whose GPUs the play has not
    found (not in the play: refused by cluster-in-play) is planned as if it had this host's."""
    given, names = [], []
    for member in _stage_hosts(model, members):
        found = own_gpus if member == host else (members.get(member) or {}).get("gpus")
        try:
            theirs = [resolve(g) for g in found] if found is not None and member != host else own_gpus
        except UnknownGPUError:
            theirs = own_gpus
        for i in model["gpus"]:
            if isinstance(i, int) and 0 <= i < len(theirs):
                given.append(theirs[i])
                names.append(f"{member}:{i}")
    return given, names


def _stage_lines(plan: dict) -> list[str]:
    """One line per pipeline stage: its GPUs (vLLM's rank = stage x tp + tp rank), layers, budget."""
    stages, tp, gpus = plan.get("stages") or [], plan.get("tp") or 1, list(plan.get("gpus") or [])
    lines = []
    for st in stages:
        own = gpus[st["stage"] * tp : (st["stage"] + 1) * tp]
        first, end = st["layers"]
        lines.append(
            f"  stage {st['stage']}: GPUs {','.join(str(g) for g in own) or '-'}  layers {first}-{end - 1}"
            f"  weights {st['weights_gib_per_gpu']} GiB/GPU  activations {st['activation_gib']} GiB"
            f"  KV cache {st['kv_cache_gib']} GiB = {st['num_blocks']} blocks"
            + ("  <- every stage gets this stage's blocks" if st["limits_kv_cache"] else "")
        )
    return lines


def budget_terms(memory) -> dict:
    return {
        "requested_gib": memory.requested_gib,
        "weights_gib": memory.weights_gib_per_gpu,
        "activation_gib": memory.activation_gib,
        "non_torch_gib": memory.non_torch_gib,
        "cuda_graph_gib": memory.cuda_graph_gib if memory.graphs_counted else 0.0,
        # Before any calibration's scale, exact to 4 decimals: what `vllm-fleet calibrate` fits.
        "activation_builtin_gib": memory.activation_builtin_gib,
        "cuda_graph_builtin_gib": memory.cuda_graph_builtin_gib,
        "graphs_counted": memory.graphs_counted,
        "enforce_eager": memory.enforce_eager,
        "gpu_memory_utilization": memory.gpu_memory_utilization,
        "max_num_batched_tokens": memory.max_num_batched_tokens,
        "max_num_seqs": memory.max_num_seqs,
    }


def format_plan(plan: dict) -> str:
    """A plan as a person reads it: the verdict line, the numbers, each error with its fix."""

    def num(v, unit=""):
        return "-" if v is None else f"{v}{unit}"

    lines = [
        f"{plan['model']}: {plan['verdict'].upper()}",
        f"  GPUs {num(plan.get('gpu_name'))} x{len(plan.get('gpus') or [])}  tp {num(plan.get('tp'))}"
        + (f"  pp {plan['pp']}" if (plan.get("pp") or 1) > 1 else "")
        + f"  dtype {num(plan.get('dtype'))}  quant {plan.get('quantization') or 'none'}",
        f"  weights {num(plan.get('weights_gib'), ' GiB')}/GPU"
        f"  KV cache {num(plan.get('kv_cache_gib'), ' GiB')} = {num(plan.get('kv_tokens'))} tokens"
        f"  max safe --max-model-len {num(plan.get('max_model_len_fit'))}",
    ]
    moe = plan.get("moe")
    if moe:
        split = "whole experts (expert parallel)" if moe["expert_parallel"] else "a slice of every expert"
        lines.append(
            f"  MoE: {moe['experts']} experts, {moe['active_per_token']} active per token, in "
            f"{moe['sparse_layers']} layers; each GPU holds {split}: {moe['experts_per_gpu']} x "
            f"{moe['expert_width_per_gpu']} wide"
        )
    lines += _stage_lines(plan)
    if plan.get("calibration"):
        lines.append(f"  calibration: {plan['calibration']['summary']}")
    for e in plan.get("errors") or []:
        lines += [f"  ERROR [{e['rule']}] {e['message']}", f"    fix: {e['fix']}"]
    for w in plan.get("warnings") or []:
        lines += [f"  note  [{w['rule']}] {w['message']}", f"    fix: {w['fix']}"]
    if plan.get("argv"):
        lines.append("  vllm serve MODEL " + " ".join(plan["argv"]))
    return "\n".join(lines)
