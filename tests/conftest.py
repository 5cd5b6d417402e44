"""Session hooks and the fixtures every test directory may use (the stand-in hub, the tiny model, the
shared vLLM servers: tests/support/fixtures.py). The test hosts' fixtures are in
tests/integration/conftest.py: the unit tests, which ship with the collection and run under
ansible-test units, need none of tests/hosts."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.support import costs

pytest_plugins = ["tests.support.fixtures"]


def pytest_configure(config):
    """One cost log per session (tests/support/costs.py), inherited by every subprocess."""
    if not os.environ.get(costs.ENV):
        fd, path = tempfile.mkstemp(prefix="vllm-fleet-costs-", suffix=".jsonl")
        os.close(fd)
        os.environ[costs.ENV] = path
        config._vllm_fleet_cost_log = path


SHARED_VLLM = "shared_vllm"


def pytest_collection_modifyitems(session, config, items):
    """The tests that use the shared vLLM servers (tests/support/fixtures.py) run one after the
    other, where the first of them was, each file keeping its own order; the servers stop after
    the last of them, not at the end of the session (each holds ~3.3 GB while the rollout and
    molecule tests run)."""
    users = [item for item in items if SHARED_VLLM in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    rest = [item for item in items if item not in users]
    items[:] = rest[:first] + users + rest[first:]
    config._vllm_fleet_last_shared_vllm_user = users[-1].nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if item.nodeid == getattr(item.config, "_vllm_fleet_last_shared_vllm_user", None):
        shared = getattr(item.config, "_vllm_fleet_shared_vllm", None)
        if shared is not None:
            shared.close()


def pytest_terminal_summary(terminalreporter):
    """Per test file: ansible-playbook runs, molecule scenarios, vLLM starts (docs/test-support.md)."""
    path = os.environ.get(costs.ENV)
    lines = costs.table(path) if path else []
    if lines:
        terminalreporter.section("what each test file paid for")
        for line in lines:
            terminalreporter.write_line(line)
    own = getattr(terminalreporter.config, "_vllm_fleet_cost_log", None)
    if own:
        os.unlink(own)
