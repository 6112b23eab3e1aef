"""Request bodies parsed and validated: a chat or legacy completion becomes a `Generation`, an
embeddings body an `EmbeddingRequest` whose input is checked. Every error is a 4xx in OpenAI's
shape, naming the offending parameter."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from triage_router.policies.request import DEFAULT_PRIORITY, LEAST_URGENT, MOST_URGENT

from triage_router.engine_server.api_types import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from triage_router.engine_server.engine import RequestRejected
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.errors import ContextTooLong
from triage_router.router.errors import BadRequest, ModelNotFound
from triage_router.engine_server.sequence import SamplingParams

MAX_TOP_LOGPROBS = 20
MAX_N = 16


class Generation(msgspec.Struct):
    """Everything a handler needs once the body is validated."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: int
    predicted: int | None
    tenant: str
    stream: bool
    include_usage: bool
    n: int = 1  # choices; each is its own sequence (they share the prompt's cached blocks)


def decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        path = str(e).rsplit("at `$.", 1)
        raise BadRequest(str(e), param=path[1].rstrip("`") if len(path) == 2 else None) from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None


def check_model(model: str | None, *served: str) -> None:
    if model is not None and model not in served:
        raise ModelNotFound(f"the model {model!r} does not exist; this server serves {', '.join(served)}", param="model")


