"""Where model facts come from: shipped configs, the cache, or the hub's small files only.

The hub cases run the real ModelScope SDK against the stand-in hub (tests/support/hub.py) over
loopback only (the ``modelscope_env`` fixture): what the hub's request log shows is what the SDK
really asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import modelscope_hub.config
import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import hub_configs
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import ModelConfigError

from tests.support.hub import publish

ROOT = Path(__file__).resolve().parents[2]
UNPADDED_14B_GPTQ = ROOT / "tests/data/configs/Qwen1.5-14B-Chat-GPTQ-Int4-unpadded/config.json"
REPO = "qwen/Qwen1.5-14B-Chat-GPTQ-Int4"
REVISION = "v1"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
SHARD_BYTES = 4 * 1024 * 1024  # "big" next to the configs; enough to show in the request log
TOTAL_SIZE = 9_669_089_280  # the index's metadata.total_size: the weight bytes preflight reads


@pytest.fixture
def published_14b(hub_root, tmp_path):
    """The 14B GPTQ release at v1 as an old upload lays it out: config.json without its
    quantization_config, the quant config beside it, the safetensors index, two weight shards and
    a tokenizer (files a config fetch must leave on the hub)."""
    src = tmp_path / "src"
    src.mkdir()
    config = json.loads(UNPADDED_14B_GPTQ.read_text())
    quant = config.pop("quantization_config")
    (src / "config.json").write_text(json.dumps(config))
    (src / "quantize_config.json").write_text(
        json.dumps({k: quant[k] for k in ("bits", "group_size", "desc_act", "sym", "damp_percent")})
    )
    index = {"metadata": {"total_size": TOTAL_SIZE}, "weight_map": {"lm_head.weight": SHARDS[1]}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    for shard in SHARDS:
        (src / shard).write_bytes(b"\0" * SHARD_BYTES)
    (src / "tokenizer.json").write_text("{}")
    return publish(hub_root, f"{REPO}@{REVISION}", src)


def test_shipped_configs_are_found_case_insensitively():
    facts = hub_configs.load_facts("QWEN/qwen1.5-7b-chat-awq")
    assert facts.quant.method == "awq" and facts.source.startswith("shipped config")


def test_a_pinned_revision_is_fetched_once_with_only_the_small_files(modelscope_env, published_14b, tmp_path):
    hub = modelscope_env
    cache = tmp_path / "cache"
    facts = hub_configs.load_facts(REPO, REVISION, cache_dir=str(cache), endpoint=hub.url)

    # The facts are the hub's: the shapes from config.json, the method from the separate quant
    # config, the weight bytes from the index (no shard was fetched to read headers from).
    assert (facts.intermediate_size, facts.hidden_size) == (13696, 5120)
    assert (facts.quant.method, facts.quant.bits, facts.quant.group_size) == ("gptq", 4, 128)
    assert facts.weight_bytes == TOTAL_SIZE and facts.weight_bytes_source == "safetensors index total_size"
    assert facts.source.startswith("hub config cached in")

    # The SDK asked for the small files only, all at the pinned revision; no weight moved.
    assert set(hub_configs.SMALL_FILES) == {
        "config.json",
        "quantize_config.json",
        "quant_config.json",
        "model.safetensors.index.json",
    }
    fetched = sorted(r.file_path for r in hub.content_requests())
    assert fetched == ["config.json", "model.safetensors.index.json", "quantize_config.json"]
    assert {r.revision for r in hub.requests if r.revision} == {REVISION}
    for shard in (*SHARDS, "tokenizer.json"):
        assert hub.content_requests(shard) == []
    assert hub.content_bytes_sent() < SHARD_BYTES

    # Cached where preflight looks next time, and nothing else.
    cached = cache / "qwen" / "Qwen1.5-14B-Chat-GPTQ-Int4" / REVISION
    assert {"config.json", "quantize_config.json", "model.safetensors.index.json"} <= {p.name for p in cached.iterdir()}
    assert not [p for p in cached.rglob("*") if p.name in SHARDS or p.name == "tokenizer.json"]

    # A second call is answered from the cache: not one request reaches the hub.
    hub.clear_log()
    again = hub_configs.load_facts(REPO, REVISION, cache_dir=str(cache), endpoint=hub.url)
    assert again == facts
    assert hub.requests == []


def test_the_endpoint_passed_wins_over_the_environment(modelscope_env, published_14b, tmp_path, monkeypatch):
    """The SDK reads MODELSCOPE_ENDPOINT once per process; an explicit endpoint must not depend on
    it. Port 9 on loopback (discard) is refused here, so a fetch that used the environment fails."""
    hub = modelscope_env
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    facts = hub_configs.load_facts(REPO, REVISION, cache_dir=str(tmp_path / "cache"), endpoint=hub.url)
    assert facts.quant.group_size == 128
    assert hub.content_requests("config.json")


def test_an_unknown_repo_is_a_clear_error_naming_the_fix(modelscope_env, published_14b, tmp_path):
    hub = modelscope_env
    cache = tmp_path / "cache"
    with pytest.raises(ModelConfigError) as raised:
        hub_configs.load_facts("qwen/Qwen1.5-14B-Chat-GPTQ-Int5", REVISION, cache_dir=str(cache), endpoint=hub.url)
    message = str(raised.value)
    assert "qwen/Qwen1.5-14B-Chat-GPTQ-Int5@v1" in message
    assert "does not exist" in message  # the hub's own words, passed on
    assert "model_configs/" in message and "revision" in message  # the fix
    assert hub.content_requests() == []
    # A failed fetch leaves no cache entry that a later run would mistake for the model.
    assert not (cache / "qwen" / "Qwen1.5-14B-Chat-GPTQ-Int5").exists()


def test_an_unknown_revision_is_a_clear_error_naming_the_fix(modelscope_env, published_14b, tmp_path):
    with pytest.raises(ModelConfigError, match=r"@v9.*has no revision v9.*model_configs/"):
        hub_configs.load_facts(REPO, "v9", cache_dir=str(tmp_path / "cache"), endpoint=modelscope_env.url)


def test_no_fetch_names_the_fix(tmp_path):
    with pytest.raises(ModelConfigError, match="model_configs"):
        hub_configs.load_facts("me/absent", cache_dir=str(tmp_path), fetch=False)
