"""The planner's calibration loop (docs/planner.md "Calibration"): every start of vLLM that a
probe reads becomes a record (what the plan predicted, term by term, beside what vLLM reported);
`vllm-fleet calibrate RECORDS...` fits, per GPU name and vLLM version, the overhead terms that
bring the planner's mean KV-cache error on those starts to zero; a calibration file holds them,
and `vllm-fleet check --calibration FILE` (preflight.check's ``calibration``) plans with them, the
plan saying which terms came from it and from how many starts. Without a file the built-in terms
(planner.py) stand: nothing is calibrated silently.

The budget vLLM sizes its KV cache from, per GPU of the stage that limits it (planner.py):

    kv_cache = requested - weights - activation_scale x activation - non_torch
               - cuda_graph_scale x cuda_graphs   (graphs only when counted: not eager, >= 0.21)

A record carries each term as the plan used it, and the activation and graph terms before any
calibration scale, so a record made with a calibration is fitted against the built-in terms all
the same.

The fit, per (GPU name, vLLM version), from the starts whose KV cache vLLM reported:
- eager starts (no graph term counted) give the non-torch memory each start needed to be exact; their
  mean is the calibrated non_torch_gib. With three or more eager starts whose activation spans
  at least 2x, a least-squares line separates the activation scale from the constant;
- starts with CUDA graphs then give the graph scale (a least-squares ratio through zero, not
  below zero);
- a term without starts to fit it keeps its built-in value, and the file says so.
Pure functions over plain dicts.
"""

from __future__ import annotations

import json
import math

from .engine_report import compare_with_plan, error_pct
from .planner import CALIBRATED_TERMS, GIB, NON_TORCH_BYTES
from .serve_flag_labels import NO_MEMORY_EFFECT, label_of

FORMAT = "vllm-fleet-calibration/1"
RECORD_FORMAT = "vllm-fleet-start/1"

BUILT_IN = {"non_torch_gib": round(NON_TORCH_BYTES / GIB, 3), "activation_scale": 1.0, "cuda_graph_scale": 1.0}
TERM_LABELS = {
    "non_torch_gib": "non-torch GiB",
    "activation_scale": "activation peak x",
    "cuda_graph_scale": "CUDA graphs x",
}
# Least squares needs spread: three eager starts whose activation differs at least twofold.
MIN_STARTS_FOR_SLOPE = 3
MIN_ACTIVATION_SPREAD = 2.0


class CalibrationError(ValueError):
    """A records or calibration file that cannot be used, with the reason."""


# --- records -----------------------------------------------------------------------------------


def start_record(
    *,
    host: str,
    model: str,
    start: str,
    plan: dict | None,
    report: dict,
    flags: dict | None = None,
    gpu: dict | None = None,
    device: str = "cuda",
    vllm_version: str | None = None,
    driver: str | None = None,
    cuda: str | None = None,
    recorded_at: str | None = None,
) -> dict:
    """One start of vLLM: the plan's prediction (with its terms) beside what vLLM reported.

    ``start``: what identifies this start of the unit (systemd's InvocationID): a re-run that
    finds the same start adds no record. ``plan``: the model's preflight plan (preflight.check);
    ``report``: engine_report.parse_engine_report of the unit's journal since that start."""
    plan = plan or {}
    rows = compare_with_plan(report, plan)
    return {
        "format": RECORD_FORMAT,
        "host": host,
        "model": model,
        "start": start,
        "recorded_at": recorded_at,
        "gpu": gpu or ({"name": plan["gpu_name"]} if plan.get("gpu_name") else None),
        "driver": driver,
        "cuda": cuda,
        "device": device,
        # The release, without a local part ("0.32.0+cpu"): what a calibration file is looked up by.
        "vllm_version": str(report.get("vllm_version") or vllm_version or plan.get("vllm_version") or "").split(
            "+", maxsplit=1
        )[0]
        or None,
        "flags": {k: v for k, v in (flags or {}).items() if _changes_memory(k)},
        "plan": {
            # With pipeline parallel the terms are the limiting stage's, what vLLM reported stage 0's
            # (engine_report): such a start is kept, and not fitted.
            "pipeline_stages": int(plan.get("pp") or 1),
            "weights_gib": plan.get("weights_gib"),
            "kv_cache_gib": plan.get("kv_cache_gib"),
            "kv_tokens": plan.get("kv_tokens"),
            "terms": plan.get("terms"),
            "calibration": (plan.get("calibration") or {}).get("terms") or {},
        },
        "measured": {
            "weights_gib": _first(report, "weights_gib", "checkpoint_gib"),
            "kv_cache_gib": report.get("kv_cache_gib"),
            "kv_tokens": report.get("kv_cache_tokens"),
            "estimated_max_model_len": report.get("estimated_max_model_len"),
        },
        "errors": {row["metric"]: row["error_pct"] for row in rows if row["error_pct"] is not None},
    }


