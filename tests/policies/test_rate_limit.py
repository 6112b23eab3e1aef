from __future__ import annotations

from triage_router.policies.rate_limit import KeyRateLimit, TokenBucket


def test_a_quick_burst_gets_exactly_the_limit_then_the_rate() -> None:
    limit = KeyRateLimit(requests_per_minute=20, tokens_per_minute=0, now=0.0)
    decisions = [limit.admit(0.01 * i) for i in range(40)]
    assert sum(d.allowed for d in decisions) == 20
    refused = decisions[-1]
    assert refused.limited_by == "requests" and refused.retry_after_s == 3  # one request every 3 s
    assert limit.admit(3.5).allowed and not limit.admit(3.6).allowed


def test_tokens_are_charged_after_the_answer_and_refuse_until_refilled() -> None:
    limit = KeyRateLimit(requests_per_minute=0, tokens_per_minute=600, now=0.0)
    assert limit.admit(0.0).allowed
    limit.charge_tokens(900, 0.0)  # the answer was bigger than the whole minute's budget
    refused = limit.admit(1.0)
    assert not refused.allowed and refused.limited_by == "tokens"
    assert refused.retry_after_s == 29  # 300 tokens owed at 10 a second, 1 s already passed
    assert limit.admit(30.5).allowed
    assert refused.tokens is not None and refused.tokens[0] == 600 and refused.tokens[1] == 0


def test_a_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(60, now=0.0)
    assert bucket.available(1000.0) == 60
    bucket.take(60, 1000.0)
    assert bucket.seconds_until(1, 1000.0) == 1.0
