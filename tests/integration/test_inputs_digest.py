"""The fast path's digest of a host's inputs (plugins/lookup/vllm_fleet_inputs_digest.py), through the
real ansible-playbook on the controller (implicit localhost, no test host needed)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.integration import ansible_run

PLAY = """
- name: Digest without facts
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Without facts
      ansible.builtin.debug:
        msg: "digest=[{{ lookup('vllm_fleet.fleet.vllm_fleet_inputs_digest') }}]"
- name: Digest with facts
  hosts: localhost
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: With facts
      ansible.builtin.debug:
        msg: "digest=[{{ lookup('vllm_fleet.fleet.vllm_fleet_inputs_digest', playbook_dir, facts_gathered=true) }}]"
"""


@pytest.fixture(scope="module")
def digests(tmp_path_factory):
    # The playbook sits at the project root so that playbook_dir is the root the lookup hashes.
    book = ansible_run.REPO_ROOT / f".digest-test-{tmp_path_factory.getbasetemp().name}.yml"
    book.write_text(PLAY)

    def run(extra: dict) -> tuple[str, str]:
        result = ansible_run.playbook(
            "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
            "-e", json.dumps(extra), str(book),
        )  # fmt: skip
        assert result.returncode == 0, result.output[-3000:]
        found = re.findall(r"digest=\[(\w*)\]", result.output)
        assert len(found) == 2, result.output[-3000:]
        return found[0], found[1]

    try:
        yield run
    finally:
        book.unlink()


def test_the_same_inputs_give_the_same_digest_and_templates_are_resolved(digests):
    first, _ = digests({"vllm_models": [{"name": "tiny", "port": "{{ 8000 + 1 }}"}]})
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert digests({"vllm_models": [{"name": "tiny", "port": 8001}]})[0] == first
    assert digests({"vllm_models": [{"name": "tiny", "port": 8002}]})[0] != first
    assert digests({"model_weights_verify": "full", "vllm_models": [{"name": "tiny", "port": 8001}]})[0] != first


def test_run_results_and_rollout_knobs_are_not_inputs(digests):
    base = {"vllm_models": [{"name": "tiny", "port": 8001}]}
    knobs = {"vllm_rollout_serial": ["100%"], "vllm_rollout_fast_path": False, "vllm_preflight_result": {"x": 1}}
    assert digests({**base, **knobs})[0] == digests(base)[0]
    assert digests({**base, "other_variable": 1})[0] == digests(base)[0]


def test_an_input_made_from_facts_waits_for_them(digests):
    without, with_facts = digests({"vllm_service_bind_address": "{{ ansible_facts['os_family'] | lower }}"})
    assert without == ""
    assert re.fullmatch(r"[0-9a-f]{64}", with_facts)
