#!/usr/bin/python
"""Download a pinned revision of a ModelScope model with the real ModelScope SDK."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: modelscope_download
short_description: Download a pinned model revision from ModelScope, verified by sha256
version_added: "0.1.0"
description:
  - Lists the files of I(model) at I(revision) on the hub, works out which are missing or changed
    in I(local_dir), checks the disk has room, and downloads them with the ModelScope SDK's
    C(snapshot_download), which checks each file's sha256 and resumes interrupted downloads.
  - A manifest in I(local_dir) records what was verified, so a re-run downloads nothing and, when
    every file is as recorded, does not contact the hub at all (re-runs and rollbacks work offline).
  - One download into a directory at a time; an earlier one still running there (left by a run that
    lost the host) is stopped first, and said (RV(stopped_earlier_download)).
  - Run it with the Python of the environment that has the SDK, by setting the task variable
    C(ansible_python_interpreter) to that environment's C(bin/python).
options:
  model:
    description: Repository id, C(owner/name).
    type: str
    required: true
  revision:
    description: Branch, tag or commit to pin.
    type: str
    default: master
  local_dir:
    description: Where the files land (one directory per revision is recommended).
    type: path
    required: true
  endpoint:
    description:
      - Hub URL (the SDK's own endpoint setting).
      - Default the SDK's (C(MODELSCOPE_ENDPOINT), else the public hub).
    type: str
  token:
    description: Access token for private models.
    type: str
  allow_patterns:
    description: Shell globs of files to download (all when empty).
    type: list
    elements: str
    default: []
  ignore_patterns:
    description: Shell globs of files to skip.
    type: list
    elements: str
    default: []
  verify:
    description:
      - C(fast) trusts files whose size and mtime match the manifest; C(full) re-hashes every file.
    type: str
    choices: [fast, full]
    default: fast
  reserve_gib:
    description: Disk space that must stay free after the download.
    type: float
    default: 1.0
  cache_dir:
    description:
      - SDK cache and state directory (C(MODELSCOPE_CACHE)); keeps the SDK out of the service user's home.
    type: path
  file_mode:
    description: Mode of the downloaded files, so a service user can read them.
    type: str
    default: "0644"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Lists the revision on the hub (unless the manifest already proves the files) and reports
        what it would download in RV(downloaded) and RV(bytes_downloaded); downloads and writes nothing.
requirements:
  - The ModelScope SDK (C(modelscope), which brings C(modelscope-hub)), importable by the Python
    that runs the module (set C(ansible_python_interpreter) to that environment's C(bin/python)).
"""

EXAMPLES = r"""
- name: Ensure the tiny model is downloaded
  modelscope_download:
    model: vllm-fleet/tiny-qwen2
    revision: v1
    local_dir: "{{ model_weights_root }}/vllm-fleet/tiny-qwen2/v1"
    endpoint: http://10.77.1.1:8765
  vars:
    ansible_python_interpreter: "{{ vllm_runtime_bin }}/python"
"""

RETURN = r"""
downloaded:
  description: Files fetched (or, in check mode, that would be fetched).
  type: list
  elements: str
  returned: always
  sample: [config.json, model-00001-of-00004.safetensors, model-00002-of-00004.safetensors]
bytes_downloaded:
  description: Their total size in bytes.
  type: int
  returned: always
  sample: 7963365376
files:
  description: Number of files of the revision.
  type: int
  returned: always
  sample: 14
hub_contacted:
  description: Whether the hub was asked at all (false when the manifest proved the files locally).
  type: bool
  returned: always
  sample: true
local_dir:
  description: The directory that holds the revision.
  type: str
  returned: always
  sample: /srv/models/qwen/Qwen2.5-7B-Instruct/master
stopped_earlier_download:
  description:
    - The pid of an earlier download into the same directory that was still running and was stopped
      first (a run that lost this host mid-download leaves its module running, and the SDK's file locks
      would hold this download back for up to 600 s); with a warning.
  type: int
  returned: when one was stopped
  sample: 4242
"""

import fnmatch
import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.weights import (
    RemoteFile,
    is_model_file,
    manifest_is_complete,
    plan_download,
    read_manifest,
    space_problem,
    take_over_download,
    write_manifest,
)


def _selected(path: str, allow: list[str], ignore: list[str]) -> bool:
    if allow and not any(fnmatch.fnmatch(path, pattern) for pattern in allow):
        return False
    return not any(fnmatch.fnmatch(path, pattern) for pattern in ignore)


