#!/usr/bin/env bash
# System packages the controller needs (Debian 12, as root). Idempotent: it
# calls apt only when something is missing, so a warm machine pays nothing.
set -euo pipefail

packages=(
  python3-venv          # the project's virtual environment (Debian's python3 lacks ensurepip)
  systemd-container     # systemd-nspawn: the local test hosts
  debootstrap           # their Debian 12 root filesystem (built once, then cached)
  zstd                  # the cached rootfs tarball
  iproute2              # network namespaces and veth pairs for the test hosts
  openssh-client        # ansible reaches hosts over SSH
  git git-lfs           # the weights role's git mode
  prometheus            # the observability tests: a real Prometheus and promtool (docs/observability.md)
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# python3-venv is only needed when python3 cannot make a venv by itself (pyenv builds can).
if python3 -c 'import ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
read -r -a missing <<<"${missing[*]}"
if ((${#missing[@]} == 0)); then
  echo "deps: all system packages present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing ${missing[*]}; run as root (apt-get install)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
