"""An ansible callback that times every task (what ansible.posix's profile_tasks prints), as JSON.

ansible-core alone has no profile_tasks (it is in the ansible.posix collection, which this project
does not install), so the benchmarks bring this one. It is not loaded from bench/ itself (ansible
imports every .py file of a callback folder): bench/common.py copies it into a temporary folder,
points ANSIBLE_CALLBACK_PLUGINS there and enables it as `bench_profile`. It writes
$BENCH_PROFILE_OUT: per task, in order, its name, role, kind (task/handler), start and duration
(from its start to the next task's, as profile_tasks counts) and per host status.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_profile
type: aggregate
short_description: per-task wall time as JSON (vllm-fleet benchmarks)
description: Writes each task's wall time and per-host status to the file named by BENCH_PROFILE_OUT.
requirements: [enable in ansible.cfg or ANSIBLE_CALLBACKS_ENABLED]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._t0 = time.monotonic()
        self._tasks: list[dict] = []
        self._current: dict | None = None
        self._play = ""

    def _close(self) -> None:
        if self._current is not None:
            self._current["duration"] = round(time.monotonic() - self._t0 - self._current["start"], 4)
            self._tasks.append(self._current)
            self._current = None

    def _open(self, task, kind: str) -> None:
        self._close()
        role = getattr(task, "_role", None)
        self._current = {
            "name": task.get_name().strip(),
            "role": role.get_name() if role else "",
            "play": self._play,
            "kind": kind,
            "start": round(time.monotonic() - self._t0, 4),
            # wall clock and CLOCK_MONOTONIC (shared with the test hosts' systemd) of the start
            "start_monotonic": time.monotonic(),
            "hosts": {},
        }

    def _host(self, result, status: str) -> None:
        if self._current is None:
            return
        host = result._host.get_name()
        changed = bool(result._result.get("changed", False)) if isinstance(result._result, dict) else False
        self._current["hosts"][host] = {
            "status": status,
            "changed": changed,
            "end_monotonic": time.monotonic(),
        }

    def v2_playbook_on_play_start(self, play):
        self._close()
        self._play = play.get_name().strip()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._open(task, "task")

    def v2_playbook_on_handler_task_start(self, task):
        self._open(task, "handler")

    def v2_runner_on_ok(self, result, **kwargs):
        self._host(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._host(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result, **kwargs):
        self._host(result, "skipped")

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._host(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._close()
        out = os.environ.get("BENCH_PROFILE_OUT")
        if out:
            with open(out, "w") as handle:
                json.dump({"total": round(time.monotonic() - self._t0, 4), "tasks": self._tasks}, handle, indent=1)
