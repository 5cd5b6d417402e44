"""`vllm-fleet check MODEL --gpu T4 [--gpu-count N] [--calibration FILE] [vllm serve flags...] [--json]`
and `vllm-fleet calibrate RECORDS... [--write FILE] [--json]` (a directory: its *.jsonl files).

check: MODEL is a local model directory, a path to a config.json, or a repo id (owner/name) found
in model_configs/ or fetched from the hub. Every other argument is a `vllm serve` flag, spelled as
vLLM spells it. Exit status 0 when the command would start, 1 when refused, 2 on bad input.

calibrate: the start records a fleet keeps (JSON lines, calibration.py) in, per GPU and vLLM
version the planner's error on them and the terms that bring its mean to zero out; --write saves
those terms as a calibration file for check --calibration and preflight. Exit 0, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .calibration import CalibrationError, calibrate, format_calibration, load_calibration, read_records
from .gpus import UnknownGPUError, resolve
from .hub_configs import ModelIdError, load_facts, looks_local, validate_repo_id
from .model_facts import ModelConfigError
from .preflight import check, format_plan
from .serve_args import ServeArgsError, parse_argv
from .versions import DEFAULT_VLLM_VERSION


class BadInput(ValueError):
    """What makes the command exit 2 with one line: input no plan can be made from."""


def _positive_int(flags: dict, name: str) -> int:
    value = flags.get(name)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"--{name} must be a whole number of at least 1, got {value!r}")
    return value


def validate_inputs(args, flags: dict) -> None:
    """Refuse, before any file or hub is read, what cannot describe a deployment."""
    _positive_int(flags, "tensor-parallel-size")
    _positive_int(flags, "pipeline-parallel-size")
    util = flags.get("gpu-memory-utilization")
    if util is not None and not (isinstance(util, (int, float)) and 0 < util <= 1):
        raise BadInput(f"--gpu-memory-utilization must be in (0, 1], got {util!r}")
    if args.gpu_count is not None and args.gpu_count < 1:
        raise BadInput(f"--gpu-count must be at least 1, got {args.gpu_count}")
    try:
        resolve(args.gpu)
    except UnknownGPUError as e:
        raise BadInput(str(e)) from e
    if looks_local(args.model):
        return  # load_facts reads it, or says it does not exist, without the hub
    try:
        validate_repo_id(args.model)
    except ModelIdError as e:
        raise BadInput(str(e)) from e


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-fleet", description="Plan and check vLLM deployments.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "check",
        help="would `vllm serve MODEL flags...` start on these GPUs?",
        description="Unrecognised arguments are taken as `vllm serve` flags.",
    )
    c.add_argument("model", help="model dir, path to config.json, or repo id (owner/name)")
    c.add_argument("--gpu", required=True, help="GPU model: T4, A100-80GB, 'Tesla T4', ...")
    c.add_argument(
        "--gpu-count",
        type=int,
        default=None,
        help="GPUs given to the model (default: tensor-parallel-size x pipeline-parallel-size)",
    )
    c.add_argument("--vllm-version", default=DEFAULT_VLLM_VERSION)
    c.add_argument("--revision", default=None, help="hub revision (default: master)")
    c.add_argument("--no-fetch", action="store_true", help="never contact the hub")
    c.add_argument("--json", action="store_true", help="print the plan as JSON")
    c.add_argument(
        "--allow-unmodeled",
        action="store_true",
        help="plan an architecture vLLM supports but the planner does not model: flags and GPUs are "
        "checked, memory is not (the plan says so)",
    )
    c.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="plan with the terms this calibration file (vllm-fleet calibrate --write) holds for the GPU "
        "and vLLM version; the plan says which terms and from how many starts",
    )
    k = sub.add_parser(
        "calibrate",
        help="fit the planner's overhead terms to recorded starts of vLLM",
        description="Per GPU and vLLM version: the planner's error on the recorded starts, before "
        "and after the fitted terms.",
    )
    k.add_argument(
        "records",
        nargs="+",
        help="start records (JSON lines) the probe kept, or their directory (the inventory's .vllm-starts/)",
    )
    k.add_argument("--write", default=None, metavar="FILE", help="save the fitted terms as a calibration file")
    k.add_argument("--json", action="store_true", help="print the calibration as JSON")
    return p


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CalibrationError(f"{path}: {e.strerror}") from e


def _record_files(paths: list[str]) -> list[str]:
    """Files as given; a directory gives its *.jsonl files (one per host), and none is an error."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".jsonl"))
            if not found:
                raise CalibrationError(f"{path}: no start records (*.jsonl) in this directory")
            files += found
        else:
            files.append(path)
    return files


def calibrate_command(args) -> int:
    try:
        records = read_records([(path, _read(path)) for path in _record_files(args.records)])
    except CalibrationError as e:
        sys.stderr.write(f"vllm-fleet: {e}\n")
        return 2
    result = calibrate(records)
    if args.write:
        try:
            with open(args.write, "w", encoding="utf-8") as f:
                f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        except OSError as e:
            sys.stderr.write(f"vllm-fleet: {args.write}: {e.strerror}\n")
            return 2
    sys.stdout.write((json.dumps(result, indent=2) if args.json else format_calibration(result)) + "\n")
    return 0


def check_command(args, serve_argv: list[str]) -> int:
    try:
        flags, positional = parse_argv(serve_argv)
    except ServeArgsError as e:
        sys.stderr.write(f"vllm-fleet: {e}\n")
        return 2
    if positional:
        sys.stderr.write(f"vllm-fleet: unexpected arguments {positional}\n")
        return 2
    try:
        validate_inputs(args, flags)
        calibration = load_calibration(_read(args.calibration), args.calibration) if args.calibration else None
        facts = load_facts(args.model, args.revision, fetch=not args.no_fetch)
    except (BadInput, ModelConfigError, CalibrationError) as e:
        sys.stderr.write(f"vllm-fleet: {e}\n")
        return 2
    tp = int(flags.get("tensor-parallel-size") or 1) * int(flags.get("pipeline-parallel-size") or 1)
    count = args.gpu_count if args.gpu_count is not None else tp
    plan = check(
        facts,
        [args.gpu] * count,
        flags,
        args.vllm_version,
        name=args.model,
        allow_unmodeled=args.allow_unmodeled,
        calibration=calibration,
    )
    # A CLI's output, not a module's: module_utils forbids print() (ansible-test's pylint).
    sys.stdout.write((json.dumps(plan, indent=2, default=str) if args.json else format_plan(plan)) + "\n")
    return 0 if plan["verdict"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    if args.command == "check":
        return check_command(args, rest)
    if args.command == "calibrate":
        if rest:
            sys.stderr.write(f"vllm-fleet: unexpected arguments {rest}\n")
            return 2
        return calibrate_command(args)
    return 2
