"""Turn device results into the committed test data, and print the planner against them.

    .venv/bin/python bench/gpu/compare.py RESULTS.json [RESULTS2.json ...] [--write]
    .venv/bin/python bench/gpu/compare.py --layers LAYER_CHECK.json [--write]

Runs HERE (no GPU). RESULTS are run_matrix.py's results.json files (one per device call);
--write stores them, joined with each case's matrix entry, as tests/data/gpu/measured.json
(and --layers as tests/data/gpu/layer_check.json), which tests/unit/test_gpu_truth.py holds the
planner and the rules table to. Without --write it only prints the comparison table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config  # noqa: E402
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import kwargs_from_flags, plan_memory  # noqa: E402

DATA = ROOT / "tests" / "data" / "gpu"
H100 = {"name": "H100", "memory_bytes": 85_017_493_504, "memory_mib": 81559, "compute_capability": "9.0"}

KEEP = (
    "status",
    "weights_gib",
    "kv_gib",
    "kv_tokens",
    "max_concurrency",
    "estimated_max_model_len",
    "error",
    "init_engine_s",
    "compile_s",
    "wall_to_init_s",
    "healthy_after_s",
    "completion_tokens",
    "non_kv_gib",
    "torch_peak_increase_gib",
    "non_torch_increase_gib",
    "profile_weights_gib",
    "cudagraph_equiv_util",
    "graph_pool_gib",
    "linear_kernel",
    "attention_backend",
    "last_error_line",
    "first_error_line",
)


def plan_kwargs(flags: dict) -> dict:
    return kwargs_from_flags(flags)


def config_of(model: str) -> dict:
    return json.loads((ROOT / "model_configs" / "qwen" / model / "config.json").read_text())


def predict(case: dict):
    facts = facts_from_config(config_of(case["model"]), name=case["model"])
    return plan_memory(facts, H100, vllm_version="0.26.0", **plan_kwargs(case["flags"]))


def err(p, m):
    return None if m in (None, 0) or p is None else round(100.0 * (p - m) / abs(m), 2)


def build_cases(result_files: list[Path]) -> list[dict]:
    matrix = {c["id"]: c for c in json.loads((ROOT / "bench" / "gpu" / "matrix.json").read_text())["cases"]}
    out: dict[str, dict] = {}
    for path in result_files:
        doc = json.loads(path.read_text())
        for r in doc["results"]:
            case = matrix[r["id"]]
            out[r["id"]] = {
                "id": r["id"],
                "model": case["model"],
                "flags": case["flags"],
                "argv": case["argv"],
                # nvidia-smi's lines: one per GPU of the machine the case ran on
                "device": doc.get("env", {}).get("nvidia_smi", ""),
                "measured": {k: r[k] for k in KEEP if k in r},
            }
    order = list(matrix)
    return sorted(out.values(), key=lambda c: order.index(c["id"]))


def table(cases: list[dict]) -> str:
    head = (
        "| case | vLLM: weights / KV GiB / KV tokens / est. max len | planner | err weights / KV / tokens / len |\n"
        "|---|---|---|---|"
    )
    lines = [head]
    for c in cases:
        m, p = c["measured"], predict(c)
        if m.get("weights_gib") is None:  # refused while building the layers: no memory figures
            lines.append(f"| {c['id']} | refused: {m.get('error')} | {p.weights_gib_per_gpu} / {p.kv_cache_gib} | - |")
            continue
        if m.get("error") or not p.fits:
            meas = f"{m.get('weights_gib')} / {m.get('kv_gib')} / refused: {m.get('error', 'started')} " + (
                f"{m.get('estimated_max_model_len')}" if m.get("estimated_max_model_len") else ""
            )
        else:
            meas = (
                f"{m.get('weights_gib')} / {m.get('kv_gib')} / {m.get('kv_tokens'):,}" if m.get("kv_tokens") else str(m)
            )
        pred = f"{p.weights_gib_per_gpu} / {p.kv_cache_gib} / " + (
            f"{p.kv_tokens:,}" if p.fits else f"refused ({p.max_model_len_fit})"
        )
        e_len = err(p.max_model_len_fit, m.get("estimated_max_model_len")) if m.get("estimated_max_model_len") else None
        errs = " / ".join(
            str(x)
            for x in (
                err(p.weights_gib_per_gpu, m.get("weights_gib")),
                err(p.kv_cache_gib, m.get("kv_gib")),
                err(p.kv_tokens, m.get("kv_tokens")) if m.get("kv_tokens") else "-",
                e_len if e_len is not None else "-",
            )
        )
        lines.append(f"| {c['id']} | {meas} | {pred} | {errs} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="*", type=Path)
    ap.add_argument("--layers", type=Path)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.results:
        cases = build_cases(args.results)
        print(table(cases))
        if args.write:
            # Runs add to the committed table: a case measured again replaces its old row.
            old = json.loads((DATA / "measured.json").read_text()) if (DATA / "measured.json").is_file() else {}
            known = [{**c, "device": c.get("device") or old.get("device", "")} for c in old.get("cases", [])]
            fresh = {c["id"] for c in cases}
            order = [c["id"] for c in json.loads((ROOT / "bench" / "gpu" / "matrix.json").read_text())["cases"]]
            cases = sorted([c for c in known if c["id"] not in fresh] + cases, key=lambda c: order.index(c["id"]))
            DATA.mkdir(parents=True, exist_ok=True)
            doc = {
                "about": "Real vLLM 0.26.0 `vllm serve` starts on H100s (device machines; each case's `device` lists "
                "its GPUs: tp 2 cases ran on two), dummy weights, argv "
                "rendered by the vllm_service role's vllm_argv filter (bench/gpu/matrix.py), run by "
                "bench/gpu/run_matrix.py. tests/unit/test_gpu_truth.py holds the planner to +-5 % of these.",
                "gpu": H100,
                "vllm_version": "0.26.0",
                "cases": cases,
            }
            (DATA / "measured.json").write_text(json.dumps(doc, indent=1) + "\n")
            print(f"wrote {DATA / 'measured.json'} ({len(cases)} cases)")
    if args.layers:
        data = json.loads(args.layers.read_text())
        for row in data["rows"]:
            for layer in (row.get("layers") or {}).values():
                if isinstance(layer, dict):
                    layer.pop("params", None)
                    if layer.get("kernel") == "NoneType":  # first run's layer_check spelled None so
                        layer["kernel"] = None
        if args.write:
            DATA.mkdir(parents=True, exist_ok=True)
            (DATA / "layer_check.json").write_text(json.dumps(data, indent=1) + "\n")
            print(f"wrote {DATA / 'layer_check.json'} ({len(data['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
