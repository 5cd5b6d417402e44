#!/usr/bin/env bash
# ansible-test sanity / units (issue 14) over the collection as it ships: built from this checkout
# with ansible-galaxy (galaxy.yml's build_ignore leaves out the checkout's tools: bench/, scripts/,
# molecule/, tests/hosts, tests/integration) and installed into <dir>/ansible_collections/vllm_fleet/
# fleet, where ansible-test needs it. <dir> is outside the checkout (ansible-test would list the copy's
# files with the checkout's git, which ignores them): a new directory under $VLLM_FLEET_ANSIBLE_TEST_DIR
# (default ${TMPDIR:-/tmp}), removed at the end, so runs side by side (make -j) never share one.
#   Usage: scripts/ansible-test.sh sanity|units [ansible-test options]
# ansible-test builds one virtual environment per sanity test and bootstraps pip into each from a
# script on ci-files.testing.ansible.com, which is not reachable here; scripts/ansible-test-get-pip.py
# stands in for it with the same pip release from PyPI (see that file).
set -euo pipefail
command=${1:?usage: $0 sanity|units [ansible-test options]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$here/.venv  # ansible-core brings ansible-test
parent=${VLLM_FLEET_ANSIBLE_TEST_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$parent"
work=$(mktemp -d "$parent/vllm-fleet-ansible-test-$command.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/ansible_collections/vllm_fleet/fleet
mkdir -p "$work/dist"
# The install looks for installed copies only in the place it installs to (not in the checkout's
# collections/ link, which would make it a no-op).
ANSIBLE_COLLECTIONS_PATH=$work "$venv/bin/ansible-galaxy" collection build "$here" \
    --output-path "$work/dist" >/dev/null
ANSIBLE_COLLECTIONS_PATH=$work "$venv/bin/ansible-galaxy" collection install \
    "$work"/dist/vllm_fleet-fleet-*.tar.gz -p "$work" >/dev/null

candidates=("$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
requirements=${candidates[0]}
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$requirements" | head -1)
[[ $pip_version =~ ^[0-9.]+$ ]] || { echo "cannot find the pip release ansible-test pins in $requirements" >&2; exit 1; }
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
if ! compgen -G "$cache/pip-$pip_version-*.whl" >/dev/null; then
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps "pip==$pip_version" -d "$cache"
fi
# Always the checkout's stand-in: a fix to it reaches a cache made before.
cp "$here/scripts/ansible-test-get-pip.py" "$cache/get_pip_${pip_version//./_}.py"

python=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cd "$root"
"$venv/bin/ansible-test" "$command" --venv --python "$python" --color no "$@"
