"""The GPU catalog and model facts (config parsing, safetensors headers, weight estimates)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import gpus
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.hub_configs import load_facts
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import (
    estimate_weight_bytes,
    facts_from_config,
    load_model_dir,
    weight_bytes,
)

GIB = 1024**3
REQUIRED = [
    "T4",
    "V100-16GB",
    "V100-32GB",
    "A10",
    "A10G",
    "L4",
    "L40S",
    "A100-40GB",
    "A100-80GB",
    "A800",
    "H100",
    "H800",
    "H20",
    "H200",
    "RTX 3090",
    "RTX 4090",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_catalog_has_the_gpus_operators_run(name):
    gpu = gpus.lookup(name)
    assert gpu["memory_mib"] > 10000 and gpus.cc_int(gpu) >= 70


@pytest.mark.parametrize(
    ("spelled", "short"),
    [
        ("Tesla T4", "T4"),
        ("tesla t4", "T4"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("Tesla V100-SXM2-16GB", "V100-16GB"),
        ("a100-40gb", "A100-40GB"),
    ],
)
def test_gpu_names_as_nvidia_smi_or_inventories_spell_them(spelled, short):
    assert gpus.lookup(spelled)["name"] == short


def test_h100_memory_is_the_measured_one():
    h100 = gpus.lookup("H100")
    assert h100["memory_mib"] == 81559 and gpus.usable_bytes(h100) == 85_017_493_504


def test_t4_memory_as_torch_sees_it_is_in_the_catalog():
    """The one copy of torch's T4 total (15,655,829,504 B = "14.58 GiB"), whatever the spelling."""
    for spelled in ("T4", "Tesla T4", {"name": "T4", "memory_mib": 15360}):
        assert gpus.usable_bytes(gpus.resolve(spelled)) == 15_655_829_504
    assert gpus.usable_bytes({"name": "T4", "memory_mib": 15360}) == 15_655_829_504  # not resolved


def test_gpus_without_a_torch_figure_take_nvidia_smi_less_450_mib():
    assert gpus.usable_bytes(gpus.lookup("L4")) == (23034 - 450) * gpus.MIB
    (b999,) = gpus.parse_nvidia_smi("0, NVIDIA B999, 99999, 10.0\n")
    assert gpus.usable_bytes(b999) == gpus.torch_bytes_from_smi(99999) == (99999 - 450) * gpus.MIB


def test_a_catalog_torch_figure_does_not_follow_a_name_to_another_memory_size():
    """ "NVIDIA H100 NVL" (94 GB) matches the catalog's H100 by name; the H100's measured torch total
    belongs to its 81559 MiB, so the NVL is planned from its own nvidia-smi figure."""
    (nvl,) = gpus.parse_nvidia_smi("0, NVIDIA H100 NVL, 95830, 9.0\n")
    assert nvl["name"] == "H100" and nvl["memory_mib"] == 95830
    assert gpus.usable_bytes(nvl) == (95830 - 450) * gpus.MIB
    assert gpus.usable_bytes({"name": "H100", "memory_mib": 95830}) == (95830 - 450) * gpus.MIB


def test_unknown_gpu_names_the_fix():
    with pytest.raises(gpus.UnknownGPUError, match="memory_mib"):
        gpus.lookup("Radeon 7900")
    assert gpus.lookup("NVIDIA A100-SXM4-80GB-MIG")["name"] == "A100-80GB"


def test_nvidia_smi_csv_is_parsed():
    out = gpus.parse_nvidia_smi("0, Tesla T4, 15360, 7.5\n1, NVIDIA B999, 99999, 10.0\n")
    assert [(g["index"], g["name"], g["compute_capability"]) for g in out] == [
        (0, "T4", "7.5"),
        (1, "NVIDIA B999", "10.0"),
    ]


