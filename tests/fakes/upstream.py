"""A real HTTP/1.1 server on 127.0.0.1 that behaves like an OpenAI-compatible backend.

It runs its own event loop in a thread, records what it receives, and can be told to fail in
the ways the proxy must survive: an error status, a refused or reset connection, silence, a
stream held open until the test lets it go. It notices a client closing the connection, so
tests can check that the proxy cancels upstream work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Texts in, (vectors, prompt tokens) out: what serves POST /v1/embeddings when given.
Embedder = Callable[[list[str]], tuple[list[list[float]], int]]


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    name: str = "fake"
    # "ok", "status", "refuse", "hang", "stream_hold"
    mode: str = "ok"
    status: int = 503
    stream_chunks: int = 3
    # Open a chat stream with a role-only chunk (`"content": ""`), as our engine does; in
    # "stream_hold" mode the stream then pauses after it, before any token.
    role_chunk_first: bool = False
    requests: list[ReceivedRequest] = field(default_factory=list)
    # Served at GET /metrics (scrapes are counted, not recorded in `requests`); None: 404.
    metrics_text: str | None = (
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"smol\"} 0.0\n"
        "vllm:num_requests_waiting{model_name=\"smol\"} 0.0\n"
        "vllm:kv_cache_usage_perc{model_name=\"smol\"} 0.0\n"
    )
    scrapes: int = 0
    # GET /v1/models answers f"{name}-model" plus these (and the embedding model when `embed` is set).
    listed_models: list[str] = field(default_factory=list)
    listings: int = 0
    # POST paths answered with FastAPI's plain 404.
    unserved_paths: set[str] = field(default_factory=set)
    # Set when a client closes a connection while this server is still working on its request.
    disconnected: threading.Event = field(default_factory=threading.Event)
    # Set once a request has been received (before answering).
    received: threading.Event = field(default_factory=threading.Event)
    # In "stream_hold" mode the stream pauses after its first chunk until this is set.
    release: threading.Event = field(default_factory=threading.Event)
    # Serves POST /v1/embeddings (on a worker thread, so the loop keeps accepting) when set,
    # else constant vectors; tests/fakes/minilm.py gives a real all-MiniLM-L6-v2.
    embed: Embedder | None = None
    embedding_model: str = "all-MiniLM-L6-v2"
    # The port to listen on; 0 picks a free one.
    port: int = 0

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def break_connections(self) -> None:
        """Reset every open connection, as a crashing server would."""

        async def abort() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(abort(), self._loop).result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.release.set()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "GET" and path == "/metrics":
            self.scrapes += 1
            return await self._metrics(writer)
        if method == "GET" and path == "/v1/models":
            # Read by the router at start-up and periodically: counted, not recorded.
            self.listings += 1
            if self.mode == "refuse":
                return False
            if self.mode == "status":
                return await self._json(writer, self.status, {"error": {"message": "down", "type": "server_error"}})
            return await self._json(writer, 200, self._model_list())
        request = ReceivedRequest(method, path, headers, body)
        self.requests.append(request)
        self.received.set()

        if self.mode == "refuse":
            return False  # closes the connection without an answer
        if self.mode == "status":
            return await self._json(writer, self.status, {"error": {"message": f"{self.name} says {self.status}", "type": "server_error", "param": None, "code": None}})
        if method == "GET":
            return await self._json(writer, 200, self._model_list())
        if self.mode == "hang":
            # Wait for the client to give up; EOF on the socket means it closed the connection.
            if await reader.read(1) == b"":
                self.disconnected.set()
            return False
        if path in self.unserved_paths:
            # FastAPI's own 404, as vLLM answers a path it does not have: not OpenAI's shape.
            return await self._json(writer, 404, {"detail": "Not Found"})
        if headers.get("content-type", "").startswith("multipart/form-data"):
            return await self._json(writer, 200, {"text": f"{self.name} heard {len(body)} bytes at {path}"})
        payload = request.json()
        if path == "/v1/embeddings":
            return await self._json(writer, 200, await self._embeddings(payload))
        if path in ("/tokenize", "/detokenize"):
            return await self._json(writer, 200, self._tokens(path, payload))
        if payload.get("stream"):
            return await self._stream(reader, writer, payload)
        return await self._json(writer, 200, self._completion(payload))

    async def _embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        if self.embed is None:  # the shape without a model: one small constant vector per input
            vectors, tokens = [[0.5, 0.5] for _ in texts], len(texts)
        else:
            vectors, tokens = await asyncio.get_running_loop().run_in_executor(None, self.embed, texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": self.embedding_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @staticmethod
    def _tokens(path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """vLLM's /tokenize and /detokenize answers: one token per word."""
        if path == "/detokenize":
            tokens = payload.get("tokens")
            return {"prompt": " ".join(f"t{token}" for token in tokens) if isinstance(tokens, list) else ""}
        tokens = list(range(len(str(payload.get("prompt", "")).split())))
        return {"count": len(tokens), "max_model_len": 2048, "tokens": tokens, "token_strs": None}

    def _model_list(self) -> dict[str, Any]:
        ids = [f"{self.name}-model", *self.listed_models] + ([self.embedding_model] if self.embed else [])
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": self.name} for i in ids]}

    def _completion(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = f"Hello from {self.name}"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if "messages" in payload:
            choice["message"] = {"role": "assistant", "content": text}
            kind = "chat.completion"
        else:
            choice["text"] = text
            kind = "text_completion"
        return {
            "id": "cmpl-1", "object": kind, "created": 1, "model": payload["model"], "choices": [choice],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            # A field the proxy does not know; it must reach the client untouched.
            "upstream_extra": {"served_by": self.name},
        }

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: dict[str, Any]) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        chat = "messages" in payload
        hold_after_role = chat and self.role_chunk_first
        if hold_after_role:
            role = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": payload["model"],
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            await self._chunk(writer, b"data: " + json.dumps(role).encode() + b"\n\n")
            if self.mode == "stream_hold":
                await self._hold(reader)
                if self.disconnected.is_set():
                    return False
        for i in range(self.stream_chunks):
            if chat:
                delta = {"role": "assistant", "content": f"tok{i} "} if i == 0 else {"content": f"tok{i} "}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "text": f"tok{i} ", "finish_reason": None}
            event = {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": 1, "model": payload["model"], "choices": [choice]}
            await self._chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
            if i == 0 and self.mode == "stream_hold" and not hold_after_role:
                await self._hold(reader)
                if self.disconnected.is_set():
                    return False
        if (payload.get("stream_options") or {}).get("include_usage"):
            counts = {"prompt_tokens": 7, "completion_tokens": self.stream_chunks, "total_tokens": 7 + self.stream_chunks}
            usage = {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1,
                     "model": payload["model"], "choices": [], "usage": counts}
            await self._chunk(writer, b"data: " + json.dumps(usage).encode() + b"\n\n")
        await self._chunk(writer, b"data: [DONE]\n\n")
        await self._chunk(writer, b"")
        return True

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        """Pause until the test releases the stream or the client hangs up, whichever first."""
        eof = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, self.release.wait))
        done, _ = await asyncio.wait({eof, released}, return_when=asyncio.FIRST_COMPLETED)
        if eof in done and eof.result() == b"":
            self.disconnected.set()
            self.release.set()  # frees the executor thread
        else:
            # Wait for the cancelled read to finish: the connection may carry the next request,
            # and a second reader on it raises "readuntil() called while another coroutine is
            # already waiting".
            eof.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await eof

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _metrics(self, writer: asyncio.StreamWriter) -> bool:
        if self.metrics_text is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        else:
            body = self.metrics_text.encode()
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return True

    @staticmethod
    async def _json(writer: asyncio.StreamWriter, status: int, payload: Any) -> bool:
        body = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return True
