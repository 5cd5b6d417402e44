"""Run every operator benchmark and print one table (figure, value, baseline, ratio, goal, met?).

    .venv/bin/python bench/run_all.py [--json OUT] [--only preflight,weights,probe,noop,status,cold]
    make bench

Order: the cheap ones first (preflight, weights), then one shared fleet of three test hosts is
deployed with site.yml (a cold deploy of 3 hosts, reported too) and used by probe latency
(host 1), the no-op re-run and status.yml's cost (1, 2, 3 hosts), then destroyed; the cold deploy comes last, on a
bare host of its own. Each benchmark runs as its own process (bench/<name>.py, also runnable
alone) and writes its rows as JSON; the shared fleet is destroyed here even on failure.
A benchmark that fails is reported as failed and the others still run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    PY,
    Ansible,
    Fleet,
    base_args,
    by_role,
    converge,
    hub_for,
    install_signal_handlers,
    log,
    machine,
)

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "preflight": "preflight_rate.py",
    "weights": "weights_transfer.py",
    "probe": "probe_latency.py",
    "noop": "noop_rerun.py",
    "status": "status_cost.py",
    "cold": "cold_deploy.py",
}
SHARED = ("probe", "noop", "status")  # run on the shared, converged fleet


def run_one(name: str, work: Path, fleet_inventory: Path | None, results: dict) -> None:
    out = work / f"{name}.json"
    argv = [str(PY), str(HERE / SCRIPTS[name]), "--json", str(out)]
    if fleet_inventory is not None:
        argv += ["--fleet", str(fleet_inventory)]
    log(f"{name}: {' '.join(argv[1:])}")
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=HERE.parent, env=dict(os.environ))
    seconds = time.monotonic() - started
    if proc.returncode == 0 and out.is_file():
        results[name] = {**json.loads(out.read_text()), "seconds": round(seconds, 1)}
    else:
        results[name] = {"bench": name, "rows": [], "error": f"exited {proc.returncode}", "seconds": round(seconds, 1)}
    log(f"{name}: done in {seconds:.0f} s")


def table(results: dict) -> str:
    lines = ["| benchmark | figure | value | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        if result.get("error"):
            lines.append(f"| {name} | FAILED ({result['error']}) | | | | | |")
        for row in result.get("rows", []):
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            met = "-" if row["met"] is None else ("yes" if row["met"] else "**no**")
            cells = [name, row["figure"], row["value"], row["baseline"], ratio, row["goal"], met]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset, in this order")
    args = parser.parse_args()
    wanted = [n for n in SCRIPTS if n in args.only.split(",")]
    # The API key of the shared fleet's units, inherited by the benchmarks that use it.
    os.environ.setdefault("VLLM_FLEET_API_KEY", "vf-bench-" + secrets.token_hex(8))
    started = time.monotonic()
    results: dict = {}
    about = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    log(about["machine"])
    with tempfile.TemporaryDirectory(prefix="vf-bench-all-") as tmp:
        work = Path(tmp)
        for name in [n for n in wanted if n not in SHARED and n != "cold"]:
            run_one(name, work, None, results)
        if any(n in SHARED for n in wanted):
            try:
                with Fleet(3, label="shared") as fleet, hub_for(fleet) as hub, Ansible() as ansible:
                    deployed = converge(fleet, ansible, {"VLLM_FLEET_HUB_URL": hub.url})
                    # The benchmarks on this fleet use this hub (common.hub_for): the same inputs.
                    os.environ["VLLM_FLEET_HUB_URL"] = hub.url
                    about["shared_fleet_cold_deploy_s"] = round(deployed.wall_s, 1)
                    about["shared_fleet_cold_deploy_by_role"] = by_role([deployed.profile])
                    for name in [n for n in wanted if n in SHARED]:
                        run_one(name, work, fleet.inventory, results)
            except Exception as exc:  # the fleet's own failure: report it, go on with the rest
                log(f"shared fleet failed: {exc}")
                for name in [n for n in wanted if n in SHARED and n not in results]:
                    results[name] = {"bench": name, "rows": [], "error": f"shared fleet: {str(exc)[:200]}"}
            finally:
                os.environ.pop("VLLM_FLEET_HUB_URL", None)
        if "cold" in wanted:
            run_one("cold", work, None, results)
    about["total_s"] = round(time.monotonic() - started, 1)

    print("\n" + "=" * 100)
    print(f"vllm-fleet operator benchmarks, {about['started']}; {about['machine']}")
    print(f"total {about['total_s'] / 60:.1f} min")
    if "shared_fleet_cold_deploy_s" in about:
        print(f"shared fleet: site.yml cold on 3 hosts {about['shared_fleet_cold_deploy_s']:.0f} s")
    print(table(results))
    for name, result in results.items():
        extra = result.get("extra", {})
        for key in ("growth", "planner_in_process_checks_per_s", "speedup_vs_a_real_vllm_try"):
            if key in extra:
                print(f"{name}: {key}: {extra[key]}")
    if args.json:
        args.json.write_text(json.dumps({"about": about, "results": results}, indent=1))
    failed = [n for n, r in results.items() if r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
