"""No-op re-run: site.yml on an already converged fleet of 1, 2 and 3 test hosts against
`ansible -m ping` on the same hosts; the ratio, how both grow with hosts, and what dominates.

    .venv/bin/python bench/noop_rerun.py [--reps 2] [--max-hosts 3] [--json OUT]

Three test hosts are deployed once with site.yml (the tiny model, real vLLM CPU build under
systemd). Then, for 1, 2 and 3 of them (`-l`), alternating: `ansible -m ansible.builtin.ping`
(baseline) and `ansible-playbook site.yml` (subject), --reps times each; every re-run must report
changed=0 on every host (a change is reported, not hidden). Wall times are of the whole CLI
process (start-up included); medians.
The per-task profile (profile_tasks' figures, from bench/profile_callback.py) of the runs on all
hosts says what dominates. Goal: <= 3x ping, changed=0. A last pair per repetition runs the same
re-run on all hosts with the fast path off (-e vllm_rollout_fast_path=false): what it saves.
"""

from __future__ import annotations

import sys

from common import (
    Ansible,
    Fleet,
    Row,
    base_args,
    by_role,
    converge,
    emit,
    hub_for,
    install_signal_handlers,
    log,
    median,
    print_profile,
)


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved ping/site.yml pairs per size (default 2)")
    parser.add_argument("--max-hosts", type=int, default=3, choices=(1, 2, 3))
    args = parser.parse_args()

    rows, extra = [], {}
    with Fleet(args.max_hosts, label="noop", attach=args.fleet) as fleet, hub_for(fleet) as hub, Ansible() as ansible:
        env = {"VLLM_FLEET_HUB_URL": hub.url}
        inventory = str(fleet.inventory)
        converge(fleet, ansible, env)
        site_by_n, ping_by_n, profiles_by_n = {}, {}, {}
        for n in range(1, args.max_hosts + 1):
            limit = ",".join(fleet.names[:n])
            site_s, ping_s, profiles, changes = [], [], [], []
            for rep in range(args.reps):
                ping = ansible.run("ansible", "-i", inventory, limit, "-m", "ansible.builtin.ping", profile=False)
                ping.check("ansible -m ping")
                ping_s.append(ping.wall_s)
                site = ansible.playbook("-i", inventory, "-l", limit, "site.yml", env=env).check("site.yml re-run")
                changed = site.changed()
                if sorted(changed) != sorted(fleet.names[:n]):
                    raise RuntimeError(f"the recap names {sorted(changed)}, not {fleet.names[:n]}")
                changes.extend(
                    f"{t['name']} on {h}" for t in site.profile["tasks"] for h, r in t["hosts"].items() if r["changed"]
                )
                site_s.append(site.wall_s)
                profiles.append(site.profile)
                log(
                    f"{n} host(s), rep {rep + 1}: ping {ping.wall_s:.2f} s, site.yml {site.wall_s:.2f} s, "
                    f"changed={sum(changed.values())}"
                )
            site_by_n[n], ping_by_n[n], profiles_by_n[n] = site_s, ping_s, profiles
            ratio = median(site_s) / median(ping_s)
            rows.append(
                Row(
                    "noop",
                    f"no-op site.yml re-run, {n} host(s)",
                    f"{median(site_s):.2f} s, changed={len(changes)}",
                    f"ping {median(ping_s):.2f} s",
                    ratio,
                    "<= 3x, changed=0",
                    ratio <= 3.0 and not changes,
                    note="changed=0 on every host in every run" if not changes else "CHANGED: " + "; ".join(changes),
                    runs={"site_s": site_s, "ping_s": ping_s, "changed": changes},
                )
            )
        top = args.max_hosts
        # What the fast path saves: the same re-run through every role (vllm_rollout_fast_path=false),
        # against ping in the same pairs. For the record only (the goal is the default run above).
        full_s, full_ping_s, full_changes = [], [], []
        limit = ",".join(fleet.names[:top])
        for rep in range(args.reps):
            ping = ansible.run("ansible", "-i", inventory, limit, "-m", "ansible.builtin.ping", profile=False)
            full_ping_s.append(ping.check("ansible -m ping").wall_s)
            full = ansible.playbook(
                "-i", inventory, "-l", limit, "site.yml", "-e", "vllm_rollout_fast_path=false", env=env
            ).check("site.yml full re-run")
            full_changes += [f"{h}: {c}" for h, c in full.changed().items() if c]
            full_s.append(full.wall_s)
            log(f"{top} host(s), full path, rep {rep + 1}: ping {ping.wall_s:.2f} s, site.yml {full.wall_s:.2f} s")
        rows.append(
            Row(
                "noop",
                f"the same, {top} host(s), full path forced (-e vllm_rollout_fast_path=false)",
                f"{median(full_s):.2f} s, changed={len(full_changes)}",
                f"ping {median(full_ping_s):.2f} s",
                median(full_s) / median(full_ping_s),
                "-",
                None,
                note="what the fast path saves; "
                + ("changed=0" if not full_changes else "CHANGED: " + "; ".join(full_changes)),
                runs={"site_s": full_s, "ping_s": full_ping_s, "changed": full_changes},
            )
        )
        tasks = print_profile(f"no-op site.yml on {top} host(s): slowest tasks", profiles_by_n[top], 12)
        roles = by_role(profiles_by_n[top])
        print(f"by role / play (median seconds, {top} hosts):")
        for name, seconds in roles:
            print(f"  {seconds:7.2f}  {name}")
        if args.max_hosts > 1:
            site_slope = (median(site_by_n[top]) - median(site_by_n[1])) / (top - 1)
            ping_slope = (median(ping_by_n[top]) - median(ping_by_n[1])) / (top - 1)
            extra["growth"] = (
                f"site.yml +{site_slope:.2f} s per extra host ({median(site_by_n[1]):.2f} -> "
                f"{median(site_by_n[top]):.2f} s), ping +{ping_slope:.2f} s per extra host "
                f"({median(ping_by_n[1]):.2f} -> {median(ping_by_n[top]):.2f} s)"
            )
        extra["profile_top_tasks"] = tasks
        extra["profile_by_role"] = roles
    emit("noop", rows, extra, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
