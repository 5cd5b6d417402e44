"""Real systemd test hosts on this machine: systemd-nspawn containers.

Each host is
  - a disk-backed overlayfs over one shared, read-only Debian 12 base (so a
    3 GB vLLM environment inside a host costs disk, not RAM as a tmpfs would),
  - booted by systemd-nspawn with systemd as PID 1,
  - in its own network namespace `vf<N>`, joined to this machine by a veth
    pair: this machine is 10.77.N.1, the host is 10.77.N.2 (addresses that
    exist only inside namespaces made here),
  - reached as root over SSH with a key generated for the pool.

Everything a host owns is named after it, so destroy can find and remove it
whether or not the state file survived: the nspawn process (by its
--machine= argument), the overlay mount, the namespace and the directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from tests.support import costs

from . import rootfs
from . import seed as seeds

PREFIX = "vf"
SUBNET = "10.77"
# The hosts' own network (docs/multinode.md: the members of a cluster reach each other directly,
# as racked hosts do over their switch): a bridge in a namespace of its own, so this machine
# forwards nothing; host N is 10.78.0.N on its second interface, eth1.
CLUSTER_NETNS = "vfnet"
CLUSTER_SUBNET = "10.78.0"
STATE_DIR = Path(os.environ.get("VLLM_FLEET_HOSTS_STATE", "/var/lib/vllm-fleet/testhosts"))
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INVENTORY = REPO_ROOT / "inventories/local/hosts.yml"
INVENTORY_GROUP = "local_hosts"
BOOT_TIMEOUT_S = 90


@dataclass
class Host:
    name: str
    index: int
    address: str  # the host's address, reachable from this machine
    controller_address: str  # this machine's address, reachable from the host
    pid: int  # the supervisor that runs systemd-nspawn (and reruns it on reboot)
    inventory: str = ""  # the inventory file that lists it (each caller's hosts stay apart)
    seed: str = ""  # a layer between its own and the base (tests/hosts/seed.py), if any

    @property
    def netns(self) -> str:
        return self.name

    @property
    def cluster_address(self) -> str:
        """The host's address on the hosts' own network, once join_cluster_network joined it."""
        return f"{CLUSTER_SUBNET}.{self.index}"


def _run(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kwargs)


def host_name(index: int) -> str:
    return f"{PREFIX}{index}"


def host_dir(name: str) -> Path:
    return STATE_DIR / "hosts" / name


def key_path() -> Path:
    return STATE_DIR / "id_ed25519"


def ensure_key() -> Path:
    key = key_path()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vllm-fleet-testhosts", "-f", str(key)])
    return key


def ssh_command(host: Host, *remote: str) -> list[str]:
    return [
        "ssh",
        "-i",
        str(key_path()),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "BatchMode=yes",
        f"root@{host.address}",
        *remote,
    ]


def ssh(host: Host, *remote: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run(ssh_command(host, *remote), check=check, timeout=timeout)


# ---------------------------------------------------------------- network


def _setup_network(index: int) -> None:
    name = host_name(index)
    outside, inside = f"{name}-h", f"{name}-c"
    if name not in _run(["ip", "netns", "list"]).stdout.split():
        _run(["ip", "netns", "add", name])
    if _run(["ip", "link", "show", outside], check=False).returncode != 0:
        _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
        _run(["ip", "link", "set", inside, "netns", name])
        _run(["ip", "-n", name, "link", "set", inside, "name", "eth0"])
        _run(["ip", "addr", "add", f"{SUBNET}.{index}.1/24", "dev", outside])
    _run(["ip", "link", "set", outside, "up"])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])
    addresses = _run(["ip", "-n", name, "-o", "addr", "show", "dev", "eth0"]).stdout
    if f"{SUBNET}.{index}.2/" not in addresses:
        _run(["ip", "-n", name, "addr", "add", f"{SUBNET}.{index}.2/24", "dev", "eth0"])
    _run(["ip", "-n", name, "link", "set", "eth0", "up"])
    _run(["ip", "-n", name, "route", "replace", "default", "via", f"{SUBNET}.{index}.1"])


def join_cluster_network(host: Host) -> str:
    """Put the host on the hosts' own network (a bridge in namespace vfnet; idempotent) and return
    its address there. destroy() deletes the link (it would leave with the host's namespace, but
    only once the kernel frees that, which a process still exiting delays)."""
    namespaces = _run(["ip", "netns", "list"]).stdout.split()
    if CLUSTER_NETNS not in namespaces:
        _run(["ip", "netns", "add", CLUSTER_NETNS])
    if _run(["ip", "-n", CLUSTER_NETNS, "link", "show", "br0"], check=False).returncode != 0:
        _run(["ip", "-n", CLUSTER_NETNS, "link", "add", "br0", "type", "bridge"])
    _run(["ip", "-n", CLUSTER_NETNS, "link", "set", "br0", "up"])
    outside = f"{host.name}-n"
    if _run(["ip", "-n", host.netns, "link", "show", "eth1"], check=False).returncode != 0:
        # A link of an earlier host of this name whose namespace the kernel has not freed yet.
        _run(["ip", "-n", CLUSTER_NETNS, "link", "del", outside], check=False)
        peer = ["peer", "name", "eth1", "netns", host.netns]
        _run(["ip", "-n", CLUSTER_NETNS, "link", "add", outside, "type", "veth", *peer])
        _run(["ip", "-n", CLUSTER_NETNS, "link", "set", outside, "master", "br0", "up"])
    addresses = _run(["ip", "-n", host.netns, "-o", "addr", "show", "dev", "eth1"]).stdout
    if f"{host.cluster_address}/" not in addresses:
        _run(["ip", "-n", host.netns, "addr", "add", f"{host.cluster_address}/24", "dev", "eth1"])
    _run(["ip", "-n", host.netns, "link", "set", "eth1", "up"])
    return host.cluster_address


def set_cluster_link(host: Host, up: bool) -> None:
    """Cut the host from the hosts' own network (its peers stop reaching it; the controller still
    does), or bring it back."""
    _run(["ip", "-n", CLUSTER_NETNS, "link", "set", f"{host.name}-n", "up" if up else "down"])


def set_network(host: Host, up: bool) -> None:
    """Take the host's link down on this machine's side (to the controller it stops answering, as a
    host powered off or cut from the network would; it keeps running) or bring it back."""
    _run(["ip", "link", "set", f"{host.name}-h", "up" if up else "down"])


def _teardown_network(name: str) -> None:
    # Deleting the namespace deletes the veth end inside it, and with it the pair.
    if name in _run(["ip", "netns", "list"]).stdout.split():
        _run(["ip", "netns", "delete", name], check=False)
    _run(["ip", "link", "delete", f"{name}-h"], check=False)


# ---------------------------------------------------------------- filesystem


def _mount_root(name: str, base: Path, seed_layer: Path | None = None) -> Path:
    hdir = host_dir(name)
    # The leftmost lower layer is the top one: the seed's files hide the base's.
    lower = f"{seed_layer}:{base}" if seed_layer else str(base)
    upper, work, merged = hdir / "upper", hdir / "work", hdir / "root"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(merged):
        _run(
            [
                "mount",
                "-t",
                "overlay",
                f"vllm-fleet-{name}",
                "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}",
                str(merged),
            ]
        )
    return merged


def _personalize(root: Path, name: str) -> None:
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(Path(f"{key_path()}.pub").read_text())
    authorized.chmod(0o600)
    # Without its own name in /etc/hosts, a host stalls ~130 s on DNS lookups
    # of itself (vLLM does one at start), as there is no DNS server to answer.
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n")


def _mounts_of(name: str) -> list[str]:
    hdir = str(host_dir(name))
    points = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1]
            if point.startswith(hdir + "/") or point == hdir:
                points.append(point)
    # Deepest first, so nested mounts come off before their parents.
    return sorted(points, key=len, reverse=True)


# ---------------------------------------------------------------- processes


def _nspawn_pids(*names: str) -> list[int]:
    """Processes of these hosts' nspawn and their supervisors, found by command line (one pass
    over /proc for all of them)."""
    pids = []
    markers = {f"--machine={name}".encode() for name in names}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not markers.isdisjoint(argv) and any(b"systemd-nspawn" in arg for arg in argv):
            pids.append(int(proc.name))
    return pids


# ---------------------------------------------------------------- cgroups
#
# nspawn --keep-unit (this machine's PID 1 is not systemd) splits the cgroup it starts in into
# `supervisor` and `payload`, and boots the host in `payload`. Started from one cgroup, every host's
# systemd then managed the same tree: vf1's and vf2's `vllm-tiny.service` were one cgroup, a stop on
# one host waited for the other host's processes (TimeoutStopSec, "Processes still around after final
# SIGKILL"), killing it failed ("Failed to kill control group ...: Input/output error"), and two
# boots at once raced. Each host's supervisor therefore moves itself into a cgroup of its own first.


def _cgroup_hierarchies() -> list[Path]:
    """This process's own cgroup in each hierarchy systemd tracks a unit's processes in: the cgroup2
    one, and on a hybrid setup also the name=systemd one (v1)."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0":
            own["cgroup2"] = path
        elif controllers == "name=systemd":
            own["name=systemd"] = path
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _sep, fs = line.partition(" - ")
        mount_root, point = fields.split()[3:5]
        fstype, _source, options = [*fs.split(), "", ""][:3]
        key = "cgroup2" if fstype == "cgroup2" else "name=systemd" if "name=systemd" in options.split(",") else None
        if key in own and key not in found and own[key].startswith(mount_root):
            found[key] = Path(point) / own[key][len(mount_root) :].lstrip("/")
    return list(found.values())


