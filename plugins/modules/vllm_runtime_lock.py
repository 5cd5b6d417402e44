#!/usr/bin/python
"""Ansible module: keep a runtime's hash lock on the host and check a wheelhouse against it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_runtime_lock
short_description: Keep a runtime's hash lock on the host and check its wheelhouse against it
version_added: "0.1.0"
description:
  - Writes O(content), a lock (a requirements file with every package pinned and its wheels'
    SHA-256, as C(scripts/lock_runtime.py) makes it), to O(dest) (C(0644) root), unless it is
    there already with that content.
  - With O(wheelhouse), checks every file there against the lock before anything is installed. Each
    must be a wheel of a locked package, of the locked version, whose SHA-256 the lock lists, and
    every locked package needs its wheel. Anything else fails the task with each file named (a
    tampered wheel, one the lock does not know, a package without its wheel); nothing is installed,
    and the wheelhouse is removed from the host (not in check mode), so that the next run sends it
    again rather than refusing the same files for ever.
  - Supports check mode (the lock is not written; the wheelhouse is checked when it is there).
options:
  content:
    description: The lock's text.
    type: str
    required: true
  dest:
    description: Where the host keeps the lock (the runtime role names it by the lock's digest).
    type: path
    required: true
  wheelhouse:
    description: A directory of wheels that must be exactly the lock's.
    type: path
  source:
    description: Where the wheelhouse came from (the controller's archive), named in the failure.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Nothing is written; a wheelhouse that is there is checked as in a normal run.
"""

EXAMPLES = r"""
- name: Keep the lock and check the wheelhouse against it
  vllm_fleet.fleet.vllm_runtime_lock:
    content: "{{ lookup('ansible.builtin.file', vllm_runtime_lock, rstrip=false) }}"
    dest: "{{ vllm_runtime_root }}/locks/{{ vllm_runtime_spec.lock }}.txt"
    wheelhouse: "{{ vllm_runtime_root }}/wheelhouse/{{ vllm_runtime_wheelhouse_name }}"
    source: "{{ vllm_runtime_wheelhouse_archive }}"
"""

RETURN = r"""
digest:
  description: The lock's digest, of what it installs (names, versions, hashes).
  returned: always
  type: str
  sample: a496f78f78c9
packages:
  description: How many packages the lock pins.
  returned: always
  type: int
  sample: 151
checked:
  description: How many wheels were checked (0 without O(wheelhouse)).
  returned: always
  type: int
  sample: 151
problems:
  description: What keeps the wheelhouse from being exactly the lock (the task fails when not empty).
  returned: failure
  type: list
  elements: str
  sample:
    - "idna-3.20-py3-none-any.whl: sha256 55e5... is not one the lock lists for idna==3.20"
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import runtime_lock
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.weights import sha256_file


def write_lock(module: AnsibleModule, path: str, content: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == content:
                return False
    except OSError:
        pass
    if module.check_mode:
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=".lock-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(partial, 0o644)
    os.replace(partial, path)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "content": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "wheelhouse": {"type": "path"},
            "source": {"type": "str"},
        },
        supports_check_mode=True,
    )
    content = module.params["content"]
    try:
        pins = runtime_lock.parse(content)
    except ValueError as e:
        module.fail_json(msg=f"not a lock: {e}")
    result = {"digest": runtime_lock.digest(content), "packages": len(pins), "checked": 0}
    changed = write_lock(module, module.params["dest"], content)
    wheelhouse = module.params["wheelhouse"]
    if wheelhouse and os.path.isdir(wheelhouse):
        files = {
            entry.name: sha256_file(entry.path)
            for entry in os.scandir(wheelhouse)
            if entry.is_file() and not entry.name.startswith(".")
        }
        result["checked"] = len(files)
        problems = runtime_lock.check_wheelhouse(pins, files)
        if problems:
            if not module.check_mode:
                shutil.rmtree(wheelhouse, ignore_errors=True)
                changed = True
            source = module.params["source"]
            again = (
                f" It was removed from the host; the next run sends it again from {source}"
                + " (remove that archive if it is the one that changed: the controller downloads it again)."
                if source
                else ""
            )
            module.fail_json(
                msg=f"the wheelhouse {wheelhouse} is not the lock's, nothing installed: {'; '.join(problems)}.{again}",
                problems=problems,
                changed=changed,
                **result,
            )
    elif wheelhouse and not module.check_mode:
        module.fail_json(msg=f"no wheelhouse at {wheelhouse}", changed=changed, **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
