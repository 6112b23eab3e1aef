"""A validated `Generation` run on the engine: every choice's outputs as they come, the
non-streamed result, usage as OpenAI counts it, and logprobs in both APIs' shapes."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import msgspec
from litestar import Request

from triage_router.engine_server.api_types import (
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionLogprobs,
    PromptTokensDetails,
    TopLogprob,
    Usage,
)
from triage_router.engine_server.engine import RequestOutput, RequestRejected
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.errors import ContextTooLong
from triage_router.engine_server.http.requests import Generation
from triage_router.engine_server.sequence import TokenLogprob
from triage_router.router.errors import ApiError


class Finished(msgspec.Struct):
    """One choice of a non-streamed generation."""

    text: str
    logprobs: list[TokenLogprob]
    last: RequestOutput


class ClientDisconnected(Exception):
    """The client went away before its response was ready."""


def as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestRejected):
        return ContextTooLong(str(exc))
    return ApiError(f"internal error: {type(exc).__name__}: {exc}")


class GenerationRunner:
    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer

    async def choices(self, gen: Generation) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Every choice's outputs as they come, tagged with the choice index. n > 1 runs n
        sequences; with a seed, choice i samples with seed + i so that the choices differ."""
        if gen.n == 1:
            async for out in self.engine.generate(
                gen.request_id, gen.prompt_ids, gen.params, priority=gen.priority, predicted_output_len=gen.predicted,
                tenant=gen.tenant,
            ):
                yield 0, out
            return
        merged: asyncio.Queue[tuple[int, RequestOutput] | BaseException | None] = asyncio.Queue()

        async def pump(index: int) -> None:
            params = copy.copy(gen.params)
            if params.seed is not None:
                params.seed += index
            try:
                async for out in self.engine.generate(
                    f"{gen.request_id}-{index}", gen.prompt_ids, params, priority=gen.priority,
                    predicted_output_len=gen.predicted, tenant=gen.tenant,
                ):
                    merged.put_nowait((index, out))
            except Exception as e:
                merged.put_nowait(e)
            finally:
                merged.put_nowait(None)

        pumps = [asyncio.ensure_future(pump(i)) for i in range(gen.n)]
        try:
            running = gen.n
            while running:
                item = await merged.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:  # a failure, a disconnect or a consumer that stops early: abort the rest
            for task in pumps:
                task.cancel()

    async def run_to_end(self, gen: Generation, request: Request) -> list[Finished]:
        """Collect a non-streamed generation, one entry per choice; abort it if the client
        disconnects first."""

        async def consume() -> list[Finished]:
            parts: list[list[str]] = [[] for _ in range(gen.n)]
            lps: list[list[TokenLogprob]] = [[] for _ in range(gen.n)]
            last: list[RequestOutput | None] = [None] * gen.n
            async for index, out in self.choices(gen):
                parts[index].append(out.text)
                lps[index].extend(out.logprobs)
                last[index] = out
            return [Finished("".join(p), lp, final) for p, lp, final in zip(parts, lps, last) if final is not None]

        work = asyncio.ensure_future(consume())
        gone = asyncio.ensure_future(_wait_disconnect(request))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            gone.cancel()
            return work.result()
        work.cancel()  # unwinds engine.generate, which aborts the sequence
        try:
            await work
        except BaseException:
            pass
        raise ClientDisconnected()

    @staticmethod
    def usage(finals: list[RequestOutput]) -> Usage:
        """The prompt once (as OpenAI counts it), the completions of every choice."""
        first = finals[0]
        completion = sum(out.completion_tokens for out in finals)
        return Usage(
            first.prompt_tokens, completion, first.prompt_tokens + completion,
            PromptTokensDetails(cached_tokens=first.cached_tokens),
        )

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def chat_logprobs(self, lps: list[TokenLogprob]) -> ChatLogprobs:
        content = []
        for lp in lps:
            text = self._token_text(lp.token_id)
            top = [TopLogprob(t := self._token_text(i), v, list(t.encode())) for i, v in lp.top]
            content.append(ChatTokenLogprob(text, lp.logprob, list(text.encode()), top))
        return ChatLogprobs(content)

    def completion_logprobs(self, lps: list[TokenLogprob], text_start: int) -> CompletionLogprobs:
        tokens, values, tops, offsets = [], [], [], []
        offset = text_start
        for lp in lps:
            text = self._token_text(lp.token_id)
            tokens.append(text)
            values.append(lp.logprob)
            tops.append({self._token_text(i): v for i, v in lp.top})
            offsets.append(offset)
            offset += len(text)
        return CompletionLogprobs(tokens, values, tops, offsets)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
