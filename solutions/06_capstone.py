# %% [markdown]
# # Capstone · All five patterns together
#
# **Goal:** see how the five patterns fit together in front of real traffic, and what each one
# buys you. Rate limiting, retries with backoff, cost tracking, fallback and the circuit breaker
# each solve one problem; in a pipeline they meet all at once, and their **order** matters.
#
# **What you will do:** run the same ten minutes of simulated pipeline traffic three ways and
# compare: (1) no patterns, (2) the library's pieces wired by hand, step by step, in one small
# function, (3) `ResilientClient`, which does the same wiring for you.
#
# **Time:** about 15 minutes. No task to hand in: read, run, and change the scenario.

# %%
import logging
import sys
from dataclasses import replace

import plotly.graph_objects as go
import plotly.io as pio

from llm_patterns import (
    AllProvidersFailed,
    BudgetExceeded,
    CircuitOpenError,
    InvalidRequestError,
    LLMError,
    RateLimitError,
    RateLimitTimeout,
    estimate_tokens,
)
from llm_patterns.course.charts import timeline_figure
from llm_patterns.course.simulation import Scenario, Simulation

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.WARNING, force=True)
logging.getLogger("llm_patterns").setLevel(logging.CRITICAL)  # thousands of events: count them instead

# %% [markdown]
# ## 1 · The workload
#
# `Simulation` replays a pipeline on a virtual clock: requests arrive at random (a seeded
# Poisson stream, about 2 a second), each a prompt of 40–400 words asking for up to 200 tokens,
# tagged with one of three Airflow task ids. Two mock providers:
#
# | | primary (OpenAI API) | secondary (Anthropic API) |
# |---|---|---|
# | model | gpt-4o-mini (cheap) | claude-haiku-4-5 (about 7× the price) |
# | limits | 60 requests/min, 40,000 tokens/min | 600 requests/min, 400,000 tokens/min |
# | trouble | 2% random 500s; **down from second 180 to 300** | none |
#
# 2 requests a second is **120 a minute**: twice what the primary allows. Ten simulated minutes
# take about a second to replay. Every run below sees exactly the same requests at the same
# (virtual) times.

# %%
scenario = Scenario(duration=600, seed=0)
print(scenario)

# %% [markdown]
# ## 2 · No patterns
#
# Every request goes straight to the primary, once. This is what a first version of a pipeline
# task usually does.

# %%
class NoPatterns:
    """Call the primary once; record the cost when it answers."""

    def __init__(self, sim):
        self.provider = sim.providers[0]
        self.cost = sim.cost

    async def acomplete(self, prompt, *, max_tokens, dag_id=None, task_id=None):
        response = await self.provider.acomplete(prompt, max_tokens=max_tokens)
        self.cost.record(response.model, response.usage, dag_id=dag_id, task_id=task_id)
        return response


sim = Simulation(scenario)
sim.client = NoPatterns(sim)
naive = await sim.run()
print(f"{naive.failed} of {naive.requests} requests failed: {naive.errors}")

# %% [markdown]
# About half the work is lost: hundreds of requests bounce off the primary's rate limit with a
# 429, and the two-minute outage (plus the random 500s) takes out most of the rest.
#
# ## 3 · The five pieces, wired by hand
#
# `Simulation` already built one of each piece, per provider, on its virtual clock:
# `sim.limiters[name]` (task 1), `sim.retry` (task 2), `sim.cost` (task 3),
# `sim.breakers[name]` (task 5) and the list `sim.providers` to fall back along (task 4).
# The whole wiring is one function. Read it from the inside out:
#
# 1. **rate limiter** right before the call: wait (in virtual time) until the provider's
#    request and token budgets allow it, so we do not earn 429s in the first place;
# 2. **circuit breaker** around the limited call: when the provider is down, fail at once,
#    without waiting for a rate-limit slot or touching the provider;
# 3. **retry** around the breaker: retry blips (a 500, a 429 that slipped through) with backoff;
#    an open breaker raises `CircuitOpenError`, which is not retried, so retries stop at once;
# 4. **cost** after a success: record what the answer cost, per Airflow task;
# 5. **fallback** around it all: if one provider cannot answer, the next one gets its chance,
#    except after a bad request or an exhausted budget.

# %%
class HandWired:
    """retry -> breaker -> rate limiter -> call -> cost, for each provider in order."""

    def __init__(self, sim):
        self.sim = sim

    async def acomplete(self, prompt, *, max_tokens, dag_id=None, task_id=None):
        sim, errors = self.sim, []
        for position, provider in enumerate(sim.providers):
            limiter, breaker = sim.limiters[provider.name], sim.breakers[provider.name]
            tokens = estimate_tokens(prompt) + max_tokens  # what the provider charges at arrival

            async def limited_call():
                await limiter.acquire_async(tokens)                       # 1. rate limiter
                return await provider.acomplete(prompt, max_tokens=max_tokens)

            async def attempt():
                try:
                    return await breaker.call_async(limited_call)         # 2. circuit breaker
                except RateLimitError as err:    # a 429 anyway: pause everyone for Retry-After
                    if err.retry_after:
                        limiter.penalize(err.retry_after)
                    raise

            try:
                response = await sim.retry.call_async(attempt)            # 3. retry
            except (InvalidRequestError, BudgetExceeded):
                raise                                                     # 5. never fall back
            except LLMError as err:                                       # 5. fall back
                errors.append((provider.name, err))
                continue
            sim.cost.record(response.model, response.usage,               # 4. cost
                            dag_id=dag_id, task_id=task_id, provider=provider.name)
            return replace(response, fallback_used=position > 0)
        raise AllProvidersFailed(errors)


