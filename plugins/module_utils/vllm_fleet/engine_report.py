"""What vLLM reported about itself at start, read from its log (the unit's journal), and how it
compares with the preflight plan: every deploy checks the planner against the real engine.

Pure functions over text and plain dicts. The log lines and the vLLM source that writes them
(vLLM 0.32.0; 0.26 where it differs):

    Model loading took 14.39 GiB memory and 3.2 seconds      v1/worker/gpu_model_runner.py (GPU only;
                                                             0.26: "... GiB and ... seconds")
    Checkpoint size: 0.00 GiB. Available RAM: 21.86 GiB.     model_executor/model_loader/weight_utils.py
    Available KV cache memory: 55.1 GiB                      v1/worker/gpu_worker.py (GPU)
    Explicitly set (1.0/13.09) GiB for KV cache on node 0.   v1/worker/cpu_worker.py (CPU; "Auto set"
                                                             when VLLM_CPU_KVCACHE_SPACE is unset)
    GPU KV cache size: 112,848 tokens, Maximum concurrency   v1/core/kv_cache_utils.py, one line in 0.32
    for 2,048 tokens per request: 55.10x                     ("CPU KV cache size" on CPU), two lines in
                                                             older releases
    ... the estimated maximum model length is 128.           v1/core/kv_cache_utils.py (the refusal)
    No available memory for the cache blocks.                v1/core/kv_cache_utils.py (the refusal)

Lines are matched anywhere, so journalctl's "Nov 25 12:00:00 host vllm[123]: " prefix and
vLLM's own "(EngineCore pid=1) INFO ... [file.py:1] " prefix both pass through.
"""

from __future__ import annotations

import json
import re

# A unit that restarted has several starts in its journal; only the last one describes the
# engine that is serving now. vLLM logs its non-default args once per start (0.26 and 0.32).
_START = re.compile(r"non-default args: |vLLM API server version ")

_NUM = r"(-?\d[\d,]*(?:\.\d+)?)"

# (key, pattern, converters): each group of the pattern goes to one key.
_PATTERNS: list[tuple[tuple[str, ...], re.Pattern, tuple]] = [
    (("vllm_version",), re.compile(r"Initializing a V1 LLM engine \(v([\w.+-]+)\)"), (str,)),
    (("vllm_version",), re.compile(r"vLLM API server version ([\w.+-]+)"), (str,)),
    (("max_model_len",), re.compile(r"Using max model len (\d+)"), (int,)),
    (
        ("weights_gib", "model_load_s"),
        re.compile(rf"Model loading took {_NUM} GiB(?: memory)? and {_NUM} s"),
        (float, float),
    ),
    (("checkpoint_gib",), re.compile(rf"Checkpoint size: {_NUM} GiB"), (float,)),
    (("kv_cache_gib",), re.compile(rf"Available KV cache memory: {_NUM} GiB"), (float,)),
    (
        ("kv_cache_gib", "host_memory_gib"),
        re.compile(rf"(?:Explicitly|Auto) set \({_NUM}/{_NUM}\) GiB for KV cache"),
        (float, float),
    ),
    (
        ("device", "kv_cache_tokens"),
        re.compile(rf"(\w+(?: \+ host)?) KV cache size: {_NUM} tokens"),
        (str, int),
    ),
    (
        ("max_concurrency_tokens", "max_concurrency"),
        re.compile(rf"Maximum concurrency for {_NUM} tokens per request: {_NUM}x"),
        (int, float),
    ),
    (
        ("init_engine_s",),
        re.compile(rf"init engine \(profile, create kv cache, warmup model\) took {_NUM} s"),
        (float,),
    ),
    (
        ("max_model_len", "kv_cache_needed_gib", "kv_cache_gib"),
        re.compile(
            rf"max seq len \({_NUM}\), \({_NUM} GiB KV cache is needed, which is larger than "
            rf"the available KV cache memory \({_NUM} GiB\)"
        ),
        (int, float, float),
    ),
    (("estimated_max_model_len",), re.compile(r"estimated maximum model length is (\d+)"), (int,)),
]

