# %% [markdown]
# # 03 · Cost tracking: know the bill before it arrives
#
# **Goal:** price every request as it happens, add it up per Airflow task and DAG, and raise
# the alarm (once!) as spending approaches the budget.
#
# **What you will build:** a thread-safe `CostTracker(pricing, budget, alert_thresholds)`.
#
# **Time:** about 15 minutes.

# %%
import json
import logging
import sys
import tempfile
import threading
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

import llm_patterns as lp

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(
    stream=sys.stdout, format="%(name)s %(levelname)s %(message)s", level=logging.WARNING,
    force=True,
)

# %% [markdown]
# ## Why: a retry loop with a credit card
#
# Providers bill per token, with separate prices for the prompt (input) and the answer
# (output), quoted **per million tokens**. Here is a pipeline that summarizes 40 long
# contracts (about 30,000 tokens each) with `gpt-4o` and wants the answer as JSON. When the
# answer does not parse, it simply asks again, up to 10 times. Today the model never answers
# in JSON. Nobody is watching the bill; the budget for the run is $5.

# %%
PRICES = {  # USD per 1M tokens
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
}
BUDGET = 5.00
CONTRACT = "The supplier shall deliver the goods described in Annex A within thirty days. " * 1500


def price(model, usage):
    p = PRICES[model]
    return (usage["prompt_tokens"] * p["input"] + usage["completion_tokens"] * p["output"]) / 1e6


def summarize_contracts(stop=None, contracts=40, tries=10):
    """The runaway pipeline. Yields (call number, the call's usage dict) for every call made;
    `stop()` returning True ends the run early."""
    clock = lp.VirtualClock()
    server = lp.MockLLMServer(seed=3, clock=clock)
    provider = lp.OpenAIProvider(
        "mock", "gpt-4o", base_url=server.base_url, api_key="test-key",
        client=server.client(), clock=clock,
    )
    calls = 0
    for doc in range(contracts):
        for attempt in range(tries):
            if stop is not None and stop():
                return
            answer = provider.complete(f"Contract {doc}. Reply in JSON.\n{CONTRACT}",
                                       max_tokens=500)
            calls += 1
            yield calls, answer.raw["usage"]
            try:
                json.loads(answer.text)
                break
            except ValueError:
                continue  # "just ask again"


spent, curve = 0.0, []
for call, usage in summarize_contracts():
    spent += price("gpt-4o", usage)
    curve.append(round(spent, 4))
over = next(i for i, c in enumerate(curve, 1) if c > BUDGET)
print(f"{len(curve)} calls, ${spent:.2f} spent; the ${BUDGET:.0f} budget was gone after call {over}")


def cost_chart(curve, title):
    fig = go.Figure(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines",
                               name="spent", line={"color": "#2ca02c"}))
    fig.add_hline(y=BUDGET, line={"color": "#d62728", "dash": "dash"},
                  annotation_text=f"budget ${BUDGET:.0f}")
    fig.update_layout(title=title, xaxis_title="API calls", yaxis_title="USD spent",
                      height=330)
    return fig


cost_chart(curve, "Nobody watching: six times the budget").show()

# %% [markdown]
# Each call costs about 7 cents, which feels like nothing, until a loop makes 400 of them.
# Real incidents look exactly like this: a retry loop, a prompt that grew, an agent that
# talks to itself overnight. A cost tracker turns "the invoice next month" into "an alert
# at 50%, 80% and 100% of the budget, today".
#
# ## The hint, and its two bugs
#
# The starter code keeps the bill like this:
#
# ```python
# PRICES = {"gpt-4o": {"input": 2.50, "output": 10.00},
#           "gpt-4o-mini": {"input": 0.15, "output": 0.60}}
# total_cost = 0.0
#
# def record(model, usage):
#     global total_cost
#     price = PRICES.get(model, PRICES["gpt-4o-mini"])  # unknown model? assume the cheap one
#     cost = (usage["prompt_tokens"] * price["input"]
#             + usage["completion_tokens"] * price["output"]) / 1_000_000
#     current = total_cost          # read ...
#     total_cost = current + cost   # ... then write
#     return cost
# ```
#
# **Bug 1: an unknown model is priced as a cheap one.** APIs answer with *dated* model names:
# ask for `gpt-4o` and the response says `gpt-4o-2024-08-06`. That name is not in `PRICES`:

