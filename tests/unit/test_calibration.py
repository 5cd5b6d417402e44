"""The calibration loop (issue 18, calibration.py): parse -> compare -> record -> calibrate -> plan,
on real vLLM starts: the CPU build's journal (tests/data/probe) and the GPU runs of tests/data/gpu
(tests/data/gen_gpu_start_records.py made tests/data/gpu/starts.jsonl from them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import calibration as cal
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cli, preflight
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import (
    compare_with_plan,
    parse_engine_report,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config

ROOT = Path(__file__).parents[2]
STARTS = ROOT / "tests" / "data" / "gpu" / "starts.jsonl"
CPU_START = (ROOT / "tests" / "data" / "probe" / "vllm-0.32.0-cpu-tiny-start.log").read_text()
QWEN_7B = json.loads((ROOT / "model_configs" / "qwen" / "Qwen1.5-7B-Chat" / "config.json").read_text())


def _start_records_module():
    spec = importlib.util.spec_from_file_location("start_records", ROOT / "tests" / "data" / "gen_gpu_start_records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records() -> list[dict]:
    return cal.read_records([(str(STARTS), STARTS.read_text())])


def group(calibration: dict, gpu: str) -> dict:
    return next(g for g in calibration["groups"] if g["gpu"] == gpu)


def test_the_committed_records_are_what_the_gpu_runs_give():
    # A record is a snapshot; this one must still be the planner's prediction of today, or the
    # "before" of docs/planner.md's table would describe a planner that no longer exists.
    made = [json.dumps(r, sort_keys=True) for r in _start_records_module().records()]
    assert made == STARTS.read_text().splitlines()


def test_a_cpu_start_is_recorded_but_not_fitted():
    report = parse_engine_report(CPU_START)
    record = cal.start_record(
        host="vf1", model="tiny", start="inv-1", plan=None, report=report, device="cpu", vllm_version="0.32.0"
    )
    assert record["measured"]["kv_tokens"] == report["kv_cache_tokens"] > 0
    assert record["plan"]["terms"] is None and record["errors"] == {}
    # Even with a GPU plan's terms beside it, a CPU start is not fitted (its KV cache is a setting).
    gpu_terms = records()[0]["plan"]["terms"]
    with_terms = dict(record, plan=dict(record["plan"], terms=gpu_terms))
    assert cal.calibrate([with_terms])["groups"][0]["terms"] == {}
    result = cal.calibrate([record])
    only = result["groups"][0]
    # The CPU build's KV cache is VLLM_CPU_KVCACHE_SPACE, not what is left of a GPU's budget:
    # nothing there to fit the GPU terms with.
    assert only["starts"] == 1 and only["fitted_starts"] == 0 and only["terms"] == {}
    assert "not fitted: built in" in cal.format_calibration(result)


def test_the_gpu_runs_are_fitted_per_gpu_and_version_within_one_percent():
    result = cal.calibrate(records())
    assert [(g["gpu"], g["vllm_version"]) for g in result["groups"]] == [("H100", "0.26.0"), ("H200", "0.26.0")]
    h100 = group(result, "H100")
    assert h100["fitted_starts"] >= 10
    assert set(h100["terms"]) == {"non_torch_gib", "activation_scale", "cuda_graph_scale"}
    assert abs(h100["kv_cache_gib"]["after"]["mean_pct"]) <= 1.0
    assert abs(h100["kv_tokens"]["after"]["mean_pct"]) <= 1.0


def _wrong_records():
    # The planner as if its terms were badly off: 1.5 GiB non-torch, twice the activation, almost no
    # CUDA graphs (a scale whose rounded terms would lose the graph start).
    wrong = {
        "non_torch_gib": {"value": 1.5, "starts": 1},
        "activation_scale": {"value": 2.0, "starts": 1},
        "cuda_graph_scale": {"value": 0.01, "starts": 1},
    }
    return [r for r in _start_records_module().records(calibration=wrong) if r["gpu"]["name"] == "H100"], wrong


def test_a_badly_wrong_planner_is_brought_back_to_within_one_percent():
    made, _wrong = _wrong_records()
    h100 = group(cal.calibrate(made), "H100")
    assert h100["kv_cache_gib"]["before"]["mean_pct"] < -3, h100  # the wrong terms under-predict
    assert abs(h100["kv_cache_gib"]["after"]["mean_pct"]) <= 1.0, h100
    assert abs(h100["kv_tokens"]["after"]["mean_pct"]) <= 1.0, h100


def test_the_fit_is_against_the_built_in_terms_whatever_a_record_was_planned_with():
    # Records planned with a calibration fit to the same terms as records planned without one.
    made, _wrong = _wrong_records()
    plain = [r for r in records() if r["gpu"]["name"] == "H100"]
    fitted_wrong, fitted_plain = (
        group(cal.calibrate(made), "H100")["terms"],
        group(cal.calibrate(plain), "H100")["terms"],
    )
    # Exactly: the records keep the built-in activation and graph terms to 4 decimals.
    assert fitted_wrong == fitted_plain


def test_planning_with_the_fitted_terms_gives_what_calibrate_says_it_would():
    fitted = group(cal.calibrate(records()), "H100")["terms"]
    start_records = _start_records_module()
    again = [r for r in start_records.records(calibration=fitted) if r["gpu"]["name"] == "H100"]
    kv = [r["errors"]["KV cache GiB"] for r in again if r["measured"]["kv_cache_gib"] > 0]
    after = group(cal.calibrate(records()), "H100")["kv_cache_gib"]["after"]
    assert sum(kv) / len(kv) == pytest.approx(after["mean_pct"], abs=0.15)
    assert all(r["plan"]["calibration"] == fitted for r in again)


def test_a_term_without_starts_keeps_its_built_in_value():
    eager_only = [r for r in records() if r["plan"]["terms"]["enforce_eager"]]
    terms = group(cal.calibrate(eager_only), "H100")["terms"]
    assert "cuda_graph_scale" not in terms and "non_torch_gib" in terms


def test_a_slope_needs_spread_else_only_the_constant_is_fitted():
    two = [r for r in records() if r["start"] in ("t4-0.5b-eager", "t4-1.8b-eager")]
    terms = group(cal.calibrate(two), "H100")["terms"]
    assert set(terms) == {"non_torch_gib"} and terms["non_torch_gib"]["starts"] == 2


def test_a_damaged_records_file_is_refused_naming_file_and_line():
    with pytest.raises(cal.CalibrationError, match=r"fleet\.jsonl:2: not JSON"):
        cal.read_records([("fleet.jsonl", STARTS.read_text().splitlines()[0] + "\n{oops\n")])
    with pytest.raises(cal.CalibrationError, match=r"x\.jsonl:1: not a vllm-fleet start record"):
        cal.read_records([("x.jsonl", '{"format": "something else"}\n')])


def test_the_same_start_is_the_same_record():
    first = records()[0]
    assert cal.record_key(first) == cal.record_key(dict(first, recorded_at="later"))


def test_a_zero_graph_scale_is_planned_as_zero_not_as_unset():
    facts = facts_from_config(QWEN_7B, name="Qwen1.5-7B-Chat")
    h100 = {"name": "H100", "memory_bytes": 85017493504, "compute_capability": "9.0"}
    zero = {"format": cal.FORMAT, "groups": [{"gpu": "H100", "vllm_version": "0.32.0", "terms": {}}]}
    zero["groups"][0]["terms"]["cuda_graph_scale"] = {"value": 0.0, "starts": 3}
    with_graphs = preflight.check(facts, [h100], {}, "0.32.0")
    without = preflight.check(facts, [h100], {}, "0.32.0", calibration=cal.load_calibration(json.dumps(zero)))
    assert with_graphs["terms"]["cuda_graph_gib"] > 0 and without["terms"]["cuda_graph_gib"] == 0.0
    assert without["terms"]["cuda_graph_builtin_gib"] == with_graphs["terms"]["cuda_graph_builtin_gib"] > 0
    assert without["kv_cache_gib"] > with_graphs["kv_cache_gib"]


def test_a_calibration_file_is_checked_before_it_is_used():
    with pytest.raises(cal.CalibrationError, match="not a vllm-fleet calibration file"):
        cal.load_calibration('{"groups": []}', "c.json")
    for term, entry in (("vram", {"value": 1, "starts": 1}), ("cuda_graph_scale", {"value": -0.2, "starts": 1})):
        bad = {"format": cal.FORMAT, "groups": [{"gpu": "T4", "vllm_version": "0.32.0", "terms": {term: entry}}]}
        with pytest.raises(cal.CalibrationError, match=f"bad term {term}"):
            cal.load_calibration(json.dumps(bad), "c.json")


def test_the_plan_says_which_terms_came_from_the_calibration_and_from_how_many_starts():
    calibration = cal.calibrate(records())
    facts = facts_from_config(QWEN_7B, name="Qwen1.5-7B-Chat")
    h100 = {"name": "H100", "memory_bytes": 85017493504, "compute_capability": "9.0"}
    plain = preflight.check(facts, [h100], {"enforce-eager": True}, "0.26.0")
    calibrated = preflight.check(facts, [h100], {"enforce-eager": True}, "0.26.0", calibration=calibration)
    assert plain["calibration"] is None
    note = calibrated["calibration"]
    assert note["terms"] == group(calibration, "H100")["terms"]
    assert "non-torch GiB" in note["summary"] and "from 14 starts" in note["summary"], note
    # A local version part ("0.26.0+cu121") is the same release.
    assert preflight.check(facts, [h100], {"enforce-eager": True}, "0.26.0+cu121", calibration=calibration)[
        "calibration"
    ]["terms"]
    assert calibrated["kv_cache_gib"] != plain["kv_cache_gib"]
    assert "calibration: H100 on vLLM 0.26.0" in preflight.format_plan(calibrated)
    # Another GPU or vLLM version: the file is named as having nothing for it; built-in terms.
    other = preflight.check(facts, [h100], {"enforce-eager": True}, "0.32.0", calibration=calibration)
    assert other["calibration"]["terms"] == {} and "nothing for H100 on vLLM 0.32.0" in other["calibration"]["summary"]
    assert other["kv_cache_gib"] == preflight.check(facts, [h100], {"enforce-eager": True}, "0.32.0")["kv_cache_gib"]


def test_cli_calibrate_writes_a_file_check_plans_with(tmp_path, capsys):
    written = tmp_path / "t4-fleet.json"
    assert cli.main(["calibrate", str(STARTS), "--write", str(written)]) == 0
    out = capsys.readouterr().out
    assert "H100 / vLLM 0.26.0" in out and "non-torch GiB" in out and "mean error" in out
    assert cal.load_calibration(written.read_text())["groups"]
    model_dir = tmp_path / "qwen7b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(QWEN_7B))
    argv = ["check", str(model_dir), "--gpu", "H100", "--vllm-version", "0.26.0", "--no-fetch", "--enforce-eager"]
    assert cli.main([*argv, "--calibration", str(written)]) == 0
    assert "calibration: H100 on vLLM 0.26.0: non-torch GiB" in capsys.readouterr().out
    assert cli.main([*argv, "--calibration", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert cli.main(["calibrate", str(tmp_path / "missing.jsonl")]) == 2
    assert cli.main(["calibrate", str(STARTS), "--write", str(tmp_path / "no" / "such" / "dir.json")]) == 2


def test_the_plan_predicts_what_the_cpu_build_reports_about_its_kv_cache():
    # The CPU build's KV cache is VLLM_CPU_KVCACHE_SPACE exactly, in blocks of 128 tokens: the plan
    # of the tiny model with the units' 1 GiB is what its real start logged (1,048,576 tokens).
    from tests.support.tiny_model import model_config, tokenizer_json

    facts = facts_from_config(model_config(tokenizer_json("normal")), name="tiny")
    plan = preflight.check(
        facts, [], {"dtype": "bfloat16", "max-model-len": 512}, "0.32.0", device="cpu", cpu_kv_cache_gib=1
    )
    report = parse_engine_report(CPU_START)
    rows = {row["metric"]: row for row in compare_with_plan(report, plan)}
    assert rows["KV cache tokens"]["predicted"] == rows["KV cache tokens"]["measured"] == 1_048_576
    assert rows["KV cache GiB"]["error_pct"] == 0.0
    assert rows["max concurrency"]["predicted"] == pytest.approx(rows["max concurrency"]["measured"])
    # Without the space (a GPU host's plan asked of a CPU, or a caller that does not know it): no guess.
    assert preflight.check(facts, [], {"max-model-len": 512}, "0.32.0", device="cpu")["kv_tokens"] is None


def test_check_host_plans_the_cpu_kv_cache_the_unit_will_get():
    from tests.support.tiny_model import model_config, tokenizer_json

    facts = facts_from_config(model_config(tokenizer_json("normal")), name="tiny")
    item = {"name": "tiny", "model": "vllm-fleet/tiny-qwen2", "revision": "v1", "port": 8000}
    host_vars = {"vllm_device": "cpu", "vllm_models": [dict(item, flags={"max-model-len": 512})]}
    default = preflight.check_host(host_vars, facts_for=lambda _item: facts)["models"][0]
    assert default["kv_cache_gib"] == 1.0 and default["kv_tokens"] == 1_048_576
    # The model's own env wins, as in the unit (roles/vllm_service/vars/main.yml).
    own = dict(item, flags={"max-model-len": 512}, env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    two = preflight.check_host(dict(host_vars, vllm_models=[own]), facts_for=lambda _item: facts)["models"][0]
    assert two["kv_cache_gib"] == 2.0 and two["kv_tokens"] == 2 * 1_048_576


def test_each_start_is_appended_once_and_damage_is_not_written_past():
    report = parse_engine_report(CPU_START)
    first = cal.start_record(host="vf1", model="tiny", start="inv-1", plan=None, report=report, device="cpu")
    line = cal.new_record_line("", first)
    assert json.loads(line) == json.loads(json.dumps(first)) and line.endswith("\n")
    # The same start (a re-run that found the unit as it was) adds nothing; the next start does.
    assert cal.new_record_line(line, first) is None
    second = dict(first, start="inv-2")
    assert cal.new_record_line(line, second) is not None
    # The same start of another model or host is another record.
    assert cal.new_record_line(line, dict(first, host="vf2")) is not None
    with pytest.raises(cal.CalibrationError, match=r"vf1.jsonl:2: not JSON"):
        cal.new_record_line(line + '{"format": "vllm-fleet-st\n', second, "vf1.jsonl")


def test_cli_calibrate_reads_a_records_directory_as_its_files(tmp_path, capsys):
    # The probe keeps one file per host in the inventory's .vllm-starts/: the directory is the input.
    lines = STARTS.read_text().splitlines(keepends=True)
    starts = tmp_path / ".vllm-starts"
    starts.mkdir()
    (starts / "h100-a.jsonl").write_text("".join(lines[::2]))
    (starts / "h100-b.jsonl").write_text("".join(lines[1::2]))
    (starts / "notes.txt").write_text("not records: left alone\n")
    assert cli.main(["calibrate", str(starts), "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert cli.main(["calibrate", str(STARTS), "--json"]) == 0
    assert from_dir == json.loads(capsys.readouterr().out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["calibrate", str(empty)]) == 2
    assert "no start records" in capsys.readouterr().err


def test_a_pipeline_start_is_kept_but_not_fitted():
    # Its plan's terms are the limiting stage's budget, vLLM's KV GiB in the head's journal stage 0's.
    pipeline = [dict(r, plan=dict(r["plan"], pipeline_stages=2)) for r in records()]
    result = cal.calibrate(pipeline)
    assert all(g["terms"] == {} for g in result["groups"]), result["groups"]
    assert records()[0]["plan"]["pipeline_stages"] == 1
    # A plan of two stages (preflight's pp) makes a record of two.
    report = parse_engine_report(CPU_START)
    record = cal.start_record(host="vf1", model="m", start="s", plan={"pp": 2, "kv_tokens": 1}, report=report)
    assert record["plan"]["pipeline_stages"] == 2
