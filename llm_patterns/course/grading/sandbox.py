"""Where a submission is graded: a temporary copy, and worker processes confined around it.

:class:`Sandbox` copies a submission into a fresh temporary folder without ever following a
symbolic link (links are copied as links; a loop or a link to a huge folder costs nothing),
within a size bound, and always removes the folder again (a folder left by a killed run is
removed by the next run). :meth:`Sandbox.spawn` starts a grading worker (:mod:`.worker`) on
that copy with the strongest confinement the platform offers (:func:`isolation`):

- ``namespaces`` (root on Linux with ``unshare``): new mount, network, PID, IPC and UTS
  namespaces, private ``/tmp``, homes and neighbours hidden, an unprivileged user id of its
  own, resource limits; when the worker ends, every process it started ends with it;
- ``user`` (root without usable namespaces): the unprivileged user and the limits;
- ``none`` (not root): the limits and a process group of its own, killed at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["Limits", "Sandbox", "SubmissionTooLarge", "WorkerProcess", "clean_stale", "isolation"]

REPO_ROOT = Path(__file__).resolve().parents[3]
PREFIX = "llm-patterns-grade-"
UID_BASE = 61_000
SLOTS = 256
SKIP_NAMES = frozenset({".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints",
                        "node_modules", ".pytest_cache", ".mypy_cache", ".tox"})

BOOT = ("import sys; sys.path.insert(0, {repo!r}); "
        "from llm_patterns.course.grading.worker import main; main(sys.argv[1:])")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one grading worker, and time limits for the grader."""

    memory: int = 768 << 20  # RLIMIT_AS, bytes
    cpu: int = 120  # RLIMIT_CPU, seconds over a worker's life
    processes: int = 48  # RLIMIT_NPROC (threads count too) for the worker's user
    file_size: int = 16 << 20  # RLIMIT_FSIZE, bytes
    open_files: int = 256
    copy_bytes: int = 20 << 20  # the copy of a submission
    criterion_seconds: float = 5.0  # real time one criterion may take through the proxy
    task_seconds: float = 60.0  # one task, every criterion and restart included
    submission_seconds: float = 300.0  # one submission, every task included

    def rlimits(self) -> dict[str, int]:
        return {"as": self.memory, "cpu": self.cpu, "nproc": self.processes,
                "fsize": self.file_size, "nofile": self.open_files}


class SubmissionTooLarge(Exception):
    """The submission is over the copy bound (what was copied so far is kept)."""


@functools.cache
def isolation() -> str:
    """The strongest confinement available: "namespaces", "user" or "none" (see module doc).

    ``LLM_PATTERNS_GRADE_ISOLATION`` may ask for a weaker one (for debugging a submission).
    """
    wanted = os.environ.get("LLM_PATTERNS_GRADE_ISOLATION", "").strip().lower()
    if not sys.platform.startswith("linux") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "none"
    if wanted == "none":
        return "none"
    unshare = shutil.which("unshare")
    if wanted != "user" and unshare:
        try:
            probe = subprocess.run(
                [unshare, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
                 "--kill-child", "--mount-proc", "true"],
                capture_output=True, timeout=20, check=False,
            )
            if probe.returncode == 0:
                return "namespaces"
        except (OSError, subprocess.SubprocessError):
            pass
    return "user"


# --- temporary folders -------------------------------------------------------------------


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(folder: Path) -> bool:
    try:
        pid_text, started = (folder / "owner").read_text(encoding="ascii").split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        # no owner file yet: a folder being created right now, unless it is old
        try:
            return time.time() - folder.stat().st_mtime < 3600
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or _start_time(pid) in ("", started)


def clean_stale(base: str | None = None) -> list[str]:
    """Remove grading folders whose grader is gone (a killed run); returns what was removed."""
    removed: list[str] = []
    root = Path(base or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for folder in entries:
        if not folder.name.startswith(PREFIX) or folder.is_symlink() or not folder.is_dir():
            continue
        if not _owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


@dataclass
class CopyReport:
    files: int = 0
    bytes: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)
    truncated: bool = False


