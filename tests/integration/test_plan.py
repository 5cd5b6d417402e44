"""playbooks/plan.yml over the production inventory, from the controller alone."""

from __future__ import annotations

import yaml
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import cli, layout, runtime_lock

from tests.integration import ansible_run


def test_plan_with_detection_off_contacts_no_host_and_prints_every_model(tmp_path):
    # The production fleet, with every host pointed at a closed loopback port: any attempt to
    # reach a host would fail as unreachable (and could never leave this machine).
    production = yaml.safe_load((ansible_run.REPO_ROOT / "inventories/production/hosts.yml").read_text())
    hosts = production["all"]["children"]["t4-nodes"]["hosts"]
    for host in hosts.values():
        host.update(ansible_host="127.0.0.1", ansible_port=1)
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(production))
    (inventory / "group_vars/t4-nodes.yml").write_text(
        (ansible_run.REPO_ROOT / "inventories/production/group_vars/t4-nodes.yml").read_text()
    )
    result = ansible_run.playbook("-i", str(inventory), "playbooks/plan.yml", "-e", "vllm_detect_gpus=false")
    assert result.returncode == 0, result.output[-4000:]
    recap = result.recap()
    assert set(recap) == set(hosts)
    assert all(c["unreachable"] == 0 and c["failed"] == 0 and c["changed"] == 0 for c in recap.values()), recap
    # The runtime's lock (issue 19): CUDA T4 hosts get the collection's lock for the pinned vLLM.
    lock = layout.shipped_lock("vllm", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    text = layout.read_lock(lock)
    count = len(runtime_lock.parse(text))
    line = f"runtime: lock {runtime_lock.digest(text)}, {count} packages (vllm {layout.VLLM_VERSION}"
    assert result.output.count(line) == len(hosts), result.output[-3000:]
    for host in hosts.values():
        for model in host["vllm_models"]:
            assert model["name"] in result.output
            # The example names branches: refused until pinned, each with its fix (the hub is out of reach).
            assert (
                f"host: [revision-pinned] {model['name']}: revision master of {model['model']} is not resolved"
                in result.output
            )


def test_plan_yml_plans_with_a_calibration_file_and_says_what_it_used(tmp_path):
    # vllm_calibration_file reaches every preflight (tasks/preflight.yml): the recorded GPU runs'
    # calibration has H100 and H200 on vLLM 0.26.0, nothing for this T4 host's pinned vLLM, and the
    # plan says so under the table; a file that is not a calibration is reported, not planned around.
    calibration = tmp_path / "fleet-calibration.json"
    starts = ansible_run.REPO_ROOT / "tests/data/gpu/starts.jsonl"
    assert cli.main(["calibrate", str(starts), "--write", str(calibration)]) == 0
    inventory = tmp_path / "hosts.yml"
    host = {"ansible_connection": "local", "vllm_gpus": ["T4"], "vllm_models": [QWEN7B_GPTQ]}
    host["vllm_allow_floating_revisions"] = True
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"t4-01": host}}}))
    off = "-e", "vllm_detect_gpus=false"
    planned = ansible_run.playbook(
        "-i", str(inventory), "playbooks/plan.yml", *off, "-e", f"vllm_calibration_file={calibration}"
    )
    assert planned.returncode == 0, planned.output[-3000:]
    assert (
        "qwen7b-gptq: calibration: the calibration has nothing for T4 on vLLM 0.32.0: built-in terms" in planned.output
    )
    bad = ansible_run.playbook(
        "-i", str(inventory), "playbooks/plan.yml", *off, "-e", f"vllm_calibration_file={starts}"
    )
    assert bad.returncode == 0, bad.output[-3000:]
    assert "not JSON" in bad.output and "(vllm_calibration_file)" in bad.output, bad.output[-3000:]


# One model of the production fleet, planned on the host's own GPUs.
QWEN7B_GPTQ = {
    "name": "qwen7b-gptq",
    "model": "qwen/Qwen1.5-7B-Chat-GPTQ-Int4",
    "revision": "master",
    "port": 9000,
    "gpus": [0],
    "flags": {"dtype": "half", "tensor-parallel-size": 1, "gpu-memory-utilization": 0.95, "max-model-len": 8192},
}


