"""One model across several hosts (issue 17, docs/multinode.md): the `cluster` of a model item,
each member's flags, and preflight judging a cluster with every member's view of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.filter.vllm_flags import (
    vllm_cluster_environment,
    vllm_serve_argv,
    vllm_unit_argv,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cluster, converged, monitoring
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.hub_configs import load_facts
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.inventory import (
    InventoryError,
    normalize_model,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check_host

COMMIT = "3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43"
# Qwen2.5-72B-AWQ over two 4 x T4 nodes: tp 4 on each, pp 2 across them (the example).
BIG = {
    "name": "qwen72b",
    "model": "Qwen/Qwen2.5-72B-Instruct-AWQ",
    "revision": COMMIT,
    "port": 9000,
    "gpus": [0, 1, 2, 3],
    "cluster": {"hosts": ["t4-node-07", "t4-node-08"]},
    "flags": {"tensor-parallel-size": 4, "pipeline-parallel-size": 2, "dtype": "half", "max-model-len": 16384},
}
NODE = {"vllm_gpus": ["T4"] * 4, "vllm_version": "0.32.0", "vllm_api_key": "x", "ansible_host": "10.0.0.9"}


def shipped(item):
    return load_facts(item["model"], fetch=False)


def views(*hosts, models=None, **over):
    """hostvars as the filter sees them: each host's vars, its GPUs found by the play."""
    found = {"gpus": [{"name": "T4", "index": i} for i in range(4)]}
    out = {h: dict(NODE, vllm_models=[models or BIG], vllm_preflight_gpus=found) for h in hosts}
    for host, extra in over.items():
        out[host.replace("_", "-")].update(extra)
    return out


def judge(host, hostvars, play_hosts):
    members = cluster.member_views(hostvars[host]["vllm_models"], hostvars, play_hosts, "0.32.0")
    host_vars = dict(hostvars[host], inventory_hostname=host, vllm_cluster_members=members)
    return check_host(host_vars, facts_for=shipped)


# --- the inventory -------------------------------------------------------------------------


def test_a_cluster_is_normalized_with_vllms_default_port():
    model = normalize_model(BIG)
    assert model["cluster"] == {
        "hosts": ["t4-node-07", "t4-node-08"],
        "master_port": 29501,
        "executor": "mp",
        "addresses": {"t4-node-07": "t4-node-07", "t4-node-08": "t4-node-08"},
    }
    assert normalize_model(dict(BIG, cluster=None))["cluster"] is None


@pytest.mark.parametrize(
    "value, words",
    [
        (["a", "b"], "cluster must be a dict"),
        ({"hosts": ["a"]}, "two or more inventory hostnames"),
        ({"hosts": ["a", "a"]}, "names ['a'] twice"),
        ({"hosts": ["a", "b"], "head": "a"}, "unknown keys ['head']"),
        ({"hosts": ["a", "b"], "master_port": 70000}, "must be a port number"),
        ({"hosts": ["a", "b"], "executor": "slurm"}, "cluster.executor must be one of ['mp', 'ray']"),
        ({"hosts": ["a", "b"], "ray_port": 6380}, "cluster.ray_port is for executor: ray"),
        ({"hosts": ["a", "b"], "executor": "ray", "ray_port": "6380"}, "cluster.ray_port must be a port number"),
    ],
)
def test_a_wrong_cluster_is_refused_with_what_is_wrong(value, words):
    with pytest.raises(InventoryError, match=None) as e:
        normalize_model(dict(BIG, cluster=value))
    assert words in str(e.value)


@pytest.mark.parametrize("flag", ["nnodes", "node-rank", "master-addr", "headless", "distributed-executor-backend"])
def test_the_flags_each_member_gets_are_not_the_models_to_set(flag):
    with pytest.raises(InventoryError, match="set by the service role"):
        normalize_model(dict(BIG, flags=dict(BIG["flags"], **{flag: 1})))