def _list_remote(params: dict) -> list[RemoteFile]:
    from modelscope_hub import HubApi

    api = HubApi(endpoint=params["endpoint"], token=params["token"])
    infos = api.list_repo_files(params["model"], "model", revision=params["revision"], recursive=True)
    return [
        RemoteFile(info.path, int(info.size), info.sha256)
        for info in infos
        if not info.is_dir
        and is_model_file(info.path)
        and _selected(info.path, params["allow_patterns"], params["ignore_patterns"])
    ]


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _set_modes(local_dir: Path, files: list[RemoteFile], file_mode: int) -> None:
    for remote in files:
        target = local_dir / remote.path
        if (target.stat().st_mode & 0o7777) != file_mode:
            target.chmod(file_mode)
        for parent in target.relative_to(local_dir).parents:
            (local_dir / parent).chmod(0o755)


def run(module: AnsibleModule) -> dict:
    params = module.params
    local_dir = Path(params["local_dir"])
    result = {"downloaded": [], "bytes_downloaded": 0, "local_dir": str(local_dir), "changed": False}
    if params["cache_dir"]:
        os.environ["MODELSCOPE_CACHE"] = params["cache_dir"]
        os.environ.setdefault("MODELSCOPE_HOME", params["cache_dir"])

    if params["verify"] == "fast" and manifest_is_complete(local_dir, params["model"], params["revision"]):
        files = len(read_manifest(local_dir)["files"])
        return {**result, "files": files, "hub_contacted": False}

    # The SDK is imported only when the hub must be asked (a manifest that proves the files needs none):
    # its absence is named here, the way ansible-core's modules name a missing library.
    missing = [name for name in ("modelscope", "modelscope_hub") if importlib.util.find_spec(name) is None]
    if missing:
        module.fail_json(msg=missing_required_lib(" and ".join(missing)), interpreter=sys.executable)
    try:
        remote = _list_remote(params)
    except Exception as exc:  # the SDK raises many kinds; all mean the same to an operator
        module.fail_json(
            msg=f"cannot list {params['model']}@{params['revision']} on the hub: {exc}",
            hint="check model_weights_endpoint, the repo id and the revision",
        )
    if not remote:
        module.fail_json(msg=f"{params['model']}@{params['revision']} lists no files matching the patterns")
    plan = plan_download(local_dir, remote, params["verify"])
    result.update(
        files=len(remote),
        hub_contacted=True,
        downloaded=[f.path for f in plan.needed],
        bytes_downloaded=plan.bytes_needed,
        changed=bool(plan.needed),
    )
    reserve = int(params["reserve_gib"] * (1 << 30))
    problem = space_problem(plan.bytes_needed, _free_bytes(local_dir), reserve)
    if problem:
        module.fail_json(msg=f"{params['model']}@{params['revision']}: {problem}", **result)
    if module.check_mode:
        return result

    if plan.needed:
        from modelscope import snapshot_download

        local_dir.mkdir(parents=True, exist_ok=True)
        # Held until this process ends (the lock goes with it); the file stays: unlinking a lock file
        # races with a process about to lock it.
        stopped, _held = take_over_download(download_pid_file(params, local_dir))
        if stopped:
            result["stopped_earlier_download"] = stopped
            module.warn(f"stopped an earlier download into {local_dir} (pid {stopped}), left by a lost run")
        try:
            snapshot_download(
                params["model"],
                revision=params["revision"],
                local_dir=str(local_dir),
                allow_patterns=[f.path for f in plan.needed],
                endpoint=params["endpoint"],
                token=params["token"],
            )
        except Exception as exc:
            failure = f"download of {params['model']}@{params['revision']} failed: {exc}"
            module.fail_json(msg=failure, **result)
    _set_modes(local_dir, remote, int(params["file_mode"], 8))
    write_manifest(local_dir, params["model"], params["revision"], remote)
    return result


def download_pid_file(params: dict, local_dir: Path) -> Path:
    """Where the process downloading into local_dir says so: beside the SDK's own lock files (the
    cache directory), not in the revision directory that vLLM reads."""
    digest = hashlib.sha256(str(local_dir).encode()).hexdigest()[:16]
    return Path(params["cache_dir"] or local_dir.parent) / "vllm-fleet-downloads" / f"{digest}.pid"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "model": {"type": "str", "required": True},
            "revision": {"type": "str", "default": "master"},
            "local_dir": {"type": "path", "required": True},
            "endpoint": {"type": "str"},
            "token": {"type": "str", "no_log": True},
            "allow_patterns": {"type": "list", "elements": "str", "default": []},
            "ignore_patterns": {"type": "list", "elements": "str", "default": []},
            "verify": {"type": "str", "choices": ["fast", "full"], "default": "fast"},
            "reserve_gib": {"type": "float", "default": 1.0},
            "cache_dir": {"type": "path"},
            "file_mode": {"type": "str", "default": "0644"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
