"""Preflight throughput over the production inventory, and the planner's error against real vLLM.

    .venv/bin/python bench/preflight_rate.py [--reps 3] [--json OUT]

Figures (each against a baseline measured in this run, interleaved, medians):
  - `bin/vllm-fleet check` once per model of inventories/production (10 models): checks per
    second; baseline: the same interpreter starting and exiting (`python -c pass`), the floor
    any CLI pays.
  - the `vllm_preflight` module through playbooks/preflight.yml (what site.yml runs first) over
    the production inventory with vllm_detect_gpus=false: checks per second; baseline: the same
    play shape (two tasks per host delegated to localhost) with ansible.builtin.ping in place of
    gpu_facts and vllm_preflight: the floor of any such play.
  - the planner in-process (preflight.check_host, no ansible, no process start): checks per second.
  - planner error vs the vLLM numbers measured on H100s (tests/data/gpu/measured.json):
    max and median |error| of weights, KV GiB, KV tokens and the estimated max length.

Safety: the production hosts (192.0.2.x, documentation addresses that may route somewhere from
here) are never contacted. The inventory is copied with every host pointed at a closed loopback
port (127.0.0.1:1), as tests/integration/test_plan.py does, detection is off, and the run fails
if any host was found unreachable (which would mean a play tried to connect).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import PY, REPO_ROOT, Ansible, Row, base_args, emit, install_signal_handlers, log, median

sys.path.insert(0, str(REPO_ROOT / "collections"))
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import facts_from_config
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.planner import kwargs_from_flags, plan_memory
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.preflight import check_host
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import normalize, to_argv

PRODUCTION = REPO_ROOT / "inventories/production"

FLOOR_PLAY = """---
# The shape of playbooks/preflight.yml with its two modules replaced by ping (the play's floor).
- name: Floor of a two-task preflight-shaped play
  hosts: all
  gather_facts: false
  tasks:
    - name: First task delegated to the controller
      ansible.builtin.ping:
      delegate_to: localhost
    - name: Second task delegated to the controller
      ansible.builtin.ping:
      delegate_to: localhost
