"""The calibration loop's modules, run by the real `ansible` CLI on this machine (no hosts, no vLLM):
vllm_start_record keeps each start of vLLM once, from the CPU build's real start-up journal, and
never fails on its file; vllm_preflight plans with a calibration file the fleet wrote and refuses
one it cannot use (issue 18, docs/planner.md "Calibration")."""

from __future__ import annotations

import json
from pathlib import Path

from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cli, preflight, systemd
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import to_argv

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


def test_each_start_is_kept_once_and_a_damaged_file_is_a_warning(tmp_path, capsys):
    records = tmp_path / "inventory" / ".vllm-starts" / "vf1.jsonl"
    plan = tiny_plan()
    args = {
        "path": str(records),
        "host": "vf1",
        "model": "tiny",
        "start": "7c1e0f3a",
        "journal": CPU_START,
        "exec_start": unit_line(plan["translated_flags"]),
        "plan": plan,
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
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert (group["starts"], group["fitted_starts"], group["terms"]) == (2, 0, {})
    # A last line without its newline (edited by hand) does not glue the next record to it.
    records.write_text(records.read_text().rstrip("\n"))
    rc, out, output = module("vllm_start_record", dict(args, start="5e6f7a8b"))
    assert rc == 0 and out["changed"], output
    assert [json.loads(line)["start"] for line in records.read_text().splitlines()] == [
        "7c1e0f3a",
        "9d2b44e1",
        "5e6f7a8b",
    ]


def unit_line(flags: dict, **extra) -> str:
    """The ExecStart= value the service role writes for the tiny model with these flags."""
    argv = ["/opt/vllm-fleet/envs/e/bin/vllm", "serve", "/var/lib/vllm-fleet/models/o/tiny/abc"]
    argv += ["--host", "0.0.0.0", "--port", "8000", *to_argv({**flags, "served-model-name": "tiny", **extra})]
    return systemd.exec_line(argv)


def test_a_start_is_kept_with_the_flags_it_runs_and_a_plan_it_does_not_run_is_left_out(tmp_path):
    # probe.yml after the inventory changed but before the deploy: the unit still runs the old
    # flags, and the plan (of the new ones) would pair this start with a budget it did not have.
    plan = tiny_plan()
    path = tmp_path / "vf1.jsonl"
    base = {"path": str(path), "host": "vf1", "model": "tiny", "journal": CPU_START, "plan": plan}
    older = {**plan["translated_flags"], "num-gpu-blocks-override": 64}
    rc, out, output = module("vllm_start_record", {**base, "start": "a1", "exec_start": unit_line(older)})
    assert rc == 0 and out["changed"], output
    record = out["record"]
    assert record["plan"]["kv_tokens"] is None and "other flags than the plan" in record["plan_note"]
    assert str(record["flags"]["num-gpu-blocks-override"]) == "64" and record["errors"] == {}
    # Without a plan (a state the rollout put back is probed without one): the unit's own flags.
    rc, out, output = module("vllm_start_record", {**base, "plan": {}, "start": "a0", "exec_start": unit_line(older)})
    assert rc == 0 and out["record"]["flags"]["max-model-len"] == 512 and "plan_note" not in out["record"], output
    # The unit runs the plan's flags (the role's --host, --port and --served-model-name aside): kept.
    rc, out, output = module(
        "vllm_start_record", {**base, "start": "a2", "exec_start": unit_line(plan["translated_flags"])}
    )
    assert rc == 0 and out["record"]["plan"]["kv_tokens"] == 1_048_576 and "plan_note" not in out["record"], output


def test_a_gpu_start_is_a_cuda_record_with_the_plans_gpu_and_driver(tmp_path):
    gpu_start = (
        "(EngineCore pid=2) INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='/m'\n"
        "(Worker pid=3) INFO [gpu_model_runner.py:5150] Model loading took 14.39 GiB memory and 9.5 seconds\n"
        "(Worker pid=3) INFO [gpu_worker.py:760] Available KV cache memory: 55.1 GiB\n"
        "(EngineCore pid=2) INFO [kv_cache_utils.py:2327] GPU KV cache size: 112,848 tokens, "
        "Maximum concurrency for 2,048 tokens per request: 55.10x\n"
    )
    t4 = {"name": "T4", "memory_mib": 15360, "compute_capability": "7.5", "driver_version": "550.54.15"}
    gpus = [dict(t4, index=0), dict(t4, index=1)]
    args = {"path": str(tmp_path / "t4-01.jsonl"), "host": "t4-01", "model": "qwen7b", "start": "b1"}
    args |= {"journal": gpu_start, "plan": {"gpus": [1], "gpu_name": "T4", "kv_tokens": 110592}, "gpus": gpus}
    rc, out, output = module("vllm_start_record", args)
    assert rc == 0 and out["changed"], output
    record = out["record"]
    assert (record["device"], record["driver"], record["vllm_version"]) == ("cuda", "550.54.15", "0.32.0")
    assert record["gpu"] == {"name": "T4", "memory_mib": 15360, "compute_capability": "7.5", "count": 1}
    assert record["errors"]["KV cache tokens"] == -2.0


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
