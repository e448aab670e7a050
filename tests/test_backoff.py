"""BackoffPolicy: the exponential curve, every jitter mode's bounds, the cap after jitter, overflow."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.backoff import JITTER_MODES, BackoffPolicy

# ---------------------------------------------------------------------------- the curve


def test_unjittered_sequence_doubles_from_base_and_stops_at_the_cap():
    b = BackoffPolicy(jitter="none")
    assert [b.delay(a) for a in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert [b.exponential(a) for a in range(4)] == [1, 2, 4, 8]


def test_custom_base_and_multiplier():
    b = BackoffPolicy(base_delay=0.5, multiplier=3, max_delay=10, jitter="none")
    assert [b.delay(a) for a in range(5)] == [0.5, 1.5, 4.5, 10, 10]


def test_multiplier_one_is_constant_and_base_equal_to_cap_is_constant():
    assert [BackoffPolicy(2.0, 1.0, 60.0, "none").delay(a) for a in (0, 1, 50, 10**9)] == [2.0] * 4
    assert [BackoffPolicy(3.0, 2.0, 3.0, "none").delay(a) for a in (0, 1, 10**9)] == [3.0] * 3


@pytest.mark.parametrize("mode", JITTER_MODES)
@pytest.mark.parametrize("attempt", [1023, 1024, 5000, 10**9, 10**100])
def test_huge_attempts_do_not_overflow(mode, attempt):
    b = BackoffPolicy(jitter=mode)
    assert b.exponential(attempt) == 60.0
    value = b.delay(attempt, random.Random(attempt % 97), previous=59.0)
    assert math.isfinite(value) and 0.0 <= value <= 60.0


def test_huge_attempts_with_a_tiny_multiplier_and_a_huge_cap_stay_finite():
    b = BackoffPolicy(base_delay=1e-9, multiplier=1.0000001, max_delay=1e300, jitter="none")
    for attempt in (5000, 10**9, 10**12):
        value = b.delay(attempt)
        assert math.isfinite(value) and value <= 1e300
    assert b.delay(10**12) == 1e300


# ---------------------------------------------------------------------------- jitter bounds

policies = st.builds(
    BackoffPolicy,
    base_delay=st.floats(min_value=0.001, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    max_delay=st.floats(min_value=100.0, max_value=10_000.0),
    jitter=st.sampled_from(JITTER_MODES),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    policy=policies,
    attempt=st.one_of(
        st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=10**12)
    ),
    seed=st.integers(min_value=0, max_value=2**32),
    previous=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6)),
)
def test_every_mode_stays_within_its_bounds(policy, attempt, seed, previous):
    # the un-jittered value, computed independently in log space
    log_d = math.log(policy.base_delay) + attempt * math.log(policy.multiplier)
    expected = policy.max_delay if log_d >= math.log(policy.max_delay) else math.exp(log_d)
    d = policy.exponential(attempt)
    assert d == pytest.approx(expected, rel=1e-6)
    rng = random.Random(seed)
    for _ in range(5):
        value = policy.delay(attempt, rng, previous)
        assert value <= policy.max_delay  # the cap holds after jitter, always
        if policy.jitter == "none":
            assert value == d
        elif policy.jitter == "full":
            assert 0.0 <= value <= d
        elif policy.jitter == "equal":
            assert d / 2 <= value <= d
        else:
            prev = policy.base_delay if previous is None else previous
            hi = min(policy.max_delay, max(policy.base_delay, 3 * prev))
            assert policy.base_delay <= value <= hi * (1 + 1e-12)


@pytest.mark.parametrize("mode", ["full", "equal", "decorrelated"])
def test_cap_holds_after_jitter_at_the_cap(mode):
    b = BackoffPolicy(base_delay=1, max_delay=10, jitter=mode)
    rng = random.Random(7)
    values = [b.delay(a, rng, previous=1000.0) for a in range(3, 40) for _ in range(50)]
    assert max(values) <= 10.0
    assert max(values) > 9.0  # and the cap is actually reached, not clamped far below it


def test_full_jitter_spreads_over_the_whole_interval():
    b = BackoffPolicy(jitter="full")
    rng = random.Random(3)
    values = [b.delay(3, rng) for _ in range(4000)]  # d = 8
    assert min(values) < 0.1 and max(values) > 7.9
    assert statistics.mean(values) == pytest.approx(4.0, rel=0.05)


def test_equal_jitter_keeps_half_the_delay_as_a_floor():
    b = BackoffPolicy(jitter="equal")
    rng = random.Random(3)
    values = [b.delay(3, rng) for _ in range(4000)]
    assert 4.0 <= min(values) < 4.1 and 7.9 < max(values) <= 8.0


def test_decorrelated_uses_previous():
    b = BackoffPolicy(jitter="decorrelated")
    rng = random.Random(11)
    first = [b.delay(0, rng) for _ in range(2000)]  # previous defaults to base_delay: U(1, 3)
    assert min(first) >= 1.0 and max(first) <= 3.0 and max(first) > 2.9
    after_ten = [b.delay(0, rng, previous=10.0) for _ in range(2000)]  # U(1, 30)
    assert min(after_ten) >= 1.0 and max(after_ten) <= 30.0 and max(after_ten) > 29.0
    # the attempt number does not matter to decorrelated jitter, `previous` does
    a = BackoffPolicy(jitter="decorrelated")
    assert a.delay(0, random.Random(5), 4.0) == a.delay(9, random.Random(5), 4.0)


def test_decorrelated_with_a_tiny_previous_keeps_the_base_floor():
    b = BackoffPolicy(jitter="decorrelated")
    rng = random.Random(1)
    assert all(b.delay(0, rng, previous=0.0) == 1.0 for _ in range(100))


def test_delays_feeds_previous_into_decorrelated():
    b = BackoffPolicy(jitter="decorrelated", max_delay=1e6)
    values = list(b.delays(30, random.Random(2)))
    assert len(values) == 30
    prev = 1.0
    for v in values:
        assert 1.0 <= v <= 3 * prev
        prev = v
    assert max(values) > 100  # it grows when fed back


def test_delays_is_the_sequence_of_delay_calls():
    b = BackoffPolicy(jitter="full")
    rng = random.Random(9)
    expected = [b.delay(a, rng) for a in range(6)]
    assert list(b.delays(6, random.Random(9))) == expected
    assert list(BackoffPolicy(jitter="none").delays(4)) == [1, 2, 4, 8]
    assert list(b.delays(0)) == []


def test_same_seed_same_delays_and_rng_none_works():
    b = BackoffPolicy()
    assert list(b.delays(10, random.Random(42))) == list(b.delays(10, random.Random(42)))
    assert list(b.delays(10, random.Random(42))) != list(b.delays(10, random.Random(43)))
    assert 0.0 <= b.delay(2) <= 4.0  # module-level rng


# ---------------------------------------------------------------------------- a value object


def test_frozen_hashable_and_readable():
    a, b = BackoffPolicy(), BackoffPolicy(1, 2, 60, "full")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != BackoffPolicy(jitter="none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.base_delay = 5  # type: ignore[misc]
    assert repr(a) == "BackoffPolicy(base_delay=1.0, multiplier=2.0, max_delay=60.0, jitter='full')"


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"base_delay": 0}, ["base_delay", "0"]),
        ({"base_delay": -1}, ["base_delay", "-1"]),
        ({"base_delay": float("nan")}, ["base_delay", "nan"]),
        ({"base_delay": float("inf")}, ["base_delay", "inf"]),
        ({"multiplier": 0.5}, ["multiplier", "0.5", ">= 1"]),
        ({"max_delay": 0.5}, ["max_delay", "0.5", "base_delay"]),
        ({"max_delay": float("inf")}, ["max_delay", "inf"]),
        ({"jitter": "fulll"}, ["jitter", "fulll", "decorrelated"]),
        ({"jitter": "FULL"}, ["jitter", "FULL"]),
        ({"jitter": None}, ["jitter", "None"]),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(kwargs, words):
    with pytest.raises(ValueError) as info:
        BackoffPolicy(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs", [{"base_delay": "1"}, {"multiplier": None}, {"max_delay": True}])
def test_non_numbers_raise_type_error(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        BackoffPolicy(**kwargs)


def test_bad_attempts_and_previous():
    b = BackoffPolicy(jitter="decorrelated")
    with pytest.raises(ValueError, match=r"attempt.*-1"):
        b.delay(-1)
    with pytest.raises(ValueError, match=r"attempt.*-5"):
        b.exponential(-5)
    with pytest.raises(TypeError, match="attempt"):
        b.delay(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attempt"):
        b.delay(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"previous.*-2"):
        b.delay(0, previous=-2.0)
    with pytest.raises(ValueError, match="previous"):
        b.delay(0, previous=float("nan"))
    with pytest.raises(ValueError, match=r"n must be an int >= 0.*-1"):
        b.delays(-1)
