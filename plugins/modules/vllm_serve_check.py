#!/usr/bin/python
"""Ansible module: prove an environment imports vLLM on the expected platform, and parse `vllm serve`
command lines with that vLLM's own parser, in one process (one import of vLLM and torch)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_serve_check
short_description: Prove a vLLM environment and check `vllm serve` command lines with its own parser
version_added: "0.1.0"
description:
  - Runs with the Python of the environment under test (set C(ansible_python_interpreter) to it).
    One child process of that Python imports vLLM once, checks the platform it detects, then parses
    each command line in O(argvs) with the parser and C(validate()) of that vLLM's C(vllm serve).
    Nothing is loaded, no model, no GPU, no network.
  - One import serves the environment's proof and every command line (importing vLLM and torch
    costs 10-15 s on a small host; two separate processes paid it twice per cold deploy).
  - A command line vLLM would refuse fails the task with vLLM's own message, so a flag the pinned
    vLLM does not know fails the play before a unit is written.
  - Changes nothing on the host but, with O(accepted_shapes_file), that file, where it keeps the
    shapes (the line less its model directory) of the lines vLLM accepted, so that a later line of
    the same shape need not be parsed again; and, with O(record_file), the environment's record.
    Supports check mode (the same checks; nothing is written).
options:
  argvs:
    description:
      - Command lines to check, each a whole argv as the unit runs it (C(/path/bin/vllm serve MODEL
        --flag ...)); the program name is ignored.
    type: list
    elements: list
    default: []
  expect_device:
    description: The platform vLLM must detect (C(cuda), C(cpu)); not checked when omitted.
    type: str
  fail_on_refusal:
    description:
      - Fail the task on the first command line vLLM refuses (the default). When false, the refused
        lines are returned in RV(refused) and the task fails only if vLLM does not import or detects
        another platform (the environment itself is not good).
    type: bool
    default: true
  accepted_shapes_file:
    description:
      - Where the environment keeps the shapes its parser accepted (the C(vllm_accepted_shapes_file)
        filter of its directory). When set, the shapes of the accepted lines are added to it (a
        JSON list of ids, 0644), once the environment itself is proven. A memory of verdicts, not
        a setting, so adding to it is not reported as a change.
    type: path
  record_file:
    description:
      - Where the environment's record goes (the vllm_runtime role's C(.vllm-fleet-install.json)).
        O(record) is written there as JSON (0644, whole or not at all) once the environment is
        proven (it imports vLLM on the expected platform), even when a command line is refused, as
        a refused flag is the flag's fault, not the environment's. Reported as a change.
    type: path
  record:
    description: What O(record_file) says the environment holds.
    type: dict
    default: {}
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Imports vLLM and parses every command line as a normal run does, but writes neither
        O(accepted_shapes_file) nor O(record_file).
requirements:
  - vLLM importable by the Python that runs the module (set C(ansible_python_interpreter) to the
    environment's C(bin/python)).
"""

EXAMPLES = r"""
- name: Prove the environment and check the units' command lines
  vllm_serve_check:
    expect_device: cpu
    argvs:
      - ["{{ vllm_runtime_bin }}/vllm", serve, "{{ model_weights_root }}/qwen/Qwen2.5-0.5B-Instruct/v1", --dtype, half]
  vars:
    ansible_python_interpreter: "{{ vllm_runtime_bin }}/python"
"""

RETURN = r"""
version:
  description: vllm.__version__ of the environment.
  returned: always
  type: str
  sample: "0.31.1"
device:
  description: The platform vLLM detected (current_platform.device_type).
  returned: always
  type: str
  sample: cuda
checked:
  description: How many command lines were parsed and accepted.
  returned: always
  type: int
  sample: 2
shapes_kept:
  description: How many shapes this run added to O(accepted_shapes_file).
  returned: always
  type: int
  sample: 1
recorded:
  description: Whether O(record) was written to O(record_file).
  returned: always
  type: bool
  sample: true
refused:
  description: The command lines vLLM refused, each with its reason in vLLM's words (C(argv), C(reason)).
  returned: when fail_on_refusal is false
  type: list
  elements: dict
  sample:
    - argv: [/srv/vllm/envs/vllm-0.31.1-cuda/bin/vllm, serve, /srv/models/qwen/Qwen2.5-7B-Instruct/master,
             --num-scheduler-steps, '8']
      reason: "vllm: error: unrecognized arguments: --num-scheduler-steps 8"
"""

import json
import os
import sys
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.argv_shapes import keep
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.files import write_json_atomically

