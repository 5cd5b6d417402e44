"""One model served by several hosts (docs/multinode.md): a model item's `cluster`, each member's
part in it, and what every member must agree on before any of them changes.

vLLM runs one model over several nodes with its own multiprocessing executor (the `mp` backend:
`--nnodes N --node-rank R --master-addr HEAD --master-port P`; every node but the first runs
`--headless`, without an API server). Node R runs the ranks R x (tp x pp / N) onwards, and rank r
is pipeline stage r // tp, so the hosts' order in `cluster.hosts` is the pipeline's order: the
first is the head, which holds stage 0 and answers the OpenAI API. That is the default (`executor: mp`):
it needs nothing beyond vLLM (vllm/config/parallel.py: nnodes > 1 only with mp, uni or
external_launcher), and it is the one vLLM's CPU build can serve with.

`executor: ray` is for GPU fleets that run Ray: every member's unit runs the shipped launcher
(roles/vllm_service/files/vllm_fleet_ray_launch.py, ``launcher_argv``). On the head it starts the
Ray head, waits until every member has joined with its GPUs, then runs `vllm serve ...
--distributed-executor-backend ray` (RAY_ADDRESS set) as its child; on a worker it waits for the
head's port, then runs `ray start --address HEAD:PORT --block`, rejoining after a head restart.
Ray places the stages itself (stage_hosts), and vLLM's CPU platform refuses it ("current platform
cpu does not support ray", v1/executor/ray_utils.py): rule cluster-ray-platform.

The same item, in every member's `vllm_models` (a group's vars), describes the whole cluster; this
module never reads the inventory itself: callers hand it each member's view (``member_views``).
"""

from __future__ import annotations

import ipaddress
import re

from .layout import RUNTIME_EXTRA_PACKAGES

# vLLM's own default for --master-port (vllm/engine/arg_utils.py): where node 0's torch.distributed
# store listens for the other nodes.
DEFAULT_MASTER_PORT = 29501
# Ray's own default GCS port (`ray start --head --port`): where the workers join the head.
DEFAULT_RAY_PORT = 6379
EXECUTORS = ("mp", "ray")
# How long a member's launcher waits for the others (the head for every member, a worker for the
# head's port) before it gives up and its unit fails: bounded, so a missing member shows as a
# failed unit and a failed probe, not a start that never ends.
DEFAULT_RAY_FORM_TIMEOUT = 600
# The launcher's file name, in the vllm_service role's files and (by default) on the hosts.
RAY_LAUNCHER = "vllm_fleet_ray_launch.py"

# The flags a cluster's units get from this module (argv_for): a model's own flags may not set
# them (inventory.RESERVED_FLAGS), since each member needs its own value.
CLUSTER_FLAGS = ("distributed-executor-backend", "nnodes", "node-rank", "master-addr", "master-port", "headless")

# What every member's copy of the model item must share: the same weights, flags and GPUs per host.
SHARED_FIELDS = ("model", "revision", "port", "flags", "gpus", "cluster", "state")


class ClusterError(ValueError):
    pass


