#!/usr/bin/python
"""Ansible module: keep one start of vLLM (the plan beside what vLLM reported) on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_start_record
short_description: Keep a start of vLLM, the plan beside what vLLM reported, as a calibration record
version_added: "0.1.0"
description:
  - Parses vLLM's start-up report from a unit's O(journal) (weights loaded, KV cache GiB and
    tokens, the estimated maximum length of a refused start) and appends one JSON line to O(path)
    - the host, the model, the start, the GPU, driver and vLLM version, the flags that change
    memory, the plan's prediction term by term and what vLLM reported (docs/planner.md,
    "Calibration"). C(vllm-fleet calibrate) fits the planner's terms from these files.
  - A start is recorded once - O(start) is the unit's systemd InvocationID - so a re-run that finds
    the same start adds nothing and reports no change.
  - "Meant for the controller (C(delegate_to: localhost)), one file per host, so hosts of a batch
    never write the same file."
  - A records file that cannot be read, is damaged, or cannot be written is a warning, never a
    failure - the probe decides whether a host is good, not its records - and nothing is appended
    after damage (the warning names the file and line).
  - Supports check mode (reports whether a record would be added, writes nothing).
options:
  path:
    description: The host's records file (JSON lines); its directory is made when missing.
    type: path
    required: true
  host:
    description: The host the model runs on (C(inventory_hostname)).
    type: str
    required: true
  model:
    description: The model's name (its C(vllm-NAME.service)).
    type: str
    required: true
  start:
    description: The unit's systemd InvocationID; empty (a unit never started) records nothing.
    type: str
    required: true
  journal:
    description: The unit's journal since that start (redacted); without vLLM's report in it nothing is recorded.
    type: str
    default: ""
  plan:
    description:
      - The model's row of the host's preflight plan (one item of C(vllm_preflight)'s C(plan.models)).
      - Kept only when the unit runs the plan's flags (O(exec_start)); a start read after the
        inventory changed but before a deploy is recorded without a plan, and says so.
    type: dict
    default: {}
  exec_start:
    description:
      - The unit's C(ExecStart=) value, as the vllm_service role wrote it. The record keeps the flags
        it runs that change memory (serve_flag_labels.py), and the plan only when they are the plan's.
      - Empty means the plan's flags are taken as the unit's.
    type: str
    default: ""
  gpus:
    description: The host's GPUs as C(gpu_facts) returns them; the record keeps the plan's first one and the count.
    type: list
    elements: dict
    default: []
  device:
    description: C(cuda) or C(cpu); omitted means what vLLM's report says, else C(cuda).
    type: str
    choices: [cuda, cpu]
  vllm_version:
    description: The vLLM release the unit runs, when the report does not say.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Reports whether the record would be added; nothing is written.
"""

EXAMPLES = r"""
- name: Keep this start of the model beside its plan
  vllm_fleet.fleet.vllm_start_record:
    path: "{{ inventory_dir }}/.vllm-starts/{{ inventory_hostname }}.jsonl"
    host: "{{ inventory_hostname }}"
    model: tiny
    start: "{{ (unit_journal.stdout | from_json).invocation }}"
    journal: "{{ (unit_journal.stdout | from_json).journal }}"
    exec_start: "{{ (unit_journal.stdout | from_json).exec_start }}"
    plan: "{{ vllm_preflight_result.plan.models | selectattr('model', 'eq', 'tiny') | first }}"
    gpus: "{{ vllm_preflight_gpus.gpus }}"
  delegate_to: localhost
  become: false
"""

RETURN = r"""
recorded:
  description: Whether a record was (or in check mode would be) added.
  returned: always
  type: bool
  sample: true
reason:
  description: Why nothing was added (already recorded, no start, no report, a damaged file).
  returned: when recorded is false
  type: str
  sample: "this start (3f0c...) is already recorded"
record:
  description: The record (calibration.start_record), added or not.
  returned: when the journal holds vLLM's report
  type: dict
  sample: {format: vllm-fleet-start/1, host: t4-01, model: qwen7b, measured: {kv_tokens: 62144}}
"""