def test_each_member_gets_its_rank_the_heads_address_and_its_own():
    hostvars = {"t4-node-07": {"vllm_cluster_address": "10.0.0.7", "ansible_host": "192.0.2.7"}, "t4-node-08": {}}
    (item,) = cluster.with_addresses([BIG], hostvars)
    assert item["cluster"]["addresses"] == {"t4-node-07": "10.0.0.7", "t4-node-08": "t4-node-08"}
    hostvars["t4-node-08"] = {"ansible_host": "10.0.0.8"}
    (item,) = cluster.with_addresses([BIG], hostvars)
    model = normalize_model(item)
    head_flags, head_env = cluster.member_flags(model, "t4-node-07")
    worker_flags, worker_env = cluster.member_flags(model, "t4-node-08")
    common = {"distributed-executor-backend": "mp", "nnodes": 2, "master-addr": "10.0.0.7", "master-port": 29501}
    assert head_flags == {**common, "node-rank": 0}
    assert worker_flags == {**common, "node-rank": 1, "headless": True}
    assert (head_env, worker_env) == ({"VLLM_HOST_IP": "10.0.0.7"}, {"VLLM_HOST_IP": "10.0.0.8"})
    assert cluster.is_head(model, "t4-node-07") and not cluster.is_head(model, "t4-node-08")
    assert cluster.member_flags(normalize_model(dict(BIG, cluster=None)), "x") == ({}, {})
    with pytest.raises(cluster.ClusterError, match="t4-node-09 is not one of"):
        cluster.member_flags(model, "t4-node-09")


RAY = dict(BIG, cluster={"hosts": ["t4-node-07", "t4-node-08"], "executor": "ray"})
RAY_HOSTVARS = {"t4-node-07": {"vllm_cluster_address": "10.0.0.7"}, "t4-node-08": {"vllm_cluster_address": "10.0.0.8"}}
LAUNCHER = "/usr/local/lib/vllm-fleet/vllm_fleet_ray_launch.py"
# The launcher as the role ships it (the tests load it from there).
LAUNCHER_FILE = Path(__file__).resolve().parents[2] / "roles/vllm_service/files" / cluster.RAY_LAUNCHER


def ray_model(**cluster_over):
    (item,) = cluster.with_addresses([dict(RAY, cluster=dict(RAY["cluster"], **cluster_over))], RAY_HOSTVARS)
    return normalize_model(item)


def test_a_ray_head_runs_the_launcher_then_vllm_with_the_ray_backend_and_a_worker_runs_ray_only():
    model = ray_model()
    assert model["cluster"]["executor"] == "ray" and model["cluster"]["ray_port"] == 6379
    head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER, "cuda", 300)
    sep = head.index("--")
    assert head[:sep] == [
        "/env/bin/python", LAUNCHER, "head", "--port", "6379", "--members", "10.0.0.7,10.0.0.8",
        "--gpus", "8", "--stop-grace", "30", "--address", "10.0.0.7", "--timeout", "300",
    ]  # fmt: skip
    # vLLM gets half the unit's TimeoutStopSec to stop; the rest is systemd's, for Ray.
    short = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER, "cuda", 300, 20)
    assert short[short.index("--stop-grace") + 1] == "10"
    serve = head[sep + 1 :]
    assert serve == vllm_serve_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07")
    assert serve[:2] == ["/env/bin/vllm", "serve"] and serve[-2:] == ["--distributed-executor-backend", "ray"]
    assert not {"--nnodes", "--node-rank", "--master-addr", "--headless"} & set(serve)
    worker = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08", LAUNCHER, "cuda")
    assert worker == [
        "/env/bin/python", LAUNCHER, "worker", "--head", "10.0.0.7:6379", "--address", "10.0.0.8",
        "--timeout", str(cluster.DEFAULT_RAY_FORM_TIMEOUT),
    ]  # fmt: skip
    assert vllm_serve_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08") == []
    # On the CPU platform Ray counts no GPUs (and vLLM refuses it: rule cluster-ray-platform).
    cpu_head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER, "cpu")
    assert cpu_head[cpu_head.index("--gpus") + 1] == "0"
    assert vllm_unit_argv(ray_model(ray_port=6380), "/e", "/m", "::", "t4-node-08", LAUNCHER)[4] == "10.0.0.7:6380"
    # Both members' environments: VLLM_HOST_IP and the interface, as with mp.
    assert vllm_cluster_environment(model, "t4-node-08", "eth1", "cuda") == {
        "VLLM_HOST_IP": "10.0.0.8",
        "GLOO_SOCKET_IFNAME": "eth1",
        "NCCL_SOCKET_IFNAME": "eth1",
    }
    # An mp cluster's or a single host's unit runs vllm serve itself.
    mp = normalize_model(cluster.with_addresses([BIG], RAY_HOSTVARS)[0])
    assert vllm_unit_argv(mp, "/e", "/m", "::", "t4-node-08", LAUNCHER) == vllm_serve_argv(
        mp, "/e", "/m", "::", "t4-node-08"
    )


