"""One model across two real systemd test hosts (issue 17, docs/multinode.md): the tiny model served
with pipeline parallel 2 by real vLLM (CPU build), one layer on each host, through vLLM's
multiprocessing executor (--nnodes 2; the worker runs --headless). Tests run in file order:

1. a -l that leaves the worker out is refused in preflight, with the -l that does not;
2. site.yml deploys the cluster: the head answers the OpenAI API, the worker runs its stage;
3. a re-run changes nothing (both members take the fast path);
4. the worker cut from the members' network: the head cannot answer, and probe.yml fails;
5. the worker killed in the middle of a rollout (the new revision's worker dies once its cluster
   answers /health): the probe fails on both members, the rollout stops before its next batch (a
   third host, untouched), and both members are put back to v1, which answers again;
6. the same cluster with `executor: ray`: preflight refuses it on the CPU build; the service role's
   Ray units (real Ray 2.58) form the cluster, the head starts vLLM only once the worker has joined
   (and vLLM then refuses Ray on CPU: the serving case is the GPU-only gap), and removing the model
   takes every unit, Ray process and the launcher away.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout

from tests.hosts import testhosts
from tests.integration import ansible_run
from tests.support.hub import StandInHub, publish_tiny_model

pytestmark = [pytest.mark.hosts, pytest.mark.vllm, pytest.mark.slow]

TINY = "vllm-fleet/tiny-qwen2"  # two decoder layers: one per stage
API_KEY = "vf-multinode-" + os.urandom(8).hex()
UNIT = "/etc/systemd/system/vllm-tiny-pp.service"
# Ray for the executor: ray tests (a release vLLM 0.32 accepts, ray_utils.py; its wheel and
# msgpack are all the vLLM environment lacks).
RAY_VERSION, MSGPACK_VERSION = "2.58.0", "1.1.2"
LAUNCHER = "/usr/local/lib/vllm-fleet/vllm_fleet_ray_launch.py"
RAY_PLAYBOOK = "tests/integration/playbooks/ray_cluster.yml"


def cluster_model(hosts, revision: str = "v1", executor: str = "mp") -> dict:
    return {
        "name": "tiny-pp",
        "model": TINY,
        "revision": revision,
        "port": 8000,
        "cluster": {"hosts": [h.name for h in hosts], **({"executor": executor} if executor != "mp" else {})},
        # Not --enforce-eager: vLLM 0.32's CPU worker then skips the profiling run that allocates a
        # later stage's buffer for the stage before's output, and the first request fails
        # (AssertionError in sync_and_gather_intermediate_tensors; rule cpu-pp-eager). Traced once
        # by dynamo and run eagerly instead: no C++ compiler on the hosts, as inductor would need.
        "flags": {
            "dtype": "bfloat16",
            "max-model-len": 512,
            "pipeline-parallel-size": 2,
            "compilation-config": {"mode": 2, "backend": "eager"},
        },
    }


def single_model() -> dict:
    return {
        "name": "tiny",
        "model": TINY,
        "revision": "v1",
        "port": 8000,
        "flags": {"dtype": "bfloat16", "max-model-len": 512, "enforce-eager": True},
    }


class Cluster:
    def __init__(self, hosts, hub, inventory, tmp):
        self.hosts, self.hub, self.inventory, self.tmp = hosts, hub, inventory, tmp
        self.head, self.worker = hosts
        self.others = []  # hosts of the inventory that serve a model of their own
        self.executor, self.state = "mp", "present"
        self.extra_env = {}

    def write_host_vars(self, revision: str) -> None:
        # In the inventory, not -e: extra vars would give every host the cluster's item.
        item = dict(cluster_model(self.hosts, revision, self.executor), state=self.state)
        own = {"vllm_models": [item]}
        if self.executor == "ray":
            own["vllm_runtime_extra_packages"] = [*layout.RUNTIME_EXTRA_PACKAGES, f"ray=={RAY_VERSION}"]
        served = [(h, {"vllm_cluster_address": h.cluster_address, **own}) for h in self.hosts]
        served += [(h, {"vllm_models": [single_model()]}) for h in self.others]
        for host, host_vars in served:
            (self.inventory / "host_vars" / f"{host.name}.yml").write_text(yaml.safe_dump(host_vars))

    def play(self, playbook: str, *args: str, revision: str = "v1", timeout: float = 1200):
        self.write_host_vars(revision)
        summary = self.tmp / f"summary-{time.monotonic_ns()}.json"
        env = {
            "VLLM_FLEET_HUB_PORT": self.hub.url.rsplit(":", 1)[1],
            "VLLM_FLEET_API_KEY": API_KEY,
            "VLLM_FLEET_SUMMARY_JSON": str(summary),
            **self.extra_env,
        }
        started = time.monotonic()
        result = ansible_run.playbook("-i", str(self.inventory), playbook, *args, env=env, timeout=timeout)
        result.seconds = time.monotonic() - started
        assert API_KEY not in result.output, "the API key leaked into ansible's output"
        result.summary = json.loads(summary.read_text()) if summary.is_file() else None
        print(f"\n[multinode] {playbook} {' '.join(args)} ({revision}): rc {result.returncode}, {result.seconds:.0f} s")
        return result


@pytest.fixture(scope="module")
def cluster(host_tooling, env_seed, tmp_path_factory):
    # Both hosts boot with the session's proven vLLM environment (conftest.py EnvSeed): this module
    # is about the cluster, not about building vLLM.
    work = tmp_path_factory.mktemp("multinode")
    inventory = work / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "host_vars").mkdir()
    shutil.copy(ansible_run.REPO_ROOT / "inventories/local/group_vars/all.yml", inventory / "group_vars/all.yml")
    hosts = testhosts.create(2, inventory=inventory / "hosts.yml", seed=env_seed.layer())
    names = [h.name for h in hosts]
    try:
        for host in hosts:
            testhosts.join_cluster_network(host)
        root = tmp_path_factory.mktemp("multinode-hub")
        publish_tiny_model(root, f"{TINY}@v1")
        publish_tiny_model(root, f"{TINY}@v2", seed=1)  # another good revision: other weights
        with StandInHub(root, host=hosts[0].controller_address, port=0) as hub:
            cluster = Cluster(hosts, hub, inventory, work)
            cluster.seed = env_seed.layer()
            yield cluster
            names += [h.name for h in cluster.others]
    finally:
        if os.environ.get("VLLM_FLEET_KEEP_HOSTS") != "1" or os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1":
            testhosts.destroy(names, inventory=inventory / "hosts.yml")


def chat(host, timeout: float = 60) -> dict:
    body = {"model": "tiny-pp", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    req = urllib.request.Request(
        f"http://{host.address}:8000/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def unit_args(host) -> list[str]:
    """The unit's command line, as systemd splits it."""
    return shlex.split(testhosts.ssh(host, f"grep ^ExecStart= {UNIT}").stdout.split("=", 1)[1])


