"""Memory planner: what vLLM will do with each GPU's memory, predicted without starting it.

For a model on given GPUs and flags it predicts, per GPU (tensor-parallel rank), the numbers vLLM
logs at start-up ("Model loading took X GiB", "Available KV cache memory: X GiB", "GPU KV cache
size: N tokens") and the largest ``--max-model-len`` that starts ("... the estimated maximum model
length is N"). When the model does not fit it says what would: a smaller --max-model-len, more
GPUs, --enforce-eager, a 4-bit model.

The budget, as vLLM 0.26.0 and 0.32.0 compute it (read from their source; docs/planner.md has the
derivation, each term's file, and its measured error):

    requested  = ceil(total x gpu_memory_utilization)          vllm/v1/worker/utils.py request_memory
    kv_cache   = requested - weights - peak activation          vllm/v1/worker/gpu_worker.py
                 - non-torch increase - CUDA-graph estimate      determine_available_memory
    num_blocks = kv_cache // (page bytes x layers)               vllm/v1/core/kv_cache_utils.py
    tokens     = num_blocks / cdiv(max_model_len, block) x max_model_len

``total`` is what torch sees (cudaMemGetInfo), not nvidia-smi's figure. The CUDA context and the
NCCL communicators are created BEFORE vLLM takes its start-up snapshot, so they are not charged to
the budget: they live in the (1 - utilization) share of the GPU.

Pure: plain data in, plain data out. No torch, no vLLM.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .architectures import architecture
from .gpus import MIB, usable_bytes
from .model_facts import (
    ModelFacts,
    QuantFacts,
    checkpoint_dtype_bytes,
    kv_heads_per_rank,
    weight_bytes,
    weight_parts,
)
from .rules import DEFAULT_GPU_MEMORY_UTILIZATION, TP_CANDIDATES, shape_problems
from .versions import DEFAULT_VLLM_VERSION, version_tuple

GIB = 1024**3

# --- constants fitted to measurements (docs/planner.md, tests/data/planner/measured.json) --------

# Non-torch memory that appears between vLLM's start-up snapshot and the end of its profiling run
# (cuBLAS/cuBLASLt handles and workspaces, attention-kernel modules loaded on first use). vLLM
# measures it as `non_torch_increase` (vllm/utils/mem_utils.py memory_profiling). Fitted: the two
# H100 7B fp16 eager runs (offline, 16384 batched tokens; server, 8192) leave 1.770 and 1.020 GiB
# beside weights and KV; subtracting the forward-pass activation below (1.508 / 0.754 GiB) leaves
# 0.262 and 0.266 GiB. Assumed the same on other GPUs and for tp > 1 (NCCL/custom all-reduce
# buffers are allocated before the snapshot; see vllm/v1/worker/gpu_worker.py init_device).
NON_TORCH_BYTES = int(0.264 * GIB)

# Peak activation of the profiling forward pass (gpu_model_runner.profile_run ->
# _dummy_run(max_num_batched_tokens)), in elements per token: the MLP dominates, with gate_up's
# output (2 x intermediate/tp), SiLU-and-mul's output (intermediate/tp) and about four
# hidden-width tensors (residual, normed input, o_proj / down_proj outputs) alive at once:
#     3 x intermediate/tp + 4 x hidden
# 7B: 3x11008 + 4x4096 = 49408 elements = 96.5 KiB/token in fp16. Checked against the measured
# difference between 16384 and 8192 batched tokens (0.750 GiB / 8192 = 96.0 KiB/token): +0.5 %.
MLP_INTERMEDIATE_FACTOR = 3
MLP_HIDDEN_FACTOR = 4

# The sampler warm-up of the profiling run (gpu_model_runner._dummy_sampler_run) computes logits
# for min(max_num_seqs, max_num_batched_tokens) rows over the (padded) vocabulary while the
# forward's hidden states are still alive. Fitted: Qwen1.5-0.5B on H100 (1024 rows x 151936)
# needs 0.289 GiB = 1.99 bytes per logit element (server, util 0.92), which also predicts the
# offline util 0.5 run within 0.01 GiB. vLLM makes fp32 copies of the logits; the measured peak
# shows only about one half-precision copy at once, so this is a fit, not a derivation.
LOGIT_BYTES_PER_ELEMENT = 2.0

# vLLM 0.26 runs MoE models on its V1 model runner unless the architecture is listed in
# DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES (vllm/config/vllm.py _is_default_v2_model_runner_model:
# Qwen2MoeForCausalLM is, Qwen3MoeForCausalLM is not); 0.32 runs every model here on V2. The V1
# runner's sampler warm-up (v1/worker/gpu_model_runner.py _dummy_sampler_run: top_k = vocab - 1
# and top_p 0.9, i.e. a full sort of every row) holds about 20 bytes per logit element: fp32
# logits, the sorted copy, int64 sort indices and fp32 probabilities. Fitted: Qwen3-30B-A3B on an
# H200 (tests/data/gpu/measured-h200.json), torch peak 2.68 GiB with 1024 rows and 0.75 GiB with
# 256 rows of 151936 logits give 18.3 and 20.5 B; 19.4 is within 6 % of both.
V1_RUNNER_LOGIT_BYTES_PER_ELEMENT = 19.4
V1_RUNNER_MOE_UNTIL = "0.32.0"
V2_RUNNER_MOE_ARCHITECTURES_026 = ("Qwen2MoeForCausalLM",)

# CUDA-graph memory vLLM estimates before sizing the KV cache (gpu_model_runner
# profile_cudagraph_memory: first capture + per-graph increment x graphs; counted since v0.21,
# VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1). Fitted to the one measurement we have: H100 7B fp16
# server, 55.86 GiB eager vs 55.36 GiB with graphs = 0.50 GiB for 32 layers and 51 capture sizes
# (1, 2, 4, 8..248 step 8, 256..512 step 16). Scaled by layers per GPU and by the number of capture
# sizes; the scaling is an assumption (one data point), so the error on other models is about
# ±50 % of this term. vLLM's real graph pool came out 0.73 GiB, above its own estimate.
CUDA_GRAPH_BYTES_PER_LAYER_PER_SIZE = int(0.50 * GIB / (32 * 51))

# The planner's own uncertainty on a GPU it was not calibrated on, kept out of the suggested
# --max-model-len (T4 absolute numbers are not measured; see docs/planner.md).
SAFETY_MARGIN_BYTES = int(0.25 * GIB)

# CUDA context + NCCL communicators live outside the budget, in total x (1 - utilization); vLLM
# refuses to start when free memory at start-up is below the requested share ("Free memory on
# device ... is less than desired GPU memory utilization"). Not measured: typical size.
CUDA_CONTEXT_BYTES = int(0.4 * GIB)

# GPTQ/AWQ kernels by compute capability (vllm/model_executor/kernels/linear/__init__.py
# choose_mp_linear_kernel): Machete on cc 9.0 exactly (machete.py: is_device_capability(90)),
# Marlin from 7.5 (the T4). Machete's process_weights_after_loading turns AWQ's packed 4-bit
# zero points into act-dtype "-scale x zero" tensors (transform_w_zp): 2 B instead of 0.5 B per
# group and output column, so an AWQ model takes more memory on an H100 than its checkpoint.
# Measured (tests/data/gpu/measured.json): Qwen1.5-14B-AWQ loads 9.29 GiB on an H100, 0.28 GiB
# above its checkpoint bytes; this term is 0.14 of it. Marlin keeps them packed.
MACHETE_CAPABILITY = 90

# vLLM's padding of the vocabulary (vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE).
VOCAB_PADDING = 64

SUPPORTED_VERSIONS = ("0.26.0", "0.32.0")


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Per GPU: one tensor-parallel rank of the pipeline stage that limits the KV cache (every
    stage gets that stage's blocks); ``stages`` has each stage's own budget. Bytes as GiB floats."""

    gpu_name: str
    total_gib: float  # what torch sees
    requested_gib: float  # ceil(total x gpu_memory_utilization)
    weights_gib_per_gpu: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float  # vLLM: "Available KV cache memory" (may be negative)
    kv_tokens: int  # vLLM: "GPU KV cache size: N tokens"
    kv_bytes_per_token: int  # per GPU
    num_blocks: int
    max_model_len: int  # the one asked for (or the model's own)
    max_model_len_fit: int  # vLLM's "estimated maximum model length", ≤ max_model_len
    max_model_len_suggested: int  # fit, less the planner's margin, rounded down
    fits: bool
    problems: list = field(default_factory=list)  # [{message, fix}]
    tp: int = 1
    pp: int = 1
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_num_batched_tokens: int = 0
    max_num_seqs: int = 0
    enforce_eager: bool = False
    block_size: int = 16
    vllm_version: str = DEFAULT_VLLM_VERSION
    # One per pipeline stage: its layers [start, end), weights, activation, CUDA-graph and KV-cache
    # GiB per GPU, and the blocks its own memory affords (vLLM gives all stages the fewest).
    stages: list = field(default_factory=list)
    # Whether vLLM subtracts the CUDA-graph estimate before sizing the KV cache (not eager, >= 0.21):
    # kv_cache_gib = requested - weights - activation - non_torch - (cuda_graph if counted).
    graphs_counted: bool = False
    # The terms a calibration file replaced (calibration.py): {term: {value, starts, source}};
    # empty when the built-in terms stand.
    calibrated: dict = field(default_factory=dict)
    # The limiting stage's activation and counted CUDA-graph terms before any calibration scale, to
    # 4 decimals: what a start record keeps, so a re-calibration fits against the built-in terms.
    activation_builtin_gib: float = 0.0
    cuda_graph_builtin_gib: float = 0.0

    @property
    def max_concurrency(self) -> float:
        """vLLM: "Maximum concurrency for N tokens per request"."""
        per_req = math.ceil(self.max_model_len / self.block_size)
        return self.num_blocks / per_req if per_req else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["max_concurrency"] = round(self.max_concurrency, 2)
        return d


