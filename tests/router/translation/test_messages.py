from __future__ import annotations

import json

import pytest

from triage_router.router.errors import BadRequest, QueueFull
from triage_router.router.translation.messages import MessagesStream, chat_request, error_of, error_of_upstream, message


def test_system_tool_use_and_tool_result_become_chat_messages() -> None:
    chat = chat_request({
        "model": "smol", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["\n\n"], "metadata": {"user_id": "u1"},
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                              {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4 C"},
                                         {"type": "text", "text": "And tomorrow?"}]},
        ],
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
    })
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "4 C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert chat["max_tokens"] == 64 and chat["stop"] == ["\n\n"] and chat["user"] == "u1"
    assert chat["tool_choice"] == "required"
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object"}


def test_max_tokens_is_required_as_anthropic_requires_it() -> None:
    with pytest.raises(BadRequest) as refused:
        chat_request({"model": "smol", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.value.param == "max_tokens"


@pytest.mark.parametrize(("finish", "stop_reason", "calls", "expected"), [
    ("stop", None, [], ("end_turn", None)),
    ("stop", "\n\n", [], ("stop_sequence", "\n\n")),
    ("length", None, [], ("max_tokens", None)),
    ("tool_calls", None, [{"id": "t2", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
     ("tool_use", None)),
])
def test_stop_reasons_and_tool_use_blocks(finish, stop_reason, calls, expected) -> None:
    completion = {"model": "smol", "choices": [{"index": 0, "finish_reason": finish, "stop_reason": stop_reason,
                                                "message": {"role": "assistant", "content": "ok", "tool_calls": calls}}],
                  "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    body = message({"model": "smol"}, completion)
    assert (body["stop_reason"], body["stop_sequence"]) == expected
    assert body["type"] == "message" and body["content"][0] == {"type": "text", "text": "ok"}
    assert body["usage"]["input_tokens"] == 9 and body["usage"]["output_tokens"] == 2
    if calls:
        assert body["content"][1] == {"type": "tool_use", "id": "t2", "name": "f", "input": {"x": 1}}


def _events(raw: bytes) -> list[tuple[str, dict]]:
    return [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
            for b in raw.decode().strip().split("\n\n")]


def test_a_stream_with_text_then_a_tool_call() -> None:
    stream = MessagesStream({"model": "smol"})
    raw = stream.start()
    for chunk in ({"choices": [{"index": 0, "delta": {"content": "Let me"}}]},
                  {"choices": [{"index": 0, "delta": {"content": " check."}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [
                      {"index": 0, "id": "t3", "function": {"name": "weather", "arguments": '{"ci'}}]}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": 1}'}}]},
                                "finish_reason": "tool_calls"}]},
                  {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}):
        raw += stream.feed(chunk)
    events = _events(raw + stream.finish())
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "t3", "name": "weather", "input": {}}
    assert "".join(e["delta"]["partial_json"] for n, e in events if e.get("index") == 1 and n == "content_block_delta") \
        == '{"city": 1}'
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"]["output_tokens"] == 7


def test_errors_in_anthropics_shape() -> None:
    assert json.loads(error_of(QueueFull("busy", retry_after_s=1))) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "busy"}}
    upstream = error_of_upstream(400, b'{"error": {"message": "too long", "type": "invalid_request_error"}}')
    assert json.loads(upstream)["error"] == {"type": "invalid_request_error", "message": "too long"}


MALFORMED = [
    {"tool_choice": {"type": {}}},  # found by the fuzzer: an unhashable type was a 500
    {"tool_choice": "auto"},
    {"tools": [1]},
    {"metadata": ["u1"]},
    {"system": [1]},
    {"system": [{"type": "text", "text": 5}]},
    {"messages": [{"role": "user", "content": [1]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": "a URL"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]},
]


@pytest.mark.parametrize("fields", MALFORMED, ids=[json.dumps(f)[:50] for f in MALFORMED])
def test_a_field_of_the_wrong_type_is_a_400_not_a_crash(fields: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        chat_request({"model": "smol", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **fields})
