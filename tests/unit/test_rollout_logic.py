"""Rollout bookkeeping (plugins/module_utils/vllm_fleet/rollout.py): what a change changed, which
good state a rollback restores, slot rotation, pruning choices and the summary table."""

from __future__ import annotations

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import engine_report, rollout


def record(revision="v1", version="0.32.0", flags=("--max-model-len", "512"), unit="u1", env="e1", repo="o/m"):
    env_dir = f"/opt/vllm-fleet/envs/vllm-{version}-cpu"
    model_dir = f"/var/lib/vllm-fleet/models/{repo}/{revision}"
    return {
        "model": {"name": "tiny", "model": repo, "revision": revision},
        "vllm_version": version,
        "env_dir": env_dir,
        "model_dir": model_dir,
        "argv": [f"{env_dir}/bin/vllm", "serve", model_dir, "--host", "0.0.0.0", "--port", "8000", *flags],
        "unit_sha256": unit,
        "env_sha256": env,
    }


def test_changes_name_version_revision_and_flags():
    before = record()
    assert rollout.changes(before, record(revision="v2", unit="u2")) == ["revision v1 -> v2"]
    assert rollout.changes(before, record(version="0.33.0", unit="u2")) == ["vllm 0.32.0 -> 0.33.0"]
    after = record(flags=("--max-model-len", "256", "--enforce-eager"), unit="u2")
    assert rollout.changes(before, after) == ["flags -[--max-model-len 512] +[--max-model-len 256] +[--enforce-eager]"]
    assert rollout.changes(before, record(repo="o/other", unit="u2")) == ["model o/m@v1 -> o/other@v1"]
    assert rollout.changes(before, record(env="e2")) == ["secrets file (API key)"]
    # A new key beside a new revision is said too (a rotated key must not pass unnoticed).
    assert rollout.changes(before, record(revision="v2", env="e2", unit="u2")) == [
        "revision v1 -> v2",
        "secrets file (API key)",
    ]
    # Neither the model, the flags nor the key: the rest of the unit (e.g. its hardening).
    assert rollout.changes(before, record(unit="u2")) == ["unit file (service settings)"]


def test_changes_of_a_first_deployment():
    assert rollout.changes(None, record()) == ["first good state: vllm 0.32.0, o/m@v1"]


def test_the_same_deployment_ignores_bookkeeping():
    assert rollout.same_deployment(record(), {**record(), "saved_at": "later", "name": "tiny"})
    assert not rollout.same_deployment(record(), record(unit="u2"))
    assert not rollout.same_deployment(None, record())
    assert rollout.same_deployment(None, None)


def test_rotate_keeps_the_good_state_before():
    v1, v2 = record(), record(revision="v2", unit="u2")
    assert rollout.rotate(None, None, v1) == (v1, None, True)
    assert rollout.rotate(v1, None, v2) == (v2, v1, True)
    assert rollout.rotate(v2, v1, {**v2, "saved_at": "x"}) == (v2, v1, False)  # a re-run changes nothing
    assert rollout.rotate(v2, v1, v1) == (v1, v2, True)  # a rollback that passed swaps the two


@pytest.mark.parametrize(
    ("target", "installed", "has_previous", "slot"),
    [
        ("last", "failed-change", True, "current"),  # a failed probe: back to the last good state
        ("last", "current", True, None),  # the failure came before any unit changed
        ("back", "failed-change", True, "current"),  # rollback.yml after a failed change
        ("back", "current", True, "previous"),  # rollback.yml after a good change: one step back
        ("back", "current", False, None),  # nothing earlier is kept
    ],
)
def test_choose_restore(target, installed, has_previous, slot):
    current, previous = record(revision="v2", unit="u2"), record(unit="u1")
    files = {"unit_sha256": "u2", "env_sha256": "e1"} if installed == "current" else {"unit_sha256": "u3"}
    choice = rollout.choose_restore(target, files, current, previous if has_previous else None)
    assert choice.slot == slot, choice.reason


def test_choose_restore_without_any_good_state_restores_nothing():
    choice = rollout.choose_restore("last", {"unit_sha256": "x"}, None, None)
    assert choice.slot is None and "no last good state" in choice.reason
    with pytest.raises(ValueError):
        rollout.choose_restore("sideways", {}, None, None)


def test_prune_keeps_the_newest_and_everything_protected():
    children = [("/e/a", 1.0), ("/e/b", 2.0), ("/e/c", 3.0), ("/e/d", 4.0)]
    remove, kept = rollout.prune_choice(children, keep=2, protect={"/e/a"})
    assert sorted(remove) == ["/e/b"] and sorted(kept) == ["/e/a", "/e/c", "/e/d"]
    assert rollout.prune_choice(children, keep=10, protect=set())[0] == []
    with pytest.raises(ValueError):
        rollout.prune_choice(children, keep=0, protect=set())


