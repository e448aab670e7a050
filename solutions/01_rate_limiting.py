# %% [markdown]
# # 01 · Rate limiting: stay under the provider's limits
#
# **Goal:** send as many requests as the provider allows, and not one more, so it never has
# to answer `429 Too Many Requests`.
#
# **What you will build:** a `TokenBucket` and a `RateLimiter` that holds two of them, one for
# requests per minute (RPM) and one for tokens per minute (TPM).
#
# **Time:** about 20 minutes.

# %%
import logging
import sys
import threading

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

import llm_patterns as lp

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(
    stream=sys.stdout, format="%(name)s %(levelname)s %(message)s", level=logging.WARNING,
    force=True,
)

# %% [markdown]
# ## Why: a 429 storm
#
# Every LLM provider limits how much you may send per minute, counted two ways: **requests**
# (RPM) and **tokens** (TPM, prompt + `max_tokens`). Our pipeline has 200 documents to
# summarize and fires one request every 0.1 s, ten per second. The provider (our mock)
# allows 60 requests and 20,000 tokens per minute. Watch what happens.

# %%
DOCUMENT = "Order 1042 was delayed at the warehouse; the customer asked for a refund. " * 5
MAX_TOKENS = 100
COST = lp.estimate_tokens(DOCUMENT) + MAX_TOKENS  # what one request counts against the TPM


def run_pipeline(clock, before_send=None, n=200, every=0.1):
    """Send n requests, one every `every` seconds (or later if before_send makes us wait).

    Returns a list of (time sent, "ok" | "429").
    """
    server = lp.MockLLMServer(rpm=60, tpm=20_000, seed=1, clock=clock)
    provider = lp.OpenAIProvider(
        "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
        client=server.client(), clock=clock,
    )
    sent = []
    for i in range(n):
        if clock.now() < i * every:
            clock.sleep(i * every - clock.now())
        if before_send is not None:
            before_send(COST)
        t = clock.now()
        try:
            provider.complete(DOCUMENT, max_tokens=MAX_TOKENS)
            sent.append((t, "ok"))
        except lp.RateLimitError:
            sent.append((t, "429"))
    return sent