# --- inputs -----------------------------------------------------------------------------------


def _get(obj, key, default=None):
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def gpu_total_bytes(gpu) -> int:
    """What torch sees (gpus.usable_bytes): ``memory_bytes`` (measured, as in measured.json) or
    ``torch_bytes`` when given, else the catalog's figure, else derived from nvidia-smi's MiB."""
    measured = _get(gpu, "memory_bytes")
    if measured:
        return int(measured)
    return usable_bytes({k: _get(gpu, k) for k in ("name", "memory_mib", "torch_bytes")})


def batch_defaults(total_bytes: int, gpu_name: str, vllm_version: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) the OpenAI server picks when not given.

    vllm/engine/arg_utils.py get_batch_defaults: ≥ 70 GiB and not an A100 → 8192 / 1024; else
    2048 / 256. 0.32 adds ≥ 160 GiB → 16384 / 1024 (absent in 0.26).
    """
    if total_bytes >= 160 * GIB and version_tuple(vllm_version) >= (0, 32):
        return 16384, 1024
    if total_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """CUDA-graph capture sizes (vllm/config/vllm.py _set_cudagraph_sizes, no spec decode)."""
    top = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= top]
    if top >= 8:
        sizes += list(range(8, min(top + 1, 256), 8))
    if top >= 256:
        sizes += list(range(256, top + 1, 16))
    if top not in sizes:
        sizes.append(top)
    return sizes


# --- per-rank terms ---------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage as vLLM splits them (vllm/distributed/utils.py get_pp_indices,
    without VLLM_PP_LAYER_PARTITION): an even split, the remainder one each to the stages before
    the last, counting back from it."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def stage_layer_kinds(facts: ModelFacts, pp: int) -> list[tuple[int, int]]:
    """(sparse, dense) layer counts of each pipeline stage, in vLLM's split (pp_partition)."""
    out, first = [], 0
    for count in pp_partition(facts.num_hidden_layers, pp):
        sparse = sum(facts.is_sparse_layer(i) for i in range(first, first + count))
        out.append((sparse, count - sparse))
        first += count
    return out


