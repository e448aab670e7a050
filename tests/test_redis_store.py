"""RedisStore against a real ``redis-server`` (Debian package), started here on a free port.

The store-contract tests of ``test_state_sqlite.py`` run again here with a Redis store (the
same behaviour on memory, SQLite and Redis); then what only a multi-host store must show:
processes sharing one limiter, one half-open probe among 32 processes, a hard budget parallel
workers cannot pass, a killed probe's lease expiring, Redis stopping mid-run, and skewed
client clocks not mattering. The multi-process tests use real time (a second or less each):
processes cannot share a virtual clock.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing as mp
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
if REDIS_SERVER is None:  # pragma: no cover - depends on the machine
    pytest.skip("redis-server is not on PATH (apt-get install redis-server; `make test` does)",
                allow_module_level=True)
if importlib.util.find_spec("redis") is None:  # pragma: no cover - depends on the extra
    pytest.skip("the 'redis' package (extra [redis]) is not installed", allow_module_level=True)

import redis  # noqa: E402 - after the skip checks above

from llm_patterns import (  # noqa: E402 - after the skip checks above
    BudgetExceeded,
    CircuitOpenError,
    CircuitState,
    InvalidRequestError,
    MockLLMServer,
    OpenAIProvider,
    RateLimitTimeout,
    ResilientClient,
    ServerError,
    VirtualClock,
)
from llm_patterns.errors import redact  # noqa: E402 - after the skip checks above
from llm_patterns.state import (  # noqa: E402 - after the skip checks above
    BreakerConfig,
    Limit,
    SharedCircuitBreaker,
    SharedRateLimiter,
    from_url,
)
from llm_patterns.state.budget import SharedBudget, SharedCostTracker  # noqa: E402 - after the skip checks above
from llm_patterns.state.redis import (  # noqa: E402 - after the skip checks above
    BreakerStateUnavailable,
    LimiterStateUnavailable,
    RedisStore,
    StateStoreUnavailable,
)

pytestmark = pytest.mark.redis
REPO = Path(__file__).resolve().parents[1]
CTX = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
PASSWORD = "s3cr3t-pw-do-not-log"


# ----------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, no persistence, in its own temp dir."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.workdir, self.password = workdir, password
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2)

    def start(self) -> None:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(5)

    def server_time(self) -> float:
        sec, usec = self.client().time()
        return sec + usec / 1e6


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path):
    """A password-protected server this test may stop and restart."""
    srv = RedisServer(tmp_path, password=PASSWORD)
    srv.start()
    yield srv
    srv.stop()


_PREFIXES = iter(range(1, 10**9))


def _prefix() -> str:
    return f"t{os.getpid()}x{next(_PREFIXES)}"


# ----------------------------------------------------------------------------- the contract
# The store-contract tests of test_state_sqlite.py, run on a RedisStore whose time base is the
# test's VirtualClock (server_time=False: deterministic; the production default reads Redis
# TIME, tested below).

import test_state_sqlite as _contract  # noqa: E402 - after the skip checks above

CONTRACT_TESTS = [
    "test_acquire_is_all_or_nothing", "test_buckets_refill_but_never_overfill",
    "test_settle_lower_pause", "test_settle_learns_the_estimate_ratio",
    "test_the_queue_is_first_come_first_served",
    "test_a_ticket_left_or_expired_lets_the_next_move_up",
    "test_bad_input_is_rejected", "test_breaker_protocol",
    "test_shared_limiter_behaves_like_ratelimiter", "test_shared_limiter_max_wait_takes_nothing",
    "test_shared_limiter_penalize_settle_headers", "test_shared_limiter_async",
    "test_shared_breaker_semantics", "test_a_second_breaker_object_sees_the_shared_state",
    "test_resilient_client_takes_shared_limiters_and_breakers",
]
for _name in CONTRACT_TESTS:
    if hasattr(_contract, _name):
        globals()[f"{_name}_on_redis"] = getattr(_contract, _name)


@pytest.fixture
def store(redis_server):
    s = RedisStore(redis_server.url, clock=VirtualClock(1000.0), server_time=False,
                   prefix=_prefix())
    yield s
    s.close()


def test_contract_tests_were_imported():
    missing = [n for n in CONTRACT_TESTS if f"{n}_on_redis" not in globals()]
    assert not missing, f"store-contract tests not found in test_state_sqlite.py: {missing}"


def test_budget_contract_on_every_store(redis_server, tmp_path):
    """Reserve / commit / release / expiry: the same answers on memory, SQLite and Redis."""
    from llm_patterns.state import MemoryStateStore, SQLiteStateStore

    stores = [MemoryStateStore(clock=VirtualClock(0.0)),
              SQLiteStateStore(tmp_path / "b.db", clock=VirtualClock(0.0)),
              RedisStore(redis_server.url, clock=VirtualClock(0.0), server_time=False,
                         prefix=_prefix())]
    for s in stores:
        b = SharedBudget("1.00", store=s, name="team", reservation_ttl=10)
        r1 = b.reserve("0.60")
        assert b.try_reserve("0.50") is None, s  # 0.60 held + 0.50 > 1.00
        with pytest.raises(BudgetExceeded, match=r"\$0.60 reserved by 1 call"):
            b.reserve("0.41")
        b.commit(r1, "0.25")  # held 0.60 -> spent 0.25
        st = b.status()
        assert (st["spent"], st["reserved"], st["in_flight"]) == (Decimal("0.25"), 0, 0), s
        r2 = b.reserve("0.75")  # exactly the rest fits
        b.release(r2)
        r3 = b.reserve("0.70")
        s.clock.advance(10)  # a worker died holding r3: the hold expires
        assert b.status()["reserved"] == 0 and b.reserve("0.75")
        b.commit(r3, "0.01")  # a late result still counts as spend
        assert b.spent == Decimal("0.26"), s
        with pytest.raises(ValueError, match="already settled"):
            b.commit(r3, "0.01")
        s.close()


# ----------------------------------------------------------------------------- Redis specifics


def test_server_time_ignores_the_callers_now_and_clock(redis_server):
    """Two workers whose clocks disagree by a day share one bucket on the server's TIME."""
    a = RedisStore(redis_server.url, clock=VirtualClock(0.0), prefix="skew")
    b = RedisStore(redis_server.url, clock=VirtualClock(86_400.0), prefix="skew")
    limits = (Limit("requests", 0.06, 3, 3),)  # 3 now, then one every 1000 s
    key = f"k{_prefix()}"
    answers = [s.limiter_acquire(key, limits, (1, 0, 0), max_wait=0, now=now).wait
               for s, now in ((a, 0.0), (b, 1e12), (a, -5e9), (b, 86_400.0), (a, 2e9))]
    assert answers[:3] == [0.0, 0.0, 0.0]
    assert all(w > 900 for w in answers[3:]), answers  # the far-future `now` refilled nothing
    before = redis_server.server_time()
    snap = a.breaker_read(key, BreakerConfig(), now=123.0)
    assert before - 1 <= snap.last_state_change <= redis_server.server_time() + 1


