"""`vllm serve` flags: argv as vLLM spells it <-> the flags dict inventories use.

The flags dict uses vLLM's long names without "--" (``tensor-parallel-size: 2``), as
docs/inventory.md describes. Parsing follows vLLM's own parser, read from 0.32.0
(vllm/utils/argparse_utils.py FlexibleArgumentParser): ``--x v``, ``--x=v``, short aliases
(``-tp 2``), underscores in names (``--tensor_parallel_size``), ``--x`` / ``--no-x`` for
boolean-optional flags, and human-readable integers (``14k`` = 14000, ``14K`` = 14336).
What each flag takes comes from serve_flag_spec.py, generated from the real parser.
"""

from __future__ import annotations

import json
import re

from . import systemd
from .serve_flag_spec import ALIASES, FLAGS


class ServeArgsError(ValueError):
    pass


def _refuse_control_characters(name: str, value, kind: str = "flag") -> None:
    # A control character would reach the systemd unit (systemd.py says why each is refused).
    found = systemd.unprintable_fields({name: value}, kind)
    if found:
        raise ServeArgsError(f"{kind} {name.lstrip('-')!r} contains {found[0][1]}: {systemd.CORRUPTS_UNIT}; remove it")


def human_readable_int(value: str) -> int:
    """vLLM's human_readable_int: '1k' -> 1000, '1K' -> 1024, '25.6k' -> 25600, '-1'/'auto' -> -1."""
    text = str(value).strip()
    if text.lower() == "auto":
        return -1
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if not match:
        return int(text)
    number, suffix = match.groups()
    if suffix.islower():
        return int(float(number) * 10 ** {"k": 3, "m": 6, "g": 9, "t": 12}[suffix])
    if "." in number:
        raise ServeArgsError(f"{text}: decimals are not allowed with binary suffixes like {suffix}")
    return int(number) * 2 ** {"K": 10, "M": 20, "G": 30, "T": 40}[suffix]


def _typed(name: str, raw: str):
    spec = FLAGS.get(name, {})
    kind = spec.get("type", "str")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "human_int":
            return human_readable_int(raw)
    except ValueError as e:
        raise ServeArgsError(f"--{name} expects a number, got {raw!r}") from e
    choices = spec.get("choices")
    if choices and raw not in choices:
        raise ServeArgsError(f"--{name} {raw!r} is not one of {', '.join(choices)}")
    return raw


def _canonical(option: str) -> tuple[str, bool | None]:
    """(flag name, forced boolean) for an option string; unknown flags keep their spelling."""
    if option in ALIASES:
        return ALIASES[option], None
    name = option.lstrip("-").replace("_", "-")
    for spelled in (f"--{name}", f"-{name}"):
        if spelled in ALIASES:
            return ALIASES[spelled], None
    if name.startswith("no-") and FLAGS.get(name[3:], {}).get("kind") == "bool_optional":
        return name[3:], False
    return name, None


def _is_option(token: str) -> bool:
    return token.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", token)


def parse_argv(argv: list[str]) -> tuple[dict, list[str]]:
    """(flags dict, positional arguments) from `vllm serve` argv (without "vllm serve").

    Flags the pinned vLLM does not know (old recipes' flags) are kept under their own name so
    old_flags.translate can deal with them: a following non-option token is their value.
    """
    for token in argv:
        _refuse_control_characters(str(token), None, "argument")
    flags: dict = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_option(token):
            positional.append(token)
            continue
        option, eq, inline = token.partition("=")
        name, forced = _canonical(option)
        kind = FLAGS.get(name, {}).get("kind")
        if forced is not None:
            flags[name] = forced
            continue
        if kind in ("bool", "bool_optional"):
            flags[name] = True
            continue
        if kind in ("list", "append"):
            values = [inline] if eq else []
            while not eq and i < len(argv) and not _is_option(argv[i]):
                values.append(argv[i])
                i += 1
                if kind == "append":
                    break
            if not values:
                raise ServeArgsError(f"--{name} expects at least one value")
            typed = [_typed(name, v) for v in values]
            flags[name] = [*flags.get(name, []), *typed] if kind == "append" else typed
            continue
        if eq:
            raw = inline
        elif i < len(argv) and not _is_option(argv[i]):
            raw = argv[i]
            i += 1
        elif kind is None:
            flags[name] = True  # an unknown bare flag (e.g. --worker-use-ray)
            continue
        else:
            raise ServeArgsError(f"--{name} expects a value")
        flags[name] = _typed(name, raw) if kind else _guess(raw)
    return flags, positional


def _guess(raw: str):
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _render(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return str(value)


def to_argv(flags: dict) -> list[str]:
    """argv for `vllm serve` from a flags dict.

    true -> bare flag; false -> --no-X where vLLM has it (boolean-optional), else omitted;
    None -> omitted; a list -> one flag followed by its values for nargs flags, the flag
    repeated per value otherwise; a dict -> JSON (vLLM's JSON-valued config flags).
    """
    argv: list[str] = []
    for name, value in flags.items():
        kind = FLAGS.get(name, {}).get("kind")
        if value is None:
            continue
        if value is True:
            argv.append(f"--{name}")
        elif value is False:
            if kind == "bool_optional":
                argv.append(f"--no-{name}")
        elif isinstance(value, (list, tuple)):
            if kind == "list":
                argv += [f"--{name}", *(_render(v) for v in value)]
            else:
                for v in value:
                    argv += [f"--{name}", _render(v)]
        else:
            argv += [f"--{name}", _render(value)]
    return argv


def normalize(flags: dict) -> dict:
    """An inventory flags dict with aliases, underscores and "--" prefixes folded to vLLM names,
    and string numbers typed ("14k" -> 14000) the way vLLM would read them."""
    out: dict = {}
    for key, value in (flags or {}).items():
        _refuse_control_characters(str(key), value)
        name, forced = _canonical(str(key) if str(key).startswith("-") else f"--{key}")
        if forced is not None:
            out[name] = forced if value in (True, None) else (not value)
            continue
        kind = FLAGS.get(name, {}).get("kind")
        if isinstance(value, str) and kind == "value":
            value = _typed(name, value)
        out[name] = value
    return out
