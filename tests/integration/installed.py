"""This repository as an installed collection (issue 14): built with ansible-galaxy, installed from a
requirements.yml into a project directory that holds nothing else but an inventory, and run from
there with none of the checkout's settings (no ansible.cfg, no ANSIBLE_* variables)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.ansible_run import BIN, REPO_ROOT, AnsibleResult, run_in


@functools.cache
def built_archive() -> Path:
    """The collection's tarball, built once per test session."""
    out = Path(tempfile.mkdtemp(prefix="vllm-fleet-built-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", out], cwd=REPO_ROOT, check=True, timeout=120
    )
    (archive,) = out.glob("vllm_fleet-fleet-*.tar.gz")
    return archive


def clean_env(project: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment less every ANSIBLE_* setting (the checkout's ansible.cfg among
    them); the project's own collections directory is the only place to find vllm_fleet.fleet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(project / "collections"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def project_with(project: Path, inventory: Path) -> Path:
    """A project directory: a copy of `inventory`, and a requirements.yml naming the built tarball,
    installed with `ansible-galaxy collection install -r requirements.yml -p collections`."""
    project.mkdir(parents=True, exist_ok=True)
    shutil.copytree(inventory, project / "inventory")
    (project / "requirements.yml").write_text(f"---\ncollections:\n  - name: {built_archive()}\n    type: file\n")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "-p", "collections"],
        cwd=project,
        env=clean_env(project),
        check=True,
        timeout=120,
    )
    assert (project / "collections/ansible_collections/vllm_fleet/fleet/MANIFEST.json").exists()
    return project


def run(project: Path, tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> AnsibleResult:
    return run_in(project, clean_env(project, env), tool, *args, timeout=timeout)
