"""molecule: one scenario per role (molecule/<role>/), each on its own real systemd test host.

Each runs `molecule test -s <role>`: destroy, syntax, create (a test host vf5-vf8 through
tests/hosts, and the stand-in hub for the roles that need weights), prepare (the roles
before the one under test), converge, idempotence (a second converge changes nothing),
verify (assertions on the host), destroy. See docs/molecule.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import costs

pytestmark = [pytest.mark.hosts, pytest.mark.vllm, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCENARIOS = ["vllm_runtime", "model_weights", "vllm_service", "vllm_probe", "vllm_rollout", "vllm_monitoring"]
# Scenarios whose host boots with the session's proven vLLM environment (their platform says
# `seed: true`): their role is not the one that builds it. vllm_runtime's host stays bare; vllm_rollout's
# prepare makes its environments by hand.
SEEDED = {"model_weights", "vllm_service", "vllm_probe"}
TIMEOUT_S = 1800


def test_every_role_has_a_scenario():
    roles = sorted(p.name for p in (REPO_ROOT / "roles").iterdir() if (p / "tasks/main.yml").exists())
    assert roles == sorted(SCENARIOS)
    for name in SCENARIOS:
        config = yaml.safe_load((REPO_ROOT / "molecule" / name / "molecule.yml").read_text())
        assert bool(config["platforms"][0].get("seed")) == (name in SEEDED), name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(host_tooling, env_seed, scenario):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLECULE_", "VLLM_FLEET_TESTHOST_SEED"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if scenario in SEEDED:
        env["VLLM_FLEET_TESTHOST_SEED"] = str(env_seed.layer())
    started = time.monotonic()
    costs.record("molecule")
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=TIMEOUT_S,
        check=False,
    )
    print(f"molecule test -s {scenario}: rc {proc.returncode} in {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, f"molecule test -s {scenario} failed (rc {proc.returncode}):\n{proc.stdout[-8000:]}"
