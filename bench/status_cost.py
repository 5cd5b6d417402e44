"""status.yml's cost: `ansible-playbook playbooks/status.yml` on a serving fleet of 1, 2 and 3 test
hosts against `ansible -m ping` on the same hosts (issue 16: <= 2x).

    .venv/bin/python bench/status_cost.py [--reps 3] [--max-hosts 3] [--json OUT]

Three test hosts are deployed once with site.yml (the tiny model, real vLLM CPU build under
systemd), or taken as they are with --fleet. Then, for 1, 2 and 3 of them (`-l`), alternating:
`ansible -m ansible.builtin.ping` (baseline) and status.yml (subject), --reps times each. Every
status run must print a row per host whose unit is active and whose /metrics answered, and report
changed=0. Wall times are of the whole CLI process (start-up included); medians.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from common import Ansible, Fleet, Row, base_args, converge, emit, hub_for, install_signal_handlers, log, median


def check_rows(path: Path, hosts: list[str]) -> None:
    rows = json.loads(path.read_text())["rows"]
    seen = {row["host"] for row in rows}
    if seen != set(hosts):
        raise RuntimeError(f"status rows name {sorted(seen)}, not {hosts}")
    bad = [row for row in rows if row.get("state") != "active/running" or row.get("requests_served") is None]
    if bad:
        raise RuntimeError(f"status rows of models not serving or without /metrics: {bad}")


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved ping/status.yml pairs per size (default 3)")
    parser.add_argument("--max-hosts", type=int, default=3, choices=(1, 2, 3))
    args = parser.parse_args()

    rows = []
    with (
        Fleet(args.max_hosts, label="status", attach=args.fleet) as fleet,
        hub_for(fleet) as hub,
        Ansible() as ansible,
        tempfile.TemporaryDirectory(prefix="vf-bench-status-") as tmp,
    ):
        inventory = str(fleet.inventory)
        converge(fleet, ansible, {"VLLM_FLEET_HUB_URL": hub.url})
        out = Path(tmp) / "status.json"
        for n in range(1, args.max_hosts + 1):
            hosts = fleet.names[:n]
            limit = ",".join(hosts)
            status_s, ping_s = [], []
            for rep in range(args.reps):
                ping = ansible.run("ansible", "-i", inventory, limit, "-m", "ansible.builtin.ping", profile=False)
                ping_s.append(ping.check("ansible -m ping").wall_s)
                status = ansible.playbook(
                    "-i", inventory, "-l", limit, "playbooks/status.yml", profile=False,
                    env={"VLLM_FLEET_STATUS_JSON": str(out)},
                ).check("status.yml")  # fmt: skip
                if any(status.changed().values()):
                    raise RuntimeError(f"status.yml changed something: {status.changed()}")
                check_rows(out, hosts)
                status_s.append(status.wall_s)
                log(f"{n} host(s), rep {rep + 1}: ping {ping.wall_s:.2f} s, status.yml {status.wall_s:.2f} s")
            ratio = median(status_s) / median(ping_s)
            rows.append(
                Row(
                    "status",
                    f"status.yml, {n} host(s)",
                    f"{median(status_s):.2f} s",
                    f"ping {median(ping_s):.2f} s",
                    ratio,
                    "<= 2x",
                    ratio <= 2.0,
                    note="changed=0, every row active with /metrics read",
                    runs={"status_s": status_s, "ping_s": ping_s},
                )
            )
    emit("status", rows, {}, args.json)
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
