#!/usr/bin/python
"""Ansible module: keep and restore the last good unit + secrets file of a vLLM model on a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_last_good
short_description: Keep and restore the last good systemd unit and secrets file of a vLLM model
version_added: "0.1.0"
description:
  - Per host and model, two good states are kept under O(state_dir)/<name>/ - C(current), the
    last deployment that passed its probe, and C(previous), the good one before it. Each is a copy
    of the unit file, the secrets (environment) file and a C(record.json) naming the vLLM
    environment and the weights revision the unit runs, which are kept on the host (not deleted on
    upgrade), so a restore needs no download.
  - C(action=save) keeps the installed unit and secrets file as C(current) (the old C(current)
    becomes C(previous)); saving the same deployment again changes nothing.
  - C(action=restore) copies a good state's unit and secrets file back in place. It does not
    restart anything; the caller reloads systemd and restarts the unit when C(changed).
  - C(action=read) returns the kept records.
  - The secrets file is copied on the host and never read into the module's result; the state
    directory is C(0700) root and its files C(0600).
  - Supports check mode (reports what it would save or restore).
options:
  action:
    description: What to do.
    type: str
    choices: [save, restore, read]
    required: true
  name:
    description: The model's name (the unit is C(vllm-<name>.service)). Omit with C(action=read) for all.
    type: str
  record:
    description:
      - With C(action=save), what the unit runs (C(model), C(vllm_version), C(env_dir),
        C(model_dir), C(argv)); the module adds the files' checksums and the time.
    type: dict
  target:
    description:
      - With C(action=restore), which good state. C(last) puts back the last good state (after a
        failed probe). C(back) goes one step back - the last good state when the installed unit is
        not it, else the previous good state.
    type: str
    choices: [last, back]
    default: last
  unit_path:
    description: The installed unit file.
    type: path
  env_path:
    description: The installed secrets (environment) file.
    type: path
  state_dir:
    description:
      - Where the good states are kept.
      - Omitted means the collection's place for them (lookup P(vllm_fleet.fleet.layout#lookup), C(last_good_dir)).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Reports what it would save (RV(changes)) or which good state it would restore (RV(slot));
        copies and writes nothing.
"""

EXAMPLES = r"""
- name: Keep what passed its probe as the last good state
  vllm_last_good:
    action: save
    name: qwen-7b
    unit_path: "{{ vllm_service_unit_dir }}/vllm-qwen-7b.service"
    env_path: "{{ vllm_service_env_dir }}/qwen-7b.env"
    record:
      model: "{{ model }}"
      vllm_version: "{{ vllm_runtime_version }}"
      env_dir: "{{ vllm_runtime_env }}"
      model_dir: "{{ model_weights_root }}/qwen/Qwen1.5-7B-Chat-AWQ/master"
      argv: ["{{ vllm_runtime_bin }}/vllm", serve, ...]

- name: Put the last good unit back after a failed probe
  vllm_last_good:
    action: restore
    target: last
    name: qwen-7b
    unit_path: "{{ vllm_service_unit_dir }}/vllm-qwen-7b.service"
    env_path: "{{ vllm_service_env_dir }}/qwen-7b.env"
  register: restored
"""

