"""Issue 15 point 2: a revision is resolved to the hub's commit, once, and the commit is what
preflight judges and every host serves; a branch floats only when the operator says so, and a
branch that moved is said so. Against the stand-in hub through the real ModelScope SDK."""

from __future__ import annotations

import json
import shutil

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import (
    hub_configs,
    inventory,
    preflight,
    revisions,
    rollout,
)
from modelscope.hub.snapshot_download import snapshot_download
from modelscope_hub._legacy_api import LegacyClient

from tests.support.hub import commit_id, publish

TINY = "vllm-fleet/tiny-qwen2"


@pytest.fixture
def hub(modelscope_env, tiny_model_dir):
    publish(modelscope_env.root, f"{TINY}@master", tiny_model_dir)
    publish(modelscope_env.root, f"{TINY}@v1", tiny_model_dir)
    return modelscope_env


def move_master(hub, source_dir, tmp_path, max_len: int) -> str:
    """Publish master again with another config (a shorter context): the branch moves."""
    changed = tmp_path / f"tiny-{max_len}"
    shutil.copytree(source_dir, changed)
    config = json.loads((changed / "config.json").read_text())
    config["max_position_embeddings"] = max_len
    (changed / "config.json").write_text(json.dumps(config))
    publish(hub.root, f"{TINY}@master", changed)
    return hub.commit(TINY, "master")


# --- the stand-in hub speaks commits as the real one does -------------------------------------


def test_the_hub_lists_the_commit_in_every_entry_and_serves_a_commit_after_its_branch_moved(
    hub, tiny_model_dir, tmp_path
):
    first = hub.commit(TINY, "master")
    assert revisions.is_commit(first) and first == commit_id(hub.root / TINY / "master")
    from modelscope_hub import HubApi

    entries = HubApi(endpoint=hub.url).legacy.list_repo_files(TINY, "model", revision="master", recursive=True)
    assert {e["Revision"] for e in entries} == {first}
    second = move_master(hub, tiny_model_dir, tmp_path, 1024)
    assert second != first
    # The old commit's bytes are still there, as on a real hub: a host pinned to it can download.
    old = snapshot_download(TINY, revision=first, local_dir=str(tmp_path / "old"))
    assert json.loads((tmp_path / "old/config.json").read_text())["max_position_embeddings"] == 2048, old


# --- resolution -------------------------------------------------------------------------------


def test_branches_and_tags_resolve_to_commits_and_a_commit_needs_no_hub(hub):
    master, tag = hub.commit(TINY, "master"), hub.commit(TINY, "v1")
    hub.clear_log()
    found = revisions.resolve(
        [{"model": TINY, "revision": "master"}, {"model": TINY, "revision": "v1"}, {"model": TINY, "revision": tag}],
        endpoint=hub.url,
    )
    assert [(r.kind, r.commit) for r in found] == [("branch", master), ("tag", tag), ("commit", tag)]
    assert not any(r.revision == tag for r in hub.requests), "a commit id is not asked"


def test_a_name_the_hub_lacks_is_missing_and_an_unreachable_hub_is_asked_once(hub):
    (missing,) = revisions.resolve([{"model": TINY, "revision": "v9"}], endpoint=hub.url)
    assert missing.kind == "missing" and missing.error == f"the hub has no branch or tag v9 of {TINY}"
    closed = "http://127.0.0.1:1"
    # The SDK's own client, retrying once (the module sets MODELSCOPE_API_MAX_RETRIES before the
    # SDK is imported; in this process it already is), counting what it is asked.
    client = _Counting(LegacyClient(None, closed, max_retries=1))
    found = revisions.resolve(
        [{"model": TINY, "revision": "master"}, {"model": "qwen/Qwen2.5-7B-Instruct", "revision": "master"}],
        endpoint=closed,
        client=client,
    )
    assert [r.kind for r in found] == ["unknown", "unknown"]
    assert found[1].error.startswith(f"cannot reach {closed}"), found[1].error
    assert client.calls == 1, "the second model is not asked of a hub that did not answer the first"


class _Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def list_revisions_detail(self, *args, **kwargs):
        self.calls += 1
        return self.inner.list_revisions_detail(*args, **kwargs)

    def list_repo_files(self, *args, **kwargs):
        self.calls += 1
        return self.inner.list_repo_files(*args, **kwargs)


