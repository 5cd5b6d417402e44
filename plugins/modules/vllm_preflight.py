#!/usr/bin/python
"""Ansible module: judge every model of a host before anything on it changes."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_preflight
short_description: Refuse, before any host change, models that cannot run on a host's GPUs
version_added: "0.1.0"
description:
  - Checks every model of a host (C(vllm_models)) against the host's GPUs, the pinned vLLM
    version and the compatibility rules of vllm-fleet (docs/preflight.md), and returns the plan a
    person reads - per model the GPUs, tp, dtype, quantization, weight and KV-cache GiB, the
    largest safe C(--max-model-len), the verdict, every error with its fix, and the flags after
    old ones are translated.
  - Reports all problems of a host at once and fails when any model is refused.
  - "Runs on the controller (C(delegate_to: localhost)); reads model configs from a local path,
    the project's C(model_configs/), a local cache, or fetches only the small config files from
    the ModelScope hub. Changes nothing on any host; safe in check mode."
options:
  models:
    description: The host's C(vllm_models) (see docs/inventory.md).
    type: list
    elements: dict
    required: true
  gpus:
    description: The host's GPUs as C(gpu_facts) returns them (detected or declared).
    type: list
    elements: raw
    default: []
  vllm_version:
    description:
      - The vLLM release the rules are checked against.
      - Omitted means the release the collection pins (lookup P(vllm_fleet.fleet.layout#lookup), C(vllm_version)).
    type: str
  vllm_device:
    description: C(cuda) or C(cpu). On C(cpu) hosts the GPU rules do not apply.
    type: str
    choices: [cuda, cpu]
    default: cuda
  service:
    description:
      - What the vllm_service role writes into every unit of the host beside the models, for the
        rules unit-values-printable and api-key-required.
    type: dict
    default: {}
    suboptions:
      bind_address:
        description: The address the units listen on (vllm_service_bind_address).
        type: str
        default: 0.0.0.0
      environment:
        description: The environment of every unit (vllm_service_environment).
        type: dict
        default: {}
      api_key_set:
        description: Whether the units require an API key (never the key itself).
        type: bool
        default: false
      allow_no_api_key:
        description: The operator's word that the network is trusted (vllm_service_allow_no_api_key).
        type: bool
        default: false
      cpu_kvcache_space_gib:
        description:
          - CPU hosts, the whole GiB of KV cache the units get (vllm_service_cpu_kvcache_space_gib, the
            units' VLLM_CPU_KVCACHE_SPACE). The plan predicts the KV cache vLLM's CPU build reports from it.
        type: int
        default: 1
  revisions:
    description:
      - Each model's revision resolved to a commit (the C(resolved) list of
        M(vllm_fleet.fleet.modelscope_revisions)). A model's config is read at its commit, and the
        rules revision-pinned, revision-exists and revision-moved judge them.
      - A model not in the list counts as unresolved, unless its revision is a commit id.
    type: list
    elements: dict
    default: []
  allow_floating_revisions:
    description: Let a model follow a branch (vllm_allow_floating_revisions); without it a branch is refused.
    type: bool
    default: false
  model_configs_dir:
    description:
      - The shipped configs (C(model_configs/)).
      - Omitted means none (a module runs from its payload, without the collection's files) - only
        C($VLLM_FLEET_MODEL_CONFIGS), the cache and the hub. The playbooks pass the collection's,
        lookup P(vllm_fleet.fleet.layout#lookup) C(model_configs_dir).
    type: path
  cache_dir:
    description: Where configs fetched from the hub are kept.
    type: path
  fetch:
    description: Whether configs missing locally may be fetched from the hub.
    type: bool
    default: true
  hub_endpoint:
    description: ModelScope endpoint (else C(MODELSCOPE_ENDPOINT), else the public hub).
    type: str
  hub_token:
    description: ModelScope API token for private repos.
    type: str
  host:
    description:
      - The host's inventory name (C(inventory_hostname)), for its place in a model's C(cluster)
        (docs/multinode.md).
    type: str
    default: ""
  cluster_members:
    description:
      - For each model of the host that names a C(cluster), what every member of it says - whether
        it is in the inventory and in the play, its vLLM release and device, its copy of the model
        item and the GPUs the play found there (filter C(vllm_fleet.fleet.vllm_cluster_members)).
      - Judged by the cluster rules (docs/preflight.md), and the model is planned on every member's GPUs.
    type: dict
    default: {}
  calibration:
    description:
      - A calibration file on the controller (C(vllm-fleet calibrate --write), docs/planner.md). The
        plans use the terms it holds for the host's GPU and the vLLM version, and each plan says which
        terms and from how many starts (C(calibration)), or that the file has nothing for them.
      - Omitted means the planner's built-in terms. A file that cannot be read or is not a
        calibration file fails the module.
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Judges the models as a normal run does and changes nothing on any host; configs it
        fetches from the hub are still kept in O(cache_dir) on the controller.
requirements:
  - The ModelScope SDK (C(modelscope)) in the controller's Python, only when a model's config
    must be fetched from the hub (O(fetch=true) and no local copy).
"""

EXAMPLES = r"""
- name: Check every model of this host before changing it.
  vllm_preflight:
    models: "{{ vllm_models }}"
    gpus: "{{ gpu_facts_result.gpus }}"
    vllm_version: "{{ vllm_version | default(omit) }}"
    model_configs_dir: "{{ lookup('vllm_fleet.fleet.layout', 'model_configs_dir') }}"
  delegate_to: localhost
  register: preflight
"""

