#!/usr/bin/python
"""Ansible module: the host's GPUs, detected with nvidia-smi or taken from the inventory."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.vllm_fleet.gpus import UnknownGPUError, parse_nvidia_smi, resolve

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Report a host's NVIDIA GPUs (name, memory, compute capability)
description:
  - Runs C(nvidia-smi --query-gpu=index,name,memory.total,compute_cap --format=csv,noheader,nounits)
    when nvidia-smi is on the host, and resolves each GPU through the vllm-fleet GPU catalog.
  - Without nvidia-smi (test hosts, planning from the controller) it returns the GPUs declared in
    O(declared) (the inventory's C(vllm_gpus)), resolved through the catalog, with C(detected=false).
  - Changes nothing; safe in check mode.
options:
  declared:
    description:
      - GPUs declared in the inventory (C(vllm_gpus)); each a catalog name such as C(T4),
        C(A100-80GB), an nvidia-smi name such as C(Tesla T4), or a dict
        C({name, memory_mib, compute_capability}).
    type: list
    elements: raw
    default: []
  nvidia_smi:
    description: Path or name of nvidia-smi.
    type: str
    default: nvidia-smi
author:
  - vllm-fleet
"""

EXAMPLES = r"""
- name: Detect the GPUs, or take the declared ones.
  gpu_facts:
    declared: "{{ vllm_gpus | default([]) }}"
  register: gpus

- name: Show them.
  ansible.builtin.debug:
    msg: "{{ gpus.gpus | map(attribute='name') | list }}"
"""

RETURN = r"""
gpus:
  description: The GPUs, in index order.
  returned: always
  type: list
  elements: dict
  sample: [{index: 0, name: T4, reported_name: Tesla T4, memory_mib: 15360, compute_capability: "7.5"}]
detected:
  description: True when the list came from nvidia-smi, false when from the inventory.
  returned: always
  type: bool
declared_mismatch:
  description: Differences between the declared and the detected GPUs (empty when none declared).
  returned: always
  type: list
  elements: str
"""

QUERY = ["--query-gpu=index,name,memory.total,compute_cap", "--format=csv,noheader,nounits"]


def main():
    module = AnsibleModule(
        argument_spec={
            "declared": {"type": "list", "elements": "raw", "default": []},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
        },
        supports_check_mode=True,
    )
    try:
        declared = [dict(resolve(g), index=i) for i, g in enumerate(module.params["declared"])]
    except UnknownGPUError as e:
        module.fail_json(msg=str(e))
    smi = module.get_bin_path(module.params["nvidia_smi"])
    if not smi:
        module.exit_json(changed=False, gpus=declared, detected=False, declared_mismatch=[])
    rc, out, err = module.run_command([smi, *QUERY])
    if rc != 0:
        module.fail_json(
            msg=f"nvidia-smi failed (rc {rc}): {err.strip() or out.strip()}; "
            "fix the driver, or remove nvidia-smi from PATH to plan from vllm_gpus"
        )
    gpus = parse_nvidia_smi(out)
    mismatch = []
    if declared:
        if len(declared) != len(gpus):
            mismatch.append(f"declared {len(declared)} GPUs, detected {len(gpus)}")
        for d, g in zip(declared, gpus, strict=False):
            if d["name"] != g["name"]:
                mismatch.append(f"GPU {g['index']}: declared {d['name']}, detected {g['name']}")
    module.exit_json(changed=False, gpus=gpus, detected=True, declared_mismatch=mismatch)


if __name__ == "__main__":
    main()
