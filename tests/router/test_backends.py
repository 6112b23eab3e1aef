from __future__ import annotations

from router.backends import BackendPool
from router.config import BackendConfig


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


def test_pick_prefers_the_least_loaded_healthy_backend() -> None:
    pool = _pool()
    a, b, c = pool.serving("smol")
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert pool.pick([a, b, c], set()) is b
    b.healthy = False
    assert pool.pick([a, b, c], set()) is c
    assert pool.pick([a, b, c], {"c"}) is a
    assert pool.pick([a, b, c], {"a", "c"}) is None


def test_ties_rotate() -> None:
    pool = _pool()
    candidates = pool.serving("smol")
    picked = {pool.pick(candidates, set()).name for _ in range(3)}
    assert picked == {"a", "b", "c"}


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
