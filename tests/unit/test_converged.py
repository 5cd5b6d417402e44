"""The fast path's record and checks (plugins/module_utils/vllm_fleet/converged.py), on real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import converged
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.weights import RemoteFile, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTIVE = {"ActiveState": "active", "UnitFileState": "enabled", "NeedDaemonReload": "no"}


@pytest.fixture
def host(tmp_path):
    """A host's files as a full run leaves them: unit, secrets file, install record, weights."""
    unit = tmp_path / "etc/vllm-tiny.service"
    env = tmp_path / "etc/vllm-fleet/tiny.env"
    weights = tmp_path / "models/tiny/v1"
    for d in (unit.parent, env.parent, weights):
        d.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Service]\nExecStart=vllm serve\n")
    env.write_text("VLLM_API_KEY=secret\n")
    env.chmod(0o600)
    env.parent.chmod(0o700)
    (weights / "model.safetensors").write_bytes(b"w" * 1000)
    write_manifest(weights, "org/tiny", "v1", [RemoteFile("model.safetensors", 1000, "ab" * 32)])
    record = converged.make_record(
        "d1",
        files=[str(unit), str(env)],
        dirs=[str(env.parent)],
        absent=[str(tmp_path / "etc/vllm-old.service")],
        units=["vllm-tiny.service"],
        packages=["libnuma1"],
        weights=[{"dir": str(weights), "repo": "org/tiny", "revision": "v1"}],
        health_urls=["http://127.0.0.1:8000/health"],
    )
    return {"root": tmp_path, "unit": unit, "env": env, "weights": weights, "record": record}


def reasons(record, digest="d1", installed=None, units=None, health=None):
    return converged.differences(
        record,
        digest,
        installed={"libnuma1"} if installed is None else installed,
        unit_states={"vllm-tiny.service": ACTIVE} if units is None else units,
        health={"http://127.0.0.1:8000/health": None} if health is None else health,
    )


def test_a_host_as_the_record_says_is_converged(host):
    assert reasons(host["record"]) == []
    assert host["record"]["files"][str(host["env"])]["mode"] == "0600"


def test_no_record_or_another_format_or_digest_is_not_converged(host):
    assert reasons(None) == ["no record of a full run on this host"]
    assert "another format" in reasons({**host["record"], "version": 0})[0]
    assert reasons(host["record"], digest="d2") == [
        "the inputs changed (inventory variables, the plan, or the playbooks' code)"
    ]


def test_drift_on_disk_is_named(host):
    host["unit"].write_text("[Service]\nExecStart=vllm serve --edited\n")
    host["env"].chmod(0o644)
    host["env"].parent.chmod(0o755)
    (host["root"] / "etc/vllm-old.service").write_text("")
    found = reasons(host["record"])
    assert f"{host['unit']} has changed" in found
    assert f"{host['env']} has another mode or owner" in found
    assert f"{host['env'].parent} has another mode or owner" in found
    assert f"{host['root'] / 'etc/vllm-old.service'} exists again" in found
    host["unit"].unlink()
    assert f"{host['unit']} is missing" in reasons(host["record"])


def test_weights_that_no_longer_match_their_manifest_are_named(host):
    shard = host["weights"] / "model.safetensors"
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert reasons(host["record"]) == [f"the weights in {host['weights']} are not as verified"]
    shutil.rmtree(host["weights"])
    assert reasons(host["record"]) == [f"the weights in {host['weights']} are not as verified"]


def test_units_packages_and_health_are_named(host):
    found = reasons(
        host["record"],
        installed=set(),
        units={"vllm-tiny.service": {"ActiveState": "failed", "UnitFileState": "disabled", "NeedDaemonReload": "yes"}},
        health={"http://127.0.0.1:8000/health": "Connection refused"},
    )
    assert found == [
        "Debian package libnuma1 is not installed",
        "vllm-tiny.service is failed, not active",
        "vllm-tiny.service is disabled, not enabled",
        "vllm-tiny.service changed on disk since systemd loaded it",
        "http://127.0.0.1:8000/health did not answer: Connection refused",
    ]
    assert "vllm-tiny.service is unknown, not active" in reasons(host["record"], units={})


def test_a_record_of_missing_paths_is_refused(tmp_path):
    with pytest.raises(ValueError, match="do not exist"):
        converged.make_record(
            "d", files=[str(tmp_path / "nope")], dirs=[], absent=[], units=[], packages=[], weights=[], health_urls=[]
        )


