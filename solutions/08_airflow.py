# %% [markdown]
# # 08 · The patterns in Apache Airflow
#
# **Goal:** see how the five patterns map onto Airflow when a pipeline runs its LLM calls as
# many tasks, in many processes, on many workers.
#
# **What you will see (no graded task):** retries vs a `RetryPolicy`, rescheduling instead of
# holding a worker slot, pools, shared limiter and breaker state, cost per task via XCom plus a
# ledger, and why a `Variable` is the wrong place for a running total.
#
# **Time:** about 10 minutes. Nothing in this notebook starts Airflow: every cell runs on a
# virtual clock. The real thing is one command away (section 0).
#
# ## 0 · The course DAGs in a real Airflow
#
# In a terminal, at the root of the kit:
#
# ```bash
# make airflow     # Airflow 3.3 on http://127.0.0.1:8080; prints the admin password
# ```
#
# It starts the API server (the UI), the scheduler with 4 worker slots, the DAG processor and
# the triggerer, all on 127.0.0.1, with `AIRFLOW_HOME=airflow-home/` and the kit's `dags/`.
# Log in as `admin`, open **llm_retry_patterns**, click **Trigger**, and watch the grid: eight
# mapped `summarize` tasks queue for one shared rate limit, a shared breaker stops them all
# calling a dead provider, one task is *rescheduled* (it gives its slot back without using a
# try), one is *retried*, and `aggregate_costs` adds up what the ledger recorded. Then trigger
# **llm_variable_race** and open its `compare` task's XCom (section 5). Ctrl-C stops Airflow.
#
# ![The run's mapped summarize tasks in the Airflow grid view](images/airflow_grid.png)
#
# The sections below take those pieces one at a time.

# %%
import hashlib
import heapq
import logging
import math
import random
import sys
from decimal import Decimal

from llm_patterns import (
    AuthenticationError,
    BackoffPolicy,
    CostRecord,
    RateLimiter,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
    SQLiteLedger,
    VirtualClock,
)
from llm_patterns.integrations.airflow import (  # cheap: Airflow is imported only by LLMRetryPolicy
    aggregate_costs,
    backoff_task_args,
    backpressure_delay,
    instance_rng,
    retry_decision,
)
from llm_patterns.state import MemoryStateStore, SharedCircuitBreaker, SharedRateLimiter

logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.ERROR, force=True)

# %% [markdown]
# ## 1 · Retries: Airflow's backoff vs a `RetryPolicy`
#
# `@task(retries=5, retry_delay=..., retry_exponential_backoff=2.0, max_retry_delay=...)` makes
# Airflow wait `ceil(base·2^(n-1))` to twice that before try n+1. Its "jitter" is a SHA-1 hash
# of `dag_id, task_id, logical_date, try_number`: **`map_index` is not in it**, so 8 mapped
# summaries that hit the same 429 all come back in the same second. `backoff_task_args` turns a
# `BackoffPolicy` into those arguments if you want them anyway:

# %%
policy = BackoffPolicy(base_delay=2, multiplier=2, max_delay=120, jitter="full")
print(backoff_task_args(policy, retries=5))

# %% [markdown]
# Airflow 3.3 adds `retry_policy=`: code that runs in the worker, sees the exception and returns
# "retry in N s" or "fail now". `LLMRetryPolicy` uses the kit's classification: a Retry-After
# sets the delay, auth / quota / bad request / budget fail at once (no point in 5 retries of a
# bad key), anything else gets jittered backoff seeded per task instance **including
# `map_index`**. Its decision is the pure function `retry_decision`:

# %%
def our_delay(map_index: int, try_number: int = 1) -> float:
    rng = instance_rng("summarize_docs", "summarize", "manual__2025-01-01", map_index)
    return retry_decision(ServerError("503"), try_number, backoff=policy, rng=rng).delay


def airflow_delay(map_index: int, try_number: int = 1) -> int:
    """Airflow 3.3's formula (taskinstance.py): map_index never enters the hash."""
    b = max(1, math.ceil(2 * 2 ** (try_number - 1)))
    key = f"summarize_docs#summarize#2025-01-01T00:00:00+00:00#{try_number}"
    return b + int(hashlib.sha1(key.encode()).hexdigest(), 16) % b


print("Airflow's backoff, 8 mapped instances, try 1:", [airflow_delay(i) for i in range(8)])
print("LLMRetryPolicy, 8 mapped instances, try 1:   ", [round(our_delay(i), 2) for i in range(8)])
print("the same instance again (reproducible):      ", round(our_delay(3), 2))
for error in (ServerError("503"), RateLimitError("429", retry_after=7.0),
              AuthenticationError("401 bad key")):
    v = retry_decision(error, 1, backoff=policy, rng=random.Random(0))
    print(f"{type(error).__name__:>19}: {v.action} ({v.reason})")

# %% [markdown]
# ## 2 · Backpressure: give the slot back, don't sleep in it
#
# A limiter that says "wait 40 s" inside a task keeps a worker (and a pool slot) busy doing
# nothing. With `max_wait` the limiter raises `RateLimitTimeout` instead, and
# `reschedule_on_backpressure` turns it into `AirflowRescheduleException(reschedule_date=now+N)`:
# the task goes to `up_for_reschedule`, frees its slot, and **does not use a retry**.
#
# **Pools** are the other half: `@task(pool="llm_api", pool_slots=1)` with
# `airflow pools set llm_api 4 "LLM calls"` caps how many LLM tasks run at once across ALL
# workers. A pool caps concurrency, not requests per minute; the shared limiter below caps the
# rate. (`dag.test()` ignores pools: they live in the scheduler.)

