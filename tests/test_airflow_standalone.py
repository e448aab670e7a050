"""``make airflow``'s launcher, without starting Airflow: the settings every component shares,
the secrets kept across restarts, the refusals, and the process-tree helpers its stop relies on.
(``test_airflow_scheduler.py`` starts the real thing.)"""

from __future__ import annotations

import importlib.util
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_patterns.integrations import airflow_standalone as af


def test_every_component_gets_one_loopback_address_and_one_execution_api(tmp_path: Path) -> None:
    settings = af.Settings(home=tmp_path / "home", dags=tmp_path / "dags", port=18123,
                           parallelism=4)
    env = af.environment(settings, base={"PATH": "/usr/bin", "LLM_PATTERNS_LEDGER": "/x.db"})
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "18123"
    # the task runners call the execution API where the API server really listens
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123/"
    assert env["AIRFLOW_HOME"] == str((tmp_path / "home").resolve())
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str((tmp_path / "dags").resolve())
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"  # runnable by a click
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    # the state store logs grants unless the user chose a store; a chosen ledger is kept
    assert env["LLM_PATTERNS_STATE"].endswith("llm_state.db?log_grants=1")
    assert env["LLM_PATTERNS_LEDGER"] == "/x.db"
    # the same secret for every component, and the same on the next start
    again = af.environment(settings, base={})
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == again["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32


def test_secrets_are_generated_once_private_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    password = af.admin_password(home)
    assert password == af.admin_password(home) and len(password) >= 12
    for name in (af.PASSWORD_FILE, "jwt_secret"):
        af.jwt_secret(home)
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    (home / af.PASSWORD_FILE).write_text("not json")  # a damaged file: a new password
    assert af.admin_password(home) not in ("", password)
    settings = af.Settings(home=home, dags=tmp_path)
    env_file = af.write_env_file(settings, af.environment(settings, base={}))
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the JWT secret
    assert "export AIRFLOW_HOME=" in env_file.read_text()


def test_health_means_every_started_component_and_the_database() -> None:
    good = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"},
            "dag_processor": {"status": "healthy"}, "triggerer": {"status": "healthy"}}
    assert af.healthy(good, tuple(af.COMPONENTS))
    assert not af.healthy(None, tuple(af.COMPONENTS))
    assert not af.healthy({**good, "scheduler": {"status": "unhealthy"}}, ("scheduler",))
    no_triggerer = {k: v for k, v in good.items() if k != "triggerer"}
    assert not af.healthy(no_triggerer, tuple(af.COMPONENTS))
    assert af.healthy(no_triggerer, ("api-server", "scheduler", "dag-processor"))


@pytest.mark.airflow
@pytest.mark.skipif(importlib.util.find_spec("airflow") is None,
                    reason="apache-airflow (extra [airflow]) is not installed")
def test_a_port_in_use_or_a_missing_dags_folder_is_refused_with_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not af.port_free(port)
        assert af.main(["--home", str(tmp_path / "h"), "--dags", str(tmp_path),
                        "--port", str(port)]) == 2
    assert f"AIRFLOW_PORT={port + 10}" in capsys.readouterr().out
    # the port is free again: not the default 8080, which something else on the host may hold
    assert af.main(["--home", str(tmp_path / "h"), "--dags", str(tmp_path / "nope"),
                    "--port", str(port)]) == 2
    assert "does not exist" in capsys.readouterr().out
    for bad in (["--port", "0"], ["--port", "70000"], ["--parallelism", "0"]):
        with pytest.raises(SystemExit):
            af.main(bad)
    assert not (tmp_path / "h").exists()  # nothing was set up


def test_descendants_finds_grandchildren_in_their_own_process_group() -> None:
    """What the stop relies on: a task process in a group of its own is still found."""
    code = ("import os, subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "print(c.pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        grandchild = int(parent.stdout.readline())
        found = af.descendants(os.getpid())
        assert parent.pid in found and grandchild in found
        assert os.getpgid(grandchild) != os.getpgid(parent.pid)
        af.kill_all(af.descendants(parent.pid))
        deadline = time.monotonic() + 10
        while af.descendants(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the kill is delivered asynchronously
        assert af.descendants(parent.pid) == []
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_the_launcher_adopts_orphans_and_reaps_them() -> None:
    """As the tree's subreaper, the launcher finds a task process whose worker died (it would
    otherwise go to init, out of reach), kills it, and collects it (no zombie left)."""
    code = (
        "import os, subprocess, sys, time\n"
        "from llm_patterns.integrations import airflow_standalone as af\n"
        "assert af.become_subreaper()\n"
        "worker = subprocess.Popen([sys.executable, '-c', 'import subprocess, sys; "
        "print(subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(60)\"],"
        " start_new_session=True).pid)'], stdout=subprocess.PIPE, text=True)\n"
        "task = int(worker.stdout.readline()); worker.wait()\n"  # the worker exits: orphan
        "deadline = time.monotonic() + 10\n"
        "while task not in af.descendants(os.getpid()) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "assert task in af.descendants(os.getpid()), 'the orphan was not adopted'\n"
        "af.kill_all([task])\n"
        "while os.path.exists(f'/proc/{task}') and time.monotonic() < deadline:\n"
        "    af.reap_orphans([])\n"
        "    time.sleep(0.05)\n"
        "assert not os.path.exists(f'/proc/{task}'), 'not reaped'\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_stop_with_parent_ends_the_launcher_when_its_parent_dies(tmp_path: Path) -> None:
    """``--stop-with-parent`` (the scheduler test uses it): a killed test runner takes the
    launcher, and so its Airflow, with it."""
    marker = tmp_path / "launcher.pid"
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, sys, time\n"
        "from llm_patterns.integrations import airflow_standalone as af\n"
        "assert af.stop_with_parent()\n"
        f"open({str(marker)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.replace({str(marker)!r} + '.tmp', {str(marker)!r})\n"
        "time.sleep(60)\n")
    parent = tmp_path / "parent.py"
    parent.write_text(  # starts the "launcher", waits until it is set up, exits
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(launcher)!r}])\n"
        f"while not os.path.exists({str(marker)!r}): time.sleep(0.02)\n")
    subprocess.run([sys.executable, str(parent)], timeout=60, check=True)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGTERM is delivered when the parent exits
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_components_die_with_a_launcher_killed_outright(tmp_path: Path) -> None:
    """SIGKILL gives the launcher no chance to stop anything: the components it started go
    with it (``PR_SET_PDEATHSIG`` set in each child), so no Airflow keeps running."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from llm_patterns.integrations import airflow_standalone as af\n"
        f"settings = af.Settings(home=Path({str(tmp_path)!r}), components=('scheduler',))\n"
        "sup = af.Supervisor(settings, {}, program=[sys.executable, '-c', "
        "'import time; time.sleep(60)'])\n"
        "sup.start()\n"
        "print(sup.children['scheduler'].pid, flush=True)\n"
        "import time; time.sleep(60)\n")
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    try:
        component = int(launcher.stdout.readline())
        assert component in af.descendants(launcher.pid)
    finally:
        launcher.kill()
        launcher.wait(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{component}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGTERM is delivered when the launcher dies
    gone = not Path(f"/proc/{component}").exists() or " Z " in Path(
        f"/proc/{component}/stat").read_text()
    if not gone:
        af.kill_all([component])
    assert gone, "the component outlived its launcher"
