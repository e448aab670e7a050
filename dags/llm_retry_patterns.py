"""llm_retry_patterns: summarize a batch of documents through two LLM providers, reliably.

    load_documents -> summarize.expand(doc=...) (8 mapped tasks, pool "llm_api") -> aggregate_costs

Every ``summarize`` instance calls ``ResilientClient`` (retry -> breaker -> rate limiter -> call
-> cost record) over a primary and a secondary provider. Both are in-process mock providers
(``MockLLMServer`` through ``httpx.MockTransport``, seeded; their latency runs on a
``VirtualClock``, so nothing here waits on a fake network), and faults are injected per document
so that every pattern has something to do:

- doc 1: the primary is down and the secondary answers 500 twice on try 1: all providers
  fail -> ``LLMRetryPolicy`` -> an Airflow retry (try 2) that the secondary answers;
- docs 1-3: the primary is down (503): the SHARED breaker opens after 2 failures, and every
  task that starts later, in whichever worker process, skips the primary;
- doc 6: another pipeline's burst pauses both shared limiters for ``burst_pause`` s (first
  look only), longer than ``max_wait``: ``RateLimitTimeout`` -> ``AirflowRescheduleException``:
  the task gives its worker and pool slot back, in ``up_for_reschedule``, without using a try.

The rate limits are tight on purpose (params ``rpm`` and ``tpm`` per provider, 2 s buckets), so
the workers queue for them: the shared limiter serves them first come, first served across
processes, and its grants log (``?log_grants=1`` on the state URL, as ``make airflow`` sets it)
shows that no window ever went over. Trigger the DAG "with config" to change them.

Shared state (every worker process sees it): the rate limiters and breakers live in the store
named by ``LLM_PATTERNS_STATE`` (default: a SQLite file in the temp dir); cost records go to
the ``SQLiteLedger`` at ``LLM_PATTERNS_LEDGER``, with a hard budget checked before each call.
The demo's faults are per run, so its state keys include the run id; a real pipeline keys the
limiter and breaker by provider (and API key) only, so every run shares them.

The pool ``llm_api`` (``make airflow`` creates it; ``airflow pools set llm_api 4 ...``) caps
how many ``summarize`` instances run at once across all workers; the shared limiter caps their
RPM/TPM. ``dag.test()`` ignores pools and runs one task at a time: only a real scheduler shows
the workers racing (``tests/test_airflow_scheduler.py``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.integrations.airflow import (
    LLMRetryPolicy,
    ledger_task_id,
    llm_result,
    on_failure,
    on_retry,
    on_success,
    reschedule_on_backpressure,
    task_labels,
)
from llm_patterns.integrations.airflow import (
    aggregate_costs as sum_costs,
)

log = logging.getLogger("llm_patterns.dags.llm_retry_patterns")

DAG_ID = "llm_retry_patterns"
N_DOCS = 8
OUTAGE_DOCS = {1, 2, 3}  # the primary is down while these are processed
FLAKY_SECONDARY_DOCS = {1}  # the secondary answers 500 twice on the first try
BURST_DOCS = {6}  # another pipeline's burst pauses both shared limiters (first look)
POOL = "llm_api"
BURST_SECONDS = 2.0  # each limiter bucket holds 2 s of its per-minute rate
BREAKER_THRESHOLD = 2  # primary failures that open the shared breaker
BREAKER_RESET = 120.0  # seconds it stays open: longer than a run, so every later task sees it
PARAMS = {  # "Trigger DAG w/ config" in the UI; the run's values reach every task
    "rpm": Param(60, type="integer", minimum=1, title="Requests per minute, per provider",
                 description="shared by every worker through the state store"),
    "tpm": Param(6000, type="integer", minimum=5000, title="Tokens per minute, per provider",
                 description="a request asks for ~110-150 tokens; at least 5000 so one fits a "
                             "2 s bucket"),
    "max_wait": Param(5.0, type="number", minimum=0, title="max_wait (s)",
                      description="how long a task may queue for the limiter before it gives "
                                  "its slot back (reschedule)"),
    "burst_pause": Param(8.0, type="number", minimum=0, title="Burst pause (s)",
                         description="doc 6 pauses both limiters this long (another "
                                     "pipeline's 429s); above max_wait it is rescheduled"),
}
BUDGET_USD = Decimal("5.00")
PRICES = {  # USD per million tokens, for the mock models
    "mock-gpt": {"input": "0.15", "output": "0.60"},
    "mock-claude": {"input": "0.80", "output": "4.00"},
}
TOPICS = ["rate limits", "retries", "budgets", "fallbacks", "circuit breakers", "token windows",
          "shared state", "backpressure"]


def state_url() -> str:
    return os.environ.get("LLM_PATTERNS_STATE") or (
        f"sqlite:///{os.path.join(tempfile.gettempdir(), 'llm_patterns_state.db')}")


def ledger_path() -> str:
    return os.environ.get("LLM_PATTERNS_LEDGER") or os.path.join(
        tempfile.gettempdir(), "llm_patterns_ledger.db")


def build_client(run_id: str, doc_index: int, try_number: int, first_look: bool,
                 params: dict[str, Any]) -> Any:
    """The task's client: two seeded mock providers behind shared limiters and breakers."""
    from llm_patterns import (
        AnthropicProvider,
        CostTracker,
        MockLLMServer,
        OpenAIProvider,
        ResilientClient,
        RetryPolicy,
        SQLiteLedger,
        VirtualClock,
    )
    from llm_patterns.state import SharedCircuitBreaker, SharedRateLimiter, from_url

    clock = VirtualClock()  # provider latency and in-task backoff: simulated, no real wait
    seed = doc_index * 100 + try_number
    primary_srv = MockLLMServer(api="openai", model="mock-gpt", seed=seed, clock=clock,
                                latency=0.3, name="primary")
    secondary_srv = MockLLMServer(api="anthropic", model="mock-claude", seed=seed + 1,
                                  clock=clock, latency=0.5, name="secondary")
    if doc_index in OUTAGE_DOCS:
        primary_srv.take_down(503)
    if doc_index in FLAKY_SECONDARY_DOCS and try_number == 1:
        secondary_srv.fail_next("server_error", 2)
    providers = [
        OpenAIProvider("primary", "mock-gpt", base_url=primary_srv.base_url, api_key="test-key",
                       client=primary_srv.client(), clock=clock),
        AnthropicProvider("secondary", "mock-claude", base_url=secondary_srv.base_url,
                          api_key="test-key", client=secondary_srv.client(), clock=clock),
    ]
    store = from_url(state_url())
    scope = f"{DAG_ID}:{run_id}"  # demo: per run (see the module docstring)
    limiters = {
        name: SharedRateLimiter(rpm=params["rpm"], tpm=params["tpm"],
                                burst_seconds=BURST_SECONDS, max_wait=params["max_wait"],
                                store=store, name=f"{scope}:{name}")
        for name in ("primary", "secondary")
    }
    breakers = {
        "primary": SharedCircuitBreaker(f"{scope}:primary", failure_threshold=BREAKER_THRESHOLD,
                                        reset_timeout=BREAKER_RESET, store=store),
        "secondary": SharedCircuitBreaker(f"{scope}:secondary", failure_threshold=3,
                                          reset_timeout=BREAKER_RESET, store=store),
    }
    if doc_index in BURST_DOCS and first_look:
        for lim in limiters.values():  # what a 429 seen by another worker would do
            lim.penalize(params["burst_pause"])
    cost = CostTracker(PRICES, budget=BUDGET_USD, hard_limit=True,
                       ledger=SQLiteLedger(ledger_path()), name=DAG_ID)
    retry = RetryPolicy(max_attempts=2, backoff=BackoffPolicy(base_delay=0.5, max_delay=2.0),
                        clock=clock)
    client = ResilientClient(providers, limiters=limiters, breakers=breakers, retry=retry,
                             cost=cost, clock=clock)
    return client, {"primary": primary_srv, "secondary": secondary_srv}, breakers["primary"]