def test_the_serve_part_of_a_units_command_is_found_behind_the_launcher():
    model = ray_model()
    head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER)
    worker = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08", LAUNCHER)
    assert cluster.serve_part(head) == vllm_serve_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07")
    assert cluster.serve_part(worker) == []
    plain = ["/env/bin/vllm", "serve", "/models/x", "--port", "1", "--", "x"]
    assert cluster.serve_part(plain) == plain


@pytest.mark.parametrize(
    "packages, problem",
    [
        (["ray[cgraph]==2.58.0"], None),
        (["modelscope==1.40.2", "Ray==2.52.1"], None),
        (["ray"], "installs it unpinned (ray)"),
        (["ray>=2.52"], "installs it unpinned (ray>=2.52)"),
        (["ray==2.48.0"], "installs ray==2.48.0, older than Ray's token authentication"),
        (["modelscope==1.40.2"], "does not install it"),
        (["raylib==1.0", "xray==2.58.0"], "does not install it"),
        ([], "does not install it"),
    ],
)
def test_a_ray_requirement_must_be_there_pinned_and_have_token_authentication(packages, problem):
    assert cluster.ray_requirement_problem(packages) == problem


def test_ray_is_refused_on_the_cpu_build_and_where_a_member_does_not_install_it():
    ray_vars = {"vllm_runtime_extra_packages": ["ray[cgraph]==2.58.0"]}
    hostvars = views("t4-node-07", "t4-node-08", models=RAY, t4_node_07=ray_vars, t4_node_08=ray_vars)
    both = ["t4-node-07", "t4-node-08"]
    assert judge("t4-node-07", hostvars, both)["verdict"] == "ok"
    hostvars = views("t4-node-07", "t4-node-08", models=RAY, t4_node_07=ray_vars)
    for host in both:
        errors = judge(host, hostvars, both)["models"][0]["errors"]
        (missing,) = [e for e in errors if e["rule"] == "cluster-ray-installed"]
        assert "t4-node-08's vLLM environment does not install it" in missing["message"]
        assert "ray[cgraph]==" in missing["fix"]
    cpu = dict(ray_vars, vllm_device="cpu", vllm_gpus=[])
    hostvars = views("t4-node-07", "t4-node-08", models=RAY, t4_node_07=cpu, t4_node_08=cpu)
    errors = judge("t4-node-07", hostvars, both)["models"][0]["errors"]
    (refused,) = [e for e in errors if e["rule"] == "cluster-ray-platform"]
    assert "current platform cpu does not support ray" in refused["message"]
    assert "t4-node-07, t4-node-08" in refused["message"] and "executor: mp" in refused["fix"]


# --- preflight across the members -----------------------------------------------------------


