# %% [markdown]
# # 02 · Backoff and retries: try again, but not all at once
#
# **Goal:** retry the failures that can succeed next time (429, 5xx, timeouts), wait longer
# after each failure, spread the retries of many clients apart, and never retry the failures
# that will fail again.
#
# **What you will build:** `calculate_backoff(attempt, ...)`, exponential backoff with jitter,
# and `is_retryable(error)`.
#
# **Time:** about 15 minutes.

# %%
import logging
import random
import sys

import plotly.graph_objects as go
import plotly.io as pio

import llm_patterns as lp
from llm_patterns import (
    AuthenticationError,
    BudgetExceeded,
    ConnectionFailed,
    ContextWindowExceeded,
    InvalidRequestError,
    MalformedResponse,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(
    stream=sys.stdout, format="%(name)s %(levelname)s %(message)s", level=logging.WARNING,
    force=True,
)

# %% [markdown]
# ## Why: the thundering herd
#
# A provider has a two-second hiccup. 1,000 clients (Airflow tasks, web requests, ...) get a
# `503` at the same moment, and all of them retry with the classic exponential backoff:
# wait 1 s, then 2 s, 4 s, 8 s. Here is when their retries reach the provider, if each retry
# is also refused because the provider is swamped.

# %%
CLIENTS, RETRIES, BIN = 1000, 4, 0.1


def retry_times(delay_for, clients=CLIENTS, retries=RETRIES):
    """When each client's retries arrive: the sum of its delays so far (attempts 0, 1, ...)."""
    times = []
    for client in range(clients):
        t = 0.0
        for attempt in range(retries):
            t += delay_for(attempt)
            times.append(t)
    return times


def load(times, horizon=20.0):
    """Retries per BIN-second window, as (window starts, counts)."""
    counts = [0] * round(horizon / BIN)
    for t in times:
        if t < horizon:
            counts[int(t / BIN)] += 1
    return [round(k * BIN, 2) for k in range(len(counts))], counts


def busiest(times, window=0.01):
    """The most retries that land within any ``window`` seconds (a provider feels the peak)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def herd_chart(herds, title):
    fig = go.Figure()
    for name, times in herds.items():
        x, y = load(times)
        fig.add_trace(go.Bar(x=x, y=y, name=name, offset=0, width=BIN, opacity=0.75))
        print(f"{name:<28} busiest 10 ms: {busiest(times):>4} retries")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="time since the failure (s)",
                      yaxis_title="retries per 100 ms", height=360)
    return fig


rng = random.Random(42)
naive = lp.BackoffPolicy(base_delay=1.0, jitter="none")
full = lp.BackoffPolicy(base_delay=1.0, jitter="full")
herds = {
    "no jitter (1, 2, 4, 8 s)": retry_times(lambda attempt: naive.delay(attempt)),
    "+ up to 10% jitter": retry_times(lambda a: naive.delay(a) * (1 + rng.uniform(0, 0.1))),
    "full jitter": retry_times(lambda attempt: full.delay(attempt, rng=rng)),
}
herd_chart(herds, "1,000 clients retrying after the same failure").show()

# %% [markdown]
# Without jitter, every client comes back at exactly 1 s, 3 s, 7 s and 15 s: four spikes of
# 1,000 requests, each one enough to knock the provider over again (all 1,000 within the same
# 10 ms). A little jitter (up to 10%) smears each spike over 100 ms or more: the peak drops
# several-fold, yet each wave still lands within a fraction of a second. With **full jitter**
# (wait a random time between 0 and the exponential delay) the same retries arrive spread out
# over seconds, the peak drops again several-fold, and most of them get through. This is the AWS Architecture Blog's classic result
# ("Exponential Backoff and Jitter"), and what the OpenAI and Anthropic SDKs do.
#
# ## The hint, and its bug
#
# The course's starter code suggests:
#
# ```python
# import random
#
# def calculate_backoff(attempt, base_delay=1.0, max_delay=60.0):
#     delay = min(base_delay * 2 ** attempt, max_delay)
#     jitter = random.uniform(0, delay * 0.1)
#     return delay + jitter
# ```
#
# It caps first and jitters afterwards. Let's see what that does to the cap:

# %%
def hint_backoff(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    delay = min(base_delay * 2 ** attempt, max_delay)
    jitter = rng.uniform(0, delay * 0.1)
    return delay + jitter


rng = random.Random(0)
worst = max(hint_backoff(10, rng=rng) for _ in range(1000))
print(f"max_delay is 60 s, yet the hint waited up to {worst:.1f} s")

# %% [markdown]
# Three problems: the jitter is added **after** the cap, so `max_delay` is not a maximum (a
# caller that promised "never more than 60 s", say to stay inside a task timeout, is broken);
# 10% jitter barely spreads the herd (the orange bars above); and it draws from the global
# `random` module, so a run cannot be reproduced.
#
# ## Which errors deserve a retry?
#
# Retrying is only worth it when the next attempt can succeed. Recall the table from the tour:
#
# | retry | don't retry |
# |---|---|
# | `RateLimitError` (429), `ServerError` (500, 502, 503, 504, 529 overloaded), `ProviderTimeout`, `ConnectionFailed`, `MalformedResponse` | `QuotaExceededError` (429 *insufficient_quota*: no credit left), `AuthenticationError` (401), `InvalidRequestError` (400), `ContextWindowExceeded`, `BudgetExceeded` |
#
# Careful: `QuotaExceededError` is a subclass of `RateLimitError`, so
# `isinstance(error, RateLimitError)` is True for it too.
#
# ## Your task
#
# **`calculate_backoff(attempt, base_delay=1.0, max_delay=60.0, rng=random) -> float`**
# - attempt 0 waits about `base_delay`, then the delay doubles each attempt:
#   `base_delay * 2 ** attempt`;
# - jittered with `rng` (e.g. `rng.uniform(...)`), so the same seed gives the same delays;
# - **never** above `max_delay`, jitter included.
#
# **`is_retryable(error) -> bool`** following the table above.

# %% tags=["task:2"]
def calculate_backoff(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    ### BEGIN SOLUTION: exponential delay, capped at max_delay, with full jitter from rng
    exponential = base_delay * 2 ** min(attempt, 64)  # 2 ** 1100 would overflow a float
    return rng.uniform(0, min(max_delay, exponential))
    ### END SOLUTION


def is_retryable(error):
    ### BEGIN SOLUTION: True for transient failures, False for the ones that fail again
    if isinstance(error, (QuotaExceededError, BudgetExceeded)):
        return False  # test these first: QuotaExceededError is also a RateLimitError
    return isinstance(
        error, (RateLimitError, ServerError, ProviderTimeout, ConnectionFailed, MalformedResponse)
    )
    ### END SOLUTION


# %% tags=["check", "task:2"]
from llm_patterns.course.grading import check_task2

check_task2(calculate_backoff, is_retryable)

# %% [markdown]
# ## Your backoff against the herd

# %%
from llm_patterns.course.grading import under_guard

mine = None
try:
    rng = random.Random(42)
    mine = under_guard(lambda: retry_times(lambda attempt: calculate_backoff(attempt, rng=rng)),
                       what="your calculate_backoff for 1,000 clients")
except NotImplementedError:
    print("implement calculate_backoff above first")
if isinstance(mine, list):  # not a stub (NotImplementedError) and not stopped
    herd_chart({"no jitter (1, 2, 4, 8 s)": herds["no jitter (1, 2, 4, 8 s)"], "yours": mine},
               "Your backoff, 1,000 clients").show()


# %% [markdown]
# ## The library's `RetryPolicy` at work
#
# `lp.RetryPolicy` wraps a call with everything above, plus three things that matter in
# production:
# - **Retry-After**: when the server says how long to wait, wait at least that long (and give
#   up at once if it asks for more than `max_retry_after`);
# - a **deadline** for the whole call, so retries never outlive an Airflow task's timeout;
# - when it gives up, it re-raises the **last error itself**, with a note of how many attempts
#   were made, and it logs one WARNING per retry.
#
# First, two server errors in a row, then success:

# %%
clock = lp.VirtualClock()
server = lp.MockLLMServer(seed=0, clock=clock)
provider = lp.OpenAIProvider(
    "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
    client=server.client(), clock=clock,
)
policy = lp.RetryPolicy(max_attempts=5, backoff=lp.BackoffPolicy(base_delay=1.0),
                        clock=clock, rng=random.Random(7))

server.fail_next("server_error", count=2)
answer = policy.call(provider.complete, "Classify this ticket: refund request", max_tokens=20)
print(f"answer after {server.stats['requests']} attempts, "
      f"{clock.now():.2f} s of (virtual) waiting: {answer.text!r}")

# %% [markdown]
# Now a real rate limit: the server allows 2 requests per minute, and the third is refused
# with a `retry-after` header. The policy waits as long as the server asked, not the 1 s its
# own backoff would have chosen, so the retry succeeds on the first try.

# %%
clock = lp.VirtualClock()
server = lp.MockLLMServer(rpm=2, seed=0, clock=clock)
provider = lp.OpenAIProvider(
    "mock", "gpt-4o-mini", base_url=server.base_url, api_key="test-key",
    client=server.client(), clock=clock,
)
policy = lp.RetryPolicy(max_attempts=3, clock=clock, rng=random.Random(7))

for i in range(3):
    start = clock.now()
    policy.call(provider.complete, f"Summarize report {i}", max_tokens=20)
    print(f"request {i}: done after {clock.now() - start:.1f} s")
print("status codes the server sent:", server.stats["by_status"])

# %% [markdown]
# And a failure that no retry can fix: the account is out of credit. One attempt, no waiting,
# and the error tells you why it was not retried.

# %%
server.reset()
server.fail_next("insufficient_quota")
try:
    policy.call(provider.complete, "Summarize report 4", max_tokens=20)
except lp.QuotaExceededError as err:
    print(f"{type(err).__name__} after {server.stats['requests']} attempt; "
          f"retryable: {lp.is_retryable(err)}")

# %% [markdown]
# **Takeaways**
# - Exponential backoff gives a struggling provider room; **jitter** keeps clients from
#   coming back in lockstep. Cap *after* jittering.
# - Retry only what can succeed: 429 (not quota), 5xx, timeouts, dropped connections.
# - Honour `Retry-After`. Next: **03 · Cost tracking**, because every retry costs money.
