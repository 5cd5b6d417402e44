"""Print a vLLM unit's journal with its API key replaced by ******** before it leaves the host.

The key is read from the unit's own 0600 EnvironmentFile here on the host, so it never travels to
the controller: not in the command line (ps, -vvv), not in a registered result (-v shows those
whole), not in a failure message. A vLLM error that echoes a flag or a header can put the key in
the journal; the operator still reads everything else.

    unit_journal.py UNIT ENV_FILE since-start     JSON: {"invocation": the unit's systemd InvocationID,
                                                  "journal": the lines of that start (plain),
                                                  "exec_start": its unit file's ExecStart= value}
    unit_journal.py UNIT ENV_FILE tail N          the last N lines (short-iso timestamps)
"""

import json
import subprocess
import sys

HIDDEN = "********"


# The secrets a unit's EnvironmentFile holds: its API key, and a Ray member's token.
SECRET_NAMES = ("VLLM_API_KEY", "RAY_AUTH_TOKEN")


def secrets_in(env_file: str) -> list[str]:
    found = []
    try:
        with open(env_file, encoding="utf-8") as f:
            for line in f:
                name, _sep, value = line.partition("=")
                if name in SECRET_NAMES and value.strip():
                    found.append(value.strip())
    except OSError:
        pass  # no secrets file: nothing to hide
    return found


def invocation_of(unit: str) -> str:
    """The ID systemd gives each start of a unit: what tells one start of vLLM from the next
    (the probe's start records are keyed by it, so a re-run adds none)."""
    argv = ["systemctl", "show", "-p", "InvocationID", "--value", unit]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def exec_start_of(unit: str) -> str:
    """The ExecStart= value of the unit's file (the last one: a drop-in may reset it), which says
    what the start runs: the probe's start record keeps the plan only when it is the plan's."""
    argv = ["systemctl", "show", "-p", "FragmentPath", "--value", unit]
    path = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    value = ""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("ExecStart="):
                    value = line[len("ExecStart=") :].strip()
    except OSError:
        pass  # no unit file: nothing to say what the start runs
    return value


def since_start(unit: str, invocation: str) -> str:
    argv = ["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_INVOCATION_ID={invocation}"]
    text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return "\n".join(text.splitlines()[-2000:])


def tail(unit: str, lines: str) -> str:
    argv = ["journalctl", "--no-pager", "-o", "short-iso", "-n", lines, "-u", unit]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.rstrip("\n")


def main() -> int:
    unit, env_file, mode = sys.argv[1:4]
    secrets = secrets_in(env_file)

    def hidden(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, HIDDEN)
        return text

    if mode == "since-start":
        # One read of the ID for both: the lines are those of the start the ID names.
        invocation = invocation_of(unit)
        print(
            json.dumps(
                {
                    "invocation": invocation,
                    "journal": hidden(since_start(unit, invocation)),
                    "exec_start": hidden(exec_start_of(unit)),
                }
            )
        )
    else:
        print(hidden(tail(unit, sys.argv[4] if len(sys.argv) > 4 else "60")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
