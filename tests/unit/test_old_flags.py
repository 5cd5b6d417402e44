"""The old-flags table against the real flag list of vLLM 0.32.0 (tests/data, from its parser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import old_flags
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import to_argv

KNOWN = set(Path(__file__).resolve().parents[1].joinpath("data", "vllm-0.32.0-serve-flags.txt").read_text().split())


@pytest.mark.parametrize("row", old_flags.OLD_FLAGS, ids=lambda r: f"{r.flag}-{r.action}")
def test_every_old_flag_is_really_gone_in_0_32(row):
    assert f"--{row.flag}" not in KNOWN


@pytest.mark.parametrize("flag", sorted(old_flags.modern_flag_names()))
def test_every_translation_target_exists_in_0_32(flag):
    assert f"--{flag}" in KNOWN


@pytest.mark.parametrize("row", [r for r in old_flags.OLD_FLAGS if r.to], ids=lambda r: r.flag)
def test_translated_argv_uses_only_flags_0_32_knows(row):
    value = (row.values or ("x",))[0] if row.values else True
    flags, _notes = old_flags.translate({row.flag: value})
    assert all(a in KNOWN for a in to_argv(flags) if a.startswith("--"))


def test_old_recipe_flags_translate_or_drop_with_a_note_each():
    flags, notes = old_flags.translate(
        {
            "worker-use-ray": True,
            "engine-use-ray": True,
            "max-paddings": 256,
            "disable-log-requests": True,
            "dtype": "half",
        }
    )
    assert flags == {"distributed-executor-backend": "ray", "enable-log-requests": False, "dtype": "half"}
    assert [n["action"] for n in notes] == ["translate", "drop", "drop", "translate"]
    assert to_argv(flags) == [
        "--distributed-executor-backend",
        "ray",
        "--no-enable-log-requests",
        "--dtype",
        "half",
    ]


def test_device_cuda_is_dropped_but_device_neuron_is_refused():
    _flags, notes = old_flags.translate({"device": "cuda"})
    assert notes[0]["action"] == "drop"
    _flags, notes = old_flags.translate({"device": "neuron"})
    assert notes[0]["action"] == "refuse"


def test_kv_cache_dtype_fp8_e5m2_is_still_accepted_by_0_32():
    flags, notes = old_flags.translate({"kv-cache-dtype": "fp8_e5m2"})
    assert flags == {"kv-cache-dtype": "fp8_e5m2"} and notes == []
    assert "--kv-cache-dtype" in KNOWN
