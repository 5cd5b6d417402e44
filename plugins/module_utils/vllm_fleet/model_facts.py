"""What preflight and the planner need to know about a model, read from its config files.

The facts come from the checkpoint's own ``config.json`` (plus its quantization config), never
from the model's name: Qwen re-published quantized releases with zero-padded MLPs, so two
revisions of "the same" model can get different verdicts.

Pure parsing lives here (``facts_from_config``); ``load_model_dir`` is the one filesystem edge.
Safetensors sizes come from the files' headers only (8-byte length + JSON), never the tensors.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field, replace

from .architectures import architecture

# The quantization files older GPTQ/AWQ releases ship beside config.json (vLLM reads the same
# names: vllm/model_executor/layers/quantization/auto_gptq.py and auto_awq.py
# get_config_filenames()).
QUANT_CONFIG_FILES = ("quantize_config.json", "quant_config.json")
SAFETENSORS_INDEX = "model.safetensors.index.json"

# Bytes per element of the safetensors dtypes and torch_dtype names we meet.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
}


@dataclass(frozen=True)
class QuantFacts:
    # The checkpoint's method name ("gptq", "awq", "fp8", ...), not the kernel vLLM picks for it
    # (vLLM runs a "gptq" checkpoint through Marlin where shapes allow).
    method: str
    bits: int
    group_size: int
    desc_act: bool = False
    sym: bool | None = None
    zero_point: bool | None = None
    # Module names the checkpoint leaves unquantized (modules_to_not_convert; e.g. the MoE router
    # "gate", "lm_head"); vLLM builds those layers unquantized (quantization/utils/quant_utils.py
    # is_layer_skipped).
    modules_not_converted: tuple = ()
    # Block-wise FP8: [block_n, block_k] (Qwen3-*-FP8: [128, 128]); None for per-tensor/channel.
    weight_block_size: tuple | None = None

    @property
    def pack_factor(self) -> int:
        """Values packed per int32 (8 for 4-bit): the unit a packed dimension must divide by."""
        return 32 // self.bits if self.bits and 32 % self.bits == 0 else 1


@dataclass(frozen=True)
class ModelFacts:
    architecture: str
    model_type: str
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rope_scaling: dict | None
    torch_dtype: str
    tie_word_embeddings: bool
    quant: QuantFacts | None
    weight_bytes: int | None
    weight_bytes_source: str
    name: str = ""
    source: str = ""
    attention_bias: bool = True
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    # Mixture of experts (vllm/model_executor/models/qwen2_moe.py, qwen3_moe.py): 0 experts = dense.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE's always-on expert; 0 = none
    mlp_only_layers: tuple = ()
    decoder_sparse_step: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, index: int) -> bool:
        """Whether decoder layer ``index`` has routed experts instead of a dense MLP, as vLLM
        decides it (qwen2_moe.py / qwen3_moe.py DecoderLayer: not in mlp_only_layers, and
        (index + 1) % decoder_sparse_step == 0)."""
        step = self.decoder_sparse_step or 1
        return self.is_moe and index not in self.mlp_only_layers and (index + 1) % step == 0

    @property
    def sparse_layers(self) -> int:
        return sum(self.is_sparse_layer(i) for i in range(self.num_hidden_layers))

    @property
    def rope_factor(self) -> float:
        factor = (self.rope_scaling or {}).get("factor")
        return float(factor) if factor else 1.0

    @property
    def max_supported_len(self) -> int:
        """The longest --max-model-len vLLM derives from the config (positions x rope factor)."""
        return int(self.max_position_embeddings * self.rope_factor)

    def to_dict(self) -> dict:
        return asdict(self)


class ModelConfigError(ValueError):
    """A config that cannot describe a servable model (missing or contradictory fields)."""


def _first(config: dict, *keys, default=None):
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def parse_quant(config: dict, quant_file: dict | None = None) -> QuantFacts | None:
    """QuantFacts from ``quantization_config`` in config.json, else a separate quant file.

    GPTQ's quantize_config.json spells bits/group_size/desc_act/sym; AutoAWQ's quant_config.json
    spells w_bit/q_group_size/zero_point. Older files carry no quant_method: infer it.
    """
    q = config.get("quantization_config") or quant_file
    if not q:
        return None
    method = str(_first(q, "quant_method", "method", default="")).lower()
    if not method:
        method = "awq" if ("w_bit" in q or "zero_point" in q or "version" in q) else "gptq"
    bits = int(_first(q, "bits", "w_bit", "num_bits", default=8 if method.startswith("fp8") else 4))
    group_size = int(_first(q, "group_size", "q_group_size", default=-1))
    zero_point = q.get("zero_point")
    block = q.get("weight_block_size")
    return QuantFacts(
        method=method,
        bits=bits,
        group_size=group_size,
        desc_act=bool(q.get("desc_act", False)),
        sym=q.get("sym"),
        zero_point=bool(zero_point) if zero_point is not None else None,
        modules_not_converted=tuple(q.get("modules_to_not_convert") or ()),
        weight_block_size=tuple(int(b) for b in block) if block else None,
    )


def facts_from_config(
    config: dict,
    quant_file: dict | None = None,
    *,
    name: str = "",
    source: str = "",
    weight_bytes: int | None = None,
    weight_bytes_source: str = "",
) -> ModelFacts:
    """ModelFacts from a parsed config.json (and optional separate quant config). Pure."""
    if "text_config" in config and "hidden_size" not in config:
        config = {**config["text_config"], "architectures": config.get("architectures")}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in config]
    if missing:
        raise ModelConfigError(f"config.json of {name or 'the model'} lacks {', '.join(missing)}")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    arch_name = (config.get("architectures") or [""])[0]
    arch = architecture(arch_name)
    # q/k/v biases: config.json's attention_bias when it says; else the architecture's layout.
    default_bias = arch.attention_bias if arch else config.get("model_type") in ("qwen2", "qwen")
    num_experts = int(_first(config, "num_experts", "num_local_experts", default=0) or 0)
    facts = ModelFacts(
        architecture=arch_name,
        model_type=config.get("model_type", ""),
        num_hidden_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        intermediate_size=int(_first(config, "intermediate_size", "ffn_hidden_size", default=4 * hidden)),
        num_attention_heads=heads,
        num_key_value_heads=int(_first(config, "num_key_value_heads", default=heads)),
        head_dim=int(_first(config, "head_dim", default=hidden // heads)),
        vocab_size=int(config["vocab_size"]),
        max_position_embeddings=int(_first(config, "max_position_embeddings", "seq_length", default=2048)),
        rope_scaling=config.get("rope_scaling"),
        torch_dtype=str(_first(config, "torch_dtype", "dtype", default="float32")),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        quant=parse_quant(config, quant_file),
        weight_bytes=weight_bytes,
        weight_bytes_source=weight_bytes_source if weight_bytes is not None else "",
        name=name,
        source=source,
        attention_bias=bool(config.get("attention_bias", default_bias)),
        qk_norm=bool(arch and arch.qk_norm),
        num_experts=num_experts,
        num_experts_per_tok=int(_first(config, "num_experts_per_tok", default=0) or 0),
        moe_intermediate_size=int(_first(config, "moe_intermediate_size", default=0) or 0),
        shared_expert_intermediate_size=int(
            _first(config, "shared_expert_intermediate_size", default=0) if arch and arch.shared_expert else 0
        ),
        mlp_only_layers=tuple(int(i) for i in config.get("mlp_only_layers") or ()),
        decoder_sparse_step=int(_first(config, "decoder_sparse_step", default=1) or 1),
    )
    if facts.is_moe and not facts.moe_intermediate_size:
        raise ModelConfigError(f"config.json of {name or 'the model'} has num_experts but no moe_intermediate_size")
    if weight_bytes is None:
        facts = replace(facts, weight_bytes_source="estimated from config shapes")
    return facts


# --- weight bytes ---------------------------------------------------------------------------


def _linear_bytes(k_in: int, n_out: int, quant: QuantFacts | None, dtype_bytes: int) -> int:
    """Bytes of one linear layer's weight as the checkpoint stores it."""
    if quant is None or quant.method not in ("gptq", "awq"):
        per = 1 if quant is not None and quant.bits == 8 else dtype_bytes
        return k_in * n_out * per
    group = quant.group_size if quant.group_size > 0 else k_in
    groups = math.ceil(k_in / group)
    qweight = k_in * n_out * quant.bits // 8  # int32 words each holding 32/bits values
    scales = groups * n_out * 2  # fp16 scale per group and output column
    qzeros = groups * n_out * quant.bits // 8  # zero points, packed like the weights
    g_idx = k_in * 4 if quant.method == "gptq" else 0  # GPTQ stores an int32 group index per input
    return qweight + scales + qzeros + g_idx


