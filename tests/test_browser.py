"""The dashboard in a real browser: JupyterLab and Voila, driven by headless Debian chromium.

Starts JupyterLab (and then Voila) on 127.0.0.1 on a free port, in a temporary copy of
``notebooks/`` with isolated settings, drives ``/usr/bin/chromium`` with Python playwright (no
browser download), runs the dashboard, waits for the gauges, the breaker badges and a drawn
plotly trace, clicks "take primary down" (breaker OPEN, fallbacks rise) and "bring it back"
(breaker CLOSED), saves screenshots under ``test-artifacts/`` and checks the page logged no
JavaScript errors. Every wait is on a condition in the page, with generous timeouts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "dashboard.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "lp-browser-test-token"
WAIT_MS = 45_000  # generous: a cold kernel start plus plotly's first draw on a slow machine

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian chromium at /usr/bin/chromium "
                              "(`make test` installs it with apt-get; root only)"),
]

# Console noise that is not ours: Voila 0.5 bundles an older JupyterLab core, so lab
# extensions built for 4.6 log version mismatches; browsers log missing favicons.
NOISE = ("Unsatisfied version", "Failed to create module", "favicon", "shared singleton",
         "Failed to load resource: the server responded with a status of 404")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)  # polling a server that is starting; not a correctness wait
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not open within {timeout:g} s")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "notebooks" / NOTEBOOK).exists():
        pytest.skip(f"notebooks/{NOTEBOOK} is missing: run `make notebooks`")
    base = tmp_path_factory.mktemp("browser")
    root = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    for d in ("workspaces", "runtime", "config"):
        (base / d).mkdir()
    return base


def _env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               JUPYTER_CONFIG_DIR=str(base / "config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def _root_flag() -> list[str]:
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                    "--disable-background-networking"])
        yield b
        b.close()


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server we started (its own process group: the server and its kernels)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # kernels still shutting down: don't wait for them
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


# Lab extensions whose errors are ours: the widget manager, anywidget (our BreakerLight and
# plotly's FigureWidget) and plotly's renderer. Errors located in any other extension's bundle
# (jupytext, nbdime ... under Voila's older core) are noise for this test.
OURS = ("@jupyter-widgets", "anywidget", "jupyterlab-plotly", "plotly", "lp-", "llm_patterns")


class Console:
    """Collects the page's console errors, uncaught exceptions and failed requests."""

    def __init__(self, page: object) -> None:
        self.errors: list[str] = []
        self.all: list[str] = []
        page.on("console", self._console)  # type: ignore[attr-defined]
        page.on("pageerror", self._pageerror)  # type: ignore[attr-defined]
        page.on("requestfailed",  # type: ignore[attr-defined]
                lambda r: self.all.append(f"requestfailed: {r.url} {r.failure}"))

    def _console(self, msg: object) -> None:
        text = f"{msg.type}: {msg.text}"  # type: ignore[attr-defined]
        self.all.append(text)
        if msg.type == "error":  # type: ignore[attr-defined]
            self.errors.append(text)

    def _pageerror(self, exc: object) -> None:
        text = f"pageerror: {exc}\n{getattr(exc, 'stack', '')}"
        self.all.append(text)
        self.errors.append(text)

    def ours(self) -> list[str]:
        """Errors from our widgets: not known noise, and not located in another extension."""
        out = []
        for text in self.errors:
            if any(n in text for n in NOISE) or "ERR_NAME_NOT_RESOLVED" in text:
                continue  # offline machine: a CDN font or MathJax the page does not need
            foreign = "/labextensions/" in text and not any(o in text for o in OURS)
            if not foreign:
                out.append(text)
        return out

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.all) + "\n", encoding="utf-8")


JS_PRIMARY_STATE = """() => {
  const card = [...document.querySelectorAll('.lp-breaker-card')]
      .find(c => c.textContent.includes('primary breaker'));
  return card ? card.dataset.state : null;
}"""
JS_FALLBACKS = "() => +(document.querySelector('.lp-fallbacks')?.textContent ?? -1)"
JS_TRACE_DRAWN = """() => [...document.querySelectorAll('.js-plotly-plot .scatterlayer .trace path.js-line')]
    .some(p => (p.getAttribute('d') || '').length > 20)"""


class Stages:
    """Seconds per stage, printed (``-s``) and saved, to keep the test's run time visible."""

    def __init__(self, name: str) -> None:
        self.name, self.t0, self.last, self.rows = name, time.monotonic(), time.monotonic(), []

    def __call__(self, stage: str) -> None:
        now = time.monotonic()
        self.rows.append(f"{self.name}: {stage:<28} {now - self.last:6.1f} s  (total {now - self.t0:.1f} s)")
        print(self.rows[-1])
        self.last = now


