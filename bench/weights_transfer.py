"""Weights transfer: the model_weights role against curl of the same files from the same hub, and the
upstream bytes of N hosts with the fleet mirror on.

    .venv/bin/python bench/weights_transfer.py [--size-mib 1024] [--small-mib 256] [--reps 3] [--hosts 3]
                                               [--json OUT]

A synthetic model (the tiny model plus `--shards` files of random bytes, `--size-mib` in all) is
published on the stand-in hub (tests/support/hub.py, on the first test host's veth address).
On test host vf<first> (with a small venv holding only the ModelScope SDK, from the controller's
wheelhouse, standing in for the vllm_runtime environment the role normally uses):
  - baseline: `curl -o` of every file of the revision, one after the other, timed on the host;
    a second baseline adds `sha256sum` of the files (the same verification the role does);
  - subject: the model_weights role alone (tests/integration/playbooks/weights_only.yml,
    source hub, verification on: the SDK checks each file's sha256 against the hub's listing),
    timed as the role's tasks (profile callback) and as the whole ansible-playbook run.
Runs alternate (curl, role, curl, role, ...) into emptied folders; throughput = bytes / median.
A second, smaller model (--small-mib) is timed the same way in each round: the difference of the
two sizes gives each side's marginal throughput (per extra byte, fixed costs cancelled), which is
what decides the ratio for real multi-GiB weights.
Then, with the fleet mirror on (model_weights_source=controller) over `--hosts` hosts, the bytes
the hub sent are compared with the model's size (goal: 1x, whatever N).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    PY,
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
)

from tests.support.tiny_model import make_tiny_model

MODEL = "vllm-fleet/bench-weights"
SMALL = "vllm-fleet/bench-weights-small"
REVISION = "v1"
SDK_ENV = "/opt/bench-sdk"


def publish_big_model(hub_root: Path, size_mib: int, shards: int, model: str = MODEL) -> tuple[Path, list[str], int]:
    target = hub_root / model / REVISION
    make_tiny_model(target)
    per_shard = size_mib * (1 << 20) // shards
    for i in range(1, shards + 1):
        with open(target / f"model-{i:05d}-of-{shards:05d}.safetensors", "wb") as out:
            left = per_shard
            while left:
                block = os.urandom(min(left, 8 << 20))
                out.write(block)
                left -= len(block)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    return target, files, sum((target / f).stat().st_size for f in files)


def curl_script(hub_url: str, model: str, files: list[str]) -> str:
    """On the host: curl every file one after the other, then sha256sum them; prints 3 timestamps."""
    base = f"{hub_url}/api/v1/models/{model}/repo?Revision={REVISION}&FilePath="
    quoted = " ".join(f"'{f}'" for f in files)
    fetch = " ".join(f"-o '{f}' '{base}{f}'" for f in files)
    return (
        f"set -e; d=/var/tmp/curl-dl; rm -rf $d; mkdir -p $d; cd $d; mkdir -p $(dirname {quoted}); "
        f"a=$(date +%s.%N); curl -sSf {fetch}; b=$(date +%s.%N); sha256sum {quoted} >/dev/null; "
        "c=$(date +%s.%N); echo $a $b $c; rm -rf $d"
    )


def role_run(ansible: Ansible, fleet: Fleet, host, env: dict, model: str, nbytes: int) -> tuple[float, float, dict]:
    """The model_weights role alone on the host: (its tasks' seconds, the playbook's, the profile)."""
    ssh(host, "rm -rf /var/tmp/role-dl")
    role_vars = {
        "vllm_models": [{"name": "w", "model": model, "revision": REVISION, "port": 8000}],
        "model_weights_root": "/var/tmp/role-dl",
        "model_weights_python": f"{SDK_ENV}/bin/python",
    }
    run = ansible.playbook(
        "-i", str(fleet.inventory), "-l", host.name, "tests/integration/playbooks/weights_only.yml",
        "-e", json.dumps(role_vars), env=env,
    ).check("weights_only.yml")  # fmt: skip
    seconds = sum(t["duration"] for t in run.profile["tasks"] if t["role"] == "model_weights")
    got = ssh(host, f"cd /var/tmp/role-dl/{model}/{REVISION} && du -sb --apparent-size .").stdout.split()[0]
    if int(got) < nbytes:
        raise RuntimeError(f"the role left {got} bytes, the model has {nbytes}")
    ssh(host, "rm -rf /var/tmp/role-dl")
    return seconds, run.wall_s, run.profile


def sdk_wheels(dest: Path) -> None:
    """The ModelScope SDK and its dependencies: from the controller's wheelhouse (the vllm_runtime
    role's) when it is built, else from the package index pip is configured with."""
    source = ["--no-index", f"--find-links={WHEELHOUSE}"] if (WHEELHOUSE / ".complete").is_file() else []
    pip = [str(PY), "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *source, f"--dest={dest}", "modelscope==1.40.2"], check=True)


def main() -> int:
    install_signal_handlers()
    parser = base_args(__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="synthetic model size (default 1024 MiB)")
    parser.add_argument(
        "--small-mib",
        type=int,
        default=256,
        help="a second, smaller model (default 256 MiB; 0: none): the two sizes give the marginal "
        "throughput (per extra byte) of each side, without their fixed costs",
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="interleaved curl/role pairs (default 3)")
    parser.add_argument("--hosts", type=int, default=3, help="hosts of the mirror run (default 3)")
    args = parser.parse_args()
    with Fleet(args.hosts, label="weights") as fleet, hub_for(fleet, tiny=False) as hub, Ansible() as ansible:
        env = {"VLLM_FLEET_HUB_URL": hub.url}
        host = fleet.hosts[0]
        _, files, model_bytes = publish_big_model(hub.root, args.size_mib, args.shards)
        log(f"model: {len(files)} files, {model_bytes / (1 << 20):.0f} MiB on {hub.url}")

        # The SDK's own venv on the host, from the controller's wheelhouse (no index needed).
        with tempfile.TemporaryDirectory(prefix="vf-bench-sdk-") as wheels:
            sdk_wheels(Path(wheels))
            shutil.copytree(wheels, fleet.root_of(host.name) / "opt/bench-sdk-wheels")
        ssh(host, f"python3 -m venv {SDK_ENV} && {SDK_ENV}/bin/pip install -q --no-index "
            f"--find-links /opt/bench-sdk-wheels modelscope==1.40.2")  # fmt: skip

        sizes = {"big": (MODEL, files, model_bytes)}
        if args.small_mib:
            _, small_files, small_bytes = publish_big_model(hub.root, args.small_mib, args.shards, SMALL)
            sizes = {"small": (SMALL, small_files, small_bytes), **sizes}
        samples = {size: {"curl": [], "curl_sha": [], "role": [], "playbook": []} for size in sizes}
        profiles = []
        for rep in range(args.reps):
            for size, (model, model_files, nbytes) in sizes.items():
                a, b, c = (float(x) for x in ssh(host, curl_script(hub.url, model, model_files)).stdout.split())
                samples[size]["curl"].append(b - a)
                samples[size]["curl_sha"].append(c - a)
                role, wall, profile = role_run(ansible, fleet, host, env, model, nbytes)
                samples[size]["role"].append(role)
                samples[size]["playbook"].append(wall)
                if size == "big":
                    profiles.append(profile)
                log(
                    f"rep {rep + 1}, {nbytes / (1 << 20):.0f} MiB: curl {b - a:.2f} s (+sha256sum {c - a:.2f} s), "
                    f"role {role:.2f} s (playbook {wall:.2f} s)"
                )
        samples_bytes = {size: nbytes for size, (_, _, nbytes) in sizes.items()}
        big = samples["big"]
        curl_s, curl_verify_s, role_s, role_wall_s = big["curl"], big["curl_sha"], big["role"], big["playbook"]
        models = [{"name": "big", "model": MODEL, "revision": REVISION, "port": 8000}]
        role_profile = print_profile("model_weights run: slowest tasks", profiles, 6)

        # The fleet mirror: N hosts, the hub should send the model once.
        mirror = tempfile.mkdtemp(prefix="vf-bench-mirror-")
        try:
            hub.clear_log()
            mirror_vars = {
                "vllm_models": models,
                "model_weights_source": "controller",
                "model_weights_mirror_dir": mirror,
                "model_weights_root": "/var/tmp/mirror-dl",
            }
            run = ansible.playbook(
                "-i", str(fleet.inventory), "tests/integration/playbooks/weights_only.yml",
                "-e", json.dumps(mirror_vars), env=env,
            ).check("weights_only.yml with the mirror")  # fmt: skip
            upstream = hub.content_bytes_sent()
            mirror_wall = run.wall_s
            mirror_profile = print_profile("mirror run: slowest tasks", [run.profile], 4)
        finally:
            shutil.rmtree(mirror, ignore_errors=True)

    mib = model_bytes / (1 << 20)
    role_tp, curl_tp, curlv_tp = mib / median(role_s), mib / median(curl_s), mib / median(curl_verify_s)
    marginal = {}
    if "small" in samples:
        extra_mib = (model_bytes - samples_bytes["small"]) / (1 << 20)
        for side in ("role", "curl", "curl_sha"):
            marginal[side] = extra_mib / (median(samples["big"][side]) - median(samples["small"][side]))
        fixed_role = median(samples["small"]["role"]) - samples_bytes["small"] / (1 << 20) / marginal["role"]
    rows = [
        Row(
            "weights",
            f"model_weights role (verification on), {mib:.0f} MiB, 1 host",
            f"{role_tp:.0f} MiB/s ({median(role_s):.2f} s)",
            f"curl {curl_tp:.0f} MiB/s ({median(curl_s):.2f} s)",
            role_tp / curl_tp,
            ">= 0.9x",
            role_tp / curl_tp >= 0.9,
            note=f"whole ansible-playbook run: {mib / median(role_wall_s):.0f} MiB/s ({median(role_wall_s):.2f} s)",
            runs={"role_s": role_s, "role_playbook_s": role_wall_s, "curl_s": curl_s},
        ),
        Row(
            "weights",
            "model_weights role vs curl + sha256sum (same verification)",
            f"{role_tp:.0f} MiB/s",
            f"curl+sha256sum {curlv_tp:.0f} MiB/s ({median(curl_verify_s):.2f} s)",
            role_tp / curlv_tp,
            ">= 0.9x",
            role_tp / curlv_tp >= 0.9,
            runs={"curl_sha256sum_s": curl_verify_s},
        ),
        *(
            [
                Row(
                    "weights",
                    f"marginal throughput (per extra MiB, {args.small_mib} -> {mib:.0f} MiB): role vs curl",
                    f"{marginal['role']:.0f} MiB/s",
                    f"curl {marginal['curl']:.0f} MiB/s (+sha256sum {marginal['curl_sha']:.0f} MiB/s)",
                    marginal["role"] / marginal["curl"],
                    ">= 0.9x",
                    marginal["role"] / marginal["curl"] >= 0.9,
                    note=f"the role's fixed cost (tasks, SDK start, listing): {fixed_role:.2f} s per run",
                    runs={"samples": samples},
                )
            ]
            if marginal
            else []
        ),
        Row(
            "weights",
            f"upstream bytes, fleet mirror on, {args.hosts} hosts",
            f"{upstream / (1 << 20):.1f} MiB",
            f"model {mib:.1f} MiB",
            upstream / model_bytes,
            "1x",
            upstream == model_bytes,
            note=f"mirror run (download once + copy to {args.hosts} hosts): {mirror_wall:.1f} s",
        ),
    ]
    extra = {
        "model_mib": round(mib, 1),
        "files": len(files),
        "role_profile": role_profile,
        "role_by_role": by_role(profiles),
        "mirror_profile": mirror_profile,
    }
    emit("weights", rows, extra, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
