"""The converged record: how a re-run of site.yml on an unchanged host skips the roles safely.

A no-op re-run through every role costs about 35 module round trips per host (10-20x an
`ansible -m ping`, docs/benchmarks.md). At the end of a full run that passed, the vllm_rollout
role writes a record on the host: a digest of everything the run was made from (the inventory's
vllm_* / model_weights_* variables, the plan preflight made, and the code of the playbooks, roles
and plugins) and what the run left behind (files with their sha256, mode and owner, directories,
removed paths, units, Debian packages, weights manifests, health URLs). The next run checks that
record in one module call and runs the roles only when something differs: a changed input, or
drift on the host (an edited unit, a stopped service, a deleted weight file, a removed package).

Everything here is pure Python over files the caller names; the systemd, dpkg and HTTP facts are
read by the vllm_converged module and passed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from . import cluster
from .weights import manifest_is_complete, sha256_file

RECORD_VERSION = 1

# What the playbooks are made of, relative to the project root. A change to any of these files
# (a role default, a template, a module) changes the digest, so the next run is a full one.
CODE_PATHS = ("site.yml", "ansible.cfg", "playbooks", "roles", "plugins", "model_configs")
# (and the probe's start records, should vllm_calibration_records_dir point inside the project)
_SKIPPED_PARTS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".vllm-starts")

# Variables that are not inputs of the hosts' state: run-time results (of the preflight play, and what
# the other roles tell the rollout role during a run), and the knobs of the rollout itself (batch sizes,
# the fast path switch). The monitoring role's variables say where the controller or a monitoring
# host keeps scrape targets, nothing a fleet host runs.
NOT_INPUTS_PREFIXES = ("vllm_preflight_", "vllm_monitoring_")
NOT_INPUTS = frozenset(
    {
        "vllm_rollout_fast_path",
        "vllm_rollout_serial",
        "vllm_rollout_max_fail_percentage",
        "vllm_rollout_digest",
        "vllm_rollout_deployed",
        "vllm_rollout_latencies",
        "vllm_rollout_batches",
        # The resolution of each revision (tasks/preflight.yml): the commits it found reach the
        # digest through the models (vllm_service_models names each commit); the rest (when it was
        # resolved last time, the warnings) is not what the host runs.
        "vllm_revisions",
        # Where the controller keeps the probe's start records (calibration data, not host state).
        "vllm_calibration_records_dir",
    }
)


def is_input_name(name: str) -> bool:
    return name not in NOT_INPUTS and not name.startswith(NOT_INPUTS_PREFIXES)


def code_files(root: Path) -> list[Path]:
    files = []
    for rel in CODE_PATHS:
        top = root / rel
        if top.is_file():
            files.append(top)
        elif top.is_dir():
            for path in top.rglob("*"):
                if path.is_file() and not any(p in _SKIPPED_PARTS for p in path.parts) and path.suffix != ".pyc":
                    files.append(path)
    return sorted(files)


def code_digest(root: Path) -> str:
    """sha256 over the relative path and content of every file the playbooks are made of."""
    h = hashlib.sha256()
    for path in code_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


# Variables that name a file on the controller whose content is what the hosts get (a lock of the
# operator's own, outside the collection): its content is an input, not only its path.
FILE_INPUTS = ("vllm_runtime_lock",)


def inputs_digest(variables: dict, code: str) -> str:
    """sha256 of the input variables (names filtered by is_input_name), the content of the files
    FILE_INPUTS name, and the code digest."""
    inputs = {k: v for k, v in variables.items() if is_input_name(k)}
    for name in FILE_INPUTS:
        path = inputs.get(name)
        if isinstance(path, str) and path and os.path.isfile(path):
            inputs[f"{name} content"] = sha256_file(Path(path))
    blob = json.dumps({"vars": inputs, "code": code}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _owner_mode(st: os.stat_result) -> dict:
    return {"mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid}


def describe_file(path: Path) -> dict:
    st = path.stat()
    return {**_owner_mode(st), "sha256": sha256_file(path)}


def describe_dir(path: Path) -> dict:
    return _owner_mode(path.stat())


def make_record(
    digest: str,
    *,
    files: list[str],
    dirs: list[str],
    absent: list[str],
    units: list[str],
    packages: list[str],
    weights: list[dict],
    health_urls: list[str],
) -> dict:
    """The record of a host as a full run left it (every file and directory must exist now)."""
    missing = [p for p in [*files, *dirs] if not os.path.exists(p)]
    if missing:
        raise ValueError(f"cannot record paths that do not exist: {', '.join(missing)}")
    return {
        "version": RECORD_VERSION,
        "digest": digest,
        "files": {p: describe_file(Path(p)) for p in sorted(set(files))},
        "dirs": {p: describe_dir(Path(p)) for p in sorted(set(dirs))},
        "absent": sorted(set(absent)),
        "units": sorted(set(units)),
        "packages": sorted(set(packages)),
        "weights": sorted(
            ({"dir": w["dir"], "repo": w["repo"], "revision": w["revision"]} for w in weights),
            key=lambda w: w["dir"],
        ),
        "health_urls": sorted(set(health_urls)),
    }


def installed_packages(dpkg_status: str) -> set[str]:
    """Names of the packages dpkg's status file says are installed (/var/lib/dpkg/status)."""
    installed = set()
    for stanza in dpkg_status.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _sep, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            installed.add(fields["Package"])
            if "Architecture" in fields:
                installed.add(f"{fields['Package']}:{fields['Architecture']}")
    return installed


