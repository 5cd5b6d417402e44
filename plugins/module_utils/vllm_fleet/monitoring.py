"""What the fleet tells a monitoring system (issue 16, docs/observability.md): Prometheus scrape
targets written from the inventory, vLLM's own /metrics read back (the probe, status.yml), and the
metric families the shipped dashboard and alert rules are built on.

Standard library only: it runs in modules on the hosts as well as on the controller.
"""

from __future__ import annotations

import math
import re

from . import cluster

# The families the dashboard, the alert rules, status.yml and the probe read, as vLLM 0.32.0 exports
# them (vllm/v1/metrics/loggers.py; a counter's samples end in _total, a histogram's in
# _bucket/_sum/_count). tests/integration/test_rollout.py checks them against a live server's
# /metrics and tests/unit/test_monitoring.py against every expression in the shipped files.
REQUIRED_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:request_success",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:num_preemptions",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:inter_token_latency_seconds",
)
# The HTTP layer's request counter (prometheus-fastapi-instrumentator, on the same /metrics): the
# error-rate alert reads its status label.
HTTP_REQUESTS = "http_requests"

# One sample line of the text exposition format: name{labels} value [timestamp] [# exemplar]; a label
# value is quoted and may hold "}", " # " or an escaped quote.
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?'
    r"\s+(?P<value>\S+)(?:\s+[^#\s]\S*)?(?:\s+#.*)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_TYPE = re.compile(r"^#\s*TYPE\s+(\S+)\s+(\S+)")
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    """A label value as the text format escapes it (backslash, double quote, newline) -> the value."""
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], value)


# What the text format appends to a family's name in its samples.
_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_info")


class Metrics:
    """A parsed /metrics text: the declared families (name -> type) and every sample."""

    def __init__(self, text: str):
        self.types: dict[str, str] = {}
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                match = _TYPE.match(line)
                if match:
                    self.types[match.group(1)] = match.group(2)
                continue
            match = _SAMPLE.match(line)
            if not match:
                continue
            labels = {k: _unescape(v) for k, v in _LABEL.findall(match.group("labels") or "")}
            self.samples.append((match.group("name"), labels, _number(match.group("value"))))

    def families(self) -> set[str]:
        """Family names as declared by # TYPE (a counter declared as foo_total is foo: the
        client library declares counters without the suffix, OpenMetrics style)."""
        return {family_of(name) if kind == "counter" else name for name, kind in self.types.items()}

    def total(self, name: str, **match: str) -> float | None:
        """The sum of the samples named exactly `name` whose labels include `match`; None if none."""
        values = [v for n, labels, v in self.samples if n == name and all(labels.get(k) == x for k, x in match.items())]
        return sum(values) if values else None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def family_of(sample_name: str) -> str:
    """vllm:request_success_total -> vllm:request_success; a name without a suffix is itself."""
    for suffix in _SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def missing_families(text: str, required=REQUIRED_FAMILIES) -> list[str]:
    """The required families a /metrics text does not declare."""
    declared = Metrics(text).families()
    return [name for name in required if name not in declared]


def load_figures(text: str) -> dict:
    """What status.yml shows of a server's /metrics: requests served (finished, any reason),
    running and waiting requests, KV-cache usage (0..1). None where the server exports nothing."""
    metrics = Metrics(text)
    kv = metrics.total("vllm:kv_cache_usage_perc")
    return {
        "requests_served": _int_or_none(metrics.total("vllm:request_success_total")),
        "requests_running": _int_or_none(metrics.total("vllm:num_requests_running")),
        "requests_waiting": _int_or_none(metrics.total("vllm:num_requests_waiting")),
        "kv_cache_usage": kv if kv is not None and math.isfinite(kv) else None,
    }


def _int_or_none(value: float | None) -> int | None:
    return None if value is None or not math.isfinite(value) else int(value)


# -- scrape targets ---------------------------------------------------------------------------


