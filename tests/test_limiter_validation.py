"""One validation rule for every public argument of the limiters (issues 16, 19, 20).

Table-driven: each argument of ``TokenBucket``, ``RateLimiter``, ``SharedRateLimiter`` and their
methods gets NaN, +-inf, 0, a negative, a huge value, a string, a bool and None. Each either
works (and the object still behaves) or raises TypeError (wrong type) / ValueError (wrong
value) whose message names the parameter, the value and what was expected -- never an
internal name, never an OverflowError or AttributeError from inside.
"""

from __future__ import annotations

import math

import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.protocols import Demand
from llm_patterns.rate_limit import RateLimiter, TokenBucket
from llm_patterns.state import MemoryStateStore, SharedRateLimiter

NAN, INF = float("nan"), float("inf")
BAD = {"nan": NAN, "+inf": INF, "-inf": -INF, "zero": 0, "negative": -1, "huge": 1e308,
       "str": "5", "bool": True, "none": None}

OK = "ok"
T, V = TypeError, ValueError


def _expect(fn, value, expected, param):
    """``fn(value)`` works (OK) or raises ``expected`` naming ``param`` and the value."""
    if expected == OK:
        return fn(value)
    with pytest.raises(expected) as info:
        fn(value)
    message = str(info.value)
    assert param in message, message
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    assert shown in message or str(value) in message, message
    return None


# rows: (parameter, {bad value name: expected}) -- every name in BAD must be listed
LIMIT = {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V, "str": T,
         "bool": T, "none": OK}
SECONDS_OR_NONE = {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V, "huge": OK,
                   "str": T, "bool": T, "none": OK}
CONSTRUCTOR = [
    ("rpm", LIMIT),
    ("tpm", LIMIT),
    ("itpm", LIMIT),
    ("otpm", LIMIT),
    ("burst_seconds", {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V,
                       "str": T, "bool": T, "none": OK}),
    ("headroom", {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V, "huge": V,
                  "str": T, "bool": T, "none": T}),
    ("max_wait", SECONDS_OR_NONE),
    ("max_retry_after", {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V,
                         "huge": V, "str": T, "bool": T, "none": T}),
    ("name", {"nan": T, "+inf": T, "-inf": T, "zero": T, "negative": T, "huge": T, "str": OK,
              "bool": T, "none": T}),
    ("clock", {"nan": T, "+inf": T, "-inf": T, "zero": T, "negative": T, "huge": T, "str": T,
               "bool": T, "none": OK}),
]
SHARED_ONLY = [
    ("lease", {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V,
               "str": T, "bool": T, "none": T}),
    ("poll", {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V,
              "str": T, "bool": T, "none": T}),
]


def _table(rows):
    out = []
    for param, expected in rows:
        assert set(expected) == set(BAD), param
        out += [pytest.param(param, BAD[k], expected[k], id=f"{param}={k}") for k in BAD]
    return out


def _make_local(**kw):
    base = {"rpm": 600, "tpm": 60_000, "clock": VirtualClock(), "name": "x"}
    return RateLimiter(**{**base, **kw})


def _make_shared(**kw):
    clock = VirtualClock()
    base = {"rpm": 600, "tpm": 60_000, "clock": clock, "name": "x",
            "store": MemoryStateStore(clock=clock)}
    return SharedRateLimiter(**{**base, **kw})


@pytest.mark.parametrize("make", [_make_local, _make_shared], ids=["local", "shared"])
@pytest.mark.parametrize("param, value, expected", _table(CONSTRUCTOR))
def test_constructor_arguments(make, param, value, expected):
    if make is _make_shared and param == "name" and expected == OK:
        pass  # a str is a fine shared key too
    lim = _expect(lambda x: make(**{param: x}), value, expected, param)
    if lim is not None:  # accepted: it still works
        assert lim.try_acquire(10) in (True, False)
        assert lim.status()["name"] == lim.name


@pytest.mark.parametrize("param, value, expected", _table(SHARED_ONLY))
def test_shared_only_arguments(param, value, expected):
    _expect(lambda x: _make_shared(**{param: x}), value, expected, param)


def test_shared_name_must_be_a_key():
    with pytest.raises(ValueError, match="name must be a non-empty str, got ''"):
        _make_shared(name="")