CGROUP_PREFIX = "vllm-fleet-"


def host_cgroups(name: str) -> list[Path]:
    return [hierarchy / f"{CGROUP_PREFIX}{name}" for hierarchy in _cgroup_hierarchies()]


def _make_host_cgroups(name: str) -> list[Path]:
    made = []
    for cgroup in host_cgroups(name):
        try:
            cgroup.mkdir(exist_ok=True)
        except OSError as err:  # a read-only cgroupfs: the hosts share one tree, as they did before
            print(f"{name}: no cgroup of its own at {cgroup} ({err}); its units may wait on other hosts' stops")
            continue
        made.append(cgroup)
    return made


def _remove_host_cgroups(name: str, timeout: float = 15) -> None:
    """Once the host is gone: its cgroups, deepest first (what its systemd left, nspawn's two).
    A cgroup whose last processes are still exiting (the kernel kills a container's processes when
    its PID 1 ends; a vLLM takes a moment) cannot be removed yet: tried again until the timeout."""
    deadline = time.monotonic() + timeout
    for cgroup in host_cgroups(name):
        while cgroup.is_dir():
            for path, _dirs, _files in os.walk(cgroup, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            if not cgroup.is_dir() or time.monotonic() > deadline:
                break
            time.sleep(0.2)


def _supervisor_script(name: str, root: Path, cgroups: list[Path] = ()) -> str:
    # An in-container `systemctl reboot` makes nspawn exit 133: boot it again.
    nspawn = (
        f"systemd-nspawn --quiet -D {root} -b --machine={name} --register=no --keep-unit "
        f"--network-namespace-path=/run/netns/{name} --resolv-conf=off --timezone=off --link-journal=no"
    )
    join = "".join(f"{{ echo $$ > {c}/cgroup.procs || echo 'not moved to {c}'; }}; " for c in cgroups)
    return f"{join}while :; do {nspawn}; rc=$?; [ $rc -eq 133 ] || exit $rc; done"


def _start(name: str, root: Path) -> subprocess.Popen:
    script = _supervisor_script(name, root, _make_host_cgroups(name))
    log = open(host_dir(name) / "console.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            # "--machine=NAME" as an argument of its own makes the supervisor
            # findable by _nspawn_pids before nspawn itself has started.
            ["bash", "-c", script, "vllm-fleet-host", f"--machine={name}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _console_tail(name: str, lines: int = 15) -> str:
    try:
        text = (host_dir(name) / "console.log").read_text(errors="replace")
    except OSError:
        return "(no console.log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(host: Host, supervisor: subprocess.Popen, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Wait for SSH, then for systemd to finish booting; return its verdict.

    Whether the host is still there is asked of the kernel, about the supervisor this process
    started (waitpid, through Popen.poll): it cannot call a live child dead. The scan of /proc by
    command line that did this before called a booted host's nspawn gone once (a fresh machine's
    first `make demo`, issue 15): it reads every process's cmdline and skips any it cannot read, so
    an empty or failed read of the two processes that matter looks like an exit. The scan stays
    for what it is needed for, finding hosts another process started (list, destroy, leftovers).
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        code = supervisor.poll()
        if code is not None:
            raise RuntimeError(
                f"{host.name}: systemd-nspawn exited with status {code}; the end of "
                f"{host_dir(host.name)}/console.log:\n{_console_tail(host.name)}"
            )
        try:
            result = ssh(host, "systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            break
        state = result.stdout.strip()
        if state in ("running", "degraded"):
            return state
        last_error = (result.stderr or state).strip()
        time.sleep(0.3)
    raise RuntimeError(f"{host.name}: not ready after {timeout:.0f} s: {last_error}")


# ---------------------------------------------------------------- state


def _state_file() -> Path:
    return STATE_DIR / "hosts.json"


@contextlib.contextmanager
def _state_lock():
    """One process at a time reads-modifies-writes the state (tests and molecule create hosts concurrently)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load_state() -> dict[str, Host]:
    try:
        data = json.loads(_state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {entry["name"]: Host(**entry) for entry in data}


def _save_state(hosts: dict[str, Host]) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(hosts.values(), key=lambda h: h.index)
    _state_file().write_text(json.dumps([asdict(h) for h in ordered], indent=2))


def write_inventory(hosts: list[Host], path: Path = DEFAULT_INVENTORY) -> Path:
    inventory = {
        "all": {
            "children": {
                INVENTORY_GROUP: {
                    "hosts": {
                        h.name: {"ansible_host": h.address, "vllm_fleet_controller_address": h.controller_address}
                        for h in hosts
                    },
                    "vars": {
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": str(key_path()),
                    },
                }
            }
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "---\n# Written by `python -m tests.hosts create`: the live local test hosts. Not committed.\n"
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    return path


# ---------------------------------------------------------------- public API


def list_hosts() -> list[Host]:
    """Hosts in the state file whose nspawn is still running."""
    return [h for h in sorted(_load_state().values(), key=lambda h: h.index) if _nspawn_pids(h.name)]


def _listed_in(inventory: Path) -> list[Host]:
    """The running hosts created for this inventory file, not another caller's."""
    return [h for h in list_hosts() if h.inventory == str(inventory)]


def create(
    count: int, inventory: Path | None = DEFAULT_INVENTORY, log=print, first: int = 1, seed: Path | None = None
) -> list[Host]:
    """Ensure hosts vf<first>..vf<first+count-1> run; idempotent (running hosts are kept as they are).
    With `seed` (a layer made by tests/hosts/seed.py), a new host boots with its files already there."""
    with _state_lock():
        return _create(count, inventory, log, first, seed)


def destroy(names: list[str] | None = None, inventory: Path | None = DEFAULT_INVENTORY, log=print) -> None:
    """Stop and remove hosts (all when names is None); idempotent, leaves nothing behind."""
    with _state_lock():
        _destroy(names, inventory, log)


def _create(count: int, inventory: Path | None, log, first: int, seed_layer: Path | None = None) -> list[Host]:
    if os.geteuid() != 0:
        raise RuntimeError("test hosts need root (network namespaces, mounts, systemd-nspawn)")
    for tool in ("systemd-nspawn", "ip", "ssh"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: run `make deps` (apt-get install systemd-container iproute2 …)")
    base = rootfs.ensure_base(STATE_DIR, log)
    if seed_layer is not None:
        # Absolute: the mount options and seed.in_use() compare it as written.
        seed_layer = Path(seed_layer).resolve()
        if not seed_layer.is_dir():
            raise RuntimeError(f"seed layer {seed_layer} does not exist")
    ensure_key()
    state = _load_state()
    indices = range(first, first + count)
    for index in indices:
        name = host_name(index)
        if name in state and _nspawn_pids(name):
            if state[name].seed != str(seed_layer or ""):
                raise RuntimeError(
                    f"{name} runs already, booted with seed {state[name].seed or 'none'}, not "
                    f"{seed_layer or 'none'}: destroy it first (python -m tests.hosts destroy {name})"
                )
            continue
        t0 = time.monotonic()
        _setup_network(index)
        root = _mount_root(name, base, seed_layer)
        _personalize(root, name)
        supervisor = _start(name, root)
        host = Host(
            name,
            index,
            f"{SUBNET}.{index}.2",
            f"{SUBNET}.{index}.1",
            supervisor.pid,
            str(inventory or ""),
            str(seed_layer or ""),
        )
        state[name] = host
        _save_state(state)
        # One boot at a time: two systemds setting up their cgroups at once were seen to lose the
        # race ("Failed to attach to cgroup ... No such file or directory"), leaving a unit failed
        # and the host degraded. That was when all hosts shared one cgroup tree (see "cgroups");
        # kept, as a boot takes ~1.5 s.
        verdict = _wait_ready(host, supervisor)
        log(f"{host.name}: {host.address} up in {time.monotonic() - t0:.1f} s, systemd says {verdict}")
    hosts = [state[host_name(i)] for i in indices]
    if inventory is not None:
        for host in hosts:
            host.inventory = str(inventory)
        _save_state(state)
        write_inventory(_listed_in(inventory), inventory)
    return hosts


def _destroy(names: list[str] | None, inventory: Path | None, log) -> None:
    state = _load_state()
    destroy_all = names is None
    if names is None:
        names = sorted(set(state) | set(_leftover_names()))
    for name in names:
        _record_vllm_starts(state.get(name))
    # All at once: a host serving vLLM can take up to the whole timeout to power off, and the hosts
    # of one test module were stopped one after the other.
    _stop(names)
    cluster_net = CLUSTER_NETNS in _run(["ip", "netns", "list"]).stdout.split()
    for name in names:
        for point in _mounts_of(name):
            _run(["umount", point], check=False)
        if cluster_net:
            _run(["ip", "-n", CLUSTER_NETNS, "link", "del", f"{name}-n"], check=False)
        _teardown_network(name)
        _remove_host_cgroups(name)
        shutil.rmtree(host_dir(name), ignore_errors=True)
        state.pop(name, None)
        log(f"{name}: destroyed")
    _save_state(state)
    # The hosts' own network, once no host is on it (a host's link left with its namespace).
    if CLUSTER_NETNS in _run(["ip", "netns", "list"]).stdout.split():
        links = _run(["ip", "-n", CLUSTER_NETNS, "-o", "link", "show"], check=False).stdout
        if destroy_all or not any(f"{PREFIX}" in line.split(": ")[1] for line in links.splitlines() if ": " in line):
            _run(["ip", "netns", "delete", CLUSTER_NETNS], check=False)
    if destroy_all:
        # Seeds a crashed session left (their owner removes them otherwise), now that no host mounts them.
        for leftover in seeds.existing(STATE_DIR):
            if seeds.remove(leftover):
                log(f"seed {leftover.name}: removed")
    if inventory is not None:
        write_inventory(_listed_in(inventory), inventory)


def _record_vllm_starts(host: Host | None) -> None:
    """Count the vLLM unit starts this host's journal saw (tests/support/costs.py), before it goes."""
    if host is None or not os.environ.get(costs.ENV):
        return
    # systemd logs "Started vllm-<name>.service - vLLM <name> (...)" per start: the Description the
    # role writes (vllm.service.j2) tells a vLLM unit from other units named vllm-* (the test hosts'
    # own vllm-fleet-hello.service counted as four vLLM starts before).
    count = "journalctl -o cat --no-pager _PID=1 | grep -cE '^Started vllm-.* - vLLM ' || true"
    done = ssh(host, count, check=False, timeout=20)
    if done.returncode == 0 and done.stdout.strip().isdigit():
        costs.record("vllm-host", int(done.stdout.strip()))


def _stop(names: list[str], timeout: float = 20) -> None:
    # TERM to nspawn powers the container off cleanly (~1.4 s); the supervisor
    # loop then exits because the code is not 133. What is still there after the timeout is killed.
    for pid in _nspawn_pids(*names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _nspawn_pids(*names) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _nspawn_pids(*names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _leftover_names() -> set[str]:
    """Names of anything a host leaves on this machine, with or without a state file."""
    names = {d.name for d in (STATE_DIR / "hosts").glob(f"{PREFIX}*") if d.is_dir()}
    names |= {n for n in _run(["ip", "netns", "list"]).stdout.split() if _is_host_name(n)}
    cgroups = {c.name.removeprefix(CGROUP_PREFIX) for h in _cgroup_hierarchies() for c in h.glob(f"{CGROUP_PREFIX}*")}
    names |= {n for n in cgroups if _is_host_name(n)}
    return names


def _is_host_name(name: str) -> bool:
    return name.startswith(PREFIX) and name[len(PREFIX) :].isdigit()


def leftovers() -> list[str]:
    """Everything of a test host still on this machine: processes, namespaces, mounts, links, dirs."""
    found = []
    for name in sorted(_leftover_names() | set(_load_state())):
        if _nspawn_pids(name):
            found.append(f"{name}: systemd-nspawn process {_nspawn_pids(name)}")
        found.extend(f"{name}: mount {point}" for point in _mounts_of(name))
        if host_dir(name).exists():
            found.append(f"{name}: directory {host_dir(name)}")
        found.extend(f"{name}: cgroup {cgroup}" for cgroup in host_cgroups(name) if cgroup.exists())
    found.extend(f"seed layer {path}" for path in seeds.existing(STATE_DIR))
    found.extend(
        f"network namespace {n}"
        for n in _run(["ip", "netns", "list"]).stdout.split()
        if _is_host_name(n) or n == CLUSTER_NETNS
    )
    links = _run(["ip", "-o", "link", "show"]).stdout
    found.extend(
        f"veth {field.split('@')[0]}"
        for line in links.splitlines()
        for field in line.split(": ")[1:2]
        if _is_host_name(field.split("@")[0].removesuffix("-h"))
    )
    return found
