#!/usr/bin/env bash
# make demo: boot a local systemd test host, serve the tiny model on it with
# site.yml (real vLLM CPU build under systemd), and show a request that works.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
start=$(date +%s)
state=/var/lib/vllm-fleet/demo
mkdir -p "$state"

echo "demo: booting one local systemd test host"
$py -m tests.hosts create 1
controller=$($py -c 'from tests.hosts import testhosts as t; print(t.list_hosts()[0].controller_address)')
address=$($py -c 'from tests.hosts import testhosts as t; print(t.list_hosts()[0].address)')

echo "demo: publishing the tiny model on the stand-in ModelScope hub at http://$controller:8765"
rm -rf "$state/hub"
$py -c "from tests.support.hub import publish_tiny_model; publish_tiny_model('$state/hub', 'vllm-fleet/tiny-qwen2@v1')"
$py -m tests.support.hub --root "$state/hub" --host "$controller" --port 8765 >"$state/hub.log" 2>&1 &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q http "$state/hub.log" && break; sleep 0.1; done

# One key per demo host, kept so the curl below (and a re-run) use the same one.
[[ -s $state/api-key ]] || $py -c 'import secrets; print("demo-" + secrets.token_hex(16))' >"$state/api-key"
chmod 600 "$state/api-key"
export VLLM_FLEET_API_KEY=$(cat "$state/api-key") VLLM_FLEET_HUB_PORT=8765

echo "demo: ansible-playbook -i inventories/local site.yml"
ansible-playbook -i inventories/local site.yml

body='{"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16, "temperature": 0}'
echo
echo "demo: the tiny model answers (its weights are random, so the words are too):"
curl -sS "http://$address:8000/v1/chat/completions" -H "Authorization: Bearer $VLLM_FLEET_API_KEY" \
  -H 'Content-Type: application/json' -d "$body"
echo
cat <<MSG

demo: time to first answer: $(( $(date +%s) - start )) s (from a bare host, including the vLLM install)
Try it yourself:
  curl http://$address:8000/v1/chat/completions -H "Authorization: Bearer \$(cat $state/api-key)" \\
       -H 'Content-Type: application/json' -d '$body'
Remove the host with: make hosts-down
MSG
