"""What a grading worker does to itself before any student code runs (Linux).

The worker starts as a child of ``unshare`` (new mount, network, PID, IPC and UTS namespaces)
when the grader runs as root, or as a plain child otherwise. :func:`apply` then, as far as the
platform allows:

- gives it a private ``/tmp`` (a small tmpfs) holding only the copy of the submission
  (``/tmp/sub``, the working directory), and empty tmpfs over ``/root``, ``/home``, the
  directory that holds the repository and the submissions, ``/var/tmp`` and ``/dev/shm``;
  the Python installation and the repository it needs are mounted back, read-only;
- sets resource limits (address space, CPU seconds, processes and threads, file size, open
  files, no core dumps);
- drops to an unprivileged user (root only), with ``no_new_privs`` (no setuid binary can give
  privileges back) and a parent-death signal, so the worker dies with its launcher.

The network namespace has no interface but a down loopback: no socket reaches anything. The
grader speaks to the worker over inherited pipes only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import signal
from typing import Any

__all__ = ["apply"]

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    if _c().mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target} ({fstype}, flags {flags}): "
                      f"{os.strerror(err)}")


def _prctl(option: int, arg: int) -> None:
    if _c().prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _mounts(cfg: dict[str, Any]) -> str:
    """Private /tmp with the submission, hidden homes and neighbours, Python mounted back."""
    sandbox, stage, uid = cfg["sandbox"], cfg["stage"], cfg.get("uid")
    hide = sorted({os.path.realpath(h) for h in cfg.get("hide", []) if os.path.isdir(h)}, key=len)
    hide = [h for i, h in enumerate(hide)
            if h != "/" and not any(_under(h, o) for o in hide[:i])]
    covered = ["/tmp", *hide]
    expose = sorted({os.path.realpath(p) for p in cfg.get("expose", []) if os.path.isdir(p)},
                    key=len)
    expose = [p for i, p in enumerate(expose) if not any(_under(p, o) for o in expose[:i])]
    expose = [p for p in expose if any(_under(p, c) for c in covered)]

    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={cfg.get('tmp_size', '64m')},mode=1777")
    # a copy inside the size-bounded tmpfs: whatever the student's code writes stays bounded
    shutil.copytree(sandbox, os.path.join(stage, "sub"), symlinks=True)
    keep = os.path.join(stage, ".keep")
    os.mkdir(keep, 0o700)
    kept = []
    for i, path in enumerate(expose):
        spot = os.path.join(keep, str(i))
        os.mkdir(spot)
        _mount(path, spot, None, MS_BIND | MS_REC)
        kept.append((path, spot.replace(stage, "/tmp", 1)))
    _mount(stage, "/tmp", None, MS_MOVE)
    for directory in hide:
        # under /tmp: gone with the old /tmp already
        if not _under(directory, "/tmp") and os.path.isdir(directory):
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path, spot in kept:
        os.makedirs(path, 0o755, exist_ok=True)
        _mount(spot, path, None, MS_MOVE)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.rmdir(spot)
    os.rmdir("/tmp/.keep")
    if uid is not None:
        gid = cfg.get("gid", uid)
        for dirpath, dirnames, filenames in os.walk("/tmp/sub"):
            os.chown(dirpath, uid, gid, follow_symlinks=False)
            for name in filenames + dirnames:
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
    return "/tmp/sub"


def _limits(limits: dict[str, int]) -> None:
    table = {
        "as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC,
        "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
    }
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, value in limits.items():
        which = table.get(key)
        if which is None or value is None:
            continue
        _soft, hard = resource.getrlimit(which)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later
        resource.setrlimit(which, (value, value + 1 if key == "cpu" else value))


def _drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def apply(config: str | dict[str, Any]) -> str:
    """Confine this process as ``config`` says; return the working directory to use."""
    cfg = json.loads(config) if isinstance(config, str) else dict(config)
    cwd = cfg.get("sandbox") or os.getcwd()
    if cfg.get("mounts"):
        cwd = _mounts(cfg)
    if cfg.get("limits"):
        _limits(cfg["limits"])
    uid = cfg.get("uid")
    if uid is not None:
        _drop(int(uid), int(cfg.get("gid", uid)))
    if hasattr(os, "fork"):
        try:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # credentials changed: set it again
        except (OSError, AttributeError):
            pass
        if cfg.get("parent") and os.getppid() not in (cfg["parent"], 0):
            os._exit(71)  # the launcher died before the death signal was set
    os.environ.clear()
    os.environ.update({"HOME": cwd, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                       "PYTHONHASHSEED": "0", "TMPDIR": cwd})
    return cwd
