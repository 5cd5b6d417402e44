"""Probe latency: from the unit's start to the probe role's first successful probe, against a bare
`vllm serve` started by hand to its first answer.

    .venv/bin/python bench/probe_latency.py [--reps 2] [--poll 0.2] [--json OUT]

One test host is deployed with site.yml (the tiny model under systemd). Then, alternating:
  - baseline: the unit stopped, the same command line with the same environment (read from the
    running unit's /proc/<MainPID>) started by hand as the same user (`runuser -u vllm`), and the
    controller sends the chat request every --poll seconds until the first 200 answer;
    time = first answer - start (CLOCK_MONOTONIC, which the test host shares with this machine);
  - subject: `systemctl start vllm-tiny`, then playbooks/probe.yml (the vllm_probe role) at once,
    as site.yml runs it after the service role; time = the end of the probe task (profile
    callback) - the unit's ExecMainStartTimestampMonotonic.
Medians; ratio = subject / baseline (goal <= 1.05x).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from common import (
    Ansible,
    Fleet,
    Row,
    base_args,
    converge,
    emit,
    hub_for,
    install_signal_handlers,
    log,
    median,
    print_profile,
    ssh,
    wait_for_memory,
)

UNIT = "vllm-tiny.service"
PROBE_TASK = "Ensure chat and completion requests are answered well"
DROP_ENV = ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET", "SYSTEMD_EXEC_PID", "MANAGERPID", "LISTEN_")


def unit_command(host) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the running unit's main process."""
    pid = ssh(host, f"systemctl show -p MainPID --value {UNIT}").stdout.strip()
    raw = ssh(host, f"cat /proc/{pid}/cmdline | base64 -w0; echo; cat /proc/{pid}/environ | base64 -w0").stdout
    import base64

    argv_b64, env_b64 = raw.split()
    argv = [a.decode() for a in base64.b64decode(argv_b64).split(b"\0") if a]
    env = dict(e.decode().split("=", 1) for e in base64.b64decode(env_b64).split(b"\0") if b"=" in e)
    return argv, {k: v for k, v in env.items() if not k.startswith(DROP_ENV)}


def chat(address: str, api_key: str | None) -> bool:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(
        f"http://{address}:8000/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status == 200 and bool(json.loads(response.read())["choices"])
    except (OSError, ValueError, KeyError):
        return False


def stop_unit(host) -> None:
    ssh(host, f"systemctl stop {UNIT}; while systemctl is-active -q {UNIT}; do sleep 0.2; done")


def by_hand(host, argv: list[str], env: dict[str, str], poll: float, timeout: float = 600) -> float:
    """Start the unit's command by hand as the unit's user; seconds to its first chat answer."""
    import shlex

    user = env.get("USER") or "vllm"
    command = " ".join(shlex.quote(a) for a in argv)
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    script = (
        f"cd {shlex.quote(env.get('HOME', '/'))}; "
        "python3 -c 'import time; print(time.monotonic())'; "
        f"setsid runuser -u {user} -- env -i {assignments} {command} >/var/tmp/by-hand.log 2>&1 </dev/null & "
        "echo $!"
    )
    out = ssh(host, script).stdout.split()
    started, pid = float(out[0]), out[1]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if chat(host.address, env.get("VLLM_API_KEY")):
                return time.monotonic() - started
            time.sleep(poll)
        tail = ssh(host, "tail -n 30 /var/tmp/by-hand.log", check=False).stdout
        raise RuntimeError(f"vllm serve by hand did not answer within {timeout:.0f} s:\n{tail}")
    finally:
        # The whole session it started (vLLM forks an engine core): TERM, then KILL what lingers.
        ssh(
            host,
            f"kill -TERM -- -{pid} 2>/dev/null; for i in $(seq 150); do pgrep -s {pid} >/dev/null || exit 0; "
            f"sleep 0.2; done; kill -KILL -- -{pid} 2>/dev/null; true",
            check=False,
        )


def probed(host, ansible: Ansible, fleet: Fleet, env: dict[str, str]) -> tuple[float, dict]:
    """systemctl start, then the probe role; seconds from the unit's start to the probe's success."""
    ssh(host, f"systemctl start {UNIT}")
    run = ansible.playbook("-i", str(fleet.inventory), "-l", host.name, "playbooks/probe.yml", env=env)
    run.check("playbooks/probe.yml")
    start_us = int(ssh(host, f"systemctl show -p ExecMainStartTimestampMonotonic --value {UNIT}").stdout)
    task = next(t for t in run.profile["tasks"] if PROBE_TASK in t["name"])
    end = task["hosts"][host.name]["end_monotonic"]
    return end - start_us / 1e6, run.profile


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved by-hand/unit pairs (default 2)")
    parser.add_argument("--poll", type=float, default=0.2, help="by-hand polling interval, s (default 0.2)")
    args = parser.parse_args()

    with Fleet(1, label="probe", attach=args.fleet) as fleet, hub_for(fleet) as hub, Ansible() as ansible:
        env = {"VLLM_FLEET_HUB_URL": hub.url}
        host = fleet.hosts[0]
        converge(fleet, ansible, env)
        argv, unit_env = unit_command(host)
        log(f"unit command: {' '.join(argv)}")
        hand_s, unit_s, profiles = [], [], []
        for rep in range(args.reps):
            stop_unit(host)
            wait_for_memory()
            hand_s.append(by_hand(host, argv, unit_env, args.poll))
            wait_for_memory()
            seconds, profile = probed(host, ansible, fleet, env)
            unit_s.append(seconds)
            profiles.append(profile)
            log(f"rep {rep + 1}: by hand {hand_s[-1]:.2f} s, unit + probe role {unit_s[-1]:.2f} s")
        # The unit is left running and probed: a shared fleet stays converged for the next benchmark.
        probe_profile = print_profile("probe.yml: slowest tasks", profiles, 6)

    ratio = median(unit_s) / median(hand_s)
    rows = [
        Row(
            "probe",
            "unit start -> first successful probe (vllm_probe role)",
            f"{median(unit_s):.2f} s",
            f"by hand {median(hand_s):.2f} s",
            ratio,
            "<= 1.05x",
            ratio <= 1.05,
            note=f"by hand = same argv/env/user, chat request polled every {args.poll} s",
            runs={"unit_probe_s": unit_s, "by_hand_s": hand_s},
        )
    ]
    emit("probe", rows, {"probe_profile": probe_profile}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
