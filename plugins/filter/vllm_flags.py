"""Template filters for vLLM flags: a model's flags dict -> the argv of `vllm serve`."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import argv_shapes, cluster
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.serve_args import (
    ServeArgsError,
    normalize,
    to_argv,
)


def vllm_argv(flags):
    """{"tensor-parallel-size": 2, "enforce-eager": true} -> ["--tensor-parallel-size", "2",
    "--enforce-eager"]. true -> bare flag; false -> --no-X where vLLM has it, else omitted;
    lists repeat values; dicts become JSON."""
    if flags is None:
        return []
    if not isinstance(flags, dict):
        raise AnsibleFilterError(f"vllm_argv expects a dict of flags, got {type(flags).__name__}")
    try:
        return to_argv(normalize(dict(flags)))
    except ServeArgsError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_serve_argv(model, bin_dir, models_root, bind_address, host=None):
    """The argv a model's unit runs: `<env>/bin/vllm serve <models_root>/<model>/<revision> --host ...
    --port ... <flags>`, and on a member of the model's cluster its part (``host``: the member's
    inventory name; cluster.member_flags). One definition for the unit (roles/vllm_service) and for
    the parser check that runs when the environment is built (roles/vllm_runtime), so both judge
    the same line. [] for a Ray worker, which runs no vLLM of its own (vllm_unit_argv)."""
    model_dir = f"{models_root}/{model['model']}/{model['revision']}"
    where = ["--host", str(bind_address), "--port", str(model["port"])]
    try:
        if not cluster.runs_vllm(model, str(host)):
            return []
        part, _env = cluster.member_flags(model, str(host)) if model.get("cluster") else ({}, {})
    except cluster.ClusterError as e:
        raise AnsibleFilterError(str(e)) from e
    return [f"{bin_dir}/vllm", "serve", model_dir, *where, *vllm_argv(model.get("flags")), *vllm_argv(part)]


def vllm_unit_argv(
    model, bin_dir, models_root, bind_address, host=None, launcher="", device="cuda", timeout=0, stop_sec=60
):
    """The argv a model's unit runs (its ExecStart=): vllm_serve_argv, and for a member of a Ray
    cluster the launcher (``launcher``: its path on the host) in front: `<env>/bin/python LAUNCHER
    head ... -- <vllm serve argv>` on the head, `... worker ...` alone on a worker
    (cluster.launcher_argv; docs/multinode.md)."""
    try:
        prefix = cluster.launcher_argv(
            model, str(host), f"{bin_dir}/python", str(launcher), str(device), int(timeout or 0), int(stop_sec or 60)
        )
    except cluster.ClusterError as e:
        raise AnsibleFilterError(str(e)) from e
    serve = vllm_serve_argv(model, bin_dir, models_root, bind_address, host)
    if not prefix:
        return serve
    return [*prefix, "--", *serve] if serve else prefix


def vllm_cluster_environment(model, host, interface="", device="cuda"):
    """The environment a cluster member's unit adds (cluster.member_environment); {} for a
    single-host model."""
    try:
        return cluster.member_environment(model, str(host), str(interface or ""), str(device))
    except cluster.ClusterError as e:
        raise AnsibleFilterError(str(e)) from e


def vllm_argvs_not_accepted(argvs, accepted_ids):
    """The argvs whose shape (module_utils argv_shapes: the argv less its model directory) is not
    among the ids a parser accepted before: a new revision of a model, whose line differs only
    there, is not parsed again (roles/vllm_service/tasks/present.yml)."""
    try:
        return argv_shapes.not_accepted(argvs, accepted_ids)
    except argv_shapes.ArgvShapeError as e:
        raise AnsibleFilterError(f"vllm_argvs_not_accepted: {e}") from e


def vllm_accepted_shapes_file(env_dir):
    """Where an environment keeps the argv shapes its parser accepted (vllm_serve_check writes it)."""
    return argv_shapes.shapes_file(env_dir)


def _cell(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


def vllm_plan_row(plan):
    """One line of playbooks/plan.yml's table from a model's plan."""
    gpus = f"{len(plan.get('gpus') or [])}x{plan.get('gpu_name') or '-'}"
    return (
        f"{plan.get('model')!s:<22} {gpus:<8} {_cell(plan.get('tp')):<3} {_cell(plan.get('dtype')):<9} "
        f"{plan.get('quantization') or '-':<5} {_cell(plan.get('weights_gib')):>8} "
        f"{_cell(plan.get('kv_cache_gib')):>8} {_cell(plan.get('max_model_len_fit')):>9}  "
        f"{str(plan.get('verdict', '')).upper():<8} {_revision_cell(plan)}"
    )


def _revision_cell(plan):
    """The revision as written and the commit the plan judged: master@9b1d07e6c2aa, or the commit alone."""
    revision, commit = plan.get("revision"), plan.get("commit")
    if not revision:
        return ""
    if commit == revision:
        return commit[:12]
    return f"{revision}@{commit[:12] if commit else '?'}"


def vllm_plan_problem_line(problem, who, kind=""):
    """`who: [rule] message -- fix: ...`; a warning (kind "warning") says so before its rule."""
    label = f"{kind} [{problem['rule']}]" if kind else f"[{problem['rule']}]"
    return f"{who}: {label} {problem['message']} -- fix: {problem['fix']}"


def vllm_plan_problems(plan):
    """The error and warning lines (with fixes) of a model's plan (a warning such as
    flag-not-modeled says what the figures leave out), and what it used of a calibration file."""
    lines = [vllm_plan_problem_line(e, plan.get("model")) for e in (plan.get("errors") or [])]
    lines += [vllm_plan_problem_line(w, plan.get("model"), "warning") for w in (plan.get("warnings") or [])]
    if plan.get("calibration"):
        lines.append(f"{plan.get('model')}: calibration: {plan['calibration']['summary']}")
    return lines


class FilterModule:
    def filters(self):
        return {
            "vllm_argv": vllm_argv,
            "vllm_serve_argv": vllm_serve_argv,
            "vllm_unit_argv": vllm_unit_argv,
            "vllm_cluster_environment": vllm_cluster_environment,
            "vllm_argvs_not_accepted": vllm_argvs_not_accepted,
            "vllm_accepted_shapes_file": vllm_accepted_shapes_file,
            "vllm_plan_row": vllm_plan_row,
            "vllm_plan_problems": vllm_plan_problems,
            "vllm_plan_problem_line": vllm_plan_problem_line,
        }