# The check runs in a child process of the same interpreter: torch cannot be imported inside an
# Ansible module process (ansible-core patches sys.intern with an object, and torch's dynamo refuses
# it: "substitute_in_graph expects a function but got ...SysInternPatch"). One import still serves
# the proof and every command line. It reads {"argvs": [...]} on stdin and writes its verdicts, as
# JSON, to the file named by its first argument; what vLLM logs goes to its stdout and stderr.
CHECKER = r"""
import argparse, json, sys

def build_parser():
    # `vllm serve`'s parser, as vLLM's own CLI builds it (vllm/entrypoints/cli/main.py).
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subcommand", required=True)
    command = ServeSubcommand()
    command.subparser_init(subparsers)
    return parser, command

class Refused(Exception):
    pass

def error(self, message):
    raise Refused(message)

# The top parser and the `serve` subparser alike (this process only parses).
argparse.ArgumentParser.error = error

def refusal(parser, command, argv):
    # argparse reports a bad flag through error(), which prints and exits: take its message instead.
    try:
        command.validate(parser.parse_args(argv))
    except Refused as exc:
        return f"vllm: error: {exc}"
    except Exception as exc:  # validate() is vLLM's code: whatever it raises refuses the line
        return f"vllm serve would refuse these arguments: {type(exc).__name__}: {exc}"
    return None

request = json.load(sys.stdin)
import vllm
from vllm.platforms import current_platform
parser, command = build_parser()
verdicts = [refusal(parser, command, argv[1:]) for argv in request["argvs"]]
with open(sys.argv[1], "w") as out:
    json.dump({"version": vllm.__version__, "device": current_platform.device_type, "verdicts": verdicts}, out)
"""


def last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "argvs": {"type": "list", "elements": "list", "default": []},
            "expect_device": {"type": "str"},
            "fail_on_refusal": {"type": "bool", "default": True},
            "accepted_shapes_file": {"type": "path"},
            "record_file": {"type": "path"},
            "record": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    argvs = [[str(a) for a in argv] for argv in module.params["argvs"]]
    for argv in argvs:
        if len(argv) < 3 or argv[1] != "serve":
            module.fail_json(msg=f"not a `vllm serve MODEL ...` command line: {argv}")

    with tempfile.TemporaryDirectory(prefix="vllm-serve-check-") as work:
        verdict_path = os.path.join(work, "verdicts.json")
        rc, out, err = module.run_command(
            [sys.executable, "-c", CHECKER, verdict_path], data=json.dumps({"argvs": argvs}), binary_data=True
        )
        result = None
        if rc == 0 and os.path.isfile(verdict_path):
            with open(verdict_path) as handle:
                result = json.load(handle)
    if result is None:
        module.fail_json(
            msg=f"the environment does not import vLLM (exit {rc}): {last_lines(err or out, 1)}",
            rc=rc,
            output=last_lines(out + err, 30),
        )
    version, device = result["version"], result["device"]
    expected = module.params["expect_device"]
    if expected and device != expected:
        module.fail_json(
            msg=f"vLLM {version} detects the platform {device!r}, not {expected!r}", version=version, device=device
        )
    verdicts = list(zip(argvs, result["verdicts"], strict=True))
    refused = [{"argv": argv, "reason": why} for argv, why in verdicts if why]
    # The environment is proven: the lines it accepted are kept, even when another is refused (the
    # fix of that one line must not cost the others' parse again).
    shapes_kept = 0
    shapes_file = module.params["accepted_shapes_file"]
    if shapes_file and not module.check_mode:
        try:
            shapes_kept = keep(shapes_file, [argv for argv, why in verdicts if not why])
        # (Every argv was checked to be `vllm serve MODEL ...` above, so each has a shape.)
        except OSError as exc:
            module.fail_json(msg=f"could not keep the accepted shapes in {shapes_file}: {exc}")
    # Proven: the record says what the environment holds (the role's next run builds nothing).
    record_file = module.params["record_file"]
    recorded = bool(record_file) and not module.check_mode
    if recorded:
        try:
            write_json_atomically(record_file, module.params["record"], 0o644, indent=4)
        except OSError as exc:
            module.fail_json(msg=f"could not write the environment's record {record_file}: {exc}")
    if refused and module.params["fail_on_refusal"]:
        module.fail_json(
            msg=refused[0]["reason"], argv=refused[0]["argv"], version=version, device=device, changed=recorded
        )
    extra = {} if module.params["fail_on_refusal"] else {"refused": refused}
    module.exit_json(
        changed=recorded,
        recorded=recorded,
        version=version,
        device=device,
        checked=len(argvs) - len(refused),
        shapes_kept=shapes_kept,
        **extra,
    )


if __name__ == "__main__":
    main()
