#!/usr/bin/python
"""Ansible module: prove a vLLM OpenAI server answers, and compare its engine with the plan."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_probe
short_description: Prove a vLLM OpenAI server answers well, and compare its engine with the plan
version_added: "0.1.0"
description:
  - Waits for C(/health) of the server at I(base_url) (bounded by I(health_timeout), polled every
    second), then sends a real C(/v1/chat/completions) and a real C(/v1/completions) request with the
    API key (greedy, C(temperature 0)).
  - Checks each answer's HTTP status, JSON shape, served model name, finish_reason, that the text is
    not empty, and that it is not degenerate - only whitespace/newlines, or one short unit repeated
    up to I(max_tokens) (the endless newlines quantized chat models gave through C(/v1/completions)).
    Records latency and tokens/s (end to end) per request.
  - When given the unit's I(journal), reads what vLLM reported at its last start (weights GiB, KV cache
    GiB and tokens, maximum concurrency, or its refusal with the estimated maximum model length) and
    puts the preflight I(plan)'s prediction beside it.
  - Once the answers passed, reads C(/metrics) (without the key, which vLLM does not ask there) and
    checks that it declares I(metric_families), the names the shipped dashboard and alert rules read;
    the requests it just made show in the served count.
  - Fails listing every problem, with the end of the journal when one was given.
  - "Runs on the controller (C(delegate_to: localhost)) with the Python standard library only. Probing
    changes nothing: C(changed) is always false. In check mode it sends nothing and reports what it
    would probe."
options:
  base_url:
    description: The server, C(http://HOST:PORT), without C(/v1).
    type: str
    required: true
  served_model_name:
    description: The model name the server answers to (C(--served-model-name), else the model path).
    type: str
    required: true
  api_key:
    description: "Sent as C(Authorization: Bearer KEY) (the unit's C(VLLM_API_KEY)). Never logged."
    type: str
  health_timeout:
    description: Seconds to wait for C(/health) to answer 200 (model load takes 20-100 s on a CPU).
    type: int
    default: 600
  request_timeout:
    description: Seconds for one request.
    type: int
    default: 120
  max_tokens:
    description: C(max_tokens) of each request; an answer that is one unit repeated up to it is degenerate.
    type: int
    default: 16
  prompt:
    description: The C(/v1/completions) prompt.
    type: str
    default: The capital of France is
  chat_message:
    description: The user message sent to C(/v1/chat/completions).
    type: str
    default: Say hello in one short sentence.
  endpoints:
    description: Which endpoints to probe. An empty list only waits for C(/health).
    type: list
    elements: str
    choices: [chat, completions]
    default: [chat, completions]
  plan:
    description:
      - The preflight plan of this model (one item of C(vllm_preflight)'s C(plan.models)), to compare
        with what vLLM reported. A whole host plan with exactly one model is accepted too.
    type: dict
  plan_tolerance_pct:
    description:
      - How far (percent) vLLM's reported KV cache (tokens, GiB) and weights may be from the plan's
        before RV(plan_check) names the metric as beyond it (the rollout summary warns).
    type: float
    default: 5
  plan_strict:
    description:
      - Fail the probe when a checked metric is beyond I(plan_tolerance_pct) (vllm_calibration_strict),
        for models run near the memory edge; the host is then put back like any failed probe.
    type: bool
    default: false
  journal:
    description:
      - The unit's journal text (C(journalctl -o cat -u vllm-NAME)), collected on the host by the role.
        Read it after C(/health) answers, so the start-up report is in it.
    type: str
  journal_lines:
    description: Journal lines shown in the failure message (0 for none).
    type: int
    default: 40
  metric_families:
    description:
      - The metric families C(/metrics) must declare (the pinned vLLM's names the dashboard, alerts and
        status read). With an empty list only that C(/metrics) answers is checked (another vLLM release
        may name its families otherwise); with no I(endpoints) C(/metrics) is not read.
    type: list
    elements: str
    default:
      - vllm:num_requests_running
      - vllm:num_requests_waiting
      - vllm:kv_cache_usage_perc
      - vllm:request_success
      - vllm:prompt_tokens
      - vllm:generation_tokens
      - vllm:num_preemptions
      - vllm:time_to_first_token_seconds
      - vllm:e2e_request_latency_seconds
      - vllm:inter_token_latency_seconds
  use_proxy:
    description:
      - Whether C(http_proxy)/C(https_proxy) of the controller apply; by default the probe talks
        straight to the host.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vllm_fleet.fleet.module
attributes:
  check_mode:
    details: Sends no request; returns the URLs it would probe in RV(would_probe), and the engine
        report and comparison read from O(journal).
"""

