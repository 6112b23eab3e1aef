"""Triage's configuration schema: config.toml's sections as msgspec Structs, every option with
its default. Reading and checking a file is `router/config_loader.py`."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from triage_router.policies.request import DEFAULT_PRIORITY, LEAST_URGENT, MOST_URGENT, PRIORITY_LEVELS

PriorityLevel = Annotated[int, msgspec.Meta(ge=MOST_URGENT, le=LEAST_URGENT)]
# One value per level, most urgent first.
PerLevel = msgspec.Meta(min_length=PRIORITY_LEVELS, max_length=PRIORITY_LEVELS)
# How many levels a rule may move a request.
LevelShift = Annotated[int, msgspec.Meta(ge=0, le=LEAST_URGENT - MOST_URGENT)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key path."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every section: a misspelt key is an error, not a silent default."""


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # Bodies above this are refused with 413 before they are parsed.
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    # More request headers than this, or more bytes of them, are refused with 431.
    max_headers: PositiveInt = 100
    max_header_bytes: PositiveInt = 64 * 1024
    # A request's line and headers must arrive within this of its first byte (408, then closed):
    # uvicorn, which served Triage before its own server did, set no such limit, so a client
    # dripping a header byte a second held a connection for ever (bench/reliability/abuse.py).
    header_timeout_s: PositiveFloat = 30.0
    # A request body must arrive within this (a slow-drip client is cut off with 408).
    body_deadline_s: PositiveFloat = 60.0
    # How long a shutdown waits for in-flight requests to finish.
    shutdown_grace_s: PositiveFloat = 30.0
    # An idle keep-alive connection is closed after this. Longer than clients keep theirs (httpx
    # and so the OpenAI SDK 5 s, aiohttp 15 s), so that the client is the one to close it: at
    # uvicorn's default 5 s a client could send a request on a connection the server was closing at that
    # moment, and lose it (bench/reliability/overload.py lost 6-24 of 1,500 that way).
    keep_alive_s: PositiveFloat = 75.0
    # Reload the config when its file changes (checked every 2 s), as on SIGHUP. Off by default:
    # a half-written file is refused with a log line, but a reload is still a deliberate act.
    watch_config: bool = False
    # Router processes sharing the port (`triage serve --workers`; router/cli/workers.py). 1: one
    # process, no supervisor.
    workers: PositiveInt = 1


class KVEventsConfig(_Section):
    """Where a backend publishes its KV-cache events (vLLM's `--kv-events-config`)."""

    # Its PUB socket, as the router reaches it: "tcp://host:5557" (vLLM binds "tcp://*:5557").
    endpoint: str
    # Its replay (ROUTER) socket, which resends what the router missed; "" when it has none.
    replay_endpoint: str = ""
    topic: str = ""


