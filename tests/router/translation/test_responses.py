from __future__ import annotations

import json

import pytest

from triage_router.router.errors import BadRequest
from triage_router.router.translation.chat_events import SseReader
from triage_router.router.translation.responses import ResponsesStream, chat_request, response


def test_a_conversation_with_a_function_call_becomes_chat_messages() -> None:
    chat = chat_request({
        "model": "smol", "instructions": "Be brief.", "max_output_tokens": 40, "temperature": 0, "stream": True,
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Oslo?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "4 C"},
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "weather"},
    })
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
    ]
    assert chat["max_tokens"] == 40 and chat["temperature"] == 0 and chat["stream"] is True
    assert chat["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


def test_unknown_fields_pass_through_and_responses_own_fields_do_not() -> None:
    chat = chat_request({"model": "m", "input": "hi", "repetition_penalty": 1.1, "reasoning": {"effort": "low"},
                         "metadata": {"k": "v"}})
    assert chat["repetition_penalty"] == 1.1 and "reasoning" not in chat and "metadata" not in chat


@pytest.mark.parametrize(("doc", "param"), [
    ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "hi", "store": True}, "store"),
    ({"model": "m", "input": []}, "input"),
    ({"input": "hi"}, "model"),
    ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
])
def test_what_a_stateless_translation_cannot_do_is_a_clear_400(doc: dict, param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        chat_request(doc)
    assert refused.value.param == param


def test_an_answer_with_a_tool_call_stop_and_usage() -> None:
    completion = {"id": "c", "model": "smol", "choices": [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 8}}}
    body = response({"model": "smol", "input": "hi"}, completion)
    assert body["object"] == "response" and body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    message, call = body["output"]
    assert message["content"] == [{"type": "output_text", "text": "Let me check.", "annotations": []}]
    assert call == {"type": "function_call", "id": "fc_call_9", "call_id": "call_9", "name": "weather",
                    "arguments": "{}", "status": "completed"}
    assert body["usage"]["input_tokens"] == 12 and body["usage"]["output_tokens"] == 5
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 8}


def _events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_a_stream_is_the_responses_event_sequence() -> None:
    stream = ResponsesStream({"model": "smol", "input": "hi"})
    raw = stream.start()
    for chunk in ({"id": "c", "model": "smol", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                  {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
                  {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
                  {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}):
        raw += stream.feed(chunk)
    raw += stream.finish()
    events = _events(raw)
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for _, e in events] == list(range(10))
    assert [e["delta"] for name, e in events if name == "response.output_text.delta"] == ["Hel", "lo"]
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "Hello"
    assert done["usage"]["output_tokens"] == 2 and done["id"] == events[0][1]["response"]["id"]


def test_a_broken_upstream_ends_the_stream_with_response_failed() -> None:
    stream = ResponsesStream({"model": "smol", "input": "hi"})
    stream.feed({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    stream.feed({"error": {"message": "backend died", "type": "upstream_error"}})
    name, event = _events(stream.finish())[-1]
    assert name == "response.failed" and event["response"]["error"]["message"] == "backend died"


def test_sse_reader_joins_events_split_across_chunks() -> None:
    reader = SseReader()
    assert reader.feed(b'data: {"a"') == []
    assert reader.feed(b': 1}\n\ndata: {"b": 2}\r\n\r\ndata: [DONE]\n\n') == [{"a": 1}, {"b": 2}]


MALFORMED = [
    {"tools": [["function"]]},  # found by the fuzzer: a 500
    {"tools": "web_search"},
    {"input": [{"role": ["user"], "content": "hi"}]},
    {"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
]


@pytest.mark.parametrize("fields", MALFORMED, ids=[json.dumps(f)[:50] for f in MALFORMED])
def test_a_field_of_the_wrong_type_is_a_400_not_a_crash(fields: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        chat_request({"model": "smol", "input": "hi", **fields})
