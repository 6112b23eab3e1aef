from __future__ import annotations

import pytest

from triage_router.engine_server.checkpoint import load_tokenizer
from triage_router.engine_server.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return load_tokenizer(smollm2_dir)


TEXT = "Héllo wörld — naïve café, 東京 🚀 done."


def test_incremental_text_equals_full_decode(tokenizer):
    prompt = tokenizer("Say:")["input_ids"]
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, prompt, stop=[])
    pieces = []
    for t in ids:
        assert not detok.append(t)
        pieces.append(detok.take(final=False))
    pieces.append(detok.take(final=True))
    assert "".join(pieces) == tokenizer.decode(ids) == TEXT
    assert all("\ufffd" not in p for p in pieces)  # never half a multi-byte character


def test_stop_string_cuts_the_text_and_is_never_streamed(tokenizer):
    ids = tokenizer("The answer is 42. END of story", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, [], stop=[" END"])
    streamed = []
    stopped = False
    for t in ids:
        stopped = detok.append(t)
        streamed.append(detok.take(final=stopped))
        if stopped:
            break
    assert stopped and "".join(streamed) == "The answer is 42."
