"""Airflow 3.3 integration: LLMRetryPolicy, task args, reschedule, and the DAG under dag.test().

Skipped cleanly when Airflow (extra [airflow]) is not installed. Airflow reads its config at
import, so the environment is set here BEFORE anything imports it (research airflow.md §2):
AIRFLOW_HOME in a temp dir, examples off, DAGS_FOLDER = the repo's dags/.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "llm_retry_patterns.py"

if importlib.util.find_spec("airflow") is None:  # pragma: no cover - depends on the extra
    pytest.skip("apache-airflow (extra [airflow]) is not installed", allow_module_level=True)

if "airflow" not in __import__("sys").modules:
    _HOME = tempfile.mkdtemp(prefix="llm-patterns-airflow-")
    os.environ["AIRFLOW_HOME"] = _HOME
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

# Airflow reads its configuration at import: these come after the environment above
from airflow.exceptions import AirflowRescheduleException  # noqa: E402
from airflow.sdk import RetryAction  # noqa: E402

from llm_patterns import (  # noqa: E402
    AllProvidersFailed,
    AuthenticationError,
    BackoffPolicy,
    BudgetExceeded,
    CircuitOpenError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from llm_patterns.integrations.airflow import (  # noqa: E402
    LLMRetryPolicy,
    aggregate_costs,
    backoff_task_args,
    backpressure_delay,
    reschedule_on_backpressure,
)

pytestmark = pytest.mark.airflow


def _context(map_index=0, try_number=1, run_id="manual__1", task_id="summarize", dag_id="d",
             reschedules=0):
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index,
                         try_number=try_number, max_tries=3)
    return {"ti": ti, "task_reschedule_count": reschedules}


# ----------------------------------------------------------------------------- RetryPolicy


def test_retry_after_sets_the_delay():
    policy = LLMRetryPolicy(BackoffPolicy(base_delay=1, max_delay=4))
    d = policy.evaluate(RateLimitError("429", retry_after=7.5), 1, 3, _context())
    assert d.action is RetryAction.RETRY and d.retry_delay == timedelta(seconds=7.5)
    assert "Retry-After" in d.reason
    too_long = policy.evaluate(RateLimitError("429", retry_after=3600), 1, 3, _context())
    assert too_long.action is RetryAction.FAIL


@pytest.mark.parametrize("error", [
    AuthenticationError("401"), QuotaExceededError("insufficient_quota"),
    InvalidRequestError("400"), BudgetExceeded("over"),
    AllProvidersFailed([("a", AuthenticationError("401")), ("b", InvalidRequestError("400"))]),
])
def test_non_retryable_fails_at_once(error):
    d = LLMRetryPolicy().evaluate(error, 1, 5, _context())
    assert d.action is RetryAction.FAIL and "not retryable" in d.reason


def test_transient_errors_retry_with_backoff():
    policy = LLMRetryPolicy(BackoffPolicy(base_delay=1, max_delay=60, jitter="none"))
    delays = [policy.evaluate(ServerError("503"), t, 9, _context()).retry_delay.total_seconds()
              for t in (1, 2, 3, 4)]
    assert delays == [1, 2, 4, 8]
    # all providers failed: an open breaker's cooldown is no Retry-After; the 429's is
    mixed = AllProvidersFailed([("a", CircuitOpenError("open", retry_after=55)),
                                ("b", RateLimitError("429", retry_after=3))])
    assert policy.evaluate(mixed, 1, 3, _context()).retry_delay == timedelta(seconds=3)
    outage = AllProvidersFailed([("a", CircuitOpenError("open", retry_after=55)),
                                 ("b", ServerError("500"))])
    assert policy.evaluate(outage, 1, 3, _context()).retry_delay == timedelta(seconds=1)


def test_jitter_differs_across_map_indexes_and_is_reproducible():
    policy = LLMRetryPolicy(BackoffPolicy(base_delay=8, max_delay=60, jitter="full"))

    def delay(map_index, try_number=1, run_id="manual__1"):
        ctx = _context(map_index=map_index, try_number=try_number, run_id=run_id)
        return policy.evaluate(ServerError("503"), try_number, 5, ctx).retry_delay

    herd = [delay(i) for i in range(8)]
    assert len(set(herd)) == 8  # Airflow's own hash would give all 8 the same delay
    assert herd == [delay(i) for i in range(8)]  # same instance, same delay
    assert delay(3, 2) != delay(3, 1)
    assert delay(3, run_id="manual__2") != delay(3)
    assert all(timedelta(0) <= d <= timedelta(seconds=8) for d in herd)


def test_policy_serializes_and_unknown_errors():
    policy = LLMRetryPolicy(BackoffPolicy(base_delay=2), max_retry_after=30, unknown="fail")
    again = LLMRetryPolicy.deserialize(policy.serialize())
    assert again.backoff == policy.backoff and again.max_retry_after == 30
    assert again.evaluate(KeyError("bug"), 1, 3, _context()).action is RetryAction.FAIL
    assert LLMRetryPolicy().evaluate(KeyError("bug"), 1, 3, _context()).action is RetryAction.RETRY
    assert LLMRetryPolicy(unknown="default").evaluate(KeyError("x"), 1, 3,
                                                      None).action is RetryAction.DEFAULT


def test_backoff_task_args():
    args = backoff_task_args(BackoffPolicy(base_delay=2, multiplier=3, max_delay=90), 4)
    assert args == {"retries": 4, "retry_delay": timedelta(seconds=2),
                    "retry_exponential_backoff": 3.0, "max_retry_delay": timedelta(seconds=90)}
    assert backoff_task_args(BackoffPolicy(multiplier=1), 1)["retry_exponential_backoff"] == 0
    with pytest.raises(ValueError, match="retries"):
        backoff_task_args(BackoffPolicy(), -1)
    with pytest.raises(TypeError, match="BackoffPolicy"):
        backoff_task_args({"base_delay": 1}, 1)
    from airflow.sdk import task

    @task(**args)
    def t() -> None: ...

    op = t().operator
    assert op.retries == 4 and op.retry_delay == timedelta(seconds=2)


# ----------------------------------------------------------------------------- backpressure


def test_reschedule_on_rate_limit_timeout():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(AirflowRescheduleException) as info, \
            reschedule_on_backpressure(_context(), now=now):
        raise RateLimitTimeout("would wait", retry_after=4.2)
    assert info.value.reschedule_date == now + timedelta(seconds=5)
    # every provider said "not now": the soonest wins
    waits = AllProvidersFailed([("a", CircuitOpenError("open", retry_after=50)),
                                ("b", RateLimitTimeout("busy", retry_after=2))])
    assert backpressure_delay(waits) == 2
    # a real failure is not backpressure: it propagates unchanged, for the retry policy
    real = AllProvidersFailed([("a", RateLimitTimeout("busy", retry_after=2)),
                               ("b", ServerError("500"))])
    with pytest.raises(AllProvidersFailed), reschedule_on_backpressure(_context(), now=now):
        raise real
    # after max_reschedules the error goes on to the retry policy
    with pytest.raises(RateLimitTimeout), \
            reschedule_on_backpressure(_context(reschedules=3), max_reschedules=3, now=now):
        raise RateLimitTimeout("would wait", retry_after=1)


def test_aggregate_costs_is_exact():
    results = [{"provider": "p", "model": "m", "cost": "0.1", "usage": {"prompt_tokens": 1},
                "attempts": 1}] * 3 + [None]
    out = aggregate_costs(results)
    assert Decimal(out["total"]) == Decimal("0.3")  # 0.1 + 0.1 + 0.1 as floats is not 0.3
    assert out["tasks"] == 3 and out["missing"] == 1
    with pytest.raises(ValueError, match="cost"):
        aggregate_costs([{"provider": "p"}])


# ----------------------------------------------------------------------------- the DAG


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="module")
def dag_run(airflow_db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dag")
    old = {k: os.environ.get(k) for k in ("LLM_PATTERNS_STATE", "LLM_PATTERNS_LEDGER")}
    os.environ["LLM_PATTERNS_STATE"] = f"sqlite:///{tmp / 'state.db'}"
    os.environ["LLM_PATTERNS_LEDGER"] = str(tmp / "ledger.db")
    try:
        spec = importlib.util.spec_from_file_location("llm_retry_patterns_dag", DAG_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # dag.test() runs one task at a time: loose limits keep it quick (the scheduler test
        # runs the defaults, with workers racing for them)
        dr = module.dag_obj.test(run_conf={"rpm": 600, "tpm": 200_000, "max_wait": 1.0,
                                           "burst_pause": 2.0})
        yield dr, module, tmp
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_details(dr):
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        tis = {(ti.task_id, ti.map_index): (ti.state, ti.try_number, ti.id)
               for ti in dr.get_task_instances(session=s)}
        xcoms = {(t, m): v for t, m, v in s.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
                XComModel.run_id == dr.run_id, XComModel.dag_id == dr.dag_id,
                XComModel.key == "return_value"))}
        ids = {v[2]: k for k, v in tis.items()}
        reschedules = [ids.get(r.ti_id) for r in s.scalars(select(TaskReschedule))]
    return tis, xcoms, reschedules


def test_dag_run_succeeds_with_retries_reschedules_and_exact_costs(dag_run):
    from llm_patterns import SQLiteLedger
    from llm_patterns.state import SharedCircuitBreaker, from_url

    dr, module, tmp = dag_run
    assert dr.state == "success"
    tis, xcoms, reschedules = _run_details(dr)
    summaries = {m: xcoms[("summarize", m)] for m in range(module.N_DOCS)}
    assert all(tis[("summarize", m)][0] == "success" for m in range(module.N_DOCS))

    # retries happened exactly where faults were injected: doc 1 failed everywhere on try 1
    tries = {m: tis[("summarize", m)][1] for m in range(module.N_DOCS)}
    for m in module.FLAKY_SECONDARY_DOCS:
        assert tries[m] == 2 and summaries[m]["try_number"] == 2
    assert all(tries[m] == 1 for m in tries if m not in module.FLAKY_SECONDARY_DOCS)
    # backpressure: the burst doc was rescheduled (slot given back) without using a retry
    for m in module.BURST_DOCS:
        assert ("summarize", m) in reschedules and tries[m] == 1
    # the primary's outage opened the SHARED breaker; later tasks skipped the dead primary
    store = from_url(os.environ.get("LLM_PATTERNS_STATE") or f"sqlite:///{tmp / 'state.db'}")
    snap = SharedCircuitBreaker(f"{module.DAG_ID}:{dr.run_id}:primary", store=store).health()
    assert snap["opened_count"] >= 1 and snap["rejections"] >= 1
    assert any(s["fallback_used"] and s["requests"]["primary"] == 0 for s in summaries.values())
    for m in module.OUTAGE_DOCS:
        assert summaries[m]["provider"] == "secondary"

    # cost: the aggregate equals the sum of the task costs, and the ledger, to the last digit
    total = sum((Decimal(s["cost"]) for s in summaries.values()), Decimal(0))
    agg = xcoms[("aggregate_costs", -1)]
    assert Decimal(agg["total"]) == total > 0
    assert agg["tasks"] == module.N_DOCS and agg["missing"] == 0
    with SQLiteLedger(tmp / "ledger.db") as ledger:
        assert ledger.total(dag_id=module.DAG_ID, run_id=dr.run_id) == total
        assert ledger.count(dag_id=module.DAG_ID, run_id=dr.run_id) == module.N_DOCS
        assert {t for (_, t) in ledger.by_task(run_id=dr.run_id)} == {
            f"summarize[{m}]" for m in range(module.N_DOCS)}
    assert Decimal(agg["ledger_total"]) == total
