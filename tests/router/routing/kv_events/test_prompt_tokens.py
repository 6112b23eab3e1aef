"""The router's prompt tokens equal what transformers' apply_chat_template gives, which is what
vLLM hashes (vLLM renders with transformers, then encodes without special tokens)."""

import shutil

import pytest

from triage_router.engine_server.checkpoint import resolve_model_dir
from triage_router.router.routing.kv_events import prompt_tokens as module
from triage_router.router.routing.kv_events.block_hashes import pack_tokens
from triage_router.router.routing.kv_events.prompt_tokens import PromptTokenizer, TokenizerLoadError

SYSTEM = " ".join(f"Rule {i}: answer about policy {i} with care." for i in range(60))

# A template in the style of Llama 3's: tojson, raise_exception, loop controls, a tools block.
TOOLS_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}{%- set messages = messages[1:] %}{%- else %}{%- set system = 'default system' %}{%- endif %}
<|im_start|>system
{{ system }}
{%- if tools %}
Tools:
{%- for tool in tools %}
{{ tool | tojson(indent=2) }}
{%- endfor %}
{%- endif %}<|im_end|>
{% for message in messages %}
{%- if message['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}
{%- if message['content'] == 'skip' %}{% continue %}{% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] | trim }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def model_dir():
    return resolve_model_dir("default")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return PromptTokenizer(model_dir)


@pytest.fixture(scope="module")
def reference(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def expected(reference, messages, **kwargs):
    ids = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **kwargs)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def ids(tokens):
    packed = tokens.packed
    return [int.from_bytes(packed[i:i + 4], "little") for i in range(0, len(packed), 4)]


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],  # the template adds its default system prompt
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is rule 7?"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is rule 7?"},
     {"role": "assistant", "content": " Rule 7 says  so.\n"}, {"role": "user", "content": "And 8 ?\n\n"}],
    [{"role": "user", "content": "naïve café — 東京 🙂 <b>tags</b>  \t spaces"}],
]


@pytest.mark.anyio
@pytest.mark.parametrize("messages", CONVERSATIONS)
async def test_chat_tokens_equal_transformers(tokenizer, reference, messages):
    assert tokenizer.splits
    assert ids(await tokenizer.chat({"messages": messages})) == expected(reference, messages)
    # Again, from the piece cache.
    assert ids(await tokenizer.chat({"messages": messages})) == expected(reference, messages)


@pytest.mark.anyio
async def test_text_parts_are_joined_with_newlines_as_vllm_does(tokenizer, reference):
    parts = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]
    assert ids(await tokenizer.chat({"messages": parts})) == expected(reference, [{"role": "user", "content": "one\ntwo"}])


@pytest.mark.anyio
async def test_what_it_cannot_render_exactly_gives_none(tokenizer):
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert await tokenizer.chat({"messages": image}) is None
    assert await tokenizer.chat({"messages": [{"role": "user", "content": "x"}], "continue_final_message": True}) is None
    assert await tokenizer.chat({"messages": []}) is None
    assert await tokenizer.completion({"prompt": ["a", "b"]}) is None


@pytest.mark.anyio
async def test_completions_encode_the_text_or_take_the_ids(tokenizer, reference):
    assert ids(await tokenizer.completion({"prompt": "Once upon a time"})) == reference("Once upon a time")["input_ids"]
    assert ids(await tokenizer.completion({"prompt": [5, 6, 7]})) == [5, 6, 7]


@pytest.mark.anyio
async def test_long_uncached_text_is_encoded_on_a_thread(tokenizer, reference, monkeypatch):
    threaded = []
    real = module.asyncio.to_thread

    async def spy(fn, *args):
        threaded.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(module.asyncio, "to_thread", spy)
    messages = [{"role": "system", "content": SYSTEM + " a fresh one"}, {"role": "user", "content": "hi"}]
    assert ids(await tokenizer.chat({"messages": messages})) == expected(reference, messages)
    assert threaded
    threaded.clear()
    messages[1]["content"] = "hello"  # the system prompt is cached now: only the new turn is encoded
    assert ids(await tokenizer.chat({"messages": messages})) == expected(reference, messages)
    assert not threaded


@pytest.mark.anyio
async def test_a_richer_template_renders_as_transformers_does(model_dir, tmp_path):
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    (tmp_path / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    ours, theirs = PromptTokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "  weather?  "}, {"role": "assistant", "content": "skip"},
                {"role": "user", "content": "now"}]
    assert ids(await ours.chat({"messages": messages, "tools": tools})) == expected(theirs, messages, tools=tools)
    assert await ours.chat({"messages": [{"role": "tool", "content": "x"}]}) is None  # raise_exception


@pytest.mark.anyio
async def test_a_tokenizer_whose_pieces_do_not_add_up_caches_whole_prompts(tokenizer, monkeypatch):
    monkeypatch.setattr(PromptTokenizer, "_splitting_is_exact", lambda self: False)
    whole = PromptTokenizer(tokenizer.path)
    assert not whole.splits
    messages = [{"role": "user", "content": "Hello!"}]
    assert ids(await whole.chat({"messages": messages})) == ids(await tokenizer.chat({"messages": messages}))


def test_block_hashes_are_computed_once_per_block_size():
    tokens = module.PromptTokens(pack_tokens(range(40)))
    first = tokens.block_hashes(16, 100)
    assert len(first) == 2 and tokens.block_hashes(16, 100) is first
    assert len(tokens.block_hashes(8, 3)) == 3


def test_a_directory_without_a_tokenizer_is_an_error(tmp_path):
    with pytest.raises(TokenizerLoadError, match="cannot load the tokenizer"):
        PromptTokenizer(tmp_path)
