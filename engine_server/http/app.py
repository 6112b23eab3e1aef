"""The engine's litestar app: OpenAI's chat, completions, embeddings and models routes, plus
/health, /metrics and vLLM's /reset_prefix_cache. Every error leaves in OpenAI's shape."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from triage_router.engine_server.api_types import (
    ChatChoice,
    ChatCompletion,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    DetokenizeResponse,
    EmbeddingData,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    TokenizeResponse,
)
from triage_router.engine_server.embeddings import EmbeddingBatcher
from triage_router.engine_server.engine import RequestRejected
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.errors import EngineUnavailable
from triage_router.engine_server.http.generation import ClientDisconnected, GenerationRunner, as_api_error
from triage_router.engine_server.http.requests import RequestParser, embedding_request
from triage_router.engine_server.http.responses import error_response, event_stream, json_response
from triage_router.engine_server.http.streams import chat_stream, completion_stream
from triage_router.engine_server.metrics import render
from triage_router.router.errors import ApiError, for_status


class _Routes:
    """What each route does, with the parser and the runner it shares with the others."""

    def __init__(
        self, engine: EngineClient, model_name: str, embedder: EmbeddingBatcher | None, embedding_model_name: str
    ) -> None:
        self.model_name = model_name
        self.parser = RequestParser(engine, model_name)
        self.runner = GenerationRunner(engine)
        self.embedder = embedder
        self.embedding_model_name = embedding_model_name
        self.created = int(time.time())

    async def chat(self, request: Request) -> Response[Any] | Stream:
        gen = self.parser.chat(await request.body(), request.headers)
        if gen.stream:
            return event_stream(chat_stream(self.runner, gen, self.model_name))
        done = await self.runner.run_to_end(gen, request)
        choices = [
            ChatChoice(i, ChatMessageOut(content=f.text),
                       self.runner.chat_logprobs(f.logprobs) if gen.params.logprobs else None, f.last.finish_reason)
            for i, f in enumerate(done)
        ]
        usage = self.runner.usage([f.last for f in done])
        return json_response(ChatCompletion(gen.request_id, int(time.time()), self.model_name, choices, usage))

    async def completion(self, request: Request) -> Response[Any] | Stream:
        gen = self.parser.completion(await request.body(), request.headers)
        if gen.stream:
            return event_stream(completion_stream(self.runner, gen, self.model_name))
        done = await self.runner.run_to_end(gen, request)
        choices = [
            CompletionChoice(i, f.text, self.runner.completion_logprobs(f.logprobs, 0) if gen.params.logprobs else None,
                             f.last.finish_reason)
            for i, f in enumerate(done)
        ]
        usage = self.runner.usage([f.last for f in done])
        return json_response(Completion(gen.request_id, int(time.time()), self.model_name, choices, usage))

    async def embeddings(self, request: Request) -> Response[Any]:
        served = self.embedding_model_name if self.embedder is not None else None
        body, texts = embedding_request(await request.body(), served)
        assert self.embedder is not None
        result = await self.embedder.embed(texts)
        data = [EmbeddingData(i, _encode_vector(v, body.encoding_format)) for i, v in enumerate(result.vectors)]
        usage = EmbeddingUsage(result.prompt_tokens, result.prompt_tokens)
        return json_response(EmbeddingResponse(data, self.embedding_model_name, usage))

    async def tokenize(self, request: Request) -> Response[Any]:
        body, ids = self.parser.tokenize(await request.body())
        tokenizer = self.parser.tokenizer
        strs = tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return json_response(TokenizeResponse(len(ids), self.parser.engine.limits.max_model_len, ids, strs))

    async def detokenize(self, request: Request) -> Response[Any]:
        ids = self.parser.detokenize(await request.body())
        return json_response(DetokenizeResponse(self.parser.tokenizer.decode(ids)))

    def models(self) -> Response[Any]:
        cards = [ModelCard(self.model_name, self.created)]
        if self.embedder is not None:
            cards.append(ModelCard(self.embedding_model_name, self.created))
        return json_response(ModelList(cards))


def _encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _on_error(request: Request, exc: Exception) -> Response[Any]:
    if isinstance(exc, (ApiError, RequestRejected)):
        return error_response(as_api_error(exc))
    if isinstance(exc, ClientDisconnected):  # nobody reads it; nginx's convention
        return Response(b"", status_code=499)
    if isinstance(exc, HTTPException):
        messages = {404: f"no route for {request.method} {request.url.path}",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(for_status(exc.status_code, messages.get(exc.status_code, str(exc.detail))))
    return error_response(as_api_error(exc))


def create_app(
    engine: EngineClient,
    *,
    model_name: str,
    embedder: EmbeddingBatcher | None = None,
    embedding_model_name: str = "all-MiniLM-L6-v2",
    dev_routes: bool = False,
) -> Litestar:
    """Build the app. The engine loop starts with the app and stops with it. `dev_routes` adds
    POST /reset_prefix_cache, which any client could otherwise use to empty the cache: vLLM too
    serves it only in its development mode."""
    routes = _Routes(engine, model_name, embedder, embedding_model_name)

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request) -> Any:
        return await routes.chat(request)

    @post("/v1/completions", status_code=200)
    async def completions(request: Request) -> Any:
        return await routes.completion(request)

    @post("/v1/embeddings", status_code=200)
    async def embeddings(request: Request) -> Any:
        return await routes.embeddings(request)

    @post("/tokenize", status_code=200)
    async def tokenize(request: Request) -> Any:
        return await routes.tokenize(request)

    @post("/detokenize", status_code=200)
    async def detokenize(request: Request) -> Any:
        return await routes.detokenize(request)

    @post("/reset_prefix_cache", status_code=200)
    async def reset_prefix_cache() -> Any:
        # vLLM's answer shape; false while requests hold blocks (retry when idle).
        return json_response({"success": await engine.reset_prefix_cache()})

    @get("/v1/models")
    async def models() -> Any:
        return routes.models()

    @get("/health")
    async def health() -> Any:
        if not engine.alive:
            return error_response(EngineUnavailable("the engine is not running"))
        return json_response({"status": "ok"})

    @get("/metrics")
    async def metrics() -> Any:
        text = render(engine.stats, model_name)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Litestar(
        route_handlers=[chat, completions, embeddings, tokenize, detokenize, models, health, metrics,
                        *([reset_prefix_cache] if dev_routes else [])],
        exception_handlers={Exception: _on_error},
        on_startup=[engine.start],
        on_shutdown=[engine.stop],
        openapi_config=None,
        debug=False,
    )