class BackendConfig(_Section):
    name: str
    url: str
    kind: Literal["openai", "vllm", "engine"] = "openai"
    # Served besides what the backend lists at /v1/models (read at start-up and every
    # upstream.models_refresh_s): names it does not list, or serves before its listing is read.
    # "*": any model name at all. Empty (the default): exactly what it lists.
    models: list[str] = msgspec.field(default_factory=list)
    # Draining: no new requests go there; those in flight finish. Set it and reload (SIGHUP) to
    # take a backend out without dropping a request, then remove it.
    drain: bool = False
    # The key Triage sends upstream. The client's own key is forwarded only if asked.
    api_key: str = ""
    forward_client_key: bool = False
    # "priority": a vLLM started with --scheduling-policy priority (it accepts `priority`).
    scheduling: Literal["fcfs", "priority"] = "fcfs"
    # The `priority` value sent for Triage's levels 0..4 (lower = earlier, as in vLLM).
    priority_map: Annotated[list[int], PerLevel] = msgspec.field(
        default_factory=lambda: [0, 1, 2, 3, 4]
    )
    # scheduling = "priority", kind other than "engine": send priority_map[level] x 1,000,000 plus
    # the predicted output tokens, so that the backend's own queue runs urgent work first and then
    # the shortest predicted work (policies/backend_priority.py). false: the level's value alone.
    priority_with_length: bool = True
    # Saturation thresholds (0 = no limit). When every candidate is saturated, requests wait in
    # the router's admission queue. `max_load` counts running + waiting requests: the backend's
    # own figure from /metrics when fresh, else this router's in-flight count.
    max_load: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_waiting: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_kv_usage: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    max_in_flight_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    # KV capacity in tokens, which sizes the prefix index. Unset: what the backend reports in
    # vllm:cache_config_info, else 65536. Set: this value, whatever the backend reports.
    kv_capacity_tokens: PositiveInt | None = None
    # kind = "engine" only: `triage serve` starts `python -m triage_router.engine_server` on this URL's port
    # with these extra arguments, waits until it is ready, and stops it on shutdown.
    launch: bool = False
    # KV-cache events: the backend's publisher, as "tcp://host:port" or a table
    # { endpoint = ..., replay_endpoint = ..., topic = ... }. With them the router knows which
    # prompt blocks the backend holds, instead of guessing from what it sent there. Needs
    # `tokenizer`: the directory of the model's tokenizer.json and tokenizer_config.json.
    kv_events: str | KVEventsConfig | None = None
    tokenizer: str = ""
    launch_args: list[str] = msgspec.field(default_factory=list)
    launch_timeout_s: PositiveFloat = 600.0
    # This backend's own timeouts; unset: [upstream]'s.
    connect_timeout_s: PositiveFloat | None = None
    first_byte_timeout_s: PositiveFloat | None = None
    read_timeout_s: PositiveFloat | None = None

    def serves(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    @property
    def events(self) -> KVEventsConfig | None:
        return KVEventsConfig(endpoint=self.kv_events) if isinstance(self.kv_events, str) else self.kv_events


class UpstreamConfig(_Section):
    connect_timeout_s: PositiveFloat = 5.0
    # Longest wait for an answer's head (for a non-streamed answer, the whole generation).
    first_byte_timeout_s: PositiveFloat = 600.0
    # Longest silence allowed between two chunks from the upstream (not the whole answer).
    read_timeout_s: PositiveFloat = 300.0
    # Tries per request, the first included; retries go to other backends serving the model.
    max_attempts: PositiveInt = 3
    # Consecutive failures that mark a backend down until a probe brings it back.
    failure_threshold: PositiveInt = 3
    probe_path: str = "/v1/models"
    probe_initial_interval_s: PositiveFloat = 0.5
    probe_max_interval_s: PositiveFloat = 30.0
    # How often each backend's /v1/models is read: its models (LoRA adapters and embedding
    # models included) are routed to it from then on.
    models_refresh_s: PositiveFloat = 10.0


class RoutingConfig(_Section):
    # "cache-affinity" | "least-load" | "round-robin" | "power-of-two"
    policy: Literal["cache-affinity", "least-load", "round-robin", "power-of-two"] = "cache-affinity"
    # Prefix fingerprint: characters per hashed block, and at most this many blocks a request.
    block_chars: PositiveInt = 256
    max_blocks: PositiveInt = 512
    # Cache affinity with bounded load: leave the best match when it is this much busier.
    # Moving a request moves its conversation for good (its blocks are then longest there) and
    # copies its system prompt into the other cache: at 4, bursts of 5 requests did it in half
    # of the bench/fleet runs and cost 0.04 of hit rate (runs 10-24); sglang-router uses 64.
    balance_abs_threshold: Annotated[int, msgspec.Meta(ge=0)] = 16
    balance_rel_threshold: Annotated[float, msgspec.Meta(ge=1)] = 1.5
    # A match covering less of the prompt than this is not worth following.
    cache_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3
    # A prefix new to the fleet that fits in no backend's cache goes to the backend already
    # holding the most prefixes, while it holds at most this multiple of an even share of them.
    overflow_imbalance: Annotated[float, msgspec.Meta(ge=1)] = 1.2
    # A request carrying a session keeps to one backend (rendezvous hashing over the unsaturated
    # ones, so every replica agrees): this header, else the first of these body fields it sets.
    # OpenAI's `prompt_cache_key` exists for exactly this; `user` is what it used before.
    session_header: str = "x-session-id"
    session_fields: list[Literal["prompt_cache_key", "user"]] = msgspec.field(
        default_factory=lambda: ["prompt_cache_key", "user"])
    # The prefix index remembers this many times the KV capacity: characters per token vary
    # (4 is assumed), and routing to a prefix the engine just evicted costs no more than
    # routing anywhere else, while forgetting one too early moves a tenant off its cache.
    index_capacity_factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    # How often each backend's /metrics is read, and when a reading is too old to trust. A
    # backend whose saturation limits (max_load, max_waiting, max_kv_usage) read its metrics is
    # read every metrics_fast_interval_s while this router has requests on it or waiting: only
    # there does a reading decide who goes next. Elsewhere this router's own in-flight counts
    # are current, and each read costs a vLLM server 5-8 ms of CPU (bench/fleet: at 10 Hz on
    # every backend, TTFT p50 rose 32-139 ms).
    metrics_interval_s: PositiveFloat = 1.0
    metrics_fast_interval_s: PositiveFloat = 0.1
    metrics_stale_s: PositiveFloat = 2.5
    # A backend's KV-event stream that lost messages it could not replay is trusted again only
    # after this long without another loss; meanwhile the approximate index routes that backend.
    kv_events_rewarm_s: PositiveFloat = 30.0


class AdmissionConfig(_Section):
    # A policies/ ordering name: "default" (policies.catalog.DEFAULT_POLICY, the one the engine
    # and the simulator run too), or fcfs, sjf, pjf, semantic, mlq, app-fifo, vtc, urgent-first,
    # wsjf, kv-wsjf, each optionally with "+aging".
    ordering: str = "default"
    # A request waiting longer than this is promoted ahead of everything (no starvation). Too
    # short a bound promotes everything in a burst and the order degrades to FCFS.
    aging_bound_s: PositiveFloat = 60.0
    # Queue limits: all priorities together, then per priority 0..4.
    max_queued: Annotated[int, msgspec.Meta(ge=0)] = 1024
    max_queued_per_priority: Annotated[list[int], PerLevel] = msgspec.field(
        default_factory=lambda: [1024] * PRIORITY_LEVELS
    )
    timeout_s: Annotated[list[float], PerLevel] = msgspec.field(
        default_factory=lambda: [30.0, 60.0, 120.0, 300.0, 600.0]
    )
    # Fraction of each backend's load limit (max_load, else its learned concurrency) that a
    # priority may not use, kept free for more urgent work. By default the background levels 3
    # and 4 leave an eighth and a quarter free, so that an urgent request finds a slot at once
    # instead of waiting for a bulk stream to end; the default level 2 and above use it all.
    headroom: Annotated[list[float], PerLevel] = msgspec.field(
        default_factory=lambda: [0.0, 0.0, 0.0, 0.125, 0.25]
    )
    retry_after_s: PositiveInt = 1
    # Whose request it is, for ordering = "vtc", rules' `tenants` and length prediction, when the
    # request carries no API key (a key's name always wins, so a keyed client cannot pose as another).
    tenant_header: str = "x-tenant-id"
    # Cost model for predicted remaining seconds (triage_router.policies.cost_model; paper's A100/7B fit).
    decode_c1: float = 1.34911080e-08
    decode_c2: float = 1.330198e-02
    prefill_c1: float = 5.13462572e-07
    prefill_c2: float = 1.48057167e-04
    swap_s_per_token: float = 0.0001


class PriorityConfig(_Section):
    default: PriorityLevel = DEFAULT_PRIORITY
    header: str = "x-priority"
    # The most urgent level a caller without an API key may claim by header (with no
    # [[api_keys]], every caller): without it anyone could send `x-priority: 0`. Rules and
    # taggers still raise such a request by what it says.
    anonymous_max_priority: PriorityLevel = DEFAULT_PRIORITY


class RuleConfig(_Section):
    """One named rule of the rule-based tagger; see docs/configuration.md, `[[rules]]`.

    Every condition given must hold; within one list, any entry is enough. Exactly one of
    `priority`, `raise` and `lower` says what a match does.
    """

    name: str
    priority: PriorityLevel | None = None
    # Levels toward 0 (more urgent) or toward 4; applied to whatever sets the level.
    raise_: LevelShift = msgspec.field(default=0, name="raise")
    lower: LevelShift = 0
    # A shift does not go past this level (and leaves a level already past it alone).
    stop_at: PriorityLevel | None = None
    # Case-insensitive whole words or phrases, and regular expressions (the `regex` dialect,
    # case-insensitive); a match of either counts, unless an exclude_* entry matches too.
    keywords: list[str] = msgspec.field(default_factory=list)
    patterns: list[str] = msgspec.field(default_factory=list)
    exclude_keywords: list[str] = msgspec.field(default_factory=list)
    exclude_patterns: list[str] = msgspec.field(default_factory=list)
    # Model names (shell-style globs), API key names, and "chat" / "completions".
    models: list[str] = msgspec.field(default_factory=list)
    tenants: list[str] = msgspec.field(default_factory=list)
    routes: list[Literal["chat", "completions", "responses", "messages", "embeddings"]] = msgspec.field(default_factory=list)
    # Which messages are examined: these roles, the latest such turn or all of them.
    roles: list[str] = msgspec.field(default_factory=lambda: ["user"])
    turns: Literal["last", "all"] = "last"
    # Only streamed (true) or only non-streamed (false) requests; unset: either.
    stream: bool | None = None
    # Only when the examined text has at most this many characters (0: any length).
    max_length: Annotated[int, msgspec.Meta(ge=0)] = 0


class ModelTaggerConfig(_Section):
    """What both model-based taggers share: where the model is and how long to wait for it."""

    enabled: bool = False
    # A [[backends]] name, or any OpenAI-compatible base URL (one of the two).
    backend: str = ""
    url: str = ""
    model: str = ""
    api_key: str = ""
    # Past this the request goes on without the tagger's answer (counted in the metrics).
    timeout_ms: PositiveFloat = 150.0
    # Answers remembered, keyed by a hash of the examined text.
    cache_size: Annotated[int, msgspec.Meta(ge=0)] = 4096
    # Calls in flight at most; beyond it requests fall back at once instead of waiting.
    max_concurrency: PositiveInt = 16
    # The latest user turn is cut to this many characters (its head and its tail).
    max_input_chars: PositiveInt = 2000
    # The most urgent level this tagger may give; a lower answer is raised to it.
    most_urgent: PriorityLevel = 0


class EmbeddingTaggerConfig(ModelTaggerConfig):
    # JSONL files of {"text", "priority"}; none given: the examples shipped with Triage.
    examples: list[str] = msgspec.field(default_factory=list)
    # Texts per /v1/embeddings call when the examples are embedded at start-up.
    batch_size: PositiveInt = 64
    # Abstain (let the next step decide) when the two best levels' cosine similarities are
    # closer than this.
    min_margin: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0


class LlmTaggerConfig(ModelTaggerConfig):
    # The tokenizer's ids of "0".."4": when given, max_tokens=1 with logit_bias confines the
    # answer to them; otherwise the five labels are read from top_logprobs.
    label_token_ids: list[int] = msgspec.field(default_factory=list)
    top_logprobs: Annotated[int, msgspec.Meta(ge=1, le=20)] = 20


class TaggingConfig(_Section):
    # Rules: each examined message is cut to this many characters (head and tail), and each
    # regular expression may run this long before it counts as no match.
    max_input_chars: PositiveInt = 4096
    regex_timeout_ms: PositiveFloat = 5.0
    embedding: EmbeddingTaggerConfig = msgspec.field(default_factory=EmbeddingTaggerConfig)
    llm: LlmTaggerConfig = msgspec.field(default_factory=LlmTaggerConfig)
    # Which model-based tagger asks first when both are enabled.
    order: list[Literal["embedding", "llm"]] = msgspec.field(default_factory=lambda: ["llm", "embedding"])


class LengthConfig(_Section):
    # Before any answer is seen: the median guess, and how many observations it weighs.
    prior_tokens: PositiveInt = 256
    prior_weight: PositiveFloat = 4.0
    # The high quantile reported beside the median.
    quantile: Annotated[float, msgspec.Meta(gt=0.5, lt=1)] = 0.9
    # Weight kept per observation, so old behaviour fades (1.0: never forget).
    decay: Annotated[float, msgspec.Meta(gt=0.5, le=1)] = 0.995
    # Statistics kept at most (least recently used dropped), so memory stays bounded.
    max_groups: PositiveInt = 4096
    # Saved here on shutdown and every save_interval_s, and read at start-up ("" = never).
    state_file: str = ""
    save_interval_s: PositiveFloat = 60.0
    # Ask upstream for usage in streams (stream_options.include_usage) so that streamed answers
    # teach the predictor too; the extra event is removed if the client did not ask for it.
    stream_usage: bool = True


class LogConfig(_Section):
    # One JSON line per request (router/http/access_log.py), to stdout or to `access_file`.
    access: bool = True
    # A file the lines are appended to ("": stdout).
    access_file: str = ""


class ModelConfig(_Section):
    """A model name clients may ask for, beyond the ones the backends list."""

    name: str
    # Serve `name` with this model of the backends (an alias: "gpt-4o-mini" served as "smol").
    serve_as: str = ""
    # When every backend for the model fails before its first byte, try this model's backends.
    fallback: str = ""


class RateLimitConfig(_Section):
    # Where the per-key buckets live for every replica: a Redis URL ("redis://host:6379/0"), or
    # the environment variable holding it (it may carry a password). Empty: in this process only.
    redis_url: str = ""
    redis_url_env: str = ""
    # Longest wait for Redis on a request's path; past it the local buckets decide.
    redis_timeout_s: PositiveFloat = 0.25
    # Without Redis (or while it does not answer), each replica enforces this share of a key's
    # limits: set it to the number of router replicas.
    replicas: PositiveInt = 1


class ApiKeyConfig(_Section):
    # The secret, in exactly one of four forms: as written (`key`), its SHA-256 in hex
    # (`key_sha256`), or read at start-up from an environment variable (`key_env`) or a file
    # (`key_file`, e.g. a mounted Kubernetes Secret; surrounding whitespace is dropped). Once
    # loaded only the hash is kept (config_loader.py).
    key: str = ""
    key_sha256: str = ""
    key_env: str = ""
    key_file: str = ""
    # The most urgent level this key may ask for; more urgent asks are clamped to it.
    max_priority: PriorityLevel = 0
    name: str = ""
    # Rate limits (0 = none): requests, and prompt plus completion tokens from the answers'
    # usage, per minute. Exact across replicas with [rate_limits] redis_url; without it, each
    # replica enforces 1 / [rate_limits] replicas of them.
    requests_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 0
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 0


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    priority: PriorityConfig = msgspec.field(default_factory=PriorityConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    admission: AdmissionConfig = msgspec.field(default_factory=AdmissionConfig)
    api_keys: list[ApiKeyConfig] = msgspec.field(default_factory=list)
    rate_limits: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    models: list[ModelConfig] = msgspec.field(default_factory=list)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    tagging: TaggingConfig = msgspec.field(default_factory=TaggingConfig)
    length: LengthConfig = msgspec.field(default_factory=LengthConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
