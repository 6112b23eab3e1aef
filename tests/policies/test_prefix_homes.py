from __future__ import annotations

from triage_router.policies.prefix_homes import PrefixHomes


def test_a_root_is_homed_where_it_was_last_sent() -> None:
    homes = PrefixHomes()
    assert homes.home(7) is None
    homes.record(7, "a")
    homes.record(7, "b")
    assert homes.home(7) == "b" and len(homes) == 1


def test_the_least_recently_sent_root_is_forgotten_first() -> None:
    homes = PrefixHomes(capacity=2)
    homes.record(1, "a")
    homes.record(2, "a")
    homes.home(1)  # looking is not use
    homes.record(2, "b")  # sending again is
    homes.record(3, "a")
    assert (homes.home(1), homes.home(2), homes.home(3)) == (None, "b", "a")
    assert len(homes) == 2


def test_a_root_earns_a_home_only_with_a_useful_match_then_follows_its_requests() -> None:
    homes = PrefixHomes()
    homes.placed(5, "a", matched_share=0.1, cache_threshold=0.3)  # a shared preamble only
    assert homes.home(5) is None
    homes.placed(5, "b", matched_share=0.4, cache_threshold=0.3)
    assert homes.home(5) == "b"
    homes.placed(5, "a", matched_share=0.0, cache_threshold=0.3)
    assert homes.home(5) == "a"
