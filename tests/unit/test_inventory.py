"""The vllm_models schema: defaults, validation, preflight's flags, and a play's distinct revisions."""

from __future__ import annotations

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import inventory

TINY = {"name": "tiny", "model": "vllm-fleet/tiny-qwen2", "revision": "v1", "port": 8000}


def test_defaults_are_filled_and_flags_spelled_as_vllm_spells_them():
    (model,) = inventory.normalize_models([{"name": "qwen7b", "model": "qwen/Qwen1.5-7B-Chat", "port": 9000,
                                            "flags": {"max_model_len": "14k", "tp": 2}}])  # fmt: skip
    assert model["revision"] == "master" and model["state"] == "present" and model["gpus"] == []
    assert model["flags"] == {"max-model-len": 14000, "tensor-parallel-size": 2, "served-model-name": "qwen7b"}


@pytest.mark.parametrize("name", ["Qwen7B", "qwen_7b", "", "-x"])
def test_a_name_that_is_no_unit_name_is_refused(name):
    with pytest.raises(inventory.InventoryError, match="unit name"):
        inventory.normalize_model({**TINY, "name": name})


@pytest.mark.parametrize(("flag", "value"), [("port", 8001), ("host", "0.0.0.0"), ("api-key", "secret")])
def test_flags_the_service_role_owns_are_refused(flag, value):
    with pytest.raises(inventory.InventoryError, match="set by the service role"):
        inventory.normalize_model({**TINY, "flags": {flag: value}})


def test_a_flag_value_vllm_would_reject_names_the_model():
    with pytest.raises(inventory.InventoryError, match="model tiny: --max-model-len"):
        inventory.normalize_model({**TINY, "flags": {"max-model-len": "long"}})


def test_one_host_may_not_name_two_models_alike():
    with pytest.raises(inventory.InventoryError, match="unique per host"):
        inventory.normalize_models([TINY, {**TINY, "port": 8001}])


def test_the_units_run_the_flags_preflight_decided():
    plan = {"models": [{"model": "tiny", "translated_flags": {"dtype": "half", "max-model-len": 512}}]}
    (model,) = inventory.apply_plan([{**TINY, "flags": {"dtype": "auto", "disable-log-requests": True}}], plan)
    assert model["flags"] == {"dtype": "half", "max-model-len": 512, "served-model-name": "tiny"}


def test_without_a_plan_the_units_still_run_no_flag_the_pinned_vllm_dropped():
    # --skip-tags preflight leaves no plan: the old flags are translated all the same (no GPU needed),
    # everything else is left for the host-side parser.
    old = {**TINY, "flags": {"worker-use-ray": True, "disable-log-requests": True, "max-num-seqs-typo": 4}}
    for plan in (None, {}, {"models": [{"model": "other", "translated_flags": {"dtype": "half"}}]}):
        (model,) = inventory.apply_plan([old], plan)
        assert model["flags"] == {
            "distributed-executor-backend": "ray",
            "enable-log-requests": False,
            "max-num-seqs-typo": 4,
            "served-model-name": "tiny",
        }, plan


def test_without_a_plan_a_flag_with_no_equivalent_fails_instead_of_vanishing():
    # --task embed has no equivalent in the pinned vLLM's generate-only serving: preflight refuses it;
    # with preflight skipped, the same words stop the play rather than a unit serving a generator.
    embed = {**TINY, "flags": {"task": "embed"}}
    with pytest.raises(inventory.InventoryError, match=r"model tiny: .*--task.* -- fix: "):
        inventory.apply_plan([embed], None)


def test_a_play_downloads_each_repo_revision_once_whatever_the_hosts_call_it():
    hosts_models = [
        TINY,
        {**TINY, "port": 9000},
        {**TINY, "revision": "v2"},
        {**TINY, "name": "gone", "state": "absent"},
    ]
    assert inventory.unique_revisions(hosts_models) == [
        {"model": "vllm-fleet/tiny-qwen2", "revision": "v1"},
        {"model": "vllm-fleet/tiny-qwen2", "revision": "v2"},
    ]