EXAMPLES = r"""
- name: Ensure the model answers chat and completion requests well.
  vllm_probe:
    base_url: "http://{{ ansible_host }}:{{ model.port }}"
    served_model_name: gpt-3.5-turbo
    api_key: "{{ vllm_service_api_key }}"
    plan: "{{ preflight.plan.models[0] }}"
    # The unit's journal since its start, read and redacted on the host (the vllm_probe role's
    # files/unit_journal.py prints it as JSON with the start's InvocationID).
    journal: "{{ (unit_journal.stdout | from_json).journal }}"
  delegate_to: localhost
  register: probe

- name: Only wait (bounded) for the server to be healthy.
  vllm_probe:
    base_url: http://10.77.1.2:8000
    served_model_name: tiny
    endpoints: []
    health_timeout: 300
  delegate_to: localhost
"""

RETURN = r"""
healthy:
  description: Whether C(/health) answered 200 in time (null in check mode).
  returned: always
  type: bool
  sample: true
health_wait_s:
  description: Seconds until C(/health) answered 200 (or until the probe gave up).
  returned: always
  type: float
  sample: 41.0
chat:
  description: The C(/v1/chat/completions) request, when probed.
  returned: when chat was probed
  type: dict
  sample:
    status: 200
    latency_s: 0.412
    completion_tokens: 9
    tokens_per_s: 21.8
    text: "Hello! How can I help you today?"
    finish_reason: stop
    problems: []
  contains:
    status:
      description: HTTP status (null when the server could not be reached).
      type: int
    latency_s:
      description: Seconds from sending the request to the whole answer.
      type: float
    completion_tokens:
      description: C(usage.completion_tokens).
      type: int
    tokens_per_s:
      description: completion_tokens / latency_s (end to end, prefill and HTTP included).
      type: float
    text:
      description: The answer's text.
      type: str
    finish_reason:
      description: C(stop) or C(length) for a good answer.
      type: str
    problems:
      description: What is wrong with this answer.
      type: list
      elements: str
completions:
  description: The C(/v1/completions) request, when probed; the same keys as I(chat).
  returned: when completions was probed
  type: dict
  sample:
    status: 200
    latency_s: 0.38
    completion_tokens: 16
    tokens_per_s: 42.1
    text: " Paris. It is the capital and the largest city of France, with a population"
    finish_reason: length
    problems: []
engine_report:
  description:
    - What vLLM logged at its last start (keys absent when not logged) - vllm_version, max_model_len,
      weights_gib, model_load_s (GPU), checkpoint_gib, kv_cache_gib, host_memory_gib (CPU), device,
      kv_cache_tokens, max_concurrency_tokens, max_concurrency, init_engine_s; after a refusal
      estimated_max_model_len, kv_cache_needed_gib and error.
  returned: always
  type: dict
  sample:
    vllm_version: "0.31.1"
    device: GPU
    max_model_len: 32768
    weights_gib: 14.25
    kv_cache_gib: 54.3
    kv_cache_tokens: 1016896
    max_concurrency: 31.03
comparison:
  description: Rows C({metric, predicted, measured, error_pct}); error_pct > 0 means the plan over-predicted.
  returned: always
  type: list
  elements: dict
  sample: [{metric: "KV cache GiB", predicted: 55.1, measured: 54.3, error_pct: 1.5}]
plan_check:
  description:
    - The plan against what vLLM reported on the checked metrics (KV cache tokens and GiB, weights) -
      each metric's error in percent, and a sentence for each beyond O(plan_tolerance_pct).
  returned: always
  type: dict
  sample: {tolerance_pct: 5.0, errors: {"KV cache tokens": 0.0, "KV cache GiB": 0.0}, beyond: []}
metrics:
  description: What C(/metrics) answered, when the answers passed and I(endpoints) is not empty.
  returned: when /metrics was read
  type: dict
  sample: {status: 200, missing_families: [], requests_served: 2}
problems:
  description: Every problem found, each saying what is wrong, the numbers and what to do.
  returned: always
  type: list
  elements: str
  sample:
    - "http://10.77.1.2:8000/health did not answer 200 within 600 s (last: HTTP 503) -- read the unit's
      journal: the engine may have failed to start, or needs a longer health_timeout"
summary:
  description:
    - Printable lines - health wait, each answer with latency and tokens/s, the engine against the plan.
  returned: always
  type: list
  elements: str
  sample:
    - "/health: 200 after 41.0 s"
    - "chat: 412 ms, 9 tokens, 21.8 tokens/s, 'Hello! How can I help you today?' (stop)"
would_probe:
  description: The URLs the probe would request (check mode only).
  returned: in check mode
  type: list
  elements: str
  sample:
    - http://10.77.1.2:8000/health
    - http://10.77.1.2:8000/v1/chat/completions
    - http://10.77.1.2:8000/v1/completions
    - http://10.77.1.2:8000/metrics
"""

