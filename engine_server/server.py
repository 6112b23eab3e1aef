"""The OpenAI-compatible HTTP server (litestar), in front of an EngineClient."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from triage_router.policies.request import DEFAULT_PRIORITY, LEAST_URGENT, MOST_URGENT

from triage_router.engine_server.api_types import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatMessageOut,
    ChatTokenLogprob,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    TopLogprob,
    Usage,
    encoder,
)
from triage_router.engine_server.embeddings import EmbeddingBatcher
from triage_router.engine_server.engine import RequestOutput, RequestRejected
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.errors import (
    BadRequest,
    ContextTooLong,
    EngineError,
    EngineUnavailable,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
)
from triage_router.engine_server.metrics import render
from triage_router.engine_server.sequence import SamplingParams, TokenLogprob

MAX_TOP_LOGPROBS = 20
MAX_N = 16


class _Generation(msgspec.Struct):
    """Everything a handler needs once the body is validated."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: int
    predicted: int | None
    tenant: str
    stream: bool
    include_usage: bool
    n: int = 1  # choices; each is its own sequence (they share the prompt's cached blocks)


class EngineServer:
    def __init__(
        self, engine: EngineClient, model_name: str, embedder: EmbeddingBatcher | None, embedding_model_name: str
    ) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name
        self.embedder = embedder
        self.embedding_model_name = embedding_model_name
        self.created = int(time.time())

    # --- request parsing ----------------------------------------------------------------

    def _decode(self, body: bytes, kind: type[Any]) -> Any:
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as e:
            path = str(e).rsplit("at `$.", 1)
            raise BadRequest(str(e), param=path[1].rstrip("`") if len(path) == 2 else None) from None
        except msgspec.DecodeError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None

    def _check_model(self, model: str | None, *served: str) -> None:
        if model is not None and model not in served:
            raise ModelNotFound(f"the model {model!r} does not exist; this server serves {', '.join(served)}", param="model")

    def _priority(self, body: Any, headers: Any) -> int:
        value: Any = body.priority
        if value is None:
            header = headers.get("x-priority")
            if header is None:
                return DEFAULT_PRIORITY
            try:
                value = int(header)
            except ValueError:
                raise BadRequest("the x-priority header must be an integer 0..4", param="x-priority") from None
        if not MOST_URGENT <= value <= LEAST_URGENT:
            raise BadRequest(f"priority must be between {MOST_URGENT} (most urgent) and {LEAST_URGENT}", param="priority")
        return value

    def _sampling(self, body: Any, prompt_ids: list[int], max_tokens: int | None, top_logprobs: int | None) -> SamplingParams:
        if not 1 <= body.n <= MAX_N:
            raise BadRequest(f"n must be between 1 and {MAX_N}", param="n")
        temperature = 1.0 if body.temperature is None else body.temperature
        if not 0 <= temperature <= 2:
            raise BadRequest("temperature must be between 0 and 2", param="temperature")
        top_p = 1.0 if body.top_p is None else body.top_p
        if not 0 < top_p <= 1:
            raise BadRequest("top_p must be in (0, 1]", param="top_p")
        top_k = body.top_k or 0
        if top_k < -1:
            raise BadRequest("top_k must be -1 (disabled) or positive", param="top_k")
        if max_tokens is not None and max_tokens < 1:
            raise BadRequest("max_tokens must be at least 1", param="max_tokens")
        if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        limit = self.engine.limits.max_model_len - len(prompt_ids)
        params = SamplingParams(
            temperature=temperature, top_p=top_p, top_k=max(top_k, 0), seed=body.seed,
            max_tokens=max_tokens if max_tokens is not None else limit, stop=stop,
            stop_token_ids=list(body.stop_token_ids or []), ignore_eos=body.ignore_eos,
            logprobs=top_logprobs is not None, top_logprobs=top_logprobs or 0,
        )
        try:
            self.engine.limits.validate(prompt_ids, params)
        except RequestRejected as e:
            raise ContextTooLong(str(e), param="messages" if hasattr(body, "messages") else "prompt") from None
        return params

    def _generation(
        self, prefix: str, body: Any, headers: Any, prompt_ids: list[int], max_tokens: int | None, top: int | None
    ) -> _Generation:
        priority = self._priority(body, headers)
        params = self._sampling(body, prompt_ids, max_tokens, top)
        return _Generation(
            request_id=f"{prefix}-{uuid.uuid4().hex}", prompt_ids=prompt_ids, params=params, priority=priority,
            predicted=body.predicted_output_tokens, tenant=body.tenant or "", stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage), n=body.n,
        )

    def chat_request(self, raw: bytes, headers: Any) -> _Generation:
        body: ChatCompletionRequest = self._decode(raw, ChatCompletionRequest)
        self._check_model(body.model, self.model_name)
        if not body.messages:
            raise BadRequest("messages must not be empty", param="messages")
        messages = [_flatten_content(m) for m in body.messages]
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except Exception as e:  # the template rejects roles or shapes it does not know
            raise BadRequest(f"the chat template rejected the messages: {e}", param="messages") from None
        top = (body.top_logprobs or 0) if body.logprobs else None
        max_tokens = body.max_completion_tokens or body.max_tokens
        return self._generation("chatcmpl", body, headers, list(encoded["input_ids"]), max_tokens, top)

    def completion_request(self, raw: bytes, headers: Any) -> _Generation:
        body: CompletionRequest = self._decode(raw, CompletionRequest)
        self._check_model(body.model, self.model_name)
        if body.echo:
            raise BadRequest("echo is not supported", param="echo")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise BadRequest("only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            vocab = self.engine.limits.vocab_size
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt):
                raise BadRequest(f"prompt token ids must be integers in [0, {vocab})", param="prompt")
            ids = list(prompt)  # type: ignore[arg-type]
        max_tokens = body.max_tokens if body.max_tokens is not None else 16  # the legacy API's default
        return self._generation("cmpl", body, headers, ids, max_tokens, body.logprobs)

    # --- responses ----------------------------------------------------------------------

    def _usage(self, finals: list[RequestOutput]) -> Usage:
        """The prompt once (as OpenAI counts it), the completions of every choice."""
        first = finals[0]
        completion = sum(out.completion_tokens for out in finals)
        return Usage(
            first.prompt_tokens, completion, first.prompt_tokens + completion,
            PromptTokensDetails(cached_tokens=first.cached_tokens),
        )

    async def _choices(self, gen: _Generation) -> AsyncIterator[tuple[int, RequestOutput]]:
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

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _chat_logprobs(self, lps: list[TokenLogprob]) -> ChatLogprobs:
        content = []
        for lp in lps:
            text = self._token_text(lp.token_id)
            top = [TopLogprob(t := self._token_text(i), v, list(t.encode())) for i, v in lp.top]
            content.append(ChatTokenLogprob(text, lp.logprob, list(text.encode()), top))
        return ChatLogprobs(content)

    def _completion_logprobs(self, lps: list[TokenLogprob], text_start: int) -> CompletionLogprobs:
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

    async def run_to_end(self, gen: _Generation, request: Request) -> list[_Finished]:
        """Collect a non-streamed generation, one entry per choice; abort it if the client
        disconnects first."""

        async def consume() -> list[_Finished]:
            parts: list[list[str]] = [[] for _ in range(gen.n)]
            lps: list[list[TokenLogprob]] = [[] for _ in range(gen.n)]
            last: list[RequestOutput | None] = [None] * gen.n
            async for index, out in self._choices(gen):
                parts[index].append(out.text)
                lps[index].extend(out.logprobs)
                last[index] = out
            return [_Finished("".join(p), lp, final) for p, lp, final in zip(parts, lps, last) if final is not None]

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

    async def chat(self, request: Request) -> Response[Any] | Stream:
        gen = self.chat_request(await request.body(), request.headers)
        if gen.stream:
            return _sse(self._chat_stream(gen))
        done = await self.run_to_end(gen, request)
        choices = [
            ChatChoice(i, ChatMessageOut(content=f.text), self._chat_logprobs(f.logprobs) if gen.params.logprobs else None,
                       f.last.finish_reason)
            for i, f in enumerate(done)
        ]
        body = ChatCompletion(gen.request_id, int(time.time()), self.model_name, choices, self._usage([f.last for f in done]))
        return _json(body)

    async def _chat_stream(self, gen: _Generation) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(index: int, delta: ChatDelta, finish: str | None = None, logprobs: ChatLogprobs | None = None) -> bytes:
            return _event(ChatCompletionChunk(gen.request_id, created, self.model_name, [ChatChunkChoice(index, delta, logprobs, finish)]))

        for index in range(gen.n):
            yield chunk(index, ChatDelta(role="assistant", content=""))
        last: dict[int, RequestOutput] = {}
        try:
            async for index, out in self._choices(gen):
                last[index] = out
                lps = self._chat_logprobs(out.logprobs) if gen.params.logprobs else None
                if out.text or lps or out.finished:
                    yield chunk(index, ChatDelta(content=out.text), out.finish_reason if out.finished else None, lps)
        except Exception as e:  # headers are sent: report in-band, as vLLM does, then end the stream
            yield _event(_as_engine_error(e).envelope())
            yield b"data: [DONE]\n\n"
            return
        if gen.include_usage and last:
            usage = self._usage([last[i] for i in sorted(last)])
            yield _event(ChatCompletionChunk(gen.request_id, created, self.model_name, [], usage))
        yield b"data: [DONE]\n\n"

    async def completion(self, request: Request) -> Response[Any] | Stream:
        gen = self.completion_request(await request.body(), request.headers)
        if gen.stream:
            return _sse(self._completion_stream(gen))
        done = await self.run_to_end(gen, request)
        choices = [
            CompletionChoice(i, f.text, self._completion_logprobs(f.logprobs, 0) if gen.params.logprobs else None,
                             f.last.finish_reason)
            for i, f in enumerate(done)
        ]
        body = Completion(gen.request_id, int(time.time()), self.model_name, choices, self._usage([f.last for f in done]))
        return _json(body)

    async def _completion_stream(self, gen: _Generation) -> AsyncIterator[bytes]:
        created = int(time.time())
        last: dict[int, RequestOutput] = {}
        offsets = [0] * gen.n
        try:
            async for index, out in self._choices(gen):
                last[index] = out
                lps = self._completion_logprobs(out.logprobs, offsets[index]) if gen.params.logprobs else None
                offsets[index] += len(out.text)
                if out.text or lps or out.finished:
                    choice = CompletionChoice(index, out.text, lps, out.finish_reason if out.finished else None)
                    yield _event(Completion(gen.request_id, created, self.model_name, [choice]))
        except Exception as e:
            yield _event(_as_engine_error(e).envelope())
            yield b"data: [DONE]\n\n"
            return
        if gen.include_usage and last:
            usage = self._usage([last[i] for i in sorted(last)])
            yield _event(Completion(gen.request_id, created, self.model_name, [], usage))
        yield b"data: [DONE]\n\n"

    async def embeddings(self, request: Request) -> Response[Any]:
        body: EmbeddingRequest = self._decode(await request.body(), EmbeddingRequest)
        if self.embedder is None:
            raise ModelNotFound("this engine serves no embedding model", param="model")
        self._check_model(body.model, self.embedding_model_name)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t for t in texts):
            raise BadRequest("input must be a non-empty string or a list of non-empty strings", param="input")
        if body.encoding_format not in ("float", "base64"):
            raise BadRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
        if body.dimensions is not None:
            raise BadRequest("this model does not support the dimensions parameter", param="dimensions")
        result = await self.embedder.embed(texts)
        data = [EmbeddingData(i, _encode_vector(v, body.encoding_format)) for i, v in enumerate(result.vectors)]
        usage = EmbeddingUsage(result.prompt_tokens, result.prompt_tokens)
        return _json(EmbeddingResponse(data, self.embedding_model_name, usage))

    def models(self) -> Response[Any]:
        cards = [ModelCard(self.model_name, self.created)]
        if self.embedder is not None:
            cards.append(ModelCard(self.embedding_model_name, self.created))
        return _json(ModelList(cards))


