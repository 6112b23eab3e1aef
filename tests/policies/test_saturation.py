from __future__ import annotations

from triage_router.policies.saturation import BackendLoad, ConcurrencyEstimate, SaturationLimits, saturation

NO_LIMITS = SaturationLimits()


def test_nothing_is_held_back_until_a_concurrency_is_known() -> None:
    assert saturation(NO_LIMITS, BackendLoad(500, 10**6), None, 0.25, 100) is None


def _readings(estimate: ConcurrencyEstimate, *readings: tuple[float, float, float]) -> None:
    for running, waiting, at in readings:
        estimate.observe_reading(running, waiting, at)


def test_a_queue_that_lasts_shows_the_concurrency() -> None:
    estimate = ConcurrencyEstimate(initial_probe=64)
    _readings(estimate, (10, 0, 0.0))
    assert estimate.limit is None  # running without queueing says nothing about the limit
    _readings(estimate, (16, 8, 1.0))
    assert estimate.limit is None  # one queueing reading may be a request that just arrived
    _readings(estimate, (16, 8, 2.0))
    assert estimate.limit == 16
    # Starting up (nothing running yet while requests wait) teaches nothing.
    _readings(estimate, (0, 3, 3.0))
    assert estimate.limit == 16
    # Running more than thought, with nothing waiting: it has more room.
    _readings(estimate, (20, 0, 4.0))
    assert estimate.limit == 20


def test_a_queue_seen_only_briefly_or_once_teaches_nothing() -> None:
    estimate = ConcurrencyEstimate(confirm_s=1.0)
    # Two readings a tenth of a second apart: a backend between two steps looks like this.
    _readings(estimate, (3, 2, 0.0), (3, 2, 0.1), (5, 0, 0.2), (1, 1, 1.5), (6, 0, 2.5))
    assert estimate.limit is None
    _readings(estimate, (6, 2, 3.0), (6, 2, 3.5), (6, 2, 4.0))
    assert estimate.limit == 6


def test_one_reading_taken_as_a_request_arrives_does_not_lower_the_concurrency() -> None:
    estimate = ConcurrencyEstimate(window=8)
    _readings(estimate, (4, 8, 0.0), (4, 8, 1.0))
    # A request that just arrived shows as waiting until the next step, while slots are free.
    _readings(estimate, (1, 1, 2.0))
    assert estimate.limit == 4
    # A backend that really runs fewer now shows it reading after reading.
    _readings(estimate, *((2, 3, 3.0 + i) for i in range(8)))
    assert estimate.limit == 2


def test_slow_start_grows_with_each_request_that_ends_and_stops_at_a_queue() -> None:
    estimate = ConcurrencyEstimate(initial_probe=8, confirm_s=1.0)
    assert estimate.cap is None  # no reading yet: maybe no /metrics at all, so no probe
    _readings(estimate, (0, 0, 0.0))
    assert estimate.slow_starting and estimate.cap == 8
    estimate.observe_completion(ours=3)
    assert estimate.cap == 8  # using less than half the probe: no sign it needs more
    for ours in range(6, 12):  # each that ends makes room for two: its own slot and one more
        estimate.observe_completion(ours)
    assert estimate.cap == 14  # a round of six added six
    # Readings without a queue teach nothing and grow nothing.
    _readings(estimate, (10, 0, 0.5))
    assert estimate.cap == 14
    # A queue holds the probe where it is until it has lasted, then the limit replaces it.
    _readings(estimate, (12, 2, 1.0))
    estimate.observe_completion(ours=14)
    _readings(estimate, (12, 2, 1.5))
    assert estimate.cap == 14 and estimate.limit is None
    _readings(estimate, (12, 2, 2.1))
    assert estimate.limit == 12 and estimate.cap == 12 and not estimate.slow_starting
    estimate.observe_completion(ours=12)
    assert estimate.cap == 12