def test_keys_expire_when_idle(redis_server):
    s = RedisStore(redis_server.url, prefix=_prefix(), idle_ttl=300)
    c = redis_server.client()
    s.limiter_acquire("lim", (Limit("tokens", 600.0, 100, 100),), (1, 100, 0))  # 10 s to full
    ttl = c.pttl(f"{s.prefix}:{{lim}}") / 1000
    assert 10 + 60 - 1 <= ttl <= 10 + 60 + 1
    s.breaker_admit("br", BreakerConfig(reset_timeout=30))
    assert 299 <= c.pttl(f"{s.prefix}:{{br}}") / 1000 <= 300
    b = SharedBudget(5, store=s, name="b", reservation_ttl=30)
    r = b.reserve(1)
    assert c.ttl(f"{s.prefix}:{{budget:b}}") == -1  # the spend never expires by itself
    assert 0 < c.ttl(f"{s.prefix}:{{budget:b}}:res") <= 90
    b.commit(r, 1)


def test_from_url_redaction_and_pickling(redis_server, monkeypatch):
    s = from_url(redis_server.url + "?on_failure=open&prefix=px&socket_timeout=0.5")
    assert isinstance(s, RedisStore)
    assert (s.on_failure, s.prefix, s.socket_timeout) == ("open", "px", 0.5)
    lim = (Limit("requests", 60.0, 2, 2),)
    assert s.limiter_acquire("k", lim, (1, 0, 0)).wait == 0.0
    again = pickle.loads(pickle.dumps(s))
    assert again.limiter_acquire("k", lim, (1, 0, 0)).wait == 0.0  # the same bucket: 2 taken
    assert again.limiter_acquire("k", lim, (1, 0, 0), max_wait=0).wait > 0
    monkeypatch.setenv("LLM_PATTERNS_STATE_ON_FAILURE", "open")
    assert from_url(redis_server.url).on_failure == "open"
    assert from_url(redis_server.url + "?on_failure=closed").on_failure == "closed"
    # the one redact() of the library masks a store URL's password wherever it is
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert "pw" not in redact("unix:///run/r.sock?db=0&password=pw")
    assert RedisStore("redis://u:pw@h:1/0").url == "redis://u:***@h:1/0"
    with pytest.raises(ValueError, match="on_failure"):
        RedisStore(redis_server.url, on_failure="maybe")
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisStore(redis_server.url, socket_timeout=0)


