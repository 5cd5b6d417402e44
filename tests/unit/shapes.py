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
