"""Ansible callback: the rollout summary at the end of site.yml / rollback.yml, and the fleet's
status table at the end of status.yml.

The vllm_rollout role sets the fact `vllm_rollout_summary` (one row per model of the host:
result, what changed, chat latency) when a host passes, is rolled back or fails. This callback
collects those rows as they happen - a play that stops at max_fail_percentage runs no later
task that could print them - and prints one table after the play recap, with the hosts that the
play never reached. With VLLM_FLEET_SUMMARY_JSON set, it also writes the rows there as JSON.

The vllm_status module's results (playbooks/status.yml) are collected the same way and printed as
the status table; VLLM_FLEET_STATUS_JSON writes them as JSON.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: vllm_fleet_summary
type: aggregate
short_description: Print the vllm-fleet rollout summary, or the fleet's status, at the end of the playbook
description:
  - Collects the C(vllm_rollout_summary) facts the vllm_rollout role sets and prints one line per
    host and model (result, what changed, chat latency), and the hosts the play never reached.
  - Collects the rows of the C(vllm_status) module and prints one line per host and model (unit
    state, revision, vLLM version, uptime, requests served, KV cache, running/waiting, last probe
    latency), and the hosts that did not answer.
requirements:
  - enabled in ansible.cfg (C(callbacks_enabled = vllm_fleet_summary))
options:
  summary_json:
    description: Also write the rows as JSON to this file.
    type: path
    env:
      - name: VLLM_FLEET_SUMMARY_JSON
  status_json:
    description: Also write the status rows (playbooks/status.yml) as JSON to this file.
    type: path
    env:
      - name: VLLM_FLEET_STATUS_JSON
"""

import json
import os

from ansible.plugins.callback import CallbackBase
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.monitoring import status_table
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.rollout import summary_table

FACT = "vllm_rollout_summary"
STATUS_MODULES = ("vllm_status", "vllm_fleet.fleet.vllm_status")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "vllm_fleet_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict]] = {}
        self.unreachable: dict[str, str] = {}  # host -> the task it stopped answering in
        self.rollout_play_seen = False
        self.status: dict[str, list[dict]] = {}  # host -> its vllm_status rows
        self.status_seen = False

    def v2_playbook_on_play_start(self, play) -> None:
        # Only the rollout plays (deploy.yml, rollback.yml) declare how many failed hosts stop them.
        if "vllm_rollout_max_fail_percentage" in (play.vars or {}):
            self.rollout_play_seen = True

    def _collect(self, result) -> None:
        facts = (result._result or {}).get("ansible_facts") or {}
        if FACT in facts:
            self.rows[result._host.get_name()] = list(facts[FACT] or [])

    def v2_runner_on_ok(self, result) -> None:
        self._collect(result)
        if result._task.action in STATUS_MODULES:
            self.status_seen = True
            host = result._host.get_name()
            rows = [{"host": host, **row} for row in (result._result or {}).get("rows") or []]
            for unit in (result._result or {}).get("unmanaged_units") or []:
                rows.append({"host": host, "model": unit, "state": "unmanaged", "problems": ["not in the inventory"]})
            self.status[host] = rows

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        if result._task.action in STATUS_MODULES:
            self.status_seen = True
            msg = str((result._result or {}).get("msg", "failed"))
            self.status[result._host.get_name()] = [{"host": result._host.get_name(), "problems": [msg]}]

    def v2_runner_on_unreachable(self, result) -> None:
        self.unreachable.setdefault(result._host.get_name(), result._task.get_name())
        if result._task.action in STATUS_MODULES:
            self.status_seen = True  # a fleet none of whose hosts answered still gets its table

    def v2_playbook_on_stats(self, stats) -> None:
        if self.status_seen:
            self._print_status()
        if not self.rollout_play_seen:
            return
        rows = [row for host in sorted(self.rows) for row in self.rows[host]]
        not_reached = [h for h in sorted(stats.processed) if h not in self.rows and h not in self.unreachable]
        self._display.banner("VLLM-FLEET ROLLOUT SUMMARY")
        self._display.display(summary_table(rows, not_reached, self.unreachable))
        path = self.get_option("summary_json")
        if path:
            with open(os.path.expanduser(path), "w", encoding="utf-8") as fh:
                json.dump({"rows": rows, "not_reached": not_reached, "unreachable": self.unreachable}, fh, indent=1)

    def _print_status(self) -> None:
        rows = [row for host in sorted(self.status) for row in self.status[host]]
        unreachable = {h: t for h, t in self.unreachable.items() if h not in self.status}
        self._display.banner("VLLM-FLEET STATUS")
        self._display.display(status_table(rows, unreachable))
        path = self.get_option("status_json")
        if path:
            with open(os.path.expanduser(path), "w", encoding="utf-8") as fh:
                json.dump({"rows": rows, "unreachable": unreachable}, fh, indent=1)