def test_burst_seconds_huge_blames_burst_seconds():
    """The issue's example: an internal "capacity" used to take the blame."""
    with pytest.raises(ValueError, match=r"burst_seconds must be a finite number > 0 and "
                                         r"<= 1e\+06, got 1e\+308"):
        RateLimiter(burst_seconds=1e308, rpm=60)
    with pytest.raises(ValueError, match=r"burst_seconds=1.0 .* 0.5 < 1"):
        RateLimiter(rpm=30, burst_seconds=1.0)


DEMAND = {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V, "huge": V, "str": T,
          "bool": T, "none": T}
SECONDS = {"nan": V, "+inf": OK, "-inf": V, "zero": OK, "negative": V, "huge": OK, "str": T,
           "bool": T, "none": T}  # an absurd pause is clamped (max_retry_after), never raised
SENT_AT = {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": OK, "huge": OK, "str": T,
           "bool": T, "none": OK}
HEADERS = dict.fromkeys(BAD, T)
METHODS = [
    ("acquire", "demand", DEMAND, lambda lim, x: lim.acquire(x)),
    ("try_acquire", "demand", DEMAND, lambda lim, x: lim.try_acquire(x)),
    ("settle", "estimated", DEMAND, lambda lim, x: lim.settle(x, 10)),
    ("settle", "actual", DEMAND, lambda lim, x: lim.settle(10, x)),
    ("penalize", "seconds", SECONDS, lambda lim, x: lim.penalize(x)),
    ("update_from_headers", "headers", HEADERS, lambda lim, x: lim.update_from_headers(x)),
    ("update_from_headers", "sent_at", SENT_AT,
     lambda lim, x: lim.update_from_headers({}, sent_at=x)),
]


def _method_table():
    out = []
    for method, param, expected, call in METHODS:
        assert set(expected) == set(BAD)
        out += [pytest.param(param, BAD[k], expected[k], call, id=f"{method}({param}={k})")
                for k in BAD]
    return out


@pytest.mark.parametrize("make", [_make_local, _make_shared], ids=["local", "shared"])
@pytest.mark.parametrize("param, value, expected, call", _method_table())
def test_method_arguments(make, param, value, expected, call):
    lim = make()
    _expect(lambda x: call(lim, x), value, expected, param)
    st = lim.status()  # whatever happened, the limiter still answers, with numbers
    assert all(math.isfinite(st[k]) for k in ("requests_available", "penalty_remaining"))
    assert st["penalty_remaining"] <= lim.max_retry_after


@pytest.mark.parametrize("param, value, expected", _table([
    ("input_tokens", {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V, "huge": V,
                      "str": T, "bool": T, "none": T}),
    ("output_tokens", {"nan": V, "+inf": V, "-inf": V, "zero": OK, "negative": V, "huge": V,
                       "str": T, "bool": T, "none": T}),
    ("requests", {"nan": T, "+inf": T, "-inf": T, "zero": OK, "negative": V, "huge": T,
                  "str": T, "bool": T, "none": T}),
]))
def test_demand_arguments(param, value, expected):
    _expect(lambda x: Demand(**{param: x}), value, expected, param)


@pytest.mark.parametrize("param, value, expected", _table([
    ("capacity", {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": OK,
                  "str": T, "bool": T, "none": T}),
    ("refill_rate", {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": OK,
                     "str": T, "bool": T, "none": T}),
]))
def test_token_bucket_constructor(param, value, expected):
    base = {"capacity": 10, "refill_rate": 1.0}
    bucket = _expect(lambda x: TokenBucket(**{**base, param: x}, clock=VirtualClock()), value,
                     expected, param)
    if bucket is not None:
        assert bucket.consume(1)


@pytest.mark.parametrize("method", ["consume", "wait_time", "force_take", "give_back"])
@pytest.mark.parametrize("name, value", list(BAD.items()), ids=list(BAD))
def test_token_bucket_methods(method, name, value):
    bucket = TokenBucket(10, 1.0, clock=VirtualClock())
    expected = {"zero": OK, "str": T, "bool": T, "none": T}.get(name, V)
    if name == "huge" and method in ("force_take", "give_back"):
        expected = OK  # a debt or a refund of any finite size is arithmetic, not an error
    _expect(lambda x: getattr(bucket, method)(x), value, expected, "n")
