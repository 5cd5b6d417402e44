"""The vllm_monitoring role through real ansible-playbook (issue 16): one Prometheus file_sd file per
fleet host on the controller or on the monitoring hosts, idempotent, following the inventory (a
removed model, a removed host), and --check changing nothing. The fleet hosts here are local
connections: the role only writes on the monitoring side. A real Prometheus reading these files
from real vLLM servers is tests/integration/test_rollout.py's."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.integration import ansible_run

PLAYBOOK = "tests/integration/playbooks/monitoring_only.yml"


def tiny(name: str, port: int, **extra) -> dict:
    return {"name": name, "model": "vllm-fleet/tiny-qwen2", "revision": "c" * 40, "port": port, **extra}


def inventory(tmp_path, models: dict[str, list[dict]], monitoring: dict | None = None):
    hosts = {h: {"ansible_connection": "local", "ansible_host": f"10.9.0.{i + 1}", "vllm_models": m}
             for i, (h, m) in enumerate(models.items())}  # fmt: skip
    groups = {"fleet": {"hosts": hosts}}
    if monitoring:
        groups["vllm_monitoring"] = {"hosts": monitoring}
    doc = {"all": {"vars": {"vllm_device": "cpu", "ansible_python_interpreter": ansible_run.sys.executable},
                   "children": groups}}  # fmt: skip
    path = tmp_path / "inventory"
    path.mkdir(exist_ok=True)
    (path / "hosts.yml").write_text(yaml.safe_dump(doc))
    return path


def play(inv, *args):
    result = ansible_run.playbook("-i", str(inv), PLAYBOOK, *args)
    assert result.returncode == 0, result.output[-4000:]
    return result


def read(path):
    return json.loads(path.read_text())


def test_each_host_gets_its_file_beside_the_inventory_and_a_rerun_changes_nothing(tmp_path):
    inv = inventory(tmp_path, {"h1": [tiny("tiny", 8000), tiny("other", 8001, gpus=[1])], "h2": [tiny("tiny", 8000)]})
    targets = inv / ".vllm-prometheus-targets"
    targets.mkdir()
    (targets / "retired-host.json").write_text("[]\n")  # a host the inventory no longer has
    (targets / "README.txt").write_text("not ours\n")

    first = play(inv, "-vvv")
    assert sorted(p.name for p in targets.iterdir()) == ["README.txt", "h1.json", "h2.json"]
    # On the controller the action plugin wrote them in Ansible's own process: no module was sent.
    assert "AnsiballZ_vllm_scrape_targets" not in first.output
    h1 = read(targets / "h1.json")
    assert [e["targets"] for e in h1] == [["10.9.0.1:8001"], ["10.9.0.1:8000"]]
    assert h1[1]["labels"] == {
        "host": "h1",
        "model": "tiny",
        "unit": "vllm-tiny.service",
        "repo": "vllm-fleet/tiny-qwen2",
        "revision": "c" * 40,
        "revision_name": "c" * 40,
        "vllm_version": "0.32.0",
        "gpus": "cpu",
    }
    assert first.changed()["h1"] > 0

    again = play(inv)
    assert set(again.changed().values()) == {0}, again.output[-3000:]


def test_a_removed_model_leaves_its_hosts_file_and_check_mode_writes_nothing(tmp_path):
    inv = inventory(tmp_path, {"h1": [tiny("tiny", 8000), tiny("other", 8001)], "h2": [tiny("tiny", 8000)]})
    play(inv)
    targets = inv / ".vllm-prometheus-targets"
    before = (targets / "h1.json").read_text()

    inv = inventory(
        tmp_path, {"h1": [tiny("tiny", 8000), tiny("other", 8001, state="absent")], "h2": [tiny("tiny", 8000)]}
    )
    checked = play(inv, "--check")
    assert (targets / "h1.json").read_text() == before
    assert checked.changed()["h1"] > 0  # what it would change

    play(inv)
    assert [e["labels"]["model"] for e in read(targets / "h1.json")] == ["tiny"]
    assert [e["labels"]["model"] for e in read(targets / "h2.json")] == ["tiny"]


# A monitoring host with become: the module runs there (on the controller without become, the
# action plugin writes in-process); `su` from root to root needs no password.
MONITORING_HOST = {"mon1": {"ansible_connection": "local", "ansible_become": True, "ansible_become_method": "su"}}


def test_a_limited_run_keeps_the_other_hosts_files_and_monitoring_hosts_get_them(tmp_path):
    if os.geteuid() != 0:
        print("skipped: becoming root with su needs root")
        pytest.skip("becoming root with su needs root (CI runs as root)")
    mon_dir = tmp_path / "prometheus-file-sd"
    inv = inventory(
        tmp_path,
        {"h1": [tiny("tiny", 8000)], "h2": [tiny("tiny", 8000)]},
        monitoring=MONITORING_HOST,
    )
    first = play(inv, "-e", f"vllm_monitoring_targets_dir={mon_dir}", "-vvv")
    assert set(first.recap()) == {"h1", "h2"}  # a monitoring host is written on, never a fleet host
    assert "AnsiballZ_vllm_scrape_targets" in first.output  # the module ran there
    assert sorted(p.name for p in mon_dir.iterdir()) == ["h1.json", "h2.json"]
    # A monitoring group replaces the controller: its task did not run.
    controller_task = "vllm_fleet.fleet.vllm_monitoring : Write the fleet's targets on the controller"
    assert ansible_run.task_lines(first.output, controller_task) == {"skipping: [h1]"}
    assert not (inv / ".vllm-prometheus-targets").exists()

    inv = inventory(
        tmp_path,
        {"h1": [tiny("tiny", 8005)], "h2": [tiny("tiny", 8000)]},
        monitoring=MONITORING_HOST,
    )
    play(inv, "-l", "h1", "-e", f"vllm_monitoring_targets_dir={mon_dir}")
    assert sorted(p.name for p in mon_dir.iterdir()) == ["h1.json", "h2.json"]
    assert read(mon_dir / "h1.json")[0]["targets"] == ["10.9.0.1:8005"]


def test_status_names_a_host_that_does_not_answer_and_a_model_without_its_unit(tmp_path):
    # status.yml against an inventory whose one host has no such unit (this controller, a local
    # connection) and one that does not answer (a closed port): both are in the table, with why.
    doc = {"all": {"vars": {"ansible_python_interpreter": ansible_run.sys.executable}, "hosts": {
        "here": {"ansible_connection": "local", "vllm_models": [tiny("nounit", 8431)]},
        "gone": {"ansible_host": "127.0.0.1", "ansible_port": 1, "vllm_models": [tiny("tiny", 8000)]},
    }}}  # fmt: skip
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "status.json"
    result = ansible_run.playbook(
        "-i", str(tmp_path / "hosts.yml"), "playbooks/status.yml", env={"VLLM_FLEET_STATUS_JSON": str(out)}
    )  # fmt: skip
    assert result.returncode != 0  # an unreachable host fails the run
    table = result.output[result.output.index("VLLM-FLEET STATUS") :]
    assert "gone: unreachable (in: Read each model's unit, /version, /metrics and last probe)" in table
    status = json.loads(out.read_text())
    (row,) = status["rows"]
    assert (row["host"], row["model"], row["state"]) == ("here", "nounit", "missing")
    assert row["problems"] == ["no unit vllm-nounit.service on the host (deploy it: site.yml)"]
    assert list(status["unreachable"]) == ["gone"]
