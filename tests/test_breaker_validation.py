"""One validation rule for every public argument of the breakers and the stores (issues 16, 19).

Table-driven: each argument of ``CircuitBreaker``, ``SharedCircuitBreaker``, ``RedisStore``,
``SQLiteStateStore``, ``MemoryStateStore`` and ``from_url`` gets NaN, +-inf, 0, a negative, a
huge float, a huge int, a string, a bool and None. Each either works (and the object still
behaves) or raises TypeError (wrong type) / ValueError (wrong value) whose message names the
parameter and shows the value -- the same error from the in-process and the shared breaker
(a bad ``failure_threshold`` used to be a TypeError in one and a ValueError in the other).
No Redis server is needed: a ``RedisStore`` connects at its first command.
"""

from __future__ import annotations

import importlib.util

import pytest
from test_limiter_validation import _expect  # the same check of each error message

from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.clock import VirtualClock
from llm_patterns.errors import ServerError
from llm_patterns.machines.breaker import BreakerConfig
from llm_patterns.state import MemoryStateStore, SharedCircuitBreaker, SQLiteStateStore, from_url

NAN, INF = float("nan"), float("inf")
BAD = {"nan": NAN, "+inf": INF, "-inf": -INF, "zero": 0, "negative": -1, "huge": 1e308,
       "huge_int": 10**30, "str": "5", "bool": True, "none": None}

OK = "ok"
T, V = TypeError, ValueError


def _table(rows):
    out = []
    for param, expected in rows:
        assert set(expected) == set(BAD), param
        out += [pytest.param(param, BAD[k], expected[k], id=f"{param}={k}") for k in BAD]
    return out


COUNT = {"nan": T, "+inf": T, "-inf": T, "zero": V, "negative": V, "huge": T, "huge_int": V,
         "str": T, "bool": T, "none": T}
COOLDOWN = {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V,
            "huge_int": V, "str": T, "bool": T, "none": T}
NOT_A_NUMBER = {"nan": T, "+inf": T, "-inf": T, "zero": T, "negative": T, "huge": T,
                "huge_int": T, "str": T, "bool": T}
BREAKER = [
    ("failure_threshold", COUNT),
    ("reset_timeout", COOLDOWN),
    ("half_open_max_calls", COUNT),
    ("probe_timeout", {**COOLDOWN, "none": OK}),
    ("is_failure", {**NOT_A_NUMBER, "none": OK}),
    ("clock", {**NOT_A_NUMBER, "none": OK}),
]


def _local(**kw):
    return CircuitBreaker(**{"name": "p", "clock": VirtualClock(), **kw})


def _shared(**kw):
    clock = VirtualClock()
    return SharedCircuitBreaker(**{"name": "p", "clock": clock,
                                   "store": MemoryStateStore(clock=clock), **kw})


@pytest.mark.parametrize("make", [_local, _shared], ids=["local", "shared"])
@pytest.mark.parametrize("param, value, expected", _table(BREAKER))
def test_breaker_arguments(make, param, value, expected):
    breaker = _expect(lambda x: make(**{param: x}), value, expected, param)
    if breaker is not None:  # accepted: it still works
        with pytest.raises(ServerError):
            breaker.call(_fail)
        assert breaker.health()["failures"] == 1


def _fail():
    raise ServerError("503", status_code=503)


@pytest.mark.parametrize("param, value, expected", _table([
    ("name", {**NOT_A_NUMBER, "str": OK, "none": T}),
]))
@pytest.mark.parametrize("make", [_local, _shared], ids=["local", "shared"])
def test_breaker_name(make, param, value, expected):
    _expect(lambda x: make(name=x), value, expected, param)


def test_the_shared_name_is_a_key_and_the_local_one_may_be_empty():
    assert _local(name="").health()["name"] == ""
    with pytest.raises(ValueError, match="name must be a non-empty str, got ''"):
        _shared(name="")


@pytest.mark.parametrize("make", [_local, _shared], ids=["local", "shared"])
def test_both_breakers_give_the_same_error(make):
    """The drift the issue found: one TypeError, one ValueError for the same mistake."""
    errors = {}
    for param, value in (("failure_threshold", 2.5), ("failure_threshold", 0),
                         ("reset_timeout", "60"), ("half_open_max_calls", 10**7)):
        with pytest.raises((TypeError, ValueError)) as info:
            make(**{param: value})
        errors[(param, repr(value))] = (type(info.value), str(info.value))
    local = {}
    for param, value in (("failure_threshold", 2.5), ("failure_threshold", 0),
                         ("reset_timeout", "60"), ("half_open_max_calls", 10**7)):
        with pytest.raises((TypeError, ValueError)) as info:
            BreakerConfig.of(**{param: value})
        local[(param, repr(value))] = (type(info.value), str(info.value))
    assert errors == local


@pytest.mark.parametrize("param, value, expected", _table([
    ("store", {**NOT_A_NUMBER, "str": V, "none": OK}),
]))
def test_shared_breaker_store(param, value, expected, monkeypatch, tmp_path):
    """None: the store named by LLM_PATTERNS_STATE (unset: an error saying so)."""
    monkeypatch.setenv("LLM_PATTERNS_STATE", f"sqlite:///{tmp_path}/env.db")
    breaker = _expect(lambda x: SharedCircuitBreaker("p", store=x), value, expected, param)
    if breaker is not None:
        assert breaker.health()["store"].endswith("env.db")
        monkeypatch.delenv("LLM_PATTERNS_STATE")
        with pytest.raises(ValueError, match="LLM_PATTERNS_STATE is not set"):
            SharedCircuitBreaker("p", store=value)


