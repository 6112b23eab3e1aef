from __future__ import annotations

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage, CompletionRequest
from triage_router.router.request_text import bounded, examined_texts, latest_user_text


def test_bounded_keeps_head_and_tail_within_the_limit() -> None:
    text = "HEAD" + "x" * 1000 + "TAIL"
    cut = bounded(text, 40)
    assert len(cut) <= 40 and cut.startswith("HEAD") and cut.endswith("TAIL")
    assert bounded("short", 40) == "short"


def test_text_parts_only_and_roles_and_turns() -> None:
    request = ChatCompletionRequest("m", [
        ChatMessage("system", "sys"),
        ChatMessage("user", [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}},
                             {"type": "text", "text": "here"}]),
        ChatMessage("assistant", None),
        ChatMessage("user", "latest"),
    ])
    assert latest_user_text(request, 100) == "latest"
    assert examined_texts(request, ["user"], False, 100) == ["look\nhere", "latest"]
    assert examined_texts(request, ["system", "assistant"], False, 100) == ["sys", ""]
    assert examined_texts(request, ["tool"], True, 100) == []


def test_a_completion_prompt_is_a_user_turn() -> None:
    assert latest_user_text(CompletionRequest("m", ["one", [1, 2], "two"]), 100) == "one\ntwo"
    assert examined_texts(CompletionRequest("m", "p"), ["system"], True, 100) == []