def outcome_chart(sent, title):
    """Stacked bars: answered vs refused requests per 5-second window."""
    fig = go.Figure()
    last = int(max(t for t, _ in sent) // 5) + 1
    for outcome, color in (("ok", "#2ca02c"), ("429", "#d62728")):
        counts = [0] * last
        for t, o in sent:
            if o == outcome:
                counts[int(t // 5)] += 1
        fig.add_trace(go.Bar(x=[5 * k for k in range(last)], y=counts, name=outcome,
                             marker_color=color, offset=0, width=5))
    fig.update_layout(barmode="stack", title=title, xaxis_title="time (s)",
                      yaxis_title="requests per 5 s", height=320)
    return fig


sent = run_pipeline(lp.VirtualClock())
refused = sum(1 for _, o in sent if o == "429")
print(f"{len(sent)} requests in {sent[-1][0]:.0f} s: {len(sent) - refused} answered, "
      f"{refused} refused with 429")
outcome_chart(sent, "No rate limiter: most requests bounce").show()

# %% [markdown]
# The first minute's allowance goes in a burst, then the provider lets through about one
# request per second and refuses the rest. Every 429 is wasted work; real providers also
# count refused requests against you, and retrying them at once makes the storm worse.
# The fix is to **wait on our side** until a request fits: a *token bucket*.
#
# ## The token bucket
#
# A bucket holds up to `capacity` tokens and refills continuously at `refill_rate` tokens per
# second. A request takes `n` tokens if they are there, otherwise it waits. A full bucket
# allows a burst of `capacity`; over time, the average rate is `refill_rate`.
#
# The course's starter code offers this bucket. It has **two bugs**. Can you spot them before
# reading on?
#
# ```python
# import time
#
# class TokenBucket:
#     def __init__(self, capacity, refill_rate):
#         self.capacity = capacity
#         self.refill_rate = refill_rate      # tokens per second
#         self.tokens = capacity
#         self.last_refill = time.time()
#
#     def _refill(self):
#         now = time.time()
#         elapsed = now - self.last_refill
#         self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate)
#         self.last_refill = now
#
#     def consume(self, n=1):
#         self._refill()
#         if self.tokens >= n:
#             self.tokens -= n
#             return True
#         return False
# ```
#
# <details><summary>The two bugs (click)</summary>
#
# 1. **`time.time()`** is the wall clock. It jumps when the system clock is corrected (NTP, a
#    VM resumed, a manual change): a step back of an hour makes `elapsed` hugely negative and
#    the bucket stalls for an hour. Measure intervals with a monotonic clock, and take it as
#    a parameter (`clock.now()`) so tests and these notebooks can run in virtual time.
# 2. **No lock.** `consume` reads `self.tokens`, compares, then writes. Two threads can both
#    see `tokens >= 1` and both take the last token: the provider gets more than the limit.
#    Do the refill, the check and the update under one `threading.Lock`.
# </details>
#
# ## Your task
#
# **`TokenBucket(capacity, refill_rate, clock)`**
# - starts full (`tokens == capacity`);
# - `consume(n=1) -> bool`: take `n` tokens and return True if they are there, else take
#   nothing and return False;
# - `wait_time(n=1) -> float`: seconds until `n` tokens will be there (0.0 if now), taking
#   nothing;
# - `n > capacity` raises `ValueError` (it could never succeed: a caller would wait forever);
# - reads time only from `clock.now()`, never holds more than `capacity`, and is thread-safe.
#
# **`RateLimiter(rpm, tpm, clock, max_wait=None)`**
# - one bucket for requests (capacity `rpm`, refilled at `rpm / 60` per second) and one for
#   tokens (capacity `tpm`, refilled at `tpm / 60`);
# - `acquire(tokens) -> float`: wait with `clock.sleep(...)` until **both** buckets can pay
#   (1 request and `tokens` tokens), then pay both at once, and return the seconds waited;
# - **backpressure:** when the wait would be longer than `max_wait` seconds, raise
#   `RateLimitTimeout` at once (before sleeping), taking nothing: the caller gets its time back
#   and can give the work back to its queue. `max_wait=None` waits as long as it takes;
# - **status logging:** each time `acquire` has to wait, log it (`log.info(...)`, the logger
#   defined for you) with the seconds it waits, so an operator can see the limit biting.
#
# The last point is subtle: if you take the request first and then wait for the tokens, the
# request slot is spent while you wait. Check both, then take from both or from neither.
#
# One more trap: floats. After a refill the bucket may hold `0.9999999999999998` tokens, so
# `wait_time(1)` is a crumb like `2e-16` s, and at `t = 50` sleeping `2e-16` s does not move the
# clock at all: your loop spins forever. Make every wait move time (e.g. sleep at least 1e-6 s).

# %% tags=["task:1"]
from llm_patterns import RateLimitTimeout

log = logging.getLogger("task1")


class TokenBucket:
    def __init__(self, capacity, refill_rate, clock):
        ### BEGIN SOLUTION: store the settings, start full, remember the last refill time, make a lock
        self.capacity = capacity
        self.refill_rate = refill_rate
        self.clock = clock
        self.tokens = capacity
        self.last_refill = clock.now()
        self.lock = threading.Lock()
        ### END SOLUTION

    def _refill(self):
        """Add the tokens earned since the last refill (call it with the lock held)."""
        ### BEGIN SOLUTION: add elapsed * refill_rate, never above capacity
        now = self.clock.now()
        elapsed = now - self.last_refill
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate)
        self.last_refill = now
        ### END SOLUTION

    def consume(self, n=1):
        ### BEGIN SOLUTION: take n tokens if they are there (True), else take nothing (False)
        if n > self.capacity:
            raise ValueError(f"n={n} is more than the capacity {self.capacity}: it can never fit")
        with self.lock:
            self._refill()
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False
        ### END SOLUTION

    def wait_time(self, n=1):
        ### BEGIN SOLUTION: seconds until n tokens are there (0.0 if now)
        if n > self.capacity:
            raise ValueError(f"n={n} is more than the capacity {self.capacity}: it can never fit")
        with self.lock:
            self._refill()
            return max(0.0, (n - self.tokens) / self.refill_rate)
        ### END SOLUTION


class RateLimiter:
    def __init__(self, rpm, tpm, clock, max_wait=None):
        ### BEGIN SOLUTION: one TokenBucket for requests, one for tokens, each refilled per minute
        self.clock = clock
        self.max_wait = max_wait
        self.requests = TokenBucket(rpm, rpm / 60, clock)
        self.tokens = TokenBucket(tpm, tpm / 60, clock)
        self.lock = threading.Lock()
        ### END SOLUTION

    def acquire(self, tokens=0):
        ### BEGIN SOLUTION: wait (clock.sleep) until both buckets can pay, pay both, return seconds waited
        start = self.clock.now()
        while True:
            with self.lock:
                wait = max(self.requests.wait_time(1), self.tokens.wait_time(tokens))
                if wait == 0:
                    self.requests.consume(1)
                    self.tokens.consume(tokens)
                    return self.clock.now() - start
            waited = self.clock.now() - start
            if self.max_wait is not None and waited + wait > self.max_wait:
                raise RateLimitTimeout(f"acquire would wait {waited + wait:.1f} s in all, "
                                       f"more than max_wait={self.max_wait} s")
            log.info("rate limited: waiting %.2f s", wait)
            self.clock.sleep(max(wait, 1e-6))  # a float-rounding crumb must still move time
        ### END SOLUTION


# %% tags=["check", "task:1"]
from llm_patterns.course.grading import check_task1

check_task1(TokenBucket, RateLimiter)

# %% [markdown]
# ## Watch your limiter at work
#
# `watch(obj)` makes your own class report what it does, without changing how it behaves: it
# wraps `acquire` on your limiter so every call also sends an event. A `BucketGauge` listens to
# those events and draws your two buckets. Below, a burst of 14 requests of 100–300 tokens hits
# your limiter at 10 RPM and 2,000 TPM, on a virtual clock: the first nine leave at once, then
# both buckets are nearly empty and every request waits for a refill.

# %%
import random

from llm_patterns.course.grading import under_guard
from llm_patterns.course.widgets import BucketGauge, watch


def level(value, digits=0):
    """A bucket level read by watch(); "?" if it could not find that bucket on your limiter."""
    return "?" if value is None else f"{value:,.{digits}f}"


def burst():
    """14 requests through your limiter (run under_guard: a real-time sleep or an endless
    loop in your code stops the demo with a message instead of freezing the notebook)."""
    for i in range(1, 15):
        tokens = rng.randint(100, 300)
        waited = my_limiter.acquire(tokens)
        s = watched.status()
        print(f"#{i:<2} sent at t={clock.now():4.1f} s  {tokens} tokens  waited {waited:3.1f} s  "
              f"left: {level(s['requests_available'], 1)} requests, "
              f"{level(s['tokens_available'])} tokens")
    return True


clock = lp.VirtualClock()
rng = random.Random(1)
my_limiter = None
try:
    my_limiter = RateLimiter(rpm=10, tpm=2_000, clock=clock)
    watched = watch(my_limiter, name="your RateLimiter")
    gauge = BucketGauge(watched)
    if not under_guard(burst, what="the burst through your limiter"):
        my_limiter = None
except NotImplementedError:
    my_limiter = None
    print("implement TokenBucket and RateLimiter above first, then re-run this cell")
else:
    gauge.flush()
    display(gauge)

# %% [markdown]
# Now a quiet minute passes and one more request comes. Both buckets refill while nobody
# asks, so it leaves at once. The gauge above follows too: it is the same widget.
#
# *To see the gauge move in real time, replace `lp.VirtualClock()` with `lp.ScaledClock(10)`
# (ten times faster than real time) and run the two cells again: the burst then takes a few
# seconds.*

# %%
if my_limiter is None:
    print("implement TokenBucket and RateLimiter above first, then re-run the cell above and this one")
else:
    clock.sleep(60)  # a quiet minute
    waited = under_guard(lambda: my_limiter.acquire(200), what="your limiter's acquire")
    s = watched.status()
    print(f"after a quiet minute, at t={clock.now():.1f} s: waited {waited:.1f} s; left: "
          f"{level(s['requests_available'], 1)} requests, {level(s['tokens_available'])} tokens")
    gauge.flush()
    display(gauge)

# %% [markdown]
# ## Your limiter against the storm
#
# The same 200 requests, but each one first calls `limiter.acquire(...)` with the tokens it
# will use. Requests now leave when the provider can take them.

# %%
class StrictClock(lp.VirtualClock):
    """A VirtualClock that refuses a sleep too short to move it (that loop would never end)."""

    def sleep(self, seconds):
        if seconds > 0 and self.now() + seconds == self.now():
            raise RuntimeError(f"clock.sleep({seconds:.3g}) cannot move the clock at "
                               f"t={self.now():g}: your wait loop would spin forever")
        super().sleep(seconds)


sent = None
try:
    clock = StrictClock()
    limiter = RateLimiter(rpm=60, tpm=20_000, clock=clock)
    sent = under_guard(lambda: run_pipeline(clock, before_send=limiter.acquire),
                       what="the pipeline through your limiter", budget=10.0)
except NotImplementedError:
    print("implement TokenBucket and RateLimiter above first")
if isinstance(sent, list):  # not a stub, not stopped
    refused = sum(1 for _, o in sent if o == "429")
    print(f"{len(sent)} requests in {sent[-1][0]:.0f} s: {len(sent) - refused} answered, "
          f"{refused} refused with 429")
    outcome_chart(sent, "With your rate limiter").show()

# %% [markdown]
# Zero 429s: the pipeline now takes longer, but it is exactly as fast as the provider allows,
# and nothing is wasted.
#
# ## The library's `RateLimiter` at work
#
# `lp.RateLimiter` is the production version of what you just built. On top of your design it
# serves waiters first come, first served (a big request is never starved by small ones),
# works from threads and from `asyncio` (`await limiter.acquire_async(tokens)`), and listens
# to the provider: `penalize(seconds)` after a 429, `settle(estimated, actual)` once the real
# usage is known, `update_from_headers(headers)` from the `x-ratelimit-remaining-*` headers.
#
# It also reports events, so we can plot how full its buckets are over time.

# %%
clock = lp.VirtualClock()
# burst_seconds=60: the mock enforces per-minute buckets (the default is one-second slices)
library_limiter = lp.RateLimiter(rpm=60, tpm=20_000, clock=clock, name="mock", burst_seconds=60)
levels = []
library_limiter.subscribe(
    lambda e: levels.append((e.time, e.data["requests_available"], e.data["tokens_available"]))
    if "requests_available" in e.data else None
)
sent = run_pipeline(clock, before_send=library_limiter.acquire)
refused = sum(1 for _, o in sent if o == "429")
print(f"{len(sent)} requests in {sent[-1][0]:.0f} s: {len(sent) - refused} answered, "
      f"{refused} refused with 429")

fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                    subplot_titles=("requests in the bucket (RPM = 60)",
                                    "tokens in the bucket (TPM = 20,000)"))
times = [round(t, 3) for t, _, _ in levels]
fig.add_trace(go.Scatter(x=times, y=[round(r, 3) for _, r, _ in levels], mode="lines",
                         line={"shape": "hv"}, name="requests"), row=1, col=1)
fig.add_trace(go.Scatter(x=times, y=[round(k, 1) for _, _, k in levels], mode="lines",
                         line={"shape": "hv", "color": "#ff7f0e"}, name="tokens"), row=2, col=1)
fig.update_layout(title="The library's limiter: a burst, then one request per second",
                  xaxis2_title="time (s)", height=450, showlegend=False)
fig.show()

# %% [markdown]
# The request bucket empties in the first burst and then hovers near zero: every request
# waits just long enough for the next token. The token bucket never runs dry, because here
# RPM is the tighter limit (200 tokens × 60 requests is well under 20,000 a minute).
#
# ### Backpressure: refusing to wait too long
#
# A worker that would have to wait minutes is better off giving the work back. With
# `max_wait`, `acquire` raises `RateLimitTimeout` at once, taking nothing, and tells the
# caller when to come back.

# %%
clock = lp.VirtualClock()
limiter = lp.RateLimiter(rpm=2, clock=clock, max_wait=10, burst_seconds=60)
limiter.acquire()
limiter.acquire()
try:
    limiter.acquire()
except lp.RateLimitTimeout as err:
    print(f"{type(err).__name__}: come back in {err.retry_after:.0f} s")

# %% [markdown]
# **Takeaways**
# - Limit on *your* side, on both requests and tokens, before the provider has to refuse you.
# - Pay all limits at once or none; wait with the injected clock; guard shared state with a lock.
# - Next: what to do when a request fails anyway. **02 · Backoff and retries**.