def test_a_whole_cluster_in_the_play_is_planned_on_both_hosts_gpus_stage_by_stage():
    hostvars = views("t4-node-07", "t4-node-08")
    for host, rank in (("t4-node-07", 0), ("t4-node-08", 1)):
        result = judge(host, hostvars, ["t4-node-07", "t4-node-08"])
        (plan,) = result["models"]
        assert result["verdict"] == "ok", (plan["errors"], result["errors"])
        assert plan["cluster"] == {"hosts": ["t4-node-07", "t4-node-08"], "head": "t4-node-07", "node_rank": rank}
        assert plan["gpus"] == [f"t4-node-0{n}:{i}" for n in (7, 8) for i in range(4)]
        assert [st["layers"] for st in plan["stages"]] == [[0, 40], [40, 80]]


def test_a_limit_that_splits_the_cluster_is_refused_with_the_limit_that_does_not():
    hostvars = views("t4-node-07", "t4-node-08")
    result = judge("t4-node-07", hostvars, ["t4-node-07"])
    (error,) = result["models"][0]["errors"]
    assert error["rule"] == "cluster-in-play" and "leaves t4-node-08 out" in error["message"]
    assert error["fix"] == "run with -l t4-node-07,t4-node-08 (or a group holding them all)"


def test_a_member_without_the_model_or_with_another_revision_is_named():
    other = dict(BIG, revision="9b1d07e6c2aa5f3e8d1c0b4a7e6f5d4c3b2a1908")
    for theirs, words in (([], "t4-node-08 has no such model"), ([other], "t4-node-08 differs in revision")):
        hostvars = views("t4-node-07", "t4-node-08", t4_node_08={"vllm_models": theirs})
        result = judge("t4-node-07", hostvars, list(hostvars))
        errors = result["models"][0]["errors"]
        assert [e["rule"] for e in errors] == ["cluster-same-model"], errors
        assert words in errors[0]["message"]


def test_a_member_not_in_the_inventory_and_another_vllm_are_refused():
    hostvars = views("t4-node-07", "t4-node-08", t4_node_08={"vllm_version": "0.26.0"})
    rules = [e["rule"] for e in judge("t4-node-07", hostvars, list(hostvars))["models"][0]["errors"]]
    assert rules == ["cluster-same-runtime"]
    alone = {"t4-node-07": views("t4-node-07")["t4-node-07"]}
    rules = [e["rule"] for e in judge("t4-node-07", alone, ["t4-node-07"])["models"][0]["errors"]]
    assert rules == ["cluster-members-known"]


def test_the_smaller_gpus_of_a_member_bound_the_plan():
    # The worker's GPUs are 8 GB cards: the cluster is planned on them, not on the head's T4s.
    small = {"gpus": [{"name": "T4", "index": i, "memory_mib": 7680} for i in range(4)]}
    same = views("t4-node-07", "t4-node-08")
    mixed = views("t4-node-07", "t4-node-08", t4_node_08={"vllm_preflight_gpus": small})
    both = ["t4-node-07", "t4-node-08"]
    assert judge("t4-node-07", same, both)["verdict"] == "ok"
    plan = judge("t4-node-07", mixed, both)["models"][0]
    assert plan["verdict"] == "refused" and plan["errors"][0]["rule"] == "memory-fits", plan["errors"]


# --- what each member runs, answers and exports ------------------------------------------------

ADDRESSED = cluster.with_addresses(
    [BIG], {"t4-node-07": {"vllm_cluster_address": "10.0.0.7"}, "t4-node-08": {"vllm_cluster_address": "10.0.0.8"}}
)