# An exception's last line ("ValueError: ..."), after vLLM's "] " or journald's ": " prefix.
# The anchor keeps prose such as "fd limit errors like `OSError: [Errno 24]" out.
_ERROR = re.compile(r"(?:^|\] |: )([A-Z]\w*(?:Error|Exception)): (.+)$")
_NO_CACHE_MEMORY = "No available memory for the cache blocks"


def last_start(journal: str) -> str:
    """The journal from the last start of vLLM on (all of it when no start line is found)."""
    lines = journal.splitlines()
    starts = [i for i, line in enumerate(lines) if _START.search(line)]
    return "\n".join(lines[starts[-1] :] if starts else lines)


def _number(conv, raw: str):
    return conv(raw.replace(",", "")) if conv is not str else raw


def _error_text(line: str) -> str | None:
    """The exception a log line ends with, as "ValueError: message"; None when it ends with none."""
    error = _ERROR.search(line)
    return f"{error.group(1)}: {error.group(2).strip()}" if error else None


def parse_engine_report(journal: str) -> dict:
    """What the last start of vLLM logged about its memory, as a dict; absent facts, absent keys.

    Keys: vllm_version, max_model_len, weights_gib, model_load_s, checkpoint_gib, kv_cache_gib,
    host_memory_gib (CPU), device ("GPU"/"CPU"), kv_cache_tokens, max_concurrency_tokens,
    max_concurrency, init_engine_s; on a refusal estimated_max_model_len, kv_cache_needed_gib,
    and error (the first exception of that start, e.g. vLLM's ValueError with its advice).
    """
    report: dict = {}
    for line in last_start(journal).splitlines():
        for keys, pattern, convs in _PATTERNS:
            match = pattern.search(line)
            if match:
                for key, conv, raw in zip(keys, convs, match.groups(), strict=True):
                    report[key] = _number(conv, raw)
        error = _error_text(line)
        # The first exception is the root cause; later ones ("Engine core initialization
        # failed. See root cause above.") only repeat that it failed.
        if error and "error" not in report:
            report["error"] = error
        if _NO_CACHE_MEMORY in line and "error" not in report:
            report["error"] = line[line.index(_NO_CACHE_MEMORY) :].strip()
    return report


def refusal_problem(report: dict) -> str | None:
    """A sentence for an engine that refused to start for want of KV cache, with the fix."""
    fit = report.get("estimated_max_model_len")
    if fit is not None:
        asked = report.get("max_model_len", "?")
        return (
            f"vLLM refused to start: --max-model-len {asked} needs "
            f"{report.get('kv_cache_needed_gib', '?')} GiB of KV cache, only "
            f"{report.get('kv_cache_gib', '?')} GiB is available; vLLM estimates the longest that fits "
            f"at {fit} tokens: set max-model-len to at most {fit} (the plan's max_model_len_fit), "
            f"or give the model more memory (gpu-memory-utilization, more GPUs)"
        )
    if _NO_CACHE_MEMORY in report.get("error", ""):
        return (
            "vLLM refused to start: no memory is left for the KV cache after the weights "
            f"({report.get('weights_gib', '?')} GiB): use a quantized model, more GPUs (tp), "
            "or a higher gpu-memory-utilization"
        )
    return None


def probe_failure(failed: dict, journal: str = "") -> str:
    """Why a probe failed, in one line (the rollout summary's reason): the probe's problems when it
    gave them; else the host's wait for /health in its own words (its JSON line, not Ansible's
    "non-zero return code"), with the cause vLLM logged at its last start (a refusal with its fix, or
    the first exception: a unit that dies at start says why, e.g. a module its environment lacks)."""
    problems = [str(p) for p in failed.get("problems") or []]
    if problems:
        return "; ".join(problems)
    stdout = str(failed.get("stdout") or "").strip()
    try:
        said = str(json.loads(stdout).get("reason") or "") if stdout.startswith("{") else ""
    except (ValueError, AttributeError):
        said = ""
    message = said or " ".join(part for part in (str(failed.get("msg") or ""), stdout) if part)
    report = parse_engine_report(journal)
    # The last start logged no exception yet (restarting): an earlier start's.
    if "error" not in report and (earlier := next(filter(None, map(_error_text, journal.splitlines())), None)):
        report["error"] = earlier
    cause = refusal_problem(report) or report.get("error")
    if cause and cause not in message:
        return f"{message}: {cause}" if message else cause
    return message