"""


def safe_inventory(work: Path) -> tuple[Path, dict]:
    """The production inventory with every host on a closed loopback port (never 192.0.2.x)."""
    production = yaml.safe_load((PRODUCTION / "hosts.yml").read_text())
    hosts = production["all"]["children"]["t4-nodes"]["hosts"]
    for host in hosts.values():
        host.update(ansible_host="127.0.0.1", ansible_port=1)
    inventory = work / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(production))
    (inventory / "group_vars/t4-nodes.yml").write_text((PRODUCTION / "group_vars/t4-nodes.yml").read_text())
    assert "192.0.2." not in (inventory / "hosts.yml").read_text()
    return inventory, hosts


def cli_argvs(hosts: dict, gpu: str) -> list[list[str]]:
    argvs = []
    for host in hosts.values():
        for model in host["vllm_models"]:
            flags = to_argv(normalize(model.get("flags") or {}))
            count = str(len(model.get("gpus") or [0]))
            argvs.append([str(PY), "bin/vllm-fleet", "check", model["model"], "--gpu", gpu, "--gpu-count", count])
            argvs[-1] += ["--no-fetch", *flags]
    return argvs


def timed(argv: list[str]) -> tuple[float, int]:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    return time.monotonic() - started, proc.returncode


def no_host_contacted(result) -> None:
    recap = result.recap()
    if any(c.get("unreachable", 0) for c in recap.values()) or "UNREACHABLE" in result.output:
        raise RuntimeError("a play tried to contact a production host:\n" + result.output[-3000:])


def planner_error() -> dict:
    """|error| % of the planner vs vLLM's own numbers, over every sized case of measured.json."""
    measured = json.loads((REPO_ROOT / "tests/data/gpu/measured.json").read_text())
    gpu = measured["gpu"]
    errors: dict[str, list[float]] = {"weights": [], "kv_gib": [], "kv_tokens": [], "max_len": []}
    for case in measured["cases"]:
        m = case["measured"]
        if m.get("weights_gib") is None:
            continue
        config = json.loads((REPO_ROOT / "model_configs/qwen" / case["model"] / "config.json").read_text())
        facts = facts_from_config(config, name=case["model"])
        plan = plan_memory(facts, gpu, vllm_version=measured["vllm_version"], **kwargs_from_flags(case["flags"]))

        def err(predicted, actual):
            return abs(100.0 * (predicted - actual) / actual) if actual else None

        pairs = [
            ("weights", plan.weights_gib_per_gpu, m.get("weights_gib")),
            ("kv_gib", plan.kv_cache_gib, m.get("kv_gib")),
            ("kv_tokens", plan.kv_tokens if plan.fits else None, m.get("kv_tokens")),
            ("max_len", plan.max_model_len_fit, m.get("estimated_max_model_len")),
        ]
        for key, predicted, actual in pairs:
            if predicted is not None and actual:
                errors[key].append(err(predicted, actual))
    tries = [c["measured"]["wall_to_init_s"] for c in measured["cases"] if c["measured"].get("wall_to_init_s")]
    return {
        "cases": sum(1 for c in measured["cases"] if c["measured"].get("weights_gib") is not None),
        "max_abs_error_pct": {k: round(max(v), 2) for k, v in errors.items() if v},
        "median_abs_error_pct": {k: round(median(v), 2) for k, v in errors.items() if v},
        "vllm_try_median_s": round(median(tries), 1) if tries else None,
        "vllm_version": measured["vllm_version"],
    }


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved baseline/subject pairs (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vf-bench-preflight-") as tmp, Ansible() as ansible:
        work = Path(tmp)
        inventory, hosts = safe_inventory(work)
        floor_play = work / "floor.yml"
        floor_play.write_text(FLOOR_PLAY)
        gpu = yaml.safe_load((PRODUCTION / "group_vars/t4-nodes.yml").read_text())["vllm_gpus"][0]
        argvs = cli_argvs(hosts, gpu)
        n_checks = len(argvs)

        # --- CLI: one process per check, against a bare interpreter start
        cli_s, floor_s = [], []
        for rep in range(args.reps):
            for argv in argvs:
                seconds, _ = timed([str(PY), "-c", "pass"])
                floor_s.append(seconds)
                seconds, rc = timed(argv)
                if rc != 0:
                    raise RuntimeError(f"{' '.join(argv)} exited {rc}: the production models should all pass")
                cli_s.append(seconds)
            log(f"cli rep {rep + 1}: median {median(cli_s) * 1000:.0f} ms per check")

        # --- in-process: the planner alone (what the module runs per host)
        group = yaml.safe_load((PRODUCTION / "group_vars/t4-nodes.yml").read_text())
        host_vars = [{**group, **h} for h in hosts.values()]
        done, started = 0, time.monotonic()
        while time.monotonic() - started < 2.0:
            for hv in host_vars:
                plan = check_host(hv)
                done += len(plan["models"])
        inproc_rate = done / (time.monotonic() - started)

        # --- the module through preflight.yml, against the same play shape with ping
        play_s, floor_play_s, profiles = [], [], []
        args_common = ["-i", str(inventory), "-e", "vllm_detect_gpus=false"]
        for rep in range(args.reps):
            floor = ansible.playbook(*args_common, str(floor_play)).check("floor play")
            no_host_contacted(floor)
            floor_play_s.append(floor.wall_s)
            pre = ansible.playbook(*args_common, "playbooks/preflight.yml").check("preflight.yml")
            no_host_contacted(pre)
            if set(pre.recap()) != set(hosts):
                raise RuntimeError(f"preflight.yml recap {pre.recap()} is not the production hosts")
            play_s.append(pre.wall_s)
            profiles.append(pre.profile)
            log(f"play rep {rep + 1}: preflight.yml {pre.wall_s:.2f} s, floor {floor.wall_s:.2f} s")

        module_task = [
            t["duration"] for p in profiles for t in p.get("tasks", []) if "Ensure every model of the host" in t["name"]
        ]
        errors = planner_error()

    cli_rate = 1 / median(cli_s)
    play_rate = n_checks / median(play_s)
    rows = [
        Row(
            "preflight",
            f"`vllm-fleet check`, {n_checks} production models, one process each",
            f"{cli_rate:.1f} checks/s ({median(cli_s) * 1000:.0f} ms)",
            f"python start {median(floor_s) * 1000:.0f} ms",
            median(cli_s) / median(floor_s),
            "-",
            None,
            runs={"cli_s": cli_s, "python_start_s": floor_s},
        ),
        Row(
            "preflight",
            f"vllm_preflight via preflight.yml, {len(hosts)} hosts / {n_checks} models",
            f"{play_rate:.2f} checks/s ({median(play_s):.2f} s)",
            f"ping-shaped play {median(floor_play_s):.2f} s",
            median(play_s) / median(floor_play_s),
            "-",
            None,
            note=f"the vllm_preflight task itself: {median(module_task):.2f} s per run (all hosts)",
            runs={"play_s": play_s, "floor_play_s": floor_play_s},
        ),
        Row(
            "preflight",
            f"planner error vs vLLM {errors['vllm_version']} on H100 ({errors['cases']} cases), max |err|",
            " / ".join(f"{k} {v}%" for k, v in errors["max_abs_error_pct"].items()),
            "measured.json",
            None,
            "<= 5 %",
            max(errors["max_abs_error_pct"].values()) <= 5.0,
            note="median |err|: " + " / ".join(f"{k} {v}%" for k, v in errors["median_abs_error_pct"].items()),
        ),
    ]
    extra = {
        "planner_in_process_checks_per_s": round(inproc_rate, 1),
        "vllm_try_median_s_recorded": errors["vllm_try_median_s"],
        "speedup_vs_a_real_vllm_try": round((errors["vllm_try_median_s"] or 0) * cli_rate),
        "preflight_task_s": round(median(module_task), 3),
        "planner_error": errors,
    }
    emit("preflight", rows, extra, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