def _changes_memory(flag: str) -> bool:
    """Whether a flag changes vLLM's memory (modeled by the planner or not): serve_flag_labels."""
    label = label_of(flag)
    return label is not None and label[0] != NO_MEMORY_EFFECT


def _release(version) -> str | None:
    return str(version).split("+", maxsplit=1)[0] if version else None


def _first(report: dict, *keys):
    return next((report[k] for k in keys if report.get(k) is not None), None)


def read_records(texts: list[tuple[str, str]]) -> list[dict]:
    """Records from JSON-lines texts [(name, text)]; a line that is not a record is an error
    naming its file and line (a records file is data the fleet wrote: damage is not skipped)."""
    records = []
    for name, text in texts:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise CalibrationError(f"{name}:{number}: not JSON ({e})") from e
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise CalibrationError(f"{name}:{number}: not a vllm-fleet start record ({RECORD_FORMAT})")
            records.append(record)
    return records


def record_key(record: dict) -> tuple:
    """What makes a record new: the same host, model and start is the same record."""
    return (record.get("host"), record.get("model"), record.get("start"))


def new_record_line(existing: str, record: dict, name: str = "records file") -> str | None:
    """The JSON line to append to a records file whose text is ``existing``, or None when a record
    of the same start is already there (a re-run adds nothing). A damaged file raises
    CalibrationError: appending after damage would hide it."""
    if any(record_key(r) == record_key(record) for r in read_records([(name, existing)])):
        return None
    # A file whose last line lacks its newline (edited by hand) would glue two records together.
    lead = "\n" if existing and not existing.endswith("\n") else ""
    return lead + json.dumps(record, sort_keys=True) + "\n"


# --- the fit ---------------------------------------------------------------------------------


def _built_in_terms(record: dict) -> dict | None:
    """A record's budget with the plan's built-in activation and graph terms (whatever calibration
    it was planned with), or None when the record cannot be fitted (no plan terms, no KV cache
    reported, a CPU start)."""
    terms = (record.get("plan") or {}).get("terms")
    measured = (record.get("measured") or {}).get("kv_cache_gib")
    if not terms or measured is None or record.get("device") == "cpu" or measured <= 0:
        return None
    if (record.get("plan") or {}).get("pipeline_stages", 1) > 1:
        return None  # terms of the limiting stage, KV GiB of stage 0: not one budget
    if "activation_builtin_gib" not in terms:
        return None  # not a plan's budget_terms: nothing to fit against
    # The plan's own terms before any calibration scale, exact to 4 decimals.
    activation = float(terms["activation_builtin_gib"])
    graphs = float(terms["cuda_graph_builtin_gib"]) if terms.get("graphs_counted") else 0.0
    return {
        "requested": float(terms["requested_gib"]),
        "weights": float(terms["weights_gib"]),
        "activation": activation,
        "graphs": graphs,
        "graphs_counted": bool(terms.get("graphs_counted")),
        "measured_kv": float(measured),
    }


