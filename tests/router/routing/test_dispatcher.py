"""Placement decisions and the admission queue, driven directly (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from triage_router.router.routing.admission import Job
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.config import Config
from triage_router.router.config_loader import parse_config
from triage_router.router.routing.dispatcher import Dispatcher
from triage_router.router.errors import NoHealthyBackend, QueueFull, QueueTimeout, Shed
from triage_router.router.routing.fingerprint import PrefixFingerprint
from triage_router.router.routing.load_report import LoadReport
from triage_router.router.metrics import RouterMetrics


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _setup(extra: str = "", backends: str = "") -> tuple[Dispatcher, BackendPool, Clock]:
    backends = backends or (
        '[[backends]]\nname = "a"\nurl = "http://a"\n'
        '[[backends]]\nname = "b"\nurl = "http://b"\n'
    )
    config: Config = parse_config(backends + extra)
    pool = BackendPool(config.backends, config.routing.block_chars)
    clock = Clock()
    return Dispatcher(config, pool, RouterMetrics(), clock=clock), pool, clock


_ids = iter(range(10**6))


def _job(dispatcher: Dispatcher, priority: int = 2, blocks: tuple[int, ...] = (), session: str | None = None,
         names: tuple[str, ...] = ("a", "b"), prompt: int = 100, output: int = 50) -> Job:
    fp = PrefixFingerprint(blocks, chars=prompt * 4)
    return Job(f"r{next(_ids)}", priority, dispatcher.clock(), prompt, output, fp, frozenset(names), session=session)


def _by_name(pool: BackendPool) -> dict:
    return {b.name: b for b in pool.backends}


def _show_queue(dispatcher: Dispatcher, backend: Backend, clock: Clock, running: int, waiting: int) -> None:
    """Two readings a second apart that both show a queue: enough to teach the concurrency."""
    for _ in range(2):
        clock.now += 1.0
        backend.load_report = LoadReport(running=running, waiting=waiting, read_at=clock.now)
        dispatcher.on_load_update()


@pytest.mark.anyio
async def test_the_backend_holding_the_prefix_wins() -> None:
    dispatcher, pool, _ = _setup()
    first = await dispatcher.acquire(_job(dispatcher, blocks=(1, 2, 3, 4)))
    other_name = ({"a", "b"} - {first.name}).pop()
    _by_name(pool)[first.name].in_flight_tokens = 10_000  # make it look busier by tokens
    again = await dispatcher.acquire(_job(dispatcher, blocks=(1, 2, 3, 4, 5)))
    assert again.name == first.name
    other = await dispatcher.acquire(_job(dispatcher, blocks=(7, 8, 9, 10)))
    assert other.name == other_name  # no match: the one with more free cache


@pytest.mark.anyio
async def test_ties_are_spread_by_request_id_and_agree_across_dispatchers() -> None:
    first, _, _ = _setup('[routing]\npolicy = "least-load"\n')
    second, _, _ = _setup('[routing]\npolicy = "least-load"\n')
    chosen = []
    for i in range(40):
        job_a, job_b = _job(first), _job(second)
        job_b.request_id = job_a.request_id = f"tie-{i}"
        a, b = await first.acquire(job_a), await second.acquire(job_b)
        assert a.name == b.name
        chosen.append(a.name)
        first.release(a, job_a)
        second.release(b, job_b)
    assert 10 <= chosen.count("a") <= 30  # idle backends share the ties, not name order


@pytest.mark.anyio
async def test_affinity_gives_way_when_the_match_is_overloaded() -> None:
    dispatcher, pool, _ = _setup("[routing]\nbalance_abs_threshold = 4\nbalance_rel_threshold = 1.5\n")
    a = _by_name(pool)["a"]
    a.prefix_index.insert([1, 2, 3, 4])
    a.in_flight = 4
    assert (await dispatcher.acquire(_job(dispatcher, blocks=(1, 2, 3, 4)))).name == "a"
    a.in_flight = 6  # 6 - 0 > 4 and 6 > 1.5 * 0
    job = _job(dispatcher, blocks=(1, 2, 3, 4))
    assert (await dispatcher.acquire(job)).name == "b"
    assert "imbalanced" in dispatcher.explanation(job.request_id)


@pytest.mark.anyio
async def test_a_new_prefix_goes_where_the_cache_has_room() -> None:
    backends = ('[[backends]]\nname = "a"\nurl = "http://a"\nkv_capacity_tokens = 1000\n'
                '[[backends]]\nname = "b"\nurl = "http://b"\nkv_capacity_tokens = 1000\n')
    dispatcher, pool, _ = _setup(backends=backends)
    a, b = _by_name(pool)["a"], _by_name(pool)["b"]
    a.prefix_index.insert(list(range(100, 108)))  # 2 prefixes, 16 blocks of 64 tokens: full
    a.prefix_index.insert(list(range(200, 208)))
    for root in (300, 400, 500):  # 3 prefixes, 3 blocks: room
        b.prefix_index.insert([root])
    assert (a.cached_tokens, b.cached_tokens) == (1024, 192)
    job = _job(dispatcher, blocks=(900, 901))
    assert (await dispatcher.acquire(job)).name == "b"  # though b holds more prefixes
    assert "with room" in dispatcher.explanation(job.request_id)


@pytest.mark.anyio
async def test_a_forgotten_prefix_goes_back_home_but_a_common_first_block_gets_no_home() -> None:
    dispatcher, pool, _ = _setup()
    tenant = tuple(range(100, 110))
    first = await dispatcher.acquire(_job(dispatcher, blocks=tenant))
    second = await dispatcher.acquire(_job(dispatcher, blocks=tenant + (7,)))  # a useful match: homed
    assert second.name == first.name
    other = ({"a", "b"} - {first.name}).pop()
    _by_name(pool)[first.name].prefix_index.clear()  # its index forgets the tenant...
    for root in (1, 2, 3):  # ...and holds more prefixes than the other
        _by_name(pool)[first.name].prefix_index.insert([root])
    job = _job(dispatcher, blocks=tenant + (8,))
    assert (await dispatcher.acquire(job)).name == first.name
    assert "last sent" in dispatcher.explanation(job.request_id)
    # Prompts alike only in their first block never match usefully, so they get no home and
    # keep being spread as new prefixes.
    shallow = [await dispatcher.acquire(_job(dispatcher, blocks=(500, 600 + i, 700 + i, 800 + i))) for i in range(2)]
    assert dispatcher.homes.home(500) is None
    assert {b.name for b in shallow} == {other}  # the backend with fewer prefixes, both times


@pytest.mark.anyio
async def test_scraped_load_counts_when_fresh_only() -> None:
    dispatcher, pool, clock = _setup(
        '[routing]\npolicy = "least-load"\nmetrics_interval_s = 0.5\nmetrics_stale_s = 1.0\n')
    a = _by_name(pool)["a"]
    a.load_report = LoadReport(running=5, waiting=3, read_at=clock.now)
    assert (await dispatcher.acquire(_job(dispatcher))).name == "b"
    clock.now += 2.0  # the reading is stale now: a looks idle again (b has one of ours)
    assert (await dispatcher.acquire(_job(dispatcher))).name == "a"


@pytest.mark.anyio
async def test_metrics_are_read_fast_only_where_a_reading_decides_admission() -> None:
    limited = ('[[backends]]\nname = "a"\nurl = "http://a"\nmax_waiting = 4\n'
               '[[backends]]\nname = "b"\nurl = "http://b"\n')
    dispatcher, pool, _ = _setup(backends=limited)
    a, b = _by_name(pool)["a"], _by_name(pool)["b"]
    assert dispatcher.metrics_interval(a) == dispatcher.metrics_interval(b) == 1.0  # idle
    on_a, on_b = _job(dispatcher, names=("a",)), _job(dispatcher, names=("b",))
    assert await dispatcher.acquire(on_a) is a and await dispatcher.acquire(on_b) is b
    assert dispatcher.metrics_interval(a) == 0.1
    assert dispatcher.metrics_interval(b) == 1.0  # no limit reads b's metrics, however busy
    dispatcher.release(a, on_a)
    assert dispatcher.metrics_interval(a) == 1.0
    # A request waiting in the admission queue waits for a reading: fast again.
    a.load_report = LoadReport(waiting=9, read_at=dispatcher.clock())
    waiting = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    assert len(dispatcher.queue) == 1 and dispatcher.metrics_interval(a) == 0.1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


@pytest.mark.anyio
async def test_sessions_stick_and_agree_across_dispatchers() -> None:
    first, _, _ = _setup()
    second, _, _ = _setup()
    for i in range(20):
        names = {(await d.acquire(_job(d, session=f"user-{i}"))).name for d in (first, second) for _ in range(2)}
        assert len(names) == 1, "one session, one backend, whichever router replica decides"


@pytest.mark.anyio
async def test_no_healthy_candidate_is_503_not_a_wait() -> None:
    dispatcher, pool, _ = _setup()
    for backend in pool.backends:
        backend.healthy = False
    with pytest.raises(NoHealthyBackend):
        await dispatcher.acquire(_job(dispatcher))


@pytest.mark.anyio
async def test_saturated_requests_wait_and_go_best_first() -> None:
    dispatcher, pool, _ = _setup(
        '[admission]\nordering = "pjf"\n',
        backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n',
    )
    a = _by_name(pool)["a"]
    holder = _job(dispatcher, names=("a",))
    await dispatcher.acquire(holder)
    order: list[int] = []

    async def ask(priority: int) -> None:
        job = _job(dispatcher, priority=priority, names=("a",))
        backend = await dispatcher.acquire(job)
        order.append(priority)
        dispatcher.release(backend, job)

    tasks = [asyncio.ensure_future(ask(p)) for p in (4, 0, 2, 0)]
    await asyncio.sleep(0)  # every task reaches the queue
    assert len(dispatcher.queue) == 4 and a.in_flight == 1
    dispatcher.release(a, holder)
    await asyncio.gather(*tasks)
    assert order == [0, 0, 2, 4]
    assert a.in_flight == 0 and len(dispatcher.queue) == 0


@pytest.mark.anyio
async def test_headroom_keeps_slots_for_urgent_work() -> None:
    dispatcher, pool, _ = _setup(
        "[admission]\nheadroom = [0.0, 0.0, 0.5, 0.5, 0.75]\n",
        backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 4\n',
    )
    await dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))  # 1 < 4 * 0.25
    waiting = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",))))
    await asyncio.sleep(0)
    assert len(dispatcher.queue) == 1
    await dispatcher.acquire(_job(dispatcher, priority=2, names=("a",)))  # 1 < 2
    await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))  # 2 < 4
    await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))  # 3 < 4
    assert _by_name(pool)["a"].in_flight == 4 and not waiting.done()
    waiting.cancel()


@pytest.mark.anyio
async def test_queue_limits_shed_the_least_urgent_first() -> None:
    dispatcher, _, _ = _setup(
        "[admission]\nmax_queued = 2\nmax_queued_per_priority = [5, 5, 5, 5, 1]\nretry_after_s = 3\n",
        backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n',
    )
    await dispatcher.acquire(_job(dispatcher, names=("a",)))
    low = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",))))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as per_priority:
        await dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))
    assert per_priority.value.status == 429 and (b"retry-after", b"3") in per_priority.value.headers()
    mid = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=2, names=("a",))))
    await asyncio.sleep(0)
    urgent = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=0, names=("a",))))
    await asyncio.sleep(0)
    with pytest.raises(Shed) as shed:
        await low  # the priority-4 request made room for the priority-0 one
    # Displaced: 503 (overloaded), not 429 (too fast), and when to come back.
    assert shed.value.status == 503 and (b"retry-after", b"3") in shed.value.headers()
    assert not mid.done() and not urgent.done() and len(dispatcher.queue) == 2
    with pytest.raises(QueueFull, match="full") as refused:
        await dispatcher.acquire(_job(dispatcher, priority=3, names=("a",)))  # nothing less urgent to shed
    assert refused.value.status == 429
    mid.cancel()
    urgent.cancel()


@pytest.mark.anyio
async def test_priority_0_is_never_refused_while_less_urgent_work_waits() -> None:
    # P0's own limit is 1 and one P0 already waits: the next P0 displaces the waiting P3 instead
    # of being refused. With nothing less urgent left, it is refused like any other.
    dispatcher, _, _ = _setup(
        "[admission]\nmax_queued = 10\nmax_queued_per_priority = [1, 5, 5, 5, 5]\n",
        backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n',
    )
    await dispatcher.acquire(_job(dispatcher, names=("a",)))
    first = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=0, names=("a",))))
    bulk = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=3, names=("a",))))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=0, names=("a",))))
    await asyncio.sleep(0)
    with pytest.raises(Shed):
        await bulk
    assert not first.done() and not second.done()
    with pytest.raises(QueueFull):
        await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))
    first.cancel()
    second.cancel()


@pytest.mark.anyio
async def test_queue_timeout_is_408_and_leaves_no_trace() -> None:
    dispatcher, _, _ = _setup(
        "[admission]\ntimeout_s = [0.01, 0.01, 0.01, 0.01, 0.01]\n",
        backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n',
    )
    await dispatcher.acquire(_job(dispatcher, names=("a",)))
    with pytest.raises(QueueTimeout) as caught:
        await dispatcher.acquire(_job(dispatcher, names=("a",)))
    assert caught.value.status == 408 and len(dispatcher.queue) == 0


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_at_once_and_a_placed_one_gives_its_slot_back() -> None:
    dispatcher, pool, _ = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n')
    a = _by_name(pool)["a"]
    holder = _job(dispatcher, names=("a",))
    await dispatcher.acquire(holder)
    gone = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert len(dispatcher.queue) == 0
    # Placed by release(), then cancelled before it could run: the slot must come back.
    late = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    dispatcher.release(a, holder)
    assert a.in_flight == 1
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert a.in_flight == 0 and a.in_flight_tokens == 0


@pytest.mark.anyio
async def test_with_no_limits_a_backend_seen_queueing_holds_background_work_in_the_router() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    # Nothing known: everything goes through, as vLLM would take it.
    jobs = [_job(dispatcher, priority=4, names=("a",)) for _ in range(6)]
    for job in jobs:
        assert (await dispatcher.acquire(job)).name == "a"
    # vLLM's /metrics: 4 running, 2 waiting. It runs 4 at once.
    _show_queue(dispatcher, backend, clock, running=4, waiting=2)
    assert backend.concurrency.limit == 4
    for job in jobs[:3]:
        dispatcher.release(backend, job)
    backend.load_report = LoadReport(running=3, waiting=0, read_at=clock.now)
    # Priority 4 may use 3 of the 4: the next one waits in the router...
    waiting = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",))))
    await asyncio.sleep(0)
    assert not waiting.done() and len(dispatcher.queue) == 1
    # ...while an urgent request takes the slot kept free for it at once.
    assert (await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))).name == "a"
    waiting.cancel()


@pytest.mark.anyio
async def test_a_429_teaches_the_concurrency_of_a_backend_without_metrics() -> None:
    dispatcher, pool, _ = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    held = [_job(dispatcher, names=("a",)) for _ in range(3)]
    for job in held:
        await dispatcher.acquire(job)
    dispatcher.on_refusal(backend)  # the third one was refused: two fit
    assert backend.concurrency.limit == 2
    dispatcher.release(backend, held[2])
    waiting = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    assert not waiting.done()
    dispatcher.release(backend, held[0])
    assert (await waiting).name == "a"


@pytest.mark.anyio
async def test_vtc_serves_a_light_tenant_before_the_rest_of_a_heavy_tenants_burst_because_it_charges() -> None:
    dispatcher, pool, _ = _setup('[admission]\nordering = "vtc"\n',
                                 backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n')
    backend = _by_name(pool)["a"]
    running = _job(dispatcher, names=("a",))
    running.tenant = "alpha"
    await dispatcher.acquire(running)
    jobs = [_job(dispatcher, names=("a",)) for _ in range(4)]
    for job in jobs[:3]:
        job.tenant = "alpha"
    jobs[3].tenant = "beta"
    waiters = [asyncio.ensure_future(dispatcher.acquire(job)) for job in jobs]
    await asyncio.sleep(0)
    assert len(dispatcher.queue) == 4
    # Beta was lifted to alpha's counter when it queued (VTC's lift), so alpha, first by name,
    # goes next; but alpha is charged for it, so beta comes before the rest of alpha's burst.
    # Uncharged, every counter stays 0 and alpha's whole burst would go first.
    dispatcher.release(backend, running)
    assert [job.placed is not None and job.placed.done() for job in jobs] == [True, False, False, False]
    dispatcher.release(backend, jobs[0])
    assert [job.placed is not None and job.placed.done() for job in jobs] == [True, False, False, True]
    for waiter in waiters:
        waiter.cancel()


@pytest.mark.anyio
async def test_on_a_priority_backend_bulk_work_already_there_does_not_hold_an_urgent_request() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\nscheduling = "priority"\n')
    backend = _by_name(pool)["a"]
    for _ in range(6):
        await dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))
    _show_queue(dispatcher, backend, clock, running=4, waiting=2)
    assert backend.concurrency.limit == 4
    # More bulk waits in the router...
    bulk = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",))))
    await asyncio.sleep(0)
    assert not bulk.done()
    # ...but an urgent request goes straight on: vLLM's queue puts it before the six.
    assert (await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))).name == "a"
    bulk.cancel()


@pytest.mark.anyio
async def test_a_request_that_ended_after_the_reading_frees_its_slot_at_once() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    first, second = _job(dispatcher, names=("a",)), _job(dispatcher, names=("a",))
    await dispatcher.acquire(first)
    await dispatcher.acquire(second)
    # The backend runs one at a time: ours, with our other one waiting.
    _show_queue(dispatcher, backend, clock, running=1, waiting=1)
    assert backend.concurrency.limit == 1
    third = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    dispatcher.release(backend, first)
    await asyncio.sleep(0)
    assert not third.done()  # the second now runs
    # No new reading yet, and it still says two there: both ours, both ended.
    dispatcher.release(backend, second)
    assert (await third).name == "a"


@pytest.mark.anyio
async def test_a_slow_start_holds_bulk_work_at_the_probe_and_grows_as_requests_end() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    backend.load_report = LoadReport(running=0, waiting=0, read_at=clock.now)
    dispatcher.on_load_update()
    assert backend.concurrency.probe == 8
    # Priority 4 leaves a quarter of the probe to urgent work: 6 go, the 7th and 8th wait here.
    jobs = [_job(dispatcher, priority=4, names=("a",)) for _ in range(6)]
    for job in jobs:
        await dispatcher.acquire(job)
    held = [asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(h.done() for h in held)
    # ...while an urgent one goes at once.
    await dispatcher.acquire(_job(dispatcher, priority=0, names=("a",)))
    # One ends: its slot and one more (the probe grew to 9, of which priority 4 may use 6.75).
    dispatcher.release(backend, jobs[0])
    assert backend.concurrency.probe == 9
    assert len(dispatcher.queue) == 1 and backend.in_flight == 7
    for h in held:
        h.cancel()


@pytest.mark.anyio
async def test_a_slow_start_holds_while_readings_fail_and_learns_from_each_reading_once() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    backend.load_report = LoadReport(running=0, waiting=0, read_at=clock.now)
    dispatcher.on_load_update()
    jobs = [_job(dispatcher, priority=4, names=("a",)) for _ in range(6)]
    for job in jobs:
        await dispatcher.acquire(job)
    clock.now += 1.0
    backend.load_report = LoadReport(running=4, waiting=2, read_at=clock.now)
    for _ in range(3):  # another backend's reading calls this too: the same reading counts once
        dispatcher.on_load_update()
    assert backend.concurrency.limit is None
    # A fresh queue: a request that ends makes room for the next one only.
    dispatcher.release(backend, jobs[0])
    assert backend.concurrency.probe == 8
    # Readings stopped (a flood can make them time out): the probe still holds bulk work back...
    clock.now += dispatcher.routing.metrics_stale_s + 1
    held = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, priority=4, names=("a",))))
    await dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))
    await asyncio.sleep(0)
    assert not held.done() and backend.in_flight == 6
    # ...and grows with what the backend finishes.
    dispatcher.release(backend, jobs[1])
    assert backend.concurrency.probe == 9
    held.cancel()


@pytest.mark.anyio
async def test_a_metrics_page_without_vllm_gauges_starts_no_slow_start() -> None:
    dispatcher, pool, clock = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\n')
    backend = _by_name(pool)["a"]
    backend.load_report = LoadReport(read_at=clock.now, reports_load=False)
    dispatcher.on_load_update()
    assert backend.concurrency.cap is None
    for _ in range(40):
        await dispatcher.acquire(_job(dispatcher, priority=4, names=("a",)))


@pytest.mark.anyio
async def test_a_reload_that_removes_a_backend_leaves_its_requests_to_finish_and_its_waiters_waiting() -> None:
    dispatcher, pool, _ = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n')
    a = _by_name(pool)["a"]
    holder = _job(dispatcher, names=("a",))
    assert await dispatcher.acquire(holder) is a
    waiter = asyncio.ensure_future(dispatcher.acquire(_job(dispatcher, names=("a",))))
    await asyncio.sleep(0)
    pool.reconfigure(parse_config('[[backends]]\nname = "b"\nurl = "http://b"\n').backends)
    dispatcher.reconfigure(pool)
    dispatcher.release(a, holder)  # the request on the removed backend ends there
    await asyncio.sleep(0)
    assert a.in_flight == 0 and not waiter.done()  # its candidate is gone: nothing to place it on
    with pytest.raises(NoHealthyBackend):
        await dispatcher.acquire(_job(dispatcher, names=("a",)))
    waiter.cancel()


@pytest.mark.anyio
async def test_a_preview_says_where_a_request_would_go_and_takes_nothing() -> None:
    dispatcher, pool, _ = _setup(backends='[[backends]]\nname = "a"\nurl = "http://a"\nmax_load = 1\n'
                                          '[[backends]]\nname = "b"\nurl = "http://b"\n')
    a, b = _by_name(pool)["a"], _by_name(pool)["b"]
    await dispatcher.acquire(_job(dispatcher, names=("a",)))
    b.prefix_index.insert((1,))
    placement, saturated, caches = dispatcher.preview(_job(dispatcher, blocks=(1, 2)))
    assert placement.backend == "b" and saturated == {"a": "load 1 of 1 for priority 2"}
    assert caches["b"].share == 0.5 and caches["b"].source == "approximate" and "a" not in caches
    assert (a.in_flight, b.in_flight, len(b.prefix_index)) == (1, 0, 1)


class _TrustedFeed:
    """A backend's KV-event feed, reduced to what the dispatcher reads."""

    def __init__(self) -> None:
        from triage_router.router.routing.kv_events.block_index import KVBlockIndex

        self.index = KVBlockIndex()
        self.trusted = True


