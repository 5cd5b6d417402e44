"""The GPUs operators run: memory and compute capability, in one table.

``memory_mib`` is the total nvidia-smi prints (``memory.total``, MiB). ``torch_bytes`` is what
torch reports as the device's total (``torch.cuda.mem_get_info``), which vLLM budgets from; it
is a little less than nvidia-smi's figure and is filled in where known (H100 measured, T4 from
torch's own messages). Where it is None, ``usable_bytes`` derives it from nvidia-smi's MiB
(``torch_bytes_from_smi``). This module is the one place those figures live: the planner and
preflight read them from here.

Names are accepted as nvidia-smi spells them ("Tesla T4", "NVIDIA A100-SXM4-80GB") or in the
short form used in inventories ("T4", "A100-80GB"), case-insensitively.
"""

from __future__ import annotations

import re

MIB = 1024 * 1024

# nvidia-smi's total less torch's, where torch's is not known: the two known pairs differ by
# 429.5 MiB (T4) and 480 MiB (H100) (the driver's reservations, which nvidia-smi counts and
# cudaMemGetInfo does not); 450 MiB is between them, so an uncatalogued GPU is planned within
# ~30 MiB of what torch will report instead of ~0.45 GiB above it.
SMI_MINUS_TORCH_MIB = 450

# Lowest compute capability with bfloat16 (vllm/platforms/cuda.py: "Bfloat16 is only supported on
# GPUs with compute capability of at least 8.0").
BF16_MIN_CAPABILITY = 80