RETURN = r"""
changes:
  description: With C(save), what this deployment changed against the last good state, in words.
  returned: action=save
  type: list
  elements: str
  sample: ["revision v1 -> v2"]
slot:
  description: With C(restore), the good state put back (C(current) or C(previous)), or null.
  returned: action=restore
  type: str
  sample: current
reason:
  description: Why that slot (or nothing) was restored.
  returned: action=restore
  type: str
  sample: the installed unit is not the last good state
record:
  description: The record saved, or the one restored.
  returned: action=save, action=restore
  type: dict
  sample:
    name: qwen-7b
    model: {name: qwen-7b, model: qwen/Qwen2.5-7B-Instruct, revision: master, port: 8000}
    vllm_version: "0.31.1"
    env_dir: /srv/vllm/envs/vllm-0.31.1-cuda
    model_dir: /srv/models/qwen/Qwen2.5-7B-Instruct/master
    unit_sha256: 3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d
    saved_at: "2025-06-02T14:03:11+0000"
records:
  description: With C(read), per model name, its C(current) and C(previous) records.
  returned: action=read
  type: dict
  sample:
    qwen-7b:
      current: {name: qwen-7b, vllm_version: "0.31.1", env_dir: /srv/vllm/envs/vllm-0.31.1-cuda}
      previous: null
in_use:
  description: Environment and weights directories that kept records point at (never prune these).
  returned: always
  type: list
  elements: str
  sample: [/srv/models/qwen/Qwen2.5-7B-Instruct/master, /srv/vllm/envs/vllm-0.31.1-cuda]
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.rollout import (
    SLOTS,
    changes,
    choose_restore,
    env_problem,
    rotate,
)


def sha256_of(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_slot(model_dir: Path, slot: str) -> dict | None:
    try:
        return json.loads((model_dir / slot / "record.json").read_text())
    except (OSError, ValueError):
        return None


def read_all(state_dir: Path) -> dict:
    out = {}
    if state_dir.is_dir():
        for child in sorted(state_dir.iterdir()):
            if child.is_dir():
                out[child.name] = {slot: read_slot(child, slot) for slot in SLOTS}
    return out


def in_use(records: dict) -> list[str]:
    paths = set()
    for slots in records.values():
        for record in slots.values():
            if record:
                paths.update(p for p in (record.get("env_dir"), record.get("model_dir")) if p)
    return sorted(paths)


def copy_private(src: Path, dest: Path) -> None:
    """Copy through a temporary file in the destination directory, then rename: a reader never
    sees half a unit, and a secrets file is never readable by others, not even for a moment."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_slot(model_dir: Path, slot: str, unit: Path, env: Path, record: dict) -> None:
    target = model_dir / slot
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    copy_private(unit, target / "unit")
    if env.is_file():
        copy_private(env, target / "env")
    else:
        (target / "env").unlink(missing_ok=True)
    (target / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.chmod(target / "record.json", 0o600)


def move_slot(model_dir: Path, src: str, dest: str) -> None:
    shutil.rmtree(model_dir / dest, ignore_errors=True)
    if (model_dir / src).is_dir():
        os.replace(model_dir / src, model_dir / dest)


def save(module: AnsibleModule, state_dir: Path, name: str, unit: Path, env: Path) -> dict:
    if not unit.is_file():
        if module.check_mode:  # --check on a bare host: the unit would have been written first
            return {"changed": True, "changes": ["first deployment"], "record": None}
        module.fail_json(msg=f"{name}: there is no unit at {unit} to keep as the last good state")
    record = dict(module.params["record"] or {})
    missing = [k for k in ("model", "vllm_version", "env_dir", "model_dir", "argv") if k not in record]
    if missing:
        module.fail_json(msg=f"{name}: record lacks {', '.join(missing)}")
    record |= {"name": name, "unit_sha256": sha256_of(unit), "env_sha256": sha256_of(env)}
    model_dir = state_dir / name
    current, previous = read_slot(model_dir, "current"), read_slot(model_dir, "previous")
    new_current, _previous, changed = rotate(current, previous, record)
    result = {"changed": changed, "changes": changes(current, record) if changed else [], "record": new_current}
    if changed and not module.check_mode:
        record["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        staging = model_dir / ".saving"
        shutil.rmtree(staging, ignore_errors=True)
        write_slot(model_dir, ".saving", unit, env, record)
        move_slot(model_dir, "current", "previous")
        os.replace(staging, model_dir / "current")
        result["record"] = record
    return result


def restore(module: AnsibleModule, state_dir: Path, name: str, unit: Path, env: Path) -> dict:
    model_dir = state_dir / name
    current, previous = read_slot(model_dir, "current"), read_slot(model_dir, "previous")
    installed = {"unit_sha256": sha256_of(unit), "env_sha256": sha256_of(env)}
    choice = choose_restore(module.params["target"], installed, current, previous)
    result = {"changed": False, "slot": choice.slot, "reason": choice.reason, "record": None}
    if choice.slot is None:
        return result
    record = current if choice.slot == "current" else previous
    # Everything the good unit runs must still be on the host: a restore never downloads.
    gone = [p for p in (record.get("env_dir"), record.get("model_dir")) if p and not Path(p).is_dir()]
    if gone:
        module.fail_json(
            msg=f"{name}: the {choice.slot} good state needs {', '.join(gone)}, which is no longer on the host "
            "(pruned or removed): deploy it again with site.yml",
            slot=choice.slot,
        )
    # The environment must be the one the state was proven with, not only a directory of its name.
    problem = env_problem(record["env_dir"], record["vllm_version"]) if record.get("env_dir") else None
    if problem:
        module.fail_json(
            msg=f"{name}: the {choice.slot} good state cannot run: {problem}; deploy it again with site.yml",
            slot=choice.slot,
        )
    result |= {"changed": True, "record": record}
    if not module.check_mode:
        src = model_dir / choice.slot
        copy_private(src / "unit", unit)
        os.chmod(unit, 0o644)  # systemd units are world-readable; only the secrets file is private
        if (src / "env").is_file():
            copy_private(src / "env", env)
        else:
            env.unlink(missing_ok=True)
    # A restored `previous` becomes the last good state once it passes its probe (the next save).
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["save", "restore", "read"]},
            "name": {"type": "str"},
            "record": {"type": "dict"},
            "target": {"type": "str", "default": "last", "choices": ["last", "back"]},
            "unit_path": {"type": "path"},
            "env_path": {"type": "path"},
            "state_dir": {"type": "path"},
        },
        required_if=[
            ("action", "save", ("name", "record", "unit_path", "env_path")),
            ("action", "restore", ("name", "unit_path", "env_path")),
        ],
        supports_check_mode=True,
    )
    p = module.params
    state_dir = Path(p["state_dir"] or layout.LAST_GOOD_DIR)
    if p["action"] == "read":
        everything = read_all(state_dir)
        records = {k: v for k, v in everything.items() if k == p["name"]} if p["name"] else everything
        module.exit_json(changed=False, records=records, in_use=in_use(everything))
    action = save if p["action"] == "save" else restore
    result = action(module, state_dir, p["name"], Path(p["unit_path"]), Path(p["env_path"]))
    module.exit_json(**result, in_use=in_use(read_all(state_dir)))


if __name__ == "__main__":
    main()
