"""Anthropic's Messages API over chat completions: requests, answers, streams and errors in
Anthropic's shapes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec

from triage_router.router.api_types import check_shape
from triage_router.router.errors import ApiError, BadRequest
from triage_router.router.translation.chat_events import ChatAnswer, sse_event

# OpenAI error types as Anthropic names them.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error", "authentication_error": "authentication_error",
    "rate_limit_error": "rate_limit_error", "timeout_error": "timeout_error",
}
_STATUS_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                       413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error_body(status: int, message: str, openai_type: str = "") -> bytes:
    """`{"type": "error", "error": {"type": ..., "message": ...}}`."""
    kind = _STATUS_ERROR_TYPES.get(status) or _ERROR_TYPES.get(openai_type) or (
        "invalid_request_error" if status < 500 else "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def error_of(error: ApiError) -> bytes:
    return error_body(error.status, error.message, error.error_type)


def error_of_upstream(status: int, body: bytes) -> bytes:
    """A backend's OpenAI-shaped error (or anything else) in Anthropic's shape."""
    try:
        detail = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        detail = {}
    message = detail.get("message") if isinstance(detail, dict) else None
    return error_body(status, message or body.decode("utf-8", "replace")[:500],
                      detail.get("type", "") if isinstance(detail, dict) else "")


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest("content must be a string or a list of content blocks", param=param)
    return content


def _chat_content(parts: list[dict[str, Any]]) -> Any:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = doc.get("system")
    if system:
        messages.append({"role": "system", "content": _chat_content(
            [{"type": "text", "text": b.get("text", "")} for b in _blocks(system, "system")])})
    turns = doc.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("messages must be a non-empty list", param="messages")
    for i, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ("user", "assistant"):
            raise BadRequest("each message needs role \"user\" or \"assistant\"", param=f"messages.{i}.role")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in _blocks(turn.get("content"), f"messages.{i}.content"):
            kind = block.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image" and (block.get("source") or {}).get("type") == "base64":
                source = block["source"]
                parts.append({"type": "image_url",
                              "image_url": {"url": f"data:{source.get('media_type')};base64,{source.get('data')}"}})
            elif kind == "tool_use" and role == "assistant":
                calls.append({"id": block.get("id", ""), "type": "function",
                              "function": {"name": block.get("name", ""), "arguments": json.dumps(block.get("input", {}))}})
            elif kind == "tool_result" and role == "user":
                result = block.get("content", "")
                text = result if isinstance(result, str) else "".join(
                    b.get("text", "") for b in result if isinstance(b, dict) and b.get("type") == "text")
                messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
            else:
                raise BadRequest(f"content block of type {kind!r} is not supported here", param=f"messages.{i}.content")
        if calls:
            messages.append({"role": "assistant", "content": _chat_content(parts) if parts else None, "tool_calls": calls})
        elif parts:
            messages.append({"role": role, "content": _chat_content(parts)})
    return messages


# The Messages API's own fields: everything else is an extension and goes to the chat body as
# the client sent it.
_KNOWN = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stream",
                    "stop_sequences", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
                    "mcp_servers"})


class _ResultPart(msgspec.Struct):
    text: str = ""


class _Block(msgspec.Struct):
    text: str = ""
    source: dict[str, Any] | None = None
    content: str | list[_ResultPart] = ""  # a tool_result's


class _Turn(msgspec.Struct):
    content: str | list[_Block] | None = None


class _ToolChoice(msgspec.Struct):
    type: str = ""


class _Shape(msgspec.Struct):
    """The types of the fields the translation reads, where another type would break it."""

    system: str | list[_Block] | None = None
    messages: list[_Turn] | None = None
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: _ToolChoice | None = None


def chat_request(doc: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as a chat completion request."""
    check_shape(doc, _Shape)
    if not isinstance(doc.get("model"), str):
        raise BadRequest("model: field required", param="model")
    if not isinstance(doc.get("max_tokens"), int):
        raise BadRequest("max_tokens: field required", param="max_tokens")
    chat: dict[str, Any] = {key: value for key, value in doc.items() if key not in _KNOWN}
    chat.update({"model": doc["model"], "messages": _messages(doc), "max_tokens": doc["max_tokens"]})
    for key in ("temperature", "top_p", "top_k", "stream"):
        if doc.get(key) is not None:
            chat[key] = doc[key]
    if doc.get("stop_sequences"):
        chat["stop"] = doc["stop_sequences"]
    if (doc.get("metadata") or {}).get("user_id"):
        chat["user"] = doc["metadata"]["user_id"]
    tools = [{"type": "function", "function": {"name": t.get("name", ""), "description": t.get("description", ""),
                                               "parameters": t.get("input_schema", {})}}
             for t in doc.get("tools") or []]
    if tools:
        chat["tools"] = tools
    choice = doc.get("tool_choice") or {}
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(choice.get("type", ""))
    if choice.get("type") == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    elif mapped:
        chat["tool_choice"] = mapped
    return chat