# metric, the plan's key, the report's keys (the first present wins).
_COMPARED = (
    ("weights GiB", "weights_gib", ("weights_gib", "checkpoint_gib")),
    ("KV cache GiB", "kv_cache_gib", ("kv_cache_gib",)),
    ("KV cache tokens", "kv_tokens", ("kv_cache_tokens",)),
    ("max concurrency", "max_concurrency", ("max_concurrency",)),
    ("max model len fit", "max_model_len_fit", ("estimated_max_model_len",)),
)


# With pipeline parallel the journal the probe reads is the head's: its weights and KV-cache GiB
# are stage 0's workers' (each worker logs its own, v1/worker/gpu_worker.py), while the KV tokens
# are the engine's, every stage given the fewest blocks (kv_cache_utils.get_kv_cache_configs): the
# plan's headline figures, which are the limiting stage's.
_STAGE_0_KEYS = {"kv_cache_gib": "kv_cache_gib", "weights_gib": "weights_gib_per_gpu"}


def _plan_value(plan: dict, key: str):
    stages = plan.get("stages") or []
    if stages and key in _STAGE_0_KEYS and stages[0].get(_STAGE_0_KEYS[key]) is not None:
        return stages[0][_STAGE_0_KEYS[key]]
    value = plan.get(key)
    if value is None and key == "max_concurrency" and plan.get("kv_tokens") and plan.get("max_model_len"):
        # The preflight plan carries tokens and length, not vLLM's ratio: derive it the way
        # vLLM does (kv_cache_utils.py: tokens / max_model_len, block rounding aside).
        value = round(plan["kv_tokens"] / plan["max_model_len"], 2)
    return value


def error_pct(predicted, measured) -> float | None:
    """(predicted - measured) / measured in percent: positive means the plan over-predicted."""
    if predicted is None or measured is None or measured == 0:
        return None
    return round((predicted - measured) / abs(measured) * 100, 1)


def compare_with_plan(report: dict, plan: dict | None) -> list[dict]:
    """Rows {metric, predicted, measured, error_pct} for the facts the plan or vLLM gave."""
    plan = plan or {}
    rows = []
    for metric, plan_key, report_keys in _COMPARED:
        predicted = _plan_value(plan, plan_key)
        measured = next((report[k] for k in report_keys if report.get(k) is not None), None)
        if predicted is None and measured is None:
            continue
        rows.append(
            {
                "metric": metric,
                "predicted": predicted,
                "measured": measured,
                "error_pct": error_pct(predicted, measured),
            }
        )
    return rows


# The metrics a deploy holds the plan to (issue 18): what decides whether a model fits and how many
# requests it holds. The concurrency and the refusal's length follow from them.
CHECKED_METRICS = ("KV cache tokens", "KV cache GiB", "weights GiB")
DEFAULT_TOLERANCE_PCT = 5.0


def plan_check(rows: list[dict], tolerance_pct: float = DEFAULT_TOLERANCE_PCT) -> dict:
    """The plan against the engine on the checked metrics: {tolerance_pct, errors: {metric: pct},
    beyond: [one sentence per metric off by more than the tolerance]}."""
    errors, beyond = {}, []
    for row in rows:
        if row["metric"] not in CHECKED_METRICS or row["error_pct"] is None:
            continue
        errors[row["metric"]] = row["error_pct"]
        if abs(row["error_pct"]) > tolerance_pct:
            beyond.append(
                f"{row['metric']}: plan {_cell(row['predicted'])}, vLLM {_cell(row['measured'])} "
                f"({row['error_pct']:+.1f}%)"
            )
    return {"tolerance_pct": tolerance_pct, "errors": errors, "beyond": beyond}


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def format_comparison(rows: list[dict]) -> list[str]:
    """The comparison as aligned text lines (for a debug task or a CLI)."""

    table = [("metric", "plan", "vLLM", "error")]
    for row in rows:
        err = row["error_pct"]
        table.append(
            (
                row["metric"],
                _cell(row["predicted"]),
                _cell(row["measured"]),
                "-" if err is None else f"{err:+.1f}%",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in table
    ]
