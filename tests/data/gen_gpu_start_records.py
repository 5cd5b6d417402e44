"""The real GPU starts in tests/data/gpu (measured.json: H100, measured-h200.json: H200; vLLM
0.26.0) as the start records a fleet keeps (calibration.start_record): the planner's built-in
prediction for each case, term by term, beside what that vLLM start reported. Refused starts are
kept too (the planner predicted their refusal); `vllm-fleet calibrate` fits only the starts with a
KV cache.

    .venv/bin/python tests/data/gen_gpu_start_records.py > tests/data/gpu/starts.jsonl

A record is a snapshot of the plan made when it was written: later planner changes do not
rewrite it (the calibration of a fleet works the same way).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.calibration import (  # noqa: E402
    start_record,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import (  # noqa: E402
    facts_from_config,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import (  # noqa: E402
    kwargs_from_flags,
    plan_memory,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import (  # noqa: E402
    budget_terms,
)

SOURCES = ("tests/data/gpu/measured.json", "tests/data/gpu/measured-h200.json")


def plan_row(memory, version: str) -> dict:
    """The fields of a preflight plan row a record keeps."""
    calibrated = {"terms": memory.calibrated} if memory.calibrated else None
    return {
        "calibration": calibrated,
        "gpu_name": memory.gpu_name,
        "weights_gib": memory.weights_gib_per_gpu,
        "kv_cache_gib": round(memory.kv_cache_gib, 2),
        "kv_tokens": memory.kv_tokens,
        "max_model_len": memory.max_model_len,
        "max_model_len_fit": memory.max_model_len_fit,
        "terms": budget_terms(memory),
        "vllm_version": version,
    }


def engine_report(measured: dict, version: str) -> dict:
    """What the journal said, in engine_report.parse_engine_report's keys."""
    names = {"weights_gib": "weights_gib", "kv_gib": "kv_cache_gib", "kv_tokens": "kv_cache_tokens"}
    report = {key: measured[src] for src, key in names.items() if measured.get(src) is not None}
    if measured.get("estimated_max_model_len") is not None:
        report["estimated_max_model_len"] = measured["estimated_max_model_len"]
    report["vllm_version"] = version
    return report


def records(calibration: dict | None = None) -> list[dict]:
    """The records; ``calibration`` (terms, as calibration.terms_for gives them) plans every case
    with those terms instead of the built-in ones (tests/unit/test_calibration.py)."""
    out = []
    for source in SOURCES:
        data = json.loads((ROOT / source).read_text())
        gpu, version = data["gpu"], data["vllm_version"]
        for case in data["cases"]:
            measured = case["measured"]
            if measured.get("weights_gib") is None:
                continue  # refused before it loaded (a shape rule's case): nothing to compare
            config = json.loads((ROOT / "model_configs" / "qwen" / case["model"] / "config.json").read_text())
            facts = facts_from_config(config, name=case["model"])
            kwargs = kwargs_from_flags(case["flags"])
            memory = plan_memory(facts, gpu, vllm_version=version, calibration=calibration, **kwargs)
            device = case.get("device") or ""
            out.append(
                start_record(
                    host=source.rsplit("/", 1)[1],
                    model=case["model"],
                    start=case["id"],
                    plan=plan_row(memory, version),
                    report=engine_report(measured, version),
                    flags=case["flags"],
                    gpu={"name": gpu["name"], "memory_gib": round(gpu["memory_bytes"] / 1024**3, 2)},
                    vllm_version=version,
                    driver=device.split(", ")[-1] if device.count(", ") >= 2 else None,
                )
            )
    return out


if __name__ == "__main__":
    for record in records():
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