def test_each_members_unit_runs_its_part_and_only_the_head_serves_the_api():
    model = normalize_model(ADDRESSED[0])
    head = vllm_serve_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07")
    worker = vllm_serve_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08")
    single = vllm_serve_argv(dict(model, cluster=None), "/env/bin", "/models", "0.0.0.0", "t4-node-07")
    cluster_part = ["--distributed-executor-backend", "mp", "--nnodes", "2"]
    assert head[len(single) :][:4] == cluster_part and worker[len(single) :][:4] == cluster_part
    assert head[len(single) :][4:] == ["--node-rank", "0", "--master-addr", "10.0.0.7", "--master-port", "29501"]
    assert worker[len(single) :][4:] == [
        "--node-rank",
        "1",
        "--master-addr",
        "10.0.0.7",
        "--master-port",
        "29501",
        "--headless",
    ]
    assert vllm_cluster_environment(model, "t4-node-08") == {"VLLM_HOST_IP": "10.0.0.8"}
    assert vllm_cluster_environment(model, "t4-node-08", "eth1", "cpu") == {
        "VLLM_HOST_IP": "10.0.0.8",
        "GLOO_SOCKET_IFNAME": "eth1",
    }
    assert vllm_cluster_environment(model, "t4-node-07", "bond1", "cuda") == {
        "VLLM_HOST_IP": "10.0.0.7",
        "GLOO_SOCKET_IFNAME": "bond1",
        "NCCL_SOCKET_IFNAME": "bond1",
    }
    assert vllm_cluster_environment(dict(model, cluster=None), "t4-node-07", "eth1") == {}
    assert cluster.is_head(model, "t4-node-07") and not cluster.is_head(model, "t4-node-08")


def test_a_worker_is_neither_a_scrape_target_nor_a_health_url():
    model = normalize_model(ADDRESSED[0])
    head = monitoring.scrape_targets("t4-node-07", "10.0.0.7", [model], "0.32.0", "cuda")
    assert [e["targets"] for e in head] == [["10.0.0.7:9000"]]
    assert monitoring.scrape_targets("t4-node-08", "10.0.0.8", [model], "0.32.0", "cuda") == []
    record = {"unit_path": "/u", "env_path": "/e", "env_dir": "/env", "model_dir": "/m", "model": model}
    args = ("/units", "/envs", "/state", "0.0.0.0")
    assert converged.deployed_state({"qwen72b": record}, [model], *args, "t4-node-07")["health_urls"] == [
        "http://127.0.0.1:9000/health"
    ]
    assert converged.deployed_state({"qwen72b": record}, [model], *args, "t4-node-08")["health_urls"] == []


# --- batches ----------------------------------------------------------------------------------


def test_serial_counts_a_cluster_as_one_unit_and_keeps_it_whole():
    order = ["a", "n1", "b", "c", "n2", "d"]
    plan = cluster.batches(order, order, [["n1", "n2"]], [1, "25%", "100%"])
    # Units: a, (n1 n2), b, c, d: 5 units; 25 % of 5 rounds down to 1 unit, as Ansible's serial does.
    assert plan["hosts"] == ["a", "n1", "n2", "b", "c", "d"]
    assert plan["serial"] == [1, 2, 3]
    plan = cluster.batches(order, order, [["n1", "n2"]], [2, "100%"])
    assert plan["serial"] == [3, 3] and plan["hosts"][:3] == ["a", "n1", "n2"]


def test_a_member_that_took_the_fast_path_rejoins_its_clusters_run():
    order = ["n1", "n2", "x"]
    plan = cluster.batches(order, ["n2"], [["n1", "n2"]], [1])
    assert plan["hosts"] == ["n1", "n2"] and plan["serial"] == [2]
    assert plan["joined"] == {"n1": "n2"}
    assert cluster.batches(order, ["x"], [["n1", "n2"]], [1]) == {"hosts": ["x"], "serial": [1], "joined": {}}


def test_a_clusters_members_share_a_batch_wherever_the_inventory_lists_them():
    order = ["w", "a", "b", "h"]
    plan = cluster.batches(order, order, [["h", "w"]], [1, "100%"])
    assert plan["hosts"] == ["w", "h", "a", "b"] and plan["serial"] == [2, 2]
    assert cluster.clusters_of({"h": [BIG], "w": [BIG], "z": [dict(BIG, name="x", cluster=None)]}) == [
        ["t4-node-07", "t4-node-08"]
    ]


