"""Lookup: a model's API key, as given or generated once and kept 0600 on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
name: api_key
short_description: A model's API key, as given or generated once and kept 0600 on the controller
version_added: 0.1.0
description:
  - Answers the key a model's unit requires (C(VLLM_API_KEY)) and its probe sends.
  - When O(setting) is C(generate), each model gets its own key, made on first use with Python's
    C(secrets) module (256 bits) and kept in C(<dir>/<model>.key), mode 0600, in a 0700 directory.
    Every later run, and the probe, reads the same file. A key file others can read is refused.
  - Any other O(setting) is the key itself (C("") for none), e.g. from Ansible Vault.
  - In check mode a key that does not exist yet is not made; the answer is then C("").
options:
  _terms:
    description: Model names, one key each.
    required: true
  setting:
    description: C(generate), the key itself, or C("") for none (vllm_service_api_key).
    type: str
    default: ""
  dir:
    description:
      - The directory of generated keys.
      - Empty means C(.vllm-api-keys) beside the host's inventory (C(inventory_dir)),
        else beside the playbook.
    type: str
    default: ""
notes:
  - Keep the keys directory out of version control, or encrypt its files with C(ansible-vault)
    (docs/security.md shows both).
"""

EXAMPLES = r"""
- name: Write a model's key into its 0600 secrets file
  ansible.builtin.copy:
    dest: "{{ vllm_service_env_dir }}/tiny.env"
    content: "VLLM_API_KEY={{ lookup('vllm_fleet.fleet.api_key', 'tiny', setting='generate') }}\n"
    mode: "0600"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One key per model name.
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import api_keys, layout


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        setting = self.get_option("setting") or ""
        key_dir = self.get_option("dir") or os.path.join(
            str(variables.get("inventory_dir") or variables.get("playbook_dir") or "."), layout.API_KEYS_SUBDIR
        )
        create = not variables.get("ansible_check_mode", False)
        try:
            return [api_keys.resolve(setting, str(name), key_dir, create=create) for name in terms]
        except (api_keys.ApiKeyError, ValueError, OSError) as e:
            raise AnsibleError(f"vllm_fleet.fleet.api_key: {e}") from e