import os
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cluster
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.calibration import (
    CalibrationError,
    new_record_line,
    start_record,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import parse_engine_report
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.inventory import RESERVED_FLAGS
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import (
    ServeArgsError,
    normalize,
    parse_argv,
    to_argv,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.systemd import parse_exec_line

# What the service role adds to every unit: the flags it owns (inventory.RESERVED_FLAGS: where it
# listens, a cluster member's part) and the name it answers to (inventory.apply_plan). Not the
# plan's flags, no memory effect.
ROLE_FLAGS = RESERVED_FLAGS | {"served-model-name"}


def model_gpu(gpus: list[dict], plan: dict) -> dict | None:
    """The first GPU the plan gave the model (its name, memory and driver), and how many (None
    without a plan to say)."""
    indices = [i for i in plan.get("gpus") or [] if isinstance(i, int)]
    given = [g for g in gpus if g.get("index") in indices] or ([] if indices else gpus[:1])
    if not given:
        return None
    first = given[0]
    gpu = {k: first[k] for k in ("name", "memory_mib", "compute_capability") if first.get(k) is not None}
    return {**gpu, "count": len(given) if indices else None}


def unit_flags(exec_start: str) -> dict | None:
    """The model's flags in a unit's `vllm serve MODEL_DIR ...` line (the role's own left out), or
    None when the line is not one."""
    args = cluster.serve_part(parse_exec_line(exec_start))
    if len(args) < 3 or args[1] != "serve":
        return None
    try:
        flags, _positional = parse_argv(args[3:])
    except ServeArgsError:
        return None
    return {k: v for k, v in flags.items() if k not in ROLE_FLAGS}


def _as_argv(flags: dict) -> dict:
    """Each flag as vLLM's command line spells it, whatever its order or type in the dict."""
    return {name: tuple(to_argv({name: value})) for name, value in normalize(flags).items()}


def plan_it_runs(plan: dict, exec_start: str) -> tuple[dict, dict, str | None]:
    """(plan, flags, note): the plan and its flags when the unit runs them; else no plan, the unit's
    own flags (as its command line spells them), and why (a probe after the inventory changed,
    before the deploy that applies it)."""
    planned = plan.get("translated_flags") or {}
    if not exec_start:
        return plan, planned, None
    running = unit_flags(exec_start)
    if running is None:
        return {}, {}, "the unit's ExecStart= is not a vllm serve line: its flags are unknown"
    if not plan:
        return {}, running, None  # a state put back is probed without a plan: what it runs is known
    ours = {k: v for k, v in planned.items() if k not in ROLE_FLAGS}
    if _as_argv(running) != _as_argv(ours):
        return {}, running, "the unit runs other flags than the plan (the inventory changed since the deploy?)"
    return plan, planned, None


def run(module: AnsibleModule) -> dict:
    p = module.params
    if not p["start"]:
        return {"changed": False, "recorded": False, "reason": "the unit has no start (no InvocationID)"}
    report = parse_engine_report(p["journal"]) if p["journal"] else {}
    if not report:
        return {"changed": False, "recorded": False, "reason": "nothing of vLLM's start-up report in the journal"}
    try:
        plan, flags, plan_note = plan_it_runs(p["plan"], p["exec_start"])
    except ServeArgsError as e:
        plan, flags, plan_note = {}, {}, f"the plan's flags cannot be compared with the unit's ({e})"
    drivers = {g.get("driver_version") for g in p["gpus"] if g.get("driver_version")}
    record = start_record(
        host=p["host"],
        model=p["model"],
        start=p["start"],
        plan=plan,
        report=report,
        flags=flags,
        gpu=model_gpu(p["gpus"], p["plan"]),
        # vLLM's report names the device as its log lines do: "CPU KV cache", "GPU KV cache".
        device=p["device"] or ("cpu" if str(report.get("device") or "").lower() == "cpu" else "cuda"),
        vllm_version=p["vllm_version"],
        driver=drivers.pop() if len(drivers) == 1 else None,
        recorded_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    if plan_note:
        record["plan_note"] = plan_note
    result = {"changed": False, "recorded": False, "record": record}
    try:
        with open(p["path"], encoding="utf-8") as f:
            existing = f.read()
    except FileNotFoundError:
        existing = ""
    except OSError as e:
        return _not_recorded(module, result, f"{p['path']}: cannot read it ({e.strerror})")
    try:
        line = new_record_line(existing, record, p["path"])
    except CalibrationError as e:
        return _not_recorded(module, result, f"{e}: nothing appended after damage; move the file aside")
    if line is None:
        return dict(result, reason=f"this start ({p['start']}) is already recorded")
    if not module.check_mode:
        try:
            os.makedirs(os.path.dirname(p["path"]) or ".", exist_ok=True)
            # Appended whole, in one write: a reader never sees half a record.
            with open(p["path"], "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as e:
            return _not_recorded(module, result, f"{p['path']}: cannot write it ({e.strerror})")
    return dict(result, changed=True, recorded=True)


def _not_recorded(module: AnsibleModule, result: dict, why: str) -> dict:
    module.warn(f"start record not kept: {why}")
    return dict(result, reason=why)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "host": {"type": "str", "required": True},
            "model": {"type": "str", "required": True},
            "start": {"type": "str", "required": True},
            "journal": {"type": "str", "default": ""},
            "plan": {"type": "dict", "default": {}},
            "exec_start": {"type": "str", "default": ""},
            "gpus": {"type": "list", "elements": "dict", "default": []},
            "device": {"type": "str", "choices": ["cuda", "cpu"]},
            "vllm_version": {"type": "str"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
