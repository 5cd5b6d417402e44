"""The architectures the planner models, as data: one row each, with its layer shapes.

A row says how one decoder layer of the architecture is built in vLLM, as far as memory goes:
whether q/k/v carry biases, whether q and k have per-head RMSNorms (Qwen3), and whether the MLP is
a mixture of experts (and with a shared expert). model_facts.weight_parts reads these rows; no
other code branches on an architecture's name.

An architecture that is not a row here is never planned as if it were one: preflight refuses it
(rule ``architecture-modeled``), or, with ``allow_unmodeled``, plans nothing and says that memory
is unchecked. An architecture the pinned vLLM does not know at all is refused as vLLM refuses it
(rule ``architecture-supported``, vllm_architectures.py).
"""

from __future__ import annotations

from dataclasses import dataclass

M = "vllm/model_executor/models/"


@dataclass(frozen=True)
class Architecture:
    name: str  # config.json "architectures"[0]
    model_type: str  # config.json "model_type" of the published checkpoints
    moe: bool  # the MLP of (some) layers is a FusedMoE block of routed experts
    attention_bias: bool  # q/k/v projections have biases (unless config.json's attention_bias says otherwise)
    qk_norm: bool  # per-head RMSNorm on q and k: two head_dim weights per layer
    shared_expert: bool  # one always-on expert (shared_expert_intermediate_size) + a 1-output gate
    vllm_source: str
    # --enable-lora wraps embed_tokens and lm_head too (the model declares embedding_modules).
    lora_wraps_vocab: bool = False
    # embed_tokens, the final norm and lm_head are built on every pipeline stage, not only the
    # first/last (qwen2_moe.py / qwen3_moe.py build them unconditionally; qwen2.py uses
    # PPMissingLayer).
    ends_on_every_stage: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        # Qwen1.5 and Qwen2.5: Llama-like layers with q/k/v biases.
        Architecture("Qwen2ForCausalLM", "qwen2", False, True, False, False, M + "qwen2.py"),
        # Qwen3 dense: no biases (attention_bias false), q_norm/k_norm per head.
        Architecture("Qwen3ForCausalLM", "qwen3", False, False, True, False, M + "qwen3.py", lora_wraps_vocab=True),
        # Qwen1.5-MoE / Qwen2-MoE: routed experts plus a shared expert with a sigmoid gate.
        Architecture(
            "Qwen2MoeForCausalLM", "qwen2_moe", True, True, False, True, M + "qwen2_moe.py", ends_on_every_stage=True
        ),
        # Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): routed experts only, q_norm/k_norm.
        Architecture(
            "Qwen3MoeForCausalLM",
            "qwen3_moe",
            True,
            False,
            True,
            False,
            M + "qwen3_moe.py",
            lora_wraps_vocab=True,
            ends_on_every_stage=True,
        ),
    )
}


def architecture(name: str) -> Architecture | None:
    return ARCHITECTURES.get(name)