def busiest_stage(facts: ModelFacts, pp: int, sparse: float, dense: float, stage: int | None = None) -> float:
    """The per-stage sum of a per-layer quantity that differs for sparse and dense layers: of
    pipeline stage ``stage`` (0-based), or the largest of all stages when None."""
    sums = [s * sparse + d * dense for s, d in stage_layer_kinds(facts, pp)]
    return max(sums) if stage is None else sums[stage]


def local_experts(facts: ModelFacts, ep: int) -> int:
    """Experts on the busiest rank when ``ep`` ranks split them (fused_moe/layer.py
    determine_expert_map: num_experts // ep each, one more on the first num_experts % ep ranks)."""
    return _cdiv(facts.num_experts, ep) if facts.is_moe else 0


def weight_bytes_per_rank(
    facts: ModelFacts,
    tp: int = 1,
    pp: int = 1,
    dtype_bytes: int = 2,
    expert_parallel: bool = False,
    stage: int | None = None,
) -> int:
    """Weights on one rank of pipeline stage ``stage`` (None: the busiest stage), from the
    checkpoint's shapes, scaled to its real bytes.

    Attention and MLP layers split over tp (replicated K/V when tp > kv heads); routed experts
    split their intermediate size over tp, or, with ``expert_parallel``, the experts themselves
    over tp ranks (vLLM's ep size is tp x dp; dp is 1 here); the MoE router is replicated;
    embedding and lm_head are vocab-parallel (vocab padded to 64 x tp); norms are replicated;
    layers split over pp as pp_partition says, with the embedding on the first stage and lm_head
    and the final norm on the last. Plus the rotary cos/sin cache (max_position x head_dim in the
    model dtype: the 8 MiB that makes 7B's 14.382 GiB of parameters the 14.39 GiB vLLM logged).
    """
    ckpt_dtype_bytes = checkpoint_dtype_bytes(facts)
    parts = weight_parts(facts)
    total_est = parts.total
    # K and V projections are copied to every rank that shares a kv head when tp > kv heads.
    rep = tp // facts.num_key_value_heads if tp > facts.num_key_value_heads else 1
    attention = (parts.attention + (rep - 1) * parts.kv_proj) / tp + parts.layer_norms
    if expert_parallel and facts.is_moe:
        experts = parts.experts * local_experts(facts, tp) / facts.num_experts
    else:
        experts = parts.experts / tp
    sparse = attention + experts + parts.router + parts.shared_expert / tp
    dense = attention + parts.mlp / tp
    v_pad = _cdiv(facts.vocab_size, VOCAB_PADDING * tp) * VOCAB_PADDING * tp
    embed_rank = v_pad // tp * facts.hidden_size * ckpt_dtype_bytes
    lm_head_rank = embed_rank if (not facts.tie_word_embeddings or pp > 1) else 0
    stages = [n_sparse * sparse + n_dense * dense for n_sparse, n_dense in stage_layer_kinds(facts, pp)]
    arch = architecture(facts.architecture)
    if arch and arch.ends_on_every_stage:
        stages = [st + embed_rank + lm_head_rank + parts.final_norm for st in stages]
    else:
        stages[0] += embed_rank
        stages[-1] += lm_head_rank + parts.final_norm
    est_rank = max(stages) if stage is None else stages[stage]
    # Real checkpoint bytes (safetensors headers) correct the shape estimate where they differ.
    scale = weight_bytes(facts) / total_est if total_est else 1.0
    if facts.quant is None and dtype_bytes != ckpt_dtype_bytes:
        scale *= dtype_bytes / ckpt_dtype_bytes  # e.g. an fp32 checkpoint served in fp16
    rotary = facts.max_supported_len * facts.head_dim * dtype_bytes
    return int(est_rank * scale) + rotary


def _cc_int(gpu) -> int:
    cc = _get(gpu, "compute_capability")
    if not cc:
        return 0
    major, _dot, minor = str(cc).partition(".")
    return int(major) * 10 + int(minor or 0)