def test_a_branch_that_moved_is_shown_old_to_new_and_the_record_keeps_the_new_commit(hub, tiny_model_dir, tmp_path):
    record_path = tmp_path / "inventory" / ".vllm-revisions.json"
    first = revisions.resolve([{"model": TINY, "revision": "master"}], endpoint=hub.url)
    revisions.write_record(str(record_path), revisions.updated_record({}, first))
    again = revisions.with_previous(
        revisions.resolve([{"model": TINY, "revision": "master"}], endpoint=hub.url),
        revisions.read_record(str(record_path)),
    )
    assert not again[0].moved, "the same commit: nothing to say"
    second = move_master(hub, tiny_model_dir, tmp_path, 1024)
    moved = revisions.with_previous(
        revisions.resolve([{"model": TINY, "revision": "master"}], endpoint=hub.url),
        revisions.read_record(str(record_path)),
    )
    assert moved[0].moved and revisions.moved_line(moved[0]) == f"master: {first[0].commit[:12]} -> {second[:12]}"
    updated = revisions.updated_record(revisions.read_record(str(record_path)), moved)
    assert updated[f"{TINY}@master"]["commit"] == second


# --- preflight judges the commit, and refuses a branch unless told ------------------------------


def _host(hub, tmp_path, revision, max_len, **host_vars):
    model = {"name": "tiny", "model": TINY, "revision": revision, "port": 8000, "flags": {"max-model-len": max_len}}
    resolved = revisions.as_dicts(revisions.resolve([{"model": TINY, "revision": revision}], endpoint=hub.url))

    def facts_for(item):
        return hub_configs.load_facts(
            item["model"], item["revision"], cache_dir=str(tmp_path / "cache"), endpoint=hub.url
        )

    return preflight.check_host(
        {"vllm_device": "cpu", "vllm_models": [model], "vllm_revisions": resolved, **host_vars}, facts_for=facts_for
    )


def test_preflight_judges_the_config_of_the_commit_it_resolved(hub, tiny_model_dir, tmp_path):
    pinned = hub.commit(TINY, "master")
    move_master(hub, tiny_model_dir, tmp_path, 1024)
    # The old commit allows 2048 tokens, the new master only 1024: each is judged on its own config.
    old = _host(hub, tmp_path, pinned, 2048)
    assert old["verdict"] == "ok", old
    assert old["models"][0]["commit"] == pinned
    new = _host(hub, tmp_path, "master", 2048, vllm_allow_floating_revisions=True)
    assert [e["rule"] for e in new["models"][0]["errors"]] == ["max-model-len-supported"], new


def test_a_branch_is_refused_with_its_commit_unless_floating_revisions_are_allowed(hub, tmp_path):
    commit = hub.commit(TINY, "master")
    refused = _host(hub, tmp_path, "master", 512)
    assert refused["verdict"] == "refused"
    (hit,) = refused["errors"]
    assert hit["rule"] == "revision-pinned" and f"is a branch (now commit {commit[:12]})" in hit["message"]
    assert f"revision: {commit}" in hit["fix"] and "vllm_allow_floating_revisions: true" in hit["fix"]
    assert _host(hub, tmp_path, "master", 512, vllm_allow_floating_revisions=True)["verdict"] == "ok"
    assert _host(hub, tmp_path, "v1", 512)["verdict"] == "ok", "a tag names a release: resolved and allowed"
    assert _host(hub, tmp_path, commit, 512)["verdict"] == "ok"


# --- everything after preflight carries the commit ----------------------------------------------


def test_pinned_models_carry_the_commit_and_the_name_they_were_written_with():
    commit = "9b1d07e6c2aa5f3e8d1c0b4a7e6f5d4c3b2a1908"
    items = [
        {"name": "tiny", "model": TINY, "revision": "master", "port": 8000},
        {"name": "b", "model": "o/b", "port": 8001},
    ]
    resolved = [{"model": TINY, "revision": "master", "kind": "branch", "commit": commit}]
    tiny, other = inventory.normalize_models(inventory.pin_models(items, resolved))
    assert (tiny["revision"], tiny["revision_name"]) == (commit, "master")
    assert (other["revision"], other["revision_name"]) == ("master", "master"), "unresolved: as written"


def test_the_summary_says_a_branch_moved_from_one_commit_to_the_other():
    a, b = "3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43", "9b1d07e6c2aa5f3e8d1c0b4a7e6f5d4c3b2a1908"
    before = {"vllm_version": "0.32.0", "model": {"model": TINY, "revision": a, "revision_name": "master"}}
    after = {"vllm_version": "0.32.0", "model": {"model": TINY, "revision": b, "revision_name": "master"}}
    assert rollout.changes(before, after) == [f"master: {a[:12]} -> {b[:12]}"]
    tagged = {"vllm_version": "0.32.0", "model": {"model": TINY, "revision": a, "revision_name": "v2"}}
    assert rollout.changes(after, tagged) == [f"revision master ({b[:12]}) -> v2 ({a[:12]})"]
    assert rollout.changes(None, after) == [f"first good state: vllm 0.32.0, {TINY}@master ({b[:12]})"]
