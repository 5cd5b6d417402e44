"""Judge a vLLM OpenAI server's answers: well-formed, from the right model, not empty, not
degenerate. Pure functions over (HTTP status, body) pairs; the vllm_probe module does the HTTP.

Degenerate output is what the old recipe saw from quantized chat models through
/v1/completions: a run of "\\n" up to max_tokens. The checks are built so the short odd text of a
tiny random model ("ainsHon ver answersuboer") passes, while an answer that is only whitespace,
or one short unit repeated until max_tokens cut it off, fails.
"""

from __future__ import annotations

import json
import re
from collections import Counter

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ENDPOINT_PATHS = {"chat": CHAT, "completions": COMPLETIONS}

# vLLM's finish reasons for a normal answer: the model stopped, or max_tokens cut it off.
GOOD_FINISH_REASONS = ("stop", "length")

# A repeated unit counts as degenerate when it is at most this many tokens long, repeats at
# least MIN_REPEATS times and covers at least MIN_REPEAT_SHARE of the answer. A tiny random
# model's loops are phrases of ~8 tokens covering half of a 64-token answer, and pass.
MAX_UNIT_TOKENS = 2
MAX_UNIT_CHARS = 16
MIN_REPEATS = 4
MIN_REPEAT_SHARE = 0.75

# Counts read as a person writes them: "16 <times> '\\n'".
TIMES = "\N{MULTIPLICATION SIGN}"
CHAT_FIX = "use /v1/chat/completions or a chat template / check the model"
MODEL_FIX = "check the model (its weights, tokenizer and chat template): it answers nothing but whitespace"
LOOP_FIX = "check the model and its chat template; a looping quantized model needs another checkpoint"


def parse_body(body: dict | str | bytes | None) -> tuple[dict | None, str | None]:
    """(the JSON object, None) or (None, what is wrong with the body)."""
    if isinstance(body, dict):
        return body, None
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return None, "the body is empty, not JSON"
    try:
        doc = json.loads(body)
    except ValueError:
        return None, f"the body is not JSON: {body[:200]!r}"
    if not isinstance(doc, dict):
        return None, f"the body is JSON but not an object: {body[:200]!r}"
    return doc, None


def _error_message(doc: dict | None, raw) -> str:
    """vLLM's error text: {"error": {"message": ...}}, {"error": "Unauthorized"} or {"detail": ...}."""
    if doc is None:
        return str(raw)[:300] if raw else "(no body)"
    error = doc.get("error", doc.get("detail", doc.get("message")))
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300] if error is not None else json.dumps(doc)[:300]


def http_problem(endpoint: str, status: int, body) -> str | None:
    """A sentence for a non-200 answer, with what to do; None for 200."""
    if status == 200:
        return None
    doc, _error = parse_body(body)
    what = f"{endpoint}: HTTP {status}: {_error_message(doc, body)}"
    if status == 401:
        return f"{what} -- the API key was refused: the probe's api_key must be the unit's VLLM_API_KEY"
    if status == 404:
        return f"{what} -- the served model name is not the one asked for: check --served-model-name"
    if status == 400:
        return (
            f"{what} -- vLLM refused the request: e.g. prompt + max_tokens longer than --max-model-len, "
            "or a model without a chat template on /v1/chat/completions"
        )
    if status >= 500:
        return f"{what} -- the engine failed while answering: read the unit's journal"
    return f"{what} -- an unexpected status for an OpenAI request"


def _visible(unit: str) -> str:
    """A short unit as code would spell it, so whitespace can be seen: '\\n', ' the'."""
    return repr(unit)


def _whitespace_problem(text: str, to_max: str, endpoint: str) -> str:
    # Through /v1/completions a chat model may ramble newlines where chat would answer (the old
    # recipe's quantized models); through chat as well, the model itself is broken.
    if endpoint == COMPLETIONS:
        what, fix = "the degenerate output quantized chat models give through /v1/completions", CHAT_FIX
    else:
        what, fix = "a degenerate answer even through the chat template", MODEL_FIX
    counts = Counter(text)
    if set(counts) == {"\n"}:
        return f"the answer is only newlines ({len(text)} {TIMES} '\\n'){to_max}: {what} -- {fix}"
    spelled = ", ".join(f"{n} {TIMES} {_visible(ch)}" for ch, n in counts.most_common())
    return f"the answer is only whitespace ({spelled}){to_max}: {what} -- {fix}"