def test_a_run_that_leaves_a_member_out_or_a_refused_peer_refuses_the_host():
    assert cluster.left_out([BIG], ["t4-node-07", "t4-node-08", "x"]) == []
    (words,) = cluster.left_out([BIG], ["t4-node-07"])
    assert "leaves out t4-node-08 -- fix: run with -l t4-node-07,t4-node-08" in words
    hostvars = {"t4-node-07": {}, "t4-node-08": {"vllm_preflight_result": {"failed": True}}}
    assert cluster.refused_peers([BIG], "t4-node-07", hostvars) == [
        "qwen72b: t4-node-08, a member of its cluster, was refused (its errors are above)"
    ]
    assert cluster.refused_peers([BIG], "t4-node-08", hostvars) == []
    assert cluster.refused_peers([dict(BIG, state="absent")], "t4-node-07", hostvars) == []
    # A member that failed an earlier task (its GPUs) or stopped answering left the play unjudged.
    hostvars["t4-node-08"] = {}
    assert cluster.refused_peers([BIG], "t4-node-07", hostvars, ["t4-node-07", "t4-node-08"]) == []
    assert cluster.refused_peers([BIG], "t4-node-07", hostvars, ["t4-node-07"]) == [
        "qwen72b: t4-node-08, a member of its cluster, failed or stopped answering (see above)"
    ]


def test_a_member_whose_peer_failed_before_its_units_were_in_place_stops_too():
    ready = {"t4-node-07": {"deploy_units_in_place": True}, "t4-node-08": {"deploy_units_in_place": True}}
    assert cluster.peers_without([BIG], "t4-node-07", ready, "deploy_units_in_place") == []
    behind = {"t4-node-07": {"deploy_units_in_place": True}, "t4-node-08": {}}
    (words,) = cluster.peers_without([BIG], "t4-node-07", behind, "deploy_units_in_place")
    assert "t4-node-08 failed before its units were in place" in words
    assert cluster.peers_without([dict(BIG, cluster=None)], "t4-node-07", behind, "deploy_units_in_place") == []


def test_clusters_that_share_a_host_are_one_unit():
    order = ["a", "b", "c", "d"]
    plan = cluster.batches(order, ["a"], [["a", "b"], ["b", "c"]], [1, "100%"])
    assert plan["hosts"] == ["a", "b", "c"] and plan["serial"] == [3]
    assert plan["joined"] == {"b": "a", "c": "b"}


# --- the Ray launcher (roles/vllm_service/files) --------------------------------------------


def load_launcher():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ray_launch", LAUNCHER_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_launcher_reads_the_argv_the_role_writes():
    launch = load_launcher()
    model = ray_model()
    head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER, "cuda", 300)
    args, serve = launch.parse(head[2:])
    got = (args.role, args.port, args.members, args.gpus, args.address, args.timeout, args.stop_grace)
    assert got == ("head", 6379, "10.0.0.7,10.0.0.8", 8, "10.0.0.7", 300, 30)
    assert serve == cluster.serve_part(head)
    worker = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08", LAUNCHER, "cuda")
    args, serve = launch.parse(worker[2:])
    assert (args.role, args.head, args.address, serve) == ("worker", "10.0.0.7:6379", "10.0.0.8", [])


def test_the_head_waits_for_every_member_by_address_then_for_the_gpus():
    launch = load_launcher()
    members = ["10.0.0.7", "10.0.0.8"]
    assert launch.formed(members, 8, ["10.0.0.7"], 4) == "1 of 2 members joined; waiting for 10.0.0.8"
    # A node at another address (a stray raylet) does not stand in for a member.
    assert "waiting for 10.0.0.8" in launch.formed(members, 8, ["10.0.0.7", "10.0.0.9"], 8)
    assert launch.formed(members, 8, ["10.0.0.8", "10.0.0.7"], 4) == "every member joined; 4 of 8 GPUs in the cluster"
    assert launch.formed(members, 8, ["10.0.0.8", "10.0.0.7"], 8) is None
    assert launch.formed(members, 0, members, 0) is None


def test_a_worker_gives_up_on_a_head_that_never_answers():
    import socket

    launch = load_launcher()
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        launch.POLL_SECONDS = 0.05
        args, _serve = launch.parse(
            ["worker", "--head", f"127.0.0.1:{port}", "--address", "127.0.0.1", "--timeout", "0.2"]
        )
        assert launch.run_worker(args) == 1