# %%
total_cost = 0.0


def record(model, usage, between=None):
    """The hint's record(); `between` lets us pause between the read and the write."""
    global total_cost
    price = PRICES.get(model, PRICES["gpt-4o-mini"])
    cost = (usage["prompt_tokens"] * price["input"]
            + usage["completion_tokens"] * price["output"]) / 1_000_000
    current = total_cost
    if between is not None:
        between()
    total_cost = current + cost
    return cost


usage = {"prompt_tokens": 30_000, "completion_tokens": 500}
print(f"recorded: ${record('gpt-4o-2024-08-06', usage):.4f}, "
      f"real price: ${price('gpt-4o', usage):.4f}")

# %% [markdown]
# The tracker under-reports by a factor of 16, silently. An unknown model must be an error
# (`KeyError`) that someone fixes, never a guess.
#
# **Bug 2: `total_cost = current + cost` loses updates.** Airflow workers, thread pools and
# async tasks record costs at the same time. If two threads both read the total before
# either writes it, one of the two costs vanishes. Usually the timing is lucky; under load it
# is not. Here we force the unlucky timing: four threads read, then all four write.

# %%
total_cost = 0.0
all_read = threading.Barrier(4)
threads = [
    threading.Thread(target=record, args=("gpt-4o", usage), kwargs={"between": all_read.wait})
    for _ in range(4)
]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"4 records of ${price('gpt-4o', usage):.4f}: total_cost = ${total_cost:.4f}, "
      f"should be ${4 * price('gpt-4o', usage):.4f}")

# %% [markdown]
# Three of the four costs are lost. The fix is a `threading.Lock` around the
# read-modify-write (`with self.lock: self.total += cost`): `+=` alone is *not* atomic.
#
# ## Your task
#
# **`CostTracker(pricing, budget, alert_thresholds=(0.5, 0.8, 1.0))`** where
# `pricing = {model: {"input": usd_per_1M, "output": usd_per_1M}}` and `budget` is in USD:
# - `record(model, usage, dag_id=None, task_id=None) -> cost`: `usage` is an OpenAI usage dict
#   (`prompt_tokens`, `completion_tokens`); prices are **per 1M tokens**; an unknown model
#   raises `KeyError`;
# - `total`: USD recorded so far;
# - `by_task()` -> `{(dag_id, task_id): usd}` and `by_dag()` -> `{dag_id: usd}`;
# - `alerts`: the thresholds that have fired, in order; a threshold fires once, when
#   `total >= threshold * budget`, and **logs a warning** (`log.warning(...)`, the logger below)
#   naming the spend and the budget: the people running the pipeline read logs, not lists;
# - thread-safe: concurrent `record` calls must add up exactly.

# %% tags=["task:3"]
log = logging.getLogger("cost")