def _periodic_suffix(text: str, period: int) -> int:
    """How many trailing characters of text repeat with the given period."""
    n = len(text)
    i = n - 1 - period
    while i >= 0 and text[i] == text[i + period]:
        i -= 1
    return n - 1 - i


def _repeated_unit(text: str, max_unit_chars: int) -> tuple[str, float] | None:
    """The shortest unit whose repetition makes up the end of text, and how often it repeats,
    when it repeats often enough and covers enough of the text to count; else None."""
    for period in range(1, min(max_unit_chars, len(text) // MIN_REPEATS) + 1):
        covered = _periodic_suffix(text, period)
        repeats = covered / period
        share = covered / len(text)
        if repeats >= MIN_REPEATS and share >= MIN_REPEAT_SHARE:
            return text[len(text) - period :], repeats
    return None


def degeneracy(text: str, token_count: int | None, max_tokens: int, endpoint: str = COMPLETIONS) -> str | None:
    """Why an answer is degenerate, or None when it is not (an empty answer is not judged here:
    see empty_answer).

    Degenerate: only whitespace/newlines (at any length), or one short unit (about a token or
    two) repeated until max_tokens cut the answer off.
    """
    if not text:
        return None
    reached_max = token_count is None or token_count >= max_tokens
    to_max = f" up to max_tokens ({max_tokens})" if token_count is not None and token_count >= max_tokens else ""
    if not text.strip():
        return _whitespace_problem(text, to_max, endpoint)
    if not reached_max:
        return None  # the model chose to stop: a short repetition such as "ha ha ha" may be meant
    # A unit of at most MAX_UNIT_TOKENS tokens, in characters at this answer's chars/token.
    chars_per_token = len(text) / token_count if token_count else 4
    max_unit = min(MAX_UNIT_CHARS, max(1, round(MAX_UNIT_TOKENS * chars_per_token)))
    found = _repeated_unit(text, max_unit)
    if found is None:
        return None
    unit, repeats = found
    return (
        f"the answer repeats {_visible(unit)} {repeats:.0f} times{to_max} "
        f"({len(text)} characters, {token_count if token_count is not None else '?'} tokens): "
        f"a degenerate loop -- {LOOP_FIX}"
    )


def empty_answer(text: str | None, token_count: int | None, finish_reason: str | None) -> str | None:
    """Why an answer is empty, or None when it has text. Random or broken weights may emit
    tokens that decode to "" (facts.md), which is not the same failure as stopping at once."""
    if text:
        return None
    if token_count:
        return (
            f"the answer is empty: {token_count} tokens were generated (finish_reason {finish_reason!r}) "
            "but decode to no text -- the tokenizer does not match the weights, or the weights are broken"
        )
    return (
        f"the answer is empty: the model stopped at once (finish_reason {finish_reason!r}, "
        f"{token_count if token_count is not None else '?'} tokens) -- check the prompt, the chat "
        "template and the model's eos tokens"
    )


def _completion_tokens(doc: dict) -> tuple[int | None, str | None]:
    usage = doc.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("completion_tokens"), int):
        return None, "no usage.completion_tokens in the answer: cannot measure tokens/s"
    return usage["completion_tokens"], None


def _first_choice(doc: dict) -> tuple[dict | None, str | None]:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None, f"no choices in the answer: {json.dumps(doc)[:200]}"
    return choices[0], None


def _chat_text(choice: dict) -> tuple[str | None, str | None]:
    message = choice.get("message")
    if not isinstance(message, dict):
        return None, "choices[0] has no message object"
    content = message.get("content")
    if content is None:
        return None, (
            "choices[0].message.content is null: the model answered with a tool call or reasoning only "
            "-- probe with a plain question, or check the reasoning/tool parser flags"
        )
    if not isinstance(content, str):
        return None, f"choices[0].message.content is {type(content).__name__}, not a string"
    return content, None


def _completion_text(choice: dict) -> tuple[str | None, str | None]:
    text = choice.get("text")
    if not isinstance(text, str):
        return None, "choices[0].text is missing or not a string"
    return text, None


def read_answer(endpoint: str, status: int, body) -> dict:
    """The facts of one answer: {text, finish_reason, completion_tokens, model}, with None for
    what the body does not hold."""
    doc, _error = parse_body(body)
    answer = {"text": None, "finish_reason": None, "completion_tokens": None, "model": None}
    if status != 200 or doc is None:
        return answer
    answer["model"] = doc.get("model")
    answer["completion_tokens"], _error = _completion_tokens(doc)
    choice, _error = _first_choice(doc)
    if choice is not None:
        answer["finish_reason"] = choice.get("finish_reason")
        text_of = _chat_text if endpoint == CHAT else _completion_text
        answer["text"], _error = text_of(choice)
    return answer


def _check(endpoint: str, object_name: str, text_of, status, body, expected_model, max_tokens) -> list[str]:
    """Every problem of one answer, each a sentence prefixed with the endpoint."""
    problem = http_problem(endpoint, status, body)
    if problem:
        return [problem]
    doc, problem = parse_body(body)
    if problem:
        return [f"{endpoint}: {problem}"]
    problems = []
    if doc.get("object") != object_name:
        problems.append(f"object is {doc.get('object')!r}, not {object_name!r}: not an OpenAI answer")
    if doc.get("model") != expected_model:
        problems.append(
            f"the answer names model {doc.get('model')!r}, not {expected_model!r}: the unit serves "
            "another --served-model-name than the probe expects"
        )
    tokens, problem = _completion_tokens(doc)
    if problem:
        problems.append(problem)
    elif tokens > max_tokens:
        problems.append(f"{tokens} tokens generated for max_tokens {max_tokens}: max_tokens was not honoured")
    choice, problem = _first_choice(doc)
    if problem:
        return [f"{endpoint}: {p}" for p in [*problems, problem]]
    finish = choice.get("finish_reason")
    if finish not in GOOD_FINISH_REASONS:
        problems.append(
            f"finish_reason is {finish!r}, not one of {', '.join(GOOD_FINISH_REASONS)}: the request was cut "
            "short by the engine -- read the unit's journal"
        )
    text, problem = text_of(choice)
    if problem:
        problems.append(problem)
    else:
        problem = empty_answer(text, tokens, finish) or degeneracy(text, tokens, max_tokens, endpoint)
        if problem:
            problems.append(problem)
    return [f"{endpoint}: {p}" for p in problems]


def check_chat_response(status: int, body, expected_model: str, max_tokens: int) -> list[str]:
    """Problems with a /v1/chat/completions answer (empty list: a good answer)."""
    return _check(CHAT, "chat.completion", _chat_text, status, body, expected_model, max_tokens)


def check_completion_response(status: int, body, expected_model: str, max_tokens: int) -> list[str]:
    """Problems with a /v1/completions answer (empty list: a good answer)."""
    return _check(COMPLETIONS, "text_completion", _completion_text, status, body, expected_model, max_tokens)


def throughput(latency_s: float, completion_tokens: int | None) -> dict:
    """Latency and tokens/s of one request. tokens/s is end to end (prefill and HTTP included):
    a floor for the engine's decode speed, comparable between deploys of the same model."""
    tokens_per_s = None
    if completion_tokens and latency_s > 0:
        tokens_per_s = round(completion_tokens / latency_s, 1)
    return {
        "latency_s": round(latency_s, 3),
        "completion_tokens": completion_tokens,
        "tokens_per_s": tokens_per_s,
    }


def summary_line(name: str, result: dict) -> str:
    """One printable line per endpoint: "chat: 46 ms, 16 tokens, 347.8 tokens/s, 'text…' (length)"."""
    text = result.get("text")
    shown = repr(text if text is None or len(text) <= 60 else text[:57] + "...")
    tps = result.get("tokens_per_s")
    return (
        f"{name}: {result['latency_s'] * 1000:.0f} ms, {result.get('completion_tokens')} tokens, "
        f"{'-' if tps is None else tps} tokens/s, {shown} ({result.get('finish_reason')})"
    )


def redact(text: str, secrets: list[str | None]) -> str:
    """text with every secret replaced, for logs shown back to the operator."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# vLLM lists ~40 routes once it is up: a tail of them would hide everything useful.
_ROUTE_LINE = re.compile(r"\] Route: /")


def journal_tail(journal: str, lines: int, secrets: list[str | None]) -> str:
    """The last lines of a unit's journal worth reading, secrets hidden."""
    kept = [line for line in journal.splitlines() if not _ROUTE_LINE.search(line)]
    return redact("\n".join(kept[-lines:]), secrets)
