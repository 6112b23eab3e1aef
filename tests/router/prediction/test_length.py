from __future__ import annotations

from pathlib import Path

import pytest

from triage_router.router.config import LengthConfig
from triage_router.router.prediction.length import (REFRESH_OBSERVATIONS, LengthFeatures, LengthPredictor, prompt_bin,
                                                   verbosity_cue)


def _features(**changes: object) -> LengthFeatures:
    base = LengthFeatures("smol", "chat", 2, "embedding", "", 40, None, "")
    return base._replace(**changes)  # type: ignore[arg-type]


def test_before_any_data_the_prior_decides() -> None:
    predicted = LengthPredictor(LengthConfig(prior_tokens=256)).predict(_features())
    assert 230 <= predicted.median <= 285
    assert predicted.high >= predicted.median


def test_a_length_asked_in_words_is_the_prior_for_its_group() -> None:
    predicted = LengthPredictor().predict(_features(cue="words:11"))
    assert 1800 <= predicted.median <= 2300


def test_max_tokens_caps_both_figures() -> None:
    predicted = LengthPredictor().predict(_features(max_tokens=32))
    assert predicted.median == predicted.high == 32


def test_answers_that_run_to_the_cap_predict_the_cap() -> None:
    predictor = LengthPredictor()
    features = _features(max_tokens=256)
    for tokens in [256] * 20 + [200] * 5:
        predictor.observe(features, tokens)
    assert predictor.predict(features).median == 256


def test_it_learns_online_and_the_median_follows_what_it_sees() -> None:
    predictor = LengthPredictor()
    features = _features(cue="short")
    for tokens in [30, 40, 50] * 10:
        predictor.observe(features, tokens)
    predicted = predictor.predict(features)
    assert 36 <= predicted.median <= 44
    assert 45 <= predicted.high <= 60


def test_specific_groups_separate_and_unseen_ones_borrow_from_coarser_groups() -> None:
    predictor = LengthPredictor()
    short, long = _features(cue="short"), _features(cue="long", priority=3)
    for _ in range(30):
        predictor.observe(short, 20)
        predictor.observe(long, 900)
    assert predictor.predict(short).median < 30
    assert predictor.predict(long).median > 600
    # A new tenant with the short cue: its own group is empty, the cue's group speaks.
    assert predictor.predict(_features(cue="short", tenant="new")).median < 60
    # Another model has seen nothing: the prior.
    assert 230 <= predictor.predict(_features(model="other")).median <= 285


def test_decay_lets_the_estimate_follow_a_change() -> None:
    predictor = LengthPredictor(LengthConfig(decay=0.9))
    features = _features()
    for _ in range(50):
        predictor.observe(features, 100)
    for _ in range(50):
        predictor.observe(features, 1000)
    assert predictor.predict(features).median > 800


def test_memory_is_bounded() -> None:
    predictor = LengthPredictor(LengthConfig(max_groups=20))
    for i in range(200):
        predictor.observe(_features(tenant=f"t{i}", model=f"m{i}"), 10)
    assert len(predictor) == 20


def test_state_survives_a_restart_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "length.json"
    config = LengthConfig(state_file=str(path))
    first = LengthPredictor(config)
    for _ in range(20):
        first.observe(_features(), 33)
    first.save(path)
    second = LengthPredictor(config)
    before, after = first.predict(_features()), second.predict(_features())
    # Counts are saved to 4 decimals: the mean may move in its last digits.
    assert (after.median, after.high) == (before.median, before.high)
    assert after.mean == pytest.approx(before.mean, rel=1e-6)
    path.write_text("{not json")
    assert 230 <= LengthPredictor(config).predict(_features()).median <= 285


def test_learning_from_a_prediction_teaches_its_feature_groups() -> None:
    by_prediction, by_features = LengthPredictor(), LengthPredictor()
    features = _features()
    prediction = by_prediction.predict(features)
    for _ in range(REFRESH_OBSERVATIONS + 1):
        by_prediction.learn(prediction, 17)
        by_features.observe(features, 17)
    assert by_prediction.snapshot() == by_features.snapshot()
    assert len(by_prediction) == len(features.groups())


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Explain recursion in one sentence", "short"),
        ("Write a detailed report on solar power", "long"),
        ("Write a 1500-word essay on the Renaissance", "words:11"),
        ("What is 2+2?", ""),
        ("BRIEFLY: Explain Recursion In One Sentence", "short"),
        ("A short story, please", ""),  # both kinds of cue: neither wins
        ("A detailed plan in 300 words", "words:9"),  # a length in words beats any cue before it
    ],
)
def test_verbosity_cue(text: str, cue: str) -> None:
    assert verbosity_cue(text) == cue


def test_prompt_bins_grow_by_powers_of_four() -> None:
    assert [prompt_bin(n) for n in (1, 16, 17, 64, 65, 1024, 5000)] == ["p0", "p0", "p1", "p1", "p2", "p3", "p4"]


def test_a_cached_prediction_is_refreshed_after_a_bounded_number_of_answers_and_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from triage_router.router.prediction import length
    from triage_router.router.prediction.length import REFRESH_OBSERVATIONS, LengthFeatures, LengthPredictor

    now = [1000.0]
    monkeypatch.setattr(length.time, "monotonic", lambda: now[0])
    predictor = LengthPredictor()
    features = LengthFeatures("m", "chat", 2, "default", "", 20, None, "")
    before = predictor.predict(features)
    for _ in range(REFRESH_OBSERVATIONS):
        predictor.observe(features, 3)
    # Enough answers, but within REFRESH_AFTER_S: the cached prediction stands (a high rate).
    assert predictor.predict(features) == before
    now[0] += length.REFRESH_AFTER_S
    after = predictor.predict(features)
    assert after.median < before.median and after.median <= 8
    # Time alone, with no new answers, recomputes nothing new.
    now[0] += 10
    assert predictor.predict(features) == after
