from __future__ import annotations

import subprocess
import sys

from triage_router.router.api_types import decode_request
from triage_router.router.routing.fingerprint import fingerprint, render_prompt

SYSTEM = "You are a careful assistant. " * 40  # ~1,200 characters: several blocks


def _chat(body: str) -> object:
    return decode_request("chat", body.encode())


def _fp(body: str, block_chars: int = 64, max_blocks: int = 512) -> tuple[int, ...]:
    return fingerprint(_chat(body), block_chars, max_blocks).block_hashes


def test_json_spelling_does_not_matter() -> None:
    a = '{"model": "m", "messages": [{"role": "system", "content": "%s"}, {"role": "user", "content": "hi"}]}' % SYSTEM
    b = '{"messages":[{"content":"%s","role":"system"},{"content":"hi","role":"user"}],"model":"m","temperature":0.5}' % SYSTEM
    assert _fp(a) == _fp(b) and len(_fp(a)) > 10


def test_tool_key_order_does_not_matter_but_tools_do() -> None:
    base = '{"model": "m", "messages": [{"role": "system", "content": "%s"}], "tools": [%s]}'
    t1 = '{"type": "function", "function": {"name": "f", "parameters": {"a": 1, "b": 2}}}'
    t2 = '{"function": {"parameters": {"b": 2, "a": 1}, "name": "f"}, "type": "function"}'
    t3 = '{"type": "function", "function": {"name": "g", "parameters": {}}}'
    assert _fp(base % (SYSTEM, t1)) == _fp(base % (SYSTEM, t2))
    assert _fp(base % (SYSTEM, t1)) != _fp(base % (SYSTEM, t3))


def test_every_message_counts_not_just_the_first() -> None:
    """SGLang's router once hashed only the first message."""
    turn = '{"role": "user", "content": "%s"}' % ("question " * 30)
    one = '{"model": "m", "messages": [%s, {"role": "assistant", "content": "A"}]}' % turn
    two = '{"model": "m", "messages": [%s, {"role": "assistant", "content": "B"}]}' % turn
    assert _fp(one, 16) != _fp(two, 16)
    # ...but they share the blocks of the common first turn.
    shared = sum(1 for x, y in zip(_fp(one, 16), _fp(two, 16)) if x == y)
    assert shared >= len("user\x1f" + "question " * 30) // 16


def test_message_order_and_roles_matter() -> None:
    a = '{"model": "m", "messages": [{"role": "user", "content": "%s"}, {"role": "user", "content": "%s"}]}'
    x, y = "x" * 100, "y" * 100
    assert _fp(a % (x, y)) != _fp(a % (y, x))
    assert _fp(a % (x, y)) != _fp(a.replace('"user"', '"assistant"', 1) % (x, y))


def test_multimodal_parts_are_hashed_by_content() -> None:
    body = '{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,%s"}}]}]}'
    text = "describe " * 10
    assert _fp(body % (text, "AAAA"), 16) != _fp(body % (text, "BBBB"), 16)
    rendered = render_prompt(_chat(body % (text, "AAAA")))
    assert "<image_url:" in rendered and "AAAA" not in rendered


def test_model_name_seeds_the_chain() -> None:
    body = '{"model": "%s", "messages": [{"role": "user", "content": "%s"}]}'
    assert _fp(body % ("a", SYSTEM))[0] != _fp(body % ("b", SYSTEM))[0]


def test_full_blocks_only_and_capped() -> None:
    body = '{"model": "m", "messages": [{"role": "user", "content": "%s"}]}' % ("z" * 1000)
    fp = fingerprint(_chat(body), 100, 5)
    assert len(fp.block_hashes) == 5
    assert fp.chars == len("user\x1f" + "z" * 1000 + "\x1e")
    assert len(fingerprint(_chat(body), 100, 512).block_hashes) == fp.chars // 100


def test_completions_prompt_is_fingerprinted() -> None:
    request = decode_request("completions", b'{"model": "m", "prompt": "%s"}' % (b"p" * 300))
    assert len(fingerprint(request, 64, 512).block_hashes) == 4


def test_hashes_are_stable_across_processes() -> None:
    """Several router replicas (and restarts) must compute the same hashes."""
    body = '{"model": "m", "messages": [{"role": "system", "content": "%s"}]}' % SYSTEM
    code = (
        "from triage_router.router.api_types import decode_request; from triage_router.router.routing.fingerprint import fingerprint; "
        f"print(fingerprint(decode_request('chat', {body.encode()!r}), 64, 512).block_hashes)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == str(_fp(body))