def kernel_repack_bytes(
    facts: ModelFacts,
    gpu,
    tp: int = 1,
    pp: int = 1,
    dtype_bytes: int = 2,
    expert_parallel: bool = False,
    stage: int | None = None,
) -> int:
    """Bytes the GPU's quantized kernels add to the checkpoint's on one rank: AWQ zero points of
    linear layers expanded to the act dtype on Hopper (see MACHETE_CAPABILITY), plus what the MoE
    kernels add to the experts (moe_kernel_bytes)."""
    extra = moe_kernel_bytes(facts, gpu, tp, pp, dtype_bytes, expert_parallel, stage)
    q = facts.quant
    if q is None or q.method != "awq" or q.zero_point is False or _cc_int(gpu) != MACHETE_CAPABILITY:
        return extra
    h = facts.hidden_size
    q_out, kv_out = facts.num_attention_heads * facts.head_dim, facts.num_key_value_heads * facts.head_dim
    attention = [(h, q_out), (h, kv_out), (h, kv_out), (q_out, h)]

    def mlp(inter):
        return [(h, inter), (h, inter), (inter, h)] if inter else []

    def groups(shapes):
        # A group size of -1 (channel-wise) makes the whole input dimension one group.
        return sum(_cdiv(k, q.group_size if q.group_size > 0 else k) * n for k, n in shapes)

    dense = groups(attention + mlp(facts.intermediate_size))
    sparse = groups(attention + mlp(facts.shared_expert_intermediate_size))
    return extra + int(busiest_stage(facts, pp, sparse, dense, stage) / tp * (dtype_bytes - q.bits / 8))


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def moe_kernel_bytes(
    facts: ModelFacts,
    gpu,
    tp: int = 1,
    pp: int = 1,
    dtype_bytes: int = 2,
    expert_parallel: bool = False,
    stage: int | None = None,
) -> int:
    """What vLLM's Marlin MoE kernels add to the experts' checkpoint bytes on one rank.

    - 4-bit AWQ/GPTQ experts on Marlin (every cc >= 7.5 in 0.26; slice % group == 0 and hidden %
      128 == 0): the slice is padded to a multiple of lcm(64, group) (marlin_utils.py
      marlin_moe_padded_intermediate), so the weights grow by padded/slice.
    - Block-FP8 experts on Marlin (cc 7.5-8.8, weight-only; marlin_utils_fp8.py
      prepare_fp8_moe_layer_for_marlin): the slice is padded to lcm(64, block_k) and the fp32
      block scales become act-dtype group scales, one per block_k inputs and output column.
    """
    q, cc = facts.quant, _cc_int(gpu)
    if not facts.sparse_layers or q is None or cc < 75:
        return 0
    parts = weight_parts(facts)
    width = facts.moe_intermediate_size if expert_parallel else facts.moe_intermediate_size // tp
    experts = local_experts(facts, tp) if expert_parallel else facts.num_experts
    layers = busiest_stage(facts, pp, 1, 0, stage)  # sparse layers on the stage (None: the busiest)
    h = facts.hidden_size
    if q.method in ("awq", "gptq") and q.bits == 4 and width:
        group = q.group_size if q.group_size > 0 else width
        if h % 128 or width % group:
            return 0  # MoE WNA16 fallback: the checkpoint layout, no padding
        padded = _cdiv(width, _lcm(64, group)) * _lcm(64, group)
        per_layer = parts.experts * experts / facts.num_experts / (1 if expert_parallel else tp)
        return int(per_layer * (padded / width - 1) * layers)
    if q.method == "fp8" and q.weight_block_size and cc < 89 and width:
        bn, bk = q.weight_block_size[0], q.weight_block_size[-1]
        padded = _cdiv(width, _lcm(64, bk)) * _lcm(64, bk)
        pad_weights = experts * 3 * h * (padded - width)  # fp8: 1 byte per weight
        group_scales = experts * (_cdiv(h, bk) * 2 * padded + _cdiv(padded, bk) * h) * dtype_bytes
        block_scales = experts * (2 * _cdiv(width, bn) * _cdiv(h, bk) + _cdiv(h, bn) * _cdiv(width, bk)) * 4
        return int((pad_weights + group_scales - block_scales) * layers)
    return 0


def moe_workspace_bytes(facts: ModelFacts, tokens: int, slice_width: int, dtype_bytes: int = 2) -> int:
    """The fused-MoE workspace of the profiling run: one buffer shared by every MoE layer, sized
    for ``tokens`` (no chunking in 0.26/0.32) and kept allocated afterwards
    (v1/worker/workspace.py; experts/triton_moe.py and marlin_moe.py workspace_shapes):
        tokens x topk x (max(slice, hidden) + max(2 x slice, hidden)) in the activation dtype."""
    h, k = facts.hidden_size, facts.num_experts_per_tok
    return int(tokens * k * (max(slice_width, h) + max(2 * slice_width, h)) * dtype_bytes)


def offloaded_bytes(facts: ModelFacts, tp: int, rank_weights: int, cpu_offload_gb: float) -> int:
    """Weight bytes --cpu-offload-gb keeps in CPU memory instead of on each GPU: parameters of the
    decoder layers are moved whole until the budget is reached (model_executor/models/utils.py
    maybe_offload_to_cpu, called by make_layers), so at most the decoder layers' bytes; the
    overshoot of one parameter past the budget is ignored (< 1 layer's largest matrix).
    ``rank_weights``: weight_bytes_per_rank's figure for the busiest rank."""
    if cpu_offload_gb <= 0:
        return 0
    parts = weight_parts(facts)
    ends = (parts.embed + parts.lm_head) / tp
    return int(min(cpu_offload_gb * GIB, max(rank_weights - ends, 0)))