def test_7b_fp16_estimate_matches_vllm_measured_weights():
    facts = load_facts("qwen/Qwen1.5-7B-Chat")
    assert abs(estimate_weight_bytes(facts) / GIB - 14.39) < 0.02  # facts.md: 14.39 GiB loaded


def test_tied_embeddings_count_once():
    tied = load_facts("qwen/Qwen1.5-0.5B-Chat")
    untied = facts_from_config(
        {
            **json.loads(Path(tied.source.split("(")[-1].rstrip(")"), "config.json").read_text()),
            "tie_word_embeddings": False,
        }
    )
    assert estimate_weight_bytes(untied) - estimate_weight_bytes(tied) == 151936 * 1024 * 2


def test_gptq_4bit_packs_weights_and_keeps_g_idx():
    gptq = load_facts("qwen/Qwen1.5-7B-Chat-GPTQ-Int4")
    awq = load_facts("qwen/Qwen1.5-7B-Chat-AWQ")
    assert gptq.quant.method == "gptq" and gptq.quant.group_size == 128 and gptq.quant.desc_act is False
    assert 5.3 < estimate_weight_bytes(gptq) / GIB < 5.6  # the published files are ~5.86 GB
    assert estimate_weight_bytes(gptq) > estimate_weight_bytes(awq)  # g_idx: 4 bytes per input


def _write_safetensors(path: Path, tensors: dict):
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def _tiny_config(d: Path, **extra):
    (d / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_size": 256,
                "intermediate_size": 512,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "vocab_size": 512,
                "max_position_embeddings": 512,
                "torch_dtype": "bfloat16",
                **extra,
            }
        )
    )


def test_weight_bytes_from_sharded_safetensors_headers(tmp_path):
    _tiny_config(tmp_path)
    _write_safetensors(tmp_path / "a.safetensors", {"x": ("BF16", [10, 10], 200)})
    _write_safetensors(tmp_path / "b.safetensors", {"y": ("F32", [5], 20), "z": ("BF16", [3], 6)})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "metadata": {"total_size": 999},
                "weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"},
            }
        )
    )
    facts = load_model_dir(str(tmp_path))
    assert weight_bytes(facts) == 226 and facts.weight_bytes_source == "safetensors headers"


def test_weight_bytes_from_index_total_when_shards_are_absent(tmp_path):
    _tiny_config(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 999}, "weight_map": {"x": "a.safetensors"}})
    )
    assert weight_bytes(load_model_dir(str(tmp_path / "config.json"))) == 999


def test_separate_quant_config_files_are_read(tmp_path):
    _tiny_config(tmp_path)
    (tmp_path / "quant_config.json").write_text(
        json.dumps({"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    )
    q = load_model_dir(str(tmp_path)).quant
    assert (q.method, q.bits, q.group_size, q.zero_point) == ("awq", 4, 64, True)


def test_older_gptq_quantize_config_without_method(tmp_path):
    _tiny_config(tmp_path)
    (tmp_path / "quantize_config.json").write_text(
        json.dumps({"bits": 4, "group_size": 128, "desc_act": True, "sym": True})
    )
    q = load_model_dir(str(tmp_path)).quant
    assert (q.method, q.desc_act, q.sym) == ("gptq", True, True)


def test_rope_scaling_extends_the_supported_length():
    f = facts_from_config(
        {
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "vocab_size": 10,
            "max_position_embeddings": 32768,
            "rope_scaling": {"type": "yarn", "factor": 4.0},
        }
    )
    assert f.max_supported_len == 131072


def test_the_driver_column_is_kept_when_nvidia_smi_gives_it():
    # gpu_facts asks for driver_version too: the probe's start records keep it (calibration.py).
    t4, old = gpus.parse_nvidia_smi("0, Tesla T4, 15360, 7.5, 550.54.15\n1, Tesla T4, 15360, 7.5\n")
    assert (t4["name"], t4["driver_version"], t4["memory_mib"]) == ("T4", "550.54.15", 15360)
    assert "driver_version" not in old
