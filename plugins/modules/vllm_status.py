#!/usr/bin/python
"""Ansible module: what each vLLM model of a host is doing now (playbooks/status.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_status
short_description: Report each vLLM model of a host - unit state, revision, version, uptime and load
version_added: "0.1.0"
description:
  - Runs on the fleet host. For each model, reads its systemd unit (state, start time, restarts,
    the C(repo@commit) of its Description), asks the server on the host's loopback for
    C(/version) and C(/metrics) (requests served, running and waiting, KV-cache usage), and reads
    the chat latency of the last probe the vllm_probe role kept.
  - Reports every unit C(vllm-*.service) found on the host that the inventory does not name.
  - Changes nothing; check mode reports the same.
options:
  models:
    description: The host's models (normalized, C(vllm_models_normalized)); absent ones are left out.
    type: list
    elements: dict
    required: true
  unit_dir:
    description: Where the units are (the layout lookup's C(unit_dir)).
    type: path
    required: true
  report_dir:
    description: Where the vllm_probe role keeps C(<model>.probe.json) (the layout lookup's C(report_dir)).
    type: path
    required: true
  timeout:
    description: Seconds for each HTTP request to a server.
    type: int
    default: 5
  host:
    description:
      - The host's inventory name. On a member of a model's C(cluster) that is not its head (a
        headless worker, docs/multinode.md) only the unit is read, and the row names the head
        that serves the model in RV(rows[].served_by).
    type: str
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Reads the same as outside check mode; it never changes anything.
"""

EXAMPLES = r"""
- name: Read what each model is doing
  vllm_fleet.fleet.vllm_status:
    models: "{{ vllm_models | vllm_fleet.fleet.vllm_models_normalized }}"
    unit_dir: "{{ lookup('vllm_fleet.fleet.layout', 'unit_dir') }}"
    report_dir: "{{ lookup('vllm_fleet.fleet.layout', 'report_dir') }}"
  register: status
"""

RETURN = r"""
rows:
  description: One row per model.
  returned: always
  type: list
  elements: dict
  contains:
    model: {description: "The model's name (its unit is vllm-NAME.service).", type: str}
    state: {description: "ActiveState/SubState of the unit (active/running); missing without a unit.", type: str}
    repo: {description: "The repo its unit serves (from the unit's Description).", type: str}
    revision: {description: "The commit its unit serves.", type: str}
    vllm_version: {description: "What the server's /version says; None when it does not answer.", type: str}
    uptime_s: {description: "Seconds since the unit last became active.", type: float}
    restarts: {description: "Restarts systemd made (NRestarts).", type: int}
    requests_served: {description: "Requests finished since the server started (request_success_total).", type: int}
    requests_running: {description: "Requests being served now.", type: int}
    requests_waiting: {description: "Requests queued.", type: int}
    kv_cache_usage: {description: "KV-cache usage, 0 to 1.", type: float}
    probe_latency_s: {description: "Chat latency of the last probe, when one was kept.", type: float}
    problems: {description: "What could not be read, or is wrong.", type: list, elements: str}
    served_by: {description: "On a cluster's worker, the head that serves the model; absent otherwise.", type: str}
unmanaged_units:
  description: vllm-*.service units on the host that no model of the inventory names.
  returned: always
  type: list
  elements: str
"""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.cluster import is_head
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.monitoring import load_figures

SHOW = ("ActiveState", "SubState", "ActiveEnterTimestampMonotonic", "NRestarts", "Description", "LoadState")
# The vllm_service template's Description: "vLLM NAME (REPO@REVISION)".
DESCRIPTION = re.compile(r"^vLLM \S+ \((?P<repo>[^@()]+)@(?P<revision>[^()]+)\)$")


def unit_properties(unit: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, *(f"--property={p}" for p in SHOW)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def monotonic_now_s() -> float:
    # systemd's *Monotonic timestamps count CLOCK_MONOTONIC microseconds, as time.monotonic() does.
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def get(url: str, timeout: float) -> tuple[str | None, str | None]:
    """(body, None) or (None, why not). No proxy: the server is on this host's loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8", errors="replace"), None
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc))


def model_row(model: dict, report_dir: str, timeout: float, host: str = "") -> dict:
    name = model["name"]
    props = unit_properties(f"vllm-{name}.service")
    row: dict = {"model": name, "problems": [], "vllm_version": None, "uptime_s": None, "probe_latency_s": None}
    row.update(load_figures(""))
    if props.get("LoadState") != "loaded":
        row.update(state="missing", repo=model.get("model"), revision=None, restarts=None)
        row["problems"].append(f"no unit vllm-{name}.service on the host (deploy it: site.yml)")
        return row
    row["state"] = f"{props.get('ActiveState')}/{props.get('SubState')}"
    row["restarts"] = int(props.get("NRestarts") or 0)
    described = DESCRIPTION.match(props.get("Description", ""))
    row["repo"] = described.group("repo") if described else None
    row["revision"] = described.group("revision") if described else None
    if not described:
        row["problems"].append(
            f"the unit's Description {props.get('Description', '')!r} is not vllm-fleet's "
            "(edited by hand?): what it serves is unknown; site.yml rewrites it"
        )
    entered = int(props.get("ActiveEnterTimestampMonotonic") or 0)
    if props.get("ActiveState") == "active" and entered:
        row["uptime_s"] = round(monotonic_now_s() - entered / 1e6, 1)
    if host and not is_head(model, host):
        # A cluster's worker runs headless (docs/multinode.md): no API here; its head answers.
        row["served_by"] = model["cluster"]["hosts"][0]
        return row
    base = f"http://127.0.0.1:{model['port']}"
    version, why = get(f"{base}/version", timeout)
    if version is None:
        row["problems"].append(f"{base}/version: {why}")
    else:
        try:
            row["vllm_version"] = json.loads(version).get("version")
        except ValueError:
            row["problems"].append(f"{base}/version: not JSON")
    metrics, why = get(f"{base}/metrics", timeout)
    if metrics is None:
        row["problems"].append(f"{base}/metrics: {why}")
    else:
        row.update(load_figures(metrics))
    try:
        with open(os.path.join(report_dir, f"{name}.probe.json"), encoding="utf-8") as fh:
            row["probe_latency_s"] = json.load(fh).get("chat_latency_s")
    except (OSError, ValueError):
        pass
    return row


def unmanaged_units(unit_dir: str, names: set[str]) -> list[str]:
    try:
        found = os.listdir(unit_dir)
    except OSError:
        return []
    return sorted(
        f for f in found if f.startswith("vllm-") and f.endswith(".service") and f[5:-8] not in names and f[5:-8]
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "models": {"type": "list", "elements": "dict", "required": True},
            "unit_dir": {"type": "path", "required": True},
            "report_dir": {"type": "path", "required": True},
            "timeout": {"type": "int", "default": 5},
            "host": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    models = [m for m in p["models"] if m.get("state", "present") == "present"]
    bad = [m for m in models if not m.get("name") or not m.get("port")]
    if bad:
        module.fail_json(msg=f"each model needs a name and a port (normalize them first): {bad[0]!r}")
    rows = [model_row(m, p["report_dir"], p["timeout"], p["host"]) for m in models]
    names = {m["name"] for m in p["models"] if m.get("name")}
    module.exit_json(changed=False, rows=rows, unmanaged_units=unmanaged_units(p["unit_dir"], names))


if __name__ == "__main__":
    main()