def lora_bytes(
    facts: ModelFacts,
    tp: int,
    pp: int,
    dtype_bytes: int,
    max_loras: int,
    rank: int,
    expert_parallel: bool = False,
    stage: int | None = None,
) -> int:
    """GPU buffers --enable-lora allocates on each rank, inside vLLM's "Model loading took" figure
    (lora/layers/*.py create_lora_weights; lora_model_runner_mixin.py load_lora_model). Per
    max_loras x rank, in the model dtype: column-parallel layers keep lora_a whole (in) and split
    lora_b (out/tp), row-parallel ones the other way round, so a dense layer holds
        7 x hidden + 2 x (heads + kv_heads) x head_dim / tp + 3 x intermediate / tp
    (qkv, o, gate_up, down); a sparse layer's experts E_local x (3 x hidden + 3 x width) with
    width = moe_intermediate / tp (whole under expert parallel), its router hidden + experts,
    and a shared expert 3 x hidden + 3 x shared / tp. Qwen3 layouts also wrap embed_tokens and
    lm_head at the full vocabulary (2 x vocab + 2 x hidden; qwen3.py embedding_modules). The
    dummy LoRAs of the profiling run are made on the CPU and copied into these buffers."""
    if max_loras <= 0:
        return 0
    h, d = facts.hidden_size, facts.head_dim
    attention = 4 * h + 2 * (facts.num_attention_heads + facts.num_key_value_heads) * d / tp
    dense = attention + 3 * h + 3 * facts.intermediate_size / tp
    width = facts.moe_intermediate_size if expert_parallel else facts.moe_intermediate_size / tp
    experts = local_experts(facts, tp) if expert_parallel else facts.num_experts
    sparse = attention + experts * (3 * h + 3 * width) + h + facts.num_experts
    if facts.shared_expert_intermediate_size:
        sparse += 3 * h + 3 * facts.shared_expert_intermediate_size / tp
    arch = architecture(facts.architecture)
    vocab = 2 * facts.vocab_size + 2 * h if arch and arch.lora_wraps_vocab else 0
    return int((busiest_stage(facts, pp, sparse, dense, stage) + vocab) * max_loras * rank * dtype_bytes)


def uses_v1_runner(facts: ModelFacts, vllm_version: str) -> bool:
    """Whether vLLM runs this model on its V1 model runner (see V1_RUNNER_LOGIT_BYTES_PER_ELEMENT)."""
    return (
        facts.is_moe
        and version_tuple(vllm_version) < version_tuple(V1_RUNNER_MOE_UNTIL)
        and facts.architecture not in V2_RUNNER_MOE_ARCHITECTURES_026
    )


def activation_bytes(
    facts: ModelFacts,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    dtype_bytes: int = 2,
    last_stage: bool = True,
    expert_parallel: bool = False,
    v1_runner: bool = False,
) -> int:
    """torch peak increase of vLLM's profiling run on one rank (see the constants above).

    A dense layer's MLP peak is MLP_INTERMEDIATE_FACTOR x intermediate/tp + MLP_HIDDEN_FACTOR x
    hidden elements per token. A sparse layer's is the fused-MoE workspace (moe_workspace_bytes),
    the hidden-width tensors around it, the router logits, and a shared expert's gate_up and
    activation outputs (3 x shared/tp), which are alive beside it."""
    t, h = max_num_batched_tokens, facts.hidden_size
    forward = 0.0
    if facts.num_hidden_layers > facts.sparse_layers:
        forward = t * (MLP_INTERMEDIATE_FACTOR * facts.intermediate_size / tp + MLP_HIDDEN_FACTOR * h)
    if facts.sparse_layers:
        width = facts.moe_intermediate_size if expert_parallel else facts.moe_intermediate_size // tp
        moe = moe_workspace_bytes(facts, t, width, dtype_bytes) / dtype_bytes
        moe += t * (MLP_HIDDEN_FACTOR * h + facts.num_experts + 3 * facts.shared_expert_intermediate_size / tp)
        forward = max(forward, moe)
    forward *= dtype_bytes
    sampler = 0.0
    if last_stage:
        rows = min(max_num_seqs, max_num_batched_tokens)
        v_pad = _cdiv(facts.vocab_size, VOCAB_PADDING) * VOCAB_PADDING
        per_logit = V1_RUNNER_LOGIT_BYTES_PER_ELEMENT if v1_runner else LOGIT_BYTES_PER_ELEMENT
        sampler = t * h * dtype_bytes + rows * v_pad * per_logit
    return int(max(forward, sampler))


def cuda_graph_bytes(
    facts: ModelFacts, pp: int, max_num_seqs: int, max_num_batched_tokens: int, stage: int | None = None
) -> int:
    """vLLM's estimate of the CUDA graphs' memory on one rank of ``stage`` (None: the stage with
    the most layers), which scales with the layers the stage runs."""
    parts = pp_partition(facts.num_hidden_layers, pp)
    layers = max(parts) if stage is None else parts[stage]
    n = len(capture_sizes(max_num_seqs, max_num_batched_tokens))
    return CUDA_GRAPH_BYTES_PER_LAYER_PER_SIZE * layers * n


def tp_allowed(
    facts: ModelFacts, tp: int, vllm_version: str = DEFAULT_VLLM_VERSION, expert_parallel: bool = False
) -> bool:
    """Whether tp can split the model at all, as the rules table says (rules.shape_problems:
    heads, KV heads, intermediate size, 4-bit groups, packing and FP8 blocks, MoE experts), so the
    planner never suggests a tp preflight refuses."""
    flags = {"enable-expert-parallel": True} if expert_parallel else {}
    return not shape_problems(facts, tp, vllm_version, flags)


def int4_variant(facts: ModelFacts) -> ModelFacts:
    """The same shapes as a GPTQ-Int4 (group 128) checkpoint, weights estimated from shapes."""
    return replace(
        facts,
        quant=QuantFacts(method="gptq", bits=4, group_size=128),
        weight_bytes=None,
        weight_bytes_source="estimated from config shapes",
        torch_dtype="float16",
    )