# ----------------------------------------------------------------------------- processes

_RPM, _TPM, _BURST = 1200.0, 60_000.0, 1.0  # 20 requests/s (bucket 20), 1000 tokens/s (1000)
_RCAP, _RRATE = _RPM / 60 * _BURST, _RPM / 60
_TCAP, _TRATE = _TPM / 60 * _BURST, _TPM / 60
_SLACK_S = 1e-6  # the grant's time is the server TIME the script itself read


def _violations(grants: list[tuple[float, float]], cap: float, rate: float,
                weight=lambda g: 1.0) -> list[tuple[float, float]]:
    """Windows [g_i, g_j] holding more than capacity + rate * length (+ timing slack)."""
    bad = []
    for i in range(len(grants)):
        total = 0.0
        for j in range(i, len(grants)):
            total += weight(grants[j])
            length = grants[j][0] - grants[i][0]
            if total > cap + rate * (length + _SLACK_S) + 1e-6:
                bad.append((total, length))
    return bad


def test_window_checker_rejects_an_over_granting_log():
    ok = [(i / _RRATE, 10.0) for i in range(60)]
    assert _violations(ok, _RCAP, _RRATE) == []
    burst = ok[:] + [(0.5, 10.0)] * int(_RCAP)  # a second bucketful at t=0.5
    assert _violations(sorted(burst), _RCAP, _RRATE)
    heavy = [(i * 0.02, 60.0) for i in range(40)]  # 3000 tokens/s for 0.8 s: > 1000 + 1000/s
    assert _violations(heavy, _TCAP, _TRATE, weight=lambda g: g[1])


def _limiter_worker(url: str, prefix: str, skew: float, until: float, seed: int, out) -> None:
    real = time.time
    time.time = lambda: real() + skew  # this worker's clock is wrong by `skew` seconds
    store = RedisStore(url, prefix=prefix, clock=VirtualClock(skew))
    rng = random.Random(seed)
    grants = []
    while real() < until:
        tokens = float(rng.randint(20, 120))
        limits = (Limit("requests", _RPM, _RCAP, _RCAP), Limit("tokens", _TPM, _TCAP, _TCAP))
        grant = store.limiter_acquire("api", limits, (1, tokens, 0), max_wait=0)
        if grant.wait == 0.0:
            grants.append((grant.at, tokens))  # the server's TIME of the decision
        else:
            time.sleep(min(grant.wait, 0.005))
    out.put(grants)


def test_processes_share_one_limiter_never_exceeding_rpm_or_tpm(redis_server):
    prefix, q = _prefix(), CTX.Queue()
    until = time.time() + 0.3 + 1.2
    skews = [0.0, -3600.0, 86_400.0, 7.5]
    procs = [CTX.Process(target=_limiter_worker, args=(redis_server.url, prefix, skew, until,
                                                       i, q))
             for i, skew in enumerate(skews)]
    for p in procs:
        p.start()
    per_worker = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    grants = sorted(g for w in per_worker for g in w)
    assert _violations(grants, _RCAP, _RRATE) == []
    assert _violations(grants, _TCAP, _TRATE, weight=lambda g: g[1]) == []
    span = grants[-1][0] - grants[0][0]
    assert len(grants) >= _RCAP + _RRATE * span * 0.5 or sum(t for _, t in grants) >= (
        _TCAP + _TRATE * span * 0.5)  # it grants (not starved)
    assert sum(1 for w in per_worker if w) >= 3  # and not one worker's private budget


def _probe_worker(url: str, prefix: str, barrier, out) -> None:
    store = RedisStore(url, prefix=prefix)
    br = SharedCircuitBreaker("api", failure_threshold=1, reset_timeout=0.4, probe_timeout=30,
                              store=store)
    barrier.wait()  # the parent opened the breaker
    barrier.wait()  # ... and waited for the cooldown
    out.put(br.allow_request())