def _line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def fit_terms(budgets: list[dict]) -> dict:
    """The calibrated terms of one group: {term: {value, starts}}; a term with no starts to fit it
    is left out (the built-in value stands)."""
    eager = [b for b in budgets if not b["graphs_counted"]]
    graphs = [b for b in budgets if b["graphs_counted"] and b["graphs"] > 0]
    terms: dict = {}
    non_torch, activation_scale = BUILT_IN["non_torch_gib"], 1.0
    if eager:
        # What non-torch + activation had to be, for each start to be exact.
        overhead = [b["requested"] - b["weights"] - b["measured_kv"] for b in eager]
        acts = [b["activation"] for b in eager]
        spread = max(acts) / min(acts) if min(acts) > 0 else 0
        if len(eager) >= MIN_STARTS_FOR_SLOPE and spread >= MIN_ACTIVATION_SPREAD:
            intercept, slope = _line_fit(acts, overhead)
            if slope > 0:
                non_torch, activation_scale = intercept, slope
                terms["activation_scale"] = {"value": round(slope, 4), "starts": len(eager)}
        if "activation_scale" not in terms:
            non_torch = sum(o - a for o, a in zip(overhead, acts, strict=True)) / len(eager)
        terms["non_torch_gib"] = {"value": round(non_torch, 4), "starts": len(eager)}
    if graphs:
        # What the graph term had to be, with the non-torch and activation terms above.
        needed = [
            b["requested"] - b["weights"] - b["measured_kv"] - non_torch - activation_scale * b["activation"]
            for b in graphs
        ]
        xs = [b["graphs"] for b in graphs]
        scale = sum(x * y for x, y in zip(xs, needed, strict=True)) / sum(x * x for x in xs)
        # Not below zero: no graph estimate at all is the least a start can need (a negative fit
        # means the other terms over-count on these starts).
        terms["cuda_graph_scale"] = {"value": round(max(scale, 0.0), 4), "starts": len(graphs)}
    return terms


def predicted_kv(budget: dict, terms: dict) -> float:
    """The limiting GPU's KV cache under ``terms`` (built-in where a term is missing)."""

    def value(name):
        entry = terms.get(name)
        return float(BUILT_IN[name]) if entry is None else float(entry["value"])

    return (
        budget["requested"]
        - budget["weights"]
        - value("activation_scale") * budget["activation"]
        - value("non_torch_gib")
        - value("cuda_graph_scale") * budget["graphs"]
    )


def _stats(errors: list[float]) -> dict:
    if not errors:
        return {"mean_pct": None, "max_abs_pct": None}
    return {
        "mean_pct": round(sum(errors) / len(errors), 2),
        "max_abs_pct": round(max(abs(e) for e in errors), 2),
    }


def calibrate(records: list[dict]) -> dict:
    """The calibration file's content: per (GPU name, vLLM version) the starts, the fitted terms,
    and the planner's error on those starts (KV cache GiB and tokens, weights): before, as the
    recorded plans were made; after, under the fitted terms."""
    groups: dict = {}
    for record in records:
        gpu = (record.get("gpu") or {}).get("name")
        groups.setdefault((gpu, record.get("vllm_version")), []).append(record)
    out = []
    for (gpu, version), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        fitted = [(r, b) for r in members if (b := _built_in_terms(r)) is not None]
        terms = fit_terms([budget for _record, budget in fitted]) if fitted else {}
        before_kv, after_kv, before_tok, after_tok, weights = [], [], [], [], []
        for record, budget in fitted:
            # Before: the plans as they were made (with whatever calibration they had); after:
            # the same starts under the fitted terms.
            planned_kv, tokens = record["plan"].get("kv_cache_gib"), record["plan"].get("kv_tokens")
            kv_after = predicted_kv(budget, terms)
            before_kv.append(error_pct(planned_kv, budget["measured_kv"]))
            after_kv.append(error_pct(kv_after, budget["measured_kv"]))
            measured_tokens = record["measured"].get("kv_tokens")
            if tokens and measured_tokens and planned_kv and planned_kv > 0:
                # Tokens follow the KV GiB (block rounding aside): scale the plan's own count.
                before_tok.append(error_pct(tokens, measured_tokens))
                after_tok.append(error_pct(tokens * kv_after / planned_kv, measured_tokens))
        for record in members:
            err = (record.get("errors") or {}).get("weights GiB")
            if err is not None:
                weights.append(err)
        out.append(
            {
                "gpu": gpu,
                "vllm_version": version,
                "starts": len(members),
                "fitted_starts": len(fitted),
                "terms": terms,
                "kv_cache_gib": {"before": _stats(before_kv), "after": _stats(after_kv)},
                "kv_tokens": {"before": _stats(before_tok), "after": _stats(after_tok)},
                # Weights are the checkpoint's, not an overhead: reported, never calibrated.
                "weights_gib": _stats(weights),
            }
        )
    return {"format": FORMAT, "groups": out}


