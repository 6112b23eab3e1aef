from __future__ import annotations

import pytest

from triage_router.router.api_types import decode_request
from triage_router.router.errors import BadRequest


def test_unknown_fields_are_ignored_not_rejected() -> None:
    request = decode_request("chat", b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "foo": 1, "stream": true}')
    assert request.model == "m" and request.stream and request.messages[0].content == [{"type": "text", "text": "x"}]


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("chat", b"", None),
        ("chat", b"[1]", None),
        ("chat", b'{"model": 1, "messages": []}', "model"),
        ("chat", b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        ("completions", b'{"model": "m"}', "prompt"),
    ],
)
def test_bad_bodies_name_the_field(endpoint: str, body: bytes, param: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_request(endpoint, body)  # type: ignore[arg-type]
    assert caught.value.param == param


def test_malformed_utf8_is_a_400_on_every_endpoint() -> None:
    import pytest

    from triage_router.router.api_types import decode_request
    from triage_router.router.errors import BadRequest

    body = b'{"model": "smol", "messages": [{"role": "user", "content": "\xff"}], "input": "\xfe", "prompt": "\xfd"}'
    for endpoint in ("chat", "completions", "embeddings", "passthrough"):
        with pytest.raises(BadRequest, match="UTF-8"):
            decode_request(endpoint, body)  # type: ignore[arg-type]