# name: (compute capability, nvidia-smi MiB, torch bytes or None, nvidia-smi names)
CATALOG: dict[str, tuple[str, int, int | None, tuple[str, ...]]] = {
    # torch reports "total capacity of 14.58 GiB" (driver 535; mbzuai-oryx/GeoPixel#5):
    # 15,655,829,504 B, 429.5 MiB below nvidia-smi's 15360 MiB. Not measured here; other drivers
    # print 14.56-14.75 GiB (docs/planner.md).
    "T4": ("7.5", 15360, 15_655_829_504, ("Tesla T4",)),
    "V100-16GB": ("7.0", 16160, None, ("Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB")),
    "V100-32GB": (
        "7.0",
        32510,
        None,
        ("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB", "Tesla V100S-PCIE-32GB"),
    ),
    "A10": ("8.6", 23028, None, ("NVIDIA A10",)),
    "A10G": ("8.6", 23028, None, ("NVIDIA A10G",)),
    "L4": ("8.9", 23034, None, ("NVIDIA L4",)),
    "L40S": ("8.9", 46068, None, ("NVIDIA L40S",)),
    "A100-40GB": ("8.0", 40960, None, ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB")),
    "A100-80GB": ("8.0", 81920, None, ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")),
    "A800": ("8.0", 81920, None, ("NVIDIA A800-SXM4-80GB", "NVIDIA A800 80GB PCIe")),
    # Measured with real vLLM 0.26 (shared/facts.md): nvidia-smi 81559 MiB, torch 85,017,493,504 B.
    "H100": ("9.0", 81559, 85_017_493_504, ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100")),
    "H800": ("9.0", 81559, None, ("NVIDIA H800", "NVIDIA H800 PCIe")),
    "H20": ("9.0", 97871, None, ("NVIDIA H20",)),
    "H200": ("9.0", 143771, None, ("NVIDIA H200",)),
    "RTX 3090": ("8.6", 24576, None, ("NVIDIA GeForce RTX 3090",)),
    "RTX 4090": ("8.9", 24564, None, ("NVIDIA GeForce RTX 4090",)),
}


class UnknownGPUError(ValueError):
    pass


def _key(name: str) -> str:
    name = re.sub(r"^(nvidia|tesla|geforce)\s+", "", name.strip().lower())
    name = re.sub(r"^(nvidia|tesla|geforce)\s+", "", name)
    return re.sub(r"[^a-z0-9]", "", name)


_INDEX: dict[str, str] = {}
for _short, (_cc, _mib, _tb, _smi) in CATALOG.items():
    for _alias in (_short, *_smi):
        _INDEX[_key(_alias)] = _short


def _entry(short: str, spelled: str) -> dict:
    cc, mib, torch_bytes, _rest = CATALOG[short]
    return {
        "name": short,
        "reported_name": spelled,
        "memory_mib": mib,
        "torch_bytes": torch_bytes,
        "compute_capability": cc,
    }


def lookup(name: str) -> dict:
    """The catalog entry for a GPU name in any accepted spelling; UnknownGPUError otherwise."""
    key = _key(name)
    if key in _INDEX:
        return _entry(_INDEX[key], name)
    # nvidia-smi variants we have not listed ("NVIDIA A100-SXM4-80GB-MIG…"): the longest catalog
    # key the name starts with, where the next character is not a digit ("a10" ≠ "a100…").
    candidates = sorted(
        (k for k in _INDEX if key.startswith(k) and not key[len(k) : len(k) + 1].isdigit()),
        key=len,
        reverse=True,
    )
    if candidates:
        return _entry(_INDEX[candidates[0]], name)
    known = ", ".join(CATALOG)
    raise UnknownGPUError(
        f"GPU {name!r} is not in the catalog ({known}): declare it as "
        "{name, memory_mib, compute_capability} in vllm_gpus"
    )


def resolve(item) -> dict:
    """A GPU from inventory (a catalog name or a dict) or from nvidia-smi, as a plain dict."""
    if isinstance(item, str):
        return lookup(item)
    if not isinstance(item, dict) or "name" not in item:
        raise UnknownGPUError(f"a GPU must be a name or a dict with 'name', got {item!r}")
    base: dict = {}
    try:
        base = lookup(str(item["name"]))
    except UnknownGPUError:
        if "memory_mib" not in item or "compute_capability" not in item:
            raise
        base = {"name": str(item["name"]), "reported_name": str(item["name"]), "torch_bytes": None}
    gpu = {**base, **{k: v for k, v in item.items() if v is not None and k != "name"}}
    if item.get("torch_bytes") is None and int(gpu["memory_mib"]) != base.get("memory_mib"):
        # Another memory size than the catalog's (an "H100 NVL" matched as "H100"): the catalog's
        # torch figure belongs to the catalog's size, not to this GPU.
        gpu["torch_bytes"] = None
    gpu["memory_mib"] = int(gpu["memory_mib"])
    gpu["compute_capability"] = str(gpu["compute_capability"])
    return gpu


def cc_int(gpu: dict) -> int:
    """Compute capability as vLLM compares it: "7.5" -> 75."""
    major, _dot, minor = str(gpu["compute_capability"]).partition(".")
    return int(major) * 10 + int(minor or 0)


def has_bf16(gpu: dict) -> bool:
    return cc_int(gpu) >= BF16_MIN_CAPABILITY


def torch_bytes_from_smi(memory_mib: int) -> int:
    """torch's total for a GPU known only by nvidia-smi's MiB (see SMI_MINUS_TORCH_MIB)."""
    return (int(memory_mib) - SMI_MINUS_TORCH_MIB) * MIB


def usable_bytes(gpu: dict) -> int:
    """Total memory as torch sees it, what vLLM budgets from.

    In order: the GPU's ``torch_bytes``; the catalog's figure for a GPU of that name and the
    catalog's nvidia-smi size (a plain ``{"name": "T4", "memory_mib": 15360}``); else
    nvidia-smi's MiB less SMI_MINUS_TORCH_MIB.
    """
    if gpu.get("torch_bytes"):
        return int(gpu["torch_bytes"])
    mib = gpu.get("memory_mib")
    try:
        known = lookup(str(gpu.get("name", "")))
    except UnknownGPUError:
        known = None
    if known and known["torch_bytes"] and (mib is None or int(mib) == known["memory_mib"]):
        return int(known["torch_bytes"])
    if not mib:
        raise ValueError(f"GPU {gpu.get('name') or gpu!r} has neither torch_bytes nor memory_mib")
    return torch_bytes_from_smi(mib)


def parse_nvidia_smi(csv_text: str) -> list[dict]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total,compute_cap[,driver_version]
    --format=csv,noheader,nounits`; unknown models keep the numbers nvidia-smi gives. The driver,
    when asked for, goes into the start records the probe keeps (calibration.py)."""
    gpus = []
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        index, name, mib, cc = parts[:4]
        gpu = resolve({"name": name, "memory_mib": int(float(mib)), "compute_capability": cc})
        gpu["index"] = int(index)
        if len(parts) > 4 and parts[4]:
            gpu["driver_version"] = parts[4]
        gpus.append(gpu)
    return gpus