def gpu_host(tmp_path, detected_csv: str):
    """An inventory of one host reached by the local connection, declaring two T4s, and a directory
    whose nvidia-smi prints `detected_csv` (this machine has no GPU): the host's GPU query as
    gpu_facts runs it, with what a real nvidia-smi prints for that query."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ntouch {tmp_path}/nvidia-smi-ran\nprintf '{detected_csv}'\n")
    smi.chmod(0o755)
    inventory = tmp_path / "hosts.yml"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(ansible_run.BIN / "python"),
        "vllm_device": "cuda",
        "vllm_gpus": ["T4", "T4"],
        "vllm_models": [QWEN7B_GPTQ],
        # master, unresolved here (no hub): planned on the shipped config, and said so.
        "vllm_allow_floating_revisions": True,
    }
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpuhost": host}}}))
    return inventory, {"PATH": f"{bin_dir}:{ansible_run.BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}


def test_declared_gpus_that_differ_from_the_detected_ones_refuse_the_host_with_both_lists(tmp_path):
    inventory, env = gpu_host(tmp_path, "0, Tesla T4, 15360, 7.5, 550.54.15\\n")
    refused = ansible_run.playbook("-i", str(inventory), "playbooks/preflight.yml", env=env)
    assert refused.returncode != 0
    assert (
        "the GPUs vllm_gpus declares (T4, T4) are not the ones nvidia-smi detects (T4): declared 2 GPUs, detected 1"
        in refused.output
    ), refused.output[-3000:]
    # plan.yml runs the same checks and reports the difference with its fix, without failing.
    planned = ansible_run.playbook("-i", str(inventory), "playbooks/plan.yml", env=env)
    assert planned.returncode == 0, planned.output[-3000:]
    assert "host: declared 2 GPUs, detected 1 -- fix: correct vllm_gpus" in planned.output, planned.output[-3000:]
    assert "qwen7b-gptq" in planned.output


def test_declared_gpus_that_match_pass_and_detection_off_never_asks_nvidia_smi(tmp_path):
    inventory, env = gpu_host(tmp_path, "0, Tesla T4, 15360, 7.5, 550.54.15\\n1, Tesla T4, 15360, 7.5, 550.54.15\\n")
    accepted = ansible_run.playbook("-i", str(inventory), "playbooks/preflight.yml", env=env)
    assert accepted.returncode == 0, accepted.output[-3000:]
    assert (tmp_path / "nvidia-smi-ran").exists()
    (tmp_path / "nvidia-smi-ran").unlink()
    # Detection off: the declared GPUs are the answer, and nvidia-smi is not run (a module option,
    # no longer a path that does not exist).
    off = ansible_run.playbook("-i", str(inventory), "playbooks/preflight.yml", "-e", "vllm_detect_gpus=false", env=env)
    assert off.returncode == 0, off.output[-3000:]
    assert not (tmp_path / "nvidia-smi-ran").exists()


def test_plan_and_preflight_run_the_same_checks_with_the_same_inputs():
    # One preflight (playbooks/tasks/preflight.yml): plan.yml reports what preflight.yml refuses,
    # with the hub endpoint and token included in both.
    books = {
        name: yaml.safe_load((ansible_run.REPO_ROOT / f"playbooks/{name}.yml").read_text())
        for name in ("preflight", "plan")
    }
    for name, (play,) in books.items():
        imported = [t["ansible.builtin.import_tasks"] for t in play["tasks"] if "ansible.builtin.import_tasks" in t]
        assert imported == ["tasks/preflight.yml"], name
        assert play["vars"]["vllm_preflight_refuse"] is (name == "preflight")
    shared = yaml.safe_load((ansible_run.REPO_ROOT / "playbooks/tasks/preflight.yml").read_text())
    check = next(t for t in shared if "vllm_fleet.fleet.vllm_preflight" in t)
    assert {"hub_endpoint", "hub_token", "models", "gpus", "vllm_version", "model_configs_dir"} <= set(
        check["vllm_fleet.fleet.vllm_preflight"]
    )
