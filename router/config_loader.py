"""config.toml read, decoded and checked into a `Config` (router/config.py).

Every mistake is reported with its key path and what was expected, for example
``backends[1].url: expected an http(s) URL``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import msgspec
import regex

from triage_router.policies.catalog import policy_names
from triage_router.router.config import ApiKeyConfig, BackendConfig, Config, ConfigError, ModelTaggerConfig, RuleConfig

DEFAULT_CONFIG_PATH = "config.toml"
CONFIG_ENV_VAR = "TRIAGE_CONFIG"

_MSGSPEC_PATH = re.compile(r"^(?P<what>.*?) - at `\$(?P<path>[^`]*)`$")


def _readable(error: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.server.port`" into "server.port: expected ..."."""
    text = str(error)
    match = _MSGSPEC_PATH.match(text)
    if not match:
        return text
    path = match["path"].lstrip(".") or "(top level)"
    what = match["what"]
    return f"{path}: {what[:1].lower()}{what[1:]}"


def _check(config: Config) -> None:
    """Checks that span fields or need more than a type."""
    seen: set[str] = set()
    for i, backend in enumerate(config.backends):
        if not re.match(r"^https?://[^/\s]+", backend.url):
            raise ConfigError(f"backends[{i}].url: expected an http(s) URL, got {backend.url!r}")
        if backend.name in seen:
            raise ConfigError(f"backends[{i}].name: duplicate backend name {backend.name!r}")
        seen.add(backend.name)
        if backend.launch and backend.kind != "engine":
            raise ConfigError(f"backends[{i}].launch: only a backend of kind \"engine\" can be launched by Triage")
        _check_kv_events(i, backend)
    keys: set[str] = set()
    for i, api_key in enumerate(config.api_keys):
        _hash_key(i, api_key)
        if api_key.key_sha256 in keys:
            raise ConfigError(f"api_keys[{i}]: duplicate key")
        keys.add(api_key.key_sha256)
    routing = config.routing
    if routing.metrics_fast_interval_s > routing.metrics_interval_s:
        raise ConfigError("routing.metrics_fast_interval_s: expected at most metrics_interval_s "
                          f"({routing.metrics_interval_s:g}), got {routing.metrics_fast_interval_s:g}")
    if routing.metrics_stale_s <= routing.metrics_interval_s:
        raise ConfigError("routing.metrics_stale_s: expected more than metrics_interval_s "
                          f"({routing.metrics_interval_s:g}), or every reading would count as stale; "
                          f"got {routing.metrics_stale_s:g}")
    if not config.priority.header:
        raise ConfigError("priority.header: expected a header name")
    if config.admission.ordering not in policy_names():
        raise ConfigError(
            f"admission.ordering: expected one of {', '.join(policy_names())}, got {config.admission.ordering!r}"
        )
    for i, headroom in enumerate(config.admission.headroom):
        if not 0 <= headroom < 1:
            raise ConfigError(f"admission.headroom[{i}]: expected a fraction in [0, 1), got {headroom}")
    for i, timeout in enumerate(config.admission.timeout_s):
        if timeout <= 0:
            raise ConfigError(f"admission.timeout_s[{i}]: expected a positive number of seconds")
    names: set[str] = set()
    for i, model in enumerate(config.models):
        if not model.name or model.name in names:
            raise ConfigError(f"models[{i}].name: expected a unique, non-empty model name, got {model.name!r}")
        names.add(model.name)
        if model.name in (model.serve_as, model.fallback):
            raise ConfigError(f"models[{i}]: a model cannot be its own alias or fallback")
        if not (model.serve_as or model.fallback):
            raise ConfigError(f"models[{i}]: expected `serve_as`, `fallback` or both")
    _check_rules(config.rules)
    _resolve_redis_url(config)
    for name in ("embedding", "llm"):
        _check_tagger(f"tagging.{name}", getattr(config.tagging, name), seen)


def _check_kv_events(i: int, backend: BackendConfig) -> None:
    events = backend.events
    if events is None:
        if backend.tokenizer:
            raise ConfigError(f"backends[{i}].tokenizer: only read with kv_events")
        return
    for key, endpoint in (("endpoint", events.endpoint), ("replay_endpoint", events.replay_endpoint)):
        if (endpoint or key == "endpoint") and not re.match(r"^(tcp://[^\s*]+:\d+|ipc://\S+)$", endpoint):
            raise ConfigError(f"backends[{i}].kv_events.{key}: expected tcp://host:port (the address the router "
                              f"connects to, not vLLM's tcp://*) or ipc://path, got {endpoint!r}")
    if not backend.tokenizer:
        raise ConfigError(f"backends[{i}].tokenizer: kv_events needs the model's tokenizer, a directory holding "
                          "tokenizer.json and tokenizer_config.json")
    if not (Path(backend.tokenizer).expanduser() / "tokenizer.json").is_file():
        raise ConfigError(f"backends[{i}].tokenizer: no tokenizer.json in {backend.tokenizer!r}")


