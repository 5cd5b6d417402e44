#!/usr/bin/python
"""Ansible module: record what a full run left on a host, and check a re-run would change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_converged
short_description: Record a host's converged state after a full run; check it before the next one
version_added: "0.1.0"
description:
  - C(action=save), at the end of a full run that passed, writes O(path) (C(0600) root) - the
    O(digest) of the run's inputs and the state the run left - each of O(files) with its sha256,
    mode and owner, each of O(dirs) with its mode and owner, the O(absent) paths, the O(units),
    the Debian O(packages), the O(weights) manifests and the O(health_urls). Saving the same
    record again changes nothing.
  - C(action=check) compares the host with that record in one call, reading only small files,
    C(systemctl show), dpkg's status file and each health URL. It returns C(converged=true) when
    the digest is the same and nothing drifted, else C(converged=false) and the C(reasons). It
    never changes anything and never fails on a difference.
  - The digest covers the inputs, not the hub. Like a full run (the modelscope_download module with
    C(verify=fast)), a check trusts the weights manifest and does not ask the hub again.
  - Supports check mode (C(action=save) reports whether the record would change).
options:
  action:
    description: Record the state (C(save)) or compare the host with the record (C(check)).
    type: str
    choices: [save, check]
    required: true
  digest:
    description: The digest of the run's inputs (the C(vllm_fleet_inputs_digest) filter).
    type: str
    required: true
  path:
    description:
      - Where the record is kept on the host.
      - Omitted means the collection's place for it (lookup P(vllm_fleet.fleet.layout#lookup), C(converged_path)).
    type: path
  files:
    description: With C(action=save), files the run wrote (units, secrets files, install records).
    type: list
    elements: path
    default: []
  dirs:
    description: With C(action=save), directories the run made, with their mode and owner.
    type: list
    elements: path
    default: []
  absent:
    description: With C(action=save), paths the run removed (units of models now absent).
    type: list
    elements: path
    default: []
  units:
    description: With C(action=save), systemd units that must be enabled and active.
    type: list
    elements: str
    default: []
  packages:
    description: With C(action=save), Debian packages that must be installed.
    type: list
    elements: str
    default: []
  weights:
    description: With C(action=save), weights directories whose manifest must still hold (C(dir), C(repo), C(revision)).
    type: list
    elements: dict
    default: []
  health_urls:
    description: With C(action=save), URLs that must answer 200 (each model's /health on the host).
    type: list
    elements: str
    default: []
  health_timeout:
    description: Seconds each health URL has to answer in C(action=check).
    type: float
    default: 3
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: C(action=check) runs as in a normal run (it never changes anything); C(action=save)
        reports whether the record would change and writes nothing.
requirements:
  - C(systemctl) on the host when the saved record names systemd units (C(action=check)).
"""

EXAMPLES = r"""
- name: Ask whether this host is as the last full run left it
  vllm_converged:
    action: check
    digest: "{{ vllm_rollout_digest }}"
  register: vllm_rollout_converged

- name: Record what this full run left on the host
  vllm_converged:
    action: save
    digest: "{{ vllm_rollout_digest }}"
    files: ["{{ vllm_service_unit_dir }}/vllm-qwen-7b.service", "{{ vllm_service_env_dir }}/qwen-7b.env"]
    units: [vllm-qwen-7b.service]
    health_urls: ["http://127.0.0.1:8000/health"]
"""

RETURN = r"""
converged:
  description: With C(action=check), whether a full run would change nothing on this host.
  returned: action=check
  type: bool
  sample: false
reasons:
  description: With C(action=check), what differs (empty when converged).
  returned: action=check
  type: list
  elements: str
  sample:
    - vllm-qwen-7b.service is inactive, not active
    - the weights in /srv/models/qwen/Qwen2.5-7B-Instruct/master are not as verified
record:
  description:
    - With C(action=save), the record written (or that would be, in check mode; empty in check mode
      when what it names does not exist yet).
  returned: action=save
  type: dict
  sample:
    version: 1
    digest: ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb
    units: [vllm-qwen-7b.service]
    weights: [{dir: /srv/models/qwen/Qwen2.5-7B-Instruct/master, repo: qwen/Qwen2.5-7B-Instruct, revision: master}]
    health_urls: ["http://127.0.0.1:8000/health"]
"""

import json
import os
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.converged import (
    differences,
    installed_packages,
    make_record,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.files import write_json_atomically

DPKG_STATUS = "/var/lib/dpkg/status"


def read_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def installed_packages_on_host() -> set[str]:
    try:
        with open(DPKG_STATUS, encoding="utf-8", errors="replace") as fh:
            return installed_packages(fh.read())
    except OSError:
        return set()


def unit_states(module: AnsibleModule, units: list[str]) -> dict[str, dict]:
    if not units:
        return {}
    systemctl = module.get_bin_path("systemctl", required=True)
    props = "ActiveState,UnitFileState,NeedDaemonReload"
    rc, out, err = module.run_command([systemctl, "show", "-p", props, "--", *units])
    if rc != 0:
        return {u: {"ActiveState": f"unknown (systemctl: {err.strip()})"} for u in units}
    # One block of KEY=value lines per unit, in the order asked, separated by a blank line.
    blocks = out.strip().split("\n\n")
    states = {}
    for unit, block in zip(units, blocks, strict=False):
        states[unit] = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    return states


def health(urls: list[str], timeout: float) -> dict[str, str | None]:
    # The URLs are the host's own models: never through a proxy the environment may name. Not
    # fetch_url: a unit that resets the connection must read as "not converged", not end the module.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    answers = {}
    for url in urls:
        try:
            with opener.open(url, timeout=timeout) as resp:
                answers[url] = None if resp.status == 200 else f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            answers[url] = str(getattr(exc, "reason", exc))
    return answers


def write_record(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_json_atomically(path, record, 0o600, indent=1)


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "choices": ["save", "check"], "required": True},
            "digest": {"type": "str", "required": True},
            "path": {"type": "path"},
            "files": {"type": "list", "elements": "path", "default": []},
            "dirs": {"type": "list", "elements": "path", "default": []},
            "absent": {"type": "list", "elements": "path", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "weights": {"type": "list", "elements": "dict", "default": []},
            "health_urls": {"type": "list", "elements": "str", "default": []},
            "health_timeout": {"type": "float", "default": 3},
        },
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"] or layout.CONVERGED_PATH
    old = read_record(path)

    if p["action"] == "check":
        record = old or {}
        reasons = differences(
            old,
            p["digest"],
            installed=installed_packages_on_host() if record.get("packages") else set(),
            unit_states=unit_states(module, record.get("units", [])),
            health=health(record.get("health_urls", []), p["health_timeout"]),
        )
        module.exit_json(changed=False, converged=not reasons, reasons=reasons)

    try:
        record = make_record(
            p["digest"],
            files=p["files"],
            dirs=p["dirs"],
            absent=p["absent"],
            units=p["units"],
            packages=p["packages"],
            weights=p["weights"],
            health_urls=p["health_urls"],
        )
    except ValueError as exc:
        if module.check_mode:
            # A --check run on a host the run would build: what it records does not exist yet.
            module.exit_json(changed=True, record={}, msg=f"would record the run's state ({exc})")
        module.fail_json(msg=str(exc))
    changed = record != old
    if changed and not module.check_mode:
        write_record(path, record)
    module.exit_json(changed=changed, record=record)


if __name__ == "__main__":
    main()