def flatten_content(message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates expect string content; OpenAI also allows a list of text parts."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content):
            raise BadRequest("only text content parts are supported", param="messages")
        return {**message, "content": "".join(texts)}
    if content is None:
        return {**message, "content": ""}
    if not isinstance(content, str):
        raise BadRequest("message content must be a string or a list of text parts", param="messages")
    return message


def embedding_request(raw: bytes, served_model: str | None) -> tuple[EmbeddingRequest, list[str]]:
    """The body and its input as a list of texts; `served_model` None: no embedding model here."""
    body: EmbeddingRequest = decode(raw, EmbeddingRequest)
    if served_model is None:
        raise ModelNotFound("this engine serves no embedding model", param="model")
    check_model(body.model, served_model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise BadRequest("input must be a non-empty string or a list of non-empty strings", param="input")
    if body.encoding_format not in ("float", "base64"):
        raise BadRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    if body.dimensions is not None:
        raise BadRequest("this model does not support the dimensions parameter", param="dimensions")
    return body, texts


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    """Chat messages through the model's chat template, into token ids."""
    try:
        encoded = tokenizer.apply_chat_template(
            [flatten_content(m) for m in messages], add_generation_prompt=add_generation_prompt,
            tokenize=True, return_dict=True,
        )
    except BadRequest:
        raise
    except Exception as e:  # the template rejects roles or shapes it does not know
        raise BadRequest(f"the chat template rejected the messages: {e}", param="messages") from None
    return list(encoded["input_ids"])


class RequestParser:
    """Chat and legacy-completion bodies into `Generation`s, with the engine's tokenizer and limits."""

    def __init__(self, engine: EngineClient, model_name: str) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name

    def chat(self, raw: bytes, headers: Any) -> Generation:
        body: ChatCompletionRequest = decode(raw, ChatCompletionRequest)
        check_model(body.model, self.model_name)
        if not body.messages:
            raise BadRequest("messages must not be empty", param="messages")
        ids = _render(self.tokenizer, body.messages, add_generation_prompt=True)
        top = (body.top_logprobs or 0) if body.logprobs else None
        max_tokens = body.max_completion_tokens or body.max_tokens
        return self._generation("chatcmpl", body, headers, ids, max_tokens, top)

    def tokenize(self, raw: bytes) -> tuple[TokenizeRequest, list[int]]:
        body: TokenizeRequest = decode(raw, TokenizeRequest)
        check_model(body.model, self.model_name)
        if (body.prompt is None) == (body.messages is None):
            raise BadRequest("give either `prompt` or `messages`", param="prompt")
        if body.messages is not None:
            ids = _render(self.tokenizer, body.messages, body.add_generation_prompt)
        else:
            special = True if body.add_special_tokens is None else body.add_special_tokens
            ids = list(self.tokenizer(body.prompt, add_special_tokens=special)["input_ids"])
        return body, ids

    def detokenize(self, raw: bytes) -> list[int]:
        body: DetokenizeRequest = decode(raw, DetokenizeRequest)
        check_model(body.model, self.model_name)
        vocab = self.engine.limits.vocab_size
        if any(not 0 <= t < vocab for t in body.tokens):
            raise BadRequest(f"token ids must be integers in [0, {vocab})", param="tokens")
        return body.tokens

    def completion(self, raw: bytes, headers: Any) -> Generation:
        body: CompletionRequest = decode(raw, CompletionRequest)
        check_model(body.model, self.model_name)
        if body.echo:
            raise BadRequest("echo is not supported", param="echo")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise BadRequest("only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            vocab = self.engine.limits.vocab_size
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt):
                raise BadRequest(f"prompt token ids must be integers in [0, {vocab})", param="prompt")
            ids = list(prompt)  # type: ignore[arg-type]
        max_tokens = body.max_tokens if body.max_tokens is not None else 16  # the legacy API's default
        return self._generation("cmpl", body, headers, ids, max_tokens, body.logprobs)

    def _generation(
        self, prefix: str, body: Any, headers: Any, prompt_ids: list[int], max_tokens: int | None, top: int | None
    ) -> Generation:
        priority = _priority(body, headers)
        params = self._sampling(body, prompt_ids, max_tokens, top)
        return Generation(
            request_id=f"{prefix}-{uuid.uuid4().hex}", prompt_ids=prompt_ids, params=params, priority=priority,
            predicted=body.predicted_output_tokens, tenant=body.tenant or "", stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage), n=body.n,
        )

    def _sampling(self, body: Any, prompt_ids: list[int], max_tokens: int | None, top_logprobs: int | None) -> SamplingParams:
        if not 1 <= body.n <= MAX_N:
            raise BadRequest(f"n must be between 1 and {MAX_N}", param="n")
        temperature = 1.0 if body.temperature is None else body.temperature
        if not 0 <= temperature <= 2:
            raise BadRequest("temperature must be between 0 and 2", param="temperature")
        top_p = 1.0 if body.top_p is None else body.top_p
        if not 0 < top_p <= 1:
            raise BadRequest("top_p must be in (0, 1]", param="top_p")
        top_k = body.top_k or 0
        if top_k < -1:
            raise BadRequest("top_k must be -1 (disabled) or positive", param="top_k")
        if max_tokens is not None and max_tokens < 1:
            raise BadRequest("max_tokens must be at least 1", param="max_tokens")
        if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        limit = self.engine.limits.max_model_len - len(prompt_ids)
        params = SamplingParams(
            temperature=temperature, top_p=top_p, top_k=max(top_k, 0), seed=body.seed,
            max_tokens=max_tokens if max_tokens is not None else limit, stop=stop,
            stop_token_ids=list(body.stop_token_ids or []), ignore_eos=body.ignore_eos,
            logprobs=top_logprobs is not None, top_logprobs=top_logprobs or 0,
        )
        try:
            self.engine.limits.validate(prompt_ids, params)
        except RequestRejected as e:
            raise ContextTooLong(str(e), param="messages" if hasattr(body, "messages") else "prompt") from None
        return params


def _priority(body: Any, headers: Any) -> int:
    value: Any = body.priority
    if value is None:
        header = headers.get("x-priority")
        if header is None:
            return DEFAULT_PRIORITY
        try:
            value = int(header)
        except ValueError:
            raise BadRequest("the x-priority header must be an integer 0..4", param="x-priority") from None
    if not MOST_URGENT <= value <= LEAST_URGENT:
        raise BadRequest(f"priority must be between {MOST_URGENT} (most urgent) and {LEAST_URGENT}", param="priority")
    return value
