#!/usr/bin/python
"""Ansible module: remove old vLLM environments or weight revisions beyond a number kept."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_prune
short_description: Remove old vLLM environments or weight revisions, keeping the newest and those in use
version_added: "0.1.0"
description:
  - Looks at the subdirectories of O(path) that carry O(marker) (vllm-fleet made them; anything
    else there is never touched), keeps the O(keep) most recently made (by the mtime of
    O(marker)) and every one listed in O(protect) (what the installed units and the kept good
    states run), and removes the rest.
  - Supports check mode (reports what it would remove).
options:
  path:
    description: A directory whose subdirectories are versions (environments, or one model's revisions).
    type: path
    required: true
  keep:
    description: How many of the newest to keep, at least 1.
    type: int
    default: 2
  protect:
    description: Directories never removed, whatever their age.
    type: list
    elements: path
    default: []
  marker:
    description: A file that marks a subdirectory as one vllm-fleet made.
    type: str
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Reports the directories it would remove in RV(removed) and removes nothing.
"""

EXAMPLES = r"""
- name: Keep the two newest vLLM environments and those in use
  vllm_prune:
    path: "{{ vllm_runtime_root }}/envs"
    keep: 2
    marker: .vllm-fleet-install.json
    protect: "{{ vllm_rollout_in_use }}"
"""

RETURN = r"""
removed:
  description: The directories removed (in check mode, those that would be).
  returned: always
  type: list
  elements: str
  sample: [/srv/vllm/envs/vllm-0.29.0-cuda]
kept:
  description: The directories kept.
  returned: always
  type: list
  elements: str
  sample: [/srv/vllm/envs/vllm-0.31.1-cuda, /srv/vllm/envs/vllm-0.30.1-cuda]
"""

import shutil
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.rollout import prune_choice


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "keep": {"type": "int", "default": 2},
            "protect": {"type": "list", "elements": "path", "default": []},
            "marker": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["keep"] < 1:
        module.fail_json(msg="keep must be at least 1: the version in use is always kept")
    root = Path(p["path"])
    if not root.is_dir():
        module.exit_json(changed=False, removed=[], kept=[])
    children = [
        (str(child), (child / p["marker"]).stat().st_mtime)  # when vllm-fleet finished making it
        for child in root.iterdir()
        if child.is_dir() and not child.is_symlink() and (child / p["marker"]).is_file()
    ]
    protect = {str(Path(x)) for x in p["protect"]}
    remove, kept = prune_choice(children, p["keep"], protect)
    if not module.check_mode:
        for path in remove:
            shutil.rmtree(path)
    module.exit_json(changed=bool(remove), removed=remove, kept=kept)


if __name__ == "__main__":
    main()
