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
    extra: dict = field(default_factory=dict)

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
    return QuantFacts(
        method=method,
        bits=bits,
        group_size=group_size,
        desc_act=bool(q.get("desc_act", False)),
        sym=q.get("sym"),
        zero_point=bool(zero_point) if zero_point is not None else None,
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
    facts = ModelFacts(
        architecture=(config.get("architectures") or [""])[0],
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
        # Qwen2 always has q/k/v biases; other architectures say so in config.
        attention_bias=bool(config.get("attention_bias", config.get("model_type") in ("qwen2", "qwen"))),
    )
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
    """The checkpoint's bytes by part, estimated from shapes; the planner splits them per rank."""

    layers: int
    per_layer: int  # one decoder layer, its two norms included
    layer_norms: int  # the two RMSNorms of one layer (replicated across tp ranks)
    embed: int
    lm_head: int  # 0 when tied to the embedding
    final_norm: int

    @property
    def total(self) -> int:
        return self.layers * self.per_layer + self.embed + self.lm_head + self.final_norm


def weight_parts(facts: ModelFacts) -> WeightParts:
    """Checkpoint bytes computed from shapes (decoder-only Llama/Qwen2 layout), by part.

    Quantized releases keep embeddings, lm_head, norms and biases in fp16; the attention and
    MLP projections are packed (see _linear_bytes).
    """
    dtype_bytes = checkpoint_dtype_bytes(facts)
    h, inter = facts.hidden_size, facts.intermediate_size
    q_out = facts.num_attention_heads * facts.head_dim
    kv_out = facts.num_key_value_heads * facts.head_dim
    lin = lambda k, n: _linear_bytes(k, n, facts.quant, dtype_bytes)  # noqa: E731
    norms = 2 * h * dtype_bytes  # two RMSNorms
    per_layer = (
        lin(h, q_out) + 2 * lin(h, kv_out) + lin(q_out, h)  # q, k, v, o
        + 2 * lin(h, inter) + lin(inter, h)  # gate, up, down
        + norms
        + ((q_out + 2 * kv_out) * dtype_bytes if facts.attention_bias else 0)
    )  # fmt: skip
    embed = facts.vocab_size * h * dtype_bytes
    return WeightParts(
        layers=facts.num_hidden_layers,
        per_layer=per_layer,
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
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    config = _read_json(os.path.join(model_dir, "config.json"))
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
