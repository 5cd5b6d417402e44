"""Run the real ansible-playbook / ansible CLIs from the project root and read their recap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import costs

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.M)


@dataclass
class AnsibleResult:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counts per host: {'vf1': {'ok': 3, 'changed': 0, ...}}."""
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        return {
            m["host"]: {k: int(v) for k, v in (kv.split("=") for kv in m["counts"].split())}
            for m in RECAP_LINE.finditer(tail)
        }

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap().items()}


def task_lines(output: str, task: str) -> set[str]:
    """The per-host result lines ("ok: [vf1]", "skipping: [vf2]", ...) ansible printed under every
    task whose name starts with `task` ("role : name" for a role's task), in every batch that ran it."""
    sections = [part.split("\nTASK [", 1)[0] for part in output.split(f"TASK [{task}")[1:]]
    return {
        f"{status}: [{host}]" for part in sections for status, host in re.findall(r"^(\w+): \[([^\]]+)\]", part, re.M)
    }


def task_lines_between(output: str, task: str, after: str, before: str) -> set[str]:
    """task_lines() of `task` where it ran after the task `after` and before the task `before`, in
    each play (each batch of a serial play) that ran both."""
    found: set[str] = set()
    for play in output.split("\nPLAY [")[1:]:
        start = play.find(f"TASK [{after}")
        end = play.find(f"TASK [{before}", start)
        if start >= 0 and end > start:
            found |= task_lines(play[start:end], task)
    return found


def module_json(output: str, host: str = "localhost") -> dict:
    """The module's JSON after the last '<host> | STATUS => ' of ansible's ad-hoc output."""
    start = output.rindex(f"{host} | ")
    doc, _ = json.JSONDecoder().raw_decode(output[output.index("{", start) :])
    return doc


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    env.update(extra or {})
    return env


def run_in(cwd: Path, full_env: dict[str, str], tool: str, *args: str, timeout: float = 900) -> AnsibleResult:
    """One run of an ansible tool of the venv from `cwd` with exactly `full_env`, counted in the costs."""
    costs.record(tool)
    proc = subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    return AnsibleResult(proc.returncode, proc.stdout)


def run(tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> AnsibleResult:
    """From the checkout, with its ansible.cfg."""
    return run_in(REPO_ROOT, _env(env), tool, *args, timeout=timeout)


def playbook(*args: str, **kwargs) -> AnsibleResult:
    return run("ansible-playbook", *args, **kwargs)
