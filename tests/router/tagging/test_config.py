from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from triage_router.router.config import ConfigError
from triage_router.router.config_loader import load_config, parse_config
from triage_router.router.tagging.embedding_tagger import EmbeddingClassifier
from triage_router.router.tagging.llm_tagger import LlmClassifier
from triage_router.router.metrics import RouterMetrics
from triage_router.router.tagging.model_tagger import ModelTagger
from triage_router.router.tagging.priority import HeaderPriority, build_resolver
from triage_router.router.tagging.rules import RulePriority

BACKEND = '[[backends]]\nname = "gpu"\nurl = "http://gpu:8000/"\napi_key = "sk-b"\n'


def test_tagging_and_length_defaults() -> None:
    config = parse_config("")
    assert not config.tagging.embedding.enabled and not config.tagging.llm.enabled
    assert config.tagging.llm.timeout_ms == 150 and config.tagging.embedding.timeout_ms == 150
    assert config.length.prior_tokens == 256 and config.length.state_file == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tagging.llm]\nenabled = true\nmodel = \"m\"\n", "tagging.llm: expected either `backend`"),
        (BACKEND + "[tagging.llm]\nenabled = true\nmodel = \"m\"\nbackend = \"gpu\"\nurl = \"http://x\"\n",
         "tagging.llm: expected either `backend`"),
        ("[tagging.embedding]\nenabled = true\nmodel = \"m\"\nbackend = \"cpu\"\n",
         "tagging.embedding.backend: no backend is named 'cpu'"),
        ("[tagging.embedding]\nenabled = true\nmodel = \"m\"\nurl = \"grpc://x\"\n", "tagging.embedding.url: expected an http(s) URL"),
        ("[tagging.embedding]\nenabled = true\nurl = \"http://x\"\n", "tagging.embedding.model: expected the model name"),
        ("[tagging.llm]\ntimeout_ms = 0\n", "tagging.llm.timeout_ms: expected `float` > 0"),
        ("[tagging]\norder = [\"llm\", \"regex\"]\n", "tagging.order[1]: invalid enum value 'regex'"),
        ("[length]\nquantile = 0.3\n", "length.quantile: expected `float` > 0.5"),
        ("[length]\nmax_groups = 0\n", "length.max_groups: expected `int` >= 1"),
    ],
)
def test_tagging_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(message)


def test_the_resolver_is_header_rules_taggers_in_order_then_default() -> None:
    config = parse_config(
        BACKEND
        + '[[rules]]\nname = "r"\npriority = 4\nkeywords = ["batch"]\n'
        + '[tagging]\norder = ["embedding", "llm"]\n'
        + '[tagging.embedding]\nenabled = true\nbackend = "gpu"\nmodel = "mini"\n'
        + '[tagging.llm]\nenabled = true\nurl = "http://judge:1/"\nmodel = "judge"\napi_key = "sk-j"\n'
    )
    resolver, classifiers = build_resolver(config, RouterMetrics(), httpx.AsyncClient())
    kinds = [type(step) for step in resolver.steps]
    assert kinds == [HeaderPriority, RulePriority, ModelTagger, ModelTagger]
    embedding, llm = classifiers
    assert isinstance(embedding, EmbeddingClassifier) and isinstance(llm, LlmClassifier)
    assert embedding.client.url == "http://gpu:8000/v1/embeddings"
    assert embedding.client.headers == {"authorization": "Bearer sk-b"}
    assert llm.url == "http://judge:1/v1/chat/completions" and llm.headers == {"authorization": "Bearer sk-j"}


def test_the_shipped_config_enables_rules_and_the_embedding_classifier() -> None:
    config = load_config(Path(__file__).parents[3] / "config.toml")
    resolver, classifiers = build_resolver(config, RouterMetrics(), httpx.AsyncClient())
    assert [c.name for c in classifiers] == ["embedding"]
    assert len(config.rules) >= 5
