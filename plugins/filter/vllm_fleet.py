"""Template filters over vllm_fleet's module_utils: the model schema and systemd quoting."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import (
    cluster,
    converged,
    engine_report,
    inventory,
    layout,
    monitoring,
    probe,
    rollout,
    rules,
    runtime_lock,
    systemd,
)


def vllm_models_normalized(items):
    """vllm_models with every default filled (docs/inventory.md); fails on an invalid item."""
    try:
        return inventory.normalize_models(items)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_models_with_plan(items, host_plan, vllm_version=None):
    """vllm_models with the flags preflight decided, or without a plan the old flags translated for
    vllm_version (see inventory.apply_plan)."""
    try:
        return inventory.apply_plan(items, host_plan, vllm_version)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_models_pinned(items, resolutions):
    """vllm_models with each revision the play resolved at its commit (inventory.pin_models)."""
    return inventory.pin_models(items, resolutions)


def vllm_model_revisions(items):
    """The distinct {model, revision} pairs of the present models in items."""
    try:
        return inventory.unique_revisions(items)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_served_name(model):
    return inventory.served_name(model)


def systemd_exec_args(argv):
    """A list of arguments -> an ExecStart= command line systemd will not split or expand."""
    try:
        return systemd.exec_line([str(a) for a in argv])
    except ValueError as e:
        raise AnsibleFilterError(str(e)) from e


def systemd_environment(name, value):
    try:
        return systemd.quote_environment(str(name), str(value))
    except ValueError as e:
        raise AnsibleFilterError(str(e)) from e


def systemd_environment_file_line(value, name):
    """One NAME=value line of an EnvironmentFile; "" for an empty value (nothing to set)."""
    if not value:
        return ""
    try:
        return systemd.environment_file_line(str(name), str(value))
    except ValueError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_runtime_spec(spec):
    """vllm_runtime_spec with every part typed and defaulted as its environment's name digests it."""
    return layout.runtime_spec(**dict(spec))


def vllm_wheelhouse_name(requirements, package, version, python_version, arch):
    """The controller wheelhouse's name for these pip requirements (layout.wheelhouse_name)."""
    return layout.wheelhouse_name(str(package), str(version), str(python_version), str(arch), list(requirements))


def vllm_is_loopback(address):
    """Whether a bind address is reachable only from the host itself (rules.is_loopback)."""
    return rules.is_loopback(str(address))


def vllm_probe_failure(failed, journal=""):
    """Why a model failed its probe, in one line, from the failed task's result and the unit's
    journal (engine_report.probe_failure)."""
    return engine_report.probe_failure(dict(failed or {}), str(journal or ""))


def vllm_redact(text, secrets):
    """text with every secret in the list replaced by ********, for output shown to the operator."""
    return probe.redact(str(text), [str(s) for s in (secrets or []) if s])


def vllm_rollout_rows_passed(saves, latencies, host, plan_checks=None):
    """Rollout summary rows of a host whose models passed (vllm_last_good save results)."""
    return rollout.rows_from_saves(list(saves or []), dict(latencies or {}), str(host), dict(plan_checks or {}))


def vllm_rollout_rows_restored(restores, latencies, host, failure="", answered=False, unchanged_result="failed"):
    """Rollout summary rows of a host put back to a good state (vllm_last_good restore results)."""
    return rollout.rows_from_restores(
        list(restores or []), dict(latencies or {}), str(host), str(failure or ""), bool(answered), unchanged_result
    )


def vllm_rollout_rows_converged(models, host):
    """Rollout summary rows of a host the fast path found unchanged."""
    try:
        return rollout.rows_converged(inventory.normalize_models(models), str(host))
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_rollout_converged_state(deployed, models, unit_dir, env_dir, state_dir, bind_address, host=""):
    """The vllm_converged save arguments for what this run left (converged.deployed_state)."""
    try:
        normalized = inventory.normalize_models(models)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e
    return converged.deployed_state(
        dict(deployed or {}), normalized, str(unit_dir), str(env_dir), str(state_dir), str(bind_address), str(host)
    )


def vllm_scrape_entries(models, host, address, vllm_version, device):
    """A host's Prometheus file_sd entries: one target per present model (monitoring.scrape_targets).
    `models` as the inventory writes them; a model's own vllm_version (served_models) is kept."""
    items = list(models or [])
    try:
        normalized = inventory.normalize_models(items)
    except inventory.InventoryError as e:
        raise AnsibleFilterError(str(e)) from e
    for item, model in zip(items, normalized, strict=True):
        if item.get("vllm_version"):
            model["vllm_version"] = str(item["vllm_version"])
    return monitoring.scrape_targets(str(host), str(address), normalized, str(vllm_version), str(device))


def vllm_served_models(kept_records, restore_results):
    """The models a host serves after rollback.yml (monitoring.served_models)."""
    return monitoring.served_models(dict(kept_records or {}), list(restore_results or []))


def vllm_cluster_members(models, hostvars, play_hosts, default_vllm_version):
    """For each cluster model in models: what each member of its cluster says (cluster.member_views)."""
    return cluster.member_views(list(models or []), hostvars, list(play_hosts or []), str(default_vllm_version))


def vllm_cluster_addressed(models, hostvars):
    """models with each cluster's member addresses filled (cluster.with_addresses)."""
    return cluster.with_addresses(list(models or []), hostvars)


