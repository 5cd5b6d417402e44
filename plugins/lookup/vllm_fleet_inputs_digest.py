"""Lookup: the digest of a host's inputs, for deploy.yml's fast path (roles/vllm_rollout)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: vllm_fleet_inputs_digest
short_description: The sha256 of a host's vllm-fleet inputs - its variables and the project's code
description:
  - Templates every variable of the host whose name starts with C(vllm_) or C(model_weights_)
    (less the run-time results and rollout knobs that are not inputs, see
    plugins/module_utils/vllm_fleet/converged.py), and hashes them with every file of the
    playbooks, roles, plugins and model configs of the collection (or checkout) the lookup runs from,
    or under the project root given as the term.
  - Returns an empty string when a variable cannot be worked out yet because it is made from facts
    that were not gathered, so the caller can gather them and ask again; with O(facts_gathered)
    true it fails instead, naming the variable.
options:
  _terms:
    description: A project root (the directory that holds roles/); omitted means this collection's.
    required: false
  facts_gathered:
    description: Whether facts were gathered; an undefined value is then an error.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Work out the digest of this host's inputs
  ansible.builtin.set_fact:
    vllm_rollout_digest: "{{ lookup('vllm_fleet.fleet.vllm_fleet_inputs_digest') }}"
"""

RETURN = r"""
_raw:
  description: The sha256 (hex), or an empty string when facts are needed first.
  type: list
  elements: str
"""

import functools
from pathlib import Path

from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.plugins.lookup import LookupBase
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import converged, layout

PREFIXES = ("vllm_", "model_weights_")


@functools.lru_cache(maxsize=4)
def _code_digest(root: str) -> str:
    # Once per run: the code does not change while a playbook runs.
    return converged.code_digest(Path(root))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) > 1:
            raise AnsibleError("vllm_fleet_inputs_digest takes at most one term: the project root")
        root = Path(str(terms[0]) if terms else (layout.collection_root() or ".")).resolve()
        if not (root / "roles").is_dir():
            raise AnsibleError(f"{root} is not the vllm-fleet project root (no roles/ directory)")
        variables = variables or {}
        names = sorted(n for n in variables if n.startswith(PREFIXES) and converged.is_input_name(n))
        values = {}
        for name in names:
            try:
                values[name] = self._templar.template(variables[name])
            except AnsibleUndefinedVariable as exc:
                if self.get_option("facts_gathered"):
                    raise AnsibleError(f"cannot work out {name}: {exc}") from exc
                return [""]
        return [converged.inputs_digest(values, _code_digest(str(root)))]