def test_with_ray_the_stages_follow_vllms_worker_order_not_the_listed_one():
    # vLLM's Ray executor ranks the driver's node first, then the others by IP *string*
    # (ray_executor.py sort_by_driver_then_worker_ip): "10.0.0.10" before "10.0.0.9".
    hosts = ["n7", "n9", "n10"]
    addresses = {"n7": "10.0.0.7", "n9": "10.0.0.9", "n10": "10.0.0.10"}
    item = dict(BIG, gpus=[0, 1], cluster={"hosts": hosts, "executor": "ray"})
    item["flags"] = dict(BIG["flags"], **{"tensor-parallel-size": 2, "pipeline-parallel-size": 3})
    ray_vars = {"vllm_runtime_extra_packages": ["ray==2.58.0"]}
    hostvars = views(*hosts, models=item)
    for h in hosts:
        hostvars[h].update(ray_vars, vllm_cluster_address=addresses[h])
    assert cluster.stage_hosts(normalize_model(item), addresses) == ["n7", "n10", "n9"]
    mp = dict(item, cluster={"hosts": hosts})
    assert cluster.stage_hosts(normalize_model(mp), addresses) == hosts
    result = judge("n9", hostvars, hosts)
    (plan,) = result["models"]
    assert result["verdict"] == "ok", plan["errors"]
    assert plan["gpus"] == ["n7:0", "n7:1", "n10:0", "n10:1", "n9:0", "n9:1"]
    assert plan["cluster"]["node_rank"] == 2


def test_a_ray_heads_start_record_reads_the_models_flags_behind_the_launcher():
    # The probe keeps the flags a start ran (vllm_start_record.unit_flags, from ExecStart=): on a
    # Ray head they follow the launcher, and the role's own (the Ray backend) are left out.
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import systemd
    from ansible_collections.vllm_fleet.fleet.plugins.modules import vllm_start_record

    model = ray_model()
    head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER)
    worker = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08", LAUNCHER)
    flags = vllm_start_record.unit_flags(systemd.exec_line(head))
    assert flags == {"tensor-parallel-size": 4, "pipeline-parallel-size": 2, "dtype": "half", "max-model-len": 16384}
    assert vllm_start_record.unit_flags(systemd.exec_line(worker)) is None


def launcher_process(then: str, *args: str, **popen):
    """A Python process that loads the launcher as `l` (its own signal handlers, not pytest's)
    and runs ``then``; ``args`` follow as sys.argv[2:]."""
    import subprocess
    import sys

    load = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('l', sys.argv[1]);"
        " l = importlib.util.module_from_spec(spec); spec.loader.exec_module(l); "
    )
    return subprocess.Popen([sys.executable, "-c", load + then, str(LAUNCHER_FILE), *args], **popen)


def test_the_head_passes_a_stop_on_to_vllm_and_kills_it_after_the_grace():
    import signal
    import time

    supervise = "sys.exit(l.supervise([sys.executable, '-c', sys.argv[2]], 1.0))"
    # A child that stops on SIGTERM exits with its own code; one that ignores it is killed.
    polite = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(3)); time.sleep(60)"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    for child, code in ((polite, 3), (stubborn, 128 + signal.SIGKILL)):
        proc = launcher_process(supervise, child)
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == code
        assert time.monotonic() - started < 10
    assert launcher_process(supervise, "raise SystemExit(5)").wait(timeout=20) == 5