def target_address(address: str, port: int) -> str:
    """host:port, an IPv6 address in brackets."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}:{int(port)}"


def gpus_label(model: dict, device: str) -> str:
    """Which devices a model runs on: its `gpus` (CUDA indexes) joined, "all" for a CUDA model that
    names none (it sees every GPU of the host), or the device itself (cpu)."""
    if device != "cuda":
        return device
    return ",".join(str(g) for g in model.get("gpus") or []) or "all"


def scrape_targets(host: str, address: str, models: list[dict], vllm_version: str, device: str) -> list[dict]:
    """The Prometheus file_sd entries of one host: one target per present model, labelled with
    what is served there. `models` are normalized and pinned (revision = the commit); a model's own
    `vllm_version` (a unit put back by a rollback may run an older release) wins over the host's."""
    entries = []
    for model in models:
        if model.get("state", "present") != "present" or not model.get("port"):
            continue
        if not cluster.is_head(model, host):
            continue  # a cluster's worker runs headless: its head answers, and exports, for it
        entries.append(
            {
                "targets": [target_address(address, model["port"])],
                "labels": {
                    "host": host,
                    "model": model["name"],
                    "unit": f"vllm-{model['name']}.service",
                    "repo": model["model"],
                    "revision": model["revision"],
                    "revision_name": model.get("revision_name") or model["revision"],
                    "vllm_version": str(model.get("vllm_version") or vllm_version),
                    "gpus": gpus_label(model, device),
                },
            }
        )
    return sorted(entries, key=lambda e: e["labels"]["model"])


def served_models(kept: dict, restored: list[dict]) -> list[dict]:
    """What a host serves after rollback.yml, from its last-good records read before (`kept`:
    name -> {current, previous}) and the restore results: a model put back runs the record
    restored, any other its current one. Each is the record's model with its vllm_version."""
    restored_by_name = {r.get("model_name"): r.get("record") for r in restored if r.get("changed") and r.get("record")}
    served = []
    for name in sorted(kept):
        record = restored_by_name.get(name) or (kept[name] or {}).get("current")
        if record and record.get("model"):
            served.append({**record["model"], "vllm_version": record.get("vllm_version")})
    return served


def stale_target_files(file_names: list[str], inventory_hosts: list[str]) -> list[str]:
    """The target files (<host>.json) of hosts no longer in the inventory."""
    hosts = set(inventory_hosts)
    return sorted(n for n in file_names if n.endswith(".json") and n[: -len(".json")] not in hosts)


# -- status -----------------------------------------------------------------------------------

STATUS_COLUMNS = (
    ("host", "host"),
    ("model", "model"),
    ("state", "unit"),
    ("revision", "revision"),
    ("vllm_version", "vllm"),
    ("uptime", "uptime"),
    ("requests_served", "served"),
    ("kv_cache", "kv cache"),
    ("requests", "run/wait"),
    ("probe_latency", "probe"),
)


def uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _cells(row: dict) -> dict[str, str]:
    def dash(value):
        return "-" if value is None or value == "" else str(value)

    kv = row.get("kv_cache_usage")
    latency = row.get("probe_latency_s")
    revision = row.get("revision") or ""
    return {
        "host": dash(row.get("host")),
        "model": dash(row.get("model")),
        "state": dash(row.get("state")),
        "revision": revision[:12] or "-",
        "vllm_version": dash(row.get("vllm_version")),
        "uptime": uptime_text(row.get("uptime_s")),
        # A cluster's worker (docs/multinode.md) serves through its head: the head's row has the figures.
        "requests_served": f"via {row['served_by']}" if row.get("served_by") else dash(row.get("requests_served")),
        "kv_cache": "-" if kv is None else f"{kv * 100:.1f}%",
        "requests": "-"
        if row.get("requests_running") is None
        else f"{row['requests_running']}/{dash(row.get('requests_waiting'))}",
        "probe_latency": "-" if latency is None else f"{latency:.2f}s",
    }


def status_table(rows: list[dict], unreachable: dict[str, str] | None = None) -> str:
    """The fleet's status as aligned columns, then each row's problem and each unreachable host."""
    cells = [_cells(row) for row in rows]
    widths = {key: max([len(title)] + [len(c[key]) for c in cells]) for key, title in STATUS_COLUMNS}
    lines = ["  ".join(title.ljust(widths[key]) for key, title in STATUS_COLUMNS).rstrip()]
    lines += ["  ".join(c[key].ljust(widths[key]) for key, _title in STATUS_COLUMNS).rstrip() for c in cells]
    for row in rows:
        for problem in row.get("problems") or []:
            lines.append(f"{row.get('host')} {row.get('model')}: {problem}")
    for host, task in sorted((unreachable or {}).items()):
        lines.append(f"{host}: unreachable (in: {task})")
    if not rows and not unreachable:
        lines.append("(no models in the inventory of the hosts this run reached)")
    return "\n".join(lines)