def test_32_processes_get_exactly_one_half_open_probe(redis_server):
    n, prefix = 32, _prefix()
    barrier, q = CTX.Barrier(n + 1), CTX.Queue()
    procs = [CTX.Process(target=_probe_worker, args=(redis_server.url, prefix, barrier, q))
             for _ in range(n)]
    for p in procs:
        p.start()
    br = SharedCircuitBreaker("api", failure_threshold=1, reset_timeout=0.4, probe_timeout=30,
                              store=RedisStore(redis_server.url, prefix=prefix))
    br.record_failure(ServerError("503"))
    assert br.state is CircuitState.OPEN
    barrier.wait()
    deadline = time.monotonic() + 10
    while br.state is not CircuitState.HALF_OPEN and time.monotonic() < deadline:
        time.sleep(0.02)  # the cooldown runs on the server's clock
    barrier.wait()
    answers = [q.get(timeout=30) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
    assert sorted(answers) == [False] * (n - 1) + [True]
    health = br.health()
    assert health["state"] == "half_open" and health["trials_in_flight"] == 1
    assert health["rejections"] == n - 1


def _budget_worker(url: str, prefix: str, naive: bool, seed: int, barrier, out) -> None:
    rng = random.Random(seed)
    store = RedisStore(url, prefix=prefix)
    budget = SharedBudget("1.00", store=store, name="team", reservation_ttl=30)
    client = store.client
    spent, refusals = [], 0
    barrier.wait()
    while refusals < 3:
        est = Decimal(rng.randint(10_000, 50_000)) / Decimal(10**6)  # $0.01 .. $0.05
        actual = (est * Decimal(rng.randint(50, 100)) / 100).quantize(Decimal("0.000001"))
        if naive:  # check what was spent, call, add: every worker passes the same check
            if Decimal((client.get(f"{prefix}:naive") or b"0").decode()) + est > Decimal("1.00"):
                refusals += 1
                continue
            time.sleep(0.003)  # the call
            client.incrbyfloat(f"{prefix}:naive", str(actual))
        else:
            r = budget.try_reserve(est)
            if r is None:
                refusals += 1
                time.sleep(0.003)
                continue
            time.sleep(0.003)  # the call
            budget.commit(r, actual)
        spent.append(actual)
    out.put(spent)


def _run_budget_workers(url: str, prefix: str, naive: bool, n: int = 8) -> list[Decimal]:
    barrier, q = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=_budget_worker, args=(url, prefix, naive, i, barrier, q))
             for i in range(n)]
    for p in procs:
        p.start()
    spent = [x for _ in procs for x in q.get(timeout=20)]
    for p in procs:
        p.join(timeout=20)
        assert p.exitcode == 0
    return spent


def test_parallel_workers_never_spend_past_a_hard_budget(redis_server):
    prefix = _prefix()
    spent = _run_budget_workers(redis_server.url, prefix, naive=False)
    total = sum(spent, Decimal(0))
    assert total <= Decimal("1.00")
    assert total >= Decimal("0.50")  # the budget was used, not refused from the start
    status = SharedBudget("1.00", store=RedisStore(redis_server.url, prefix=prefix),
                          name="team").status()
    assert status["spent"] == total  # every commit counted, none lost, exactly
    assert status["reserved"] == 0 and status["in_flight"] == 0


def test_check_then_add_overshoots_the_same_budget(redis_server):
    """The control: without reservation, parallel workers pass the same check and overspend."""
    spent = _run_budget_workers(redis_server.url, _prefix(), naive=True)
    assert sum(spent, Decimal(0)) > Decimal("1.00")


def _dying_probe(url: str, prefix: str, out) -> None:
    store = RedisStore(url, prefix=prefix)
    br = SharedCircuitBreaker("api", failure_threshold=1, reset_timeout=0.2, probe_timeout=0.6,
                              store=store)
    out.put(br.allow_request())
    time.sleep(60)  # "calling" the provider when it is killed


