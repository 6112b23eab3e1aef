"""A Responses or Messages request on its way through the proxy (router/http/proxy.py): passed through to a backend
that serves the API itself, else translated to a chat completion and its answer translated
back (router/translation/).

Which backends serve which API natively: vLLM serves both; an `openai` backend (OpenAI itself,
or a compatible server) serves Responses; our engine serves neither.
"""

from __future__ import annotations

from typing import Any

import msgspec

from triage_router.router.config import BackendConfig
from triage_router.router.errors import ApiError, BadRequest
from triage_router.router.translation import messages, responses
from triage_router.router.translation.chat_events import SseReader

TRANSLATED_ENDPOINTS = frozenset({"responses", "messages"})
_NATIVE = {"vllm": {"responses", "messages"}, "openai": {"responses"}, "engine": set()}


def error_body(endpoint: str, error: ApiError) -> bytes:
    """An error in the shape of the API that was called."""
    return messages.error_of(error) if endpoint == "messages" else error.body()


class StreamTranslation:
    """Chat completion chunks (raw bytes) in, the API's own event stream out."""

    def __init__(self, api: responses.ResponsesStream | messages.MessagesStream) -> None:
        self.api = api
        self.reader = SseReader()
        self.started = False

    def _opening(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self.api.start()

    def feed(self, chunk: bytes) -> bytes:
        out = self._opening()
        for event in self.reader.feed(chunk):
            out += self.api.feed(event)
        return out

    def finish(self) -> bytes:
        return self._opening() + self.api.finish()

    def fail(self, message: str) -> bytes:
        """The upstream broke mid-stream: end with the API's own error event."""
        self.api.answer.error = {"message": message, "code": "upstream_error"}
        return self.finish()


class ApiTranslation:
    """One request's API body and its chat-completion translation."""

    def __init__(self, endpoint: str, document: dict[str, Any], chat_body: bytes) -> None:
        self.endpoint = endpoint
        self.document = document
        self.chat_body = chat_body

    @classmethod
    def of(cls, endpoint: str, body: bytes) -> ApiTranslation:
        if not body:
            raise BadRequest("request body is empty; expected a JSON object")
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError as error:
            raise BadRequest(f"request body is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise BadRequest("request body must be a JSON object")
        module = responses if endpoint == "responses" else messages
        return cls(endpoint, document, msgspec.json.encode(module.chat_request(document)))

    @property
    def stream(self) -> bool:
        return bool(self.document.get("stream"))

    def natively_served(self, backend: BackendConfig) -> bool:
        return self.endpoint in _NATIVE.get(backend.kind, set())

    def answer(self, status: int, body: bytes) -> bytes:
        """A non-streamed chat answer (or a backend's error) in the API's shape."""
        if status != 200:
            return messages.error_of_upstream(status, body) if self.endpoint == "messages" else body
        completion = msgspec.json.decode(body)
        if self.endpoint == "messages":
            return msgspec.json.encode(messages.message(self.document, completion))
        return msgspec.json.encode(responses.response(self.document, completion))

    def stream_translation(self) -> StreamTranslation:
        if self.endpoint == "messages":
            return StreamTranslation(messages.MessagesStream(self.document))
        return StreamTranslation(responses.ResponsesStream(self.document))