def has_run(args: list[str], run: list[str]) -> bool:
    return any(args[i : i + len(run)] == run for i in range(len(args)))


def started_at(host) -> str:
    return testhosts.ssh(host, "systemctl show -p ActiveEnterTimestamp --value vllm-tiny-pp").stdout.strip()


def test_a_limit_that_splits_the_cluster_is_refused_before_any_change(cluster):
    result = cluster.play("site.yml", "-l", cluster.head.name)
    assert result.returncode != 0
    assert "cluster-in-play" in result.output, result.output[-3000:]
    assert f"run with -l {cluster.head.name},{cluster.worker.name}" in result.output
    assert testhosts.ssh(cluster.head, f"test -e {UNIT}", check=False).returncode != 0, "preflight let a change through"


def failures(output: str) -> str:
    """The failed tasks of a run (the first failure is often far from its end), then its end."""
    lines = output.splitlines()
    picked = [
        "\n".join(lines[max(i - 3, 0) : i + 2])
        for i, line in enumerate(lines)
        if line.startswith(("failed: [", "fatal: ["))
    ]
    return "\n---\n".join(picked)[:6000] + "\n=== end of the run ===\n" + output[-3000:]


@pytest.fixture(scope="module")
def deployed(cluster):
    result = cluster.play("site.yml")
    assert result.returncode == 0, failures(result.output)
    return result


