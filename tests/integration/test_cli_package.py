"""The `vllm-fleet` CLI as a package (issue 14, point 4): `uv tool install` of this project gives a
`vllm-fleet` command that plans outside the checkout, with the model configs the package ships."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.integration.ansible_run import BIN, REPO_ROOT


def test_uv_tool_install_gives_a_vllm_fleet_command_that_plans_from_its_shipped_configs(tmp_path):
    # From a copy of the project's files, as a user's clone would be (the build writes build/ and
    # *.egg-info beside pyproject.toml; they stay out of the checkout).
    source = tmp_path / "source"
    source.mkdir()
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (REPO_ROOT / name).is_file() and not (REPO_ROOT / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    tools, bins, elsewhere = tmp_path / "tools", tmp_path / "bin", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing of the checkout on the path the command imports from.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VLLM_FLEET_MODEL_CONFIGS")}
    env.update(UV_TOOL_DIR=str(tools), UV_TOOL_BIN_DIR=str(bins), UV_NATIVE_TLS="1")
    env["VLLM_FLEET_CONFIG_CACHE"] = str(tmp_path / "empty-cache")  # no config from an earlier fetch
    subprocess.run([BIN / "uv", "tool", "install", "--quiet", str(source)], env=env, check=True, timeout=600)
    shutil.rmtree(source)  # the installed command must not need the source

    def vllm_fleet_check(*args: str) -> subprocess.CompletedProcess:
        command = [bins / "vllm-fleet", "check", *args, "--gpu", "T4", "--no-fetch"]
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120, check=False)

    checked = vllm_fleet_check("qwen/Qwen1.5-14B-Chat-AWQ", "-tp", "2", "--json")
    # Refused (exit 1) for the alignment rule of the recipe's lesson: planned, with no hub, no cache and
    # no checkout, from the config the package ships; a model it does not ship has no config at all.
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert '"row-parallel-group-alignment"' in checked.stdout and '"verdict": "refused"' in checked.stdout
    unknown = vllm_fleet_check("qwen/Not-A-Shipped-Model")
    assert unknown.returncode == 2 and "not in model_configs/" in unknown.stderr, unknown.stderr
