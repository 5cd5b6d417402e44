"""Which commit each model's revision names on the hub, once per run, and whether it moved.

An inventory names a revision as a branch ("master"), a tag ("v1.0") or a commit id. A branch
moves: hosts installed on different days from one inventory would serve different weights, and
preflight would judge a config the hosts never download. So the play resolves each (repo,
revision) once, on the controller, to the hub's commit id, and everything after carries the
commit: preflight reads that commit's config, and the weights directory, the unit, the manifest
and the last-good record name it (inventory.pin_models).

The commit comes from the hub's file listing, the SDK's own call (modelscope_hub LegacyClient
.list_repo_files): every entry carries a ``Revision``, a commit id (the SDK's cache compares it with
one: modelscope/hub/utils/caching.py), and a ``CommittedDate``. The newest entry's commit is the
last commit that changed the revision's files: the same bytes as the branch's head.

A record on the controller (one JSON file beside the inventory) keeps what each branch or tag
resolved to last time, so a run can say ``master: 3f2a9c81d4e0 -> 9b1d07e6c2aa`` when it moved.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import asdict, dataclass

from .hub_configs import hub_message, hub_where, looks_local

# A git commit id (ModelScope repos are git repos): 40 hex digits. A shorter prefix is not a pin:
# it may name a tag, and more than one commit once the repo grows.
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
SHORT = 12  # how many digits a person reads


@dataclass
class Resolution:
    model: str
    revision: str  # as the inventory names it
    kind: str  # commit, branch, tag, local, missing (the hub has no such name), unknown (not asked or no answer)
    commit: str | None = None
    error: str | None = None  # why it could not be resolved (kind unknown)
    previous: str | None = None  # the commit the record held for this revision
    previous_at: str | None = None

    @property
    def moved(self) -> bool:
        return bool(self.previous and self.commit and self.previous != self.commit)


def is_commit(revision: str | None) -> bool:
    return bool(revision) and bool(COMMIT_ID.fullmatch(str(revision)))


def short(commit: str | None) -> str:
    return (commit or "?")[:SHORT]


def key(model: str, revision: str) -> str:
    return f"{model}@{revision}"


def commit_from_listing(entries: list[dict]) -> str | None:
    """The commit of the newest entry of a file listing (None when no entry names a commit)."""
    dated = [
        (int(e.get("CommittedDate") or 0), str(e.get("Revision")))
        for e in entries
        if is_commit(str(e.get("Revision") or ""))
    ]
    return max(dated)[1] if dated else None


def _hub_error(error: Exception) -> str:
    """The hub's words (hub_configs.hub_message), without the retry story urllib3 appends to a
    connection failure: its first clause says it."""
    text = hub_message(error)
    return text.split(": HTTPConnectionPool(")[0].split(": HTTPSConnectionPool(")[0][:300]


def _unreachable(error: Exception) -> bool:
    """No answer from the hub at all (no HTTP status): every other repo would fail the same way."""
    response = getattr(error, "response", None)
    return response is None and "Connection" in f"{type(error).__name__} {error}"


def resolve(
    items: list[dict], *, endpoint: str | None = None, token: str | None = None, client=None
) -> list[Resolution]:
    """Resolve each distinct {model, revision} to a commit. A commit id needs no hub; a local path
    is not on the hub. A failure is kept in the Resolution (kind unknown), never raised: preflight
    decides what it means. ``client`` is the SDK's LegacyClient (made from endpoint and token)."""
    out: list[Resolution] = []
    unreachable: str | None = None
    for item in items:
        model, revision = str(item["model"]), str(item.get("revision") or "master")
        if looks_local(model):
            out.append(Resolution(model, revision, "local"))
            continue
        if is_commit(revision):
            out.append(Resolution(model, revision, "commit", commit=revision))
            continue
        if unreachable:
            out.append(Resolution(model, revision, "unknown", error=unreachable))
            continue
        if client is None:
            from modelscope_hub import HubApi

            client = HubApi(endpoint=endpoint, token=token).legacy
        try:
            branches, tags = client.list_revisions_detail(model, "model")
            names = {str(b.get("Revision")): "branch" for b in branches}
            names.update({str(t.get("Revision")): "tag" for t in tags})
            kind = names.get(revision)
            if kind is None:
                error = f"the hub has no branch or tag {revision} of {model}"
                out.append(Resolution(model, revision, "missing", error=error))
                continue
            commit = commit_from_listing(client.list_repo_files(model, "model", revision=revision, recursive=False))
        except Exception as e:  # the SDK raises many kinds; the hub's words are what count
            where, said = hub_where(endpoint), _hub_error(e)
            error = f"cannot ask {where} about {model}@{revision}: {said}"
            if _unreachable(e):
                unreachable = f"cannot reach {where}: {said}"
            out.append(Resolution(model, revision, "unknown", error=error))
            continue
        if commit is None:
            out.append(Resolution(model, revision, kind, error=f"the hub listed no commit id for {model}@{revision}"))
            continue
        out.append(Resolution(model, revision, kind, commit=commit))
    return out


def read_record(path: str | None) -> dict:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a revision record ({e}); move it away and re-run") from e
    return data if isinstance(data, dict) else {}


def with_previous(resolutions: list[Resolution], record: dict) -> list[Resolution]:
    """Each branch or tag with the commit the record held for it (what it pointed at last time)."""
    for r in resolutions:
        entry = record.get(key(r.model, r.revision)) or {}
        if r.kind in ("branch", "tag") and entry.get("commit"):
            r.previous, r.previous_at = entry["commit"], entry.get("resolved_at")
    return resolutions


def updated_record(record: dict, resolutions: list[Resolution], now: datetime.datetime | None = None) -> dict:
    """The record with every resolved branch and tag at its commit now (unchanged entries kept as they were)."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    new = dict(record)
    for r in resolutions:
        if (
            r.kind in ("branch", "tag")
            and r.commit
            and (record.get(key(r.model, r.revision)) or {}).get("commit") != r.commit
        ):
            new[key(r.model, r.revision)] = {"commit": r.commit, "resolved_at": stamp}
    return new


def write_record(path: str, record: dict) -> None:
    """Atomically (a reader sees the old record or the new one, never half of one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def moved_line(r: Resolution) -> str:
    """``master: 3f2a9c81d4e0 -> 9b1d07e6c2aa`` (what the run will deploy)."""
    return f"{r.revision}: {short(r.previous)} -> {short(r.commit)}"


def as_dicts(resolutions: list[Resolution]) -> list[dict]:
    return [dict(asdict(r), moved=r.moved) for r in resolutions]


def lookup(resolutions: list[dict] | None) -> dict[tuple[str, str], dict]:
    """{(model, revision as written): resolution dict}, from the module's result."""
    return {(str(r["model"]), str(r["revision"])): r for r in resolutions or []}


def of(found: dict[tuple[str, str], dict], model: str, revision: str | None) -> dict:
    """The resolution of one model's revision; one the play did not resolve is a commit id as
    written, or unknown (preflight without the resolution step: the CLI, a test)."""
    revision = str(revision or "master")
    if (model, revision) in found:
        return found[(model, revision)]
    if is_commit(revision):
        return asdict(Resolution(model, revision, "commit", commit=revision))
    if looks_local(model):
        return asdict(Resolution(model, revision, "local"))
    return asdict(Resolution(model, revision, "unknown", error="not resolved: the play's resolution step did not run"))
