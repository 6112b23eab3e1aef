from __future__ import annotations

from triage_router.router.routing.backends import BackendPool
from triage_router.router.config import BackendConfig


def _pool() -> BackendPool:
    return BackendPool([
        BackendConfig(name="a", url="http://a", models=["smol"]),
        BackendConfig(name="b", url="http://b", models=["smol", "big"]),
        BackendConfig(name="c", url="http://c", models=["*"]),
    ])


def test_serving_matches_names_and_wildcards() -> None:
    pool = _pool()
    assert [b.name for b in pool.serving("smol")] == ["a", "b", "c"]
    assert [b.name for b in pool.serving("big")] == ["b", "c"]
    assert [b.name for b in pool.serving("other")] == ["c"]


def test_repeated_failures_mark_down_once() -> None:
    pool = _pool()
    downs: list[str] = []
    pool.on_down = lambda backend: downs.append(backend.name)
    a = pool.backends[0]
    pool.mark_failure(a, threshold=2)
    assert a.healthy and downs == []
    pool.mark_failure(a, threshold=2)
    pool.mark_failure(a, threshold=2)
    assert not a.healthy and downs == ["a"]
    a.record_success()
    assert a.consecutive_failures == 0


def test_prefix_index_size_follows_config_then_report() -> None:
    reported = BackendPool([BackendConfig(name="a", url="http://a")], block_chars=100, index_capacity_factor=2.0).backends[0]
    assert reported.prefix_index.capacity_blocks == 65536 * 4 * 2 // 100
    reported.reported_capacity(48 * 128)
    assert reported.prefix_index.capacity_blocks == 48 * 128 * 4 * 2 // 100
    configured = BackendPool([BackendConfig(name="b", url="http://b", kv_capacity_tokens=1000)], block_chars=100).backends[0]
    configured.reported_capacity(48 * 128)
    assert configured.prefix_index.capacity_blocks == 1000 * 4 * 2 // 100
    # Placement sees the capacity only once it is known, and the index's working set in tokens.
    assert BackendPool([BackendConfig(name="c", url="http://c")], block_chars=100).backends[0].kv_capacity_tokens is None
    assert (reported.kv_capacity_tokens, configured.kv_capacity_tokens) == (48 * 128, 1000)
    configured.prefix_index.insert([1, 2, 3])
    assert configured.cached_tokens == 3 * 100 // 4


def test_a_reload_keeps_what_was_learned_of_a_backend_that_stays() -> None:
    pool = _pool()
    a, b, c = pool.backends
    a.concurrency.observe_refusal(in_flight=4)
    b.in_flight = 2
    added, removed = pool.reconfigure([
        BackendConfig(name="a", url="http://a", models=["smol"], max_load=9),
        BackendConfig(name="b", url="http://b-moved", models=["smol", "big"]),
        BackendConfig(name="d", url="http://d", models=["smol"], drain=True),
    ])
    assert [x.name for x in added] == ["b", "d"] and removed == [b, c]
    assert pool.backends[0] is a and a.concurrency.limit == 4 and a.limits.max_load == 9
    # A moved URL is another server: a new backend, while the old object keeps its two requests.
    assert pool.backends[1] is not b and b.in_flight == 2
    assert [x.name for x in pool.serving("smol")] == ["a", "b", "d"]
    assert not pool.backends[2].accepting and pool.backends[2].healthy