def test_a_vllm_still_starting_gets_the_short_grace_and_a_stop_before_vllm_is_clean():
    import signal
    import subprocess
    import time

    # vLLM that ignores SIGTERM (its engine waiting for Ray) and does not serve yet: the head's stop
    # grace (here 30 s) is for requests in flight, and it has none.
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    starting = "sys.exit(l.supervise([sys.executable, '-c', sys.argv[2]], 30.0, serving=lambda: False))"
    serving = "sys.exit(l.supervise([sys.executable, '-c', sys.argv[2]], 6.0, serving=lambda: True))"
    for then, least, most in ((starting, 0, 10), (serving, 6, 15)):
        proc = launcher_process(then, stubborn)
        time.sleep(2.0)  # the launcher asked serving() once
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 128 + signal.SIGKILL
        assert least <= time.monotonic() - started < most, (then, time.monotonic() - started)
    # The head's unit: a stop asked for ends it cleanly, whatever vLLM's status (a unit stopped while
    # vLLM started was `failed` with 137); vLLM that fails on its own fails it.
    serve = "sys.exit(l.serve([sys.executable, '-c', sys.argv[2]], 30.0))"
    proc = launcher_process(serve, stubborn, stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and f"stopped (vLLM exited {128 + signal.SIGKILL})" in out, out
    assert launcher_process(serve, "raise SystemExit(1)").wait(timeout=20) == 1
    # Before vLLM runs (Ray starting, the members forming), a stop exits at once and cleanly.
    proc = launcher_process("l.stop_before_vllm(); l.time.sleep(60)", stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "asked to stop before vLLM started" in out, out


def test_the_head_asks_vllms_own_address_whether_it_serves():
    launch = load_launcher()
    assert launch.health_url(["vllm", "serve", "/m", "--host", "0.0.0.0", "--port", "8000"]) == (
        "http://127.0.0.1:8000/health"
    )
    assert launch.health_url(["vllm", "serve", "/m", "--host=10.0.0.7", "--port=9001"]) == "http://10.0.0.7:9001/health"
    assert launch.health_url(["vllm", "serve", "/m", "--host", "fd00::7"]) == "http://[fd00::7]:8000/health"
    assert launch.health_url(["vllm", "serve", "/m"]) == "http://127.0.0.1:8000/health"
    assert launch.health_url(["vllm", "serve", "/m", "--uds", "/run/v.sock"]) is None
    # Nothing listens there: not serving. No URL to ask: the full grace.
    assert launch.answers("http://127.0.0.1:9/health", timeout=1) is False
    assert launch.answers(None) is True


def test_a_worker_joins_again_when_its_ray_exits_until_it_is_stopped():
    import signal
    import subprocess
    import time

    # `ray start --block` stands in as a process that joins and then loses its head at once.
    worker = (
        "l.POLL_SECONDS = 0.2; l.port_open = lambda *a, **k: True;"
        " l.ray_command = lambda: [sys.executable, '-c', 'print(\"JOINED\", flush=True); raise SystemExit(1)'];"
        " args, _ = l.parse(['worker', '--head', '10.0.0.7:6379', '--address', '10.0.0.8']);"
        " sys.exit(l.run_worker(args))"
    )
    proc = launcher_process(worker, stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert out.count("JOINED") >= 2, out
    assert out.count("left the Ray cluster (ray exited 1); joining again") >= 1, out
    assert proc.returncode == 0, out


def test_the_launcher_refuses_a_ray_without_token_authentication():
    launch = load_launcher()
    assert launch.ray_too_old("2.48.0") and launch.ray_too_old("1.13.1") and launch.ray_too_old("dev")
    assert not launch.ray_too_old("2.52.0") and not launch.ray_too_old("2.58.0") and not launch.ray_too_old("3.0.0")


def test_the_rollout_summary_reads_a_ray_heads_flags_behind_its_launcher():
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rollout

    model = ray_model()
    head = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-07", LAUNCHER)
    items = rollout._flag_items(head)
    assert "--dtype half" in items and "--distributed-executor-backend ray" in items
    assert not [i for i in items if LAUNCHER in i or "--members" in i or i.endswith("/vllm serve")], items
    assert items[0] == "--host 0.0.0.0", items
    worker = vllm_unit_argv(model, "/env/bin", "/models", "0.0.0.0", "t4-node-08", LAUNCHER)
    assert rollout._flag_items(worker) == []
