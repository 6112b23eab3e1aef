"""OpenAI's Responses API over chat completions.

Stateless: `previous_response_id` and `store: true` are refused (400), since nothing is stored.
Function tools and function-call items map to chat tools and tool messages; other tool types
(web search, file search, computer use) are refused.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import msgspec

from triage_router.router.api_types import check_shape
from triage_router.router.errors import BadRequest
from triage_router.router.translation.chat_events import ChatAnswer, ToolCall, sse_event

_COPIED = ("temperature", "top_p", "stream", "user", "parallel_tool_calls", "seed", "prompt_cache_key")
# The Responses API's own fields: everything else is an extension (top_k, repetition_penalty...)
# and goes to the chat body as the client sent it.
_KNOWN = frozenset({*_COPIED, "model", "input", "instructions", "max_output_tokens", "tools", "tool_choice",
                    "previous_response_id", "store", "metadata", "text", "reasoning", "include", "truncation",
                    "background", "prompt", "service_tier", "top_logprobs", "stream_options", "max_tool_calls",
                    "safety_identifier", "prompt_cache_key", "conversation"})


def _text_of_parts(parts: Any, param: str) -> Any:
    """Responses content (a string or typed parts) as chat content."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise BadRequest("content must be a string or a list of parts", param=param)
    converted: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            converted.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and part.get("image_url"):
            converted.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise BadRequest(f"content part of type {kind!r} is not supported here", param=param)
    if all(p["type"] == "text" for p in converted):
        return "".join(p["text"] for p in converted)
    return converted


