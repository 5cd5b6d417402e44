"""Rendering values into systemd unit files safely (systemd.syntax(7), systemd.service(5)).

Every value the roles write into a unit or an EnvironmentFile passes through here. A control
character in one is refused, never escaped: a newline or carriage return would start a line of
its own (a directive of the caller's choosing, e.g. ExecStartPre=), NUL ends a C string early,
and the other C0 characters and DEL have no use in a flag, a path, a repo id or a key. Preflight
refuses them first, naming the field (rules.py, row unit-values-printable); the quoting functions
raise as a second guard, for any path that did not pass preflight.
"""

from __future__ import annotations

_NAMED = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "\t": "a tab"}
# Why a control character is refused, in every message that refuses one.
CORRUPTS_UNIT = "it would corrupt the systemd unit (a newline starts a directive of its own)"


class UnitValueError(ValueError):
    pass


def control_character(text: str) -> str | None:
    """How to name the first C0 control character or DEL in ``text``; None when it has none."""
    for char in str(text):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return _NAMED.get(char, f"the control character U+{ord(char):04X}")
    return None


def unprintable_fields(value, field: str) -> list[tuple[str, str]]:
    """(field path, what) for every string in ``value`` (dict keys included, nested) that holds a
    control character, e.g. ("vllm_models[tiny].flags.chat-template", "a newline")."""
    found = []
    stack = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                sub_path = f"{path}.{key}"
                what = control_character(str(key))
                if what:
                    found.append((f"{path} (a key)", what))
                stack.append((sub_path, sub))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
        elif isinstance(item, str):
            what = control_character(item)
            if what:
                found.append((path, what))
    return sorted(found)


def refuse_control_characters(text: str, what: str) -> str:
    found = control_character(text)
    if found:
        # Named by ``what``, never shown: the value may be an API key.
        raise UnitValueError(f"{what} contains {found}: {CORRUPTS_UNIT}")
    return str(text)


def quote_exec_arg(arg: str) -> str:
    """One ExecStart= argument: double-quoted, with systemd's specifier and variable expansion disabled.

    systemd expands "%x" specifiers and "$VAR"/"${VAR}" in ExecStart=, and splits on
    whitespace outside quotes; a JSON flag value or a path with a space would otherwise be
    split or rewritten.
    """
    refuse_control_characters(arg, "the ExecStart= argument")
    escaped = str(arg).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def exec_line(argv: list[str]) -> str:
    return " ".join(quote_exec_arg(a) for a in argv)


def parse_exec_line(line: str) -> list[str]:
    """The arguments of an ExecStart= value as exec_line() wrote it (each double-quoted, "%%" and
    "$$" for "%" and "$"); an unquoted word (a line edited by hand) is one argument too."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current = current if current is not None else []
        elif char.isspace() and not quoted:
            if current is not None:
                args.append("".join(current))
            current = None
        else:
            current = (current if current is not None else []) + [char]
    if current is not None:
        args.append("".join(current))
    return [a.replace("%%", "%").replace("$$", "$") for a in args]


def quote_environment(name: str, value: str) -> str:
    """One Environment= assignment, quoted as a whole ("NAME=value")."""
    if not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"environment variable name {name!r} is not valid")
    refuse_control_characters(value, f"the value of {name}")
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={escaped}"'


def environment_file_line(name: str, value: str) -> str:
    """One NAME=value line of an EnvironmentFile (the API key's): the value verbatim after the
    check, since systemd reads the rest of the line as the value."""
    if not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"environment variable name {name!r} is not valid")
    refuse_control_characters(value, f"the value of {name}")
    return f"{name}={value}\n"
