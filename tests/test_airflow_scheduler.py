"""The course DAGs under a real Airflow 3.3: scheduler, LocalExecutor, API server, in processes.

One Airflow per module, started exactly as ``make airflow`` starts it
(``python -m llm_patterns.integrations.airflow_standalone``; here with a temporary
``AIRFLOW_HOME``, a free port on 127.0.0.1, parallelism 4 and a pool of 3 slots), in its own
session, stopped (with every task process below it) when the module ends or fails. Then:

- ``llm_retry_patterns`` is triggered as a click on "Trigger" would (its default params): the
  mapped ``summarize`` tasks run at the same time in separate processes, at most the pool's
  slots at once; the store's own grants log shows the shared RPM/TPM buckets held over every
  window (and were full at some point: the limit was binding); the shared breaker opened and
  every task that started after that, in whichever process, skipped the primary; the
  backpressure task went through ``up_for_reschedule`` without using a try; retries happened
  where faults were injected and nowhere else; ``aggregate_costs`` equals the ledger exactly;
- ``llm_variable_race``: parallel read-modify-writes lose updates of a ``Variable``; the
  ledger's rows do not;
- the UI: log in, click Trigger (``llm_variable_race``: a run starts and succeeds), open the
  retry run's mapped ``summarize`` tasks in the grid view (a screenshot goes
  to ``test-artifacts/``; ``LLM_PATTERNS_UPDATE_SCREENSHOTS=1`` also refreshes the committed
  ``notebooks/images/airflow_grid.png``).

Real time is unavoidable here (processes cannot share a virtual clock): every wait polls a
condition with a deadline, never a fixed sleep that a slow machine could outgrow.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from grants_audit import fullest, violations

from llm_patterns.integrations.airflow_standalone import descendants, kill_all
from llm_patterns.ledger import SQLiteLedger
from llm_patterns.machines.bucket import limits_for
from llm_patterns.state import SharedCircuitBreaker, SQLiteStateStore, from_url

if importlib.util.find_spec("airflow") is None:  # pragma: no cover - depends on the extra
    pytest.skip("apache-airflow (extra [airflow]) is not installed", allow_module_level=True)

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "airflow"
SCREENSHOT = REPO / "notebooks" / "images" / "airflow_grid.png"
CHROMIUM = Path("/usr/bin/chromium")
STARTUP_S = 240.0  # a cold start on a busy 2-core machine takes about a minute
RUN_S = 240.0
POOL_SLOTS = 3  # below parallelism (4): the pool, not the executor, caps the summaries
POLL_S = 0.25


def dag_constants(path: Path) -> dict[str, Any]:
    """The module-level literal constants of a DAG file (``N = 8``, ``DOCS = {1, 2}``,
    ``COST = Decimal("0.001")``), read without importing Airflow into this process."""
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            value = node.value
            with contextlib.suppress(ValueError, TypeError, SyntaxError):
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                        and value.func.id == "Decimal"):
                    out[node.targets[0].id] = Decimal(ast.literal_eval(value.args[0]))
                else:
                    out[node.targets[0].id] = ast.literal_eval(value)
    return out


RETRY = dag_constants(REPO / "dags" / "llm_retry_patterns.py")
RACE = dag_constants(REPO / "dags" / "llm_variable_race.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Airflow:
    """A running course Airflow and a logged-in REST client."""

    home: Path
    url: str
    password: str
    state_url: str
    ledger: Path
    client: httpx.Client | None = None

    def login(self) -> None:
        r = httpx.post(f"{self.url}/auth/token", timeout=30,
                       json={"username": "admin", "password": self.password})
        r.raise_for_status()
        self.client = httpx.Client(base_url=f"{self.url}/api/v2", timeout=30, headers={
            "Authorization": f"Bearer {r.json()['access_token']}"})

    def get(self, path: str, **params: Any) -> Any:
        assert self.client is not None
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        assert self.client is not None
        r = self.client.post(path, json=body)
        r.raise_for_status()
        return r.json()

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        run = urllib.parse.quote(run_id, safe="")
        return self.get(f"/dags/{dag_id}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/"
                        "return_value", map_index=map_index)["value"]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} missing)"


def _diagnosis(af: Airflow, launcher_log: Path) -> str:
    parts = [f"--- launcher\n{_tail(launcher_log)}"]
    for log in sorted((af.home / "logs" / "components").glob("*.log")):
        parts.append(f"--- {log.stem}\n{_tail(log, 25)}")
    return "\n".join(parts)


def _stop(proc: subprocess.Popen[bytes]) -> list[int]:
    """Stop the launcher (it stops its components and every task process below it); SIGKILL
    whatever is left after 60 s. Returns the processes that were still alive at the end."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    left = sorted(set(tree + descendants(proc.pid)))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    kill_all(left)
    proc.wait(timeout=30)
    alive = []
    for pid in left:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(pid)
    return alive


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    base = tmp_path_factory.mktemp("airflow")
    home, port = base / "home", _free_port()
    af = Airflow(home=home, url=f"http://127.0.0.1:{port}", password="",
                 state_url=f"sqlite:///{home / 'state.db'}?log_grants=1",
                 ledger=home / "ledger.db")
    # another test module may have pointed AIRFLOW_* at its own in-process Airflow: not ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(LLM_PATTERNS_STATE=af.state_url, LLM_PATTERNS_LEDGER=str(af.ledger))
    launcher_log = base / "launcher.log"
    with open(launcher_log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_patterns.integrations.airflow_standalone",
             "--home", str(home), "--dags", str(REPO / "dags"), "--port", str(port),
             "--parallelism", "4", "--pool-slots", str(POOL_SLOTS), "--stop-with-parent"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        deadline = started + STARTUP_S
        while "Airflow is ready" not in launcher_log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Airflow did not come up within {STARTUP_S:g} s "
                            f"(exit {proc.poll()}):\n{_diagnosis(af, launcher_log)}")
            time.sleep(POLL_S)
        af.password = json.loads(
            (home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        assert af.password in launcher_log.read_text()  # printed for the student
        af.login()
        while {d["dag_id"] for d in af.get("/dags")["dags"]} < {RETRY["DAG_ID"], RACE["DAG_ID"]}:
            if time.monotonic() > deadline:
                pytest.fail(f"the course DAGs were not parsed within {STARTUP_S:g} s: "
                            f"{af.get('/importErrors')}\n{_diagnosis(af, launcher_log)}")
            time.sleep(POLL_S)
        assert af.get("/importErrors")["total_entries"] == 0
        print(f"airflow up in {time.monotonic() - started:.1f} s")
        yield af
    finally:
        survivors = _stop(proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(launcher_log, ARTIFACTS / "launcher.log")
        for log in (home / "logs" / "components").glob("*.log"):
            shutil.copy(log, ARTIFACTS / log.name)
        if af.client is not None:
            af.client.close()
        assert not survivors, f"processes left running after the stop: {survivors}"


@dataclass
class Run:
    """A finished DAG run and what was seen while it ran."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    tis: dict[tuple[str, int], dict[str, Any]]
    seen: list[tuple[float, str, int, str, int]] = field(default_factory=list)
    most_running: dict[str, int] = field(default_factory=dict)


def run_dag(af: Airflow, dag_id: str, conf: dict[str, Any] | None = None) -> Run:
    """Trigger ``dag_id`` (``conf`` {} = its default params, as a click on Trigger) and poll it
    to the end, recording every task state and try number seen and how many instances of each
    task were running at once."""
    t0 = time.monotonic()
    run_id = af.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})[
        "dag_run_id"]
    quoted = urllib.parse.quote(run_id, safe="")
    run = Run(dag_id, run_id, "queued", 0.0, {})
    last: dict[tuple[str, int], tuple[str, int]] = {}
    while True:
        state = af.get(f"/dags/{dag_id}/dagRuns/{quoted}")["state"]
        tis = af.get(f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances", limit=200)[
            "task_instances"]
        now = time.monotonic() - t0
        running: dict[str, int] = {}
        for ti in tis:
            key, st = (ti["task_id"], ti["map_index"]), (ti["state"], ti["try_number"])
            if last.get(key) != st:
                last[key] = st
                run.seen.append((round(now, 2), *key, *st))
            if ti["state"] == "running":
                running[ti["task_id"]] = running.get(ti["task_id"], 0) + 1
        for task, n in running.items():
            run.most_running[task] = max(run.most_running.get(task, 0), n)
        if state in ("success", "failed"):
            run.state, run.seconds = state, now
            run.tis = {(ti["task_id"], ti["map_index"]): ti for ti in tis}
            print(f"{dag_id} {run_id}: {state} in {now:.1f} s")
            return run
        if now > RUN_S:
            pytest.fail(f"{dag_id} did not finish within {RUN_S:g} s; states: "
                        f"{sorted(last.items())}")
        time.sleep(POLL_S)


@dataclass
class RetryRun:
    run: Run
    summaries: dict[int, dict[str, Any]]
    aggregate: dict[str, Any]
    params: dict[str, Any]


@pytest.fixture(scope="module")
def retry_run(airflow: Airflow) -> RetryRun:
    run = run_dag(airflow, RETRY["DAG_ID"])
    (ARTIFACTS / "retry_run_states.json").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "retry_run_states.json").write_text(json.dumps(run.seen, indent=0))
    assert run.state == "success", f"the run failed; states seen: {run.seen}"
    summaries = {m: airflow.xcom(run.dag_id, run.run_id, "summarize", m)
                 for m in range(RETRY["N_DOCS"])}
    params = {k: v["value"] for k, v in airflow.get(f"/dags/{run.dag_id}/details")[
        "params"].items()}
    return RetryRun(run, summaries, airflow.xcom(run.dag_id, run.run_id, "aggregate_costs"),
                    params)


def _most_overlapping(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_the_mapped_summaries_run_at_once_in_separate_processes(retry_run: RetryRun) -> None:
    results = list(retry_run.summaries.values())
    assert len(results) == RETRY["N_DOCS"] == len(
        [k for k in retry_run.run.tis if k[0] == "summarize"])
    assert len({r["pid"] for r in results}) == len(results)  # one process per task instance
    assert os.getpid() not in {r["pid"] for r in results}
    bodies = _most_overlapping([(r["started_at"], r["finished_at"]) for r in results])
    assert bodies >= 2, "no two summaries ever ran at the same time"
    # the pool (3 slots), not the executor's parallelism (4), capped them
    assert 2 <= retry_run.run.most_running.get("summarize", 0) <= POOL_SLOTS
    assert bodies <= POOL_SLOTS


def test_the_shared_rate_limits_held_over_every_window(retry_run: RetryRun,
                                                       airflow: Airflow) -> None:
    p = retry_run.params
    limits = limits_for({"requests": p["rpm"], "tokens": p["tpm"]}, RETRY["BURST_SECONDS"])
    store = from_url(airflow.state_url)
    assert isinstance(store, SQLiteStateStore) and store.log_grants
    scope = f"{RETRY['DAG_ID']}:{retry_run.run.run_id}"
    calls = sum(sum(r["requests"].values()) for r in retry_run.summaries.values())
    granted = 0
    for provider in ("primary", "secondary"):
        rows = store.grants(f"limiter:{scope}:{provider}")
        granted += sum(r.op == "grant" for r in rows)
        for limit in limits:
            assert violations(rows, limit) == [], f"{provider} {limit.kind} went over"
    # every call that reached a mock provider was granted first (refused tries are not)
    assert granted >= calls > 0
    # the limit was binding: the secondary (every fallback) filled a window to within one
    # request / one request's tokens of what its buckets allow
    rows = store.grants(f"limiter:{scope}:secondary")
    assert fullest(rows, limits[0]).over > -1.0
    assert fullest(rows, limits[1]).over > -200.0


def test_the_shared_breaker_opened_for_every_worker(retry_run: RetryRun,
                                                    airflow: Airflow) -> None:
    scope = f"{RETRY['DAG_ID']}:{retry_run.run.run_id}"
    health = SharedCircuitBreaker(f"{scope}:primary", store=from_url(airflow.state_url),
                                  failure_threshold=RETRY["BREAKER_THRESHOLD"],
                                  reset_timeout=RETRY["BREAKER_RESET"]).health()
    assert health["state"] == "open" and health["opened_count"] == 1, health
    opened_at = health["last_state_change"]
    late = [r for r in retry_run.summaries.values() if r["started_at"] > opened_at]
    assert len({r["pid"] for r in late}) >= 2, "too few workers started after the opening"
    for r in late:  # each saw it open on arrival and never called the dead primary
        assert r["primary_breaker"] == "open", r
        assert r["requests"]["primary"] == 0 and r["provider"] == "secondary", r
    assert health["rejections"] >= len(late)
    # only the documents with the outage made the primary fail
    assert all(r["requests"]["primary"] == 0 or r["doc_id"] in RETRY["OUTAGE_DOCS"]
               or r["provider"] == "primary" for r in retry_run.summaries.values())


def test_backpressure_reschedules_without_using_a_try(retry_run: RetryRun,
                                                      airflow: Airflow) -> None:
    run = retry_run.run
    with sqlite3.connect(f"file:{airflow.home / 'airflow.db'}?mode=ro", uri=True) as db:
        rescheduled = {m for (m,) in db.execute(
            "SELECT ti.map_index FROM task_reschedule tr JOIN task_instance ti "
            "ON ti.id = tr.ti_id WHERE ti.dag_id = ? AND ti.run_id = ? "
            "AND ti.task_id = 'summarize'", (run.dag_id, run.run_id))}
    for m in RETRY["BURST_DOCS"]:
        states = [(state, tries) for _, task, mi, state, tries in run.seen
                  if task == "summarize" and mi == m]
        assert ("up_for_reschedule", 1) in states, states
        assert m in rescheduled
        assert run.tis[("summarize", m)]["try_number"] == 1
        assert retry_run.summaries[m]["try_number"] == 1
    # a rescheduled task never used a try (unless it is the one with injected failures)
    for m in rescheduled - set(RETRY["FLAKY_SECONDARY_DOCS"]):
        assert run.tis[("summarize", m)]["try_number"] == 1


def test_retries_happen_where_faults_were_injected(retry_run: RetryRun) -> None:
    tries = {m: retry_run.run.tis[("summarize", m)]["try_number"]
             for m in range(RETRY["N_DOCS"])}
    assert {m for m, t in tries.items() if t > 1} == set(RETRY["FLAKY_SECONDARY_DOCS"])
    for m in RETRY["FLAKY_SECONDARY_DOCS"]:
        assert tries[m] == 2 and retry_run.summaries[m]["try_number"] == 2


def test_aggregate_costs_equals_the_ledger_exactly(retry_run: RetryRun,
                                                   airflow: Airflow) -> None:
    run, agg = retry_run.run, retry_run.aggregate
    total = sum((Decimal(r["cost"]) for r in retry_run.summaries.values()), Decimal(0))
    with SQLiteLedger(airflow.ledger) as ledger:
        in_ledger = ledger.total(dag_id=run.dag_id, run_id=run.run_id)
        count = ledger.count(dag_id=run.dag_id, run_id=run.run_id)
    assert Decimal(agg["total"]) == total == in_ledger > 0
    assert Decimal(agg["ledger_total"]) == in_ledger
    assert agg["tasks"] == count == RETRY["N_DOCS"] and agg["missing"] == 0


def test_a_variable_loses_parallel_updates_the_ledger_does_not(airflow: Airflow) -> None:
    run = run_dag(airflow, RACE["DAG_ID"])
    assert run.state == "success", run.seen
    out = airflow.xcom(run.dag_id, run.run_id, "compare")
    spends = [airflow.xcom(run.dag_id, run.run_id, "spend", w) for w in range(RACE["WORKERS"])]
    expected = RACE["COST"] * RACE["WORKERS"] * RACE["INCREMENTS"]
    assert Decimal(out["expected"]) == expected
    assert all(s["arrived_together"] == RACE["WORKERS"] for s in spends)  # truly in parallel
    assert len({s["pid"] for s in spends}) == RACE["WORKERS"]
    assert Decimal(out["variable"]) < expected, "the Variable kept every update"
    assert Decimal(out["ledger"]) == expected
    with SQLiteLedger(airflow.ledger) as ledger:
        assert ledger.count(dag_id=run.dag_id, run_id=run.run_id) == (
            RACE["WORKERS"] * RACE["INCREMENTS"])
    print(f"the Variable kept {Decimal(out['variable']) / RACE['COST']:.0f} of "
          f"{RACE['WORKERS'] * RACE['INCREMENTS']} updates; the ledger all of them")


def _runs(af: Airflow, dag_id: str) -> dict[str, dict[str, Any]]:
    return {r["dag_run_id"]: r for r in af.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]}


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_the_ui_triggers_a_run_and_shows_the_mapped_tasks(retry_run: RetryRun,
                                                          airflow: Airflow) -> None:
    """What a student does: log in, click Trigger (the short DAG, to stay quick), and look at
    the mapped summaries of a run in the grid view."""
    sync_api = pytest.importorskip("playwright.sync_api")
    run = retry_run.run
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{airflow.url}/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(airflow.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{airflow.url}/", timeout=60_000)

            before = _runs(airflow, RACE["DAG_ID"])
            page.goto(f"{airflow.url}/dags/{RACE['DAG_ID']}")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text(f"Trigger Dag - {RACE['DAG_ID']}").wait_for(timeout=30_000)
            dialog.get_by_role("button", name="Trigger").click()
            deadline = time.monotonic() + RUN_S
            while not (new := [r for k, r in _runs(airflow, RACE["DAG_ID"]).items()
                               if k not in before and r["state"] in ("success", "failed")]):
                assert time.monotonic() < deadline, "the clicked run did not finish"
                time.sleep(POLL_S)
            assert [(r["run_type"], r["state"]) for r in new] == [("manual", "success")]

            quoted = urllib.parse.quote(run.run_id, safe="")
            page.goto(f"{airflow.url}/dags/{run.dag_id}/runs/{quoted}/tasks/summarize/mapped")
            n = RETRY["N_DOCS"]
            page.get_by_text(f"{n} Task Instances").wait_for(timeout=60_000)
            page.get_by_text(f"summarize [{n}]").first.wait_for(timeout=30_000)
            rows = page.locator("table tbody tr")
            assert rows.count() == n
            cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(n)]
            by_index = {int(c[1]): c for c in cells}  # [checkbox, map index, state, ...]
            assert sorted(by_index) == list(range(n))
            assert all("Success" in c[2] for c in cells)
            for m in RETRY["FLAKY_SECONDARY_DOCS"]:
                assert by_index[m][4].strip() == "2"  # its try number, as the grid shows it
            assert page.get_by_text("summarize [ ]").count() >= 1  # the grid's mapped row
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "airflow_grid.png"))
            if os.environ.get("LLM_PATTERNS_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ARTIFACTS / "airflow_grid.png", SCREENSHOT)
        finally:
            browser.close()
