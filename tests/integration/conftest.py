"""The test hosts' fixtures (tests/hosts): real systemd hosts per test module, and this session's proven
vLLM environment as a seed layer for the hosts whose tests are not about building one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import argv_shapes, layout

from tests.hosts import seed as seeds
from tests.hosts import testhosts
from tests.integration import ansible_run

# CI sets this so that a machine unable to run test hosts fails the run instead
# of skipping the tests that need them.
REQUIRE_HOSTS = os.environ.get("VLLM_FLEET_REQUIRE_HOSTS") == "1"


def _hosts_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, overlay mounts, systemd-nspawn)"
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "ip", "ssh", "zstd") if not shutil.which(tool)]
    if missing:
        return f"test hosts need {', '.join(missing)}: run `make deps`"
    return None


@pytest.fixture(scope="session")
def host_tooling():
    """Skip (or, under CI, fail) when this machine cannot run test hosts."""
    reason = _hosts_unavailable_reason()
    if reason:
        if REQUIRE_HOSTS:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def test_hosts(host_tooling):
    """Two real systemd hosts for a test module, destroyed after it.

    Booting costs ~2 s; module scope frees the memory of what a module ran on them
    (a vLLM server is ~3.3 GB) before the next module starts its own.
    """
    hosts = testhosts.create(2)
    try:
        yield hosts
    finally:
        # VLLM_FLEET_KEEP_HOSTS=1 keeps them for the next run while developing (never in CI).
        if os.environ.get("VLLM_FLEET_KEEP_HOSTS") != "1" or REQUIRE_HOSTS:
            testhosts.destroy([h.name for h in hosts])


# The vllm_runtime role's environment on the local test hosts (inventories/local: the pinned vLLM, cpu).
VLLM_ENV = layout.env_dir(device="cpu")


class EnvSeed:
    """This session's proven vLLM environment as a seed layer (tests/hosts/seed.py), for the test
    hosts whose tests are not about building one: it is copied from the first host a test offers
    after a real run of the vllm_runtime role built and proved it there (test_deploy.py's first
    cold deploy), or, when no test offered one (a file run alone), built by that role on a host
    of its own."""

    BUILDER_INDEX = 10  # vf1-vf4: integration tests and the demo, vf5-vf9 and vf11: molecule

    def __init__(self, dest: Path):
        self.dest = dest
        self._layer: Path | None = None

    def offer(self, host) -> None:
        """Take the environment from this host if there is no seed yet (its record must be there)."""
        if self._layer is None:
            root = testhosts.host_dir(host.name) / "root"
            if not (root / VLLM_ENV.lstrip("/") / ".vllm-fleet-install.json").is_file():
                raise RuntimeError(f"{host.name} has no recorded environment at {VLLM_ENV} to seed from")
            self._layer = seeds.harvest(root, [VLLM_ENV], self.dest)
            # The environment as the role built it, less the command line shapes its parser accepted
            # on that host (module_utils/vllm_fleet/argv_shapes.py): a seeded host's first deployment
            # parses its own line whichever test made the seed (test_rollout.py asserts it).
            (self._layer / VLLM_ENV.lstrip("/") / argv_shapes.FILE_NAME).unlink(missing_ok=True)

    def layer(self) -> Path:
        if self._layer is None:
            self._build()
        return self._layer

    def _build(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="vf-seed-"))
        inventory = work / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        shutil.copy(ansible_run.REPO_ROOT / "inventories/local/group_vars/all.yml", inventory / "group_vars/all.yml")
        hosts = testhosts.create(1, inventory=inventory / "hosts.yml", first=self.BUILDER_INDEX)
        try:
            result = ansible_run.playbook("-i", str(inventory), "tests/integration/playbooks/runtime_only.yml")
            if result.returncode != 0:
                raise RuntimeError(f"building the seed environment failed:\n{result.output[-4000:]}")
            self.offer(hosts[0])
        finally:
            testhosts.destroy([h.name for h in hosts], inventory=inventory / "hosts.yml")
            shutil.rmtree(work, ignore_errors=True)

    def close(self) -> None:
        # A host kept with VLLM_FLEET_KEEP_HOSTS=1 still mounts it: `python -m tests.hosts destroy`
        # removes both, and `make test`'s leftovers check reports a seed left behind.
        if not seeds.remove(self.dest):
            print(f"seed {self.dest} is still mounted by a test host; left for `python -m tests.hosts destroy`")


@pytest.fixture(scope="session")
def env_seed(host_tooling):
    """EnvSeed of this session; removed at its end (after every module's hosts are gone)."""
    seed = EnvSeed(seeds.seeds_dir(testhosts.STATE_DIR) / f"vllm-env-{os.getpid()}")
    try:
        yield seed
    finally:
        seed.close()