def copy_tree(src: Path, dst: Path, max_bytes: int, max_entries: int = 20_000) -> CopyReport:
    """Copy ``src`` into ``dst`` without following any symbolic link, within ``max_bytes``.

    Links are recreated as links (never resolved); devices, sockets and pipes are skipped;
    folders such as ``.git`` and ``.venv`` are left out. Over the bound the copy stops and
    ``truncated`` is set.
    """
    report = CopyReport()
    entries = 0

    def walk(s: Path, d: Path) -> None:
        nonlocal entries
        with os.scandir(s) as it:
            items = sorted(it, key=lambda e: e.name)
        for entry in items:
            entries += 1
            if entries > max_entries:
                report.truncated = True
                return
            target = d / entry.name
            rel = os.path.relpath(entry.path, src)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
                report.links += 1
            elif entry.is_dir(follow_symlinks=False):
                if entry.name in SKIP_NAMES:
                    report.skipped.append(rel + "/")
                    continue
                target.mkdir(mode=0o755)
                walk(Path(entry.path), target)
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                if report.bytes + size > max_bytes:
                    report.truncated = True
                    report.skipped.append(rel)
                    continue
                _copy_file(entry.path, target)
                report.files += 1
                report.bytes += size
            else:
                report.skipped.append(rel)
            if report.truncated and entries > max_entries:
                return

    dst.mkdir(mode=0o755, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        walk(src, dst)
    return report


def _copy_file(src: str, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        with os.fdopen(fd, "rb", closefd=False) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    finally:
        os.close(fd)
    os.chmod(dst, 0o644)


def read_no_follow(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, refusing a symbolic link or anything over ``max_bytes``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{path.name} is {info.st_size} bytes, over the {max_bytes} limit")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


# --- slots: one unprivileged user id per concurrent worker --------------------------------


class _Slot:
    def __init__(self) -> None:
        self.index = -1
        self._fh: IO[str] | None = None
        lock_dir = Path(tempfile.gettempdir())
        for index in range(SLOTS):
            uid = UID_BASE + index
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never borrow it
            except KeyError:
                pass
            fh = open(lock_dir / f"{PREFIX}slot-{index}.lock", "a+", encoding="ascii")  # noqa: SIM115
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            self.index, self._fh = index, fh
            return
        raise RuntimeError(f"grade: all {SLOTS} sandbox user ids are in use")

    @property
    def uid(self) -> int:
        return UID_BASE + self.index

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _kill_user(uid: int) -> None:
    """Kill every process of ``uid`` (a user id that belongs to one slot only)."""
    pid = os.fork()
    if pid == 0:  # the child becomes that user, kills everything it owns, and leaves
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                with contextlib.suppress(OSError):
                    os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# --- workers ---------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A started worker: its process, the grader's ends of the two pipes, its log file."""

    proc: subprocess.Popen[bytes]
    rfd: int
    wfd: int
    log: Path
    isolation: str
    uid: int | None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # (processes that left the group die with the sandbox: its user is killed at close,
        # when no other worker of the same submission runs under that user any more)
        # Neither pipe end is closed here: both are the channel's (Channel.close closes the
        # write end, its reader thread the read end after its last read). Closed here, a number
        # the reader still reads from goes to the next pipe opened, another task's worker's.

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code == signal.SIGXCPU:
                return f"stopped by {name}: the CPU time limit was reached"
            return f"killed by {name}"
        return f"exit status {code}"

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - limit))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Sandbox:
    """A temporary folder holding one submission's copy; spawns confined workers on it."""

    def __init__(self, submission: Path, *, limits: Limits | None = None,
                 hide: tuple[str, ...] = (), level: str | None = None) -> None:
        self.submission = submission
        self.limits = limits or Limits()
        self.level = level or isolation()
        self.hide = hide
        self.root: Path | None = None
        self.copy: CopyReport | None = None
        self._slot: _Slot | None = None
        self._workers: list[WorkerProcess] = []
        self._spawned = 0

    def __enter__(self) -> Sandbox:
        clean_stale()
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        try:
            os.chmod(self.root, 0o711)  # the worker's user reaches sub/, nothing else
            (self.root / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n",
                                             encoding="ascii")
            sub = self.root / "sub"
            self.copy = copy_tree(self.submission, sub, self.limits.copy_bytes)
            (self.root / "stage").mkdir()
            if self.level != "none":
                self._slot = _Slot()
                self._chown(sub, self._slot.uid)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def work(self) -> Path:
        assert self.root is not None
        return self.root / "sub"

    @staticmethod
    def _chown(top: Path, uid: int) -> None:
        os.chown(top, uid, uid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)

    def _confine(self) -> dict[str, Any]:
        assert self.root is not None
        cfg: dict[str, Any] = {"sandbox": str(self.root / "sub"), "limits": self.limits.rlimits()}
        if self._slot is not None:
            cfg["uid"] = cfg["gid"] = self._slot.uid
        if self.level == "namespaces":
            needed = {str(REPO_ROOT), sys.prefix, sys.base_prefix, sys.exec_prefix,
                      os.path.dirname(os.path.realpath(sys.executable))}
            needed.update(p for key in ("stdlib", "platstdlib", "purelib", "platlib")
                          if (p := sysconfig.get_paths().get(key)))
            temp = os.path.realpath(tempfile.gettempdir())
            needed = {p for p in needed if os.path.isdir(p) and not (
                temp == p or temp.startswith(p.rstrip("/") + "/"))}
            cfg.update({
                "mounts": True,
                "stage": str(self.root / "stage"),
                "expose": sorted(needed),
                "hide": sorted({"/root", "/home", "/var/tmp", "/dev/shm", "/mnt", "/media",
                                str(REPO_ROOT.parent), *self.hide}),
                "tmp_size": f"{max(64, (self.limits.copy_bytes >> 20) * 2 + 32)}m",
            })
        else:
            cfg["parent"] = os.getpid()
        return cfg

    def spawn(self) -> WorkerProcess:
        """Start one worker on the copy (the grader then speaks to it over the two pipes)."""
        assert self.root is not None
        self._spawned += 1
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        log = self.root / f"worker-{self._spawned}.log"
        cmd = [sys.executable, "-P", "-s", "-c", BOOT.format(repo=str(REPO_ROOT)),
               "--rfd", str(to_worker_r), "--wfd", str(from_worker_w),
               "--confine", json.dumps(self._confine())]
        if self.level == "namespaces":
            cmd = [shutil.which("unshare") or "unshare", "--mount", "--net", "--pid", "--ipc",
                   "--uts", "--fork", "--kill-child", "--mount-proc", "--", *cmd]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    cmd, pass_fds=(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                    cwd=self.root, close_fds=True,
                )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        worker = WorkerProcess(proc, from_worker_r, to_worker_w, log, self.level,
                               self._slot.uid if self._slot else None)
        self._workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers.clear()
        if self._slot is not None:
            if self.level in ("user", "namespaces"):
                _kill_user(self._slot.uid)
            self._slot.release()
            self._slot = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