# --- the planner ------------------------------------------------------------------------------


def _gib(b: float) -> float:
    return round(b / GIB, 2)


def _round_len(n: int, block_size: int) -> int:
    """A round --max-model-len at or below n: multiple of 1024 above 8192, of 256 above 1024."""
    for step in (1024, 256):
        if n >= 8 * step and n // step * step > 0:
            return n // step * step
    return max(n // block_size * block_size, 0)


# `vllm serve` flags (docs/inventory.md spelling) -> plan_memory keyword arguments.
FLAG_KEYWORDS = {
    "gpu-memory-utilization": "gpu_memory_utilization",
    "max-num-batched-tokens": "max_num_batched_tokens",
    "max-num-seqs": "max_num_seqs",
    "enforce-eager": "enforce_eager",
    "max-model-len": "max_model_len",
    "tensor-parallel-size": "tp",
    "pipeline-parallel-size": "pp",
    "enable-expert-parallel": "expert_parallel",
    "cpu-offload-gb": "cpu_offload_gb",
}


def kwargs_from_flags(flags: dict) -> dict:
    """The plan_memory keywords a model's flags set (the rest keep vLLM's defaults)."""
    return {keyword: flags[flag] for flag, keyword in FLAG_KEYWORDS.items() if flag in flags}


# vLLM's CPU backend: the KV cache is VLLM_CPU_KVCACHE_SPACE GiB exactly ("Explicitly set (1.0/N)
# GiB for KV cache", v1/worker/cpu_worker.py determine_available_memory; no profiling budget), in
# blocks of 128 tokens unless --block-size says otherwise (platforms/cpu.py check_and_update_config).
CPU_BLOCK_SIZE = 128


def plan_cpu_kv_cache(
    facts,
    *,
    kv_cache_space_gib: float,
    tp: int = 1,
    pp: int = 1,
    kv_cache_dtype_bytes: int = 2,
    max_model_len: int | None = None,
    block_size: int | None = None,
) -> dict:
    """What vLLM's CPU build reports about its KV cache: the GiB it was given and the tokens they
    hold (``CPU KV cache size: N tokens``), for the stage with the most layers (the fewest blocks)."""
    block = int(block_size or CPU_BLOCK_SIZE)
    mml = int(max_model_len) if max_model_len else facts.max_supported_len
    page = 2 * block * kv_heads_per_rank(facts, tp) * facts.head_dim * kv_cache_dtype_bytes
    layers = max(pp_partition(facts.num_hidden_layers, pp))
    num_blocks = int(kv_cache_space_gib * GIB) // (page * layers)
    per_req_blocks = _cdiv(mml, block)
    return {
        "kv_cache_gib": round(float(kv_cache_space_gib), 2),
        "kv_tokens": int(num_blocks / per_req_blocks * mml) if per_req_blocks else 0,
        "num_blocks": num_blocks,
        "block_size": block,
    }


# The terms a calibration file may replace (calibration.py fits them from recorded starts).
CALIBRATED_TERMS = ("non_torch_gib", "activation_scale", "cuda_graph_scale")


def calibrated_terms(calibration: dict | None) -> tuple[int, float, float]:
    """Non-torch bytes and the activation and CUDA-graph scales: a calibration's, else built in.
    A scale of 0 is a value (a vLLM that charges no graph estimate), not "unset"."""
    terms = calibration or {}

    def value(name: str):
        entry = terms.get(name)
        found = entry.get("value") if isinstance(entry, dict) else None
        return None if found is None else float(found)

    non_torch, activation, graphs = value("non_torch_gib"), value("activation_scale"), value("cuda_graph_scale")
    return (
        NON_TORCH_BYTES if non_torch is None else int(non_torch * GIB),
        1.0 if activation is None else activation,
        1.0 if graphs is None else graphs,
    )


def plan_memory(
    facts,
    gpu,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype_bytes: int = 2,
    kv_cache_dtype_bytes: int | None = None,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    enforce_eager: bool = False,
    block_size: int = 16,
    vllm_version: str = DEFAULT_VLLM_VERSION,
    expert_parallel: bool = False,
    cpu_offload_gb: float = 0.0,
    max_loras: int = 0,
    max_lora_rank: int = 16,
    calibration: dict | None = None,
    _suggest: bool = True,
) -> MemoryPlan:
    """Predict vLLM's per-GPU memory budget for ``facts`` on ``gpu`` (see the module docstring).

    ``gpu``: a dict or object with name, memory_bytes (torch's total) or memory_mib, and
    compute_capability. ``max_model_len=None`` is the model's own maximum, as vLLM derives it.
    ``max_num_seqs`` / ``max_num_batched_tokens`` default to what the OpenAI server picks on this
    GPU; ``gpu_memory_utilization`` to vLLM's own default (rules.DEFAULT_GPU_MEMORY_UTILIZATION).
    ``calibration``: the terms a calibration file holds for this GPU and vLLM version
    (calibration.terms_for); None keeps the built-in terms.
    """
    if tp < 1 or pp < 1:
        raise ValueError(f"tp and pp must be ≥ 1, got tp {tp}, pp {pp}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    name = str(_get(gpu, "name", "GPU"))
    total = gpu_total_bytes(gpu)
    kv_dtype_bytes = kv_cache_dtype_bytes or dtype_bytes
    model_max = facts.max_supported_len
    mml = int(max_model_len) if max_model_len else model_max
    d_tokens, d_seqs = batch_defaults(total, name, vllm_version)
    seqs = int(max_num_seqs or d_seqs)
    # Unset, the server default applies, capped (chunked prefill, the V1 default) by what
    # max_num_seqs requests of max_model_len can hold (arg_utils.py).
    tokens = int(max_num_batched_tokens) if max_num_batched_tokens else min(d_tokens, seqs * mml)

    problems: list[dict] = []
    requested = math.ceil(total * gpu_memory_utilization)
    ep = expert_parallel and facts.is_moe
    graphs_counted = not enforce_eager and version_tuple(vllm_version) >= (0, 21)
    non_torch_bytes, activation_scale, graph_scale = calibrated_terms(calibration)
    kv_heads = kv_heads_per_rank(facts, tp)
    page = 2 * block_size * kv_heads * facts.head_dim * kv_dtype_bytes  # one layer, one block
    layer_counts = pp_partition(facts.num_hidden_layers, pp)
    if 0 in layer_counts:
        raise ValueError(f"pp {pp} leaves a stage without layers: the model has {facts.num_hidden_layers}")

    # Each pipeline stage is its own worker with its own budget: the first holds the embedding,
    # the last lm_head and the sampler's warm-up, and each caches K/V for its own layers only.
    # vLLM then gives every stage the blocks of the one that affords fewest
    # (v1/core/kv_cache_utils.py get_kv_cache_configs: "the smallest among all ranks") and checks
    # --max-model-len against each stage's own memory, so that stage decides the KV cache.
    stages = []
    for stage, layers in enumerate(layer_counts):
        rank_weights = weight_bytes_per_rank(facts, tp, pp, dtype_bytes, ep, stage)
        weights = rank_weights + kernel_repack_bytes(facts, gpu, tp, pp, dtype_bytes, ep, stage)
        weights -= offloaded_bytes(facts, tp, rank_weights, cpu_offload_gb)
        weights += lora_bytes(facts, tp, pp, dtype_bytes, max_loras, max_lora_rank, ep, stage)
        built_in_activation = activation_bytes(
            facts,
            tp,
            tokens,
            seqs,
            dtype_bytes,
            last_stage=stage == pp - 1,
            expert_parallel=ep,
            v1_runner=uses_v1_runner(facts, vllm_version),
        )
        built_in_graphs = cuda_graph_bytes(facts, pp, seqs, tokens, stage) if not enforce_eager else 0
        activation, graphs = activation_scale * built_in_activation, graph_scale * built_in_graphs
        available = requested - weights - activation - non_torch_bytes - (graphs if graphs_counted else 0)
        first = sum(layer_counts[:stage])
        stages.append(
            {
                "stage": stage,
                "layers": [first, first + layers],  # vLLM's start_layer, end_layer (get_pp_indices)
                "weights": weights,
                "activation": activation,
                "graphs": graphs,
                "built_in_activation": built_in_activation,
                "built_in_graphs": built_in_graphs if graphs_counted else 0,
                "available": available,
                "num_blocks": max(int(available // (page * layers)), 0),
            }
        )
    limiting = min(stages, key=lambda st: (st["num_blocks"], st["available"]))
    heaviest = max(stages, key=lambda st: st["weights"])
    weights, activation, graphs = limiting["weights"], limiting["activation"], limiting["graphs"]
    available, num_blocks = limiting["available"], limiting["num_blocks"]
    layers = limiting["layers"][1] - limiting["layers"][0]
    per_token = page * layers // block_size
    per_req_blocks = _cdiv(mml, block_size)
    kv_tokens = int(num_blocks / per_req_blocks * mml) if per_req_blocks else 0
    fit = min(num_blocks * block_size, mml)
    margin_blocks = _cdiv(SAFETY_MARGIN_BYTES, page * layers)
    suggested = min(_round_len(max(num_blocks - margin_blocks, 0) * block_size, block_size), mml)

    where = (
        f"{_gib(total)} GiB {name}"
        + (f" (tp {tp})" if tp > 1 else "")
        + (f" of pipeline stage {limiting['stage']} of {pp}" if pp > 1 else "")
        + f" at gpu-memory-utilization {gpu_memory_utilization}"
    )
    if mml > model_max:
        problems.append(
            {
                "message": f"--max-model-len {mml} is above the model's own maximum {model_max} "
                "(max_position_embeddings x rope factor): vLLM refuses it",
                "fix": f"use --max-model-len {model_max} or less",
            }
        )
    if total - CUDA_CONTEXT_BYTES < requested:
        max_utilization = math.floor((1 - CUDA_CONTEXT_BYTES / total) * 100) / 100
        problems.append(
            {
                "message": f"gpu-memory-utilization {gpu_memory_utilization} asks for {_gib(requested)} GiB "
                f"of a {_gib(total)} GiB {name}, leaving {_gib(total - requested)} GiB for the "
                f"CUDA context (~{_gib(CUDA_CONTEXT_BYTES)} GiB): vLLM refuses to start ('Free "
                "memory on device ... is less than desired GPU memory utilization')",
                "fix": f"use --gpu-memory-utilization {max_utilization}",
            }
        )
    overhead = (
        f"{_gib(weights)} GiB of weights, {_gib(activation)} GiB of activations, "
        f"{_gib(non_torch_bytes)} GiB non-torch"
        + (f", {_gib(graphs)} GiB of CUDA graphs" if graphs_counted and graphs else "")
    )
    if heaviest["weights"] > total - CUDA_CONTEXT_BYTES:
        on_stage = f" (pipeline stage {heaviest['stage']} of {pp})" if pp > 1 else ""
        problems.append(
            {
                "message": f"Weights of {_gib(heaviest['weights'])} GiB per GPU{on_stage} do not fit in the "
                f"~{_gib(total - CUDA_CONTEXT_BYTES)} GiB a {_gib(total)} GiB {name} has free "
                "beside the CUDA context: loading fails with CUDA out of memory ('Failed to "
                "load model - not enough GPU memory'); with a budget this small vLLM would "
                "find no available memory for the cache blocks",
                "fix": "",
            }
        )
    elif available <= 0:
        problems.append(
            {
                "message": f"No available memory for the cache blocks: {overhead} exceed the "
                f"{_gib(requested)} GiB budget of a {where} by {_gib(-available)} GiB",
                "fix": "",
            }
        )
    elif fit < mml:
        problems.append(
            {
                "message": f"KV cache needs {per_token / MIB:.3g} MiB/token x {mml} tokens = "
                f"{_gib(per_token * mml)} GiB per GPU but only {_gib(available)} GiB is left "
                f"after {overhead} on a {where}: the estimated maximum model length is {fit}",
                "fix": "",
            }
        )
    fits = not problems
    if problems and _suggest:
        fix = _fixes(
            facts,
            gpu,
            dict(
                tp=tp,
                pp=pp,
                dtype_bytes=dtype_bytes,
                kv_cache_dtype_bytes=kv_cache_dtype_bytes,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=mml,
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                enforce_eager=enforce_eager,
                block_size=block_size,
                vllm_version=vllm_version,
                expert_parallel=expert_parallel,
                cpu_offload_gb=cpu_offload_gb,
                max_loras=max_loras,
                max_lora_rank=max_lora_rank,
                calibration=calibration,
            ),
            suggested,
        )
        for p in problems:
            if not p["fix"]:
                p["fix"] = fix
    return MemoryPlan(
        gpu_name=name,
        total_gib=_gib(total),
        requested_gib=_gib(requested),
        weights_gib_per_gpu=_gib(weights),
        activation_gib=_gib(activation),
        non_torch_gib=_gib(non_torch_bytes),
        cuda_graph_gib=_gib(graphs),
        kv_cache_gib=_gib(available),
        kv_tokens=kv_tokens if available > 0 else 0,
        kv_bytes_per_token=per_token,
        num_blocks=num_blocks,
        max_model_len=mml,
        max_model_len_fit=fit if available > 0 else 0,
        max_model_len_suggested=suggested if available > 0 else 0,
        fits=fits,
        problems=problems,
        tp=tp,
        pp=pp,
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=tokens,
        max_num_seqs=seqs,
        enforce_eager=enforce_eager,
        block_size=block_size,
        vllm_version=vllm_version,
        stages=[
            {
                "stage": st["stage"],
                "layers": st["layers"],
                "weights_gib_per_gpu": _gib(st["weights"]),
                "activation_gib": _gib(st["activation"]),
                "cuda_graph_gib": _gib(st["graphs"]),
                "kv_cache_gib": _gib(st["available"]),
                "num_blocks": st["num_blocks"],
                "limits_kv_cache": st is limiting,
            }
            for st in stages
        ],
        graphs_counted=graphs_counted,
        calibrated={k: dict(v) for k, v in (calibration or {}).items() if k in CALIBRATED_TERMS},
        activation_builtin_gib=round(limiting["built_in_activation"] / GIB, 4),
        cuda_graph_builtin_gib=round(limiting["built_in_graphs"] / GIB, 4),
    )


def _option(label: str, alt: MemoryPlan, floor: int) -> str | None:
    """label as a fix when alt starts: plainly when the asked length fits, else with a cap."""
    if alt.fits:
        return label
    if alt.max_model_len_suggested >= floor and not any(p["message"].startswith("Weights of") for p in alt.problems):
        return f"{label} with --max-model-len {alt.max_model_len_suggested}"
    return None


def _fixes(facts: ModelFacts, gpu, kw: dict, suggested: int) -> str:
    """What would start: each alternative re-planned, in the order an operator would try them.

    A capped --max-model-len is offered only down to 2048 (below that a chat model is of little
    use); tp only where the model's shapes split (tp_allowed, i.e. the rules table); a 4-bit model
    only for an unquantized one.
    """
    options: list[str] = []
    floor = min(2048, kw["max_model_len"])
    if suggested >= floor:
        options.append(f"use --max-model-len {suggested}")
    for tp in TP_CANDIDATES:
        if tp <= kw["tp"] or not tp_allowed(facts, tp, kw["vllm_version"], kw["expert_parallel"]):
            continue
        alt = plan_memory(facts, gpu, **{**kw, "tp": tp}, _suggest=False)
        opt = _option(f"tp {tp}", alt, floor)
        if opt:
            options.append(opt)
            if alt.fits:
                break
    if not kw["enforce_eager"]:
        eager = plan_memory(facts, gpu, **{**kw, "enforce_eager": True}, _suggest=False)
        opt = _option("--enforce-eager", eager, floor)
        if opt and (eager.fits or eager.max_model_len_suggested > suggested):
            options.append(opt)
    if facts.quant is None:
        q = plan_memory(int4_variant(facts), gpu, **kw, _suggest=False)
        opt = _option("a GPTQ-Int4 or AWQ model", q, floor)
        if opt:
            options.append(opt)
    if not options:
        options.append(f"a GPU with more memory, or more GPUs than {max(TP_CANDIDATES)}")
    if len(options) <= 2:
        return " or ".join(options)
    return ", ".join(options[:-1]) + ", or " + options[-1]
