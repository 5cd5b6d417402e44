"""Where a model's facts come from before any host changes (the controller's edge).

In order: a local directory (or a path to its config.json); the project's shipped cache of
published configs, ``model_configs/<owner>/<name>/`` (used for the default revision); a local
cache of configs fetched earlier, ``<cache>/<owner>/<name>/<revision>/``; the hub, through the
real ModelScope SDK, fetching only the small files (config.json, the quant configs and the
safetensors index), never weights. The endpoint is the one passed (``endpoint=``), else the
SDK's own (``MODELSCOPE_ENDPOINT``, which the SDK reads once per process).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import replace

from . import layout
from .model_facts import QUANT_CONFIG_FILES, SAFETENSORS_INDEX, ModelConfigError, ModelFacts, load_model_dir

SMALL_FILES = ("config.json", *QUANT_CONFIG_FILES, SAFETENSORS_INDEX)
DEFAULT_REVISION = "master"  # the hub's default branch
DEFAULT_REVISIONS = (None, "", DEFAULT_REVISION, "main")


# A hub repo id: owner/name, each of the characters ModelScope allows in names (letters, digits,
# "-", "_", "."), neither starting with "." (so no "..": a path, not an id).
REPO_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*/[A-Za-z0-9_-][A-Za-z0-9._-]*")


class ModelIdError(ModelConfigError):
    """A model argument that is neither an existing path nor a valid hub repo id."""


def looks_local(model: str) -> bool:
    """A model named as a filesystem path (absolute, ./, ../, ~, or one that exists): never sent to
    the hub. Hub names never start with "." (REPO_ID)."""
    return model.startswith(("/", ".", "~")) or os.path.exists(model)


def validate_repo_id(model: str) -> None:
    if not REPO_ID.fullmatch(model) or ".." in model:
        raise ModelIdError(
            f"{model!r} is not a hub repo id (owner/name of letters, digits, '-', '_', '.'; no '..', no "
            "leading '/'): give an existing model directory, a config.json path, or a repo id such as "
            "qwen/Qwen2.5-7B-Instruct"
        )


def default_model_configs_dir() -> str | None:
    """$VLLM_FLEET_MODEL_CONFIGS, else the collection's own model_configs/; None inside a module's
    payload on a host (it carries module_utils, not the collection: the playbook passes the dir)."""
    return os.environ.get("VLLM_FLEET_MODEL_CONFIGS") or layout.values()["model_configs_dir"]


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


def _shipped_name(path: str) -> str:
    """<configs dir>/<owner>/<name> (model_configs/qwen/...), wherever the collection is installed."""
    return os.path.join(*os.path.normpath(path).split(os.sep)[-3:])


def shipped_config_dir(repo_id: str, model_configs_dir: str | None = None) -> str | None:
    root = model_configs_dir or default_model_configs_dir()
    return _find_case_insensitive(root, repo_id) if root else None


def hub_where(endpoint: str | None) -> str:
    """The hub a request goes to, as a message names it: the endpoint passed, else the SDK's own."""
    return endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or "the ModelScope hub"


def hub_message(error: Exception) -> str:
    """The hub's own words for a failed request ("model qwen/x does not exist"), else the error's
    first line: the SDK's text adds a request id, the URL and the raw JSON body."""
    response = getattr(error, "response", None)
    try:
        message = response.json().get("Message") if response is not None else None
    except (ValueError, AttributeError):
        message = None
    if message:
        return str(message)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fetch_small_files(
    repo_id: str, revision: str, dest: str, *, endpoint: str | None = None, token: str | None = None
) -> str:
    """Download only the small config files of ``repo_id`` at ``revision`` into ``dest``.

    The files land in a staging directory beside ``dest`` and move into place whole, so a failed
    or partial fetch never leaves a cache entry that a later run would trust.
    """
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as e:  # the controller venv has it (requirements.in)
        raise ModelConfigError(f"cannot fetch {repo_id}: the modelscope SDK is not installed") from e
    revision = revision or DEFAULT_REVISION
    kwargs = {"revision": revision, "allow_patterns": list(SMALL_FILES)}
    if endpoint:
        kwargs["endpoint"] = endpoint
    if token:
        kwargs["token"] = token
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fetch-", dir=parent)
    try:
        try:
            snapshot_download(repo_id, local_dir=staging, **kwargs)
        except Exception as e:
            raise ModelConfigError(
                f"cannot fetch the config of {repo_id}@{revision} from {hub_where(endpoint)}: {hub_message(e)}. "
                f"Check the repo id (owner/name, as the hub spells it) and the revision, or add the "
                f"model's config.json to model_configs/{repo_id}/"
            ) from e
        if not os.path.isfile(os.path.join(staging, "config.json")):
            raise ModelConfigError(
                f"{repo_id}@{revision} on the hub has no config.json: it is not a model preflight can "
                f"check; add its config.json to model_configs/{repo_id}/"
            )
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _remove_empty_dirs(path: str, root: str) -> None:
    """Drop ``path`` and its parents below ``root`` while they are empty (what a failed fetch
    made for its entry)."""
    root = os.path.abspath(root)
    path = os.path.abspath(path)
    while path.startswith(root + os.sep) and os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
        path = os.path.dirname(path)


def load_facts(
    model: str,
    revision: str | None = None,
    *,
    model_configs_dir: str | None = None,
    cache_dir: str | None = None,
    fetch: bool = True,
    endpoint: str | None = None,
    token: str | None = None,
) -> ModelFacts:
    """ModelFacts for a local path or a repo id (owner/name) at a revision.

    A model that looks like a path but does not exist, and a repo id that is not owner/name, are
    refused here, before any cache or hub is asked."""
    if os.path.exists(model):
        return load_model_dir(model)
    if looks_local(model):
        raise ModelConfigError(f"{model}: no such file or directory (a local model path; not sent to the hub)")
    validate_repo_id(model)
    if revision in DEFAULT_REVISIONS:
        shipped = shipped_config_dir(model, model_configs_dir)
        if shipped:
            facts = load_model_dir(shipped, name=model)
            return _with_source(facts, f"shipped config ({_shipped_name(shipped)})")
    rev = revision or DEFAULT_REVISION
    cache_root = cache_dir or default_cache_dir()
    cached = os.path.join(cache_root, *model.split("/"), rev)
    if not os.path.isfile(os.path.join(cached, "config.json")):
        if not fetch:
            raise ModelConfigError(
                f"no config for {model}@{rev}: not a local path, not in model_configs/, not cached; "
                "allow fetching from the hub or add it to model_configs/"
            )
        try:
            fetch_small_files(model, rev, cached, endpoint=endpoint, token=token)
        except ModelConfigError:
            _remove_empty_dirs(os.path.dirname(cached), cache_root)
            raise
    return _with_source(load_model_dir(cached, name=model), f"hub config cached in {cached}")


def _with_source(facts: ModelFacts, source: str) -> ModelFacts:
    return replace(facts, source=source)