def test_with_events_an_evicted_tenant_goes_back_where_this_router_sent_it() -> None:
    """Exact state says neither backend holds the prompt (evicted under pressure); this router
    sent it to b lately, so b is its home rather than a placement as a new prefix (which,
    with fewer prefixes cached on a, would move the tenant to a)."""
    from triage_router.router.routing.kv_events.block_hashes import pack_tokens
    from triage_router.router.routing.kv_events.prompt_tokens import PromptTokens

    dispatcher, pool, _ = _setup()
    a, b = _by_name(pool)["a"], _by_name(pool)["b"]
    a.kv_feed, b.kv_feed = _TrustedFeed(), _TrustedFeed()
    b.kv_feed.index.roots = 5  # b's cache holds more prefixes: a new prefix would go to a
    b.prefix_index.insert((1, 2, 3))
    job = _job(dispatcher, blocks=(1, 2, 3))
    job.tokenized = {"": PromptTokens(pack_tokens(range(64)))}
    placement, _, caches = dispatcher.preview(job)
    assert caches["b"].source == "kv_events" and caches["b"].matched_tokens == 0 and caches["b"].sent_here
    assert placement.backend == "b" and "back where its prompt root was last sent" in placement.reason
    b.prefix_index.clear()
    assert dispatcher.preview(job)[0].backend == "a"