def test_the_head_answers_with_both_stages_and_the_worker_runs_headless(cluster, deployed):
    head_args, worker_args = unit_args(cluster.head), unit_args(cluster.worker)
    master = ["--master-addr", cluster.head.cluster_address, "--master-port", "29501"]
    assert has_run(head_args, ["--nnodes", "2", "--node-rank", "0", *master]), head_args
    assert has_run(worker_args, ["--nnodes", "2", "--node-rank", "1", *master, "--headless"]), worker_args
    assert "--headless" not in head_args
    for host in cluster.hosts:
        env = testhosts.ssh(host, "systemctl show -p Environment --value vllm-tiny-pp").stdout
        assert f"VLLM_HOST_IP={host.cluster_address}" in env and "GLOO_SOCKET_IFNAME=eth1" in env, env
    answer = chat(cluster.head)
    assert answer["choices"][0]["message"]["content"], answer
    # The head's engine ran a pipeline of two stages, one layer each, the second on the worker.
    head_log = testhosts.ssh(cluster.head, "journalctl -u vllm-tiny-pp --no-pager -o cat").stdout
    worker_log = testhosts.ssh(cluster.worker, "journalctl -u vllm-tiny-pp --no-pager -o cat").stdout
    assert "headless" in worker_log.lower(), worker_log[-3000:]
    print(f"\n[multinode] head log tail:\n{head_log[-1500:]}\n[multinode] worker log tail:\n{worker_log[-1500:]}")
    rows = {row["host"]: row for row in deployed.summary["rows"]}
    assert {rows[h.name]["result"] for h in cluster.hosts} == {"updated"}, rows
    # No API on the worker: nothing listens on the model's port there.
    with pytest.raises((urllib.error.URLError, ConnectionError, TimeoutError)):
        chat(cluster.worker, timeout=5)


def test_a_second_run_changes_nothing_on_either_member(cluster, deployed):
    before = {h.name: started_at(h) for h in cluster.hosts}
    result = cluster.play("site.yml")
    assert result.returncode == 0, result.output[-4000:]
    assert "skipping: no hosts matched" in result.output, "a member did not take the fast path"
    assert {h.name: started_at(h) for h in cluster.hosts} == before
    rows = {row["host"]: row for row in result.summary["rows"]}
    assert {rows[h.name]["result"] for h in cluster.hosts} == {"unchanged"}, rows


def test_a_worker_cut_off_from_the_cluster_fails_the_probe(cluster, deployed):
    # Whole, the cluster passes probe.yml on both members (the worker asks the head over the
    # members' network); cut, it fails on both.
    healthy = cluster.play("playbooks/probe.yml")
    assert healthy.returncode == 0, healthy.output[-4000:]
    testhosts.set_cluster_link(cluster.worker, up=False)
    try:
        # The head's /health may still answer (its API server runs), its engine cannot; the worker
        # cannot reach the head's /health at all: short timeouts, both fail.
        timeouts = json.dumps({"vllm_probe_request_timeout": 20, "vllm_probe_health_timeout": 30})
        result = cluster.play("playbooks/probe.yml", "-e", timeouts)
        assert result.returncode != 0, result.output[-3000:]
        assert "failed its probe" in result.output
        recap = result.output.split("PLAY RECAP", 1)[1]
        for host in cluster.hosts:
            assert re.search(rf"{host.name}\s+:.*failed=1", recap), recap
    finally:
        testhosts.set_cluster_link(cluster.worker, up=True)


