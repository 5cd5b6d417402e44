"""Template filters over vllm_fleet's module_utils: the model schema and systemd quoting."""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

# Controller-side plugins do not see ansible.cfg's module_utils as ansible.module_utils.*; import
# the same package the modules use from the checkout (one implementation, not a copy).
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from vllm_fleet import inventory, systemd  # noqa: E402


def vllm_models_normalized(items):
    """vllm_models with every default filled (docs/inventory.md); fails on an invalid item."""
    try:
        return inventory.normalize_models(items)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_models_with_plan(items, host_plan):
    """vllm_models with the flags preflight decided (see inventory.apply_plan)."""
    try:
        return inventory.apply_plan(items, host_plan)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_model_revisions(items):
    """The distinct {model, revision} pairs of the present models in items."""
    try:
        return inventory.unique_revisions(items)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_served_name(model):
    return inventory.served_name(model)


def systemd_exec_args(argv):
    """A list of arguments -> an ExecStart= command line systemd will not split or expand."""
    return systemd.exec_line([str(a) for a in argv])


def systemd_environment(name, value):
    return systemd.quote_environment(str(name), str(value))


class FilterModule:
    def filters(self):
        return {
            "vllm_models_normalized": vllm_models_normalized,
            "vllm_models_with_plan": vllm_models_with_plan,
            "vllm_model_revisions": vllm_model_revisions,
            "vllm_served_name": vllm_served_name,
            "systemd_exec_args": systemd_exec_args,
            "systemd_environment": systemd_environment,
        }
