"""Rollout bookkeeping: last-good records, what a change changed, which slot a rollback restores,
and which old environments / weight revisions may be pruned.

A *record* describes one model as deployed on one host (written by the vllm_service role, kept by
the vllm_last_good module once the model passed its probe):

    {"name": "tiny", "model": {...normalized vllm_models item...}, "vllm_version": "0.32.0",
     "env_dir": "/opt/vllm-fleet/envs/vllm-0.32.0-cpu", "model_dir": ".../tiny-qwen2/v1",
     "argv": ["/opt/.../bin/vllm", "serve", ...], "unit_sha256": "...", "env_sha256": "..."}

Per host and model two good states are kept: `current` (the last that passed its probe) and
`previous` (the good one before it). A failed probe restores `current`; `rollback.yml` restores
`current` when the installed unit is not it, else `previous` (one step back).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from . import cluster, layout, revisions, runtime_lock

# What makes two records the same deployment (the unit and secrets files by content, and what
# they point at); saved_at and other bookkeeping are left out so a re-run changes nothing.
IDENTITY_KEYS = ("vllm_version", "env_dir", "model_dir", "argv", "unit_sha256", "env_sha256")
SLOTS = ("current", "previous")


def same_deployment(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


def _flag_args(argv: list[str]) -> list[str]:
    """The flags of `<bin>/vllm serve <model dir> --host H --port P <flags...>` (from the 3rd item);
    on a Ray member, of the vLLM line behind its launcher (a worker's has none)."""
    argv = cluster.serve_part(list(argv))
    return list(argv[3:]) if len(argv) > 3 and argv[1] == "serve" else list(argv)


def _flag_items(argv: list[str]) -> list[str]:
    """Flags as readable items: '--max-model-len 512', '--enforce-eager'."""
    items: list[str] = []
    for arg in _flag_args(argv):
        if arg.startswith("--") or not items:
            items.append(arg)
        else:
            items[-1] += f" {arg}"
    return items


def revision_label(model: dict) -> str:
    """A model's revision for people: ``v1 (3f2a9c81d4e0)`` when a branch or tag was resolved to a
    commit, the commit's first digits when the inventory pinned it, else the revision as it is."""
    revision, name = str(model.get("revision") or ""), model.get("revision_name")
    if name and name != revision:
        return f"{name} ({revisions.short(revision)})"
    return revisions.short(revision) if revisions.is_commit(revision) else revision


def changes(before: dict | None, after: dict) -> list[str]:
    """What a deployment changed, in an operator's words: vLLM version, model revision, flags."""
    if before is None:
        model = after.get("model", {})
        return [f"first good state: vllm {after.get('vllm_version')}, {model.get('model')}@{revision_label(model)}"]
    out = []
    if before.get("vllm_version") != after.get("vllm_version"):
        out.append(f"vllm {before.get('vllm_version')} -> {after.get('vllm_version')}")
    lock = lock_change(before.get("lock") or {}, after.get("lock") or {})
    if lock:
        out.append(lock)
    b_model, a_model = before.get("model", {}), after.get("model", {})
    if (b_model.get("model"), b_model.get("revision")) != (a_model.get("model"), a_model.get("revision")):
        b_name = b_model.get("model")
        a_name = a_model.get("model")
        named = b_model.get("revision_name")
        if b_name == a_name and named and named == a_model.get("revision_name") and named != a_model.get("revision"):
            # The same branch or tag, another commit: it moved on the hub.
            short_b, short_a = revisions.short(b_model.get("revision")), revisions.short(a_model.get("revision"))
            out.append(f"{named}: {short_b} -> {short_a}")
        elif b_name == a_name:
            out.append(f"revision {revision_label(b_model)} -> {revision_label(a_model)}")
        else:
            out.append(f"model {b_name}@{revision_label(b_model)} -> {a_name}@{revision_label(a_model)}")
    b_flags, a_flags = _flag_items(before.get("argv", [])), _flag_items(after.get("argv", []))
    removed = [f for f in b_flags if f not in a_flags]
    added = [f for f in a_flags if f not in b_flags]
    if removed or added:
        out.append("flags " + " ".join([f"-[{f}]" for f in removed] + [f"+[{f}]" for f in added]))
    if before.get("env_sha256") != after.get("env_sha256"):
        out.append("secrets file (API key)")
    if not out and before.get("unit_sha256") != after.get("unit_sha256"):
        # Same version, model and flags: the rest of the unit did (vllm_service settings, hardening).
        out.append("unit file (service settings)")
    return out


def lock_change(before: dict, after: dict) -> str | None:
    """A lock change in a good state's words ({"digest", "packages": {name: version}} each, from the
    vllm_lock_versions filter): the packages whose versions it changes, or that only the bytes did."""
    if before.get("digest") == after.get("digest"):
        return None
    if not after:
        return f"unlocked (was lock {before.get('digest')})"
    if not before:
        return f"lock {after.get('digest')} ({len(after.get('packages') or {})} packages)"
    moved = runtime_lock.version_changes(before.get("packages") or {}, after.get("packages") or {})
    what = ", ".join(moved) if moved else "the same versions, other wheels"
    return f"lock {before.get('digest')} -> {after.get('digest')}: {what}"


def plan_lock_lines(lock: dict, package: str, kept: dict) -> list[str]:
    """plan.yml's lines on the environment: the lock the inventory asks for ({"digest", "packages"},
    {} for none) and, per lock the host's models last passed their probe with (``kept``: the
    vllm_last_good module's records), what installing it would change there."""
    if not lock:
        return [f"runtime: no lock for {package}: the runtime role refuses it (scripts/lock_runtime.py makes one)"]
    pins = lock.get("packages") or {}
    shown = ", ".join(f"{name} {pins[name]}" for name in (package, "torch", "transformers") if name in pins)
    lines = [f"runtime: lock {lock['digest']}, {len(pins)} packages ({shown})"]
    by_lock: dict[str, list[str]] = {}
    held: dict[str, dict] = {}
    for name, slots in sorted((kept or {}).items()):
        current = (slots or {}).get("current") or {}
        if current:
            digest = (current.get("lock") or {}).get("digest") or ""
            by_lock.setdefault(digest, []).append(name)
            held[digest] = current.get("lock") or {}
    for digest, models in sorted(by_lock.items()):
        if digest == lock["digest"]:
            lines.append(f"runtime: as the host runs it ({', '.join(models)})")
        else:
            change = lock_change(held[digest], lock) or ""
            lines.append(f"runtime: {change} ({', '.join(models)})")
    return lines


def env_problem(env_dir: str, vllm_version: str) -> str | None:
    """Why a good state cannot run on the environment at ``env_dir`` (None when it can): the
    directory alone proves nothing, an interrupted build leaves one without its record, and a
    rebuild of another release into it would run other code than the state was proven with."""
    record_path = os.path.join(env_dir, layout.ENV_RECORD)
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return f"{env_dir} has no {layout.ENV_RECORD} (an unfinished or removed build)"
    except (OSError, ValueError) as e:
        return f"{record_path} cannot be read ({e})"
    if str(record.get("version")) != str(vllm_version):
        return f"{env_dir} holds vLLM {record.get('version')}, the good state ran {vllm_version}"
    return None


@dataclass(frozen=True)
class RestoreChoice:
    slot: str | None  # "current", "previous", or None (nothing to restore)
    reason: str


def choose_restore(target: str, installed: dict, current: dict | None, previous: dict | None) -> RestoreChoice:
    """Which good state to put back.

    installed: {"unit_sha256", "env_sha256"} of the files on the host now.
    target "last": the last good state (after a failed probe: the change never became good).
    target "back": one step back: `current` if the installed files are not it (an unproven or
    failed change), else `previous` (undo the last good change).
    """
    if target not in ("last", "back"):
        raise ValueError(f"target must be 'last' or 'back', not {target!r}")
    if current is None:
        return RestoreChoice(None, "no last good state is recorded for this model on this host")
    is_current = all(installed.get(k) == current.get(k) for k in ("unit_sha256", "env_sha256"))
    if target == "last" or not is_current:
        if is_current:
            return RestoreChoice(None, "the installed unit is already the last good state")
        return RestoreChoice("current", "the installed unit is not the last good state")
    if previous is None:
        return RestoreChoice(None, "the installed unit is the last good state and no earlier good state is kept")
    return RestoreChoice("previous", "the installed unit is the last good state: going one step back")


def rotate(current: dict | None, previous: dict | None, new: dict) -> tuple[dict, dict | None, bool]:
    """The slots after saving `new` as good: (current, previous, changed). Saving the current
    deployment again changes nothing; saving what is in `previous` swaps the two (a rollback that
    passed its probe)."""
    if same_deployment(current, new):
        return current, previous, False
    return new, current, True


def prune_choice(children: list[tuple[str, float]], keep: int, protect: set[str]) -> tuple[list[str], list[str]]:
    """Children (path, mtime) of one directory of versions: (remove, kept). The `keep` newest are
    kept, and every protected path (in use by a unit or a last-good state) whatever its age."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    newest_first = sorted(children, key=lambda c: c[1], reverse=True)
    kept = [p for i, (p, _mtime) in enumerate(newest_first) if i < keep or p in protect]
    remove = [p for p, _mtime in newest_first if p not in kept]
    return remove, kept


SUMMARY_COLUMNS = ("host", "model", "result", "what changed", "plan vs vLLM", "chat latency")
# The summary's plan-vs-engine cell: the error of each checked metric, shortly (issue 18).
PLAN_CELL_METRICS = (("KV cache tokens", "KV tokens"), ("weights GiB", "weights"))
CELL_CHARS = 140  # the JSON summary keeps the whole text


def _cell(text: str) -> str:
    """One line, at most CELL_CHARS: a failure message can hold a multi-line probe report."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= CELL_CHARS else flat[: CELL_CHARS - 3] + "..."


def summary_table(rows: list[dict], not_reached: list[str], unreachable: dict[str, str] | None = None) -> str:
    """The end-of-play table: one line per host and model, then the hosts that stopped answering
    (host -> the task they stopped in), then the hosts the play never reached."""
    lines = []
    for row in rows:
        latency = row.get("latency_s")
        lines.append(
            (
                row.get("host", "?"),
                row.get("model", "?"),
                row.get("result", "?"),
                _cell("; ".join(row.get("changes") or ["unchanged"])),
                _plan_cell(row.get("plan_errors") or {}),
                f"{latency:.2f} s" if isinstance(latency, (int, float)) else "-",
            )
        )
    for host, task in sorted((unreachable or {}).items()):
        why = f"stopped answering in '{task}': left as it was then; the next run gives it a full run"
        lines.append((host, "-", "unreachable", _cell(why), "-", "-"))
    for host in not_reached:
        why = "nothing changed (preflight refused it, or the play stopped first)"
        lines.append((host, "-", "not reached", why, "-", "-"))
    widths = [max(len(str(r[i])) for r in [SUMMARY_COLUMNS, *lines]) for i in range(len(SUMMARY_COLUMNS))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    table = [fmt.format(*r).rstrip() for r in [SUMMARY_COLUMNS, *lines]]
    return "\n".join(table + plan_warnings(rows))


def _plan_cell(errors: dict) -> str:
    parts = [f"{short} {errors[metric]:+.1f}%" for metric, short in PLAN_CELL_METRICS if errors.get(metric) is not None]
    return ", ".join(parts) or "-"


def plan_warnings(rows: list[dict]) -> list[str]:
    """A line for each model whose start vLLM reported off the plan by more than the tolerance."""
    return [
        f"WARNING: {row.get('host')} {row.get('model')}: vLLM's start is off the plan beyond "
        f"{row.get('plan_tolerance_pct'):g}%: {'; '.join(row['plan_beyond'])} -- the planner is off for "
        "this GPU or model: calibrate it (vllm-fleet calibrate, docs/planner.md); "
        "vllm_calibration_strict makes this a failed probe"
        for row in rows
        if row.get("plan_beyond")
    ]


def _latency(latencies: dict | None, name: str):
    value = (latencies or {}).get(name)
    return value if isinstance(value, (int, float)) else None


def rows_from_saves(
    saves: list[dict], latencies: dict | None, host: str, plan_checks: dict | None = None
) -> list[dict]:
    """Summary rows of a host that passed: one per `vllm_last_good action=save` loop result.
    plan_checks: per model, the probe's plan against what vLLM reported (engine_report.plan_check)."""
    rows = []
    for save in saves:
        name = _loop_name(save)
        changed = bool(save.get("changed"))
        check = (plan_checks or {}).get(name) or {}
        rows.append(
            {
                "host": host,
                "model": name,
                "result": "updated" if changed else "unchanged",
                "changes": list(save.get("changes") or []),
                "latency_s": _latency(latencies, name),
                "plan_errors": dict(check.get("errors") or {}),
                "plan_beyond": list(check.get("beyond") or []),
                "plan_tolerance_pct": check.get("tolerance_pct"),
            }
        )
    return rows


def _loop_name(result: dict) -> str:
    """The model name of a loop result, whatever the loop variable (a model dict or a name)."""
    item = result.get(result.get("ansible_loop_var", "item"))
    if isinstance(item, dict):
        return str(item.get("name", item.get("key", "?")))
    return str(item) if item is not None else "?"


def rows_from_restores(
    restores: list[dict],
    latencies: dict | None,
    host: str,
    failure: str,
    answered: bool,
    unchanged_result: str = "failed",
) -> list[dict]:
    """Summary rows of a host put back to a good state, one per `vllm_last_good action=restore`
    loop result. answered: whether the restored models passed their probe again.
    unchanged_result: the result of a model with nothing to restore ("failed" after a failed
    change; "unchanged" for rollback.yml)."""
    rows = []
    for restore in restores:
        name = _loop_name(restore)
        record = restore.get("record") or {}
        model = record.get("model") or {}
        if restore.get("changed"):
            result = "rolled back" if answered else "rolled back, not yet answering"
            change = [f"back to {model.get('model')}@{revision_label(model)}, vllm {record.get('vllm_version')}"]
        else:
            result = unchanged_result
            change = [f"nothing restored: {restore.get('reason') or restore.get('msg', '')}"]
        if failure:
            change.append(f"because: {failure}")
        rows.append(
            {
                "host": host,
                "model": name,
                "result": result,
                "changes": change,
                "latency_s": _latency(latencies, name) if restore.get("changed") and answered else None,
            }
        )
    return rows


FAST_PATH_NOTE = "as the last full run left it (fast path: /health answered, no chat request)"


def rows_converged(models: list[dict], host: str) -> list[dict]:
    """Summary rows of a host the fast path skipped (vllm_converged check: nothing differs).

    Its models answered /health on the host; no chat request was made, so no latency."""
    return [
        {
            "host": host,
            "model": str(m.get("name", "?")),
            "result": "unchanged",
            "changes": [FAST_PATH_NOTE],
            "latency_s": None,
        }
        for m in models
        if m.get("state", "present") == "present"
    ]
