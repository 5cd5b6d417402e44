"""Action plugin: write the fleet's Prometheus target files (docs in
plugins/modules/vllm_scrape_targets.py).

On the controller - the default monitoring host, a `local` connection without become - the files
are written here, in Ansible's own process: sending the module to run as a new process there cost
about half a second of every run, a sixth of a no-op re-run of site.yml (docs/benchmarks.md). On a
monitoring host of the inventory, or with become, the module runs there as any module does.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.vllm_fleet.fleet.plugins.modules.vllm_scrape_targets import ARGUMENT_SPEC, sync

LOCAL_CONNECTIONS = ("local", "ansible.builtin.local", "ansible.legacy.local")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars or {})
        del tmp
        connection = self._connection
        local = connection.ansible_name in LOCAL_CONNECTIONS or connection._load_name in LOCAL_CONNECTIONS
        if not local or self._play_context.become:
            return {**result, **self._execute_module(module_args=self._task.args, task_vars=task_vars)}
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            done = sync(args["dir"], args["targets"], args["inventory_hosts"], bool(self._task.check_mode))
        except (ValueError, OSError) as e:
            raise AnsibleActionFail(str(e)) from e
        return {**result, **done}
