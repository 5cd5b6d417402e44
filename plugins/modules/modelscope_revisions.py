#!/usr/bin/python
"""Resolve each model's branch or tag to the commit id the hub serves now, once for the play."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: modelscope_revisions
short_description: Resolve model branches and tags to the hub's commit ids
version_added: "0.1.0"
description:
  - For each distinct I(models) repo and revision, asks the hub (the ModelScope SDK's client) which
    commit the branch or tag names now. A commit id (40 hex digits) is already pinned and needs no
    hub; a local path is not on the hub.
  - A revision that cannot be resolved (no such branch or tag, the hub unreachable) is returned with
    its error, never failed here; preflight decides what it means (rule revision-pinned).
  - With I(record), compares each branch and tag with the commit the record held for it (what it
    named the last time it was resolved) and returns the moves, then, with I(update_record), keeps
    the new commits there.
options:
  models:
    description: Items with C(model) (the repo id) and C(revision) (default master), e.g. vllm_models of every host.
    type: list
    elements: dict
    required: true
  endpoint:
    description: Hub URL; default the SDK's (C(MODELSCOPE_ENDPOINT), else the public hub).
    type: str
  token:
    description: Access token for private models.
    type: str
  record:
    description: JSON file of the commits each branch and tag resolved to last time.
    type: path
  update_record:
    description: Write the new commits into I(record) (never in check mode).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Resolves as always; does not write the record.
requirements:
  - The ModelScope SDK (C(modelscope_hub)) in the Python that runs the module, when a revision is not a commit id.
"""

EXAMPLES = r"""
- name: Resolve every model's revision to a commit, once for the play
  vllm_fleet.fleet.modelscope_revisions:
    models: "{{ ansible_play_hosts | map('extract', hostvars) | map(attribute='vllm_models', default=[]) | flatten }}"
    endpoint: "{{ vllm_hub_endpoint | default(omit, true) }}"
    record: "{{ inventory_dir }}/.vllm-revisions.json"
  delegate_to: localhost
  run_once: true
  register: vllm_revisions
"""

RETURN = r"""
resolved:
  description: One entry per distinct repo and revision.
  type: list
  elements: dict
  returned: always
  sample:
    - model: qwen/Qwen2.5-7B-Instruct
      revision: master
      kind: branch
      commit: 9b1d07e6c2aa5f3e8d1c0b4a7e6f5d4c3b2a1908
      error: null
      previous: 3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43
      previous_at: "2026-11-20 09:14 UTC"
      moved: true
moved:
  description: One line per branch or tag that names another commit than last time.
  type: list
  elements: str
  returned: always
  sample: ["qwen/Qwen2.5-7B-Instruct master: 3f2a9c81d4e0 -> 9b1d07e6c2aa"]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import revisions


def _distinct(models: list[dict]) -> list[dict]:
    seen: dict[tuple[str, str], dict] = {}
    for item in models:
        if not isinstance(item, dict) or not item.get("model") or item.get("state", "present") != "present":
            continue
        revision = str(item.get("revision") or "master")
        seen.setdefault((str(item["model"]), revision), {"model": str(item["model"]), "revision": revision})
    return list(seen.values())


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "models": {"type": "list", "elements": "dict", "required": True},
            "endpoint": {"type": "str"},
            "token": {"type": "str", "no_log": True},
            "record": {"type": "path"},
            "update_record": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    # The SDK retries a request 5 times with backoff (15 s when the hub is unreachable); asking which
    # commit a name points at is cheap to ask again on the next run. Read when the SDK is imported.
    os.environ.setdefault("MODELSCOPE_API_MAX_RETRIES", "2")
    try:
        record = revisions.read_record(p["record"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    resolved = revisions.with_previous(
        revisions.resolve(_distinct(p["models"]), endpoint=p["endpoint"], token=p["token"]), record
    )
    new_record = revisions.updated_record(record, resolved)
    changed = bool(p["record"]) and new_record != record
    if changed and p["update_record"] and not module.check_mode:
        revisions.write_record(p["record"], new_record)
    moved = [f"{r.model} {revisions.moved_line(r)} (since {r.previous_at})" for r in resolved if r.moved]
    for line in moved:
        # Said in every run's output, not only at -v: the operator sees the weights change.
        module.warn(f"{line}: this run deploys the new commit")
    module.exit_json(changed=changed and p["update_record"], resolved=revisions.as_dicts(resolved), moved=moved)


if __name__ == "__main__":
    main()