sim = Simulation(scenario)
sim.client = HandWired(sim)
by_hand = await sim.run()
print(f"{by_hand.failed} of {by_hand.requests} requests failed: {by_hand.errors}")

# %% [markdown]
# ## 4 · The same with `ResilientClient`
#
# `ResilientClient(providers, limiters=..., retry=..., breakers=..., cost=...)` does the wiring
# above, plus the details a careful wiring needs: it checks the budget and the context window
# before each provider, settles the limiter with the real token usage, re-syncs it from the
# provider's `x-ratelimit-*` headers, re-checks the breaker after a long limiter wait, gives up on
# a limiter wait longer than `max_wait` (moving to the next provider), and emits events for
# dashboards. `Simulation` uses it by default.

# %%
sim = Simulation(scenario)
print(sim.client)
library = await sim.run()
print(f"{library.failed} of {library.requests} requests failed: {library.errors}")

# %% [markdown]
# ## 5 · Side by side

# %%
runs = {"no patterns": naive, "wired by hand": by_hand, "ResilientClient": library}
rows = [
    ("requests", lambda r: r.requests),
    ("succeeded", lambda r: r.succeeded),
    ("failed", lambda r: r.failed),
    ("answered by primary", lambda r: r.by_provider.get("primary", 0)),
    ("answered by secondary", lambda r: r.by_provider.get("secondary", 0)),
    ("429s from the providers", lambda r: r.server_429s),
    ("calls into the outage", lambda r: r.calls_into_outage),
    ("retries", lambda r: r.retries),
    ("cost (USD)", lambda r: f"{r.total_cost:.4f}"),
]
print(f"{'':<26}" + "".join(f"{name:>17}" for name in runs))
for label, get in rows:
    print(f"{label:<26}" + "".join(f"{get(r)!s:>17}" for r in runs.values()))

# %%
fig = go.Figure()
for label, get, color in (("failed requests", lambda r: r.failed, "#d62728"),
                          ("429s", lambda r: r.server_429s, "#ff7f0e"),
                          ("calls into the outage", lambda r: r.calls_into_outage, "#7f7f7f")):
    fig.add_trace(go.Bar(name=label, x=list(runs), y=[get(r) for r in runs.values()],
                         marker_color=color))
fig.update_layout(barmode="group", title="Same workload, three clients", yaxis_title="count",
                  template="plotly_white", height=360)
fig.show()

# %% [markdown]
# What each pattern bought:
#
# - **Rate limiting** turned hundreds of 429s into short waits. The requests the primary cannot
#   take within `max_wait` (30 s here) go to the secondary instead of failing.
# - **Retries** absorbed the random 500s.
# - **The breaker** cut the calls into the outage to a few trial calls.
# - **Fallback** answered everything the primary could not, at the secondary's higher price:
#   the patterns cost money, and **cost tracking** tells you how much, per task.
#
# Both wirings answer everything, at about the same cost. Now compare the **calls into the
# outage**. In the hand wiring, a call that the breaker let through (while it was still closed)
# can then wait many seconds in the rate limiter; by the time its turn comes the breaker has
# opened, but the call goes out anyway, into the dead provider. `ResilientClient` asks the
# breaker again after a limiter wait. Small decisions in the wiring show up as load on a
# struggling provider, and as retries you pay for in latency.
#
# ## 6 · Ten minutes on one chart
#
# The `ResilientClient` run, from the events its pieces emitted: requests available in each rate
# limiter, the breakers' states, who answered (and how slowly), and the cost so far against the
# budget.

# %%
timeline_figure(library.timeline, budget=scenario.budget,
                title="ResilientClient over 10 simulated minutes").show()

# %% [markdown]
# Read it top to bottom. The primary's bucket is drained and refilled all the time (the pipeline
# asks for twice its limit, so about half the requests go to the secondary all along); a few
# seconds after 180 the primary's breaker opens, half-opens about every 30 s, and closes just
# after 300; during the outage only the secondary answers, more slowly; the cost line climbs
# steadily, far below the budget.
#
# ## 7 · Your turn
#
# Change the scenario and re-run sections 2–6 (or only section 4). Some ideas:
#
# - `Scenario(outage=None)`: what does each pattern cost you when nothing is broken?
# - `Scenario(primary_rpm=200, primary_tpm=150_000)`: a bigger quota. How much goes to the
#   secondary now?
# - `Scenario(error_rate=0.3)`: a flaky primary. Watch the retries and the breaker.
# - `Scenario(budget=0.2)`: a tight budget. When does the 80% alert fire? (Set
#   `logging.getLogger("llm_patterns.cost").setLevel(logging.WARNING)` to see the alerts.)
#
# The next notebook, 07, adds the last failure mode: a prompt too long for the model.