import json
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.engine_report import (
    compare_with_plan,
    format_comparison,
    parse_engine_report,
    plan_check,
    refusal_problem,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.monitoring import (
    REQUIRED_FAMILIES,
    load_figures,
    missing_families,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.probe import (
    CHAT,
    COMPLETIONS,
    check_chat_response,
    check_completion_response,
    journal_tail,
    read_answer,
    summary_line,
    throughput,
)

HEALTH_POLL_S = 1.0
HEALTH_REQUEST_TIMEOUT_S = 5.0
ENDPOINTS = {"chat": (CHAT, check_chat_response), "completions": (COMPLETIONS, check_completion_response)}


def _opener(use_proxy: bool):
    # An empty ProxyHandler ignores http_proxy: the probe must reach the host, not a proxy.
    # Not ansible-core's fetch_url: it ends the module (fail_json) on a ConnectionError, and a vLLM
    # that is still starting resets or drops connections to /health; the wait must keep polling.
    return urllib.request.build_opener() if use_proxy else urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(opener, url: str, api_key: str | None, timeout: float, body: dict | None = None):
    """(status, body text, None) or (None, None, why the server could not be reached)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace"), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace"), None
    except (urllib.error.URLError, OSError) as exc:
        return None, None, str(getattr(exc, "reason", exc))


def wait_healthy(opener, base_url: str, api_key: str | None, timeout: float) -> tuple[bool, float, str]:
    """Poll /health every second until 200 or timeout: (healthy, seconds waited, last answer)."""
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        status, _body, error = http(
            opener, f"{base_url}/health", api_key, max(0.1, min(HEALTH_REQUEST_TIMEOUT_S, remaining))
        )
        if status == 200:
            return True, round(time.monotonic() - started, 1), "200"
        last = f"HTTP {status}" if status is not None else error
        if time.monotonic() + HEALTH_POLL_S > deadline:
            return False, round(time.monotonic() - started, 1), last
        time.sleep(HEALTH_POLL_S)


def request_body(name: str, params: dict) -> dict:
    common = {"model": params["served_model_name"], "max_tokens": params["max_tokens"], "temperature": 0}
    if name == "chat":
        return {**common, "messages": [{"role": "user", "content": params["chat_message"]}]}
    return {**common, "prompt": params["prompt"]}


def probe_endpoint(opener, name: str, params: dict) -> dict:
    """Send one request and judge its answer."""
    path, check = ENDPOINTS[name]
    url = params["base_url"] + path
    started = time.monotonic()
    status, body, error = http(opener, url, params["api_key"], params["request_timeout"], request_body(name, params))
    latency = time.monotonic() - started
    if status is None:
        problems = [f"{path}: could not reach {url} after {latency:.1f} s: {error} -- is the server still up?"]
        answer = read_answer(path, 0, None)
    else:
        problems = check(status, body, params["served_model_name"], params["max_tokens"])
        answer = read_answer(path, status, body)
    return {
        "status": status,
        **throughput(latency, answer["completion_tokens"]),
        "text": answer["text"],
        "finish_reason": answer["finish_reason"],
        "problems": problems,
    }


def probe_metrics(opener, params: dict) -> dict:
    """GET /metrics without the key, and check the families the dashboard and alerts read."""
    url = params["base_url"] + "/metrics"
    status, body, error = http(opener, url, None, params["request_timeout"])
    if status != 200:
        why = f"HTTP {status}" if status is not None else error
        return {"status": status, "missing_families": [], "problems": [f"{url}: {why} -- Prometheus cannot scrape it"]}
    missing = missing_families(body, params["metric_families"])
    problems = (
        [f"{url} lacks {', '.join(missing)}: the dashboard and alert rules read these (vLLM renamed them?)"]
        if missing
        else []
    )
    served = load_figures(body)["requests_served"]
    return {"status": status, "missing_families": missing, "requests_served": served, "problems": problems}


def _model_plan(plan: dict | None) -> tuple[dict | None, str | None]:
    if plan and "models" in plan:
        if len(plan["models"]) != 1:
            return None, (f"plan holds {len(plan['models'])} models: pass this model's own (one item of plan.models)")
        return plan["models"][0], None
    return plan, None


def _engine_lines(report: dict, rows: list[dict], journal_given: bool) -> list[str]:
    if not journal_given:
        return []
    if not report:
        return ["engine: nothing of vLLM's start-up report is in the journal (was it read before /health?)"]
    lines = [
        "engine: " + ", ".join(f"{k} {report[k]}" for k in ("vllm_version", "device", "max_model_len") if k in report)
    ]
    return lines + format_comparison(rows) if rows else lines


def run(module: AnsibleModule) -> tuple[dict, str | None]:
    """The module's result, and the failure message (None when the model passed)."""
    p = module.params
    p["base_url"] = p["base_url"].rstrip("/")
    if p["max_tokens"] < 1 or p["health_timeout"] < 0 or p["request_timeout"] < 1:
        module.fail_json(msg="max_tokens and request_timeout must be at least 1, health_timeout at least 0")
    plan, plan_problem = _model_plan(p["plan"])
    if plan_problem:
        module.fail_json(msg=plan_problem)
    report = parse_engine_report(p["journal"]) if p["journal"] else {}
    rows = compare_with_plan(report, plan) if (report or plan) else []
    against_plan = plan_check(rows, p["plan_tolerance_pct"])
    result = {"changed": False, "engine_report": report, "comparison": rows, "plan_check": against_plan, "problems": []}

    if module.check_mode:
        paths = ["/health"] + [ENDPOINTS[name][0] for name in p["endpoints"]]
        paths += ["/metrics"] if p["endpoints"] else []
        result.update(healthy=None, health_wait_s=0.0, would_probe=[p["base_url"] + path for path in paths])
        # No unit restarted: the journal is the running engine's, the plan may be the next one's.
        result["plan_check"] = plan_check([], p["plan_tolerance_pct"])
        result["summary"] = [f"would probe {url}" for url in result["would_probe"]]
        return result, None

    opener = _opener(p["use_proxy"])
    healthy, waited, last = wait_healthy(opener, p["base_url"], p["api_key"], p["health_timeout"])
    result.update(healthy=healthy, health_wait_s=waited)
    summary = [f"/health: 200 after {waited} s" if healthy else f"/health: no 200 in {waited} s ({last})"]
    if not healthy:
        result["problems"].append(
            f"{p['base_url']}/health did not answer 200 within {p['health_timeout']} s (last: {last}) -- "
            "read the unit's journal: the engine may have failed to start, or needs a longer health_timeout"
        )
        refusal = refusal_problem(report)
        if refusal or report.get("error"):
            result["problems"].append(refusal or f"the journal shows vLLM failed: {report['error']}")
    else:
        for name in p["endpoints"]:
            answer = probe_endpoint(opener, name, p)
            result[name] = answer
            result["problems"].extend(answer["problems"])
            summary.append(summary_line(name, answer))
        if p["endpoints"] and not result["problems"]:
            metrics = probe_metrics(opener, p)
            result["metrics"] = {k: v for k, v in metrics.items() if k != "problems"}
            result["problems"].extend(metrics["problems"])
            if not metrics["problems"]:
                checked = (
                    f"{len(p['metric_families'])} families the dashboard reads"
                    if p["metric_families"]
                    else "families not checked"
                )
                summary.append(f"/metrics: {checked}, {metrics['requests_served']} requests served")
    if against_plan["beyond"]:
        tolerance, beyond = against_plan["tolerance_pct"], "; ".join(against_plan["beyond"])
        summary.append(f"plan vs vLLM: beyond {tolerance:g}%: {beyond}")
        if p["plan_strict"] and healthy:
            # The engine runs, but not as planned: near the memory edge that is a failure.
            result["problems"].append(
                f"vLLM's start disagrees with the plan beyond {tolerance:g}% "
                f"(vllm_calibration_strict): {beyond} -- calibrate the planner for this "
                "GPU (vllm-fleet calibrate, docs/planner.md) or correct the model's flags"
            )
    result["summary"] = summary + _engine_lines(report, rows, bool(p["journal"]))
    return result, _failure(result["problems"], p)


def _failure(problems: list[str], p: dict) -> str | None:
    if not problems:
        return None
    listed = "\n".join(f"- {problem}" for problem in problems)
    msg = f"{p['served_model_name']} at {p['base_url']} failed its probe:\n{listed}"
    if p["journal"] and p["journal_lines"] > 0:
        shown = journal_tail(p["journal"], p["journal_lines"], [p["api_key"]])
        msg += f"\n---- the end of the unit's journal (routes left out) ----\n{shown}"
    return msg


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "base_url": {"type": "str", "required": True},
            "served_model_name": {"type": "str", "required": True},
            "api_key": {"type": "str", "no_log": True},
            "health_timeout": {"type": "int", "default": 600},
            "request_timeout": {"type": "int", "default": 120},
            "max_tokens": {"type": "int", "default": 16, "no_log": False},  # a count, not a secret (no-log-needed)
            "prompt": {"type": "str", "default": "The capital of France is"},
            "chat_message": {"type": "str", "default": "Say hello in one short sentence."},
            "endpoints": {
                "type": "list",
                "elements": "str",
                "choices": ["chat", "completions"],
                "default": ["chat", "completions"],
            },
            "plan": {"type": "dict"},
            "plan_tolerance_pct": {"type": "float", "default": 5.0},
            "plan_strict": {"type": "bool", "default": False},
            "journal": {"type": "str"},
            "metric_families": {"type": "list", "elements": "str", "default": list(REQUIRED_FAMILIES)},
            "journal_lines": {"type": "int", "default": 40},
            "use_proxy": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    result, failure = run(module)
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