def _stop(answer: ChatAnswer) -> tuple[str, str | None]:
    if answer.finish_reason == "length":
        return "max_tokens", None
    if answer.tool_calls or answer.finish_reason == "tool_calls":
        return "tool_use", None
    if isinstance(answer.stop_reason, str):
        return "stop_sequence", answer.stop_reason
    return "end_turn", None


def _tool_block(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments) if arguments else {}
    except ValueError:
        parsed = {"_raw": arguments}
    return {"type": "tool_use", "id": call_id, "name": name, "input": parsed}


def _usage(answer: ChatAnswer) -> dict[str, Any]:
    return {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
            "cache_read_input_tokens": answer.cached_tokens}


def message(request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed chat completion as a Messages answer."""
    answer = ChatAnswer.of_completion(completion)
    content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] if answer.text else []
    content += [_tool_block(c.id, c.name, c.arguments) for c in answer.tool_calls]
    stop_reason, stop_sequence = _stop(answer)
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "content": content,
            "model": answer.model or request.get("model"), "stop_reason": stop_reason,
            "stop_sequence": stop_sequence, "usage": _usage(answer)}


class MessagesStream:
    """Chat completion chunks in, Anthropic's stream out: message_start, a text block and
    tool_use blocks (content_block_start, _delta, _stop), message_delta with the stop reason and
    usage, message_stop; an `error` event if the upstream stream failed."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.answer = ChatAnswer()
        self.id = f"msg_{uuid.uuid4().hex}"
        self.text_open = False
        self.blocks = 0
        self.tool_blocks: dict[int, int] = {}  # chat tool-call index -> block index

    def start(self) -> bytes:
        message = {"id": self.id, "type": "message", "role": "assistant", "content": [],
                   "model": self.request.get("model"), "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close_text(self) -> bytes:
        if not self.text_open:
            return b""
        self.text_open = False
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        before = [len(c.arguments) for c in self.answer.tool_calls]
        text, touched = self.answer.absorb_chunk(chunk)
        out = b""
        if text:
            if not self.text_open:
                self.text_open = True
                self.blocks += 1
                out += sse_event("content_block_start", {"type": "content_block_start", "index": self.blocks - 1,
                                                         "content_block": {"type": "text", "text": ""}})
            out += sse_event("content_block_delta", {"type": "content_block_delta", "index": self.blocks - 1,
                                                     "delta": {"type": "text_delta", "text": text}})
        for index in dict.fromkeys(touched):
            call = self.answer.tool_calls[index]
            if index not in self.tool_blocks:
                out += self._close_text()
                self.tool_blocks[index] = self.blocks
                self.blocks += 1
                out += sse_event("content_block_start", {
                    "type": "content_block_start", "index": self.tool_blocks[index],
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})
            new = call.arguments[before[index] if index < len(before) else 0:]
            if new:
                out += sse_event("content_block_delta", {"type": "content_block_delta", "index": self.tool_blocks[index],
                                                         "delta": {"type": "input_json_delta", "partial_json": new}})
        return out

    def finish(self) -> bytes:
        answer = self.answer
        if answer.error is not None:
            return sse_event("error", {"type": "error", "error": {"type": "api_error",
                                                                  "message": answer.error.get("message", "")}})
        out = self._close_text()
        for block in sorted(self.tool_blocks.values()):
            out += sse_event("content_block_stop", {"type": "content_block_stop", "index": block})
        stop_reason, stop_sequence = _stop(answer)
        out += sse_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                           "usage": _usage(answer)})
        return out + sse_event("message_stop", {"type": "message_stop"})
