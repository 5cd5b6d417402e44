"""monitoring.py (issue 16): scrape targets from the inventory, vLLM's /metrics read back (a real
0.32.0 capture, tests/data/probe/vllm-0.32.0-cpu-metrics.txt), and the status table."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.filter.vllm_fleet import vllm_scrape_entries
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import inventory, monitoring

METRICS = (Path(__file__).parents[1] / "data/probe/vllm-0.32.0-cpu-metrics.txt").read_text()
COMMIT = "9b1d07e6c2aa" + "0" * 28


def test_the_real_metrics_declare_every_family_the_dashboard_and_alerts_read():
    assert monitoring.missing_families(METRICS) == []
    families = monitoring.Metrics(METRICS).families()
    # Counters are declared with _total by vLLM's client library; the family is the name without it.
    assert "vllm:request_success" in families
    assert "vllm:request_success_total" not in families
    assert "vllm:time_to_first_token_seconds" in families  # a histogram keeps its name


def test_a_renamed_family_is_named_as_missing():
    renamed = METRICS.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    assert monitoring.missing_families(renamed) == ["vllm:kv_cache_usage_perc"]
    assert monitoring.missing_families("") == list(monitoring.REQUIRED_FAMILIES)


def test_load_figures_of_the_capture_three_chat_requests_served():
    assert monitoring.load_figures(METRICS) == {
        "requests_served": 3,  # three chat requests, max_tokens 4: finished_reason "length"
        "requests_running": 0,
        "requests_waiting": 0,
        "kv_cache_usage": 0.0,
    }
    assert monitoring.load_figures("") == dict.fromkeys(
        ("requests_served", "requests_running", "requests_waiting", "kv_cache_usage")
    )


def test_samples_sum_over_labels_and_match_on_them():
    text = (
        "# TYPE vllm:request_success_total counter\n"
        'vllm:request_success_total{finished_reason="stop",model_name="a"} 2.0\n'
        'vllm:request_success_total{finished_reason="length",model_name="a"} 5.0\n'
        'vllm:request_success_total{finished_reason="length",model_name="b, \\"x\\""} 1.0\n'
    )
    metrics = monitoring.Metrics(text)
    assert metrics.total("vllm:request_success_total") == 8
    assert metrics.total("vllm:request_success_total", finished_reason="length") == 6
    # Label values are unescaped as the text format escapes them.
    assert metrics.total("vllm:request_success_total", model_name='b, "x"') == 1
    assert metrics.total("vllm:nothing") is None


def test_timestamps_exemplars_braces_in_labels_and_non_finite_values():
    text = (
        'vllm:num_requests_running{model_name="a} # b"} 3 1700000000000\n'
        'vllm:request_success_total{model_name="a"} 4.0 # {trace_id="abc"} 1.0 1700000000.1\n'
        'vllm:num_requests_waiting{model_name="a"} +Inf\n'
        'vllm:kv_cache_usage_perc{model_name="a"} NaN\n'
        "broken line without a value\n"
    )
    metrics = monitoring.Metrics(text)
    assert metrics.samples[0] == ("vllm:num_requests_running", {"model_name": "a} # b"}, 3.0)
    assert metrics.samples[1] == ("vllm:request_success_total", {"model_name": "a"}, 4.0)
    assert len(metrics.samples) == 4
    # A non-finite count or usage is shown as unknown, not a crash (int(inf) raises).
    assert monitoring.load_figures(text) == {
        "requests_served": 4,
        "requests_running": 3,
        "requests_waiting": None,
        "kv_cache_usage": None,
    }


def models(*items):
    return inventory.normalize_models(list(items))


def test_one_target_per_present_model_labelled_with_what_it_serves():
    served = models(
        {"name": "qwen7b", "model": "qwen/Qwen2.5-7B-Instruct", "revision": COMMIT, "revision_name": "master",
         "port": 8000, "gpus": [0, 1]},
        {"name": "qwen14b", "model": "qwen/Qwen1.5-14B-Chat-AWQ", "revision": "v1.0.1", "port": 8001},
        {"name": "gone", "model": "qwen/x", "port": 8002, "state": "absent"},
    )  # fmt: skip
    targets = monitoring.scrape_targets("t4-01", "10.0.0.5", served, "0.32.0", "cuda")
    assert targets == [
        {
            "targets": ["10.0.0.5:8001"],
            "labels": {
                "host": "t4-01",
                "model": "qwen14b",
                "unit": "vllm-qwen14b.service",
                "repo": "qwen/Qwen1.5-14B-Chat-AWQ",
                "revision": "v1.0.1",
                "revision_name": "v1.0.1",
                "vllm_version": "0.32.0",
                "gpus": "all",
            },
        },
        {
            "targets": ["10.0.0.5:8000"],
            "labels": {
                "host": "t4-01",
                "model": "qwen7b",
                "unit": "vllm-qwen7b.service",
                "repo": "qwen/Qwen2.5-7B-Instruct",
                "revision": COMMIT,
                "revision_name": "master",
                "vllm_version": "0.32.0",
                "gpus": "0,1",
            },
        },
    ]


def test_a_cpu_host_ipv6_address_and_a_host_with_no_models():
    served = models({"name": "tiny", "model": "o/tiny", "revision": "v1", "port": 8000})
    (target,) = monitoring.scrape_targets("vf1", "fd00::2", served, "0.32.0", "cpu")
    assert target["targets"] == ["[fd00::2]:8000"]
    assert target["labels"]["gpus"] == "cpu"
    assert monitoring.scrape_targets("vf1", "10.0.0.1", [], "0.32.0", "cpu") == []


def test_after_a_rollback_a_host_serves_the_records_put_back_and_the_current_ones():
    def record(revision, version):
        return {"model": {"name": "a", "model": "o/a", "revision": revision, "port": 8000}, "vllm_version": version}

    kept = {
        "a": {"current": record("c2", "0.32.0"), "previous": record("c1", "0.31.0")},
        "b": {
            "current": {
                **record("c5", "0.32.0"),
                "model": {"name": "b", "model": "o/b", "revision": "c5", "port": 8001},
            }
        },
    }
    restored = [
        {"model_name": "a", "changed": True, "record": record("c1", "0.31.0")},
        {"model_name": "b", "changed": False, "record": None},
    ]
    served = monitoring.served_models(kept, restored)
    assert [(m["name"], m["revision"], m["vllm_version"]) for m in served] == [
        ("a", "c1", "0.31.0"),
        ("b", "c5", "0.32.0"),
    ]
    # The model's own release is its label (the role's filter keeps it through normalization).
    targets = vllm_scrape_entries(served, "vf1", "10.0.0.1", "0.32.0", "cpu")
    assert [t["labels"]["vllm_version"] for t in targets] == ["0.31.0", "0.32.0"]


def test_target_files_of_hosts_left_out_of_the_inventory_are_stale():
    files = ["vf1.json", "vf2.json", "old-host.json", "notes.txt"]
    assert monitoring.stale_target_files(files, ["vf1", "vf2", "vf3"]) == ["old-host.json"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (5, "0m05s"), (3599, "59m59s"), (3600, "1h00m"), (90061, "1d1h")],
)
def test_uptime_text(seconds, text):
    assert monitoring.uptime_text(seconds) == text


def test_the_status_table_aligns_rows_and_lists_problems_and_unreachable_hosts():
    rows = [
        {
            "host": "vf1",
            "model": "tiny",
            "state": "active/running",
            "revision": COMMIT,
            "vllm_version": "0.32.0",
            "uptime_s": 75.0,
            "requests_served": 12,
            "requests_running": 1,
            "requests_waiting": 0,
            "kv_cache_usage": 0.0342,
            "probe_latency_s": 0.318,
            "problems": [],
        },
        {
            "host": "vf2",
            "model": "tiny",
            "state": "failed/failed",
            "problems": ["http://127.0.0.1:8000/metrics: refused"],
        },
    ]
    lines = monitoring.status_table(rows, {"vf3": "Read each model's unit"}).splitlines()
    assert lines[0].split() == "host model unit revision vllm uptime served kv cache run/wait probe".split()  # noqa: SIM905 (a row as it reads)
    assert lines[1].split() == "vf1 tiny active/running 9b1d07e6c2aa 0.32.0 1m15s 12 3.4% 1/0 0.32s".split()  # noqa: SIM905 (a row as it reads)
    assert lines[2].split() == "vf2 tiny failed/failed - - - - - - -".split()  # noqa: SIM905 (a row as it reads)
    assert lines[0].index("revision") == lines[1].index("9b1d07e6c2aa")  # aligned
    assert lines[3] == "vf2 tiny: http://127.0.0.1:8000/metrics: refused"
    assert lines[4] == "vf3: unreachable (in: Read each model's unit)"
    assert "no models" in monitoring.status_table([])
