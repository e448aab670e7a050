"""llm_variable_race: why a running total must not live in an Airflow ``Variable``.

    reset -> spend.expand(worker=[0, 1, 2, 3]) -> compare

Each ``spend`` worker records ``INCREMENTS`` LLM costs of $0.001 twice: into the Variable
``llm_variable_race_spend`` the way a pipeline might be tempted to (``Variable.get``, the call,
``Variable.set(value + cost)``: read-modify-write, and Airflow has no compare-and-set) and into
the ``SQLiteLedger`` (one INSERT per record, in its own transaction). The workers start
together (a small file barrier, at most ``BARRIER_TIMEOUT`` s), so their read-modify-writes
interleave the way parallel workers' do; ``compare`` then shows what each kept: the Variable
loses updates, the ledger does not. Run it from the UI (``make airflow``) and open ``compare``'s
XCom; ``tests/test_airflow_scheduler.py`` runs it under the real scheduler.

Needs as many free worker slots as ``WORKERS`` (``make airflow`` runs 4), or the barrier times
out and the workers run partly one after another (fewer updates are lost).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from airflow.sdk import Variable, dag, get_current_context, task

from llm_patterns.integrations.airflow import task_labels

log = logging.getLogger("llm_patterns.dags.llm_variable_race")

DAG_ID = "llm_variable_race"
VARIABLE = "llm_variable_race_spend"
WORKERS = 4
INCREMENTS = 10
COST = Decimal("0.001")  # USD per simulated LLM call
CALL_SECONDS = 0.05  # the "LLM call" between the read and the write
BARRIER_TIMEOUT = 60.0


def ledger_path() -> str:
    return os.environ.get("LLM_PATTERNS_LEDGER") or os.path.join(
        tempfile.gettempdir(), "llm_patterns_ledger.db")


def barrier(run_id: str, worker: int, parties: int, timeout: float) -> int:
    """Wait until ``parties`` workers of this run arrived (files in a per-run folder) or
    ``timeout`` s passed; how many had arrived."""
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    folder = Path(ledger_path()).parent / f".{DAG_ID}-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(worker)).touch()
    deadline = time.monotonic() + timeout
    while (arrived := len(list(folder.iterdir()))) < parties and time.monotonic() < deadline:
        time.sleep(0.05)  # other worker processes are starting: a real wait, bounded
    return arrived


@dag(dag_id=DAG_ID, schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     max_active_runs=1, max_active_tasks=WORKERS, tags=["llm", "llm_patterns"])
def llm_variable_race() -> None:
    @task
    def reset() -> list[int]:
        Variable.set(VARIABLE, "0")  # Variable.set takes strings (or serialize_json=True)
        return list(range(WORKERS))

    @task
    def spend(worker: int) -> dict[str, Any]:
        from llm_patterns import CostRecord, SQLiteLedger

        labels = task_labels(get_current_context())
        arrived = barrier(labels["run_id"], worker, WORKERS, BARRIER_TIMEOUT)
        with SQLiteLedger(ledger_path()) as ledger:
            for _ in range(INCREMENTS):
                seen = Decimal(Variable.get(VARIABLE))  # read
                time.sleep(CALL_SECONDS)  # the LLM call; other workers write meanwhile
                Variable.set(VARIABLE, str(seen + COST))  # write: theirs are overwritten
                ledger.add(CostRecord(
                    time=time.time(), model="mock-gpt", provider="primary",
                    dag_id=labels["dag_id"], task_id=f"spend[{worker}]",
                    run_id=labels["run_id"], prompt_tokens=10, completion_tokens=10,
                    cached_tokens=0, cost=COST))
        return {"worker": worker, "pid": os.getpid(), "arrived_together": arrived}

    @task
    def compare(spent: list[dict[str, Any]]) -> dict[str, Any]:
        from llm_patterns import SQLiteLedger

        labels = task_labels(get_current_context())
        expected = COST * WORKERS * INCREMENTS
        variable = Decimal(Variable.get(VARIABLE))
        with SQLiteLedger(ledger_path()) as ledger:
            in_ledger = ledger.total(dag_id=labels["dag_id"], run_id=labels["run_id"])
        log.info("expected $%s; the Variable kept $%s (%d of %d updates); the ledger $%s",
                 expected, variable, round(variable / COST), WORKERS * INCREMENTS, in_ledger)
        return {"expected": str(expected), "variable": str(variable), "ledger": str(in_ledger),
                "workers": sorted(s["pid"] for s in spent)}

    compare(spend.expand(worker=reset()))


dag_obj = llm_variable_race()
