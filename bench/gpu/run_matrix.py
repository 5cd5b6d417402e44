"""Run the GPU-truth matrix ON THE DEVICE MACHINE: real `vllm serve` with the role-rendered argv.

    . /root/vllm-env.sh && python3 bench/gpu/run_matrix.py --out $OUT [--ids a,b] [--start N] [--budget S]
    python3 bench/gpu/run_matrix.py --reparse results.json --logs LOGS_DIR   # here, after adding a pattern

For each case of bench/gpu/matrix.json (rendered here by bench/gpu/matrix.py through the role's
`vllm_argv` filter) it writes the model's config.json into a model dir (dummy weights: no weight
files; GPTQ configs get `modules_in_block_to_quantize`, which vLLM otherwise derives from the
safetensors it does not have), starts vLLM's own CLI entry point (what the `vllm` console script
calls) with the argv, waits for vLLM's "init engine ... took" line (or its exit, or /health for
probe cases, which also send one /v1/completions), then stops the whole process group before
the next case. It parses what vLLM logs (with VLLM_LOGGING_LEVEL=DEBUG for the profile split)
into results.json, rewritten after every case so a cut-off run still returns what it measured.
Cases run one at a time: vLLM's profiling reads device-wide free memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIGS = ROOT / "model_configs" / "qwen"
PY = os.environ.get("PY", "/opt/torch/.venv/bin/python3")
if not Path(PY).exists():
    PY = sys.executable
LAUNCH = "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; sys.exit(main())"

GPTQ_MODULES = [
    ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
    ["self_attn.o_proj"],
    ["mlp.up_proj", "mlp.gate_proj"],
    ["mlp.down_proj"],
]

PATTERNS = {
    "weights_gib": (r"Model loading took (-?[\d.]+) GiB", float),
    "kv_gib": (r"Available KV cache memory: (-?[\d.]+) GiB", float),
    "kv_tokens": (r"GPU KV cache size: ([\d,]+) tokens", lambda s: int(s.replace(",", ""))),
    "max_concurrency": (r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x", float),
    "estimated_max_model_len": (r"estimated maximum model length is (\d+)", int),
    "init_engine_s": (r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s", float),
    "compile_s": (
        r"init engine \(profile, create kv cache, warmup model\) took [\d.]+ s \(compilation: ([\d.]+) s",
        float,
    ),
    "non_kv_gib": (r"Total non KV cache memory: (-?[\d.]+)GiB", float),
    "torch_peak_increase_gib": (r"torch peak memory increase: (-?[\d.]+)GiB", float),
    "non_torch_increase_gib": (r"non-torch forward increase memory: (-?[\d.]+)GiB", float),
    "profile_weights_gib": (r"weights memory: (-?[\d.]+)GiB", float),
    "cudagraph_equiv_util": (r"is equivalent to --gpu-memory-utilization=([\d.]+) without", float),
    "graph_pool_gib": (r"Graph capturing finished in \d+ secs, took (-?[\d.]+) GiB", float),
    "initial_free_gib": (r"Initial free memory: ([\d.]+) GiB", float),
    "total_memory_gib": (r"total_memory=([\d.]+)GiB", float),
    "max_num_batched_tokens": (r"max_num_batched_tokens=(\d+)", int),
    "linear_kernel": (
        r"(?:Using|Selected) (\w+) for (?:AutoGPTQLinearMethod|AutoAWQMarlinLinearMethod|\w+LinearMethod)",
        str,
    ),
    "attention_backend": (r"Using (\w+) attention backend", str),
    # MoE kernels (vLLM 0.26 fused_moe/oracle/*): "Using 'marlin' WNA16 MoE backend.",
    # "Using TRITON Fp8 MoE backend out of ...", "Using TritonExperts MoE backend" (unquantized)
    "moe_method": (r"(Using \S+ (?:\w+ )?MoE backend)", str),
    "moe_fallback": (r"(Falling back to Moe WNA16 kernels)", str),
    # V1 gpu_model_runner (Qwen3-MoE in 0.26) charges its graph estimate before sizing the KV cache
    "cudagraph_estimate_gib": (r"Estimated CUDA graph memory: (-?[\d.]+) GiB total", float),
    "torch_compile_s": (r"torch\.compile took ([\d.]+) s in total", float),
    "model_runner": (r"(Using V2 Model Runner|v1/worker/gpu_model_runner\.py)", str),
}
REFUSALS = (
    "No available memory for the cache blocks",
    "estimated maximum model length is",
    # A quantized layer split by tp off its group boundary (AWQ/GPTQ without Marlin); a worker
    # raises it, so the line starts with the worker's "(Worker_TP0 pid=N) ERROR ..." prefix.
    "The input size is not aligned with the quantized weight shape",
)


def parse_log(text: str) -> dict:
    out: dict = {}
    for key, (pattern, cast) in PATTERNS.items():
        m = re.search(pattern, text)
        if m:
            out[key] = cast(m.group(1))
    for phrase in REFUSALS:
        if phrase in text:
            out["error"] = phrase
    errs = re.findall(
        r"(?:^|\] |\s)(?:ValueError|RuntimeError|AssertionError|torch\.OutOfMemoryError|\w+Error): (.+)$", text, re.M
    )
    if errs:
        out["last_error_line"] = errs[-1][:600]
        # tp workers raise the cause; the API server then reports only "Engine core initialization failed"
        out["first_error_line"] = errs[0][:600]
    return out


def gptq_moe_modules(config: dict) -> list[list[str]]:
    """What AutoGPTQ/optimum quantize in a MoE block (and vLLM would read from the safetensors):
    attention, the shared expert (Qwen2-MoE) and every expert; the router `mlp.gate` and
    `shared_expert_gate` stay fp16. vLLM 0.26 quantizes RoutedExperts whatever this list says
    (auto_gptq.get_quant_method) and checks it only for linear layers."""
    n = int(config["num_experts"])
    out = [GPTQ_MODULES[0], GPTQ_MODULES[1]]
    if config.get("shared_expert_intermediate_size"):
        out += [["mlp.shared_expert.up_proj", "mlp.shared_expert.gate_proj"], ["mlp.shared_expert.down_proj"]]
    out += [[f"mlp.experts.{i}.{p}" for p in ("up_proj", "gate_proj") for i in range(n)]]
    out += [[f"mlp.experts.{i}.down_proj" for i in range(n)]]
    return out


def model_dir(name: str, root: Path) -> Path:
    config = json.loads((CONFIGS / name / "config.json").read_text())
    q = config.get("quantization_config")
    if q and q.get("quant_method") == "gptq" and not q.get("modules_in_block_to_quantize"):
        q["modules_in_block_to_quantize"] = gptq_moe_modules(config) if config.get("num_experts") else GPTQ_MODULES
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=1))
    return d


def _get(url: str, body: dict | None = None, timeout: float = 5.0) -> str:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # children of the group (engine core) may outlive the leader briefly
            deadline = time.time() + wait
            while time.time() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.5)
        except subprocess.TimeoutExpired:
            continue


def run_case(case: dict, models_root: Path, logs: Path, port: int, timeout: float) -> dict:
    mdir = model_dir(case["model"], models_root)
    argv = list(case["argv"])
    assert argv[1] == "serve", argv
    argv = [PY, "-c", LAUNCH, "serve", str(mdir)] + [str(port) if a == "PORT" else a for a in argv[3:]]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1", "VLLM_NO_USAGE_STATS": "1"}
    # Multi-GPU hosts are shared: NVLink multicast stays off (the device's KINDS.md), also in
    # vLLM's own symmetric-memory all-reduce. These change no memory figure the planner models.
    env |= {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    env |= {"VLLM_ALLREDUCE_USE_SYMM_MEM": "0"}
    log_path = logs / f"{case['id']}.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    result: dict = {"id": case["id"], "argv": argv[3:], "status": "timeout"}
    done_at = None
    try:
        while time.time() - t0 < timeout:
            time.sleep(1.0)
            text = log_path.read_text(errors="replace")
            if proc.poll() is not None:
                result["status"] = "exited"
                result["returncode"] = proc.returncode
                break
            if "init engine (profile, create kv cache, warmup model) took" in text:
                done_at = done_at or time.time()
                if not case.get("probe"):
                    result["status"] = "started"
                    break
                try:
                    _get(f"http://127.0.0.1:{port}/health")
                except Exception:
                    continue
                result["healthy_after_s"] = round(time.time() - t0, 1)
                body = {"model": case["flags"]["served-model-name"][0], "prompt": [1, 2, 3, 4, 5], "max_tokens": 8}
                body.update({"ignore_eos": True, "return_token_ids": True})
                try:
                    reply = json.loads(_get(f"http://127.0.0.1:{port}/v1/completions", body, timeout=60))
                    result["completion_tokens"] = reply.get("usage", {}).get("completion_tokens")
                except Exception as e:
                    result["completion_error"] = str(e)[:300]
                result["status"] = "served"
                break
    finally:
        stop(proc)
    text = log_path.read_text(errors="replace")
    result.update(parse_log(text))
    result["wall_to_init_s"] = round((done_at or time.time()) - t0, 1)
    result["wall_s"] = round(time.time() - t0, 1)
    return result


def reparse(results_path: Path, logs: Path) -> None:
    """Re-read every case's log with the current patterns (a pattern added after a device run)."""
    data = json.loads(results_path.read_text())
    for r in data["results"]:
        log = logs / f"{r['id']}.log"
        if log.is_file():
            r.update(parse_log(log.read_text(errors="replace")))
    results_path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-truth"))
    ap.add_argument("--matrix", default=str(HERE / "matrix.json"))
    ap.add_argument("--ids", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--start", type=int, default=0, help="skip the first N cases")
    ap.add_argument("--budget", type=float, default=540, help="seconds; no case starts after budget - 60")
    ap.add_argument("--deadline", type=float, default=0, help="epoch seconds; overrides --budget")
    ap.add_argument("--state", default="/root/gpu-truth-state.json", help="cumulative results across calls")
    ap.add_argument("--case-timeout", type=float, default=240)
    ap.add_argument("--min-left", type=float, default=60, help="seconds; no case starts with less left")
    ap.add_argument("--logs", default="/root/gpu-truth-logs", help="per-case logs; tarred into OUT/logs.tar.gz")
    ap.add_argument("--models", default="/root/gpu-truth-models")
    ap.add_argument("--reparse", metavar="RESULTS_JSON", help="HERE: re-read --logs into a results.json; run nothing")
    args = ap.parse_args()
    if args.reparse:
        reparse(Path(args.reparse), Path(args.logs))
        return 0
    t_start = time.time()
    if args.deadline:
        args.budget = args.deadline - t_start
    out = Path(args.out)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    matrix = json.loads(Path(args.matrix).read_text())
    cases = matrix["cases"][args.start :]
    if args.ids:
        wanted = args.ids.split(",")
        cases = [c for c in matrix["cases"] if c["id"] in wanted]
    results_path = out / "results.json"
    state = Path(args.state)
    # a warm machine keeps /root between calls: skip what an earlier call measured
    results: list[dict] = json.loads(state.read_text())["results"] if state.is_file() else []
    done = {r["id"] for r in results}
    cases = [c for c in cases if c["id"] not in done]
    env_info = {}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        env_info["nvidia_smi"] = smi.stdout.strip()
    except Exception as e:
        env_info["nvidia_smi"] = str(e)
    for i, case in enumerate(cases):
        left = args.budget - (time.time() - t_start)
        if left < args.min_left:
            print(f"budget reached: {len(cases) - i} cases not run, from {case['id']}", flush=True)
            break
        r = run_case(case, Path(args.models), logs, 8100 + len(results), min(args.case_timeout, left - 5))
        results.append(r)
        for path in (results_path, state):
            path.write_text(json.dumps({"env": env_info, "results": results}, indent=1) + "\n")
        # the device returns at most 8 files: every log travels in one archive, rewritten per case
        subprocess.run(["tar", "-czf", str(out / "logs.tar.gz"), "-C", str(logs), "."], check=False)
        keys = ("status", "weights_gib", "kv_gib", "kv_tokens", "estimated_max_model_len", "error", "wall_s")
        print(case["id"], {k: r.get(k) for k in keys}, flush=True)
    if not results_path.exists() and results:
        results_path.write_text(json.dumps({"env": env_info, "results": results}, indent=1) + "\n")
    left = [c["id"] for c in cases if c["id"] not in {r["id"] for r in results}]
    print(f"{len(results)} cases measured in all; {len(left)} left: {','.join(left)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