@dag(dag_id=DAG_ID, schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     tags=["llm", "llm_patterns"], max_active_tasks=4, params=PARAMS)
def llm_retry_patterns() -> None:
    @task
    def load_documents() -> list[dict[str, Any]]:
        return [
            {"doc_id": i, "text": f"Document {i} explains {TOPICS[i % len(TOPICS)]} for LLM "
                                  f"pipelines. " * (3 + i % 4)}
            for i in range(N_DOCS)
        ]

    @task(
        pool=POOL,
        retries=3,
        retry_delay=timedelta(seconds=1),
        retry_policy=LLMRetryPolicy(BackoffPolicy(base_delay=1.0, max_delay=4.0,
                                                  jitter="equal")),
        on_retry_callback=on_retry,
        on_failure_callback=on_failure,
        on_success_callback=on_success,
    )
    def summarize(doc: dict[str, Any]) -> dict[str, Any]:
        started_at = time.time()  # wall time: the state store's time base
        context = get_current_context()
        labels = task_labels(context)
        first_look = int(context.get("task_reschedule_count") or 0) == 0
        with reschedule_on_backpressure(context, max_reschedules=5):
            client, servers, primary_breaker = build_client(
                labels["run_id"], doc["doc_id"], labels["try_number"], first_look,
                dict(context["params"]))
            breaker_seen = primary_breaker.state.value  # what this worker found on arrival
            costs: list[Decimal] = []
            client.subscribe(lambda e: costs.append(e.data["cost"])
                             if e.kind == "response" and e.data.get("cost") is not None
                             else None)
            response = client.complete(
                f"Summarize in one sentence:\n{doc['text']}", max_tokens=64,
                dag_id=labels["dag_id"], task_id=ledger_task_id(labels),
                run_id=labels["run_id"],
            )
        cost = sum(costs, Decimal(0))
        calls = {name: srv.stats["requests"] for name, srv in servers.items()}
        return llm_result(response, cost, context=context, doc_id=doc["doc_id"],
                          summary=response.text[:80], requests=calls, pid=os.getpid(),
                          started_at=started_at, finished_at=time.time(),
                          primary_breaker=breaker_seen)

    @task
    def aggregate_costs(results: list[dict[str, Any]]) -> dict[str, Any]:
        from llm_patterns import SQLiteLedger

        summary = sum_costs(results)
        labels = task_labels(get_current_context())
        with SQLiteLedger(ledger_path()) as ledger:
            ledger_total = ledger.total(dag_id=labels["dag_id"], run_id=labels["run_id"])
        summary["ledger_total"] = str(ledger_total)
        if Decimal(summary["total"]) != ledger_total:
            log.warning("XCom costs sum to $%s but the ledger holds $%s for this run",
                        summary["total"], ledger_total)
        log.info("run %s: %d documents, $%s total (%s), %d fallbacks",
                 labels["run_id"], summary["tasks"], summary["total"], summary["by_provider"],
                 summary["fallbacks"])
        return summary

    aggregate_costs(summarize.expand(doc=load_documents()))


dag_obj = llm_retry_patterns()

if __name__ == "__main__":
    dag_run = dag_obj.test()
    print(dag_run.state)