def test_rows_from_saves_and_restores():
    saves = [
        {"item": {"key": "tiny"}, "changed": True, "changes": ["revision v1 -> v2"]},
        {"item": {"key": "big"}, "changed": False, "changes": []},
    ]
    rows = rollout.rows_from_saves(saves, {"tiny": 0.25}, "vf1")
    unchecked = {"plan_errors": {}, "plan_beyond": [], "plan_tolerance_pct": None}
    assert rows == [
        {
            "host": "vf1",
            "model": "tiny",
            "result": "updated",
            "changes": ["revision v1 -> v2"],
            "latency_s": 0.25,
            **unchecked,
        },
        {"host": "vf1", "model": "big", "result": "unchanged", "changes": [], "latency_s": None, **unchecked},
    ]
    restores = [
        {"ansible_loop_var": "model", "model": {"name": "tiny"}, "changed": True, "record": record(revision="v2")},
        {"ansible_loop_var": "model_name", "model_name": "big", "changed": False, "reason": "no last good state"},
    ]
    rows = rollout.rows_from_restores(restores, {"tiny": 0.3}, "vf1", "probe: only newlines", answered=True)
    assert rows[0]["result"] == "rolled back" and rows[0]["latency_s"] == 0.3
    assert rows[0]["changes"] == ["back to o/m@v2, vllm 0.32.0", "because: probe: only newlines"]
    assert rows[1]["result"] == "failed" and rows[1]["changes"][0] == "nothing restored: no last good state"
    pending = rollout.rows_from_restores(restores[:1], {}, "vf1", "", answered=False)
    assert pending[0]["result"] == "rolled back, not yet answering" and pending[0]["latency_s"] is None


def test_summary_table_lists_every_host_and_the_ones_not_reached():
    rows = [{"host": "vf1", "model": "tiny", "result": "rolled back", "changes": ["back to o/m@v2"], "latency_s": 0.5}]
    table = rollout.summary_table(rows, ["vf2", "vf3"]).splitlines()
    assert table[0].split() == ["host", "model", "result", "what", "changed", "plan", "vs", "vLLM", "chat", "latency"]
    assert table[1].split()[:4] == ["vf1", "tiny", "rolled", "back"] and table[1].endswith("0.50 s")
    assert [line.split()[0] for line in table[2:]] == ["vf2", "vf3"] and "not reached" in table[2]


def test_summary_table_names_a_host_that_stopped_answering_apart_from_those_never_reached():
    table = rollout.summary_table([], ["vf3"], {"vf2": "vllm_fleet.fleet.vllm_probe : Probe"}).splitlines()
    assert table[1].split()[:3] == ["vf2", "-", "unreachable"]
    assert "stopped answering in 'vllm_fleet.fleet.vllm_probe : Probe'" in table[1] and "full run" in table[1]
    assert table[2].split()[:3] == ["vf3", "-", "not"]


def test_summary_cells_are_one_line_and_bounded():
    long = "probe failed:\n- /v1/completions: the answer is only newlines " + "x" * 300
    rows = [{"host": "vf1", "model": "tiny", "result": "rolled back", "changes": ["back to o/m@v2", long]}]
    line = rollout.summary_table(rows, []).splitlines()[1]
    assert "\n" not in line and line.count("...") == 1 and len(line) < 220


def test_rows_of_a_host_the_fast_path_skipped():
    rows = rollout.rows_converged([{"name": "a"}, {"name": "b", "state": "absent"}], "h1")
    assert rows == [
        {"host": "h1", "model": "a", "result": "unchanged", "changes": [rollout.FAST_PATH_NOTE], "latency_s": None}
    ]
    assert "as the last full run left it" in rollout.summary_table(rows, [])


def test_the_summary_shows_the_plan_against_vllm_and_warns_beyond_the_tolerance():
    # Issue 18: the probe's plan_check per model becomes a column, and a warning line when off.
    rows_in = [
        {"metric": "KV cache tokens", "predicted": 1_048_576, "measured": 1_048_576, "error_pct": 0.0},
        {"metric": "KV cache GiB", "predicted": 1.0, "measured": 1.0, "error_pct": 0.0},
    ]
    good = engine_report.plan_check(rows_in, 5.0)
    off = engine_report.plan_check([dict(rows_in[0], predicted=1_200_000, error_pct=14.4), rows_in[1]], 5.0)
    assert good["beyond"] == [] and off["beyond"] == ["KV cache tokens: plan 1,200,000, vLLM 1,048,576 (+14.4%)"]
    saves = [{"item": {"key": "tiny"}, "changed": True, "changes": ["revision v1 -> v2"]}]
    rows = rollout.rows_from_saves(saves, {"tiny": 0.25}, "vf1", {"tiny": good})
    table = rollout.summary_table(rows, []).splitlines()
    assert "KV tokens +0.0%" in table[1] and len(table) == 2
    rows = rollout.rows_from_saves(saves, {"tiny": 0.25}, "vf1", {"tiny": off})
    table = rollout.summary_table(rows, []).splitlines()
    assert "KV tokens +14.4%" in table[1]
    assert table[2].startswith("WARNING: vf1 tiny: vLLM's start is off the plan beyond 5%: KV cache tokens")
    assert "vllm-fleet calibrate" in table[2]
    assert rollout.summary_table(rows, [], {}).count("WARNING") == 1
