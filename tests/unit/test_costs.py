"""The suite's cost log (tests/support/costs.py): what each test file paid for."""

from __future__ import annotations

from tests.support import costs


def test_records_are_kept_per_test_file_and_summed(tmp_path, monkeypatch):
    log = tmp_path / "costs.jsonl"
    monkeypatch.setenv(costs.ENV, str(log))
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/integration/test_a.py::test_x (call)")
    costs.record("ansible-playbook")
    costs.record("ansible-playbook")
    costs.record("vllm-host", 3)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/integration/test_b.py::test_y (setup)")
    costs.record("vllm-local")
    costs.record("vllm-host", 0)  # nothing started: nothing recorded
    totals = costs.totals(str(log))
    assert totals["tests/integration/test_a.py"] == {"ansible-playbook": 2, "vllm-host": 3}
    assert totals["tests/integration/test_b.py"] == {"vllm-local": 1}
    table = costs.table(str(log))
    assert table[0].startswith("test file") and len(table) == 3
    assert table[1].split() == ["tests/integration/test_a.py", "2", "0", "0", "0", "3"]


def test_nothing_is_kept_outside_pytest_or_without_a_log(tmp_path, monkeypatch):
    log = tmp_path / "costs.jsonl"
    monkeypatch.setenv(costs.ENV, str(log))
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    costs.record("ansible-playbook")
    monkeypatch.delenv(costs.ENV)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/x.py::t (call)")
    costs.record("ansible-playbook")
    assert not log.exists() and costs.table(str(log)) == []
