# %% [markdown]
# # Task 5 · Circuit breaker
#
# **Goal:** stop calling a provider that is down, and find out carefully when it is back.
# Retries are right for a blip; during a real outage they multiply the load on a provider that
# is trying to recover, and make every caller wait for errors.
#
# **What you will build:** a `CircuitBreaker(failure_threshold, reset_timeout, clock)` with the
# three states *closed → open → half-open*, `can_execute()`, `record_success()`,
# `record_failure()` and `state`.
#
# **Time:** about 15 minutes.

# %%
import asyncio
import logging
import random
import sys
import threading

import plotly.graph_objects as go
import plotly.io as pio

from llm_patterns import (
    BackoffPolicy,
    CircuitOpenError,
    LLMError,
    MockLLMServer,
    OpenAIProvider,
    RetryPolicy,
    VirtualClock,
)
from llm_patterns import (
    CircuitBreaker as LibraryBreaker,
)

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.WARNING, force=True)
logging.getLogger("llm_patterns.retry").setLevel(logging.ERROR)  # hundreds of retry lines below

OUTAGE = (120.0, 360.0)  # the provider answers 503 from minute 2 to minute 6


def make_provider(clock, seed=1):
    """A mock OpenAI-style provider that is down during OUTAGE."""
    server = MockLLMServer(clock=clock, latency=0.5, seed=seed)
    server.outage(*OUTAGE, status=503)
    provider = OpenAIProvider("openai", "gpt-4o-mini", base_url=server.base_url,
                              api_key="test-key", async_client=server.async_client(),
                              client=server.client(), clock=clock)
    return server, provider


def calls_per_bin(server, width=10.0, duration=600.0):
    """How many requests the server received in each `width`-second bin."""
    bins = [0] * int(duration // width)
    for rec in server.stats["log"]:
        k = int(rec["time"] // width)
        if k < len(bins):
            bins[k] += 1
    return [k * width for k in range(len(bins))], bins

# %% [markdown]
# ## 1 · What goes wrong: retries hammering a dead provider
#
# A pipeline sends a request every 2 seconds (many workers, so requests overlap). Each request is
# wrapped in a good retry policy: 5 attempts, exponential backoff with jitter, as in notebook 02.
# From minute 2 to minute 6 the provider is down. Count the calls it receives.

# %%
async def run_pipeline(clock, call, n=300, every=2.0):
    """n requests, one every `every` seconds, run concurrently; returns how many failed."""
    failed = 0

    async def one(i):
        nonlocal failed
        await clock.asleep(i * every)
        try:
            await call(f"Summarize report #{i}")
        except LLMError:
            failed += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return failed


clock = VirtualClock()
server, provider = make_provider(clock)
retry = RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=1.0, max_delay=30.0),
                    clock=clock, rng=random.Random(7))

async def with_retries_only(prompt):
    return await retry.call_async(provider.acomplete, prompt, max_tokens=50)

failed = await run_pipeline(clock, with_retries_only)
x, retries_only = calls_per_bin(server)
in_outage = sum(1 for r in server.stats["log"] if OUTAGE[0] <= r["time"] < OUTAGE[1])
print(f"{failed} of 300 requests failed; the dead provider received {in_outage} calls "
      f"during the outage (the pipeline only sent 120 requests then)")

fig = go.Figure(go.Bar(x=x, y=retries_only, marker_color="#d62728", name="calls received"))
fig.add_vrect(x0=OUTAGE[0], x1=OUTAGE[1], fillcolor="grey", opacity=0.15, line_width=0,
              annotation_text="outage", annotation_position="top left")
fig.add_hline(y=5, line_dash="dot", annotation_text="normal load (5 per 10 s)")
fig.update_layout(title="Retries only: calls into the provider per 10 s",
                  xaxis_title="seconds", yaxis_title="calls received", template="plotly_white",
                  height=350)
fig.show()

# %% [markdown]
# During the outage the provider gets about **five times** its normal load: every request now
# makes five attempts, and none of them can succeed. Each caller also waits through its whole
# backoff schedule (1 + 2 + 4 + 8 s) before it learns what the first 503 already said.
#
# A circuit breaker notices that failures come in a row, and **opens**: for `reset_timeout`
# seconds it refuses calls at once, without touching the provider. Then it turns **half-open**
# and lets *one* trial call through. If the trial succeeds the breaker **closes** (back to
# normal); if it fails, it opens again for another `reset_timeout`.
#
# ```
#            failure_threshold failures in a row
#   CLOSED ─────────────────────────────────────▶ OPEN
#     ▲                                          │  ▲
#     │ trial succeeds          reset_timeout    │  │ trial fails
#     │                            passes        ▼  │
#     └─────────────────────────────────────── HALF-OPEN (one trial call)
# ```
#
# ## 2 · A first draft, and its bug
#
# A first attempt often looks like this:

# %%
class DraftBreaker:
    def __init__(self, failure_threshold=5, reset_timeout=60.0, clock=None):
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.failures = 0
        self.state = "closed"
        self.last_failure_time = None

    def can_execute(self):
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.clock.now() - self.last_failure_time > self.reset_timeout:
                self.state = "half-open"
                return True
            return False
        return True  # half-open: let the test request through

    def record_success(self):
        self.failures = 0
        self.state = "closed"

    def record_failure(self):
        self.failures += 1
        self.last_failure_time = self.clock.now()
        if self.failures >= self.failure_threshold:
            self.state = "open"

# %% [markdown]
# It opens and it half-opens, but look at the last line of `can_execute`: in half-open it lets
# **every** caller through, not one. The moment the cooldown ends, all the requests that queued
# up during it rush to the provider at once, before the first trial has even answered. If the
# provider is still down, they all fail (and the breaker opens again); if it is just recovering,
# the rush can knock it over again. (The same bug has been measured in several published
# Python breaker libraries.)
#
# Here are 8 worker threads asking at the same moment, right after the cooldown:

# %%
def admitted_at_once(breaker, clock, threads=8):
    """Open `breaker`, let the cooldown pass, then ask can_execute from `threads` threads at once.

    (The library breaker spells can_execute `allow_request`.)"""
    ask = getattr(breaker, "can_execute", None) or breaker.allow_request
    for _ in range(3):
        breaker.record_failure()
    clock.advance(31)
    barrier = threading.Barrier(threads)
    admitted = []

    def worker():
        barrier.wait()
        if ask():
            admitted.append(1)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return len(admitted)


clock = VirtualClock()
print("draft breaker in half-open admitted", admitted_at_once(DraftBreaker(3, 30, clock), clock),
      "of 8 callers")

# %% [markdown]
# ## 3 · Your task: `CircuitBreaker(failure_threshold, reset_timeout, clock)`
#
# - `state` is `"closed"`, `"open"` or `"half_open"` (a plain attribute is fine; the draft's
#   `"half-open"` is accepted too).
# - **closed:** `can_execute()` is `True`. `record_failure()` counts failures in a row;
#   at `failure_threshold` the breaker opens. `record_success()` resets the count.
# - **open:** `can_execute()` is `False` until `reset_timeout` seconds have passed since it
#   opened, measured with `self.clock.now()` (never `time.time()`: the check uses a virtual
#   clock). Then it becomes half-open; doing that inside `can_execute()` is fine.
# - **half-open:** `can_execute()` lets **exactly one** trial through and refuses everyone else
#   until that trial reports back. `record_success()` closes the breaker (and resets the count);
#   `record_failure()` opens it again, with a fresh cooldown starting now.
# - **`health()`** returns `{"state": ..., "failures": ..., "retry_in": ...}` for a dashboard or
#   a health endpoint: the state, the failures in a row, and the seconds until an open breaker
#   lets a trial through (`0` unless open).
#
# Fix the draft's bug: remember that the trial was handed out.

# %% tags=["task:5"]
class CircuitBreaker:
    def __init__(self, failure_threshold, reset_timeout, clock):
        ### BEGIN SOLUTION: store the settings; start closed with no failures
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.trial_in_flight = False
        self._lock = threading.Lock()
        ### END SOLUTION

    def can_execute(self):
        ### BEGIN SOLUTION: closed -> True; open -> False until reset_timeout; half-open -> one trial
        with self._lock:
            if self.state == "open":
                if self.clock.now() - self.opened_at < self.reset_timeout:
                    return False
                self.state = "half_open"
                self.trial_in_flight = False
            if self.state == "half_open":
                if self.trial_in_flight:
                    return False
                self.trial_in_flight = True
            return True
        ### END SOLUTION

    def record_success(self):
        ### BEGIN SOLUTION: reset the failure count; a half-open trial closes the breaker
        with self._lock:
            self.failures = 0
            self.state = "closed"
            self.trial_in_flight = False
        ### END SOLUTION

    def record_failure(self):
        ### BEGIN SOLUTION: count the failure; open at the threshold or when a trial fails
        with self._lock:
            self.failures += 1
            if self.state == "half_open" or self.failures >= self.failure_threshold:
                self.state = "open"
                self.opened_at = self.clock.now()
                self.trial_in_flight = False
        ### END SOLUTION

    def health(self):
        ### BEGIN SOLUTION: a dict of state, failures and retry_in (retry_in: 0 unless open)
        with self._lock:
            retry_in = 0.0
            if self.state == "open":
                retry_in = max(0.0, self.opened_at + self.reset_timeout - self.clock.now())
            return {"state": self.state, "failures": self.failures, "retry_in": retry_in}
        ### END SOLUTION