def test_a_refusal_caps_the_concurrency_at_what_it_already_had() -> None:
    estimate = ConcurrencyEstimate()
    _readings(estimate, (0, 0, 0.0))
    estimate.observe_refusal(in_flight=6)
    assert estimate.limit == 6 and not estimate.slow_starting
    estimate.observe_refusal(in_flight=9)  # a later refusal never raises it
    assert estimate.limit == 6
    estimate.observe_refusal(in_flight=0)
    assert estimate.limit == 1


def test_a_slow_start_probe_holds_bulk_work_back_and_says_so() -> None:
    busy = BackendLoad(in_flight=6, in_flight_tokens=0, running=6, waiting=0)
    assert saturation(NO_LIMITS, busy, 8, 0.25, 10, slow_start=True) == "load 6 of 6 (slow start at 8)"
    assert saturation(NO_LIMITS, busy, 8, 0.0, 10, slow_start=True) is None


def test_background_levels_leave_headroom_for_urgent_work_under_a_learned_limit() -> None:
    busy = BackendLoad(in_flight=12, in_flight_tokens=0)
    assert saturation(NO_LIMITS, busy, 16, 0.25, 10) == "load 12 of 12 (learned concurrency 16)"
    assert saturation(NO_LIMITS, busy, 16, 0.0, 10) is None
    assert saturation(NO_LIMITS, BackendLoad(16, 0), 16, 0.0, 10) is not None


def test_a_fresh_reading_counts_other_clients_load() -> None:
    shared = BackendLoad(in_flight=2, in_flight_tokens=0, running=16, waiting=3)
    assert shared.load == 19
    assert saturation(NO_LIMITS, shared, 16, 0.0, 10) is not None
    # Never less than what this router alone sent since the reading.
    assert BackendLoad(in_flight=5, in_flight_tokens=0, running=1, waiting=0).load == 5


def test_explicit_limits_override_the_learned_concurrency() -> None:
    limits = SaturationLimits(max_load=100)
    assert saturation(limits, BackendLoad(20, 0), 16, 0.0, 10) is None
    assert saturation(limits, BackendLoad(75, 0), 16, 0.25, 10) == "load 75 of 75"
    waiting = SaturationLimits(max_waiting=2)
    assert saturation(waiting, BackendLoad(1, 0, running=4, waiting=2), None, 0.0, 10) == "2 waiting"
    kv = SaturationLimits(max_kv_usage=0.9)
    assert saturation(kv, BackendLoad(1, 0, running=4, waiting=0, kv_usage=0.95), None, 0.0, 10) == "KV cache 95% used"


def test_an_idle_backend_takes_one_request_however_many_tokens() -> None:
    limits = SaturationLimits(max_in_flight_tokens=1000)
    assert saturation(limits, BackendLoad(0, 0), None, 0.0, 5000) is None
    assert saturation(limits, BackendLoad(1, 800), None, 0.0, 300) == "800 tokens in flight"


def test_requests_of_ours_that_ended_since_the_reading_no_longer_count() -> None:
    # The reading saw our one request running; it has ended since.
    stale = BackendLoad(in_flight=0, in_flight_tokens=0, running=1, waiting=0, released_since_reading=1)
    assert stale.load == 0
    assert saturation(NO_LIMITS, stale, 1, 0.0, 10) is None


def test_on_a_priority_backend_an_urgent_request_counts_only_the_load_ahead_of_it() -> None:
    # 24 bulk requests of ours there (sent before the limit was learned), none as urgent as this.
    bulk = BackendLoad(in_flight=24, in_flight_tokens=0, running=16, waiting=8, in_flight_ahead=0)
    assert bulk.load == 24 and bulk.load_ahead == 0
    assert saturation(NO_LIMITS, bulk, 16, 0.0, 10) is None
    # Other clients' load has unknown priorities: it counts as ahead.
    shared = BackendLoad(in_flight=4, in_flight_tokens=0, running=16, waiting=4, in_flight_ahead=0)
    assert shared.load_ahead == 16
    assert saturation(NO_LIMITS, shared, 16, 0.0, 10) is not None