class WorkerKiller:
    """Kills the worker's vLLM once the new revision's cluster answers /health on the head: a
    worker that dies under a cluster that came up. A loop in a transient unit on the worker (it
    sees the head over the members' network); the revision it rolls back to is left alone.
    Killed after the head is healthy, not before: a head whose worker dies while they connect
    waits for it until the probe's health timeout; one whose worker dies under it fails its
    first request."""

    UNIT = "vf-kill-worker"
    KILLS = "/run/vf-kill-worker.kills"

    def __init__(self, worker, head, commit: str):
        self.worker, self.head, self.commit = worker, head, commit

    def __enter__(self):
        health = f"http://{self.head.cluster_address}:8000/health"
        head_healthy = f"python3 -c 'import urllib.request as u; u.urlopen(\"{health}\", timeout=2)' 2>/dev/null"
        script = (
            f": > {self.KILLS}\n"
            # Often: the probe asks its first chat question a second or two after the head's
            # /health answers, and the kill must come first. Cheapest check first.
            "while sleep 0.2; do\n"
            # The new revision's worker, past its part of the start (its KV cache is set), which
            # it reaches only with the new head; and that head answers.
            "  main=$(systemctl show -p MainPID --value vllm-tiny-pp)\n"
            f"  tr '\\0' ' ' < /proc/$main/cmdline 2>/dev/null | grep -q '/{self.commit}' || continue\n"
            "  since=$(systemctl show -p ActiveEnterTimestamp --value vllm-tiny-pp)\n"
            '  journalctl -u vllm-tiny-pp --since "$since" -o cat | grep -q "GiB for KV cache" || continue\n'
            f"  {head_healthy} || continue\n"
            # Its whole process group (systemd starts a unit's main process in a session of its
            # own; vLLM's stage workers are its children): on the test hosts systemd cannot kill
            # a control group (EIO), and a worker killed by its main process alone kept serving.
            f"  kill -KILL -- -$main && date +%T.%N >> {self.KILLS}\n"
            "done\n"
        )
        # A loop an interrupted earlier run left behind would keep killing: stop it first.
        testhosts.ssh(self.worker, f"systemctl stop {self.UNIT}; systemctl reset-failed {self.UNIT}", check=False)
        testhosts.ssh(self.worker, f"cat > /run/{self.UNIT}.sh <<'EOF'\n{script}EOF")
        testhosts.ssh(self.worker, f"systemd-run --unit={self.UNIT} --collect /bin/bash /run/{self.UNIT}.sh")
        return self

    def kills(self) -> list[str]:
        """When the worker was killed (this run's kills only)."""
        return testhosts.ssh(self.worker, f"cat {self.KILLS}", check=False).stdout.split()

    def __exit__(self, *exc):
        testhosts.ssh(self.worker, f"systemctl stop {self.UNIT}", check=False)


def test_a_worker_killed_mid_rollout_stops_the_rollout_and_both_members_go_back(cluster, deployed):
    # A third host, after the cluster in the rollout's order: the next batch, which must not start.
    third = testhosts.create(1, inventory=cluster.inventory / "hosts.yml", first=3, seed=cluster.seed)[0]
    cluster.others.append(third)
    v2 = cluster.hub.commit(TINY, "v2")
    # A short request timeout: the head whose worker died cannot answer.
    timeouts = json.dumps({"vllm_probe_request_timeout": 30, "vllm_probe_health_timeout": 300})
    with WorkerKiller(cluster.worker, cluster.head, v2) as killer:
        result = cluster.play("site.yml", "-e", timeouts, revision="v2")
        kills = killer.kills()
    assert kills, "v2's cluster never answered /health; its worker was not killed:\n" + failures(result.output)
    assert result.returncode != 0, failures(result.output)
    assert "failed its probe" in result.output, failures(result.output)
    rows = {row["host"]: row for row in result.summary["rows"]}
    assert {rows[h.name]["result"] for h in cluster.hosts} == {"rolled back"}, rows
    assert result.summary["not_reached"] == [third.name], result.summary
    assert testhosts.ssh(third, "test -e /etc/systemd/system/vllm-tiny.service", check=False).returncode != 0
    v1 = cluster.hub.commit(TINY, "v1")
    for host in cluster.hosts:
        assert f"/{TINY}/{v1}" in unit_args(host)[2], host.name
    assert chat(cluster.head)["choices"][0]["message"]["content"]
    print(f"\n[multinode] the worker was killed at {', '.join(kills)}; both rolled back, {third.name} not reached")


# --- executor: ray ---------------------------------------------------------------------------


def journal_since(host, since: float) -> str:
    return testhosts.ssh(host, f"journalctl -u vllm-tiny-pp -o cat --no-pager --since @{since:.0f}").stdout


