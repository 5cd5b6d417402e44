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
    description: The model's row of the host's preflight plan (one item of C(vllm_preflight)'s C(plan.models)).
    type: dict
    default: {}
  flags:
    description: The model's vLLM flags; the record keeps those that change memory (serve_flag_labels.py).
    type: dict
    default: {}
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
    plan: "{{ vllm_preflight_result.plan.models | selectattr('model', 'eq', 'tiny') | first }}"
    flags: {dtype: half, max-model-len: 4096}
    gpus: "{{ vllm_preflight_gpus.gpus }}"
  delegate_to: localhost
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
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.calibration import (
    CalibrationError,
    new_record_line,
    start_record,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import parse_engine_report


def model_gpu(gpus: list[dict], plan: dict) -> dict | None:
    """The first GPU the plan gave the model (its name, memory and driver), and how many."""
    indices = [i for i in plan.get("gpus") or [] if isinstance(i, int)]
    given = [g for g in gpus if g.get("index") in indices] or ([] if indices else gpus[:1])
    if not given:
        return None
    first = given[0]
    gpu = {k: first[k] for k in ("name", "memory_mib", "compute_capability") if first.get(k) is not None}
    return {**gpu, "count": len(given)}


def run(module: AnsibleModule) -> dict:
    p = module.params
    if not p["start"]:
        return {"changed": False, "recorded": False, "reason": "the unit has no start (no InvocationID)"}
    report = parse_engine_report(p["journal"]) if p["journal"] else {}
    if not report:
        return {"changed": False, "recorded": False, "reason": "nothing of vLLM's start-up report in the journal"}
    gpu = model_gpu(p["gpus"], p["plan"])
    drivers = {g.get("driver_version") for g in p["gpus"] if g.get("driver_version")}
    record = start_record(
        host=p["host"],
        model=p["model"],
        start=p["start"],
        plan=p["plan"],
        report=report,
        flags=p["flags"],
        gpu=gpu,
        # vLLM's report says "CPU" or "CUDA".
        device=p["device"] or str(report.get("device") or "cuda").lower(),
        vllm_version=p["vllm_version"],
        driver=drivers.pop() if len(drivers) == 1 else None,
        recorded_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
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
            "flags": {"type": "dict", "default": {}},
            "gpus": {"type": "list", "elements": "dict", "default": []},
            "device": {"type": "str", "choices": ["cuda", "cpu"]},
            "vllm_version": {"type": "str"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