# %%
clock = VirtualClock()
store = MemoryStateStore(clock=clock)  # in production: LLM_PATTERNS_STATE=sqlite:///... or redis://
limiter = SharedRateLimiter(rpm=60, burst_seconds=2, max_wait=5.0, store=store, name="openai")
limiter.acquire(), limiter.acquire()
limiter.penalize(30)  # a 429 told another worker to back off for 30 s
try:
    limiter.acquire()
except RateLimitTimeout as error:
    print(f"would wait {backpressure_delay(error):.0f} s > max_wait: reschedule the task instead")

# %% [markdown]
# ## 3 · Shared state: one budget and one breaker for every worker
#
# Two tasks in two processes each holding a `RateLimiter(rpm=60)` send up to 120 requests a
# minute between them. `SharedRateLimiter` keeps the buckets in a `StateStore` (SQLite for one
# host, Redis for many) and takes from them in one atomic step, so the budget is shared:

# %%
clock = VirtualClock()
store = MemoryStateStore(clock=clock)
workers_local = [RateLimiter(rpm=60, burst_seconds=10, clock=clock) for _ in range(2)]
workers_shared = [SharedRateLimiter(rpm=60, burst_seconds=10, store=store, name="openai")
                  for _ in range(2)]
for label, workers in (("in-process limiters", workers_local),
                       ("shared limiter     ", workers_shared)):
    granted = sum(w.try_acquire() for _ in range(20) for w in workers)
    print(f"{label}: {granted} requests granted at once (the provider allows 10)")

# %% [markdown]
# The breaker too: worker A sees the outage, and worker B stops calling the dead provider
# without paying for its own five failures first.

# %%
worker_a = SharedCircuitBreaker("openai", failure_threshold=3, reset_timeout=30, store=store)
worker_b = SharedCircuitBreaker("openai", failure_threshold=3, reset_timeout=30, store=store)
for _ in range(3):
    worker_a.record_failure(ServerError("503"))
print("worker B may call:", worker_b.allow_request(), "| state:", worker_b.state.value)
clock.advance(30)
print("30 s later, B probes:", worker_b.allow_request(),
      "| A probes too:", worker_a.allow_request())

# %% [markdown]
# ## 4 · Cost per task (XCom) and per run (ledger)
#
# Each LLM task returns its usage and cost as XCom (cost as a Decimal **string**: a float would
# round), and records the same to a `SQLiteLedger` that every process can write. An
# `aggregate_costs` task sums the mapped results exactly:

# %%
results = [{"provider": "primary", "model": "gpt-4o-mini", "cost": "0.1",
            "usage": {"prompt_tokens": 100, "completion_tokens": 20}, "attempts": 1}] * 3
print("floats:  ", sum(float(r["cost"]) for r in results))
print("aggregate:", aggregate_costs(results)["total"])

# %% [markdown]
# ## 5 · Why not a Variable for the running total?
#
# `Variable.get` + `Variable.set` is read-modify-write with no compare-and-set: two workers that
# read the same value both write value + 1, and one update is gone. The DAG
# `llm_variable_race` does exactly that with 4 workers x 10 calls under the real scheduler
# (`make airflow`, then its `compare` task's XCom; `tests/test_airflow_scheduler.py` checks
# it), next to a ledger that records each call as one row. Here the same semantics, simulated:
# each worker reads, does its LLM call, writes back.

# %%
def variable_race(workers: int = 8, increments: int = 5) -> int:
    """Each worker: read the Variable, spend 0.5-2 s on its LLM call, write value + 1.
    Events are replayed in time order (a tiny discrete-event simulation, seeded)."""
    rng, variable = random.Random(7), {"spend": 0}
    events = [(0.0, w, "read", None) for w in range(workers)]
    done = [0] * workers
    heapq.heapify(events)
    while events:
        t, w, kind, value = heapq.heappop(events)
        if kind == "read":  # Variable.get
            heapq.heappush(events, (t + rng.uniform(0.5, 2.0), w, "write", variable["spend"]))
        else:  # Variable.set(value + 1): whatever others wrote meanwhile is overwritten
            variable["spend"] = value + 1
            done[w] += 1
            if done[w] < increments:
                heapq.heappush(events, (t, w, "read", None))
    return variable["spend"]


WORKERS, CALLS = 8, 5
updates = WORKERS * CALLS
ledger = SQLiteLedger(":memory:")  # a file path in a pipeline: one transaction per record
for i in range(updates):
    ledger.add(CostRecord(time=0.0, model="m", provider="p", dag_id="d",
                          task_id=f"t{i % WORKERS}", run_id="r", prompt_tokens=1,
                          completion_tokens=1, cached_tokens=0, cost=Decimal("0.001")))
kept = variable_race(WORKERS, CALLS)
print(f"The Variable kept {kept} of {updates} updates: read-modify-write lost {updates - kept}.")
print(f"The ledger kept {ledger.count()} of {updates} rows, total ${ledger.total()}: "
      "one INSERT per call loses nothing.")

# %% [markdown]
# ## Where to go next
#
# - `dags/llm_retry_patterns.py`: 8 mapped summaries through `ResilientClient`, an outage on the
#   primary, a burst that triggers rescheduling, a retry, a budget, and `aggregate_costs`.
#   Trigger it "with config" to change its rate limits and watch more (or fewer) reschedules.
# - `LLM_PATTERNS_STATE=sqlite:////shared/state.db` for workers on one host; Redis for many.
#   `make airflow` adds `?log_grants=1`: `SQLiteStateStore.grants()` then lists every grant
#   the shared limiter made, an audit that no window went over the limit.
