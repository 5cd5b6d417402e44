"""What each test file pays for: ansible-playbook runs, molecule scenarios, vLLM server starts.

The suite's time goes to a few expensive things (docs/test-support.md). Each is recorded where it
happens, as one JSON line in the file named by VLLM_FLEET_COST_LOG (set by tests/conftest.py for
the session, inherited by every subprocess it starts, molecule's included):

- ``ansible-playbook`` / ``ansible`` / ``molecule``: tests/integration/ansible_run.run and
  test_molecule (the controller side);
- ``vllm-local``: a vLLM server the tests start on the controller (tests/support/vllm_server.py);
- ``vllm-host``: vLLM unit starts inside a test host, counted from the host's journal when the
  host is destroyed (tests/hosts/testhosts.py), so every deploy, restart and rollback counts.

The test file is the one pytest is running (PYTEST_CURRENT_TEST); outside pytest nothing is kept.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict

ENV = "VLLM_FLEET_COST_LOG"
KINDS = ("ansible-playbook", "ansible", "molecule", "vllm-local", "vllm-host")


def current_test_file() -> str | None:
    current = os.environ.get("PYTEST_CURRENT_TEST")
    return current.split("::", 1)[0] if current else None


def record(kind: str, count: int = 1) -> None:
    path, test_file = os.environ.get(ENV), current_test_file()
    if not path or not test_file or count <= 0:
        return
    with open(path, "a", encoding="utf-8") as f:  # one short line per write: appends do not interleave
        f.write(json.dumps({"file": test_file, "kind": kind, "count": count}) + "\n")


def totals(path: str) -> dict[str, Counter]:
    """{test file: Counter(kind -> count)} from a cost log."""
    out: dict[str, Counter] = defaultdict(Counter)
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            out[item["file"]][item["kind"]] += int(item["count"])
    return out


def table(path: str) -> list[str]:
    """The per-file table pytest prints at the end of the session."""
    rows = totals(path)
    if not rows:
        return []
    lines = ["test file".ljust(48) + "".join(k.rjust(18) for k in KINDS)]
    for name in sorted(rows):
        lines.append(name.ljust(48) + "".join(str(rows[name][k]).rjust(18) for k in KINDS))
    return lines
