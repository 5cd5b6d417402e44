"""This repository as the collection vllm_fleet.fleet (galaxy.yml): built with ansible-galaxy,
installed into an empty collections path, and used from a directory that holds only an inventory:
no ansible.cfg, no checkout (issue 14). The deploy from an installed copy is not tested yet."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

from tests.integration.ansible_run import BIN, REPO_ROOT


def clean_env(collections: str) -> dict[str, str]:
    """This process's environment less every ANSIBLE_* setting (the checkout's ansible.cfg among
    them), with only the installed collection to find."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def test_built_and_installed_it_documents_its_modules_and_plans_from_an_empty_project(tmp_path):
    built = tmp_path / "built"
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", built], cwd=REPO_ROOT, check=True, timeout=120
    )
    (archive,) = built.glob("vllm_fleet-fleet-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    # The modules, the model configs it plans with, and not the link back to itself or the checkout's tools.
    assert "plugins/modules/vllm_preflight.py" in names and "model_configs/README.md" in names
    assert not [n for n in names if n.split("/")[0] in ("collections", ".venv", "bench", "molecule")], names[:20]

    collections = tmp_path / "collections"
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(REPO_ROOT / "inventories/production", project / "inventory")
    env = clean_env(str(collections))
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", archive, "-p", collections],
        cwd=project,
        env=env,
        check=True,
        timeout=120,
    )
    assert (collections / "ansible_collections/vllm_fleet/fleet/MANIFEST.json").exists()

    doc = subprocess.run(
        [BIN / "ansible-doc", "vllm_fleet.fleet.vllm_preflight"], cwd=project, env=env, capture_output=True, text=True
    )
    assert doc.returncode == 0, doc.stderr
    assert "collections/ansible_collections/vllm_fleet/fleet/plugins/modules/vllm_preflight.py" in doc.stdout
    assert str(REPO_ROOT) not in doc.stdout, "the installed copy, not the checkout, must answer"

    plan = subprocess.run(
        [BIN / "ansible-playbook", "-i", "inventory", "vllm_fleet.fleet.plan", "-e", "vllm_detect_gpus=false"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-2000:]
    assert "qwen3-30b-a3b-awq      2xT4     2   float16   awq" in plan.stdout, plan.stdout[-3000:]
    assert plan.stdout.count("changed=0") == 5 and "failed=0" in plan.stdout
