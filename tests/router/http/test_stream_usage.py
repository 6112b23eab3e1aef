from __future__ import annotations

import json

from triage_router.router.http.stream_usage import UsageFilter, asks_for_usage, stream_options_with_usage


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_whether_the_client_asked_for_usage() -> None:
    assert asks_for_usage(b'{"stream": true, "stream_options": {"include_usage": true}}')
    assert not asks_for_usage(b'{"stream": true, "stream_options": {"include_usage": false}}')
    assert not asks_for_usage(b'{"stream": true}')
    assert stream_options_with_usage(b'{"stream_options": {"continuous_usage_stats": false}}') == {
        "continuous_usage_stats": False, "include_usage": True}


def test_the_usage_event_is_held_back_whatever_the_chunk_boundaries() -> None:
    content = _event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    usage = _event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    done = b"data: [DONE]\n\n"
    stream = content + usage + done
    for size in (1, 7, 64, len(stream)):
        usage_filter = UsageFilter()
        sent = b""
        seen = None
        for start in range(0, len(stream), size):
            sent += usage_filter.feed(stream[start : start + size])
            if usage_filter.usage_event is not None:
                seen = usage_filter.usage_event
        sent += usage_filter.flush()
        assert sent == content + done
        assert seen == usage


def test_crlf_events_and_an_unfinished_tail() -> None:
    usage_filter = UsageFilter()
    usage = b'data: {"choices": [], "usage": {"completion_tokens": 2}}\r\n\r\n'
    assert usage_filter.feed(b'data: {"choices": [1]}\r\n\r\n' + usage + b"data: partial") == b'data: {"choices": [1]}\r\n\r\n'
    assert usage_filter.usage_event == usage
    assert usage_filter.flush() == b"data: partial"