class CostTracker:
    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        ### BEGIN SOLUTION: keep the prices, the budget, the totals, the fired alerts and a lock
        self.pricing = pricing
        self.budget = budget
        self.alert_thresholds = sorted(alert_thresholds)
        self.total = 0.0
        self.alerts = []
        self._by_task = {}
        self._by_dag = {}
        self.lock = threading.Lock()
        ### END SOLUTION

    def record(self, model, usage, dag_id=None, task_id=None):
        ### BEGIN SOLUTION: price the usage per 1M tokens, add it up under the lock, fire new alerts
        if model not in self.pricing:
            raise KeyError(f"no price for model {model!r}: add it to the pricing table")
        p = self.pricing[model]
        cost = (usage.get("prompt_tokens", 0) * p["input"]
                + usage.get("completion_tokens", 0) * p["output"]) / 1_000_000
        with self.lock:
            self.total += cost
            self._by_task[(dag_id, task_id)] = self._by_task.get((dag_id, task_id), 0.0) + cost
            self._by_dag[dag_id] = self._by_dag.get(dag_id, 0.0) + cost
            for threshold in self.alert_thresholds:
                if threshold not in self.alerts and self.total >= threshold * self.budget:
                    self.alerts.append(threshold)
                    log.warning("spent $%.2f: %d%% of the $%.2f budget",
                                self.total, round(threshold * 100), self.budget)
        return cost
        ### END SOLUTION

    def by_task(self):
        ### BEGIN SOLUTION: {(dag_id, task_id): usd}
        with self.lock:
            return dict(self._by_task)
        ### END SOLUTION

    def by_dag(self):
        ### BEGIN SOLUTION: {dag_id: usd}
        with self.lock:
            return dict(self._by_dag)
        ### END SOLUTION


# %% tags=["check", "task:3"]
from llm_patterns.course.grading import check_task3

check_task3(CostTracker)

# %% [markdown]
# ## Watch your tracker at work
#
# `watch(obj)` makes your own class report what it does, without changing how it behaves: it
# wraps `record` on your tracker so every call also sends an event. A `CostMeter` listens to
# those events and draws the spend against the budget, with the alert thresholds marked.
# Below, twelve `gpt-4o` calls of random size (seeded) are recorded against a $0.40 budget:
# watch the alerts fire at 50%, 80% and 100%, each once.

# %%
import random

from llm_patterns.course.widgets import CostMeter, watch

budget = 0.40
rng = random.Random(3)
try:
    my_tracker = CostTracker(PRICES, budget)
    meter = CostMeter(watch(my_tracker, name="your CostTracker"), title="your CostTracker")
    for call in range(1, 13):
        usage = {"prompt_tokens": rng.randint(5_000, 20_000),
                 "completion_tokens": rng.randint(200, 1_000)}
        cost = my_tracker.record("gpt-4o", usage, dag_id="nightly", task_id="summarize")
        print(f"call {call:>2}: ${cost:.4f}, total ${my_tracker.total:.4f} "
              f"({float(my_tracker.total) / budget:.0%} of the budget)")  # float or Decimal
except NotImplementedError:
    print("implement CostTracker above first, then re-run this cell")
else:
    print("alerts fired:", my_tracker.alerts)
    meter.flush()
    display(meter)

# %% [markdown]
# ## Your tracker against the runaway loop
#
# The same pipeline, now recording every call and stopping as soon as the 100% alert fires.
# (Stopping *after* the call that crossed the line is the best a tracker can do; the
# library's `hard_limit` below refuses the call *before* it is made.)

# %%
try:
    tracker = CostTracker(PRICES, BUDGET)
    curve = []
    for call, usage in summarize_contracts(stop=lambda: 1.0 in tracker.alerts):
        tracker.record("gpt-4o", usage, dag_id="contracts", task_id="summarize")
        curve.append(round(tracker.total, 4))
except NotImplementedError:
    print("implement CostTracker above first")
else:
    print(f"stopped after {len(curve)} calls at ${tracker.total:.2f}; alerts: {tracker.alerts}")
    cost_chart(curve, "With your tracker: stopped at the budget").show()

# %% [markdown]
# ## The library's `CostTracker` at work
#
# `lp.CostTracker` adds what production needs:
# - **real prices**: `lp.PriceTable()` reads the prices of OpenAI, Anthropic and Google models
#   from the `genai-prices` package (offline), including cached-input prices, dated model
#   names and aliases. An unknown model is a `KeyError` with suggestions;
# - exact `Decimal` dollars (10,000 × $0.0013 is exactly $13);
# - OpenAI and Anthropic usage shapes, cached tokens included;
# - `hard_limit=True`: `check(estimate)` raises `BudgetExceeded` *before* a call that would
#   pass the budget.