def path_differences(record: dict) -> list[str]:
    """What differs on disk from the record: files, directories, removed paths and weights."""
    found = []
    described = [(p, w, describe_file) for p, w in record.get("files", {}).items()]
    described += [(p, w, describe_dir) for p, w in record.get("dirs", {}).items()]
    for path, want, describe in described:
        try:
            have = describe(Path(path))
        except OSError:
            found.append(f"{path} is missing")
            continue
        if have.get("sha256") != want.get("sha256"):
            found.append(f"{path} has changed")
        elif have != want:
            found.append(f"{path} has another mode or owner")
    found += [f"{path} exists again" for path in record.get("absent", []) if os.path.lexists(path)]
    for w in record.get("weights", []):
        if not manifest_is_complete(Path(w["dir"]), w["repo"], w["revision"]):
            found.append(f"the weights in {w['dir']} are not as verified")
    return found


def differences(
    record: dict | None,
    digest: str,
    *,
    installed: set[str],
    unit_states: dict[str, dict],
    health: dict[str, str | None],
) -> list[str]:
    """Why the host is not as the last full run left it; empty when a re-run would change nothing.

    unit_states: systemctl show's ActiveState / UnitFileState / NeedDaemonReload per unit;
    health: per URL, None when it answered 200, else what went wrong.
    """
    if not record:
        return ["no record of a full run on this host"]
    if record.get("version") != RECORD_VERSION:
        return [f"the record is of another format (version {record.get('version')})"]
    if record.get("digest") != digest:
        return ["the inputs changed (inventory variables, the plan, or the playbooks' code)"]
    found = path_differences(record)
    found += [f"Debian package {p} is not installed" for p in record.get("packages", []) if p not in installed]
    for unit in record.get("units", []):
        state = unit_states.get(unit, {})
        if state.get("ActiveState") != "active":
            found.append(f"{unit} is {state.get('ActiveState') or 'unknown'}, not active")
        if state.get("UnitFileState") != "enabled":
            found.append(f"{unit} is {state.get('UnitFileState') or 'unknown'}, not enabled")
        if state.get("NeedDaemonReload") == "yes":
            found.append(f"{unit} changed on disk since systemd loaded it")
    found += [f"{url} did not answer: {problem}" for url, problem in health.items() if problem is not None]
    return found


def deployed_state(
    deployed: dict,
    models: list[dict],
    unit_dir: str,
    env_dir: str,
    state_dir: str,
    bind_address: str,
    inventory_host: str = "",
) -> dict:
    """What a passed full run left on a host, from the vllm_service role's record of each unit
    (vllm_service_deployed: unit_path, env_path, env_dir, model_dir, model) and the host's
    normalized models (the absent ones must stay removed): the arguments of a save."""
    records = [deployed[name] for name in sorted(deployed)]
    if bind_address in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    else:
        host = f"[{bind_address}]" if ":" in bind_address else bind_address
    absent = [m["name"] for m in models if m.get("state") == "absent"]
    return {
        "files": [r["unit_path"] for r in records]
        + [r["env_path"] for r in records]
        + sorted({f"{r['env_dir']}/.vllm-fleet-install.json" for r in records})
        + [f"{state_dir}/{r['model']['name']}/current/unit" for r in records],
        "absent": [f"{unit_dir}/vllm-{n}.service" for n in absent] + [f"{env_dir}/{n}.env" for n in absent],
        "units": [f"vllm-{r['model']['name']}.service" for r in records],
        "weights": [
            {"dir": r["model_dir"], "repo": r["model"]["model"], "revision": r["model"]["revision"]} for r in records
        ],
        # A cluster's worker runs headless, without an API: its head's /health speaks for it.
        "health_urls": [
            f"http://{host}:{r['model']['port']}/health" for r in records if cluster.is_head(r["model"], inventory_host)
        ],
    }
