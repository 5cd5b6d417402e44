"""The `vllm_models` inventory schema (docs/inventory.md): defaults and validation, in one place.

Every role reads models through `normalize_models`, so a default (revision, state,
served-model-name) or a naming rule is decided here only.
"""

from __future__ import annotations

import re

from . import revisions, systemd
from .cluster import CLUSTER_FLAGS, ClusterError, normalize_cluster
from .old_flags import translate
from .serve_args import ServeArgsError, normalize
from .versions import DEFAULT_VLLM_VERSION

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# The service role owns these: they are not model flags. A cluster's flags differ per member
# (cluster.member_flags writes them from the model's `cluster`).
RESERVED_FLAGS = {"host", "port", "api-key", "model", *CLUSTER_FLAGS}


class InventoryError(ValueError):
    pass


def normalize_model(item: dict) -> dict:
    """One `vllm_models` item with every default filled and its flags in vLLM's spelling."""
    if not isinstance(item, dict):
        raise InventoryError(f"a vllm_models item must be a dict, not {item!r}")
    name = str(item.get("name", ""))
    if not NAME_PATTERN.match(name):
        raise InventoryError(
            f"model name {name!r} is not usable as a unit name vllm-<name>.service: "
            "use lowercase letters, digits and dashes (e.g. qwen7b-gptq)"
        )
    if not item.get("model"):
        raise InventoryError(f"model {name}: 'model' (the repo id, owner/name) is required")
    try:
        flags = normalize(dict(item.get("flags") or {}))
    except ServeArgsError as e:
        raise InventoryError(f"model {name}: {e}") from e
    reserved = sorted(RESERVED_FLAGS & set(flags))
    if reserved:
        raise InventoryError(
            f"model {name}: flags {reserved} are set by the service role: use the model's "
            "'port' and 'cluster', the host's vllm_service_bind_address and vllm_service_api_key instead"
        )
    try:
        cluster = normalize_cluster(name, item.get("cluster"))
    except ClusterError as e:
        raise InventoryError(str(e)) from e
    flags.setdefault("served-model-name", name)
    state = item.get("state", "present")
    if state not in ("present", "absent"):
        raise InventoryError(f"model {name}: state must be present or absent, not {state!r}")
    env = {str(k): str(v) for k, v in (item.get("env") or {}).items()}
    found = systemd.unprintable_fields(
        {"model": item["model"], "revision": str(item.get("revision") or ""), "env": env}, f"model {name}"
    )
    if found:
        raise InventoryError(f"{found[0][0]} contains {found[0][1]}: {systemd.CORRUPTS_UNIT}; remove it")
    revision = str(item.get("revision") or "master")
    return {
        "name": name,
        "model": str(item["model"]),
        # The commit once the play resolved it (pin_models), else as written; revision_name is
        # what the inventory wrote (a branch or tag), for people: the plan, the rollout summary. The
        # unit names the commit only, so pinning the commit a tag names restarts nothing.
        "revision": revision,
        "revision_name": str(item.get("revision_name") or revision),
        "port": item.get("port"),
        "gpus": list(item.get("gpus") or []),
        "state": state,
        "flags": flags,
        "env": env,
        # Plan an architecture the planner does not model without memory figures (docs/preflight.md).
        "allow_unmodeled": bool(item.get("allow_unmodeled", False)),
        # Several hosts serving this one model (docs/multinode.md): {hosts, master_port}, or None.
        "cluster": cluster,
    }


def normalize_models(items: list | None) -> list[dict]:
    models = [normalize_model(item) for item in items or []]
    names = [m["name"] for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InventoryError(f"model names must be unique per host: {duplicates} appear twice")
    return models


def served_name(model: dict) -> str:
    value = model["flags"].get("served-model-name", model["name"])
    return value[0] if isinstance(value, list) else str(value)


def apply_plan(items: list | None, host_plan: dict | None, vllm_version: str | None = None) -> list[dict]:
    """The models with the flags preflight decided (old flags translated, dtype resolved).

    Preflight may rewrite a model's flags (e.g. `--disable-log-requests` dropped for the
    pinned vLLM, dtype auto -> half on a GPU without bfloat16); the units must run what
    preflight judged, not what the inventory spelled. A model without a plan (preflight was
    skipped: --skip-tags preflight) still gets the old flags translated for `vllm_version`: the
    translation needs no GPU, and a unit must never carry a flag the pinned vLLM no longer has
    because a check was skipped. A flag the translation refuses (no equivalent: --task embed, a
    speculative model) fails here with preflight's words, never dropped in silence; the host-side
    parser then judges the rest.
    """
    models = normalize_models(items)
    plans = {p.get("model"): p for p in (host_plan or {}).get("models") or []}
    for model in models:
        translated = plans.get(model["name"], {}).get("translated_flags")
        if not translated:
            translated, notes = translate(model["flags"], vllm_version or DEFAULT_VLLM_VERSION)
            refused = [n for n in notes if n["action"] == "refuse"]
            if refused:
                raise InventoryError(
                    f"model {model['name']}: " + "; ".join(f"{n['message']} -- fix: {n['fix']}" for n in refused)
                )
        model["flags"] = normalize(dict(translated))
        model["flags"].setdefault("served-model-name", model["name"])
    return models


def pin_models(items: list | None, resolutions: list[dict] | None) -> list[dict]:
    """Each item whose revision the play resolved (revisions.resolve) at its commit, the name it
    had kept as revision_name; the others as they are (preflight refuses what must not run
    unresolved). Items may come from several hosts: each is pinned on its own."""
    found = revisions.lookup(resolutions)
    pinned = []
    for item in items or []:
        if not isinstance(item, dict):
            pinned.append(item)  # normalize_models names what is wrong with it
            continue
        revision = str(item.get("revision") or "master")
        commit = (found.get((str(item.get("model")), revision)) or {}).get("commit")
        if commit and commit != revision:
            item = dict(item, revision=commit, revision_name=revision)
        pinned.append(item)
    return pinned


def unique_revisions(items: list | None) -> list[dict]:
    """The distinct (repo, revision) pairs of present models, e.g. of a whole play's hosts.

    Items may come from several hosts, so one name may appear more than once: each item is
    checked on its own, not as one host's list.
    """
    seen: dict[tuple[str, str], dict] = {}
    for model in (normalize_model(item) for item in items or []):
        if model["state"] == "present":
            seen.setdefault(
                (model["model"], model["revision"]), {"model": model["model"], "revision": model["revision"]}
            )
    return list(seen.values())
