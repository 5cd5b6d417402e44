"""The calibration loop's modules, run by the real `ansible` CLI on this machine (no hosts, no vLLM):
vllm_start_record keeps each start of vLLM once, from the CPU build's real start-up journal, and
never fails on its file; vllm_preflight plans with a calibration file the fleet wrote and refuses
one it cannot use (issue 18, docs/planner.md "Calibration")."""

from __future__ import annotations

import json
from pathlib import Path

from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cli, preflight
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config

from tests.integration.ansible_run import module_json, run
from tests.support.tiny_model import model_config, tokenizer_json

ROOT = Path(__file__).resolve().parents[2]
CPU_START = (ROOT / "tests" / "data" / "probe" / "vllm-0.32.0-cpu-tiny-start.log").read_text()
STARTS = ROOT / "tests" / "data" / "gpu" / "starts.jsonl"
QWEN_7B = ROOT / "model_configs" / "qwen" / "Qwen1.5-7B-Chat"


def module(name: str, args: dict, *flags: str) -> tuple[int, dict, str]:
    result = run("ansible", "localhost", "-m", f"vllm_fleet.fleet.{name}", "-a", json.dumps(args), *flags, timeout=120)
    return result.returncode, module_json(result.output), result.output


def tiny_plan() -> dict:
    facts = facts_from_config(model_config(tokenizer_json("normal")), name="tiny")
    flags = {"dtype": "bfloat16", "max-model-len": 512, "enforce-eager": True}
    return preflight.check(facts, [], flags, "0.32.0", name="tiny", device="cpu", cpu_kv_cache_gib=1)


def test_each_start_is_kept_once_and_a_damaged_file_is_a_warning(tmp_path):
    records = tmp_path / "inventory" / ".vllm-starts" / "vf1.jsonl"
    plan = tiny_plan()
    args = {
        "path": str(records),
        "host": "vf1",
        "model": "tiny",
        "start": "7c1e0f3a",
        "journal": CPU_START,
        "plan": plan,
        "flags": {**plan["translated_flags"], "served-model-name": "tiny"},
        "vllm_version": "0.32.0",
    }
    rc, out, output = module("vllm_start_record", args)
    assert rc == 0 and out["changed"] and out["recorded"], output
    (line,) = records.read_text().splitlines()
    record = json.loads(line)
    assert (record["host"], record["model"], record["start"], record["device"]) == ("vf1", "tiny", "7c1e0f3a", "cpu")
    # What the CPU build reported beside what the plan predicted: its KV cache exactly.
    assert record["measured"]["kv_tokens"] == record["plan"]["kv_tokens"] == 1_048_576
    assert record["errors"]["KV cache tokens"] == 0.0
    # Only the flags that change memory are kept.
    assert "max-model-len" in record["flags"] and "served-model-name" not in record["flags"]

    # The same start again (a re-run): nothing added, no change.
    rc, out, output = module("vllm_start_record", args)
    assert rc == 0 and not out["changed"] and "already recorded" in out["reason"], output
    # A new start in check mode: it would be added, nothing is written.
    rc, out, output = module("vllm_start_record", dict(args, start="9d2b44e1"), "--check")
    assert rc == 0 and out["changed"] and out["recorded"], output
    assert records.read_text() == line + "\n"
    # A journal without vLLM's report (read before it started) or a unit never started: nothing.
    for missing in ({"journal": "Started vllm-tiny.service.\n"}, {"start": ""}):
        rc, out, output = module("vllm_start_record", {**args, "start": "9d2b44e1", **missing})
        assert rc == 0 and not out["changed"] and not out["recorded"], output
    rc, out, output = module("vllm_start_record", dict(args, start="9d2b44e1"))
    assert rc == 0 and out["changed"], output
    assert len(records.read_text().splitlines()) == 2

    # A damaged file: a warning naming its line, nothing appended after the damage, never a failure
    # (the probe decides whether a host is good, not its records).
    damaged = records.read_text() + '{"format": "vllm-fleet-st\n'
    records.write_text(damaged)
    rc, out, output = module("vllm_start_record", dict(args, start="0aa91c55"))
    assert rc == 0 and not out["changed"] and not out["recorded"], output
    assert "vf1.jsonl:3: not JSON" in out["reason"] and "start record not kept" in output
    assert records.read_text() == damaged

    # calibrate reads the directory the probe keeps: the CPU starts are counted, and not fitted.
    records.write_text("".join(damaged.splitlines(keepends=True)[:2]))
    assert cli.main(["calibrate", str(records.parent), "--json"]) == 0


def test_preflight_plans_with_a_calibration_file_and_refuses_one_it_cannot_use(tmp_path):
    calibration = tmp_path / "fleet-calibration.json"
    assert cli.main(["calibrate", str(STARTS), "--write", str(calibration)]) == 0
    base = {
        "models": [
            {"name": "qwen7b", "model": str(QWEN_7B), "port": 8000, "gpus": [0], "flags": {"enforce-eager": True}}
        ],
        "gpus": [{"index": 0, "name": "H100", "memory_mib": 81559, "compute_capability": "9.0"}],
        "vllm_version": "0.26.0",
        "service": {"api_key_set": True},
        "fetch": False,
    }
    rc, plain, output = module("vllm_preflight", base)
    assert rc == 0, output
    rc, out, output = module("vllm_preflight", dict(base, calibration=str(calibration)))
    assert rc == 0, output
    (row,) = out["plan"]["models"]
    assert row["calibration"]["summary"].startswith("H100 on vLLM 0.26.0: non-torch GiB")
    assert row["calibration"]["terms"]["non_torch_gib"]["starts"] >= 1
    assert row["kv_cache_gib"] != plain["plan"]["models"][0]["kv_cache_gib"]
    # A file the operator named that cannot be used refuses: never the built-in terms in silence.
    # (A start record is JSON, but not a calibration: the records go to `vllm-fleet calibrate` first.)
    (tmp_path / "one-record.json").write_text(STARTS.read_text().splitlines()[0])
    for bad, says in (("missing.json", "No such file"), ("one-record.json", "not a vllm-fleet calibration file")):
        rc, out, output = module("vllm_preflight", dict(base, calibration=str(tmp_path / bad)))
        assert rc != 0 and says in out["msg"] and "vllm_calibration_file" in out["msg"], output
