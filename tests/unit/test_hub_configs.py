"""Where model facts come from: shipped configs, the cache, or the hub's small files only."""

from __future__ import annotations

import importlib
import json

import pytest
from vllm_fleet import hub_configs
from vllm_fleet.model_facts import ModelConfigError

# The module, not the function of the same name that modelscope.hub re-exports.
sdk = importlib.import_module("modelscope.hub.snapshot_download")
CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
          "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 512}


def test_shipped_configs_are_found_case_insensitively():
    facts = hub_configs.load_facts("QWEN/qwen1.5-7b-chat-awq")
    assert facts.quant.method == "awq" and facts.source.startswith("shipped config")


def test_a_pinned_revision_is_fetched_once_with_only_the_small_files(tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        (tmp_path / "cache" / "me" / "tiny" / "v1" / "config.json").write_text(json.dumps(CONFIG))
        return kwargs["local_dir"]

    monkeypatch.setattr(sdk, "snapshot_download", fake_snapshot_download)
    for _ in range(2):
        facts = hub_configs.load_facts("me/tiny", "v1", cache_dir=str(tmp_path / "cache"))
    assert facts.hidden_size == 256 and len(calls) == 1
    repo, kwargs = calls[0]
    assert repo == "me/tiny" and kwargs["revision"] == "v1"
    assert set(kwargs["allow_patterns"]) == {"config.json", "quantize_config.json", "quant_config.json",
                                             "model.safetensors.index.json"}


def test_no_fetch_names_the_fix(tmp_path):
    with pytest.raises(ModelConfigError, match="model_configs"):
        hub_configs.load_facts("me/absent", cache_dir=str(tmp_path), fetch=False)