def vllm_cluster_refused_peers(models, host, hostvars, active_hosts=None):
    """The members of the host's clusters preflight refused or that left the play (cluster.refused_peers)."""
    active = None if active_hosts is None else [str(h) for h in active_hosts]
    return cluster.refused_peers(list(models or []), str(host), hostvars, active)


def vllm_cluster_peers_without(models, host, hostvars, fact):
    """The members of the host's clusters on which ``fact`` is not true (cluster.peers_without)."""
    return cluster.peers_without(list(models or []), str(host), hostvars, str(fact))


def vllm_rollout_batches(order, pending, hostvars, serial):
    """The rollout's batches with each cluster whole (cluster.batches): {hosts, serial, joined}."""
    order = [str(h) for h in order or []]
    clusters = cluster.clusters_of({h: hostvars[h].get("vllm_models") or [] for h in order if h in hostvars})
    return cluster.batches(order, [str(h) for h in pending or []], clusters, serial)


def vllm_cluster_left_out(models, play_hosts):
    """What a run that leaves members of the host's clusters out of the play leaves out (cluster.left_out)."""
    return cluster.left_out(list(models or []), [str(h) for h in play_hosts or []])


def _lock_text(path):
    try:
        text = layout.read_lock(str(path))
        runtime_lock.parse(text)
    except (OSError, ValueError) as e:
        raise AnsibleFilterError(f"the runtime lock {path}: {e}") from e
    return text


def vllm_lock_digest(path):
    """The digest of the lock at ``path`` on the controller (what it installs); '' for no lock."""
    return runtime_lock.digest(_lock_text(path)) if path else ""


def vllm_lock_refusal(path, requirements, left_out):
    """Why the lock at ``path`` cannot install this runtime ('' when it can): it must have been made
    from exactly ``requirements`` (the vLLM pin and the extra packages) and leave out ``left_out``."""
    found = runtime_lock.inputs(_lock_text(path))
    asked = sorted(str(r) for r in requirements)
    made = sorted(r for r in found["requirements"] if r != "uv")
    problems = []
    if made != asked:
        problems.append(f"it was made from {' '.join(made) or 'nothing said'}, the runtime asks for {' '.join(asked)}")
    if sorted(found["left_out"]) != sorted(str(p) for p in left_out):
        kept_out = " ".join(found["left_out"]) or "nothing"
        problems.append(f"it leaves out {kept_out}, the runtime removes {' '.join(left_out) or 'nothing'}")
    if "uv" not in found["requirements"]:
        problems.append("it does not lock uv, the installer")
    return "; ".join(problems)


def vllm_lock_versions(path):
    """What a last good state keeps of the lock at ``path``: {"digest", "packages": {name: version}};
    {} for no lock."""
    if not path:
        return {}
    text = _lock_text(path)
    return {"digest": runtime_lock.digest(text), "packages": runtime_lock.versions(text)}


def vllm_plan_runtime_lines(path, package, last_good=None):
    """plan.yml's runtime lines: the lock at ``path`` and what it changes against the locks the host's
    models last passed their probe with (``last_good``: the vllm_last_good module's read result)."""
    last_good = last_good or {}
    lines = rollout.plan_lock_lines(vllm_lock_versions(path), str(package), last_good.get("records") or {})
    if last_good.get("failed"):
        lines.append(f"runtime: the host's good states could not be read: {last_good.get('msg', 'no reason given')}")
    return lines


def vllm_lock_subset(path, names):
    """The lock's pins of ``names`` as a requirements file's text (with their hashes)."""
    try:
        return runtime_lock.subset(_lock_text(path), list(names))
    except ValueError as e:
        raise AnsibleFilterError(f"the runtime lock {path}: {e}") from e


class FilterModule:
    def filters(self):
        return {
            "vllm_lock_digest": vllm_lock_digest,
            "vllm_lock_refusal": vllm_lock_refusal,
            "vllm_lock_subset": vllm_lock_subset,
            "vllm_lock_versions": vllm_lock_versions,
            "vllm_plan_runtime_lines": vllm_plan_runtime_lines,
            "vllm_models_normalized": vllm_models_normalized,
            "vllm_models_with_plan": vllm_models_with_plan,
            "vllm_model_revisions": vllm_model_revisions,
            "vllm_models_pinned": vllm_models_pinned,
            "vllm_served_name": vllm_served_name,
            "systemd_exec_args": systemd_exec_args,
            "systemd_environment": systemd_environment,
            "systemd_environment_file_line": systemd_environment_file_line,
            "vllm_redact": vllm_redact,
            "vllm_probe_failure": vllm_probe_failure,
            "vllm_is_loopback": vllm_is_loopback,
            "vllm_runtime_spec": vllm_runtime_spec,
            "vllm_wheelhouse_name": vllm_wheelhouse_name,
            "vllm_rollout_rows_passed": vllm_rollout_rows_passed,
            "vllm_rollout_rows_restored": vllm_rollout_rows_restored,
            "vllm_rollout_rows_converged": vllm_rollout_rows_converged,
            "vllm_rollout_converged_state": vllm_rollout_converged_state,
            "vllm_scrape_entries": vllm_scrape_entries,
            "vllm_served_models": vllm_served_models,
            "vllm_cluster_members": vllm_cluster_members,
            "vllm_cluster_addressed": vllm_cluster_addressed,
            "vllm_cluster_refused_peers": vllm_cluster_refused_peers,
            "vllm_rollout_batches": vllm_rollout_batches,
            "vllm_cluster_left_out": vllm_cluster_left_out,
            "vllm_cluster_peers_without": vllm_cluster_peers_without,
        }
