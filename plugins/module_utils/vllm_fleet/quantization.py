"""`--quantization` against the checkpoint, as vLLM checks it, and the weights vLLM then builds.

vLLM 0.32.0 (vllm/config/model.py ModelConfig._verify_quantization): a checkpoint with a
``quantization_config`` names its method; ``--quantization`` may only name that method or an
override that claims it (auto_gptq.py / auto_awq.py ``override_quantization_method``: "gptq",
"gptq_marlin", "auto_gptq", "marlin" for a GPTQ checkpoint; moe_wna16.py for "moe_wna16"), else
"Quantization method specified in the model config (X) does not match the quantization method
specified in the `quantization` argument (Y)". On a checkpoint without one, a method that reads
its parameters from a file refuses at load ("Cannot find the config file for X":
model_loader/weight_utils.py get_quant_config); the online methods (config/quantization.py
``_ONLINE_SHORTHANDS``, and "fp8", deprecated for "fp8_per_tensor") quantize the fp16/bf16
weights while loading.

Pure: plain data in, plain data out.
"""

from __future__ import annotations

from dataclasses import replace

from .model_facts import ModelFacts, QuantFacts

Q = "vllm/model_executor/layers/quantization/"

# Checkpoint method -> the --quantization values vLLM accepts for it (besides the method itself).
ACCEPTED_FOR_CHECKPOINT = {
    "gptq": ("gptq", "gptq_marlin", "auto_gptq", "marlin", "moe_wna16"),
    "awq": ("awq", "awq_marlin", "auto_awq", "marlin", "moe_wna16"),
    "fp8": ("fp8",),
}

# Online methods the planner models on an unquantized checkpoint: every linear layer and every
# routed expert is stored in fp8 (1 byte per weight; the scales are per tensor, channel or
# 128x128 block, < 0.01 % of the bytes); embeddings, lm_head, norms and the MoE router stay in
# the model dtype (config/quantization.py _ONLINE_SHORTHANDS: linear + moe specs;
# online/base.py get_min_capability 75: on cc 7.5-8.8 the fp8 weights run through Marlin W8A16).
ONLINE_FP8 = ("fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel")
ONLINE_MIN_CAPABILITY = 75

# Online methods vLLM has that the planner does not model (their weight bytes differ from fp8's or
# apply to experts only): refused by quantization-modeled unless allow_unmodeled.
ONLINE_UNMODELED = ("mxfp8", "mxfp4", "int8_per_channel_weight_only", "nvfp4_per_token", "online")

# Methods that need their parameters in a checkpoint file (get_config_filenames() non-empty).
NEEDS_CHECKPOINT = (
    "awq",
    "auto_awq",
    "awq_marlin",
    "gptq",
    "auto_gptq",
    "gptq_marlin",
    "marlin",
    "moe_wna16",
    "compressed-tensors",
    "modelopt",
    "modelopt_fp4",
    "modelopt_mxfp8",
    "modelopt_mixed",
    "quark",
    "inc",
    "fbgemm_fp8",
    "fp_quant",
    "humming",
    "gpt_oss_mxfp4",
    "deepseek_v4_fp8",
)


def checkpoint_method(facts: ModelFacts) -> str | None:
    return facts.quant.method if facts.quant else None


def mismatch(facts: ModelFacts, asked: str | None) -> dict | None:
    """vLLM's refusal of ``--quantization asked`` for this checkpoint, as numbers; None if accepted."""
    if not asked:
        return None
    method = checkpoint_method(facts)
    if method is not None:
        accepted = ACCEPTED_FOR_CHECKPOINT.get(method, (method,))
        if asked == method or asked in accepted:
            return None
        return {
            "asked": asked,
            "method": method,
            "vllm": f"Quantization method specified in the model config ({method}) does not match the "
            f"quantization method specified in the `quantization` argument ({asked})",
            "fix": f"remove --quantization (vLLM reads {method} from the checkpoint)",
        }
    if asked in ONLINE_FP8 or asked in ONLINE_UNMODELED:
        return None
    return {
        "asked": asked,
        "method": "none (an unquantized checkpoint)",
        "vllm": f"Cannot find the config file for {asked}",
        "fix": f"remove --quantization, use a checkpoint quantized with {asked}, or --quantization "
        "fp8_per_tensor to quantize at load",
    }


def unmodeled(facts: ModelFacts, asked: str | None) -> bool:
    """An accepted online method whose weights the planner does not compute."""
    return bool(asked) and checkpoint_method(facts) is None and asked in ONLINE_UNMODELED


def online_fp8(facts: ModelFacts, asked: str | None) -> bool:
    return bool(asked) and checkpoint_method(facts) is None and asked in ONLINE_FP8


def loaded_facts(facts: ModelFacts, asked: str | None) -> ModelFacts:
    """The facts of the weights vLLM builds: an unquantized checkpoint with an online fp8 method
    becomes an 8-bit one, its bytes computed from shapes (its safetensors hold fp16/bf16)."""
    if not online_fp8(facts, asked):
        return facts
    return replace(
        facts,
        quant=QuantFacts(method="fp8", bits=8, group_size=-1),
        weight_bytes=None,
        weight_bytes_source=f"estimated from config shapes (--quantization {asked} at load)",
    )
