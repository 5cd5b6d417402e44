"""Print a vLLM unit's journal with its API key replaced by ******** before it leaves the host.

The key is read from the unit's own 0600 EnvironmentFile here on the host, so it never travels to
the controller: not in the command line (ps, -vvv), not in a registered result (-v shows those
whole), not in a failure message. A vLLM error that echoes a flag or a header can put the key in
the journal; the operator still reads everything else.

    unit_journal.py UNIT ENV_FILE since-start     the lines since the unit last started (plain)
    unit_journal.py UNIT ENV_FILE tail N          the last N lines (short-iso timestamps)
"""

import subprocess
import sys

HIDDEN = "********"


def key_in(env_file: str) -> str:
    try:
        with open(env_file, encoding="utf-8") as f:
            for line in f:
                if line.startswith("VLLM_API_KEY="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass  # no secrets file: no key to hide
    return ""


def journal(unit: str, mode: str, lines: str) -> str:
    if mode == "since-start":
        invocation = subprocess.run(
            ["systemctl", "show", "-p", "InvocationID", "--value", unit], capture_output=True, text=True, check=False
        ).stdout.strip()
        argv = ["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_INVOCATION_ID={invocation}"]
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return "\n".join(text.splitlines()[-2000:])
    argv = ["journalctl", "--no-pager", "-o", "short-iso", "-n", lines, "-u", unit]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.rstrip("\n")


def main() -> int:
    unit, env_file, mode = sys.argv[1:4]
    lines = sys.argv[4] if len(sys.argv) > 4 else "60"
    text = journal(unit, mode, lines)
    key = key_in(env_file)
    print(text.replace(key, HIDDEN) if key else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