RETURN = r"""
plan:
  description: The host's plan (keys in docs/preflight.md).
  returned: always
  type: dict
  contains:
    verdict:
      description: '"ok" or "refused".'
      type: str
    models:
      description: One plan per model - verdict, tp, dtype, weights_gib, kv_cache_gib, errors and the rest.
      type: list
    errors:
      description: Host-wide errors (GPU sharing, ports), each with rule, message and fix.
      type: list
  sample:
    verdict: ok
    vllm_version: "0.31.1"
    device: cuda
    gpus: [{index: 0, name: A100-80GB, memory_mib: 81920, compute_capability: "8.0"}]
    models:
      - {model: qwen-7b, repo: qwen/Qwen2.5-7B-Instruct, verdict: ok, gpus: [0], tp: 1, dtype: bfloat16,
         weights_gib: 14.2, kv_cache_gib: 55.1, kv_tokens: 1031680, max_model_len_fit: 32768, errors: []}
    errors: []
    warnings: []
refused:
  description: Names of the refused models.
  returned: always
  type: list
  elements: str
  sample: [qwen-72b]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.calibration import (
    CalibrationError,
    load_calibration,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.hub_configs import load_facts
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check_host


def _summary(plan: dict) -> str:
    lines = []
    for m in plan["models"]:
        for e in m["errors"]:
            lines.append(f"{m['model']}: [{e['rule']}] {e['message']} -- fix: {e['fix']}")
    for e in plan["errors"]:
        lines.append(f"host: [{e['rule']}] {e['message']} -- fix: {e['fix']}")
    return "\n".join(lines)


def main():
    module = AnsibleModule(
        argument_spec={
            "models": {"type": "list", "elements": "dict", "required": True},
            "gpus": {"type": "list", "elements": "raw", "default": []},
            "vllm_version": {"type": "str"},
            "vllm_device": {"type": "str", "choices": ["cuda", "cpu"], "default": "cuda"},
            "service": {
                "type": "dict",
                "default": {},
                "options": {
                    "bind_address": {"type": "str", "default": layout.BIND_ADDRESS},
                    "environment": {"type": "dict", "default": {}},
                    "api_key_set": {"type": "bool", "default": False},
                    "allow_no_api_key": {"type": "bool", "default": False},
                    "cpu_kvcache_space_gib": {"type": "int", "default": layout.CPU_KVCACHE_SPACE_GIB},
                },
            },
            "revisions": {"type": "list", "elements": "dict", "default": []},
            "allow_floating_revisions": {"type": "bool", "default": False},
            "model_configs_dir": {"type": "path"},
            "cache_dir": {"type": "path"},
            "fetch": {"type": "bool", "default": True},
            "hub_endpoint": {"type": "str"},
            "hub_token": {"type": "str", "no_log": True},
            "host": {"type": "str", "default": ""},
            "cluster_members": {"type": "dict", "default": {}},
            "calibration": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    configs_dir = p["model_configs_dir"]
    vllm_version = p["vllm_version"] or layout.VLLM_VERSION

    def facts_for(item):
        return load_facts(
            item["model"],
            item.get("revision"),
            model_configs_dir=configs_dir,
            cache_dir=p["cache_dir"],
            fetch=p["fetch"],
            endpoint=p["hub_endpoint"],
            token=p["hub_token"],
        )

    service = p["service"] or {}
    host_vars = {
        "vllm_models": p["models"],
        "vllm_version": vllm_version,
        "vllm_device": p["vllm_device"],
        "vllm_revisions": p["revisions"],
        "vllm_allow_floating_revisions": p["allow_floating_revisions"],
        "inventory_hostname": p["host"],
        "vllm_cluster_members": p["cluster_members"],
        # Named as the operator sets them, so a refusal names the variable to change.
        "vllm_service": {
            "vllm_service_bind_address": service["bind_address"],
            "vllm_service_environment": service["environment"],
            "api_key_set": service["api_key_set"],
            "allow_no_api_key": service["allow_no_api_key"],
            "cpu_kvcache_space_gib": service["cpu_kvcache_space_gib"],
        },
    }
    calibration = None
    if p["calibration"]:
        # A file the operator named that cannot be used refuses the host: planning with the built-in
        # terms instead would be the silent fallback the calibration loop exists to avoid.
        try:
            with open(p["calibration"], encoding="utf-8") as f:
                calibration = load_calibration(f.read(), p["calibration"])
        except OSError as e:
            module.fail_json(msg=f"calibration file {p['calibration']}: {e.strerror} (vllm_calibration_file)")
        except CalibrationError as e:
            module.fail_json(msg=f"{e} (vllm_calibration_file)")
    plan = check_host(host_vars, detected_gpus=p["gpus"] or None, facts_for=facts_for, calibration=calibration)
    refused = [m["model"] for m in plan["models"] if m["verdict"] == "refused"]
    if plan["verdict"] == "refused":
        module.fail_json(msg="preflight refused this host:\n" + _summary(plan), plan=plan, refused=refused)
    module.exit_json(changed=False, plan=plan, refused=refused)


if __name__ == "__main__":
    main()