# --- using a calibration file ------------------------------------------------------------------


def load_calibration(text: str, name: str = "calibration file") -> dict:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CalibrationError(f"{name}: not JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("groups"), list):
        raise CalibrationError(f"{name}: not a vllm-fleet calibration file ({FORMAT}; `vllm-fleet calibrate --write`)")
    for group in data["groups"]:
        for term, entry in (group.get("terms") or {}).items():
            value = entry.get("value") if isinstance(entry, dict) else None
            starts = entry.get("starts") if isinstance(entry, dict) else None
            ok = isinstance(value, (int, float)) and math.isfinite(value) and isinstance(starts, int)
            # A scale below zero (or an activation scale of zero) describes no engine.
            ok = ok and term in CALIBRATED_TERMS and (term == "non_torch_gib" or value >= 0)
            if not ok or (term == "activation_scale" and value == 0):
                where = f"{group.get('gpu')} / vLLM {group.get('vllm_version')}"
                raise CalibrationError(f"{name}: {where}: bad term {term} (a number and its starts)")
    return data


def terms_for(calibration: dict | None, gpu_name: str | None, vllm_version: str) -> dict | None:
    """The terms a calibration holds for this GPU and vLLM version, or None."""
    release = _release(vllm_version)
    for group in (calibration or {}).get("groups") or []:
        if group.get("gpu") == gpu_name and group.get("vllm_version") == release and group.get("terms"):
            return group["terms"]
    return None


def note(calibration: dict | None, gpu_name: str | None, vllm_version: str, memory) -> dict | None:
    """What the plan says about calibration: the terms it used and from how many starts, or that
    the file has none for this GPU and version (the built-in terms stood)."""
    if calibration is None or memory is None:
        return None
    used = memory.calibrated
    if not used:
        return {
            "terms": {},
            "summary": f"the calibration has nothing for {gpu_name} on vLLM {vllm_version}: built-in terms",
        }
    parts = [
        f"{TERM_LABELS[t]} {used[t]['value']:g} (built in {BUILT_IN[t]:g}; from {_starts(used[t]['starts'])})"
        for t in CALIBRATED_TERMS
        if t in used
    ]
    return {"terms": used, "summary": f"{gpu_name} on vLLM {vllm_version}: " + ", ".join(parts)}


def format_calibration(calibration: dict) -> str:
    """The calibration as a person reads it (the CLI's output; docs/planner.md's table)."""
    lines = []
    for group in calibration["groups"]:
        lines.append(
            f"{group['gpu']} / vLLM {group['vllm_version']}: {group['starts']} starts, "
            f"{group['fitted_starts']} with a KV cache to fit"
        )
        for term in CALIBRATED_TERMS:
            entry = group["terms"].get(term)
            got = f"{entry['value']:g} (from {_starts(entry['starts'])})" if entry else "not fitted: built in"
            lines.append(f"  {TERM_LABELS[term]:<18} built in {BUILT_IN[term]:g} -> {got}")
        for label, key in (("KV cache GiB", "kv_cache_gib"), ("KV cache tokens", "kv_tokens")):
            before, after = group[key]["before"], group[key]["after"]
            lines.append(
                f"  {label:<18} mean error {_pct(before['mean_pct'])} -> {_pct(after['mean_pct'])}, "
                f"max |error| {_abs_pct(before['max_abs_pct'])} -> {_abs_pct(after['max_abs_pct'])}"
            )
        w = group["weights_gib"]
        lines.append(
            f"  {'weights GiB':<18} mean error {_pct(w['mean_pct'])}, max |error| {_abs_pct(w['max_abs_pct'])} "
            "(not calibrated)"
        )
    return "\n".join(lines) if lines else "no records"


def _pct(value) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _abs_pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _starts(n: int) -> str:
    return f"{n} start" if n == 1 else f"{n} starts"
