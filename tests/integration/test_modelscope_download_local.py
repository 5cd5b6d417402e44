"""modelscope_download run by the real `ansible` CLI over the local connection, with a Python that has
no ModelScope SDK (the system's /usr/bin/python3): the module names the missing library the way
ansible-core's modules do, before it asks any hub (issue 14). The downloads themselves run against
the stand-in hub in test_deploy.py and the model_weights molecule scenario."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.integration.ansible_run import module_json, run

SYSTEM_PYTHON = "/usr/bin/python3"


def test_without_the_sdk_the_module_names_the_missing_library(tmp_path):
    if not shutil.which(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is not here to run the module without the SDK")
    has_sdk = subprocess.run([SYSTEM_PYTHON, "-c", "import modelscope"], capture_output=True, check=False)
    if has_sdk.returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has the ModelScope SDK: no Python without it to run the module")
    args = {
        "model": "vllm-fleet/tiny-qwen2",
        "revision": "v1",
        "local_dir": str(tmp_path / "m"),
        "endpoint": "http://127.0.0.1:9",
    }
    result = run(
        "ansible",
        "localhost",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={SYSTEM_PYTHON}",
        "-m",
        "vllm_fleet.fleet.modelscope_download",
        "-a",
        json.dumps(args),
        timeout=120,
    )
    answer = module_json(result.output, "localhost")
    assert result.returncode != 0 and "localhost | FAILED!" in result.output, result.output
    assert "Failed to import the required Python library (modelscope and modelscope_hub)" in answer["msg"], answer
    assert answer["interpreter"] == SYSTEM_PYTHON and not (tmp_path / "m").exists()
