"""The GPU-truth matrix: which `vllm serve` starts to measure, rendered the way the role renders them.

Run HERE (controller side, needs ansible for the filter): writes bench/gpu/matrix.json, which
bench/gpu/run_matrix.py executes on the device machine.

Each case is an inventory model (a flags dict, as docs/inventory.md writes it) rendered through
the vllm_service role's own `vllm_argv` filter (plugins/filter/vllm_flags.py, i.e.
serve_args.normalize + to_argv) into the unit's ExecStart argv:

    <bin>/vllm serve <model dir> --host <addr> --port <port> <flags | vllm_argv>

The device runner swaps only the binary path (the device has no `vllm` console script, so it runs
vllm.entrypoints.cli.main:main, which is what that script calls), the model dir, host and port.

A 16 GB T4 is emulated on the H100 by its budget: --gpu-memory-utilization u with
u x 79.18 GiB (H100, as torch sees it) = 0.95 x 14.58 GiB (T4, as torch sees it), plus the batch
defaults the server picks on a GPU under 70 GiB (--max-num-batched-tokens 2048 --max-num-seqs
256). The model's shapes, dtype and kernels are the H100's: what differs on a real T4 (attention
backend, kernel workspaces, CUDA context) is not emulated; docs/gpu-truth.md says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "filter"))
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import gpus  # noqa: E402
from vllm_flags import vllm_argv  # noqa: E402  (the role's filter: normalize + to_argv)

H100_TORCH_BYTES = 85_017_493_504
T4_TORCH_BYTES = gpus.usable_bytes({"name": "T4", "memory_mib": 15360})
# The old recipe's --gpu-memory-utilization 0.95 on a T4, as a fraction of the H100.
T4_UTIL = round(0.95 * T4_TORCH_BYTES / H100_TORCH_BYTES, 5)
T4_BATCH = {"max-num-batched-tokens": 2048, "max-num-seqs": 256}  # server defaults below 70 GiB

MODELS = {
    "0.5b": "Qwen1.5-0.5B-Chat",
    "1.8b": "Qwen1.5-1.8B-Chat",
    "4b": "Qwen1.5-4B-Chat",
    "7b": "Qwen1.5-7B-Chat",
    "7b-gptq": "Qwen1.5-7B-Chat-GPTQ-Int4",
    "7b-awq": "Qwen1.5-7B-Chat-AWQ",
    "14b": "Qwen1.5-14B-Chat",
    "14b-gptq": "Qwen1.5-14B-Chat-GPTQ-Int4",
    "14b-awq": "Qwen1.5-14B-Chat-AWQ",
    "32b": "Qwen1.5-32B-Chat",
    "32b-gptq": "Qwen1.5-32B-Chat-GPTQ-Int4",
    # H200 group (cases_h200): MoE and Qwen3 dense
    "q3moe": "Qwen3-30B-A3B",
    "q3moe-awq": "Qwen3-30B-A3B-AWQ",
    "q3moe-gptq": "Qwen3-30B-A3B-GPTQ-Int4",
    "q3moe-fp8": "Qwen3-30B-A3B-FP8",
    "q15moe": "Qwen1.5-MoE-A2.7B-Chat",
    "q15moe-gptq": "Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4",
    "q3-8b": "Qwen3-8B",
    "q3-4b": "Qwen3-4B",
}

# The lent kind since 2026-12-02: one H200 (torch total 150,109,880,320 B = 139.80 GiB).
H200_TORCH_BYTES = 150_109_880_320
T4_UTIL_H200 = round(0.95 * T4_TORCH_BYTES / H200_TORCH_BYTES, 5)


def _case(cid: str, model: str, flags: dict, *, probe: bool = False, note: str = "") -> dict:
    name = MODELS[model]
    inventory_flags = {
        "dtype": "half",  # what preflight sets on a T4 for these bf16 checkpoints (dtype-auto-to-half)
        "load-format": "dummy",
        "skip-tokenizer-init": True,
        "served-model-name": [name],
        **flags,
    }
    argv = ["BIN/vllm", "serve", f"MODELS/{name}", "--host", "127.0.0.1", "--port", "PORT", *vllm_argv(inventory_flags)]
    return {"id": cid, "model": name, "flags": inventory_flags, "argv": argv, "probe": probe, "note": note}


def cases() -> list[dict]:
    out = []
    # 1. T4 budget (0.95 x a T4), eager, the model's own max-model-len (32768): starts or the
    #    refusal vLLM words ("No available memory ..." / "estimated maximum model length is N").
    t4 = {"gpu-memory-utilization": T4_UTIL, **T4_BATCH, "enforce-eager": True}
    for m in ("0.5b", "1.8b", "4b", "7b", "7b-gptq", "7b-awq", "14b-gptq", "14b-awq", "32b-gptq"):
        out.append(_case(f"t4-{m}-eager", m, t4))
    out.append(_case("t4-7b-gptq-eager-len8192", "7b-gptq", {**t4, "max-model-len": 8192}, probe=True))
    out.append(_case("t4-14b-gptq-eager-len2048", "14b-gptq", {**t4, "max-model-len": 2048}))
    # 2. H100 server defaults (8192 / 1024), util 0.9, eager: weights and KV across sizes.
    for m in ("0.5b", "1.8b", "4b", "7b-gptq", "7b-awq", "14b", "14b-gptq", "14b-awq", "32b-gptq", "32b"):
        out.append(_case(f"h100-{m}-util0.9-eager", m, {"gpu-memory-utilization": 0.9, "enforce-eager": True}))
    out.append(
        _case(
            "h100-0.5b-util0.9-eager-seqs256",
            "0.5b",
            {"gpu-memory-utilization": 0.9, "enforce-eager": True, "max-num-seqs": 256},
            note="logit term slope: 256 sampler rows instead of 1024",
        )
    )
    # 3. CUDA graphs (no --enforce-eager: torch.compile + graph capture, what a unit runs by default).
    out.append(_case("h100-0.5b-util0.9-graphs", "0.5b", {"gpu-memory-utilization": 0.9}, probe=True))
    out.append(
        _case(
            "t4-7b-gptq-graphs-len8192",
            "7b-gptq",
            {"gpu-memory-utilization": T4_UTIL, **T4_BATCH, "max-model-len": 8192},
        )
    )
    out.append(_case("h100-32b-gptq-util0.9-batch2048-graphs", "32b-gptq", {"gpu-memory-utilization": 0.9, **T4_BATCH}))
    out.append(
        _case(
            "t4-14b-awq-graphs-len2048",
            "14b-awq",
            {"gpu-memory-utilization": T4_UTIL, **T4_BATCH, "max-model-len": 2048},
        )
    )
    # 4. Tensor parallel, 2 real GPUs (issue 7; needs nvidia-h100-x2): the cases the rules table
    #    decides by tp, each GPU at the T4 budget. 14B AWQ splits down_proj's 13696 inputs into
    #    6848 = 53.5 groups of 128 (refused by the rules); 14B GPTQ is padded to 14336 (aligned:
    #    memory decides); 7B AWQ 11008 / 2 = 43 groups (accepted, served); 7B fp16 and 32B GPTQ
    #    refuse 32768 with an estimated length the planner predicts.
    tp2 = {**t4, "tensor-parallel-size": 2}
    out.append(_case("tp2-t4-14b-awq-eager", "14b-awq", tp2))
    out.append(_case("tp2-t4-7b-awq-eager", "7b-awq", tp2, probe=True))
    out.append(_case("tp2-t4-14b-gptq-eager", "14b-gptq", tp2))
    out.append(_case("tp2-t4-32b-gptq-eager", "32b-gptq", tp2))
    out.append(_case("tp2-t4-7b-eager", "7b", tp2))
    return out


def cases_h200() -> list[dict]:
    """MoE Qwen (Qwen3-30B-A3B fp16/AWQ/GPTQ/FP8, Qwen1.5-MoE-A2.7B) and Qwen3 dense on one H200,
    in priority order; the T4 budget is T4_UTIL_H200 of the H200 with the T4 batch defaults."""
    eager = {"enforce-eager": True}
    t4 = {"gpu-memory-utilization": T4_UTIL_H200, **T4_BATCH, **eager}
    u09 = {"gpu-memory-utilization": 0.9, **eager}
    return [
        _case("h200-q3moe-util0.9-eager", "q3moe", u09),
        _case("h200-q3moe-awq-util0.9-eager", "q3moe-awq", u09),
        _case("h200-q3moe-gptq-util0.9-eager", "q3moe-gptq", u09),
        _case(
            "h200-q3moe-awq-util0.15-len8192-eager",
            "q3moe-awq",
            {"gpu-memory-utilization": 0.15, **T4_BATCH, "max-model-len": 8192, **eager},
            note="a small budget that starts: KV numbers at a small budget",
        ),
        _case("t4-q3moe-awq-eager", "q3moe-awq", t4),
        _case("h200-q15moe-util0.9-eager", "q15moe", u09),
        _case("t4-q15moe-gptq-eager-len8192", "q15moe-gptq", {**t4, "max-model-len": 8192}),
        _case("t4-q3-8b-eager", "q3-8b", t4),
        _case("t4-q3-4b-eager-len8192", "q3-4b", {**t4, "max-model-len": 8192}),
        _case("h200-q3moe-fp8-util0.9-eager", "q3moe-fp8", u09),
        _case("h200-q3moe-awq-util0.9-graphs", "q3moe-awq", {"gpu-memory-utilization": 0.9}),
    ]


def write(name: str, about: str, gpu_key: str, gpu_bytes: int, util: float, rendered: list[dict]) -> None:
    data = {"about": about, gpu_key: gpu_bytes, "t4_torch_bytes": T4_TORCH_BYTES, "t4_util": util, "cases": rendered}
    path = Path(__file__).with_name(name)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(rendered)} cases -> {path} (T4 budget = util {util} of the {gpu_key.split('_')[0].upper()})")


def main() -> None:
    if "--h200" in sys.argv[1:]:
        write(
            "matrix-h200.json",
            "Rendered by bench/gpu/matrix.py --h200 through the vllm_service role's vllm_argv filter; run by "
            "bench/gpu/run_matrix.py --matrix bench/gpu/matrix-h200.json on the device machine (one H200).",
            "h200_torch_bytes",
            H200_TORCH_BYTES,
            T4_UTIL_H200,
            cases_h200(),
        )
        return
    write(
        "matrix.json",
        "Rendered by bench/gpu/matrix.py through the vllm_service role's vllm_argv filter; run by "
        "bench/gpu/run_matrix.py on the device machine.",
        "h100_torch_bytes",
        H100_TORCH_BYTES,
        T4_UTIL,
        cases(),
    )


if __name__ == "__main__":
    main()