def _messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if doc.get("instructions"):
        messages.append({"role": "system", "content": doc["instructions"]})
    items = doc.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("input must be a string or a non-empty list of items", param="input")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest("input items must be objects", param=f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            role = {"developer": "system"}.get(item.get("role", ""), item.get("role", ""))
            if role not in ("system", "user", "assistant"):
                raise BadRequest(f"unknown role {item.get('role')!r}", param=f"input[{i}].role")
            messages.append({"role": role, "content": _text_of_parts(item.get("content", ""), f"input[{i}].content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls") is not None:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise BadRequest(f"input items of type {kind!r} are not supported here", param=f"input[{i}]")
    return messages


class _Part(msgspec.Struct):
    text: str = ""


class _Item(msgspec.Struct):
    role: str | None = None
    content: str | list[_Part] = ""


class _Shape(msgspec.Struct):
    """The types of the fields the translation reads, where another type would break it."""

    input: str | list[_Item] | None = None
    tools: list[dict[str, Any]] | None = None


def chat_request(doc: dict[str, Any]) -> dict[str, Any]:
    """A Responses request as a chat completion request."""
    check_shape(doc, _Shape)
    if doc.get("previous_response_id"):
        raise BadRequest("previous_response_id needs stored responses, and Triage stores none: "
                         "send the whole conversation in `input`", param="previous_response_id")
    if doc.get("store"):
        raise BadRequest("store: true is not supported: Triage stores no responses", param="store")
    if not isinstance(doc.get("model"), str):
        raise BadRequest("model is required", param="model")
    chat: dict[str, Any] = {key: value for key, value in doc.items() if key not in _KNOWN}
    chat.update({"model": doc["model"], "messages": _messages(doc)})
    chat.update({key: doc[key] for key in _COPIED if doc.get(key) is not None})
    if doc.get("max_output_tokens") is not None:
        chat["max_tokens"] = doc["max_output_tokens"]
    tools = []
    for i, tool in enumerate(doc.get("tools") or []):
        if tool.get("type") != "function":
            raise BadRequest(f"tools of type {tool.get('type')!r} are not supported here", param=f"tools[{i}]")
        tools.append({"type": "function", "function": {key: tool[key] for key in ("name", "description", "parameters")
                                                        if key in tool}})
    if tools:
        chat["tools"] = tools
    choice = doc.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    elif choice is not None:
        chat["tool_choice"] = choice
    return chat


def _usage(answer: ChatAnswer) -> dict[str, Any]:
    return {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "input_tokens_details": {"cached_tokens": answer.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" or text else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(call: ToolCall) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call.id}", "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": "completed"}


class ResponseShape:
    """One response's identity and the request's echoed settings."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created_at = int(time.time())

    def body(self, answer: ChatAnswer | None, status: str) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if answer is not None and (answer.text or not answer.tool_calls):
            output.append(_message_item(self.message_id, answer.text, "completed"))
        if answer is not None:
            output.extend(_call_item(call) for call in answer.tool_calls)
        incomplete = answer is not None and answer.finish_reason == "length"
        r = self.request
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": "incomplete" if incomplete and status == "completed" else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None, "error": None,
            "model": (answer.model if answer and answer.model else r.get("model")), "output": output,
            "instructions": r.get("instructions"), "max_output_tokens": r.get("max_output_tokens"),
            "parallel_tool_calls": r.get("parallel_tool_calls", True), "temperature": r.get("temperature"),
            "top_p": r.get("top_p"), "tool_choice": r.get("tool_choice", "auto"), "tools": r.get("tools", []),
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": False,
            "metadata": r.get("metadata") or {},
            "usage": _usage(answer) if answer is not None and status != "in_progress" else None,
        }


def response(request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed chat completion as a Responses object."""
    return ResponseShape(request).body(ChatAnswer.of_completion(completion), "completed")


class ResponsesStream:
    """Chat completion chunks in, the Responses API's event sequence out: response.created,
    response.in_progress, the message item with its output_text deltas, function-call items, and
    response.completed (or response.failed after an error in the upstream stream)."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.shape = ResponseShape(request)
        self.answer = ChatAnswer()
        self.sequence = 0
        self.opened_text = False

    def _event(self, kind: str, **payload: Any) -> bytes:
        self.sequence += 1
        return sse_event(kind, {"type": kind, "sequence_number": self.sequence - 1, **payload})

    def start(self) -> bytes:
        body = self.shape.body(None, "in_progress")
        return self._event("response.created", response=body) + self._event("response.in_progress", response=body)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        text, _ = self.answer.absorb_chunk(chunk)
        if not text:
            return b""
        out = b""
        if not self.opened_text:
            self.opened_text = True
            out += self._event("response.output_item.added", output_index=0,
                               item=_message_item(self.shape.message_id, "", "in_progress"))
            out += self._event("response.content_part.added", item_id=self.shape.message_id, output_index=0,
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        return out + self._event("response.output_text.delta", item_id=self.shape.message_id, output_index=0,
                                 content_index=0, delta=text, logprobs=[])

    def finish(self) -> bytes:
        answer, out = self.answer, b""
        if answer.error is not None:
            failed = self.shape.body(answer, "failed")
            failed["error"] = {"code": answer.error.get("code") or "server_error", "message": answer.error.get("message", "")}
            return self._event("response.failed", response=failed)
        index = 0
        if self.opened_text or not answer.tool_calls:
            if not self.opened_text:  # an empty answer still has its message item
                out += self._event("response.output_item.added", output_index=0,
                                   item=_message_item(self.shape.message_id, "", "in_progress"))
                out += self._event("response.content_part.added", item_id=self.shape.message_id, output_index=0,
                                   content_index=0, part={"type": "output_text", "text": "", "annotations": []})
            part = {"type": "output_text", "text": answer.text, "annotations": []}
            out += self._event("response.output_text.done", item_id=self.shape.message_id, output_index=0,
                               content_index=0, text=answer.text, logprobs=[])
            out += self._event("response.content_part.done", item_id=self.shape.message_id, output_index=0,
                               content_index=0, part=part)
            out += self._event("response.output_item.done", output_index=0,
                               item=_message_item(self.shape.message_id, answer.text, "completed"))
            index = 1
        for offset, call in enumerate(answer.tool_calls):
            item = _call_item(call)
            out += self._event("response.output_item.added", output_index=index + offset, item={**item, "arguments": ""})
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index + offset, arguments=call.arguments)
            out += self._event("response.output_item.done", output_index=index + offset, item=item)
        return out + self._event("response.completed", response=self.shape.body(answer, "completed"))
