"""The real vllm_last_good and vllm_prune modules, run by the real `ansible` CLI on this machine
(files in a temporary directory; no hosts, no vLLM): keep, rotate, restore, refuse a restore whose
environment is gone, check mode, never print the secrets file, prune only what is ours and unused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.integration.ansible_run import module_json, run

SECRET = "VLLM_API_KEY=not-for-your-eyes-" + os.urandom(6).hex()


def module(name: str, args: dict, *flags: str) -> tuple[int, dict, str]:
    result = run("ansible", "localhost", "-m", f"vllm_fleet.fleet.{name}", "-a", json.dumps(args), *flags, timeout=120)
    assert SECRET not in result.output, "the secrets file leaked into ansible's output"
    return result.returncode, module_json(result.output), result.output


class Host:
    """A unit, a secrets file, an environment and weights directory, as a host has them."""

    def __init__(self, root: Path):
        self.root = root
        self.unit = root / "vllm-tiny.service"
        self.env = root / "tiny.env"
        self.state = root / "last-good"
        self.env.write_text(SECRET + "\n")

    def deploy(self, revision: str) -> dict:
        env_dir, model_dir = self.root / "envs" / "vllm-0.32.0-cpu", self.root / "models" / revision
        env_dir.mkdir(parents=True, exist_ok=True)
        (env_dir / ".vllm-fleet-install.json").write_text(json.dumps({"version": "0.32.0"}))
        model_dir.mkdir(parents=True, exist_ok=True)
        argv = [f"{env_dir}/bin/vllm", "serve", str(model_dir), "--host", "0.0.0.0", "--port", "8000"]
        self.unit.write_text(f"[Service]\nExecStart={' '.join(argv)}\n")
        return {
            "model": {"name": "tiny", "model": "o/tiny", "revision": revision},
            "vllm_version": "0.32.0",
            "env_dir": str(env_dir),
            "model_dir": str(model_dir),
            "argv": argv,
        }

    def args(self, action: str, **more) -> dict:
        return {
            "action": action,
            "name": "tiny",
            "unit_path": str(self.unit),
            "env_path": str(self.env),
            "state_dir": str(self.state),
            **more,
        }


def test_save_rotate_restore_and_refuse(tmp_path):
    host = Host(tmp_path)
    v1 = host.deploy("v1")
    rc, out, _ = module("vllm_last_good", host.args("save", record=v1), "--check")
    assert rc == 0 and out["changed"] and not host.state.exists()  # check mode writes nothing
    rc, out, _ = module("vllm_last_good", host.args("save", record=v1))
    assert rc == 0 and out["changed"] and out["changes"] == ["first good state: vllm 0.32.0, o/tiny@v1"]
    assert oct((host.state / "tiny" / "current" / "env").stat().st_mode & 0o777) == "0o600"
    assert oct(host.state.stat().st_mode & 0o777) == "0o700"
    rc, out, _ = module("vllm_last_good", host.args("save", record=v1))
    assert rc == 0 and not out["changed"]  # a re-run changes nothing

    v2 = host.deploy("v2")
    rc, out, _ = module("vllm_last_good", host.args("save", record=v2))
    assert out["changed"] and out["changes"] == ["revision v1 -> v2"]
    assert sorted(out["in_use"]) == sorted({v1["env_dir"], v1["model_dir"], v2["model_dir"]})

    # A failed change v3: "last" puts v2 back, byte for byte.
    host.deploy("v3")
    host.env.write_text("VLLM_API_KEY=changed\n")
    rc, out, _ = module("vllm_last_good", host.args("restore", target="last"), "--check")
    assert out["changed"] and out["slot"] == "current" and "v3" in host.unit.read_text()  # check: untouched
    rc, out, _ = module("vllm_last_good", host.args("restore", target="last"))
    assert rc == 0 and out["slot"] == "current" and out["record"]["model"]["revision"] == "v2"
    assert "models/v2 " in host.unit.read_text() and host.env.read_text() == SECRET + "\n"
    assert oct(host.unit.stat().st_mode & 0o777) == "0o644" and oct(host.env.stat().st_mode & 0o777) == "0o600"
    rc, out, _ = module("vllm_last_good", host.args("restore", target="last"))
    assert not out["changed"] and "already the last good state" in out["reason"]

    # rollback.yml's "back": one step back to v1 ...
    rc, out, _ = module("vllm_last_good", host.args("restore", target="back"))
    assert out["slot"] == "previous" and "models/v1 " in host.unit.read_text()
    # ... unless what v1 needs is gone: then nothing changes, and the message says why.
    host.deploy("v2")
    module("vllm_last_good", host.args("restore", target="last"))  # v2 again
    (tmp_path / "models" / "v1").rmdir()
    rc, out, _ = module("vllm_last_good", host.args("restore", target="back"))
    assert rc != 0 and "no longer on the host" in out["msg"] and "models/v2 " in host.unit.read_text()
    # ... or when its environment is a directory of the right name that holds something else (issue
    # 15): an unfinished build without its record, or another vLLM release built into it.
    (tmp_path / "models" / "v1").mkdir()
    record = tmp_path / "envs" / "vllm-0.32.0-cpu" / ".vllm-fleet-install.json"
    record.write_text(json.dumps({"version": "0.31.0"}))
    rc, out, _ = module("vllm_last_good", host.args("restore", target="back"))
    assert rc != 0 and "holds vLLM 0.31.0, the good state ran 0.32.0" in out["msg"], out
    record.unlink()
    rc, out, _ = module("vllm_last_good", host.args("restore", target="back"))
    assert rc != 0 and "has no .vllm-fleet-install.json" in out["msg"] and "models/v2 " in host.unit.read_text()
    record.write_text(json.dumps({"version": "0.32.0"}))

    rc, out, _ = module("vllm_last_good", {"action": "read", "state_dir": str(host.state)})
    assert set(out["records"]["tiny"]) == {"current", "previous"}


def test_prune_keeps_the_newest_what_is_in_use_and_what_is_not_ours(tmp_path):
    envs = tmp_path / "envs"
    for i, name in enumerate(["vllm-0.30.0-cpu", "vllm-0.31.0-cpu", "vllm-0.32.0-cpu", "vllm-0.33.0-cpu"]):
        (envs / name).mkdir(parents=True)
        marker = envs / name / ".vllm-fleet-install.json"
        marker.write_text("{}")
        os.utime(marker, (time.time() - 1000 + i, time.time() - 1000 + i))
    (envs / "someone-elses").mkdir()
    args = {
        "path": str(envs),
        "keep": 2,
        "marker": ".vllm-fleet-install.json",
        "protect": [str(envs / "vllm-0.30.0-cpu")],
    }
    rc, out, _ = module("vllm_prune", args, "--check")
    assert rc == 0 and out["changed"] and out["removed"] == [str(envs / "vllm-0.31.0-cpu")]
    assert (envs / "vllm-0.31.0-cpu").is_dir()  # check mode removes nothing
    rc, out, _ = module("vllm_prune", args)
    assert rc == 0 and out["removed"] == [str(envs / "vllm-0.31.0-cpu")]
    assert sorted(p.name for p in envs.iterdir()) == [
        "someone-elses",
        "vllm-0.30.0-cpu",
        "vllm-0.32.0-cpu",
        "vllm-0.33.0-cpu",
    ]
    rc, out, _ = module("vllm_prune", args)
    assert rc == 0 and not out["changed"]
    rc, out, _ = module("vllm_prune", {**args, "keep": 0})
    assert rc != 0 and "at least 1" in out["msg"]
