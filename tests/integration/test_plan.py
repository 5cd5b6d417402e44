"""playbooks/plan.yml over the production inventory, from the controller alone."""

from __future__ import annotations

import yaml

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
    for host in hosts.values():
        for model in host["vllm_models"]:
            assert model["name"] in result.output
