"""Run the real ansible-playbook / ansible CLIs from the project root and read their recap."""

from __future__ import annotations

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


def run(tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> AnsibleResult:
    costs.record(tool)
    proc = subprocess.run(
        [str(BIN / tool), *args],
        cwd=REPO_ROOT,
        env=_env(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    return AnsibleResult(proc.returncode, proc.stdout)


def playbook(*args: str, **kwargs) -> AnsibleResult:
    return run("ansible-playbook", *args, **kwargs)
