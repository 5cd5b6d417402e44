#!/usr/bin/python
"""Ansible module: write the fleet's Prometheus file_sd files in one call (the vllm_monitoring role)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_scrape_targets
short_description: Write the fleet's Prometheus file_sd target files, one per fleet host, in one call
version_added: "0.1.0"
description:
  - Runs on a monitoring host (the controller by default). Writes C(<dir>/<host>.json) for every host
    of I(targets) whose entries are given, atomically and only when the bytes differ, and removes the
    C(.json) files of hosts not in I(inventory_hosts). A host of I(targets) with no entries
    (C(null)) keeps its file as it is.
  - One call for the whole play instead of a task per host. On the controller (a C(local) connection
    without become) its action plugin does the work in Ansible's own process, with no module sent -
    a re-run of site.yml that changes nothing pays nothing measurable for its targets.
options:
  dir:
    description: The directory Prometheus's C(file_sd_configs) reads; created (0755) when missing.
    type: path
    required: true
  targets:
    description:
      - Fleet host name to its file_sd entries (a list, written as the file's JSON), or C(null) to leave
        that host's file alone.
    type: dict
    required: true
  inventory_hosts:
    description: Every host of the inventory; the files of other hosts are removed.
    type: list
    elements: str
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Writes and removes nothing; reports what it would write and remove.
"""

EXAMPLES = r"""
- name: Write the fleet's targets on the controller
  vllm_fleet.fleet.vllm_scrape_targets:
    dir: /etc/prometheus/file_sd/vllm-fleet
    targets:
      t4-01: [{targets: ["10.0.0.5:8000"], labels: {host: t4-01, model: qwen7b}}]
      t4-02: null
    inventory_hosts: "{{ groups['all'] }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
written:
  description: The hosts whose file was (or, in check mode, would be) written.
  returned: always
  type: list
  elements: str
removed:
  description: The files of hosts no longer in the inventory that were (would be) removed.
  returned: always
  type: list
  elements: str
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.monitoring import stale_target_files


def file_text(entries: list) -> str:
    return json.dumps(entries, indent=4, sort_keys=True) + "\n"


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def write_atomically(path: str, text: str) -> None:
    """Prometheus re-reads a file when it changes: it must never see half of one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".vllm-fleet-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# Also the action plugin's (plugins/action/vllm_scrape_targets.py), which runs sync() itself on the controller.
ARGUMENT_SPEC = {
    "dir": {"type": "path", "required": True},
    "targets": {"type": "dict", "required": True},
    "inventory_hosts": {"type": "list", "elements": "str", "required": True},
}


def sync(directory: str, targets: dict, inventory_hosts: list[str], check_mode: bool) -> dict:
    """Write the files that differ, remove the stale ones; the module's result. ValueError on bad input."""
    bad = sorted(str(h) for h, entries in targets.items() if entries is not None and not isinstance(entries, list))
    unsafe = sorted(str(h) for h in targets if "/" in str(h) or str(h).startswith("."))
    if bad or unsafe:
        raise ValueError(f"targets must map host names to lists of file_sd entries (or null): {bad + unsafe}")
    wanted = {h: file_text(entries) for h, entries in targets.items() if entries is not None}
    written = [h for h in sorted(wanted) if read(os.path.join(directory, f"{h}.json")) != wanted[h]]
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    removed = [os.path.join(directory, n) for n in stale_target_files(present, inventory_hosts)]
    created = not os.path.isdir(directory)
    if not check_mode:
        if created:
            os.makedirs(directory, mode=0o755)
        for host in written:
            write_atomically(os.path.join(directory, f"{host}.json"), wanted[host])
        for path in removed:
            os.unlink(path)
    return {"changed": bool(written or removed or created), "written": written, "removed": removed}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        result = sync(p["dir"], p["targets"], p["inventory_hosts"], module.check_mode)
    except (ValueError, OSError) as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