def wait_for_journal(host, since: float, text: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while True:
        journal = journal_since(host, since)
        if text in journal:
            return journal
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.name}'s journal never said {text!r} in {timeout:.0f} s:\n{journal[-4000:]}")
        time.sleep(3)


@pytest.fixture(scope="module")
def ray_wheels(tmp_path_factory):
    """Ray's wheel and msgpack's for the hosts' Python, through pip and its configured index."""
    dest = tmp_path_factory.mktemp("ray-wheels")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.11", "--platform", "manylinux2014_x86_64", "-d", str(dest),
         f"ray=={RAY_VERSION}", f"msgpack=={MSGPACK_VERSION}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    wheels = sorted(str(p) for p in dest.glob("*.whl"))
    assert len(wheels) == 2, wheels
    return wheels


def test_ray_on_the_cpu_build_is_refused_by_preflight_before_any_change(cluster, deployed):
    cluster.executor = "ray"
    before = unit_args(cluster.head)
    result = cluster.play("playbooks/preflight.yml", "-l", f"{cluster.head.name},{cluster.worker.name}")
    assert result.returncode != 0
    assert "cluster-ray-platform" in result.output, result.output[-3000:]
    assert "current platform cpu does not support ray" in result.output
    assert "use executor: mp" in result.output
    assert unit_args(cluster.head) == before


@pytest.fixture(scope="module")
def ray_units(cluster, deployed, ray_wheels):
    """The Ray cluster's units, written and started by the vllm_service role on both members."""
    cluster.executor = "ray"
    cluster.extra_env = {"VLLM_FLEET_RAY_WHEELS": ",".join(ray_wheels)}
    since = time.time() - 1
    # At v1's commit, the weights directory site.yml deployed (no preflight here to resolve v1).
    cluster.ray_revision = cluster.hub.commit(TINY, "v1")
    members = f"{cluster.head.name},{cluster.worker.name}"
    result = cluster.play(RAY_PLAYBOOK, "-l", members, revision=cluster.ray_revision)
    assert result.returncode == 0, failures(result.output)
    cluster.ray_play_output = result.output
    return since


def test_two_hosts_form_a_ray_cluster_through_their_units_before_vllm_starts(cluster, ray_units):
    head, worker = cluster.head, cluster.worker
    head_args, worker_args = unit_args(head), unit_args(worker)
    sep = head_args.index("--")
    assert head_args[1:sep] == [
        LAUNCHER, "head", "--port", "6379", "--members", f"{head.cluster_address},{worker.cluster_address}",
        "--gpus", "0", "--stop-grace", "30", "--address", head.cluster_address, "--timeout", "600",
    ]  # fmt: skip
    serve = head_args[sep + 1 :]
    assert serve[1] == "serve" and has_run(serve, ["--distributed-executor-backend", "ray"])
    assert not has_run(serve, ["--nnodes", "2"]) and "--headless" not in serve
    assert worker_args[1:] == [
        LAUNCHER, "worker", "--head", f"{head.cluster_address}:6379", "--address", worker.cluster_address,
        "--timeout", "600",
    ]  # fmt: skip
    for host in cluster.hosts:
        mode = testhosts.ssh(host, f"stat -c '%U %a' {LAUNCHER}").stdout.split()
        assert mode == ["root", "644"], (host.name, mode)
        assert testhosts.ssh(host, f"grep -c '^KillMode=mixed$' {UNIT}").stdout.strip() == "1", host.name
    # Ray's own answer, through the units: the worker joined the head, the head counted both
    # members among Ray's live nodes, and only then started vLLM, whose CPU platform refuses Ray.
    wait_for_journal(worker, ray_units, f"joining the Ray cluster at {head.cluster_address}:6379")
    members = f"{head.cluster_address}, {worker.cluster_address}"
    journal = wait_for_journal(head, ray_units, "current platform cpu does not support ray", timeout=420)
    formed = journal.index(f"cluster formed: 2 members ({members})")
    assert formed < journal.index("current platform cpu does not support ray"), journal[-4000:]
    print(f"\n[multinode] ray: formed, then vLLM said: {journal[journal.index('ValueError') :][:100]!r}")