def _exercise_dashboard(page: object, shots: str, stage: Stages) -> dict[str, object]:
    """The checks shared by Lab and Voila, once the dashboard is running."""
    page.wait_for_selector(".lp-bucket-gauge .widget-hprogress", timeout=WAIT_MS)
    page.wait_for_selector(".lp-breaker-badge", timeout=WAIT_MS)
    page.wait_for_function(f"() => ({JS_PRIMARY_STATE})() === 'closed'", timeout=WAIT_MS)
    page.wait_for_function(JS_TRACE_DRAWN, timeout=WAIT_MS)
    page.wait_for_function("() => +(document.querySelector('.lp-answered')?.textContent ?? 0) > 0",
                           timeout=WAIT_MS)
    # 10x: the breaker's 5 s cooldown passes in half a second (and the speed control is tested)
    page.locator(".widget-toggle-button", has_text="10×").click()
    page.wait_for_selector(".lp-status >> text=speed 10×", timeout=WAIT_MS)
    stage("widgets drawn")
    page.screenshot(path=str(ARTIFACTS / f"{shots}_running.png"))
    before = page.evaluate(JS_FALLBACKS)
    page.locator(".lp-take-down").click()
    page.wait_for_function(f"() => ({JS_PRIMARY_STATE})() === 'open'", timeout=WAIT_MS)
    page.wait_for_function(f"() => ({JS_FALLBACKS})() > {before}", timeout=WAIT_MS)
    after = page.evaluate(JS_FALLBACKS)
    page.wait_for_selector(".lp-status >> text=primary DOWN", timeout=WAIT_MS)
    stage("breaker OPEN, fallbacks up")
    page.screenshot(path=str(ARTIFACTS / f"{shots}_primary_down.png"))
    page.locator(".lp-bring-up").click()
    page.wait_for_function(f"() => ({JS_PRIMARY_STATE})() === 'closed'", timeout=WAIT_MS)
    page.wait_for_selector(".lp-status >> text=primary up", timeout=WAIT_MS)
    stage("breaker CLOSED again")
    page.screenshot(path=str(ARTIFACTS / f"{shots}_recovered.png"))
    return {"fallbacks_before": before, "fallbacks_after": after}


def test_dashboard_in_jupyterlab(workdir: Path, browser: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(workdir / "lab.log", "w")  # noqa: SIM115 - the server writes it until teardown
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={workdir / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *_root_flag()],
        env=_env(workdir), stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        start_new_session=True)
    context = None
    try:
        stage = Stages("lab")
        _wait_http(f"{base}/api/status?token={TOKEN}", lab)
        stage("server up")
        context = browser.new_context(viewport={"width": 1400, "height": 1600})  # type: ignore[attr-defined]
        page = context.new_page()
        console = Console(page)
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=WAIT_MS)
        page.wait_for_function(
            "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel"
            "?.status === 'idle'", timeout=WAIT_MS)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jp-OutputArea-output >> text=live demo running", timeout=WAIT_MS)
        # scroll the notebook so the dashboard fills the viewport for the screenshots
        page.evaluate("document.querySelector('.lp-dashboard')?.scrollIntoView()")
        stage("notebook ran")
        counts = _exercise_dashboard(page, "lab", stage)
        assert counts["fallbacks_after"] > counts["fallbacks_before"]
        page.locator(".lp-dashboard").screenshot(path=str(ARTIFACTS / "lab_dashboard.png"))
        console.save(ARTIFACTS / "lab_console.log")
        assert console.ours() == [], "JavaScript errors in JupyterLab:\n" + "\n".join(console.ours())
    finally:
        if context is not None:
            context.close()
        _stop(lab)
        log.close()
        if "stage" in locals():
            stage("server stopped")
        shutil.copy(workdir / "lab.log", ARTIFACTS / "lab_server.log")


def test_dashboard_in_voila(workdir: Path, browser: object) -> None:
    voila_bin = Path(sys.executable).with_name("voila")
    if not voila_bin.exists():
        pytest.skip("voila is not installed next to this Python")
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = open(workdir / "voila.log", "w")  # noqa: SIM115 - the server writes it until teardown
    voila = subprocess.Popen(
        [str(voila_bin), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--progressive_rendering=True", NOTEBOOK],
        env=_env(workdir), stdout=log, stderr=subprocess.STDOUT, cwd=workdir / "notebooks",
        start_new_session=True)
    context = None
    try:
        stage = Stages("voila")
        _wait_port(port, voila)  # GET / would execute the notebook: only check the port
        stage("server up")
        context = browser.new_context(viewport={"width": 1400, "height": 1600})  # type: ignore[attr-defined]
        page = context.new_page()
        console = Console(page)
        page.goto(f"http://127.0.0.1:{port}/")
        stage("page opened")
        counts = _exercise_dashboard(page, "voila", stage)
        assert counts["fallbacks_after"] > counts["fallbacks_before"]
        page.screenshot(path=str(ARTIFACTS / "voila_dashboard.png"), full_page=True)
        console.save(ARTIFACTS / "voila_console.log")
        assert console.ours() == [], "JavaScript errors in Voila:\n" + "\n".join(console.ours())
    finally:
        if context is not None:
            context.close()
        _stop(voila)
        log.close()
        if "stage" in locals():
            stage("server stopped")
        shutil.copy(workdir / "voila.log", ARTIFACTS / "voila_server.log")
