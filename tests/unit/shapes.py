"""config.json of a Qwen2-architecture model from its shapes (facts.md's Qwen1.5 table), for tests."""

from __future__ import annotations


def qwen2_config(
    hidden: int,
    inter: int,
    layers: int,
    heads: int,
    kv_heads: int,
    vocab: int = 151936,
    *,
    tied: bool = False,
    torch_dtype: str = "bfloat16",
    quantization_config: dict | None = None,
) -> dict:
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
    }
    if quantization_config:
        config["quantization_config"] = quantization_config
    return config


def qwen3_moe_config(
    hidden: int = 2048,
    moe_inter: int = 768,
    layers: int = 48,
    heads: int = 32,
    kv_heads: int = 4,
    experts: int = 128,
    top_k: int = 8,
    vocab: int = 151936,
    *,
    torch_dtype: str = "bfloat16",
    quantization_config: dict | None = None,
) -> dict:
    """config.json of a Qwen3-MoE model (defaults: Qwen3-30B-A3B's shapes)."""
    config = {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": hidden,
        "intermediate_size": 6144,
        "moe_intermediate_size": moe_inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": 128,
        "num_experts": experts,
        "num_experts_per_tok": top_k,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "vocab_size": vocab,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "torch_dtype": torch_dtype,
    }
    if quantization_config:
        config["quantization_config"] = quantization_config
    return config
