# %% [markdown]
# # 00 · Tour: a fake LLM provider that fails on purpose
#
# **Goal:** meet the tools of this course: a mock LLM API that rate-limits, breaks and times out
# on demand, a clock that never really waits, and the *check cells* that grade your work.
#
# **What you will build:** nothing yet. You run cells and read. The next notebooks each ask
# you to build one resilience pattern (rate limiting, backoff, cost tracking, fallback,
# circuit breaker).
#
# **Time:** about 10 minutes.
#
# Run the cells from top to bottom (Shift+Enter). Nothing here calls a real API or costs money.

# %%
import logging
import sys

import plotly.graph_objects as go
import plotly.io as pio

import llm_patterns as lp

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(
    stream=sys.stdout, format="%(name)s %(levelname)s %(message)s", level=logging.WARNING,
    force=True,
)

# %% [markdown]
# ## 1. A clock that never waits
#
# Resilience code is all about time: wait 2 s before a retry, refill a bucket at 1 token per
# second, stay closed for 60 s after an outage. Testing that with real time is slow and flaky.
# So everything in this course takes a `clock`. In production it is a `SystemClock` (real
# time); here it is a `VirtualClock`: `clock.sleep(s)` returns at once and moves the clock's
# time forward by `s`.

# %%
clock = lp.VirtualClock()
print("now:", clock.now())
clock.sleep(3600)  # an hour...
print("after sleeping an hour:", clock.now(), "(and no real time passed)")

# %% [markdown]
# The same seed and the same virtual clock give exactly the same run every time, which is
# why the plots in these notebooks look the same on your machine as on ours.
#
# ## 2. The mock provider
#
# `MockLLMServer` speaks the OpenAI chat API (and Anthropic's, with `api="anthropic"`) inside
# this Python process, through `httpx.MockTransport`: no network, no key, no bill. It enforces
# real limits, here 3 requests per minute (RPM) and 10,000 tokens per minute (TPM).
#
# `OpenAIProvider` is the library's small client for that API. It turns every HTTP failure
# into one of a handful of error classes, so the rest of your code can decide what to do.

# %%
server = lp.MockLLMServer(rpm=3, tpm=10_000, seed=0, clock=clock)
provider = lp.OpenAIProvider(
    "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
    client=server.client(), clock=clock,
)

answer = provider.complete("Explain rate limits in one sentence.", max_tokens=30)
print("text:    ", answer.text)
print("model:   ", answer.model)
print("usage:   ", answer.usage)
print("latency: ", round(answer.latency_s, 3), "s (virtual)")

# %% [markdown]
# ### A 429: "slow down"
#
# Let's talk to the server in raw HTTP, the way the official SDKs do, and send requests until
# it refuses. Look at the headers of the refusal: the server says how long to wait
# (`retry-after`, `retry-after-ms`) and how much of each limit is left (`x-ratelimit-*`).
# Good clients read them; the patterns in this course use them.

# %%
request = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hello!"}],
    "max_tokens": 50,
}
with server.client(headers={"Authorization": "Bearer test-key"}) as http:
    for i in range(1, 4):
        response = http.post("/chat/completions", json=request)
        print(f"request {i}: HTTP {response.status_code}")

print()
for name in sorted(response.headers):
    if name.startswith(("retry-after", "x-ratelimit")):
        print(f"{name}: {response.headers[name]}")
print()
print(response.json()["error"]["message"])

# %% [markdown]
# The first request went through the provider above, so only two more fitted in the minute.
#
# ### An outage
#
# `server.outage(start, end)` makes every request arriving in that window of clock time
# answer `503 Service Unavailable`. Here is a pipeline that asks a question every 5 seconds
# for two minutes, through a 40-second outage.

# %%
clock = lp.VirtualClock()
server = lp.MockLLMServer(seed=0, clock=clock)  # no rate limits this time
server.outage(start=30, end=70)
provider = lp.OpenAIProvider(
    "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
    client=server.client(), clock=clock,
)

times, outcomes = [], []
for step in range(24):
    clock.sleep(5.0 - clock.now() % 5.0)  # wait for the next 5-second tick
    t = round(clock.now())
    try:
        provider.complete("Summarize today's orders.", max_tokens=20)
        outcomes.append("ok")
    except lp.LLMError as err:
        outcomes.append(type(err).__name__)
    times.append(t)

failed = [t for t, o in zip(times, outcomes) if o != "ok"]
print(f"{len(failed)} of {len(times)} calls failed, from t={failed[0]} s to t={failed[-1]} s:",
      sorted(set(outcomes) - {"ok"}))

