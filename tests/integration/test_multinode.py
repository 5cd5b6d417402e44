"""One model across two real systemd test hosts (issue 17, docs/multinode.md): the tiny model served
with pipeline parallel 2 by real vLLM (CPU build), one layer on each host, through vLLM's
multiprocessing executor (--nnodes 2; the worker runs --headless). Tests run in file order:

1. a -l that leaves the worker out is refused in preflight, with the -l that does not;
2. site.yml deploys the cluster: the head answers the OpenAI API, the worker runs its stage;
3. a re-run changes nothing (both members take the fast path);
4. a bad change (a revision that answers only newlines) fails the probe on both members, and both
   are put back to v1, which answers again;
5. the worker cut from the members' network: the head cannot answer, and probe.yml fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.hosts import testhosts
from tests.integration import ansible_run
from tests.support.hub import StandInHub, publish_tiny_model

pytestmark = [pytest.mark.hosts, pytest.mark.vllm, pytest.mark.slow]

TINY = "vllm-fleet/tiny-qwen2"  # two decoder layers: one per stage
API_KEY = "vf-multinode-" + os.urandom(8).hex()
UNIT = "/etc/systemd/system/vllm-tiny-pp.service"


def cluster_model(hosts, revision: str = "v1") -> dict:
    return {
        "name": "tiny-pp",
        "model": TINY,
        "revision": revision,
        "port": 8000,
        "cluster": {"hosts": [h.name for h in hosts]},
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


class Cluster:
    def __init__(self, hosts, hub, inventory, tmp):
        self.hosts, self.hub, self.inventory, self.tmp = hosts, hub, inventory, tmp
        self.head, self.worker = hosts

    def play(self, playbook: str, *args: str, revision: str = "v1", timeout: float = 1200):
        extra = {"vllm_models": [cluster_model(self.hosts, revision)]}
        summary = self.tmp / f"summary-{time.monotonic_ns()}.json"
        env = {
            "VLLM_FLEET_HUB_PORT": self.hub.url.rsplit(":", 1)[1],
            "VLLM_FLEET_API_KEY": API_KEY,
            "VLLM_FLEET_SUMMARY_JSON": str(summary),
        }
        started = time.monotonic()
        result = ansible_run.playbook(
            "-i", str(self.inventory), playbook, "-e", json.dumps(extra), *args, env=env, timeout=timeout
        )
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
    try:
        for host in hosts:
            address = testhosts.join_cluster_network(host)
            (inventory / "host_vars" / f"{host.name}.yml").write_text(yaml.safe_dump({"vllm_cluster_address": address}))
        root = tmp_path_factory.mktemp("multinode-hub")
        publish_tiny_model(root, f"{TINY}@v1")
        publish_tiny_model(root, f"{TINY}@v3-newline", variant="newline")
        with StandInHub(root, host=hosts[0].controller_address, port=0) as hub:
            yield Cluster(hosts, hub, inventory, work)
    finally:
        if os.environ.get("VLLM_FLEET_KEEP_HOSTS") != "1" or os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1":
            testhosts.destroy([h.name for h in hosts], inventory=inventory / "hosts.yml")


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


def test_a_bad_change_fails_on_both_members_and_both_go_back(cluster, deployed):
    result = cluster.play("site.yml", revision="v3-newline")
    assert result.returncode != 0
    rows = {row["host"]: row for row in result.summary["rows"]}
    assert {rows[h.name]["result"] for h in cluster.hosts} == {"rolled back"}, rows
    v1 = cluster.hub.commit(TINY, "v1")
    for host in cluster.hosts:
        assert f"/{TINY}/{v1}" in unit_args(host)[2], host.name
    assert chat(cluster.head)["choices"][0]["message"]["content"]


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