def test_a_killed_probes_lease_expires_and_the_breaker_recovers(redis_server):
    prefix = _prefix()
    br = SharedCircuitBreaker("api", failure_threshold=1, reset_timeout=0.2, probe_timeout=0.6,
                              store=RedisStore(redis_server.url, prefix=prefix))
    br.record_failure(ServerError("503"))
    time.sleep(0.25)
    q = CTX.Queue()
    p = CTX.Process(target=_dying_probe, args=(redis_server.url, prefix, q))
    p.start()
    assert q.get(timeout=30) is True  # the child holds the one probe
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=30)
    with pytest.raises(CircuitOpenError, match="trial call") as info:
        br.call(lambda: "ok")
    assert 0 < info.value.retry_after <= 0.6
    time.sleep(info.value.retry_after + 0.05)  # the lease expires on the server's clock
    assert br.call(lambda: "ok") == "ok"  # the probe is ours now, and it closes the breaker
    assert br.state is CircuitState.CLOSED


# ----------------------------------------------------------------------------- Redis failing


def _state_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "llm_patterns.state" and r.levelno >= logging.WARNING]


def test_redis_down_fail_closed_refuses_quickly_and_recovers(own_server, caplog):
    caplog.set_level(logging.DEBUG, logger="llm_patterns.state")
    store = RedisStore(own_server.url, on_failure="closed", reconnect_after=0.3,
                       max_reconnect_after=0.3, socket_timeout=0.5, connect_timeout=0.5)
    lim = SharedRateLimiter(rpm=600, store=store, name="p")
    br = SharedCircuitBreaker("p", failure_threshold=5, store=store)
    assert lim.try_acquire() and br.call(lambda: "ok") == "ok"
    own_server.stop()
    for _ in range(20):
        with pytest.raises(RateLimitTimeout) as info:
            lim.acquire()
        with pytest.raises(CircuitOpenError):
            br.call(lambda: "never called")
    err = info.value
    assert isinstance(err, LimiterStateUnavailable) and isinstance(err, StateStoreUnavailable)
    assert 0 < err.retry_after <= 0.3
    assert f"127.0.0.1:{own_server.port}" in str(err) and "on_failure='closed'" in str(err)
    with pytest.raises(BreakerStateUnavailable):
        br.health()
    with pytest.raises(StateStoreUnavailable):
        SharedBudget(1, store=store, name="b").reserve("0.1")
    # bookkeeping after a call that already happened never fails that call
    lim.penalize(1.0)
    br.record_failure(ServerError("503"))
    warnings = _state_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "refusing calls" in warnings[0].getMessage()
    for text in [r.getMessage() for r in caplog.records] + [str(err), repr(err), repr(store)]:
        assert PASSWORD not in text
    own_server.start()  # same port
    time.sleep(0.35)
    assert lim.try_acquire() and store.available


def test_redis_down_fail_open_falls_back_with_one_warning(own_server, caplog):
    caplog.set_level(logging.DEBUG, logger="llm_patterns.state")
    store = RedisStore(own_server.url, on_failure="open", reconnect_after=0.2,
                       max_reconnect_after=0.2, socket_timeout=0.5, connect_timeout=0.5)
    lim = SharedRateLimiter(rpm=300, burst_seconds=1, store=store, name="p")  # bucket of 5
    br = SharedCircuitBreaker("p", failure_threshold=2, store=store)
    assert lim.try_acquire()
    own_server.stop()
    granted = sum(lim.try_acquire() for _ in range(40))
    assert 5 <= granted <= 6  # the per-process fallback bucket (full, 5/s refill)
    for _ in range(2):
        with pytest.raises(ServerError):
            br.call(_fail)
    assert br.state is CircuitState.OPEN  # the local breaker still protects this process
    with pytest.raises(StateStoreUnavailable, match="budget"):  # a hard budget fails closed
        SharedBudget(1, store=store, name="b").reserve("0.1")
    time.sleep(0.25)  # a back-off passes: the store tries Redis again, still down, silently
    lim.try_acquire()
    warnings = _state_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "falling back to per-process" in warnings[0].getMessage()
    assert PASSWORD not in warnings[0].getMessage()
    own_server.start()
    time.sleep(0.45)
    assert lim.try_acquire() and store.available  # shared again (Redis state: fresh bucket)
    assert lim.status()["requests_available"] == pytest.approx(4, abs=0.5)
    assert br.state is CircuitState.CLOSED  # the shared breaker never saw the local failures
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def _fail():
    raise ServerError("503")


