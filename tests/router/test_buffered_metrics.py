"""Buffered children must render exactly as prometheus_client's own children would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from triage_router.router.buffered_metrics import buffered
from triage_router.router.metrics import LATENCY_BUCKETS, RouterMetrics

OBSERVED = (0.0004, 0.001, 0.0011, 0.3, 7.0, 299.0, 1e6, 0.0)


def _pair() -> tuple[CollectorRegistry, CollectorRegistry, dict[str, tuple[object, object]]]:
    """The same three metrics in two registries: one fed directly, one through buffered children."""
    direct, through = CollectorRegistry(), CollectorRegistry()
    made = {}
    for name, kind, extra in (("c", Counter, {}), ("g", Gauge, {}), ("h", Histogram, {"buckets": LATENCY_BUCKETS})):
        one = kind(name, name, ["backend"], registry=direct, **extra)
        other = kind(name, name, ["backend"], registry=through, **extra)
        made[name] = (one.labels("a"), buffered(other, other.labels("a")))
    return direct, through, made


def test_flushed_children_render_as_direct_ones() -> None:
    direct, through, made = _pair()
    for value in OBSERVED:
        for child in made["h"]:
            child.observe(value)
    for child in made["c"]:
        child.inc()
        child.inc(2.5)
    for child in made["g"]:
        child.inc(3)
        child.dec()
    assert generate_latest(direct) != generate_latest(through)  # nothing flushed yet
    for _, buffered_child in made.values():
        buffered_child.flush()
    assert generate_latest(direct) == generate_latest(through)
    # A second flush adds nothing; new counts after it still arrive.
    for child in made["h"]:
        child.observe(0.02)
    for _, buffered_child in made.values():
        buffered_child.flush()
        buffered_child.flush()
    assert generate_latest(direct) == generate_latest(through)


def test_a_gauge_set_is_not_overtaken_by_earlier_increments() -> None:
    direct, through, made = _pair()
    direct_gauge, buffered_gauge = made["g"]
    buffered_gauge.inc(5)
    buffered_gauge.set(2)
    buffered_gauge.flush()
    direct_gauge.set(2)
    assert generate_latest(direct) == generate_latest(through)


def test_a_scrape_shows_what_the_hot_path_counted() -> None:
    metrics = RouterMetrics()
    metrics.child(metrics.requests, "chat", "2", "b", "m", "200").inc()
    metrics.child(metrics.duration, "2", "b").observe(0.003)
    rendered = metrics.render().decode()
    assert 'triage_requests_total{backend="b",endpoint="chat",model="m",priority="2",status="200"} 1.0' in rendered
    assert 'triage_request_duration_seconds_bucket{backend="b",le="0.005",priority="2"} 1.0' in rendered
    assert 'triage_request_duration_seconds_bucket{backend="b",le="0.0025",priority="2"} 0.0' in rendered
