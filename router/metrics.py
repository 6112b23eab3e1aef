"""The router's Prometheus metrics, named triage_* and labelled by priority and backend."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from triage_router.router.buffered_metrics import FLUSH_EVERY_S, BufferedCounter, BufferedHistogram, buffered

# Seconds; the low end resolves a proxy's own overhead, the high end long generations.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

NO_BACKEND = "none"

# Tagging latency: a cache hit costs microseconds, a model call up to its timeout.
TAGGING_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0)
# Completion tokens, actual minus predicted: signed, roughly doubling away from 0.
LENGTH_ERROR_BUCKETS = tuple(
    sorted({-(2**k) for k in range(2, 14)} | {0} | {2**k for k in range(2, 14)})
)

# vLLM's buckets for the same measurements, so that a dashboard compares the two directly.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
               960.0, 1920.0, 7680.0)

# The *_created series double the output and no dashboard reads them.
disable_created_metrics()


# How a gauge's readings from several worker processes (`triage serve --workers`) become one
# figure; ignored in a single process. Counts that each worker holds part of are summed over
# the live workers. A backend's own reading (its /metrics, its health) is the same backend seen
# by every worker: the latest worker's reading is the backend's latest. A dead worker's
# gauges are dropped (the parent marks it dead); its counters and histograms are kept.
SUMMED = "livesum"
LATEST = "livemostrecent"


class RouterMetrics:
    """One registry per app, so tests can build many apps side by side.

    With `across_processes`, the values live in files under $PROMETHEUS_MULTIPROC_DIR (set
    before prometheus_client was imported) and `render` shows every process's, combined: a
    scrape of any worker shows the whole router."""

    def __init__(self, across_processes: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._exposed = r
        if across_processes:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)
        self.requests = Counter(
            "triage_requests", "Requests answered, by endpoint, priority, backend, model and status code.",
            ["endpoint", "priority", "backend", "model", "status"], registry=r,
        )
        self.errors = Counter(
            "triage_request_errors", "Requests that failed, by reason.",
            ["priority", "backend", "reason"], registry=r,
        )
        self.in_flight = Gauge(
            "triage_requests_in_flight", "Requests being relayed now.", ["priority", "backend"], registry=r,
            multiprocess_mode=SUMMED,
        )
        self.time_to_first_byte = Histogram(
            "triage_time_to_first_byte_seconds", "From request arrival to the first response byte sent.",
            ["priority", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.duration = Histogram(
            "triage_request_duration_seconds", "From request arrival to the last response byte sent.",
            ["priority", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "triage_upstream_retries", "Attempts moved to another backend before any byte was sent.",
            ["backend"], registry=r,
        )
        self.queue_length = Gauge(
            "triage_queue_length", "Requests waiting in the admission queue.", ["priority"], registry=r,
            multiprocess_mode=SUMMED,
        )
        # Per priority and model, as vLLM names them (vllm:time_to_first_token_seconds, ...).
        self.queue_time = Histogram(
            "triage_request_queue_time_seconds",
            "From request arrival at the admission step to its placement on a backend; 0 when one had room.",
            ["priority", "model"], buckets=TTFT_BUCKETS, registry=r,
        )
        self.time_to_first_token = Histogram(
            "triage_time_to_first_token_seconds",
            "Streams only: from request arrival to the first event carrying generated text or a tool call "
            "(an empty role-only chunk does not count).",
            ["priority", "model"], buckets=TTFT_BUCKETS, registry=r,
        )
        self.time_per_output_token = Histogram(
            "triage_time_per_output_token_seconds",
            "Streams with usage: from the first token to the end, per completion token after the first.",
            ["priority", "model"], buckets=TPOT_BUCKETS, registry=r,
        )
        self.e2e_latency = Histogram(
            "triage_e2e_request_latency_seconds", "Answered requests: from arrival to the last byte sent.",
            ["priority", "model"], buckets=E2E_BUCKETS, registry=r,
        )
        self.queue_rejections = Counter(
            "triage_queue_rejections", "Requests refused by the admission queue: full, shed or timeout.",
            ["priority", "reason"], registry=r,
        )
        self.placements = Counter(
            "triage_placements", "Placement decisions, by how they were made.", ["policy", "backend"], registry=r,
        )
        self.priority_decisions = Counter(
            "triage_priority_decisions", "Priorities given, by level and the step that decided it.",
            ["priority", "source"], registry=r,
        )
        self.rule_timeouts = Counter(
            "triage_rule_timeouts", "Rule patterns stopped at regex_timeout_ms (counted as no match).",
            ["rule"], registry=r,
        )
        self.tagger_latency = Histogram(
            "triage_tagger_latency_seconds", "Time a model-based tagger took for one request, cache hits included.",
            ["tagger"], buckets=TAGGING_BUCKETS, registry=r,
        )
        self.tagger_cache_hits = Counter(
            "triage_tagger_cache_hits", "Tagger answers served from the cache.", ["tagger"], registry=r,
        )
        self.tagger_fallbacks = Counter(
            "triage_tagger_fallbacks",
            "Requests a model-based tagger did not decide: timeout, error, rejected (answer outside 0..4), "
            "busy (concurrency limit), not_ready (examples not embedded yet), abstained.",
            ["tagger", "reason"], registry=r,
        )
        self.predicted_output_tokens = Histogram(
            "triage_predicted_output_tokens", "Predicted completion tokens (median) per request.",
            ["priority"], buckets=tuple(2**k for k in range(0, 16)), registry=r,
        )
        self.output_length_error = Histogram(
            "triage_output_length_error_tokens", "Completion tokens observed minus the median predicted.",
            ["priority"], buckets=LENGTH_ERROR_BUCKETS, registry=r,
        )
        self.kv_events = Counter(
            "triage_kv_events",
            "KV-event messages from each backend, by outcome: applied, replayed, duplicate, restart (a new "
            "stream: index cleared), gap, lost (not recovered: the index is untrusted for a while), "
            "skipped_event (an event kind this router does not read).",
            ["backend", "outcome"], registry=r,
        )
        self.kv_index_blocks = Gauge(
            "triage_kv_index_blocks", "Blocks a backend reports holding, from its KV events.", ["backend"], registry=r,
            multiprocess_mode=LATEST)
        self.kv_index_trusted = Gauge(
            "triage_kv_index_trusted",
            "1 while a backend's KV-event index routes it; 0 while the approximate index does (no stream yet, "
            "or recovering from lost messages).", ["backend"], registry=r, multiprocess_mode=LATEST)
        self.tokenize_time = Histogram(
            "triage_prompt_tokenize_seconds",
            "Time to turn a request into the token ids its backends hash (only with KV events).",
            buckets=TAGGING_BUCKETS, registry=r,
        )
        self.backend_up = Gauge("triage_backend_up", "1 while a backend is taken as healthy.", ["backend"], registry=r,
                                multiprocess_mode=LATEST)
        # What each backend's own /metrics said at the last reading (vLLM's names, summed over models).
        self.backend_running = Gauge(
            "triage_backend_running", "Requests the backend reported running.", ["backend"], registry=r,
            multiprocess_mode=LATEST)
        self.backend_waiting = Gauge(
            "triage_backend_waiting", "Requests the backend reported waiting in its own queue.", ["backend"], registry=r,
            multiprocess_mode=LATEST)
        self.backend_kv_usage = Gauge(
            "triage_backend_kv_cache_usage", "Fraction of the backend's KV cache in use, 0..1.", ["backend"], registry=r,
            multiprocess_mode=LATEST)
        self.backend_prefix_queries = Gauge(
            "triage_backend_prefix_cache_queries", "The backend's own prefix-cache query counter (tokens).",
            ["backend"], registry=r, multiprocess_mode=LATEST)
        self.backend_prefix_hits = Gauge(
            "triage_backend_prefix_cache_hits", "The backend's own prefix-cache hit counter (tokens).",
            ["backend"], registry=r, multiprocess_mode=LATEST)
        self.backend_concurrency = Gauge(
            "triage_backend_learned_concurrency", "Requests the backend runs at once, as Triage learned it (0: not yet).",
            ["backend"], registry=r, multiprocess_mode=LATEST)
        self.tokens = Counter(
            "triage_tokens", "Tokens served, from each answer's usage, per API key name (never the key) and model.",
            ["key", "model", "kind"], registry=r)
        # prometheus_client's labels() takes a lock and builds tuples; the hot path reuses children,
        # buffered (router/buffered_metrics.py).
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], BufferedCounter | BufferedHistogram] = {}
        self.across_processes = across_processes

    def child(self, metric: MetricWrapperBase, *labels: str) -> BufferedCounter | BufferedHistogram:
        """`metric`'s child for `labels`, buffered: what it counts shows in `render()` and, with
        several workers, in the other workers' scrapes within FLUSH_EVERY_S."""
        key = (metric, labels)  # the metric object hashes by identity: cheaper than by its name
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = buffered(metric, metric.labels(*labels))
        return found

    def flush(self) -> None:
        """Hand every buffered child's counts to prometheus_client."""
        for child in self._children.values():
            child.flush()

    async def flush_periodically(self) -> None:
        """With several workers: every FLUSH_EVERY_S, so that any worker's scrape sees them all."""
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            self.flush()

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self._exposed)