fig = go.Figure()
for outcome, color in (("ok", "#2ca02c"), ("ServerError", "#d62728")):
    xs = [t for t, o in zip(times, outcomes) if o == outcome]
    fig.add_trace(go.Scatter(x=xs, y=[outcome] * len(xs), mode="markers", name=outcome,
                             marker={"color": color, "size": 10}))
fig.add_vrect(x0=30, x1=70, fillcolor="#d62728", opacity=0.1, line_width=0,
              annotation_text="outage", annotation_position="top left")
fig.update_layout(title="A call every 5 s through a 40 s outage", xaxis_title="time (s)",
                  height=280, showlegend=False)
fig.show()

# %% [markdown]
# ### Every kind of failure, on demand
#
# `server.fail_next(kind)` makes the next request fail in a specific way. The provider maps
# each one onto an error class, and `lp.is_retryable(error)` says whether trying again could
# help. You will write your own `is_retryable` in notebook 02, so look at this table closely:
# a 429 for *rate limit* is worth a retry, a 429 for *quota exhausted* (no credit left) never is.

# %%
clock = lp.VirtualClock()
server = lp.MockLLMServer(seed=0, clock=clock)
provider = lp.OpenAIProvider(
    "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
    client=server.client(), clock=clock,
)

print(f"{'fail_next kind':<26}{'error class':<24}{'HTTP':<6}{'retry?':<8}retry_after")
for kind in ("rate_limit", "insufficient_quota", "server_error", "overloaded", "timeout",
             "context_length_exceeded", "malformed", "auth"):
    server.fail_next(kind)
    try:
        provider.complete("Hi", max_tokens=10)
    except lp.LLMError as err:
        status = err.status_code if err.status_code is not None else "-"
        retry = "yes" if lp.is_retryable(err) else "no"
        print(f"{kind:<26}{type(err).__name__:<24}{status!s:<6}{retry:<8}{err.retry_after}")

# %% [markdown]
# Notice:
# - `QuotaExceededError` is a *subclass* of `RateLimitError` (both are HTTP 429), yet it must
#   not be retried. Order matters when you test error types.
# - `ContextWindowExceeded` (your prompt is too long for this model) is not retryable on the
#   same model, but a model with a larger window may answer it.
# - `MalformedResponse`: a 200 whose body is not a completion (here an HTML page from a proxy).
#
# ## 3. How check cells work
#
# Each task notebook ends its task with a **check cell**, a single call such as
# `check_task1(TokenBucket, RateLimiter)`. The check runs your code against a series of
# criteria on a virtual clock and prints one line per criterion: ✓, or ✗ with a hint. If
# anything fails it raises an error, so the cell turns red. Your grade is the number of check
# cells that pass.
#
# Here is the check of task 1 run on the library's own implementation (it passes). Task 1's
# limiter holds a whole minute in its buckets; the library's default holds a one-second slice
# (what providers that enforce per-minute limits in shorter slices accept), so the check runs
# it with `burst_seconds=60`:

# %%
from functools import partial

from llm_patterns.course.grading import CheckFailed, check_task1

check_task1(lp.TokenBucket, partial(lp.RateLimiter, burst_seconds=60))


# %% [markdown]
# And here it is on a freshly started notebook, where every method still says
# `raise NotImplementedError`. We catch the failure so this cell stays green; in the task
# notebooks you will see it as a red cell until your code is right.

# %%
class TokenBucket:
    def __init__(self, capacity, refill_rate, clock):
        raise NotImplementedError("implement TokenBucket")


class RateLimiter:
    def __init__(self, rpm, tpm, clock):
        raise NotImplementedError("implement RateLimiter")


try:
    check_task1(TokenBucket, RateLimiter)
except CheckFailed as failure:
    print()
    print(f"the cell would fail with: {failure.passed} of {failure.total} criteria passed")

# %% [markdown]
# Tips for the tasks:
# - Use the `clock` you are given (`clock.now()`, `clock.sleep(s)`), never `time.time()` or
#   `time.sleep()`: the checks run in virtual time and will tell you if you forget.
# - Edit only the cells marked `# YOUR CODE HERE`. The grader puts the original check cells
#   back before grading, so editing a check cannot help you.
# - Each check runs quickly; if one says "did not finish", look for a loop that never calls
#   `clock.sleep`.
#
# Next: **01 · Rate limiting**.
