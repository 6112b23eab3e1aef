from __future__ import annotations

import pytest

from triage_router.router.http.first_token import carries_token


@pytest.mark.parametrize("chunk", [
    b'data: {"choices":[{"index":0,"delta":{"content":"Paris"}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": "\\n"}}]}\n\n',
    b'data: {"choices":[{"index":0,"text":" Paris","finish_reason":null}]}\n\n',
    b'data: {"choices":[{"delta":{"reasoning_content":"Let me"}}]}\n\n',
    b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1"}]}}]}\n\n',
    # A role chunk and a token coalesced into one read.
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\ndata: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
])
def test_a_chunk_with_generated_output_carries_a_token(chunk: bytes) -> None:
    assert carries_token(chunk)


@pytest.mark.parametrize("chunk", [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n',
    b'data: {"choices":[{"delta":{},"logprobs":{"content":[]},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
    b": keep-alive\n\n",
])
def test_role_usage_and_control_chunks_carry_none(chunk: bytes) -> None:
    assert not carries_token(chunk)