# %% [markdown]
# Try yours on the same 8 threads. Threads really do call a shared breaker at the same moment:
# guard its state with a `threading.Lock` (already imported). The check runs threads through
# your breaker and switches between them at every line, so an unguarded half-open is caught.

# %%
from llm_patterns.course.grading import Stopped, under_guard

try:
    clock = VirtualClock()
    # under_guard: a loop or a real time.sleep in your breaker stops with a message, not a hang
    n = under_guard(lambda: admitted_at_once(CircuitBreaker(3, 30, clock=clock), clock),
                    what="8 threads asking your breaker")
    if not isinstance(n, Stopped):
        print("your breaker in half-open admitted", n, "of 8 callers")
except NotImplementedError:
    print("implement CircuitBreaker above first")

# %% tags=["check", "task:5"]
from llm_patterns.course.grading import check_task5

check_task5(CircuitBreaker)

# %% [markdown]
# ## Watch your breaker at work
#
# `watch(obj)` makes your own class report what it does, without changing how it behaves: it
# wraps `can_execute`, `record_success` and `record_failure` on your breaker so every call also
# sends an event. A `BreakerLight` listens to those events and shows the state, the failures in
# a row and the countdown to half-open. Below, a call every 2 seconds goes through your breaker
# (failure threshold 3, cooldown 30 s, on a virtual clock); the provider dies after the second.

# %%
from llm_patterns.course.widgets import BreakerLight, watch


def call_through(breaker, provider_up):
    """One call guarded by `breaker`: "refused" without calling, else "ok" or "failed"."""
    if not breaker.can_execute():
        return "refused"
    if provider_up:
        breaker.record_success()
        return "ok"
    breaker.record_failure()
    return "failed"


clock = VirtualClock()
my_breaker = None
try:
    my_breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0, clock=clock)
    light = BreakerLight(watch(my_breaker, name="your CircuitBreaker"))
    for i in range(8):
        provider_up = i < 2
        outcome = call_through(my_breaker, provider_up)
        print(f"t={clock.now():3.0f} s  provider {'up  ' if provider_up else 'down'}  "
              f"call {outcome:<8} breaker {my_breaker.state}")
        clock.sleep(2)
except NotImplementedError:
    my_breaker = None
    print("implement CircuitBreaker above first, then re-run this cell")
else:
    light.flush()
    display(light)

# %% [markdown]
# Three failures in a row opened it, and the calls after that were refused without touching the
# provider. Now the cooldown passes and the provider is back. The light above follows too: it
# is the same widget.
#
# *To see the light change in real time, replace `VirtualClock()` with `ScaledClock(10)` (ten
# times faster than real time; `from llm_patterns import ScaledClock`) and run the two cells
# again: the countdown then ticks down.*

# %%
if my_breaker is None:
    print("implement CircuitBreaker above first, then re-run the cell above and this one")
else:
    clock.sleep(30)  # the cooldown passes
    print(f"t={clock.now():3.0f} s  trial call admitted: {my_breaker.can_execute()}, "
          f"breaker {my_breaker.state}")
    print(f"t={clock.now():3.0f} s  a second caller admitted: {my_breaker.can_execute()} "
          f"(the trial has not answered yet)")
    my_breaker.record_success()  # the provider answered the trial
    print(f"t={clock.now():3.0f} s  the trial succeeded, breaker {my_breaker.state}")
    light.flush()
    display(light)

# %% [markdown]
# ## 4 · Your breaker in front of the dead provider
#
# The same pipeline, with your breaker inside the retries: an open breaker raises
# `CircuitOpenError` at once, and that error is not retried (it says "don't call now").

# %%
def guarded(breaker, provider):
    """Wrap provider.acomplete with a breaker that has the can_execute/record_* interface."""
    async def call(prompt):
        if not breaker.can_execute():
            raise CircuitOpenError("circuit open: not calling the provider", provider="openai")
        try:
            response = await provider.acomplete(prompt, max_tokens=50)
        except LLMError:
            breaker.record_failure()
            raise
        breaker.record_success()
        return response
    return call


try:
    clock = VirtualClock()
    server, provider = make_provider(clock)
    retry = RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=1.0, max_delay=30.0),
                        clock=clock, rng=random.Random(7))
    call = guarded(CircuitBreaker(failure_threshold=5, reset_timeout=30.0, clock=clock), provider)
    failed = await run_pipeline(clock, lambda prompt: retry.call_async(call, prompt))
    _, yours = calls_per_bin(server)
    print(f"with your breaker: {failed} of 300 requests failed; the provider received "
          f"{sum(1 for r in server.stats['log'] if OUTAGE[0] <= r['time'] < OUTAGE[1])} calls "
          f"during the outage")