# ----------------------------------------------------------------------------- the stores

SECONDS = {"nan": V, "+inf": V, "-inf": V, "zero": V, "negative": V, "huge": V,
           "huge_int": V, "str": T, "bool": T, "none": T}


@pytest.mark.parametrize("param, value, expected", _table([
    ("timeout", SECONDS),
    ("clock", {**NOT_A_NUMBER, "none": OK}),
    ("path", {**NOT_A_NUMBER, "str": OK, "none": T}),
]))
def test_sqlite_store_arguments(param, value, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the path "5" is a file here
    kw = {"path": tmp_path / "s.db", param: value}
    store = _expect(lambda x: SQLiteStateStore(**{**kw, param: x}), value, expected, param)
    if store is not None:
        assert store.breaker_admit("k", BreakerConfig(), now=1.0).allowed
        store.close()


def test_sqlite_store_path_must_be_a_file():
    for path in ("", ":memory:"):
        with pytest.raises(ValueError, match="path must be a file"):
            SQLiteStateStore(path)


@pytest.mark.parametrize("param, value, expected", _table([
    ("clock", {**NOT_A_NUMBER, "none": OK}),
]))
def test_memory_store_arguments(param, value, expected):
    _expect(lambda x: MemoryStateStore(clock=x), value, expected, param)


@pytest.mark.parametrize("param, value, expected", _table([
    ("url", {**NOT_A_NUMBER, "str": V, "none": T}),
]))
def test_from_url_arguments(param, value, expected):
    _expect(lambda x: from_url(x), value, expected, param)


def test_from_url_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown scheme 'postgres'"):
        from_url("postgres://x")
    with pytest.raises(ValueError, match=r"url must look like sqlite:///path/to/state\.db"):
        from_url("sqlite://")
    with pytest.raises(TypeError, match="clock must have a now"):
        from_url("memory://", clock=3)


needs_redis_py = pytest.mark.skipif(importlib.util.find_spec("redis") is None,
                                    reason="the 'redis' package (extra [redis])")
URL = "redis://127.0.0.1:1/0"  # nothing listens: a RedisStore connects at its first command


@needs_redis_py
@pytest.mark.parametrize("param, value, expected", _table([
    ("socket_timeout", SECONDS),
    ("connect_timeout", SECONDS),
    ("reconnect_after", SECONDS),
    ("max_reconnect_after", {**SECONDS, "huge": V}),
    ("idle_ttl", SECONDS),
    ("prefix", {**NOT_A_NUMBER, "str": OK, "none": T}),
    ("on_failure", {**NOT_A_NUMBER, "str": V, "none": T}),
    ("server_time", {**NOT_A_NUMBER, "bool": OK, "none": T}),
    ("clock", {**NOT_A_NUMBER, "none": OK}),
    ("url_or_client", {**NOT_A_NUMBER, "str": V, "none": T}),
]))
def test_redis_store_arguments(param, value, expected):
    from llm_patterns.state.redis import RedisStore

    kw = {"url_or_client": URL, "max_reconnect_after": 3600.0, param: value}
    if param == "max_reconnect_after":
        kw["reconnect_after"] = 0.25
    store = _expect(lambda x: RedisStore(**{**kw, param: x}), value, expected, param)
    if store is not None:
        assert store.url.startswith("redis://")
        store.close()


@needs_redis_py
def test_redis_store_cross_checks_and_url_items():
    from llm_patterns.state.redis import RedisStore

    with pytest.raises(ValueError, match=r"max_reconnect_after must be >= reconnect_after "
                                         r"\(2.0\), got 1.0"):
        RedisStore(URL, reconnect_after=2.0, max_reconnect_after=1.0)
    with pytest.raises(ValueError, match="server_time=False needs a clock"):
        RedisStore(URL, server_time=False)
    with pytest.raises(ValueError, match="prefix must be a non-empty str without braces"):
        RedisStore(URL, prefix="a{b}")
    with pytest.raises(ValueError, match="url item socket_timeout must be a number of "
                                         "seconds, got 'soon'"):
        from_url(URL + "?socket_timeout=soon")
    with pytest.raises(ValueError, match="socket_timeout must be a finite number > 0 and "
                                         "<= 3600, got nan"):
        from_url(URL + "?socket_timeout=nan")
    with pytest.raises(ValueError, match="on_failure must be one of 'closed', 'open', "
                                         "got 'maybe'"):
        from_url(URL + "?on_failure=maybe")
    store = from_url(URL + "?idle_ttl=60&reconnect_after=0.5&max_reconnect_after=2&db=0")
    assert (store.idle_ttl, store.reconnect_after, store.max_reconnect_after) == (60, 0.5, 2)
    secret = "pw-never-shown"
    with pytest.raises(ValueError) as info:
        RedisStore(f"user:{secret}@host")  # no scheme: refused, the password masked
    assert secret not in str(info.value)