def checkpoint_dtype_bytes(facts: ModelFacts) -> int:
    """Bytes per element of the tensors the checkpoint keeps unpacked (embeddings, lm_head, norms,
    biases): fp16 in quantized releases, else the checkpoint's torch_dtype."""
    return 2 if facts.quant is not None else DTYPE_BYTES.get(facts.torch_dtype, 2)


def kv_heads_per_rank(facts: ModelFacts, tp: int) -> int:
    """KV heads each tp rank holds: split when they divide, replicated (one each) when tp exceeds
    them (vllm/model_executor/layers/linear.py QKVParallelLinear)."""
    return max(1, facts.num_key_value_heads // tp)


@dataclass(frozen=True)
class WeightParts:
    """The checkpoint's bytes by part, estimated from shapes; the planner splits them per rank.

    Per-layer parts are for one layer of each kind: every layer has ``attention`` and ``norms``;
    a dense layer has ``mlp``; a sparse (MoE) layer has ``experts`` (all routed experts),
    ``router`` (the gate, and Qwen2-MoE's shared_expert_gate) and ``shared_expert``.
    """

    layers: int
    sparse_layers: int
    attention: int  # q, k, v, o (+ q/k/v biases): split over tp
    kv_proj: int  # the k and v projections alone (replicated when tp > KV heads)
    mlp: int  # gate, up, down of a dense layer: split over tp
    experts: int  # every routed expert of a sparse layer: split over tp (intermediate) or ep (experts)
    router: int  # replicated on every rank, never quantized
    shared_expert: int  # split over tp like a dense MLP
    layer_norms: int  # the two RMSNorms (+ q/k norms) of one layer: replicated
    embed: int
    lm_head: int  # 0 when tied to the embedding
    final_norm: int

    @property
    def dense_layers(self) -> int:
        return self.layers - self.sparse_layers

    @property
    def sparse_layer(self) -> int:
        return self.attention + self.layer_norms + self.experts + self.router + self.shared_expert

    @property
    def dense_layer(self) -> int:
        return self.attention + self.layer_norms + self.mlp

    @property
    def total(self) -> int:
        return (
            self.dense_layers * self.dense_layer
            + self.sparse_layers * self.sparse_layer
            + self.embed
            + self.lm_head
            + self.final_norm
        )


def weight_parts(facts: ModelFacts) -> WeightParts:
    """Checkpoint bytes computed from shapes (decoder-only Qwen2/Qwen3 layouts, dense or MoE).

    Quantized releases keep embeddings, lm_head, norms, biases and the MoE router in fp16; the
    attention, MLP and expert projections are packed (see _linear_bytes). The router ("gate", a
    ReplicatedLinear(hidden, num_experts)) is built unquantized in vLLM's qwen2_moe.py/qwen3_moe.py
    and left out of quantization by the published checkpoints (modules_to_not_convert).
    """
    dtype_bytes = checkpoint_dtype_bytes(facts)
    h = facts.hidden_size
    q_out = facts.num_attention_heads * facts.head_dim
    kv_out = facts.num_key_value_heads * facts.head_dim

    def lin(k, n):
        return _linear_bytes(k, n, facts.quant, dtype_bytes)

    def mlp(inter):  # gate, up, down
        return 2 * lin(h, inter) + lin(inter, h) if inter else 0

    kv_proj = 2 * lin(h, kv_out)
    attention = (
        lin(h, q_out) + kv_proj + lin(q_out, h) + ((q_out + 2 * kv_out) * dtype_bytes if facts.attention_bias else 0)
    )
    norms = 2 * h * dtype_bytes + (2 * facts.head_dim * dtype_bytes if facts.qk_norm else 0)
    shared = facts.shared_expert_intermediate_size
    embed = facts.vocab_size * h * dtype_bytes
    return WeightParts(
        layers=facts.num_hidden_layers,
        sparse_layers=facts.sparse_layers,
        attention=attention,
        kv_proj=kv_proj,
        mlp=mlp(facts.intermediate_size),
        experts=facts.num_experts * mlp(facts.moe_intermediate_size),
        router=(h * facts.num_experts + (h if shared else 0)) * dtype_bytes if facts.is_moe else 0,
        shared_expert=mlp(shared),
        layer_norms=norms,
        embed=embed,
        lm_head=0 if facts.tie_word_embeddings else embed,
        final_norm=h * dtype_bytes,
    )


def estimate_weight_bytes(facts: ModelFacts) -> int:
    """Checkpoint bytes computed from shapes (weight_parts, summed)."""
    return weight_parts(facts).total


def weight_bytes(facts: ModelFacts) -> int:
    """The checkpoint's bytes: from safetensors headers when known, else estimated."""
    return facts.weight_bytes if facts.weight_bytes is not None else estimate_weight_bytes(facts)


# --- the filesystem edge --------------------------------------------------------------------


def safetensors_header_bytes(path: str) -> int:
    """Sum of tensor bytes in one .safetensors file, reading only its header."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        total += end - start
    return total


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ModelConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path} is not a JSON object")
    return data


def weight_bytes_from_dir(model_dir: str) -> tuple[int | None, str]:
    """(bytes, how we know) from the safetensors files, or the shard index's total_size."""
    index = _read_json(os.path.join(model_dir, SAFETENSORS_INDEX))
    if index is not None:
        shards = sorted(set(index.get("weight_map", {}).values()))
        paths = [os.path.join(model_dir, s) for s in shards]
        if shards and all(os.path.isfile(p) for p in paths):
            return sum(safetensors_header_bytes(p) for p in paths), "safetensors headers"
        total = (index.get("metadata") or {}).get("total_size")
        if total:
            return int(total), "safetensors index total_size"
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(single):
        return safetensors_header_bytes(single), "safetensors headers"
    return None, ""


def load_model_dir(path: str, *, name: str = "") -> ModelFacts:
    """ModelFacts from a model directory, or from a path to its config.json."""
    model_dir = os.path.dirname(path) if os.path.isfile(path) else path
    config_path = path if os.path.isfile(path) else os.path.join(model_dir, "config.json")
    config = _read_json(config_path)
    if config is None:
        raise ModelConfigError(f"no config.json in {model_dir}")
    quant_file = None
    for fname in QUANT_CONFIG_FILES:
        quant_file = _read_json(os.path.join(model_dir, fname))
        if quant_file is not None:
            break
    wbytes, wsource = weight_bytes_from_dir(model_dir)
    return facts_from_config(
        config,
        quant_file,
        name=name or os.path.basename(os.path.normpath(model_dir)),
        source=model_dir,
        weight_bytes=wbytes,
        weight_bytes_source=wsource,
    )
