"""Does vLLM build each model's layers at tp 1/2/4/8 on a T4 (cc 7.5) / V100 (cc 7.0)? Ask vLLM itself.

    . /root/vllm-env.sh && python3 bench/gpu/layer_check.py --out $OUT/layer_check.json

Runs ON THE DEVICE MACHINE (CUDA vLLM 0.26.0), one process, no distributed init, no weights.
For every config in model_configs/qwen/ and tests/data/configs/, each compute capability and tp:

1. vLLM's ModelConfig for the checkpoint's config.json (its quantization override picks the
   method, e.g. gptq -> auto_gptq), built while vLLM's platform reports the stated capability
   (``get_device_capability`` patched on the platform class: every capability check in vLLM goes
   through it: the config's min capability, Marlin's supported types, the kernel choice);
2. ``ModelConfig.verify_with_parallel_config`` (attention heads % tp);
3. ``VllmConfig._get_quantization_config`` (quant min capability, act dtypes), with the Qwen2
   class's ``packed_modules_mapping`` as the model loader sets it;
4. one decoder layer's linear layers, built as vllm/model_executor/models/qwen2.py builds them
   (QKVParallelLinear with bias, o_proj RowParallelLinear, gate_up MergedColumnParallelLinear,
   down_proj RowParallelLinear), with ``get_tensor_model_parallel_world_size`` patched to tp in
   vllm.model_executor.layers.linear: vLLM computes the partitions itself (``divide``) and each
   quantized layer's LinearMethod runs ``create_weights`` and picks its kernel
   (choose_mp_linear_kernel) for that partition;
5. Qwen2Attention's own head asserts (copied: building the attention layer needs an engine).

A case is "accept" when every step passes; else "refuse" with vLLM's exception. The linear
methods and kernels vLLM chose are recorded per layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIRS = [ROOT / "model_configs" / "qwen", ROOT / "tests" / "data" / "configs"]
GPTQ_MODULES = [
    ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
    ["self_attn.o_proj"],
    ["mlp.up_proj", "mlp.gate_proj"],
    ["mlp.down_proj"],
]
GPUS = {"T4": (7, 5), "V100": (7, 0)}


class _Parallel(SimpleNamespace):
    """The ParallelConfig fields verify_with_parallel_config reads; others (newer releases) are off."""

    def __getattr__(self, name):
        return None


def prepare(src: Path, root: Path) -> Path:
    """A model dir with the config (GPTQ: modules_in_block_to_quantize, which vLLM would derive
    from the safetensors headers a real checkpoint has; every linear layer of these is 4-bit)."""
    config = json.loads((src / "config.json").read_text())
    q = config.get("quantization_config")
    if q and q.get("quant_method") == "gptq" and not q.get("modules_in_block_to_quantize"):
        q["modules_in_block_to_quantize"] = GPTQ_MODULES
    d = root / src.name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    return d


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "layer_check.json"))
    ap.add_argument("--work", default="/root/layer-check-models")
    ap.add_argument("--tp", default="1,2,4,8")
    args = ap.parse_args()
    t0 = time.time()

    import torch
    import vllm
    import vllm.model_executor.layers.linear as linear
    from vllm.config import LoadConfig, ModelConfig, VllmConfig
    from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability

    state = {"cc": (7, 5), "tp": 1}
    platform_cls = type(current_platform)
    platform_cls.get_device_capability = classmethod(lambda cls, device_id=0: DeviceCapability(*state["cc"]))
    import vllm.distributed.parallel_state as ps

    fake = {
        "get_tensor_model_parallel_world_size": lambda: state["tp"],
        "get_tensor_model_parallel_rank": lambda: 0,
    }
    originals = {name: getattr(ps, name) for name in fake}

    def patch_tp() -> None:
        """Every vLLM module that imported the tp getters by name (linear.py, parameter.py, ...)."""
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("vllm"):
                for name, fn in fake.items():
                    if getattr(mod, name, None) is originals[name]:
                        setattr(mod, name, fn)

    def build(mdir: Path) -> dict:
        steps: dict = {}
        patch_tp()
        mc = ModelConfig(model=str(mdir), tokenizer=str(mdir), skip_tokenizer_init=True, dtype="half", seed=0)
        steps["quantization"] = mc.quantization
        pc = _Parallel(
            tensor_parallel_size=state["tp"],
            pipeline_parallel_size=1,
            enable_expert_parallel=False,
            decode_context_parallel_size=1,
            world_size_across_dp=state["tp"],
        )
        mc.verify_with_parallel_config(pc)
        qc = VllmConfig._get_quantization_config(mc, LoadConfig(load_format="dummy")) if mc.quantization else None
        if qc is not None:
            qc.packed_modules_mapping = dict(Qwen2ForCausalLM.packed_modules_mapping)
        hf = mc.hf_config
        hidden, heads = hf.hidden_size, hf.num_attention_heads
        kv = getattr(hf, "num_key_value_heads", heads)
        head_dim = getattr(hf, "head_dim", None) or hidden // heads
        tp = state["tp"]
        # qwen2.py Qwen2Attention.__init__ (needs an engine to build whole): the same asserts
        assert heads % tp == 0, f"Qwen2Attention: total_num_heads {heads} % tp {tp} != 0"
        if kv >= tp:
            assert kv % tp == 0, f"Qwen2Attention: total_num_kv_heads {kv} % tp {tp} != 0"
        else:
            assert tp % kv == 0, f"Qwen2Attention: tp {tp} % total_num_kv_heads {kv} != 0"
        patch_tp()  # modules imported while building the configs
        p = "model.layers.0"
        layers = {
            "qkv_proj": lambda: linear.QKVParallelLinear(
                hidden, head_dim, heads, kv, bias=True, quant_config=qc, prefix=f"{p}.self_attn.qkv_proj"
            ),
            "o_proj": lambda: linear.RowParallelLinear(
                heads * head_dim, hidden, bias=False, quant_config=qc, prefix=f"{p}.self_attn.o_proj"
            ),
            "gate_up_proj": lambda: linear.MergedColumnParallelLinear(
                hidden, [hf.intermediate_size] * 2, bias=False, quant_config=qc, prefix=f"{p}.mlp.gate_up_proj"
            ),
            "down_proj": lambda: linear.RowParallelLinear(
                hf.intermediate_size, hidden, bias=False, quant_config=qc, prefix=f"{p}.mlp.down_proj"
            ),
        }
        for name, make in layers.items():
            layer = make()
            method = layer.quant_method
            kernel = getattr(method, "kernel", None)
            steps[name] = {
                "method": type(method).__name__,
                "kernel": type(kernel).__name__ if kernel is not None else None,
                "params": {k: list(v.shape) for k, v in layer.named_parameters()},
            }
            del layer
        return steps

    work = Path(args.work)
    rows = []
    for base in CONFIG_DIRS:
        for src in sorted(base.iterdir()):
            if not (src / "config.json").is_file():
                continue
            # It builds qwen2.py's layers: Qwen3 (q/k norms) and MoE checkpoints are not that layout.
            if json.loads((src / "config.json").read_text()).get("architectures") != ["Qwen2ForCausalLM"]:
                continue
            mdir = prepare(src, work)
            for gpu, cc in GPUS.items():
                for tp in [int(t) for t in args.tp.split(",")]:
                    state.update(cc=cc, tp=tp)
                    row = {"config": str(src.relative_to(ROOT)), "gpu": gpu, "cc": f"{cc[0]}.{cc[1]}", "tp": tp}
                    try:
                        row["layers"] = build(mdir)
                        row["vllm"] = "accept"
                    except Exception as e:  # vLLM's refusal is the datum
                        # ValueError/AssertionError are vLLM's refusals; anything else is this check broken
                        row["vllm"] = "refuse" if isinstance(e, (ValueError, AssertionError)) else "check-error"
                        row["error_type"] = type(e).__name__
                        row["error"] = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
                        row["where"] = traceback.extract_tb(e.__traceback__)[-1].filename.split("site/")[-1]
                    rows.append(row)
                    print(row["config"].split("/")[-1], gpu, tp, row["vllm"], row.get("error", "")[:140], flush=True)
    data = {
        "about": "vLLM's own verdict on building each model's layers (bench/gpu/layer_check.py)",
        "vllm_version": vllm.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "seconds": round(time.time() - t0, 1),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(rows)} rows in {time.time() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
