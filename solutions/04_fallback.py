# %% [markdown]
# # Task 4 · Fallback chains
#
# **Goal:** keep answers coming when one LLM provider goes down, by asking the next one.
# An outage should cost you a few slower answers, not a failed pipeline run.
#
# **What you will build:** `call_with_fallback(prompt, providers)`: try each provider in order,
# log who failed and who answered, stop at once on `BudgetExceeded`, and raise
# `AllProvidersFailed` with every error when nobody answers.
#
# **Time:** about 15 minutes.
#
# Everything runs against the mock provider on a virtual clock: ten minutes of traffic replay in
# well under a second, and nothing costs money.

# %%
import logging
import sys

import plotly.graph_objects as go
import plotly.io as pio

import llm_patterns as lp
from llm_patterns import (
    AllProvidersFailed,
    AnthropicProvider,
    BudgetExceeded,
    FallbackChain,
    InvalidRequestError,
    LLMResponse,
    MockLLMServer,
    OpenAIProvider,
    ServerError,
    VirtualClock,
)

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.WARNING, force=True)

# %% [markdown]
# ## 1 · What goes wrong: one provider, one outage
#
# A pipeline sends a request every 5 seconds to a single provider. Between minute 3 and minute 7
# the provider answers `503 Service Unavailable` (the mock's `outage(start, end)`), as real
# providers do a few times a month. Retries would not save us here: the outage lasts minutes,
# not seconds.

# %%
clock = VirtualClock()
server = MockLLMServer(clock=clock, latency=0.5, seed=1)
server.outage(180, 420, status=503)  # minutes 3 to 7
provider = OpenAIProvider("openai", "gpt-4o-mini", base_url=server.base_url,
                          api_key="test-key", client=server.client(), clock=clock)