@pytest.mark.timeout(30)
def test_a_frozen_redis_cannot_hang_a_caller(own_server):
    """SIGSTOP: the server accepts connections and never answers; socket timeouts bound it."""
    store = RedisStore(own_server.url, on_failure="closed", socket_timeout=0.3,
                       connect_timeout=0.3, reconnect_after=0.2, max_reconnect_after=0.2)
    lim = (Limit("requests", 60.0, 100, 100),)
    assert store.limiter_acquire("k", lim, (1, 0, 0)).wait == 0.0
    own_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(LimiterStateUnavailable):
            store.limiter_acquire("k", lim, (1, 0, 0))
        with pytest.raises(LimiterStateUnavailable):  # backing off: no network at all
            store.limiter_acquire("k", lim, (1, 0, 0))
    finally:
        own_server.proc.send_signal(signal.SIGCONT)
    time.sleep(0.25)
    assert store.limiter_acquire("k", lim, (1, 0, 0)).wait == 0.0


# ----------------------------------------------------------------------------- the cost hook


def test_shared_cost_tracker_plugs_into_resilient_client(redis_server):
    """``ResilientClient`` drives the ``CostGate``: the shared tracker reserves before the call
    and commits after it; a failed call's hold is given back at once."""
    clock = VirtualClock()
    store = RedisStore(redis_server.url, prefix=_prefix())
    prices = {"gpt-4o-mini": {"input": "150", "output": "600"}}  # expensive, to hit the limit
    tracker = SharedCostTracker(prices, budget="0.50", store=store, budget_name="team")
    other = SharedCostTracker(prices, budget="0.50", store=store, budget_name="team")
    srv = MockLLMServer(clock=clock, seed=3)
    provider = OpenAIProvider("p", "gpt-4o-mini", base_url=srv.base_url, api_key="test-key",
                              client=srv.client(), clock=clock)
    client = ResilientClient([provider], cost=tracker, clock=clock)
    r = client.complete("hello there", max_tokens=100)
    spent = tracker.shared.status()
    assert r.text and 0 <= spent["spent"] - tracker.total < Decimal("1e-9")  # nano-USD, up
    assert spent["reserved"] == 0  # committed, not held
    # a call that fails gives its hold back at once
    srv.take_down(400)
    with pytest.raises(InvalidRequestError):
        client.complete("hello there", max_tokens=100)
    assert tracker.shared.status()["in_flight"] == 0
    assert tracker.shared.status()["reserved"] == 0 and tracker.reserved == 0
    # another process's tracker sees the same spend: the budget is one
    assert other.shared.status()["spent"] == spent["spent"]
    with other.shared.hold(Decimal("0.50") - spent["spent"]), pytest.raises(
            BudgetExceeded, match="shared"):
        tracker.check(Decimal("0.000001"))


# ----------------------------------------------------------------------------- Airflow


@pytest.mark.airflow
@pytest.mark.slow
def test_the_dag_runs_on_the_redis_store(redis_server, tmp_path, monkeypatch):
    if importlib.util.find_spec("airflow") is None:
        pytest.skip("apache-airflow (extra [airflow]) is not installed")
    import test_airflow as ta  # sets AIRFLOW_HOME & co. before Airflow is first imported
    from airflow.utils import db

    db.initdb()
    url = redis_server.url + "?prefix=dagtest"
    monkeypatch.setenv("LLM_PATTERNS_STATE", url)
    monkeypatch.setenv("LLM_PATTERNS_LEDGER", str(tmp_path / "ledger.db"))
    spec = importlib.util.spec_from_file_location("llm_retry_patterns_dag_redis", ta.DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dr = module.dag_obj.test()
    assert dr.state == "success"
    tis, xcoms, _ = ta._run_details(dr)
    assert all(tis[("summarize", m)][0] == "success" for m in range(module.N_DOCS))
    # the shared breaker and limiters lived in Redis
    store = from_url(url)
    assert isinstance(store, RedisStore)
    snap = SharedCircuitBreaker(f"{module.DAG_ID}:{dr.run_id}:primary", store=store).health()
    assert snap["opened_count"] >= 1 and snap["rejections"] >= 1
    keys = {k.decode() for k in redis_server.client().keys("dagtest:*")}
    assert f"dagtest:{{limiter:{module.DAG_ID}:{dr.run_id}:primary}}" in keys
    total = sum((Decimal(xcoms[("summarize", m)]["cost"]) for m in range(module.N_DOCS)),
                Decimal(0))
    assert Decimal(xcoms[("aggregate_costs", -1)]["total"]) == total > 0