class _Finished(msgspec.Struct):
    """One choice of a non-streamed generation."""

    text: str
    logprobs: list[TokenLogprob]
    last: RequestOutput


class ClientDisconnected(Exception):
    """The client went away before its response was ready."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _as_engine_error(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, RequestRejected):
        return ContextTooLong(str(exc))
    return EngineError(f"internal error: {type(exc).__name__}: {exc}")


def _flatten_content(message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates expect string content; OpenAI also allows a list of text parts."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content):
            raise BadRequest("only text content parts are supported", param="messages")
        return {**message, "content": "".join(texts)}
    if content is None:
        return {**message, "content": ""}
    if not isinstance(content, str):
        raise BadRequest("message content must be a string or a list of text parts", param="messages")
    return message


def _encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _json(body: Any, status: int = 200) -> Response[Any]:
    return Response(encoder.encode(body), status_code=status, media_type="application/json")


def _event(body: Any) -> bytes:
    return b"data: " + encoder.encode(body) + b"\n\n"


class _EventStream(Stream):
    """A Stream whose own media type wins over the handler's JSON default (litestar passes
    the handler's media type first)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


def _sse(events: AsyncIterator[bytes]) -> Stream:
    return _EventStream(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _error_response(err: EngineError) -> Response[Any]:
    return Response(encoder.encode(err.envelope()), status_code=err.status, media_type="application/json")


def create_app(
    engine: EngineClient,
    *,
    model_name: str,
    embedder: EmbeddingBatcher | None = None,
    embedding_model_name: str = "all-MiniLM-L6-v2",
) -> Litestar:
    """Build the app. The engine loop starts with the app and stops with it."""
    server = EngineServer(engine, model_name, embedder, embedding_model_name)

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request) -> Any:
        return await server.chat(request)

    @post("/v1/completions", status_code=200)
    async def completions(request: Request) -> Any:
        return await server.completion(request)

    @post("/v1/embeddings", status_code=200)
    async def embeddings(request: Request) -> Any:
        return await server.embeddings(request)

    @get("/v1/models")
    async def models() -> Any:
        return server.models()

    @get("/health")
    async def health() -> Any:
        if not engine.alive:
            return _error_response(EngineUnavailable("the engine is not running"))
        return _json({"status": "ok"})

    @get("/metrics")
    async def metrics() -> Any:
        text = render(engine.stats, model_name)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def on_engine_error(request: Request, exc: Exception) -> Response[Any]:
        if isinstance(exc, (EngineError, RequestRejected)):
            return _error_response(_as_engine_error(exc))
        if isinstance(exc, ClientDisconnected):  # nobody reads it; nginx's convention
            return Response(b"", status_code=499)
        if isinstance(exc, HTTPException):
            if exc.status_code == 404:
                return _error_response(NotFound(f"no route for {request.method} {request.url.path}"))
            if exc.status_code == 405:
                return _error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"))
            err = EngineError(str(exc.detail))
            err.status, err.error_type = exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error"
            return _error_response(err)
        return _error_response(_as_engine_error(exc))

    return Litestar(
        route_handlers=[chat, completions, embeddings, models, health, metrics],
        exception_handlers={Exception: on_engine_error},
        on_startup=[engine.start],
        on_shutdown=[engine.stop],
        openapi_config=None,
        debug=False,
    )