def _hash_key(i: int, api_key: ApiKeyConfig) -> None:
    """Resolve the key's one given form into `key_sha256`, and forget the plain key."""
    forms = [name for name in ("key", "key_sha256", "key_env", "key_file") if getattr(api_key, name)]
    if len(forms) != 1:
        raise ConfigError(f"api_keys[{i}]: expected exactly one of key, key_sha256, key_env, key_file")
    if api_key.key_sha256:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", api_key.key_sha256):
            raise ConfigError(f"api_keys[{i}].key_sha256: expected 64 hex digits")
        api_key.key_sha256 = api_key.key_sha256.lower()
        return
    secret = api_key.key
    if api_key.key_env:
        secret = os.environ.get(api_key.key_env, "").strip()
        if not secret:
            raise ConfigError(f"api_keys[{i}].key_env: the environment variable {api_key.key_env} is unset or empty")
    elif api_key.key_file:
        try:
            secret = Path(api_key.key_file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"api_keys[{i}].key_file: cannot read {api_key.key_file!r}: {error.strerror}") from None
        if not secret:
            raise ConfigError(f"api_keys[{i}].key_file: {api_key.key_file!r} is empty")
    api_key.key_sha256 = hashlib.sha256(secret.encode()).hexdigest()
    api_key.key = ""


def _resolve_redis_url(config: Config) -> None:
    limits = config.rate_limits
    if limits.redis_url and limits.redis_url_env:
        raise ConfigError("rate_limits: expected at most one of redis_url, redis_url_env")
    if limits.redis_url_env:
        limits.redis_url = os.environ.get(limits.redis_url_env, "").strip()
        if not limits.redis_url:
            raise ConfigError(f"rate_limits.redis_url_env: the environment variable {limits.redis_url_env} "
                              "is unset or empty")
        limits.redis_url_env = ""
    if limits.redis_url and not limits.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("rate_limits.redis_url: expected redis://, rediss:// or unix://")


def _check_rules(rules: list[RuleConfig]) -> None:
    names: set[str] = set()
    for i, rule in enumerate(rules):
        where = f"rules[{i}]"
        if not rule.name or rule.name in names:
            raise ConfigError(f"{where}.name: expected a unique, non-empty name, got {rule.name!r}")
        names.add(rule.name)
        actions = (rule.priority is not None) + (rule.raise_ > 0) + (rule.lower > 0)
        if actions != 1:
            raise ConfigError(f"{where}: expected exactly one of `priority`, `raise` or `lower` (a positive number of levels)")
        for key in ("patterns", "exclude_patterns"):
            for j, pattern in enumerate(getattr(rule, key)):
                try:
                    regex.compile(pattern)
                except regex.error as error:
                    raise ConfigError(f"{where}.{key}[{j}]: not a valid regular expression: {error}") from None
        if not rule.roles:
            raise ConfigError(f"{where}.roles: expected at least one message role")


def _check_tagger(where: str, tagger: ModelTaggerConfig, backends: set[str]) -> None:
    if not tagger.enabled:
        return
    if bool(tagger.backend) == bool(tagger.url):
        raise ConfigError(f"{where}: expected either `backend` (a backend name) or `url`, not both or neither")
    if tagger.backend and tagger.backend not in backends:
        raise ConfigError(f"{where}.backend: no backend is named {tagger.backend!r}")
    if tagger.url and not re.match(r"^https?://[^/\s]+", tagger.url):
        raise ConfigError(f"{where}.url: expected an http(s) URL, got {tagger.url!r}")
    if not tagger.model:
        raise ConfigError(f"{where}.model: expected the model name to ask")


def parse_config(text: str | bytes) -> Config:
    """Decode and check a TOML document."""
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as error:
        raise ConfigError(_readable(error)) from None
    except msgspec.DecodeError as error:
        raise ConfigError(f"not valid TOML: {error}") from None
    for backend in config.backends:
        backend.url = backend.url.rstrip("/")
    for tagger in (config.tagging.embedding, config.tagging.llm):
        tagger.url = tagger.url.rstrip("/")
    _check(config)
    return config


def resolve_config_path(explicit: str | None) -> Path:
    """--config, else $TRIAGE_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        return parse_config(text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
