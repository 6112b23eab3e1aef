"""A chat completion's answer, plain or streamed, gathered into what the translators need: text
deltas in order, tool calls assembled from their fragments, the finish reason and the usage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class SseReader:
    """Server-sent events from arbitrary chunks: complete `data:` payloads, parsed as JSON."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        events: list[dict[str, Any]] = []
        while (match := _EVENT_END.search(self._buffer)) is not None:
            raw, self._buffer = self._buffer[:match.start()], self._buffer[match.end():]
            for line in raw.splitlines():
                if line.startswith(b"data:"):
                    data = line[5:].strip()
                    if data and data != b"[DONE]":
                        events.append(json.loads(data))
        return events


@dataclass
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ChatAnswer:
    """Everything a chat answer said so far."""

    id: str = ""
    model: str = ""
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    # vLLM names the stop string that ended the answer.
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: dict[str, Any] | None = None

    def absorb_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens") or 0
            self.completion_tokens = usage.get("completion_tokens") or 0
            self.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0

    @classmethod
    def of_completion(cls, doc: dict[str, Any]) -> ChatAnswer:
        """A non-streamed chat completion."""
        answer = cls(id=doc.get("id", ""), model=doc.get("model", ""))
        choice = (doc.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        answer.text = message.get("content") or ""
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            answer.tool_calls.append(ToolCall(call.get("id", ""), function.get("name", ""), function.get("arguments", "")))
        answer.finish_reason = choice.get("finish_reason")
        answer.stop_reason = choice.get("stop_reason")
        answer.absorb_usage(doc.get("usage"))
        return answer

    def absorb_chunk(self, chunk: dict[str, Any]) -> tuple[str, list[int]]:
        """One streamed chunk: returns its text delta and the indexes of tool calls it touched."""
        if "error" in chunk and "choices" not in chunk:
            self.error = chunk["error"]
            return "", []
        self.id = self.id or chunk.get("id", "")
        self.model = self.model or chunk.get("model", "")
        self.absorb_usage(chunk.get("usage"))
        text, touched = "", []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                index = call.get("index", len(self.tool_calls))
                while len(self.tool_calls) <= index:
                    self.tool_calls.append(ToolCall())
                target, function = self.tool_calls[index], call.get("function") or {}
                target.id = target.id or call.get("id") or ""
                target.name = target.name or function.get("name") or ""
                target.arguments += function.get("arguments") or ""
                touched.append(index)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.stop_reason = choice.get("stop_reason")
        self.text += text
        return text, touched


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    """One named server-sent event, as the Responses and Messages APIs stream them."""
    return f"event: {name}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