outcomes = []  # (minute, ok?)
for i in range(120):  # 10 minutes, one request every 5 s
    clock.advance(max(0.0, i * 5.0 - clock.now()))
    minute = int(clock.now() // 60)
    try:
        provider.complete(f"Summarize report #{i}", max_tokens=50)
        outcomes.append((minute, True))
    except ServerError:
        outcomes.append((minute, False))

failed = sum(not ok for _, ok in outcomes)
print(f"{failed} of {len(outcomes)} requests failed ({failed / len(outcomes):.0%})")

minutes = list(range(10))
share = [100 * sum(not ok for m, ok in outcomes if m == k) / sum(1 for m, _ in outcomes if m == k)
         for k in minutes]
fig = go.Figure(go.Bar(x=[f"{k}–{k + 1}" for k in minutes], y=share, marker_color="#d62728"))
fig.update_layout(title="A single provider: share of requests that failed, minute by minute",
                  xaxis_title="minute", yaxis_title="failed requests (%)",
                  yaxis_range=[0, 105], template="plotly_white", height=350)
fig.show()

# %% [markdown]
# For four minutes **every** request fails, and each one is a summary, a classification or an
# extraction your pipeline will not have. Meanwhile a second provider (another vendor, or another
# region of the same one) was up the whole time. A fallback chain asks it.
#
# ## 2 · A first draft, and its bugs
#
# A first attempt often looks like this:
#
# ```python
# def call_with_fallback(prompt, providers):
#     for provider in providers:
#         try:
#             return provider["call_fn"](prompt)
#         except Exception as e:
#             print(f"{provider['name']} failed: {e}")
#     raise Exception("All providers failed")
# ```
#
# It falls back, but:
#
# 1. **It falls back on everything, even `BudgetExceeded`.** The budget says "stop spending";
#    the next provider spends anyway (and usually costs more: backups are often the bigger model).
#    The same goes for a malformed request: the next provider refuses it too.
# 2. **It throws the errors away.** When everything fails you get "All providers failed" and no
#    idea whether it was an outage, a bad key or a quota.
# 3. **It `print`s.** In Airflow or any service, logs are what you read at 3 a.m.; `print` is not
#    a log line with a level and a logger name, and nobody can filter or alert on it.
# 4. **It does not say who answered**, so you cannot tell from the result or the logs how often
#    you are running on the backup.
#
# Here is bug 1 in action: the first provider says the budget is spent, and the draft happily
# pays the second one.

# %%
def draft_call_with_fallback(prompt, providers):
    for provider in providers:
        try:
            return provider["call_fn"](prompt)
        except Exception as e:
            print(f"{provider['name']} failed: {e}")
    raise Exception("All providers failed")


calls = []

def out_of_budget(prompt):
    calls.append("primary")
    raise BudgetExceeded("daily budget of 5.00 USD reached")

def expensive_backup(prompt):
    calls.append("backup (billed)")
    return "an answer we were not allowed to pay for"

print(draft_call_with_fallback("Summarize", [{"name": "primary", "call_fn": out_of_budget},
                                              {"name": "backup", "call_fn": expensive_backup}]))
print("calls made:", calls)

# %% [markdown]
# ## 3 · Your task: `call_with_fallback(prompt, providers)`
#
# `providers` is a list of dicts `{"name": str, "call_fn": callable}`; `call_fn(prompt)` returns
# the answer text or raises.
#
# 1. Try the providers **in order**; return at the first success:
#    `{"provider": name, "response": answer, "fallback_used": True if it was not the first}`.
# 2. Any exception moves on to the next provider, **except `BudgetExceeded`**: re-raise it at
#    once (`raise`), without calling anyone else.
# 3. Remember every failure as a `(name, error)` pair, and **log** it with the `logging` module
#    (`logger.warning(...)` naming the provider and the error). Log who answered too.
# 4. When every provider failed, `raise AllProvidersFailed(errors)` with the list of pairs.
#
# `logger` is defined for you. Catch `BudgetExceeded` *before* the general `except Exception`,
# and catch `Exception`, not `BaseException` (or a bare `except:`): Ctrl-C and `sys.exit()` must
# stop the program, not fall back.
#
# (Your version has one stop rule, `BudgetExceeded`. The library's `FallbackChain` has a second
# one, a bad request; section 5 shows why. Your chain is checked on the first rule only.)

# %% tags=["task:4"]
logger = logging.getLogger("task4")


def call_with_fallback(prompt, providers):
    """Ask providers in order; return {"provider", "response", "fallback_used"}."""
    ### BEGIN SOLUTION: implement call_with_fallback (steps 1-4 above)
    errors = []
    for position, provider in enumerate(providers):
        name = provider["name"]
        try:
            answer = provider["call_fn"](prompt)
        except BudgetExceeded:
            logger.error("provider %s: budget exceeded, not falling back", name)
            raise
        except Exception as error:
            errors.append((name, error))
            logger.warning("provider %s failed with %s: %s", name, type(error).__name__, error)
            continue
        if position:
            logger.warning("provider %s answered after %d failure(s)", name, len(errors))
        else:
            logger.info("provider %s answered", name)
        return {"provider": name, "response": answer, "fallback_used": position > 0}
    raise AllProvidersFailed(errors)
    ### END SOLUTION

# %% [markdown]
# Try it on two mock providers while the first one is down (the second is up). When your
# function works you see a warning from your logger and an answer from the backup.

# %%
clock = VirtualClock()
primary_server = MockLLMServer(clock=clock, seed=1)
backup_server = MockLLMServer(clock=clock, seed=2)
primary_server.outage(0, 60)
primary = OpenAIProvider("primary", "gpt-4o-mini", base_url=primary_server.base_url,
                         api_key="test-key", client=primary_server.client(), clock=clock)
backup = OpenAIProvider("backup", "gpt-4o", base_url=backup_server.base_url,
                        api_key="test-key", client=backup_server.client(), clock=clock)
providers = [
    {"name": "primary", "call_fn": lambda p: primary.complete(p, max_tokens=40).text},
    {"name": "backup", "call_fn": lambda p: backup.complete(p, max_tokens=40).text},
]
try:
    result = call_with_fallback("Summarize: the nightly load finished.", providers)
    print(result["provider"], "answered; fallback_used =", result["fallback_used"])
except NotImplementedError:
    print("implement call_with_fallback above first")

# %% tags=["check", "task:4"]
from llm_patterns.course.grading import check_task4

check_task4(call_with_fallback)

# %% [markdown]
# ## 4 · The library version: `FallbackChain`
#
# Real providers do not agree on anything: OpenAI wants `POST /v1/chat/completions` with a
# Bearer token and answers `choices[0].message.content` and `usage.prompt_tokens`; Anthropic
# wants `POST /v1/messages` with `x-api-key` and answers `content[0].text` and
# `usage.input_tokens`. `OpenAIProvider` and `AnthropicProvider` speak each API and return
# **one** format, `LLMResponse`, so the code after the call does not care who answered.
#
# Below, two mock servers: one speaks the OpenAI API, the other the Anthropic API.

# %%
clock = VirtualClock()
openai_server = MockLLMServer(clock=clock, latency=0.4, seed=1, api="openai")
anthropic_server = MockLLMServer(clock=clock, latency=0.8, seed=2, api="anthropic")

openai = OpenAIProvider("openai", "gpt-4o-mini", base_url=openai_server.base_url,
                        api_key="test-key", client=openai_server.client(), clock=clock)
anthropic = AnthropicProvider("anthropic", "claude-haiku-4-5", base_url=anthropic_server.base_url,
                              api_key="test-key", client=anthropic_server.client(), clock=clock)

for p in (openai, anthropic):
    r = p.complete("Summarize: revenue grew 4% this quarter.", max_tokens=30)
    print(f"{type(r).__name__}: provider={r.provider!r} model={r.model!r} "
          f"usage={r.usage} latency={r.latency_s:.1f}s fallback_used={r.fallback_used}")

# %% [markdown]
# Same shape, two very different wire formats (`usage` is normalized too: Anthropic's
# `input_tokens` became `prompt_tokens`). Now the chain: OpenAI first, Anthropic as the backup.
# We take OpenAI down for two minutes and watch the log.

# %%
chain = FallbackChain([openai, anthropic], clock=clock)
logging.getLogger("llm_patterns.fallback").setLevel(logging.INFO)  # show "answered by" too

openai_server.outage(clock.now(), clock.now() + 120)
r = chain.complete("Summarize: the warehouse shipped 1,200 orders.", max_tokens=30)
print(f"answered by {r.provider} ({r.model}); fallback_used={r.fallback_used}")

# %% [markdown]
# The same outage as in section 1, now behind the chain: one request every 5 seconds for ten
# minutes, OpenAI down from minute 3 to minute 7.

# %%
clock = VirtualClock()
openai_server = MockLLMServer(clock=clock, latency=0.4, seed=1, api="openai")
anthropic_server = MockLLMServer(clock=clock, latency=0.8, seed=2, api="anthropic")
openai_server.outage(180, 420)
openai = OpenAIProvider("openai", "gpt-4o-mini", base_url=openai_server.base_url,
                        api_key="test-key", client=openai_server.client(), clock=clock)
anthropic = AnthropicProvider("anthropic", "claude-haiku-4-5", base_url=anthropic_server.base_url,
                              api_key="test-key", client=anthropic_server.client(), clock=clock)
chain = FallbackChain([openai, anthropic], clock=clock)
logging.getLogger("llm_patterns.fallback").setLevel(logging.ERROR)  # 48 warnings is too many

answered = []  # (minute, provider or "failed")
for i in range(120):
    clock.advance(max(0.0, i * 5.0 - clock.now()))
    minute = int(clock.now() // 60)
    try:
        answered.append((minute, chain.complete(f"Summarize report #{i}", max_tokens=50).provider))
    except AllProvidersFailed:
        answered.append((minute, "failed"))
logging.getLogger("llm_patterns.fallback").setLevel(logging.NOTSET)

fig = go.Figure()
for who, color in (("openai", "#1f77b4"), ("anthropic", "#ff7f0e"), ("failed", "#d62728")):
    fig.add_trace(go.Bar(name=who, x=[f"{k}–{k + 1}" for k in minutes],
                         y=[sum(1 for m, p in answered if m == k and p == who) for k in minutes],
                         marker_color=color))
fig.update_layout(barmode="stack", title="With a fallback chain: who answered, minute by minute",
                  xaxis_title="minute", yaxis_title="requests", template="plotly_white",
                  height=350)
fig.show()
print({who: sum(1 for _, p in answered if p == who) for who in ("openai", "anthropic", "failed")})

# %% [markdown]
# No request failed. The price: answers during the outage came from the backup (slower here, and
# a different model: check that your prompts work on both before you need it).
#
# ## 5 · When *not* to fall back
#
# `FallbackChain` moves on after outages, timeouts, 429s, auth errors, even a provider that
# raises a plain `Exception`. Your `call_with_fallback` stops on `BudgetExceeded`; the library
# stops on two errors at once:
#
# - **`InvalidRequestError`** (400, 413, 422): the request itself is wrong. The next provider
#   would refuse it the same way, after its own round trip, and you would log it as an outage
#   of *two* providers. Fix the request instead.
# - **`BudgetExceeded`**: the budget said stop. Falling back would spend the money it forbids.
#
# (Some 4xx answers *do* move on, because the next provider is different: `ContextWindowExceeded`,
# as a model with a larger window may answer it (notebook 07); a 404 for a model this provider
# does not have; and billing, `QuotaExceededError`, when this account is out of credit.)
#
# A request with a misspelled parameter (`temprature`) would reach OpenAI, which answers 400,
# and the chain would stop there. Better still, a chain checks the request against every
# provider before calling the first: Anthropic has no `temprature` field, so the mistake is a
# `ValueError` naming it, raised before anything is sent to either provider. The same goes for a
# message whose content is a dict, not text: a `TypeError`, at once, on your machine.

# %%
before = openai_server.stats["requests"], anthropic_server.stats["requests"]
try:
    chain.complete("Summarize", max_tokens=30, temprature=0.2)
except (InvalidRequestError, ValueError) as err:
    print(f"{type(err).__name__}: {err}")
print("requests sent:", openai_server.stats["requests"] - before[0], "to OpenAI,",
      anthropic_server.stats["requests"] - before[1], "to Anthropic")

# %% [markdown]
# And a budget: `ResilientClient` (notebook 06) asks the cost tracker before each provider.
# With `hard_limit=True`, a call whose worst-case cost would pass the budget raises
# `BudgetExceeded` before anything is sent, and the chain does not try the (pricier) backup.

# %%
tracker = lp.CostTracker({"gpt-4o-mini": lp.Pricing(0.15, 0.60),
                          "claude-haiku-4-5": lp.Pricing(1.00, 5.00)},
                         budget=0.000_05, hard_limit=True)
client = lp.ResilientClient([openai, anthropic], cost=tracker, clock=clock)
sent = openai_server.stats["requests"], anthropic_server.stats["requests"]
try:
    client.complete("Summarize this long report. " * 40, max_tokens=200)
except BudgetExceeded as err:
    print(f"{type(err).__name__}: {err}")
print("requests sent:", openai_server.stats["requests"] - sent[0],
      "to OpenAI,", anthropic_server.stats["requests"] - sent[1], "to Anthropic")

# %% [markdown]
# ## Recap
#
# - A fallback chain turns a provider outage into slower answers instead of lost work.
# - Normalize answers into one format (`LLMResponse`) so callers never care who answered,
#   and record `fallback_used` so you can see how often you run on the backup.
# - Fall back on outages, timeouts and rate limits; **never** on an exhausted budget (your
#   task) or a bad request (the library's `FallbackChain` too); never swallow Ctrl-C.
# - Log every failure and who answered, with the logging module.
#
# Next: notebook 05, the circuit breaker, which stops you from paying for calls into a provider
# you already know is down.