except NotImplementedError:
    print("implement CircuitBreaker above first")

# %% [markdown]
# About as many requests fail as before (the provider is down: a breaker cannot conjure answers;
# a fallback chain can, see notebook 06), but they fail **at once** instead of after 15 s of
# backoff, and the provider is left alone to recover: it receives a handful of trial calls
# instead of hundreds of doomed retries.
#
# ## 5 · The library version at work
#
# `llm_patterns.CircuitBreaker` adds what production needs on top of your version:
#
# - only **outages** count (5xx, timeouts, connection errors). A 429 or a bad request says
#   nothing about whether the provider is down; it neither counts nor resets;
# - `half_open_max_calls` trial permits handed out under a lock, however many threads or
#   coroutines ask, with a lease so a trial that hangs cannot wedge the breaker;
# - `call(fn)` / `call_async(fn)` / `@breaker` decorator, `CircuitOpenError` with `retry_after`;
# - `health()` for dashboards and `on_state_change(callback)` for alerts.
#
# The 8 threads again:

# %%
clock = VirtualClock()
print("library breaker in half-open admitted",
      admitted_at_once(LibraryBreaker("openai", failure_threshold=3, reset_timeout=30, clock=clock),
                       clock),
      "of 8 callers")

# %% [markdown]
# And the pipeline with the library breaker inside the retries. `on_state_change` records every
# transition, which we plot as a timeline.

# %%
clock = VirtualClock()
server, provider = make_provider(clock)
breaker = LibraryBreaker("openai", failure_threshold=5, reset_timeout=30.0, clock=clock)
retry = RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=1.0, max_delay=30.0),
                    clock=clock, rng=random.Random(7))
transitions = [(0.0, "closed")]
breaker.on_state_change(lambda b, old, new: transitions.append((round(clock.now(), 1), new.value)))

async def with_breaker(prompt):
    return await retry.call_async(breaker.call_async, provider.acomplete, prompt, max_tokens=50)

logging.getLogger("llm_patterns.circuit_breaker").setLevel(logging.ERROR)
failed = await run_pipeline(clock, with_breaker)
logging.getLogger("llm_patterns.circuit_breaker").setLevel(logging.NOTSET)
_, with_lib = calls_per_bin(server)
in_outage = sum(1 for r in server.stats["log"] if OUTAGE[0] <= r["time"] < OUTAGE[1])
print(f"{failed} of 300 requests failed; calls into the outage: {in_outage}")
print("transitions:", transitions)

# %%
level = {"closed": 0, "half_open": 1, "open": 2}
xs = [t for t, _ in transitions] + [600.0]
ys = [level[s] for _, s in transitions] + [level[transitions[-1][1]]]
fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv",
                           line_color="#1f77b4", name="breaker state"))
fig.add_vrect(x0=OUTAGE[0], x1=OUTAGE[1], fillcolor="grey", opacity=0.15, line_width=0,
              annotation_text="outage", annotation_position="top left")
fig.update_yaxes(tickvals=[0, 1, 2], ticktext=["closed", "half-open", "open"], range=[-0.3, 2.4])
fig.update_layout(title="Circuit breaker state during the outage", xaxis_title="seconds",
                  template="plotly_white", height=300)
fig.show()

fig = go.Figure([
    go.Bar(x=x, y=retries_only, name="retries only", marker_color="#d62728"),
    go.Bar(x=x, y=with_lib, name="retries + circuit breaker", marker_color="#1f77b4"),
])
fig.add_vrect(x0=OUTAGE[0], x1=OUTAGE[1], fillcolor="grey", opacity=0.15, line_width=0)
fig.update_layout(barmode="overlay", title="Calls into the provider per 10 s",
                  xaxis_title="seconds", yaxis_title="calls received", template="plotly_white",
                  height=350)
fig.update_traces(opacity=0.75)
fig.show()

# %% [markdown]
# Read the timeline: five failures in a row open the breaker at the start of the outage; about
# every 30 seconds (at the next request after the cooldown) it half-opens, sends one trial,
# which fails, and opens again; the first trial after minute 6 succeeds and closes it. The provider sees one call per cooldown instead of a flood.
#
# `health()` is what you would expose on a health endpoint or a dashboard:

# %%
health = breaker.health()
print({k: health[k] for k in ("name", "state", "consecutive_failures", "retry_in", "calls",
                              "failures", "rejections", "opened_count")})

# %% [markdown]
# ## Recap
#
# - Retries handle blips; a breaker handles outages. Put the breaker **inside** the retries, so
#   an open breaker ends the retrying at once.
# - Half-open must admit **one** trial (or a few, counted), not everybody: that is the bug in
#   the first draft and in several real libraries.
# - Measure time with the injected clock; count only failures that mean "down".
#
# Next: notebook 06 puts all five patterns together.
