"""`vllm serve` argv <-> flags dict, spelled as vLLM 0.32 spells them."""

from __future__ import annotations

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import (
    ServeArgsError,
    human_readable_int,
    normalize,
    parse_argv,
    to_argv,
)


@pytest.mark.parametrize(
    "argv",
    [["--tensor-parallel-size", "2"], ["-tp", "2"], ["--tensor-parallel-size=2"], ["--tensor_parallel_size", "2"]],
)
def test_tensor_parallel_size_in_every_spelling(argv):
    assert parse_argv(argv) == ({"tensor-parallel-size": 2}, [])


@pytest.mark.parametrize(
    ("text", "value"), [("14k", 14000), ("14K", 14336), ("25.6k", 25600), ("2048", 2048), ("auto", -1)]
)
def test_max_model_len_accepts_vllm_suffixes(text, value):
    assert human_readable_int(text) == value
    assert parse_argv(["--max-model-len", text])[0] == {"max-model-len": value}


def test_binary_suffix_with_decimals_is_refused_like_vllm():
    with pytest.raises(ServeArgsError):
        human_readable_int("1.5K")


def test_booleans_and_no_forms():
    flags, _positional = parse_argv(["--enforce-eager", "--no-enable-prefix-caching", "--disable-log-stats"])
    assert flags == {"enforce-eager": True, "enable-prefix-caching": False, "disable-log-stats": True}


def test_model_positional_and_list_flag():
    flags, pos = parse_argv(["/models/q", "--served-model-name", "a", "b", "--port", "9000"])
    assert pos == ["/models/q"] and flags == {"served-model-name": ["a", "b"], "port": 9000}


def test_unknown_old_flags_are_kept_for_translation():
    flags, _positional = parse_argv(["--worker-use-ray", "--max-paddings", "256"])
    assert flags == {"worker-use-ray": True, "max-paddings": 256}


def test_bad_choice_is_refused():
    with pytest.raises(ServeArgsError, match="dtype"):
        parse_argv(["--dtype", "bf16"])


def test_argv_true_bare_false_no_form_or_omitted_lists_and_dicts():
    argv = to_argv(
        {
            "enforce-eager": True,
            "enable-prefix-caching": False,
            "disable-log-stats": False,
            "served-model-name": ["a", "b"],
            "middleware": ["m1", "m2"],
            "max-model-len": 2048,
            "hf-overrides": {"rope_scaling": {"factor": 2}},
            "seed": None,
        }
    )
    assert argv == [
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--served-model-name",
        "a",
        "b",
        "--middleware",
        "m1",
        "--middleware",
        "m2",
        "--max-model-len",
        "2048",
        "--hf-overrides",
        '{"rope_scaling":{"factor":2}}',
    ]


def test_roundtrip_argv_flags_argv():
    argv = [
        "--dtype",
        "half",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.95",
        "--max-model-len",
        "14000",
        "--enforce-eager",
        "--no-enable-prefix-caching",
    ]
    assert to_argv(parse_argv(argv)[0]) == argv


def test_inventory_flags_are_normalized():
    assert normalize({"tp": 2, "max_model_len": "14K", "--enforce-eager": True}) == {
        "tensor-parallel-size": 2,
        "max-model-len": 14336,
        "enforce-eager": True,
    }