def test_the_ray_head_waits_for_a_missing_worker_without_starting_vllm(cluster, ray_units):
    head, worker = cluster.head, cluster.worker
    testhosts.ssh(worker, "systemctl stop vllm-tiny-pp; systemctl reset-failed vllm-tiny-pp || true")
    since = time.time() - 1
    # KillMode=mixed: the head's Ray stops with its unit at once, not after TimeoutStopSec (60 s),
    # the SIGTERM-to-all that leaves Ray's gcs_server running. Whatever the head was doing (forming,
    # or vLLM starting and failing on the CPU platform in a loop): before vLLM serves, a stop does not
    # wait for the stop grace (30 s) either (measured: 31 s mid-start before, 4 s now).
    testhosts.ssh(head, "systemctl reset-failed vllm-tiny-pp || true; systemctl restart vllm-tiny-pp", timeout=120)
    took = time.time() - since
    assert took < 20, f"the head's unit took {took:.0f} s to restart"
    print(f"\n[multinode] ray: the head's unit restarted in {took:.1f} s")
    waiting = f"1 of 2 members joined; waiting for {worker.cluster_address}"
    wait_for_journal(head, since, waiting, timeout=180)
    time.sleep(8)  # the head keeps waiting (it polls Ray every 2 s): no vLLM, its main process is the launcher
    journal = journal_since(head, since)
    assert "cluster formed" not in journal and "does not support ray" not in journal, journal[-3000:]
    main = testhosts.ssh(head, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value vllm-tiny-pp)/cmdline").stdout
    assert LAUNCHER in main and " head " in main, main
    # Ray's token authentication: both members' secrets files carry the cluster's one token, and a
    # caller without it (here from the worker's host, outside its unit) is refused by the head.
    secrets = [testhosts.ssh(h, "cat /etc/vllm-fleet/tiny-pp.env").stdout for h in cluster.hosts]
    tokens = {re.search(r"^RAY_AUTH_TOKEN=(\S+)$", text, re.M).group(1) for text in secrets}
    assert len(tokens) == 1 and all("RAY_AUTH_MODE=token" in text for text in secrets), "the members' tokens differ"
    probe = (
        f"import ray; ray.init(address='{head.cluster_address}:6379', _node_ip_address='{worker.cluster_address}', "
        "logging_level='ERROR')"
    )
    python = unit_args(worker)[0]
    stranger = testhosts.ssh(worker, f"timeout 60 {python} -c {shlex.quote(probe)} 2>&1", check=False, timeout=90)
    assert stranger.returncode != 0, stranger.stdout[-2000:]
    assert "Authentication token is missing or incorrect" in stranger.stdout, stranger.stdout[-2000:]
    # The token only in the 0600 secrets files: not in a unit, a command line or the play's output.
    (token,) = tokens
    assert token not in cluster.ray_play_output
    for host in cluster.hosts:
        seen = testhosts.ssh(host, f"cat {UNIT}; ps -eo args; journalctl -u vllm-tiny-pp -o cat --no-pager").stdout
        assert token not in seen, f"the Ray token shows on {host.name}"
    testhosts.ssh(worker, "systemctl start vllm-tiny-pp")
    members = f"{head.cluster_address}, {worker.cluster_address}"
    journal = wait_for_journal(head, since, f"cluster formed: 2 members ({members})", timeout=240)
    assert journal.index(waiting) < journal.index("cluster formed")


def test_removing_the_ray_model_takes_its_units_ray_and_the_launcher_away(cluster, ray_units):
    cluster.state = "absent"
    members = f"{cluster.head.name},{cluster.worker.name}"
    result = cluster.play(RAY_PLAYBOOK, "-l", members, revision=cluster.ray_revision)
    assert result.returncode == 0, failures(result.output)
    for host in cluster.hosts:
        left = testhosts.ssh(
            host, f"ls {UNIT} {LAUNCHER} 2>/dev/null; pgrep -a -f '[r]aylet|[g]cs_server|[r]ay[.]scripts' || true"
        ).stdout
        assert left.strip() == "", (host.name, left)
