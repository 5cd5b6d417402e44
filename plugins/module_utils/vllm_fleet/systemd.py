"""Rendering values into systemd unit files safely (systemd.syntax(7), systemd.service(5))."""

from __future__ import annotations


def quote_exec_arg(arg: str) -> str:
    """One ExecStart= argument: double-quoted, with systemd's specifier and variable expansion disabled.

    systemd expands "%x" specifiers and "$VAR"/"${VAR}" in ExecStart=, and splits on
    whitespace outside quotes; a JSON flag value or a path with a space would otherwise be
    split or rewritten.
    """
    escaped = str(arg).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def exec_line(argv: list[str]) -> str:
    return " ".join(quote_exec_arg(a) for a in argv)


def quote_environment(name: str, value: str) -> str:
    """One Environment= assignment, quoted as a whole ("NAME=value")."""
    if not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"environment variable name {name!r} is not valid")
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={escaped}"'