def normalize_cluster(name: str, raw) -> dict | None:
    """A model item's `cluster` with defaults filled: {hosts: [head, worker...], master_port,
    addresses}. ``addresses`` (each member's address on the network the members share) is filled
    by the play from each member's vllm_cluster_address (filter vllm_cluster_addressed); a member
    without one is reached by its inventory name."""
    if raw in (None, {}, ""):
        return None
    if not isinstance(raw, dict):
        raise ClusterError(f"model {name}: cluster must be a dict (hosts: [head, worker, ...]), not {raw!r}")
    unknown = sorted(set(raw) - {"hosts", "master_port", "addresses", "executor", "ray_port"})
    if unknown:
        raise ClusterError(
            f"model {name}: cluster has unknown keys {unknown}: it takes hosts, master_port, executor and ray_port"
        )
    executor = raw.get("executor", "mp")
    if executor not in EXECUTORS:
        raise ClusterError(f"model {name}: cluster.executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if "ray_port" in raw and executor != "ray":
        raise ClusterError(f"model {name}: cluster.ray_port is for executor: ray (this cluster's is {executor})")
    ray_port = raw.get("ray_port", DEFAULT_RAY_PORT)
    if isinstance(ray_port, bool) or not isinstance(ray_port, int) or not 1 <= ray_port <= 65535:
        raise ClusterError(f"model {name}: cluster.ray_port must be a port number, got {ray_port!r}")
    hosts = raw.get("hosts")
    if not isinstance(hosts, list) or len(hosts) < 2 or not all(isinstance(h, str) and h for h in hosts):
        raise ClusterError(
            f"model {name}: cluster.hosts must list two or more inventory hostnames, the head first, got {hosts!r}"
        )
    doubled = sorted({h for h in hosts if hosts.count(h) > 1})
    if doubled:
        raise ClusterError(f"model {name}: cluster.hosts names {doubled} twice")
    port = raw.get("master_port", DEFAULT_MASTER_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ClusterError(f"model {name}: cluster.master_port must be a port number, got {port!r}")
    addresses = raw.get("addresses") or {}
    if not isinstance(addresses, dict) or not all(isinstance(v, str) and v for v in addresses.values()):
        raise ClusterError(f"model {name}: cluster.addresses must map hostnames to addresses, got {addresses!r}")
    out = {
        "hosts": list(hosts),
        "master_port": port,
        "executor": executor,
        "addresses": {h: str(addresses.get(h) or h) for h in hosts},
    }
    if executor == "ray":
        out["ray_port"] = ray_port
    return out


def _member_rank(model: dict, host: str) -> int:
    """node_rank, for a host that must be a member."""
    rank = node_rank(model, host)
    if rank is None:
        raise ClusterError(f"model {model['name']}: {host} is not one of cluster.hosts {model['cluster']['hosts']}")
    return rank


def node_rank(model: dict, host: str) -> int | None:
    """The host's place in the model's cluster (0: the head), None when it is not a member."""
    cluster = model.get("cluster")
    if not cluster or host not in cluster["hosts"]:
        return None
    return cluster["hosts"].index(host)


def is_head(model: dict, host: str) -> bool:
    """Whether ``host`` answers the model's API: a single-host model's host, or a cluster's head."""
    return not model.get("cluster") or node_rank(model, host) == 0


def member_flags(model: dict, host: str) -> tuple[dict, dict]:
    """(flags, environment) the host's unit adds for its part in the cluster; ({}, {}) for a
    single-host model. ``model``: normalized (inventory.normalize_model)."""
    cluster = model.get("cluster")
    if not cluster:
        return {}, {}
    addresses = cluster["addresses"]
    rank = _member_rank(model, host)
    head = cluster["hosts"][0]
    if cluster.get("executor") == "ray":
        # Ray places the workers itself: the head's vLLM needs only the backend (and a worker runs
        # no vLLM of its own: launcher_argv). VLLM_HOST_IP: the driver's address, which vLLM
        # looks for among the Ray nodes' (v1/executor/ray_utils.py).
        return ({"distributed-executor-backend": "ray"} if rank == 0 else {}), {"VLLM_HOST_IP": addresses[host]}
    flags = {
        "distributed-executor-backend": "mp",
        "nnodes": len(cluster["hosts"]),
        "node-rank": rank,
        "master-addr": addresses[head],
        "master-port": cluster["master_port"],
    }
    if rank:
        flags["headless"] = True
    # vLLM binds its control sockets to VLLM_HOST_IP and tells the other nodes that address; unset,
    # it guesses from the default route (vllm/utils/network_utils.py get_ip), which need not be
    # the members' network.
    return flags, {"VLLM_HOST_IP": addresses[host]}


def member_environment(model: dict, host: str, interface: str = "", device: str = "cuda") -> dict:
    """The environment the host's unit adds for its part in the model's cluster; {} for a
    single-host model. ``interface``: the one that carries the host's cluster address.

    VLLM_HOST_IP: vLLM binds its control sockets to it and tells the other nodes (member_flags).
    GLOO_SOCKET_IFNAME: torch.distributed's gloo, which vLLM uses across the nodes on CPUs and for
    its CPU-side groups on GPUs, otherwise announces the address the host's name resolves to:
    127.0.1.1 on a Debian host ("Gloo connectFullMesh failed ... remote=[127.0.1.1]", seen on the
    test hosts). NCCL_SOCKET_IFNAME: NCCL's bootstrap, on GPUs, for the same reason."""
    _flags, env = member_flags(model, host)
    if env and interface:
        env["GLOO_SOCKET_IFNAME"] = interface
        if device == "cuda":
            env["NCCL_SOCKET_IFNAME"] = interface
    return env


def runs_ray(model: dict) -> bool:
    return bool(model.get("cluster")) and model["cluster"].get("executor") == "ray"


def runs_vllm(model: dict, host: str) -> bool:
    """Whether the host's unit for the model runs `vllm serve` (a Ray worker's runs Ray only)."""
    return not runs_ray(model) or node_rank(model, host) == 0


def launcher_argv(
    model: dict, host: str, python: str, launcher: str, device: str = "cuda", timeout: int = 0, stop_sec: int = 60
) -> list:
    """The start of a Ray member's unit command (``python launcher ...``), before `-- <vllm serve
    argv>` on the head; [] for a model that does not run Ray. ``python``: the vLLM environment's (it
    holds Ray); ``timeout``: how long the member waits for the others (DEFAULT_RAY_FORM_TIMEOUT);
    ``stop_sec``: the unit's TimeoutStopSec, half of which vLLM gets to stop before the head's
    launcher kills it (the rest is systemd's, for Ray)."""
    if not runs_ray(model):
        return []
    cluster, rank = model["cluster"], _member_rank(model, host)
    addresses, port = cluster["addresses"], cluster["ray_port"]
    wait = ["--address", addresses[host], "--timeout", str(int(timeout or DEFAULT_RAY_FORM_TIMEOUT))]
    if rank:
        return [python, launcher, "worker", "--head", f"{addresses[cluster['hosts'][0]]}:{port}", *wait]
    # Every member must have joined with its share of tp x pp GPUs before vLLM asks Ray for them
    # (vLLM's own wait for a placement group would block without saying which member is missing);
    # on the CPU platform Ray has no GPU resource to count (vLLM refuses Ray there anyway).
    gpus = (gpus_per_member(model) or 0) * len(cluster["hosts"]) if device == "cuda" else 0
    members = ",".join(addresses[h] for h in cluster["hosts"])
    grace = str(max(int(stop_sec) // 2, 1))
    return [
        python, launcher, "head", "--port", str(port), "--members", members, "--gpus", str(gpus),
        "--stop-grace", grace, *wait,
    ]  # fmt: skip


def stage_hosts(model: dict, addresses: dict | None = None) -> list[str]:
    """The members in the order of the pipeline's stages (each holds tp x pp / N ranks in a row).

    mp: cluster.hosts as written (node R runs the ranks from R x tp x pp / N). Ray: the head (the
    driver's node), then the others by address as a string: vLLM's Ray executor sorts its workers
    by (driver's node first, workers on the node, IP string) (vllm/v1/executor/ray_executor.py
    sort_by_driver_then_worker_ip), and every member gives the same count (cluster-gpus-split).
    ``addresses``: each member's, where the item does not carry them yet (preflight's views)."""
    hosts = list(model["cluster"]["hosts"])
    if not runs_ray(model):
        return hosts
    known = dict(model["cluster"].get("addresses") or {}, **(addresses or {}))
    return [hosts[0], *sorted(hosts[1:], key=lambda h: str(known.get(h) or h))]


def serve_part(argv: list[str]) -> list[str]:
    """The `vllm serve ...` part of a unit's command: all of it, or what follows `--` after a Ray
    member's launcher (launcher_argv); [] for a Ray worker's, which runs no vLLM."""
    # Told by its shape (python LAUNCHER head|worker ...), not the launcher's file name, which
    # vllm_service_ray_launcher may change.
    if len(argv) > 2 and argv[1].endswith(".py") and argv[2] in ("head", "worker"):
        return argv[argv.index("--") + 1 :] if "--" in argv else []
    return list(argv)


# Ray's token authentication (RAY_AUTH_MODE=token, which every Ray member's unit turns on) exists
# from Ray 2.52; an older Ray ignores the setting and leaves its control plane open.
MIN_RAY_VERSION = (2, 52)


def ray_requirement(packages) -> str | None:
    """The requirement of a list of pip requirements that installs Ray ("ray[cgraph]==2.58.0"), or None."""
    for requirement in packages or []:
        name = re.match(r"\s*([A-Za-z0-9._-]+)", str(requirement))
        if name and re.sub(r"[-_.]+", "-", name.group(1)).lower() == "ray":
            return str(requirement).strip()
    return None


def ray_requirement_problem(packages) -> str | None:
    """What is wrong with a member's Ray requirement for a Ray cluster, or None: it must be there,
    pinned (==, as every package of a host's environment), at MIN_RAY_VERSION or later."""
    requirement = ray_requirement(packages)
    if requirement is None:
        return "does not install it"
    pinned = re.search(r"==\s*(\d+)\.(\d+)", requirement)
    if not pinned:
        return f"installs it unpinned ({requirement})"
    if (int(pinned.group(1)), int(pinned.group(2))) < MIN_RAY_VERSION:
        return f"installs {requirement}, older than Ray's token authentication"
    return None


def gpus_per_member(model: dict) -> int | None:
    """GPUs each member gives the model: tp x pp spread evenly over the hosts (None when uneven)."""
    flags, cluster = model.get("flags") or {}, model.get("cluster")
    world = int(flags.get("tensor-parallel-size") or 1) * int(flags.get("pipeline-parallel-size") or 1)
    nodes = len(cluster["hosts"]) if cluster else 1
    return world // nodes if world % nodes == 0 else None


def member_address(own, name: str) -> str:
    """A member's address on the members' network: vllm_cluster_address, else ansible_host, else
    its inventory name (``own``: the member's variables)."""
    return str(own.get("vllm_cluster_address") or own.get("ansible_host") or name)


def is_ipv4_address(value: str) -> bool:
    # IPv4 only: the members' network was measured on IPv4 (docs/multinode.md), and the service role
    # finds the address's interface with `ip -4`; an IPv6 cluster is refused, not guessed at.
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def with_addresses(models: list, hostvars) -> list:
    """The items with each cluster's member addresses filled from the members' variables:
    vllm_cluster_address, else ansible_host, else the inventory name (see normalize_cluster)."""
    out = []
    for item in models or []:
        spec = item.get("cluster") if isinstance(item, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("hosts"), list):
            out.append(item)
            continue
        addresses = {}
        for member in spec["hosts"]:
            own = hostvars[member] if isinstance(member, str) and member in hostvars else {}
            addresses[member] = member_address(own, member)
        out.append(dict(item, cluster=dict(spec, addresses=addresses)))
    return out


def member_views(models: list, hostvars, play_hosts: list, default_vllm_version: str) -> dict:
    """For each cluster model of a host: what each member says, as preflight needs it.

    ``models``: the host's vllm_models as written; ``hostvars``: Ansible's hostvars (any mapping of
    hostname to its variables); ``play_hosts``: the hosts this run may change. Returns
    {model name: {member: {in_inventory, in_play, vllm_version, vllm_device, model, gpus}}}, where
    ``model`` is the member's item of that name (None when it has none) and ``gpus`` the GPUs the
    play found there (None before they are known)."""
    views: dict = {}
    for item in models or []:
        if not isinstance(item, dict) or not isinstance(item.get("cluster"), dict):
            continue
        hosts = item["cluster"].get("hosts")
        if not isinstance(hosts, list):
            continue  # normalize_cluster names what is wrong with it
        members = {}
        for member in hosts:
            if not isinstance(member, str) or member not in hostvars:
                members[str(member)] = {"in_inventory": False, "in_play": False}
                continue
            own = hostvars[member]
            same = [m for m in own.get("vllm_models") or [] if isinstance(m, dict) and m.get("name") == item["name"]]
            found = own.get("vllm_preflight_gpus")
            members[member] = {
                "in_inventory": True,
                "in_play": member in play_hosts,
                "vllm_version": str(own.get("vllm_version") or default_vllm_version),
                "vllm_device": str(own.get("vllm_device") or "cuda"),
                "model": same[0] if same else None,
                "gpus": found.get("gpus") if isinstance(found, dict) else None,
                "address": member_address(own, member),
                # What the runtime role installs beside vLLM there (rule cluster-ray-installed).
                "runtime_packages": [str(p) for p in own.get("vllm_runtime_extra_packages") or RUNTIME_EXTRA_PACKAGES],
            }
        views[str(item.get("name"))] = members
    return views


def _serial_size(value, total: int) -> int:
    """One item of Ansible's `serial` as a count of ``total`` (ansible/utils/helpers.py pct_to_int:
    a percentage rounds down, and never below 1; 0 or less means all)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return int(int(value.strip()[:-1]) / 100.0 * total) or 1
    return int(value)


def present_clusters(models: list | None):
    """(item, cluster hosts as written) of each present item of ``models`` that names a cluster;
    items as the inventory writes them, so anything malformed is skipped (normalize_cluster names it)."""
    for item in models or []:
        spec = item.get("cluster") if isinstance(item, dict) else None
        hosts = spec.get("hosts") if isinstance(spec, dict) else None
        if isinstance(hosts, list) and (item.get("state") or "present") == "present":
            yield item, hosts


def clusters_of(hosts_models: dict) -> list[list[str]]:
    """The clusters among the hosts' models ({host: vllm_models}), each its hosts in order, once."""
    seen: list[list[str]] = []
    for models in hosts_models.values():
        for _item, hosts in present_clusters(models):
            if [str(h) for h in hosts] not in seen:
                seen.append([str(h) for h in hosts])
    return seen


def batches(order: list[str], pending: list[str], clusters: list[list[str]], serial) -> dict:
    """The rollout's batches with every cluster whole (docs/rollout.md, docs/multinode.md).

    ``order``: the play's hosts in inventory order; ``pending``: those a full run changes;
    ``clusters``: each cluster's hosts. A cluster counts as one unit of a batch: `serial` (Ansible's
    list of counts and percentages, the last repeating) is applied to units, not hosts, and a
    member that took the fast path rejoins its cluster's run (its peers restart around it).
    Returns {hosts: the pending hosts in batch order, serial: each batch's host count, joined:
    {host: the cluster member that brought it in}}."""
    pending_set, joined = set(pending), {}
    changed = True
    while changed:  # clusters may share hosts: pull in until nothing more joins
        changed = False
        for members in clusters:
            touched = [m for m in members if m in pending_set]
            for m in members:
                if touched and m not in pending_set and m in order:
                    pending_set.add(m)
                    joined[m] = touched[0]
                    changed = True
    units: list[list[str]] = []
    placed: set[str] = set()
    for host in order:
        if host not in pending_set or host in placed:
            continue
        unit = [host]
        grown = True
        while grown:  # clusters that share a host are one unit: a connected component
            grown = False
            for members in clusters:
                if any(m in unit for m in members):
                    more = [m for m in members if m not in unit and m in order and m not in placed]
                    unit += more
                    grown = grown or bool(more)
        units.append(unit)
        placed.update(unit)
    items = list(serial) if isinstance(serial, (list, tuple)) else [serial]
    items = items or [0]
    sizes, i = [], 0
    remaining = list(units)
    while remaining:
        count = _serial_size(items[min(i, len(items) - 1)], len(units))
        take = remaining if count <= 0 else remaining[:count]
        remaining = remaining[len(take) :]
        sizes.append(sum(len(u) for u in take))
        i += 1
    return {"hosts": [h for u in units for h in u], "serial": sizes, "joined": joined}


def refused_peers(models: list, host: str, hostvars, active_hosts: list | None = None) -> list[str]:
    """For each cluster model of ``host``: the members preflight refused (their registered
    vllm_preflight_result failed) or that left the play before it judged them (``active_hosts``:
    the play's hosts still running; a member in the inventory but not among them failed an earlier
    task or stopped answering). A member cannot serve its stages alone, so their refusal is this
    host's too."""
    out = []
    for item, hosts in present_clusters(models):
        for member in hosts:
            if member == host or not isinstance(member, str) or member not in hostvars:
                continue
            result = hostvars[member].get("vllm_preflight_result")
            if isinstance(result, dict) and result.get("failed"):
                out.append(f"{item.get('name')}: {member}, a member of its cluster, was refused (its errors are above)")
            elif active_hosts is not None and member not in active_hosts:
                out.append(
                    f"{item.get('name')}: {member}, a member of its cluster, failed or stopped answering (see above)"
                )
    return out


def left_out(models: list, play_hosts: list) -> list[str]:
    """For each cluster model of a host: the members this run leaves out (a rollback of half a
    cluster would leave its members on different versions)."""
    out = []
    for item, hosts in present_clusters(models):
        missing = [h for h in hosts if h not in play_hosts]
        if missing:
            out.append(
                f"{item.get('name')} runs across {', '.join(hosts)}; this run leaves out {', '.join(missing)}"
                f" -- fix: run with -l {','.join(hosts)}"
            )
    return out


def peers_without(models: list, host: str, hostvars, fact: str) -> list[str]:
    """For each cluster model of ``host``: the other members on which ``fact`` is not true (a
    member that failed, or fell behind, before the point of the run that sets it)."""
    out = []
    for item, hosts in present_clusters(models):
        behind = [m for m in hosts if m != host and not (m in hostvars and hostvars[m].get(fact) is True)]
        if behind:
            out.append(
                f"{item.get('name')} runs across {', '.join(hosts)}: {', '.join(behind)} failed before "
                "its units were in place, so this member does not prove or keep a half-changed cluster"
            )
    return out
