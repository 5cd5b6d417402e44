"""This repository as the collection vllm_fleet.fleet (galaxy.yml): built with ansible-galaxy,
installed from a requirements.yml into a directory that holds only an inventory, and used from
there: no ansible.cfg, no checkout (issue 14). The deploy from such a project runs in
test_deploy.py, on the test hosts deployed there."""

from __future__ import annotations

import tarfile

from tests.integration import installed
from tests.integration.ansible_run import REPO_ROOT


def test_built_and_installed_it_documents_its_modules_and_plans_from_an_empty_project(tmp_path):
    archive = installed.built_archive()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    # The modules, the model configs it plans with, the playbooks, and not the link back to itself or
    # the checkout's tools.
    assert {"plugins/modules/vllm_preflight.py", "model_configs/README.md", "playbooks/site.yml"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("collections", ".venv", "bench", "molecule")], names[:20]

    project = installed.project_with(tmp_path / "project", REPO_ROOT / "inventories/production")

    doc = installed.run(project, "ansible-doc", "vllm_fleet.fleet.vllm_preflight")
    assert doc.returncode == 0, doc.output
    assert "collections/ansible_collections/vllm_fleet/fleet/plugins/modules/vllm_preflight.py" in doc.output
    assert str(REPO_ROOT) not in doc.output, "the installed copy, not the checkout, must answer"

    plan = installed.run(
        project, "ansible-playbook", "-i", "inventory", "vllm_fleet.fleet.plan", "-e", "vllm_detect_gpus=false"
    )
    assert plan.returncode == 0, plan.output[-5000:]
    assert "qwen3-30b-a3b-awq      2xT4     2   float16   awq" in plan.output, plan.output[-3000:]
    assert plan.output.count("changed=0") == 5 and "failed=0" in plan.output
