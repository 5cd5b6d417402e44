#!/usr/bin/python
"""Ansible module: the host's GPUs, detected with nvidia-smi or taken from the inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Report a host's NVIDIA GPUs (name, memory, compute capability)
version_added: "0.1.0"
description:
  - Runs C(nvidia-smi --query-gpu=index,name,memory.total,compute_cap,driver_version
    --format=csv,noheader,nounits) when nvidia-smi is on the host, and resolves each GPU through
    the vllm-fleet GPU catalog.
  - Without nvidia-smi (test hosts), or with O(detect=false) (planning from the controller), it
    returns the GPUs declared in O(declared) (the inventory's C(vllm_gpus)), resolved through the
    catalog, with C(detected=false).
  - When GPUs are declared and nvidia-smi detects others (another count, or another model at an
    index), the host is refused with both lists (see O(fail_on_mismatch)), since a plan made from
    the declared GPUs would not hold on the ones the host has.
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
  detect:
    description:
      - Ask nvidia-smi. When false, nothing is run on the host and O(declared) is the answer
        (the inventory's C(vllm_detect_gpus=false), planning from the controller alone).
    type: bool
    default: true
  fail_on_mismatch:
    description:
      - Fail when the detected GPUs are not the declared ones, naming both lists. When false (plan.yml
        reports what preflight would refuse), the differences are returned in RV(declared_mismatch).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Runs the same read-only nvidia-smi query as a normal run and returns the same
        result; the module never changes anything.
requirements:
  - C(nvidia-smi) on the host (or the one O(nvidia_smi) names) to detect the GPUs; without it,
    or with O(detect=false), the GPUs in O(declared) are returned.
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
  sample:
    - index: 0
      name: T4
      reported_name: Tesla T4
      memory_mib: 15360
      compute_capability: "7.5"
      driver_version: "550.54.15"
detected:
  description: True when the list came from nvidia-smi, false when from the inventory.
  returned: always
  type: bool
  sample: true
declared_mismatch:
  description: Differences between the declared and the detected GPUs (empty when none declared).
  returned: always
  type: list
  elements: str
  sample: ["declared 2 GPUs, detected 1"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.gpus import (
    UnknownGPUError,
    parse_nvidia_smi,
    resolve,
)

QUERY = ["--query-gpu=index,name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"]


def main():
    module = AnsibleModule(
        argument_spec={
            "declared": {"type": "list", "elements": "raw", "default": []},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
            "detect": {"type": "bool", "default": True},
            "fail_on_mismatch": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    try:
        declared = [dict(resolve(g), index=i) for i, g in enumerate(module.params["declared"])]
    except UnknownGPUError as e:
        module.fail_json(msg=str(e))
    smi = module.get_bin_path(module.params["nvidia_smi"]) if module.params["detect"] else None
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
    if mismatch and module.params["fail_on_mismatch"]:
        module.fail_json(
            msg=f"the GPUs vllm_gpus declares ({names(declared)}) are not the ones nvidia-smi detects"
            f" ({names(gpus)}): {'; '.join(mismatch)}. Correct vllm_gpus, or remove it to plan from"
            " what is detected.",
            gpus=gpus,
            declared=declared,
            declared_mismatch=mismatch,
        )
    module.exit_json(changed=False, gpus=gpus, detected=True, declared_mismatch=mismatch)


def names(gpus: list[dict]) -> str:
    return ", ".join(g["name"] for g in gpus) or "none"


if __name__ == "__main__":
    main()
