"""The foundation: real systemd hosts that real ansible can converge."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from tests.hosts import seed as seeds
from tests.hosts import testhosts
from tests.integration import ansible_run
from tests.integration.test_archive_stream import make_archive
from tests.integration.test_archive_stream import module as archive_stream

pytestmark = pytest.mark.hosts


def test_hosts_boot_with_systemd_running(test_hosts):
    for host in test_hosts:
        state = testhosts.ssh(host, "systemctl", "is-system-running", check=False).stdout.strip()
        failed = testhosts.ssh(host, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
        assert state == "running", f"{host.name}: systemd is {state}; failed units:\n{failed}"
        assert testhosts.ssh(host, "cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_each_host_has_its_own_address_and_name(test_hosts):
    names = {testhosts.ssh(h, "hostname").stdout.strip() for h in test_hosts}
    assert names == {h.name for h in test_hosts}
    for host in test_hosts:
        addresses = testhosts.ssh(host, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
        assert f" {host.address}/24 " in addresses


def test_a_unit_of_one_name_on_two_hosts_is_two_units(test_hosts):
    """Each host is booted in a cgroup of its own: with one tree for all, a unit's stop waited for the
    processes of the other host's unit of the same name until TimeoutStopSec (the Ray head's restart
    took 65 s in CI), and systemd could not kill the unit's cgroup."""
    first, second = test_hosts[:2]
    unit = "vllm-fleet-twin"
    # A main process that leaves a daemon behind (as `ray start` does): stopped through the cgroup.
    command = (
        f"systemd-run --unit={unit} -p KillMode=mixed -p TimeoutStopSec=30 sh -c '(setsid sleep 600 &); sleep 600'"
    )
    for host in (first, second):
        testhosts.ssh(host, f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; {command}")
    try:
        for host in (first, second):
            cgroup = testhosts.ssh(host, f"systemctl show -p ControlGroup --value {unit}").stdout.strip()
            assert cgroup.endswith(f"/{unit}.service"), (host.name, cgroup)
        assert {str(p) for p in testhosts.host_cgroups(first.name)}.isdisjoint(
            str(p) for p in testhosts.host_cgroups(second.name)
        )
        started = time.monotonic()
        testhosts.ssh(first, f"systemctl stop {unit}")
        took = time.monotonic() - started
        journal = testhosts.ssh(first, f"journalctl -u {unit} --no-pager -o cat").stdout
        assert took < 10, f"the stop took {took:.0f} s:\n{journal}"
        assert "Failed to kill control group" not in journal and "still around" not in journal, journal
        assert testhosts.ssh(first, "pgrep -c -x sleep", check=False).stdout.strip() == "0"
        assert testhosts.ssh(second, f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
        assert testhosts.ssh(second, "pgrep -c -x sleep").stdout.strip() == "2"
    finally:
        testhosts.ssh(second, f"systemctl stop {unit}", check=False)


def test_ansible_ping_over_the_local_inventory(test_hosts):
    result = ansible_run.run("ansible", "-i", "inventories/local", "all", "-m", "ansible.builtin.ping")
    assert result.returncode == 0, result.output
    for host in test_hosts:
        assert f"{host.name} | SUCCESS" in result.output, result.output
    assert result.output.count('"ping": "pong"') == len(test_hosts)


def test_a_unit_installed_by_ansible_is_active_and_a_rerun_changes_nothing(test_hosts):
    first = ansible_run.playbook("-i", "inventories/local", "tests/integration/playbooks/hello_unit.yml")
    assert first.returncode == 0, first.output
    assert all(first.changed()[h.name] > 0 for h in test_hosts), first.output
    for host in test_hosts:
        active = testhosts.ssh(host, "systemctl", "is-active", "vllm-fleet-hello.service", check=False)
        assert active.stdout.strip() == "active"
    second = ansible_run.playbook("-i", "inventories/local", "tests/integration/playbooks/hello_unit.yml")
    assert second.returncode == 0, second.output
    assert second.changed() == {h.name: 0 for h in test_hosts}, second.output


def test_create_is_idempotent_and_destroy_leaves_nothing(test_hosts, tmp_path):
    # A third host of its own, so the session's hosts are not disturbed.
    inventory = tmp_path / "hosts.yml"
    (host,) = testhosts.create(1, inventory, first=9)
    try:
        again = testhosts.create(1, inventory, first=9)
        assert again[0].pid == host.pid, "a second create must keep the running host"
        assert "vf9" in inventory.read_text()
        # Another caller's hosts (the module's vf1, vf2) stay out of this inventory, and vf9 out of theirs.
        assert "vf1" not in inventory.read_text()
        assert "vf9" not in testhosts.DEFAULT_INVENTORY.read_text()
    finally:
        testhosts.destroy(["vf9"], inventory)
    assert not [line for line in testhosts.leftovers() if "vf9" in line]
    testhosts.destroy(["vf9"], inventory)  # destroying twice is fine
    assert "vf9" not in inventory.read_text()


def test_ten_creates_and_destroys_in_a_row_each_boot_and_leave_nothing(test_hosts, tmp_path):
    # Issue 15: a fresh machine's first boot was failed as "systemd-nspawn exited" while it ran.
    inventory = tmp_path / "hosts.yml"
    for attempt in range(10):
        (host,) = testhosts.create(1, inventory, first=9)
        try:
            state = testhosts.ssh(host, "systemctl", "is-system-running", check=False).stdout.strip()
            assert state in ("running", "degraded"), f"attempt {attempt}: {state}"
        finally:
            testhosts.destroy(["vf9"], inventory)
        assert not [line for line in testhosts.leftovers() if "vf9" in line], f"attempt {attempt}"


def _unreachable_host() -> testhosts.Host:
    return testhosts.Host("vf99", 99, "10.77.99.2", "10.77.99.1", 0)


def test_a_supervisor_that_exits_is_reported_with_its_status():
    supervisor = subprocess.Popen(["bash", "-c", "exit 3"])
    supervisor.wait()
    with pytest.raises(RuntimeError, match="systemd-nspawn exited with status 3"):
        testhosts._wait_ready(_unreachable_host(), supervisor, timeout=5)


def test_a_live_supervisor_is_never_called_exited():
    # Whatever /proc shows, a child that runs is waited for until the timeout, not failed as gone.
    supervisor = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeError, match="not ready after 2 s"):
            testhosts._wait_ready(_unreachable_host(), supervisor, timeout=2)
    finally:
        supervisor.kill()
        supervisor.wait()


def test_a_seeded_host_boots_with_the_seeds_files_and_never_changes_them(test_hosts, tmp_path):
    # tests/hosts/seed.py: files copied out of one host (with their parents' modes) are the lower
    # layer of another; what the new host writes stays in its own layer.
    source = test_hosts[0]
    testhosts.ssh(
        source, "mkdir -p -m 0750 /opt/seed-test/d && echo kept > /opt/seed-test/d/f && chmod 0600 /opt/seed-test/d/f"
    )
    dest = seeds.seeds_dir(testhosts.STATE_DIR) / f"test-{tmp_path.name}"
    # The file alone: its parent directories are made again with their modes (cp -a --parents).
    layer = seeds.harvest(testhosts.host_dir(source.name) / "root", ["/opt/seed-test/d/f"], dest)
    inventory = tmp_path / "hosts.yml"
    try:
        (host,) = testhosts.create(1, inventory, first=9, seed=layer)
        assert host.seed == str(layer)
        seen = testhosts.ssh(host, "stat -c '%a %U' /opt/seed-test/d /opt/seed-test/d/f; cat /opt/seed-test/d/f").stdout
        assert seen.split("\n")[:3] == ["750 root", "600 root", "kept"]
        testhosts.ssh(host, "echo changed > /opt/seed-test/d/f && rm -r /opt/seed-test/d")
        assert (layer / "opt/seed-test/d/f").read_text() == "kept\n"
        assert not seeds.remove(dest), "a seed a running host mounts must stay"
        assert f"seed layer {dest}" in testhosts.leftovers()
    finally:
        testhosts.destroy(["vf9"], inventory)
        removed = seeds.remove(dest)
    assert removed and not dest.exists()
    # (The session's own seed, tests/integration/conftest.py env_seed, may be there: only this one must be gone.)
    assert not [line for line in testhosts.leftovers() if str(dest) in line]


def test_archive_stream_pipes_an_archive_through_ssh_into_the_host_once(test_hosts, tmp_path):
    # plugins/action/archive_stream.py: how the vllm_runtime role ships its wheelhouse.
    archive = make_archive(tmp_path)
    host = test_hosts[0]
    dest = "/opt/archive-stream-test"
    testhosts.ssh(host, f"rm -rf {dest}")
    args = {"src": str(archive), "dest": dest, "marker": ".done"}
    flags = ("-i", "inventories/local")

    rc, out = archive_stream(host.name, args, *flags, "--check")
    assert rc == 0 and out["changed"], out
    assert testhosts.ssh(host, f"test -e {dest}", check=False).returncode != 0  # nothing sent

    rc, out = archive_stream(host.name, args, *flags)
    assert rc == 0 and out["changed"] and out["streamed"] is True, out
    listing = testhosts.ssh(host, f"cd {dest} && stat -c '%n %a %U' a.whl sub/run sub/private .done").stdout
    assert listing.split("\n")[:4] == ["a.whl 644 root", "sub/run 755 root", "sub/private 600 root", ".done 644 root"]
    assert (
        testhosts.ssh(host, f"sha256sum < {dest}/a.whl").stdout.split()[0]
        == hashlib.sha256(b"wheel" * 1000).hexdigest()
    )

    rc, out = archive_stream(host.name, args, *flags)
    assert rc == 0 and not out["changed"], out

    # A stream tar cannot unpack (dest is a file): the failure says so, and no marker is made.
    testhosts.ssh(host, "rm -rf /opt/archive-stream-file && touch /opt/archive-stream-file")
    rc, out = archive_stream(host.name, {**args, "dest": "/opt/archive-stream-file/sub"}, *flags)
    assert rc != 0 and "streaming" in out["msg"] and "/opt/archive-stream-file/sub" in out["msg"], out
    testhosts.ssh(host, f"rm -rf {dest} /opt/archive-stream-file")
