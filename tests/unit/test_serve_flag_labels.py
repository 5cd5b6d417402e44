"""serve_flag_labels.LABELS labels every flag of the pinned vLLM, and nothing else (fails on a vLLM bump)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rules, serve_flag_labels
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_flag_labels import (
    LABELS,
    MODELED,
    NO_MEMORY_EFFECT,
    NOT_MODELED,
    label_of,
    unmodeled,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_flag_spec import FLAGS, VERSION

# The flags the planner (planner.py, preflight.py) and the rules read.
EXPECTED_MODELED = {
    "tensor-parallel-size",
    "pipeline-parallel-size",
    "gpu-memory-utilization",
    "max-model-len",
    "max-num-seqs",
    "max-num-batched-tokens",
    "enforce-eager",
    "dtype",
    "kv-cache-dtype",
    "quantization",
    "enable-expert-parallel",
    "cpu-offload-gb",
    "block-size",
    "enable-lora",
    "max-loras",
    "max-lora-rank",
}


def test_every_flag_of_the_pinned_vllm_has_a_label_and_no_label_is_stale():
    new = sorted(set(FLAGS) - set(LABELS))
    removed = sorted(set(LABELS) - set(FLAGS))
    assert not new and not removed, (
        f"vLLM {VERSION}'s flags and serve_flag_labels.LABELS differ; "
        f"label the new flags {new} and drop the removed ones {removed}"
    )


def test_role_owned_flags_are_labelled_no_memory_effect():
    assert {name: LABELS[name][0] for name in rules.ROLE_OWNED_FLAGS} == dict.fromkeys(
        rules.ROLE_OWNED_FLAGS, NO_MEMORY_EFFECT
    )


@pytest.mark.parametrize("name", sorted(LABELS))
def test_each_label_is_a_known_one_with_a_one_sentence_why(name):
    label, why = LABELS[name]
    assert label in (MODELED, NO_MEMORY_EFFECT, NOT_MODELED)
    assert isinstance(why, str) and why.strip() == why and why, f"{name}: empty why"
    assert why.endswith(".") and not re.search(r"\. [A-Z]", why), f"{name}: why is not one sentence: {why!r}"
    assert len(why) <= 120, f"{name}: why is longer than a short sentence"


def test_the_modeled_set_is_what_the_planner_and_rules_read():
    modeled = {name for name, (label, _why) in LABELS.items() if label == MODELED}
    assert modeled == EXPECTED_MODELED, (
        f"modeled but not expected: {sorted(modeled - EXPECTED_MODELED)}; "
        f"expected but not modeled: {sorted(EXPECTED_MODELED - modeled)}"
    )


def test_label_of():
    assert label_of("tensor-parallel-size")[0] == MODELED
    assert label_of("--speculative-config")[0] == NOT_MODELED
    assert label_of("port") == LABELS["port"]
    assert label_of("no-such-flag") is None


def test_unmodeled_lists_set_not_modeled_flags_in_the_dicts_order():
    flags = {
        "speculative-config": {"model": "draft", "num_speculative_tokens": 3},  # not modeled, set
        "tensor-parallel-size": 2,  # modeled
        "enable-sleep-mode": False,  # not modeled, off
        "served-model-name": "a",  # no memory effect
        "kv-cache-memory-bytes": None,  # not modeled, unset
        "data-parallel-size": 2,  # not modeled, set
        "enable-chunked-prefill": False,  # not modeled, on by default: off is the change
        "async-scheduling": True,  # not modeled, on by default: True is vLLM's default
        "num-gpu-blocks-override": 0,  # not modeled: 0 is a value, not "unset"
        "no-such-flag": 1,  # unknown: not labelled, not listed
    }
    assert unmodeled(flags) == [
        "speculative-config",
        "data-parallel-size",
        "enable-chunked-prefill",
        "num-gpu-blocks-override",
    ]
    assert unmodeled({}) == []
    assert unmodeled({"tensor-parallel-size": 2, "port": 9000}) == []


def test_module_is_plain_data():
    # No imports beyond the package: the labels must load on a controller without vLLM.
    source = Path(serve_flag_labels.__file__).read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations"]
