"""Join run_matrix.py results from the H200 with matrix-h200.json into tests/data/gpu/measured-h200.json.

    python3 bench/gpu/to_measured_h200.py GPU.json RESULTS.json [RESULTS.json ...]   # here

GPU.json: {"name", "memory_bytes" (torch's total), "memory_mib", "compute_capability"} as the
device reported them. compare.py --write does the same for the H100 table (matrix.json); this one
keeps the fields the MoE runs added (the MoE kernel vLLM chose, the model runner, the graph estimate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from compare import KEEP  # noqa: E402

FIELDS = (
    *KEEP,
    "moe_method",
    "moe_fallback",
    "cudagraph_estimate_gib",
    "torch_compile_s",
    "model_runner",
    "max_num_batched_tokens",
    "initial_free_gib",
    "total_memory_gib",
    "returncode",
    "wall_s",
)
NOTES = {
    "h200-q3moe-awq-util0.9-graphs": "status timeout: the device call's deadline stopped it during CUDA graph "
    "capture, after torch.compile and after vLLM sized the KV cache (weights/KV/tokens and the graph estimate are "
    "final; no init_engine_s or graph pool figure)."
}


def main(gpu_file: str, *result_files: str) -> None:
    matrix = {c["id"]: c for c in json.loads((HERE / "matrix-h200.json").read_text())["cases"]}
    out = {}
    for path in result_files:
        doc = json.loads(Path(path).read_text())
        for r in doc["results"]:
            c = matrix[r["id"]]
            measured = {k: r[k] for k in FIELDS if k in r}
            if r["id"] in NOTES:
                measured["note"] = NOTES[r["id"]]
            out[r["id"]] = {
                "id": r["id"],
                "model": c["model"],
                "flags": c["flags"],
                "argv": c["argv"],
                "measured": measured,
                "device": doc.get("env", {}).get("nvidia_smi", ""),
            }
    order = list(matrix)
    data = {
        "about": "Real vLLM 0.26.0 `vllm serve` starts on one NVIDIA H200 (device machine, 2026-12-02), dummy "
        "weights, argv rendered by the vllm_service role's vllm_argv filter (bench/gpu/matrix.py --h200 -> "
        "matrix-h200.json), run by bench/gpu/run_matrix.py. MoE Qwen (Qwen3-30B-A3B fp16/AWQ/GPTQ/FP8, "
        "Qwen1.5-MoE-A2.7B) and Qwen3 dense; T4 budget emulated as util round(0.95 x T4 torch bytes / H200 torch "
        "bytes, 5) with batch 2048 / 256.",
        "gpu": json.loads(Path(gpu_file).read_text()),
        "vllm_version": "0.26.0",
        "cases": sorted(out.values(), key=lambda c: order.index(c["id"])),
    }
    (ROOT / "tests" / "data" / "gpu" / "measured-h200.json").write_text(json.dumps(data, indent=1) + "\n")
    print(len(data["cases"]), "cases written")


if __name__ == "__main__":
    main(*sys.argv[1:])
