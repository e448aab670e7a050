"""The course's local Airflow 3.3 (``make airflow``): every component, on 127.0.0.1, set up once.

``python -m llm_patterns.integrations.airflow_standalone [--home airflow-home] [--port 8080]``
does what ``airflow standalone`` does, with the settings a student should never have to debug:

- ``AIRFLOW_HOME`` inside the repo (``airflow-home/``), the course ``dags/`` folder, no example
  DAGs, DAGs unpaused (runnable by one click on "Trigger"), ``parallelism`` 4 on LocalExecutor;
- the API server on ``127.0.0.1:<port>`` and the execution-API URL the task runners call set to
  that same address (the usual trap: the runner defaults to ``localhost:8080`` whatever port the
  API server got);
- loopback only: ``airflow standalone`` starts log servers listening on every interface (their
  host is hard-coded); here the scheduler and triggerer run with ``--skip-serve-logs`` (the API
  server reads the task logs from ``airflow-home/logs`` on this host);
- the ``llm_api`` pool created (``--pool-slots``), the admin password generated once and printed
  at every start, the library's shared state and cost ledger in ``airflow-home/``
  (``LLM_PATTERNS_STATE`` with the grants log on, ``LLM_PATTERNS_LEDGER``);
- ``airflow-home/env.sh`` to source for the ``airflow`` CLI in another terminal.

The components (api-server, scheduler, dag-processor, triggerer) run as children and write to
``airflow-home/logs/components/<name>.log``; Ctrl-C (or SIGTERM) stops them all; if one dies,
the others are stopped and the tail of its log is printed. Airflow runs each task in a process
group of its own, so a task still running when its worker is killed would outlive a
``kill`` of our group: this process is the tree's child subreaper (Linux), orphans come back to
it, and stopping ends every process left below it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
POOL = "llm_api"
ADMIN = "admin"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # SimpleAuthManager's default
COMPONENTS: dict[str, tuple[str, ...]] = {
    "api-server": ("api-server",),  # host and port from the environment
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}


@dataclass(frozen=True)
class Settings:
    """Where the course's Airflow lives and how it runs."""

    home: Path = Path("airflow-home")  # relative to the repo, where make runs
    dags: Path = Path("dags")
    port: int = 8080
    parallelism: int = 4
    pool_slots: int = 4
    components: tuple[str, ...] = tuple(COMPONENTS)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every component (and the ``airflow`` CLI) runs with."""
    env = dict(os.environ if base is None else base)
    home = settings.home.resolve()
    bin_dir = str(Path(sys.executable).parent)  # this venv's ``airflow``
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(settings.port),
        "AIRFLOW__API__BASE_URL": f"{settings.url}/",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret(home),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",  # no extra listener
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",  # a new DAG file shows up in ~20 s
        "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")]),
    })
    env.setdefault("LLM_PATTERNS_STATE", f"sqlite:///{home / 'llm_state.db'}?log_grants=1")
    env.setdefault("LLM_PATTERNS_LEDGER", str(home / "llm_ledger.db"))
    return env


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def admin_password(home: Path) -> str:
    """The admin's password: generated once (SimpleAuthManager's file, mode 600), then kept."""
    path = home / PASSWORD_FILE
    if path.exists():
        try:
            password = json.loads(path.read_text()).get(ADMIN)
        except (ValueError, AttributeError):
            password = None
        if isinstance(password, str) and password:
            return password
    password = secrets.token_urlsafe(12)
    _write_private(path, json.dumps({ADMIN: password}) + "\n")
    return password


def jwt_secret(home: Path) -> str:
    """The key every component signs and checks task tokens with: generated once, kept in
    ``airflow-home/jwt_secret`` (mode 600). Airflow does not write it to ``airflow.cfg``, so
    without it each component draws its own and every task fails with "Invalid auth token"."""
    path = home / "jwt_secret"
    if path.exists() and (secret := path.read_text().strip()):
        return secret
    secret = secrets.token_urlsafe(32)
    _write_private(path, secret + "\n")
    return secret


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def prepare(settings: Settings, env: Mapping[str, str]) -> None:
    """Create or migrate the metadata database and the ``llm_api`` pool. Runs in a child
    process: Airflow reads its configuration once, at import, from the environment."""
    code = (
        "from airflow.utils import db\n"
        "from airflow.models.pool import Pool\n"
        "db.initdb()\n"
        f"Pool.create_or_update_pool({POOL!r}, {settings.pool_slots}, "
        "'LLM API calls: how many LLM tasks may run at once, across every worker', False)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=dict(env), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300,
                   preexec_fn=stop_with_parent)


def write_env_file(settings: Settings, env: Mapping[str, str]) -> Path:
    """``airflow-home/env.sh``: ``source`` it to use the ``airflow`` CLI on this instance."""
    keys = sorted(k for k in env if k.startswith(("AIRFLOW", "LLM_PATTERNS_")))
    lines = ["# source this file to use the `airflow` CLI on the course's Airflow"]
    lines += [f"export {k}={shlex.quote(env[k])}" for k in keys]
    lines.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"")
    path = settings.home / "env.sh"
    _write_private(path, "\n".join(lines) + "\n")  # it holds the JWT secret
    return path


def health(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The API server's ``/api/v2/monitor/health``, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{settings.url}/api/v2/monitor/health",
                                    timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def healthy(report: Mapping[str, Any] | None, components: Sequence[str]) -> bool:
    """Every component we started reports healthy (the API server answering is its own)."""
    if not report:
        return False
    names = {"scheduler": "scheduler", "dag-processor": "dag_processor",
             "triggerer": "triggerer"}
    wanted = ["metadatabase", *(names[c] for c in components if c in names)]
    return all((report.get(w) or {}).get("status") == "healthy" for w in wanted)


def _processes() -> list[tuple[int, int, str]]:
    """``(pid, parent pid, state)`` of every process, from ``/proc``; [] elsewhere."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]  # after "pid (comm) "
        out.append((int(entry.name), int(ppid), state))
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, children first (zombies, which run nothing, are
    left out)."""
    parents: dict[int, list[int]] = {}
    for child, parent, state in _processes():
        if state != "Z":
            parents.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out.extend(children)
        todo.extend(children)
    return out


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_with_parent() -> bool:
    """SIGTERM this process when its parent dies (Linux ``PR_SET_PDEATHSIG``): a test runner
    killed outright does not leave an Airflow running."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: Sequence[int]) -> None:
    """Collect adopted orphans that exited (not ``keep``: the ``Popen`` children)."""
    me = os.getpid()
    for pid, parent, state in _processes():
        if parent == me and state == "Z" and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class Supervisor:
    """The components as children of this process; stops them (and all below) on exit."""

    def __init__(self, settings: Settings, env: Mapping[str, str],
                 program: Sequence[str] | None = None) -> None:
        self.settings, self.env = settings, dict(env)
        self.logs = settings.home / "logs" / "components"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        # this venv's ``airflow`` (tests run a stand-in program to check the process handling)
        self.program = list(program or [str(Path(sys.executable).with_name("airflow"))])

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in self.settings.components:
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
            self.children[name] = subprocess.Popen(
                [*self.program, *COMPONENTS[name]], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=stop_with_parent)  # a launcher killed outright takes them along
            log.close()

    def dead(self) -> str | None:
        return next((n for n, p in self.children.items() if p.poll() is not None), None)

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the components, SIGKILL what is left after ``grace`` s, then every process
        still below this one (tasks in their own process groups, orphans adopted)."""
        for p in self.children.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.children.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for _ in range(3):  # killing a process may orphan its children onto us: repeat
            left = descendants(os.getpid())
            if not left:
                break
            kill_all(left)
            time.sleep(0.2)
            reap_orphans(())


def _say(text: str) -> None:
    print(f"airflow | {text}", flush=True)


def run(settings: Settings, *, with_parent: bool = False) -> int:
    """Set up and run the course's Airflow until Ctrl-C / SIGTERM (or, ``with_parent``, until
    the process that started this one dies); the exit status."""
    parent = os.getppid()
    if with_parent and (not stop_with_parent() or os.getppid() != parent):
        _say("--stop-with-parent: the parent is gone (or this is not Linux): not starting")
        return 2
    if importlib.util.find_spec("airflow") is None:
        _say("apache-airflow is not installed in this environment: `make install` installs it "
             "(the [airflow] extra)")
        return 2
    if not port_free(settings.port):
        _say(f"port {settings.port} on {HOST} is in use (another Airflow?): stop it, or "
             f"choose another port: make airflow AIRFLOW_PORT={settings.port + 10}")
        return 2
    if not settings.dags.is_dir():
        _say(f"the DAGs folder {settings.dags.resolve()} does not exist: run this from the "
             "repository (make airflow), or pass --dags")
        return 2
    settings.home.mkdir(parents=True, exist_ok=True)
    env = environment(settings)
    password = admin_password(settings.home)
    _say(f"AIRFLOW_HOME={settings.home} dags={settings.dags}: preparing the database ...")
    try:
        prepare(settings, env)
    except subprocess.CalledProcessError as error:
        _say("could not prepare the metadata database:\n" + (error.stderr or "")[-3000:])
        return 1
    env_file = write_env_file(settings, env)
    supervisor = Supervisor(settings, env)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    become_subreaper()
    supervisor.start()
    _say(f"starting {', '.join(settings.components)} (logs: {supervisor.logs}/)")
    ready = False
    status = 0
    try:
        while not stopping:
            dead = supervisor.dead()
            if dead is not None:
                _say(f"{dead} exited with {supervisor.children[dead].returncode}; its log "
                     f"ends with:\n{supervisor.tail(dead)}")
                status = 1
                break
            if not ready and healthy(health(settings), settings.components):
                ready = True
                _say("")
                _say(f"Airflow is ready: {settings.url}")
                _say(f"  user: {ADMIN}   password: {password}")
                _say(f"  pool {POOL!r}: {settings.pool_slots} slots; parallelism "
                     f"{settings.parallelism} (LocalExecutor)")
                _say(f"  CLI in another terminal: source {env_file}")
                _say("  Ctrl-C stops every component")
                _say("")
            reap_orphans([p.pid for p in supervisor.children.values()])
            time.sleep(0.5)
    finally:
        _say("stopping ...")
        supervisor.stop()
        _say("stopped")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_patterns.integrations.airflow_standalone",
        description="Run the course's Airflow 3.3 on 127.0.0.1 (see the module docstring).")
    parser.add_argument("--home", type=Path, default=Settings.home, help="AIRFLOW_HOME")
    parser.add_argument("--dags", type=Path, default=Settings.dags, help="the DAGs folder")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", 8080)),
                        help="the API server's (UI's) port on 127.0.0.1")
    parser.add_argument("--parallelism", type=int, default=Settings.parallelism,
                        help="task instances running at once (LocalExecutor processes)")
    parser.add_argument("--pool-slots", type=int, default=Settings.pool_slots,
                        help=f"slots of the {POOL!r} pool")
    parser.add_argument("--no-triggerer", action="store_true",
                        help="skip the triggerer (only deferrable operators need it)")
    parser.add_argument("--stop-with-parent", action="store_true",
                        help="stop everything when the process that started this one dies "
                             "(tests)")
    args = parser.parse_args(argv)
    for name in ("port", "parallelism", "pool_slots"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.port > 65535:
        parser.error(f"--port must be a TCP port (1-65535), got {args.port}")
    components = tuple(c for c in COMPONENTS if not (args.no_triggerer and c == "triggerer"))
    return run(Settings(home=args.home, dags=args.dags, port=args.port,
                        parallelism=args.parallelism, pool_slots=args.pool_slots,
                        components=components), with_parent=args.stop_with_parent)


if __name__ == "__main__":
    sys.exit(main())
