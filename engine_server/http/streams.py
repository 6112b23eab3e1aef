"""The server-sent-event streams of chat and legacy completions.

A chat stream opens with one role chunk per choice (`"content": ""`), before any token exists,
as OpenAI and vLLM do; clients that time the first token must skip it. An error after the
headers are sent is reported in-band, as vLLM does, and the stream ends with `[DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from triage_router.engine_server.api_types import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    Completion,
    CompletionChoice,
)
from triage_router.engine_server.engine import RequestOutput
from triage_router.engine_server.http.generation import GenerationRunner, as_api_error
from triage_router.engine_server.http.requests import Generation
from triage_router.engine_server.http.responses import DONE, event


async def chat_stream(runner: GenerationRunner, gen: Generation, model_name: str) -> AsyncIterator[bytes]:
    created = int(time.time())
    last: dict[int, RequestOutput] = {}

    def chunk(index: int, delta: ChatDelta, finish: str | None = None, logprobs: ChatLogprobs | None = None) -> bytes:
        return event(ChatCompletionChunk(gen.request_id, created, model_name, [ChatChunkChoice(index, delta, logprobs, finish)]))

    async def deltas() -> AsyncIterator[bytes]:
        for index in range(gen.n):
            yield chunk(index, ChatDelta(role="assistant", content=""))
        async for index, out in runner.choices(gen):
            last[index] = out
            lps = runner.chat_logprobs(out.logprobs) if gen.params.logprobs else None
            if out.text or lps or out.finished:
                yield chunk(index, ChatDelta(content=out.text), out.finish_reason if out.finished else None, lps)

    def usage() -> bytes:
        return event(ChatCompletionChunk(gen.request_id, created, model_name, [], runner.usage([last[i] for i in sorted(last)])))

    async for data in _ended(deltas(), usage if gen.include_usage else None, last):
        yield data


async def completion_stream(runner: GenerationRunner, gen: Generation, model_name: str) -> AsyncIterator[bytes]:
    created = int(time.time())
    last: dict[int, RequestOutput] = {}
    offsets = [0] * gen.n

    async def deltas() -> AsyncIterator[bytes]:
        async for index, out in runner.choices(gen):
            last[index] = out
            lps = runner.completion_logprobs(out.logprobs, offsets[index]) if gen.params.logprobs else None
            offsets[index] += len(out.text)
            if out.text or lps or out.finished:
                choice = CompletionChoice(index, out.text, lps, out.finish_reason if out.finished else None)
                yield event(Completion(gen.request_id, created, model_name, [choice]))

    def usage() -> bytes:
        return event(Completion(gen.request_id, created, model_name, [], runner.usage([last[i] for i in sorted(last)])))

    async for data in _ended(deltas(), usage if gen.include_usage else None, last):
        yield data


async def _ended(
    deltas: AsyncIterator[bytes], usage: Callable[[], bytes] | None, last: dict[int, RequestOutput],
) -> AsyncIterator[bytes]:
    """The stream's deltas, then its usage event when asked for and any choice finished, then
    [DONE]; an error after the headers went out ends it in-band instead."""
    try:
        async for data in deltas:
            yield data
    except Exception as e:
        yield event(as_api_error(e).envelope())
        yield DONE
        return
    if usage is not None and last:
        yield usage()
    yield DONE
