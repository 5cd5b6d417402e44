"""The Grafana dashboard and Prometheus alert rules that roles/vllm_monitoring ships.

A dashboard or an alert on a metric name vLLM does not export shows nothing and never fires, and
nothing else would tell: so every metric name in their expressions must be a sample of a real
vLLM 0.32.0 /metrics (tests/data/probe/vllm-0.32.0-cpu-metrics.txt). The rules go through
`promtool check rules` and their own `promtool test rules` cases (vllm-fleet-alerts.test.yml: each
alert fires, and not on a healthy counter-case); the dashboard's expressions through promtool's
parser too, and its JSON through the structure Grafana and the fleet's variables need.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "roles" / "vllm_monitoring" / "files"
ALERTS = FILES / "vllm-fleet-alerts.yml"
ALERTS_TEST = FILES / "vllm-fleet-alerts.test.yml"
DASHBOARD = FILES / "vllm-fleet-dashboard.json"
METRICS = ROOT / "tests" / "data" / "probe" / "vllm-0.32.0-cpu-metrics.txt"

DATASOURCE = "${datasource}"
SELECTOR = ('host=~"$host"', 'model=~"$model"')
ALERT_NAMES = {
    "VllmModelDown",
    "VllmHealthProbeFailing",
    "VllmKvCacheNearlyFull",
    "VllmRequestsWaitingGrowing",
    "VllmErrorRate",
}
# The metric names of an expression: vLLM's own, the HTTP layer's, and Prometheus's `up`.
METRIC_NAME = re.compile(r"\b(vllm:[a-zA-Z0-9_]+|http_[a-zA-Z0-9_]+|up)\b")
SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")
PROMTOOL_MISSING = "promtool not found: run `make deps` (Debian package prometheus)"


def promtool() -> str:
    """The promtool binary, or skip (fail under VLLM_FLEET_REQUIRE_HOSTS=1, CI) with the reason."""
    found = shutil.which("promtool")
    if found:
        return found
    print(PROMTOOL_MISSING)
    if os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1":
        pytest.fail(PROMTOOL_MISSING)
    pytest.skip(PROMTOOL_MISSING)


def run_promtool(*args: str, cwd: Path) -> None:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"promtool {' '.join(args)}: rc {result.returncode}\n{result.stdout}{result.stderr}"


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def variable_queries() -> list[str]:
    return [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]


def sample_names() -> set[str]:
    names = set()
    for line in METRICS.read_text().splitlines():
        match = SAMPLE_NAME.match(line)
        if match and not line.startswith("#"):
            names.add(match.group(1))
    return names


# -- alert rules ------------------------------------------------------------------------------


def test_promtool_check_rules():
    run_promtool("check", "rules", ALERTS.name, cwd=FILES)


def test_promtool_test_rules():
    """Each alert fires when it should and not on the healthy counter-cases (the test file's cases)."""
    run_promtool("test", "rules", ALERTS_TEST.name, cwd=FILES)


def test_alert_rules_shape():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert [g["name"] for g in groups] == ["vllm-fleet"]
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        for key in ("summary", "description"):
            text = rule["annotations"][key]
            assert "$labels.host" in text and "$labels.model" in text, f"{rule['alert']}: {key}: {text}"


def test_alert_test_file_covers_every_alert():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    for name in ALERT_NAMES:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it does not fire"


# -- dashboard --------------------------------------------------------------------------------


def test_dashboard_identity_and_templating():
    dash = dashboard()
    assert (dash["uid"], dash["title"], dash["schemaVersion"]) == ("vllm-fleet", "vLLM fleet", 39)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) >= {"datasource", "host", "model"}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("host", "model"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] is True and var["includeAll"] is True, name
        assert var["datasource"]["uid"] == DATASOURCE, name
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query == var["definition"], name
        assert re.fullmatch(rf'label_values\(up\{{job="vllm-fleet"[^}}]*\}}, {name}\)', query), query


def test_dashboard_panels():
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert {p["type"] for p in panels} <= {"timeseries", "stat", "table"}
    for panel in panels:
        where = f"panel {panel['id']} {panel['title']!r}"
        assert set(panel["gridPos"]) >= {"x", "y", "w", "h"}, where
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
        assert panel["datasource"]["uid"] == DATASOURCE, where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), where
            assert target.get("datasource", {}).get("uid", DATASOURCE) == DATASOURCE, where
            for matcher in SELECTOR:
                assert matcher in target["expr"], f"{where}: {target['expr']} lacks {matcher}"


def test_dashboard_has_the_promised_panels():
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        'up{job="vllm-fleet"',
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "histogram_quantile(0.5, sum by (host, model, le) (rate(vllm:time_to_first_token_seconds_bucket",
        "histogram_quantile(0.95, sum by (host, model, le) (rate(vllm:time_to_first_token_seconds_bucket",
        "histogram_quantile(0.95, sum by (host, model, le) (rate(vllm:e2e_request_latency_seconds_bucket",
        "histogram_quantile(0.95, sum by (host, model, le) (rate(vllm:inter_token_latency_seconds_bucket",
        "rate(vllm:prompt_tokens_total",
        "rate(vllm:generation_tokens_total",
        "finished_reason",
        "rate(vllm:num_preemptions_total",
        'status="5xx"',
    ):
        assert needle in exprs, needle
    table = [p for p in dashboard()["panels"] if p["type"] == "table"]
    assert table and table[0]["targets"][0]["expr"].startswith('up{job="vllm-fleet"')
    shown = table[0]["transformations"][0]["options"]["indexByName"]
    assert {"host", "model", "revision", "vllm_version", "gpus"} <= set(shown)


def test_dashboard_exprs_parse(tmp_path):
    """Every dashboard expression through promtool's parser (a rule file of them, Grafana's
    variables replaced by what they become)."""
    exprs = dashboard_exprs() + [q[len("label_values(") : q.rindex(",")] for q in variable_queries()]
    for variable, value in (("$__rate_interval", "1m"), ("$host", ".*"), ("$model", ".*")):
        exprs = [e.replace(variable, value) for e in exprs]
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "dashboard-exprs.yml").write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}))
    run_promtool("check", "rules", "dashboard-exprs.yml", cwd=tmp_path)


# -- metric names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, exprs",
    [
        ("vllm-fleet-alerts.yml", lambda: [r["expr"] for r in alert_rules()]),
        ("vllm-fleet-dashboard.json", lambda: dashboard_exprs() + variable_queries()),
    ],
)
def test_metric_names_exist_in_vllm_0_32_0(source, exprs):
    exported = sample_names() | {"up"}
    used = {name for expr in exprs() for name in METRIC_NAME.findall(expr)}
    assert used, f"{source}: no metric names found"
    missing = sorted(used - exported)
    assert not missing, f"{source}: not in vLLM 0.32.0's /metrics ({METRICS.name}): {', '.join(missing)}"


def test_metric_name_regex_reads_the_probe():
    """The sample parser above reads the real scrape (else the name test would pass on nothing)."""
    names = sample_names()
    assert {"vllm:kv_cache_usage_perc", "vllm:request_success_total", "http_requests_total"} <= names
    assert "vllm:time_to_first_token_seconds_bucket" in names
