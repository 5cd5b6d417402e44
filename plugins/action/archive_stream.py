"""Action plugin: stream a controller's tar archive into `tar -x` on the host (docs in
plugins/modules/archive_stream.py, which also does the unpack when the archive was copied first).

ansible.builtin.unarchive writes the whole archive to the host's temporary directory, compares it
with the destination (`tar --diff`), then unpacks it: three passes over a 938 MB wheelhouse, 10.2 s
of a 98 s cold deploy (bench/cold_deploy.py). `tar -c | ssh host tar -x`, the way by hand, took
3.6 s. This plugin does that through the task's own ssh connection: the same options, control
socket, user and become as every other task, with the file as ssh's standard input, so the
controller never holds the archive in memory (the connection's exec_command would, with in_data).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.vllm_fleet.fleet.plugins.modules.archive_stream import ARGUMENT_SPEC

SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "ansible.legacy.ssh")


class ActionModule(ActionBase):
    # No temporary directory up front: only the copy-first path needs one (_copy_then_unpack).
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars or {})
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        # dest as written: type path would expand "~" with the controller's home.
        src, dest, marker = args["src"], self._task.args["dest"], args["marker"]
        if "/" in marker or marker in ("", ".", ".."):
            raise AnsibleActionFail(f"marker must be a plain file name, not {marker!r}")
        if args["remote_src"]:
            return {**result, **self._execute_module(module_args=self._task.args, task_vars=task_vars)}

        if not dest.startswith("/"):
            raise AnsibleActionFail(f"dest must be an absolute path on the host, not {dest!r}")
        result.update(dest=dest, streamed=False, changed=False)
        if self._remote_file_exists(self._connection._shell.join_path(dest, marker)):
            return result
        result["changed"] = True
        if self._task.check_mode:
            return result
        if not os.path.isfile(src):
            raise AnsibleActionFail(f"no archive at {src} on the controller")
        result["archive_bytes"] = os.path.getsize(src)
        if self._can_stream():
            self._stream(src, dest, marker)
            result["streamed"] = True
            return result
        return {**result, **self._copy_then_unpack(src, dest, marker, task_vars)}

    def _can_stream(self) -> bool:
        """Key-authenticated ssh, with no become password: nothing else needs ssh's standard input."""
        connection = self._connection
        if connection.ansible_name not in SSH_CONNECTIONS and connection._load_name not in SSH_CONNECTIONS:
            return False
        if connection.get_option("password") or connection._play_context.password:
            return False
        become = connection.become
        if become is not None and self._play_context.become:
            try:
                if become.get_option("become_pass"):
                    return False
            except KeyError:
                pass
        return True

    def _stream(self, src: str, dest: str, marker: str) -> None:
        connection = self._connection
        command = (
            f"umask 022 && mkdir -p {shlex.quote(dest)}"
            f" && tar -x --no-same-owner -f - -C {shlex.quote(dest)}"
            f" && touch {shlex.quote(self._connection._shell.join_path(dest, marker))}"
        )
        if connection.become is not None and self._play_context.become:
            command = connection.become.build_become_command(command, connection._shell)
        host = connection.get_option("host") or connection._play_context.remote_addr
        argv = connection._build_command(connection.get_option("ssh_executable"), "ssh", host, command)
        # Files, not pipes: a ControlMaster this ssh may start keeps its standard streams open after
        # ssh itself exits, and a pipe would never reach end of file.
        with open(src, "rb") as archive, tempfile.TemporaryFile() as stderr:
            returncode = subprocess.call(argv, stdin=archive, stdout=subprocess.DEVNULL, stderr=stderr)
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace").strip()
        if returncode != 0:
            raise AnsibleActionFail(f"streaming {src} into {dest} failed (exit {returncode}): {errors[-2000:]}")

    def _copy_then_unpack(self, src: str, dest: str, marker: str, task_vars) -> dict:
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote_src = self._connection._shell.join_path(tmpdir, os.path.basename(src))
        try:
            self._transfer_file(src, remote_src)
            self._fixup_perms2((tmpdir, remote_src))
            return self._execute_module(
                module_name="vllm_fleet.fleet.archive_stream",
                module_args={"src": remote_src, "dest": dest, "marker": marker, "remote_src": True},
                task_vars=task_vars,
            )
        finally:
            self._remove_tmp_path(tmpdir, force=True)