def test_the_same_state_makes_the_same_record(host):
    again = converged.make_record(
        "d1",
        files=[str(host["env"]), str(host["unit"])],
        dirs=[str(host["env"].parent)],
        absent=[str(host["root"] / "etc/vllm-old.service")],
        units=["vllm-tiny.service"],
        packages=["libnuma1"],
        weights=[{"dir": str(host["weights"]), "repo": "org/tiny", "revision": "v1"}],
        health_urls=["http://127.0.0.1:8000/health"],
    )
    assert again == host["record"]


def test_dpkg_status_installed_packages():
    status = (
        "Package: libnuma1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.0\n\n"
        "Package: python3-venv\nStatus: deinstall ok config-files\nArchitecture: amd64\n\n"
        "Package: gcc\nStatus: install ok installed\nDescription: x\n more: y\n"
    )
    assert converged.installed_packages(status) == {"libnuma1", "libnuma1:amd64", "gcc"}


def test_inputs_digest_follows_inputs_and_code_not_run_results(tmp_path):
    code = converged.code_digest(REPO_ROOT)
    base = {"vllm_models": [{"name": "tiny", "port": 8000}], "model_weights_verify": "fast"}
    digest = converged.inputs_digest(base, code)
    assert converged.inputs_digest(dict(reversed(list(base.items()))), code) == digest
    # Results of the preflight play and the rollout's own knobs are not inputs of the hosts' state.
    noise = {
        "vllm_preflight_result": {"plan": {"t": 1.5}},
        "vllm_rollout_serial": ["100%"],
        "vllm_rollout_fast_path": False,
        # The resolution's bookkeeping (the record's previous commit appears from the second run
        # on): the commits reach the digest through the pinned models.
        "vllm_revisions": {"resolved": [{"model": "o/m", "revision": "v1", "previous_at": "2026-12-03 10:00 UTC"}]},
    }
    assert converged.inputs_digest({**base, **noise}, code) == digest
    assert converged.inputs_digest({**base, "vllm_models": [{"name": "tiny", "port": 8001}]}, code) != digest
    assert converged.inputs_digest(base, "other code") != digest
    # A lock of the operator's own (issue 19): the same path with other content is another input.
    lock = tmp_path / "my-lock.txt"
    lock.write_text("idna==3.20 --hash=sha256:" + "a" * 64 + "\n")
    with_lock = converged.inputs_digest({**base, "vllm_runtime_lock": str(lock)}, code)
    lock.write_text("idna==3.21 --hash=sha256:" + "b" * 64 + "\n")
    assert converged.inputs_digest({**base, "vllm_runtime_lock": str(lock)}, code) != with_lock


def test_code_digest_covers_roles_and_plugins_not_caches(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "roles", root / "roles")
    (root / "site.yml").write_text("---\n")
    first = converged.code_digest(root)
    (root / "roles/__pycache__").mkdir()
    (root / "roles/__pycache__/x.pyc").write_bytes(b"\0")
    assert converged.code_digest(root) == first
    defaults = root / "roles/vllm_service/defaults/main.yml"
    defaults.write_text(defaults.read_text() + "\n# edited\n")
    assert converged.code_digest(root) != first


def test_deployed_state_names_what_the_run_left():
    deployed = {
        "tiny": {
            "model": {"name": "tiny", "model": "org/tiny", "revision": "v1", "port": 8000},
            "env_dir": "/opt/vllm-fleet/envs/e1",
            "model_dir": "/m/org/tiny/v1",
            "unit_path": "/etc/systemd/system/vllm-tiny.service",
            "env_path": "/etc/vllm-fleet/tiny.env",
        }
    }
    models = [{"name": "tiny", "state": "present"}, {"name": "old", "state": "absent"}]
    state = converged.deployed_state(deployed, models, "/etc/systemd/system", "/etc/vllm-fleet", "/s", "0.0.0.0")
    assert state == {
        "files": [
            "/etc/systemd/system/vllm-tiny.service",
            "/etc/vllm-fleet/tiny.env",
            "/opt/vllm-fleet/envs/e1/.vllm-fleet-install.json",
            "/s/tiny/current/unit",
        ],
        "absent": ["/etc/systemd/system/vllm-old.service", "/etc/vllm-fleet/old.env"],
        "units": ["vllm-tiny.service"],
        "weights": [{"dir": "/m/org/tiny/v1", "repo": "org/tiny", "revision": "v1"}],
        "health_urls": ["http://127.0.0.1:8000/health"],
    }
    bound = converged.deployed_state(deployed, models, "/u", "/e", "/s", "fd00::2")
    assert bound["health_urls"] == ["http://[fd00::2]:8000/health"]