# %%
prices = lp.PriceTable()
for model in ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "claude-sonnet-4-5"):
    print(f"{model:<20} {prices[model]}")
try:
    prices["gpt-4o-mini-2099"]
except KeyError as err:
    print()
    print("KeyError:", err)

# %% [markdown]
# A small nightly run of two DAGs against the mock, with a $0.50 budget:

# %%
clock = lp.VirtualClock()
server = lp.MockLLMServer(seed=5, clock=clock)


def provider_for(model):
    return lp.OpenAIProvider(model, model, base_url=server.base_url, api_key="test-key",
                             client=server.client(), clock=clock)


tracker = lp.CostTracker(prices, budget=0.50, hard_limit=True)
jobs = [  # (dag_id, task_id, model, prompt size in words, calls)
    ("invoices", "extract", "gpt-4o-mini", 2_000, 30),
    ("invoices", "summarize", "claude-sonnet-4-5", 3_000, 10),
    ("support", "classify", "gpt-4o-mini", 300, 200),
    ("support", "reply", "gpt-4o", 1_500, 40),
]
for dag_id, task_id, model, words, calls in jobs:
    provider = provider_for(model)
    for i in range(calls):
        answer = provider.complete(f"{task_id} #{i}: " + "text " * words, max_tokens=300)
        tracker.record(model, answer.raw["usage"], dag_id=dag_id, task_id=task_id)

print(f"{'dag':<10}{'task':<12}{'USD':>10}")
for (dag_id, task_id), usd in tracker.by_task().items():
    print(f"{dag_id:<10}{task_id:<12}{float(usd):>10.4f}")
print()
for dag_id, usd in tracker.by_dag().items():
    print(f"DAG {dag_id:<10} ${float(usd):.4f}")
print(f"total ${float(tracker.total):.4f} of ${float(tracker.budget):.2f}; "
      f"alerts fired: {tracker.alerts}")

# %% [markdown]
# The 50% alert fired once (a WARNING on the `llm_patterns.cost` logger, and `on_alert` if
# you pass one). Now a big request would pass the budget, and `hard_limit` refuses it before
# any money is spent:

# %%
estimate = tracker.estimate("gpt-4o", prompt_tokens=100_000, max_tokens=4_000)
print(f"worst case of the next call: ${float(estimate):.2f}")
try:
    tracker.check(estimate)
except lp.BudgetExceeded as err:
    print("BudgetExceeded:", err)

# %% [markdown]
# ### Many processes, one bill: `SQLiteLedger`
#
# Airflow runs each task in its own process, so an in-memory total only sees its own task.
# Give every tracker the same `lp.SQLiteLedger(path)` (a SQLite file on shared disk) and
# `total`, the `by_*` tables and the alerts cover every record in the ledger, whichever
# process wrote it; concurrent writers lose nothing. Two trackers stand in for two tasks here:

# %%
with tempfile.TemporaryDirectory() as tmp:
    ledger_path = Path(tmp) / "costs.sqlite"
    task_a = lp.CostTracker(prices, budget=1.0, ledger=lp.SQLiteLedger(ledger_path))
    task_b = lp.CostTracker(prices, budget=1.0, ledger=lp.SQLiteLedger(ledger_path))
    task_a.record("gpt-4o", {"prompt_tokens": 20_000, "completion_tokens": 1_000},
                  dag_id="etl", task_id="a")
    task_b.record("gpt-4o-mini", {"prompt_tokens": 50_000, "completion_tokens": 2_000},
                  dag_id="etl", task_id="b")
    print(f"task a sees ${float(task_a.total):.4f}, task b sees ${float(task_b.total):.4f}")
    task_a.ledger.close()
    task_b.ledger.close()

# %% [markdown]
# **Takeaways**
# - Prices are per **million** tokens, separately for input and output; never guess a price.
# - Accumulate under a lock; alert once per threshold; label costs by DAG and task.
# - Check the budget *before* expensive calls. Next: **04 · Fallback**.
