"""Where a model's facts come from before any host changes (the controller's edge).

In order: a local directory (or a path to its config.json); the project's shipped cache of
published configs, ``model_configs/<owner>/<name>/`` (used for the default revision); a local
cache of configs fetched earlier, ``<cache>/<owner>/<name>/<revision>/``; the hub, through the
real ModelScope SDK, fetching only the small files (config.json, the quant configs and the
safetensors index), never weights. The endpoint is the SDK's: ``MODELSCOPE_ENDPOINT``.
"""

from __future__ import annotations

import os
from dataclasses import replace

from .model_facts import QUANT_CONFIG_FILES, SAFETENSORS_INDEX, ModelConfigError, ModelFacts, load_model_dir

SMALL_FILES = ("config.json", *QUANT_CONFIG_FILES, SAFETENSORS_INDEX)
DEFAULT_REVISIONS = (None, "", "master", "main")
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def default_model_configs_dir() -> str:
    return os.environ.get("VLLM_FLEET_MODEL_CONFIGS", os.path.join(REPO_ROOT, "model_configs"))


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.environ.get("VLLM_FLEET_CONFIG_CACHE", os.path.join(base, "vllm-fleet", "model_configs"))


def _find_case_insensitive(root: str, repo_id: str) -> str | None:
    """ModelScope ids are case-insensitive ("qwen/Qwen1.5-7B-Chat"); so is this lookup."""
    path = root
    for part in repo_id.split("/"):
        if not os.path.isdir(path):
            return None
        match = next((e for e in sorted(os.listdir(path)) if e.lower() == part.lower()), None)
        if match is None:
            return None
        path = os.path.join(path, match)
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def shipped_config_dir(repo_id: str, model_configs_dir: str | None = None) -> str | None:
    return _find_case_insensitive(model_configs_dir or default_model_configs_dir(), repo_id)


def fetch_small_files(repo_id: str, revision: str, dest: str, *, endpoint: str | None = None,
                      token: str | None = None) -> str:
    """Download only the small config files of ``repo_id`` at ``revision`` into ``dest``."""
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as e:  # the controller venv has it (requirements.in)
        raise ModelConfigError(f"cannot fetch {repo_id}: the modelscope SDK is not installed") from e
    kwargs = {"revision": revision or "master", "local_dir": dest, "allow_patterns": list(SMALL_FILES)}
    if endpoint:
        kwargs["endpoint"] = endpoint
    if token:
        kwargs["token"] = token
    os.makedirs(dest, exist_ok=True)
    try:
        snapshot_download(repo_id, **kwargs)
    except Exception as e:
        raise ModelConfigError(f"cannot fetch the config of {repo_id}@{revision} from the hub: {e}") from e
    if not os.path.isfile(os.path.join(dest, "config.json")):
        raise ModelConfigError(f"{repo_id}@{revision} on the hub has no config.json")
    return dest


def load_facts(model: str, revision: str | None = None, *, model_configs_dir: str | None = None,
               cache_dir: str | None = None, fetch: bool = True, endpoint: str | None = None,
               token: str | None = None) -> ModelFacts:
    """ModelFacts for a local path or a repo id (owner/name) at a revision."""
    if os.path.exists(model):
        return load_model_dir(model)
    if revision in DEFAULT_REVISIONS:
        shipped = shipped_config_dir(model, model_configs_dir)
        if shipped:
            facts = load_model_dir(shipped, name=model)
            return _with_source(facts, f"shipped config ({os.path.relpath(shipped, REPO_ROOT)})")
    rev = revision or "master"
    cached = os.path.join(cache_dir or default_cache_dir(), *model.split("/"), rev)
    if not os.path.isfile(os.path.join(cached, "config.json")):
        if not fetch:
            raise ModelConfigError(
                f"no config for {model}@{rev}: not a local path, not in model_configs/, not cached; "
                "allow fetching from the hub or add it to model_configs/")
        fetch_small_files(model, rev, cached, endpoint=endpoint, token=token)
    return _with_source(load_model_dir(cached, name=model), f"hub config cached in {cached}")


def _with_source(facts: ModelFacts, source: str) -> ModelFacts:
    return replace(facts, source=source)
