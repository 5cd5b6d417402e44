"""Wait, on the host, until a vLLM unit answers /health; give up early if it crashes.

Usage: python3 wait_healthy.py UNIT URL TIMEOUT_S
Polls once a second. Exits 0 when /health answers 200; 3 when the unit fails, or
when a run of it that we saw active ends before it became healthy (systemd's
Restart=on-failure would otherwise hide a crash loop behind a long timeout); 4 on
timeout. A unit found waiting to be restarted (it crashed before we looked) is
given its restart. Prints one JSON line.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def unit_state(unit):
    out = subprocess.run(
        ["systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", "-p", "InvocationID", unit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def healthy(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(unit, url, timeout_s):
    started = time.monotonic()
    seen_active = None  # the InvocationID of a run we saw active
    while time.monotonic() - started < timeout_s:
        if healthy(url):
            return 0, {"healthy": True, "waited_s": round(time.monotonic() - started, 1)}
        now = unit_state(unit)
        ended = seen_active is not None and (
            now.get("InvocationID") != seen_active or now.get("ActiveState") != "active"
        )
        if now.get("ActiveState") == "active" and seen_active is None:
            seen_active = now.get("InvocationID")
        if now.get("ActiveState") == "failed" or ended:
            return 3, {
                "healthy": False,
                "reason": f"{unit} {'failed' if now.get('ActiveState') == 'failed' else 'restarted'} "
                f"while starting (NRestarts={now.get('NRestarts')})",
                "waited_s": round(time.monotonic() - started, 1),
            }
        time.sleep(1)
    return 4, {"healthy": False, "reason": f"{url} did not answer 200 within {timeout_s:.0f} s"}


if __name__ == "__main__":
    code, report = main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    print(json.dumps(report))
    sys.exit(code)
