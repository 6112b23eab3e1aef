"""Triage's configuration: config.toml decoded into msgspec Structs.

Every option has a default. A mistake is reported with its key path and what was expected,
for example ``backends[1].url: expected an http(s) URL``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

PriorityLevel = Annotated[int, msgspec.Meta(ge=0, le=4)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

DEFAULT_CONFIG_PATH = "config.toml"
CONFIG_ENV_VAR = "TRIAGE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key path."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every section: a misspelt key is an error, not a silent default."""


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # Bodies above this are refused with 413 before they are parsed.
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    # How long a shutdown waits for in-flight requests to finish.
    shutdown_grace_s: PositiveFloat = 30.0


class BackendConfig(_Section):
    name: str
    url: str
    kind: Literal["openai", "vllm", "engine"] = "openai"
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    # The key Triage sends upstream. The client's own key is forwarded only if asked.
    api_key: str = ""
    forward_client_key: bool = False
    # "priority": a vLLM started with --scheduling-policy priority (it accepts `priority`).
    scheduling: Literal["fcfs", "priority"] = "fcfs"

    def serves(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class UpstreamConfig(_Section):
    connect_timeout_s: PositiveFloat = 5.0
    # Longest silence allowed between two chunks from the upstream (not the whole answer).
    read_timeout_s: PositiveFloat = 300.0
    # Tries per request, the first included; retries go to other backends serving the model.
    max_attempts: PositiveInt = 3
    # Consecutive failures that mark a backend down until a probe brings it back.
    failure_threshold: PositiveInt = 3
    probe_path: str = "/v1/models"
    probe_initial_interval_s: PositiveFloat = 0.5
    probe_max_interval_s: PositiveFloat = 30.0
    # How long a wildcard backend's own /v1/models listing is reused.
    models_cache_s: PositiveFloat = 10.0


class PriorityConfig(_Section):
    default: PriorityLevel = 2
    header: str = "x-priority"


class ApiKeyConfig(_Section):
    key: str
    # The most urgent level this key may ask for; more urgent asks are clamped to it.
    max_priority: PriorityLevel = 0
    name: str = ""


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    priority: PriorityConfig = msgspec.field(default_factory=PriorityConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    api_keys: list[ApiKeyConfig] = msgspec.field(default_factory=list)


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
        if not backend.models:
            raise ConfigError(f"backends[{i}].models: expected at least one model name or \"*\"")
    keys: set[str] = set()
    for i, api_key in enumerate(config.api_keys):
        if not api_key.key:
            raise ConfigError(f"api_keys[{i}].key: expected a non-empty key")
        if api_key.key in keys:
            raise ConfigError(f"api_keys[{i}].key: duplicate key")
        keys.add(api_key.key)
    if not config.priority.header:
        raise ConfigError("priority.header: expected a header name")


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
