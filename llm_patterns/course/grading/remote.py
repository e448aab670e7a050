"""The grader's side of a grading worker: proxies for the student's objects, and a session.

A :class:`Remote` stands for one object in the worker (a class, an instance, a bound method, a
generator). Every use (a call, an attribute, ``str()``, ``float()``, iteration) is a request to
the worker and every answer is plain data or another proxy, so the checks can run unchanged on
the proxies, in this process, out of the student's reach. Objects the checks pass in (the
virtual clock, an rng, scripted providers, exceptions) stay here: the worker gets references
and calls back; only their public methods and attributes can be reached that way.

:class:`Session` owns one worker for one task: it starts it (again, after a crash or a
timeout kill), loads the student's program into it, and hands out proxies for the task's names.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from . import scheduler
from ._framework import Fail, RealSleepUsed, log_listeners
from .rpc import Channel, ChannelClosed, Codec, ProtocolError, RemoteError, _public
from .sandbox import Sandbox, WorkerProcess

__all__ = ["Remote", "SandboxError", "Session", "WorkerLost", "is_remote", "session_of"]

log = logging.getLogger("llm_patterns.course.grading")

MAX_RESTARTS = 4
MAX_LOG_EVENTS = 10_000


class SandboxError(Exception):
    """The sandbox itself could not be set up (before any student code ran): a grader problem."""


class WorkerLost(Fail):
    """The worker holding the student's code ended (it exited, crashed, or was stopped); a
    :class:`Fail`, so the criterion that met it fails with this hint."""


_ALLOWED_MODULES = ("builtins", "llm_patterns.errors")
_EXTRA_CLASSES: dict[tuple[str, str], type[BaseException]] = {
    (RealSleepUsed.__module__, RealSleepUsed.__qualname__): RealSleepUsed,
    (scheduler.Deadlock.__module__, scheduler.Deadlock.__qualname__): scheduler.Deadlock,
    (scheduler.StopWaiting.__module__, scheduler.StopWaiting.__qualname__): scheduler.StopWaiting,
}


class GraderCodec(Codec):
    exports_exceptions = True

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def make_proxy(self, rid: int, is_callable: bool, type_name: str, methods: list[str]) -> Any:
        cls = _proxy_class(type_name, is_callable)
        return cls(self.session, rid, methods)

    def proxy_id(self, obj: Any) -> int | None:
        if isinstance(obj, _RootName):
            obj = self.session.resolve(object.__getattribute__(obj, "_name"))
        if isinstance(obj, Remote):
            if object.__getattribute__(obj, "_generation") != self.session.generation:
                raise WorkerLost("an object of an earlier run of your code (the worker restarted)")
            return int(object.__getattribute__(obj, "_rid"))
        return None

    def exception_class(self, mro: list[list[str]]) -> type[BaseException]:
        """The local class that rebuilds an exception sent by value: the first class of its MRO
        that is a builtin or one of the library's errors. A builtin that is not an
        ``Exception`` (``KeyboardInterrupt``, ``SystemExit``...) is never rebuilt as itself:
        raised in the grader it would stop the grader; a student's code that lets the grader's
        own one through hands back the very object (by reference), not a copy."""
        import llm_patterns.errors as errors_module

        for module, qualname in mro:
            extra = _EXTRA_CLASSES.get((module, qualname))
            if extra is not None:
                return extra
            if module not in _ALLOWED_MODULES or "." in qualname:
                continue
            source = builtins if module == "builtins" else errors_module
            cls = getattr(source, qualname, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls
        return RemoteError

    def accept_export(self, obj: Any) -> None:
        if isinstance(obj, (types.ModuleType, type, types.CodeType, types.FrameType)):
            raise TypeError(f"a {type(obj).__name__} cannot be handed to the student's code")


_proxy_classes: dict[tuple[str, bool], type[Remote]] = {}


def _proxy_class(type_name: str, is_callable: bool) -> type[Remote]:
    """A proxy class named like the student's type (``type(x).__name__`` reads well in hints)."""
    name = type_name if type_name.isidentifier() else "object"
    key = (name, is_callable)
    cls = _proxy_classes.get(key)
    if cls is None:
        base = RemoteCallable if is_callable else Remote
        cls = type(name, (base,), {"__slots__": ()})
        if len(_proxy_classes) < 2000:
            _proxy_classes[key] = cls
    return cls


def is_remote(obj: Any) -> bool:
    return isinstance(obj, Remote)


def session_of(obj: Remote) -> Session:
    session: Session = object.__getattribute__(obj, "_session")
    return session


class Remote:
    """A proxy for an object in the worker (see the module docstring)."""

    __slots__ = ("__weakref__", "_generation", "_methods", "_rid", "_session")

    def __init__(self, session: Session, rid: int, methods: list[str]) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_methods", frozenset(methods))
        object.__setattr__(self, "_generation", session.generation)

    def _ask(self, op: str, **fields: Any) -> Any:
        session: Session = object.__getattribute__(self, "_session")
        return session.ask(op, obj=self, **fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name not in ("__name__", "__qualname__", "__doc__"):
            raise AttributeError(name)
        if name in object.__getattribute__(self, "_methods"):
            return _RemoteMethod(self, name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a check does not change the student's objects ({name!r})")

    @property
    def __signature__(self) -> inspect.Signature | None:
        described = self._ask("signature")
        if described is None:
            return None
        params = []
        try:
            for name, kind, has_default in described:
                params.append(inspect.Parameter(
                    str(name), inspect._ParameterKind(int(kind)),
                    default=_REMOTE_DEFAULT if has_default else inspect.Parameter.empty))
            return inspect.Signature(params)
        except (TypeError, ValueError):
            return None

    def __repr__(self) -> str:
        return str(self._ask("op", name="repr"))

    def __str__(self) -> str:
        return str(self._ask("op", name="str"))

    def __bool__(self) -> bool:
        return bool(self._ask("op", name="bool"))

    def __len__(self) -> int:
        return int(self._ask("op", name="len"))

    def __iter__(self) -> Iterator[Any]:
        it = self._ask("op", name="iter")
        return it if isinstance(it, Remote) else iter(it)

    def __next__(self) -> Any:
        return self._ask("op", name="next")

    def __float__(self) -> float:
        return float(self._ask("op", name="float"))

    def __int__(self) -> int:
        return int(self._ask("op", name="int"))

    def __index__(self) -> int:
        return int(self._ask("op", name="index"))

    def __hash__(self) -> int:
        return int(self._ask("op", name="hash"))

    def __eq__(self, other: object) -> Any:
        return self._ask("op", name="eq", args=[other])

    def __ne__(self, other: object) -> Any:
        return self._ask("op", name="ne", args=[other])

    def __lt__(self, other: object) -> Any:
        return self._ask("op", name="lt", args=[other])

    def __le__(self, other: object) -> Any:
        return self._ask("op", name="le", args=[other])

    def __gt__(self, other: object) -> Any:
        return self._ask("op", name="gt", args=[other])

    def __ge__(self, other: object) -> Any:
        return self._ask("op", name="ge", args=[other])

    def __contains__(self, item: object) -> bool:
        return bool(self._ask("op", name="contains", args=[item]))

    def __getitem__(self, key: Any) -> Any:
        return self._ask("op", name="getitem", args=[key])

    def __add__(self, other: Any) -> Any:
        return self._ask("op", name="add", args=[other])

    def __sub__(self, other: Any) -> Any:
        return self._ask("op", name="sub", args=[other])

    def __mul__(self, other: Any) -> Any:
        return self._ask("op", name="mul", args=[other])

    def __truediv__(self, other: Any) -> Any:
        return self._ask("op", name="truediv", args=[other])

    def __neg__(self) -> Any:
        return self._ask("op", name="neg")

    def __abs__(self) -> Any:
        return self._ask("op", name="abs")


class RemoteCallable(Remote):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=list(args), kwargs=kwargs)


class _RemoteMethod:
    __slots__ = ("_name", "_target")

    def __init__(self, target: Remote, name: str) -> None:
        self._target, self._name = target, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target._ask("callm", name=self._name, args=list(args), kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<method {self._name} of the student's {type(self._target).__name__}>"


_REMOTE_DEFAULT = type("_RemoteDefault", (), {"__repr__": lambda self: "<default>"})()


class _RootName(RemoteCallable):
    """A task name (``TokenBucket``): resolved in whichever run of the worker is current."""

    __slots__ = ("_name",)

    def __init__(self, session: Session, name: str) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_rid", 0)
        object.__setattr__(self, "_methods", frozenset())
        object.__setattr__(self, "_generation", -1)

    def _ask(self, op: str, **fields: Any) -> Any:
        session: Session = object.__getattribute__(self, "_session")
        target = session.resolve(object.__getattribute__(self, "_name"))
        if isinstance(target, Remote):
            return target._ask(op, **fields)
        raise WorkerLost(f"{object.__getattribute__(self, '_name')} is not defined")


# --- the grader's handling of the worker's requests --------------------------------------

_GRADER_OPS: dict[str, Callable[..., Any]] = {
    "repr": repr, "str": str, "bool": bool, "len": len, "iter": iter, "next": next,
    "float": float, "int": int, "getitem": lambda o, k: o[k],
    "contains": lambda o, x: x in o,
}


def _serve(channel: Channel, message: dict[str, Any]) -> Any:
    """What the student's code may do with the grader's objects: public methods and
    attributes, and the plain conversions; nothing that reaches modules or globals."""
    codec = channel.codec
    op = message.get("op")
    obj = codec.decode(message.get("obj"))
    if op == "getattr":
        name = str(message.get("name"))
        if not _public(name):
            raise AttributeError(f"the grader's {type(obj).__name__} has no readable {name!r}")
        return getattr(obj, name)
    if op in ("callm", "call"):
        args = codec.decode(message.get("args", []))
        kwargs = codec.decode(message.get("kwargs", {"$m": []}))
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(
            isinstance(k, str) for k in kwargs
        ):
            raise ProtocolError("bad call arguments")
        if op == "callm":
            name = str(message.get("name"))
            if not _public(name):
                raise AttributeError(f"the grader's {type(obj).__name__} has no method {name!r}")
            fn = getattr(obj, name)
        else:
            fn = obj
        if not callable(fn) or isinstance(fn, type):
            raise TypeError(f"{type(fn).__name__} object is not callable")
        return fn(*args, **kwargs)
    if op == "op":
        fn = _GRADER_OPS.get(str(message.get("name")))
        if fn is None:
            raise ProtocolError(f"operation {message.get('name')!r} is not offered")
        args = codec.decode(message.get("args", []))
        if not isinstance(args, list):
            raise ProtocolError("bad operation arguments")
        return fn(obj, *args)
    raise ProtocolError(f"unknown request {op!r}")


# --- a session: one worker for one task -------------------------------------------------


class Session:
    """One task's worker: started lazily, restarted after it dies, killed on overrun."""

    def __init__(self, sandbox: Sandbox, program: list[dict[str, str]], names: list[str],
                 *, max_restarts: int = MAX_RESTARTS, load_seconds: float = 20.0) -> None:
        self.sandbox = sandbox
        self.program = program
        self.names = list(names)
        self.max_restarts = max_restarts
        self.load_seconds = load_seconds
        self.generation = 0
        self.starts = 0
        self.load_errors: list[tuple[str, str]] = []
        self.lost: list[str] = []  # why earlier runs of the worker ended
        self._worker: WorkerProcess | None = None
        self._channel: Channel | None = None
        self._roots: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._toplevel: threading.Thread | None = None
        self._ready = threading.Event()
        self._log_events = 0
        self.closed = False

    # --- lifecycle ---------------------------------------------------------------------
    def _start(self) -> None:
        if self.closed:
            raise WorkerLost("grading of this task is over")
        if self.starts > self.max_restarts:
            raise WorkerLost(
                f"your code ended the grading process {self.starts} times"
                + (f" ({self.lost[-1]})" if self.lost else "") + "; the remaining criteria "
                "were not run")
        self.starts += 1
        self.generation += 1
        worker = self.sandbox.spawn()
        codec = GraderCodec(self)
        channel = Channel(worker.rfd, worker.wfd, _serve, codec, name="grader",
                          on_event=self._on_event)
        self._ready.clear()
        self._worker, self._channel = worker, channel
        self._toplevel = threading.Thread(target=channel.serve_forever, daemon=True,
                                          name="grader-toplevel")
        self._toplevel.start()
        try:
            loaded = channel.request("load", program=self.program, names=self.names,
                                     timeout=self.load_seconds)
            if not isinstance(loaded, dict):
                raise ProtocolError(f"the answer to 'load' is a {type(loaded).__name__}")
        except TimeoutError:
            self.lost.append(f"loading your cells took over {self.load_seconds:g} s")
            self._drop()
            raise WorkerLost(f"running your notebook's cells took over {self.load_seconds:g} s "
                             "(an endless loop at the top level of a cell?)") from None
        except ChannelClosed:
            if not self._ready.is_set():  # it died before any student code could run
                worker.proc.wait(timeout=10)
                tail = worker.log_tail()
                self._drop()
                raise SandboxError(f"the sandbox could not start ({worker.exit_description()})"
                                   f": {tail.strip()[-800:]}") from None
            raise self._lost_error() from None
        except BaseException as exc:
            if isinstance(exc, (SandboxError, WorkerLost)):
                raise
            self.lost.append(f"it broke the grading protocol ({type(exc).__name__})")
            self._drop()
            raise WorkerLost("the process running your code broke the grading protocol "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        names = loaded.get("names", {})
        self._roots = dict(names) if isinstance(names, dict) else {}
        errors = loaded.get("errors", [])
        self.load_errors = [(str(item[0]), str(item[1])) for item in errors
                            if isinstance(item, list) and len(item) == 2][:20]

    def _lost_error(self) -> WorkerLost:
        worker = self._worker
        why = "it stopped"
        if worker is not None:
            try:
                worker.proc.wait(timeout=2)
            except Exception:
                pass
            why = worker.exit_description()
            channel = self._channel
            if channel is not None and "protocol error" in channel.close_reason:
                why = f"it broke the grading protocol ({channel.close_reason})"
        self.lost.append(why)
        self._drop()
        return WorkerLost(f"the process running your code ended ({why})")

    def _drop(self) -> None:
        worker, channel = self._worker, self._channel
        self._worker = self._channel = None
        self._roots = {}
        if channel is not None:
            channel.close("worker dropped")
        if worker is not None:
            worker.kill()

    def channel(self) -> Channel:
        with self._lock:
            if self._channel is None or self._channel.closed:
                if self._channel is not None:
                    raise self._lost_error()
                self._start()
            assert self._channel is not None
            return self._channel

    def kill(self, why: str) -> None:
        """Stop the worker now (a criterion overran); the next request starts a new one."""
        with self._lock:
            if self._worker is not None:
                self.lost.append(why)
            self._drop()

    def close(self) -> None:
        self.closed = True
        with self._lock:
            self._drop()

    def overrun(self, guard: Any) -> bool:
        """A criterion overran its budget: note whether the student's code was waiting for a
        lock (a deadlock) rather than looping, then stop the worker (a new one serves the next
        criterion). Registered with ``_framework.on_overrun``."""
        guard.blocked = self.probe_blocked()
        self.kill("stopped after the time limit of a criterion")
        return True

    def probe_blocked(self, timeout: float = 0.5) -> bool:
        """Whether the worker's running code waits for a lock (a deadlock) rather than loops."""
        channel = self._channel
        if channel is None or channel.closed:
            return False
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(_safe(channel.request, "status")),
                             daemon=True)
        t.start()
        t.join(timeout)
        return bool(result and isinstance(result[0], dict) and result[0].get("blocked"))

    # --- requests ----------------------------------------------------------------------
    def root(self, name: str) -> Any:
        """A proxy for the task name ``name``, valid across restarts of the worker."""
        return _RootName(self, name)

    def resolve(self, name: str) -> Any:
        self.channel()
        return self._roots.get(name)

    def defined(self, name: str) -> bool:
        return self.resolve(name) is not None

    def ask(self, op: str, obj: Any = None, **fields: Any) -> Any:
        channel = self.channel()
        codec = channel.codec
        encoded = {k: codec.encode(v) for k, v in fields.items()}
        if obj is not None:
            encoded["obj"] = codec.encode(obj)
        try:
            return channel.request(op, **encoded)
        except ChannelClosed:
            raise self._lost_error() from None

    def race(self, calls: list[scheduler.Call], schedule: scheduler.Schedule) -> scheduler.RaceRun:
        items = [[c.target, c.method, list(c.args), dict(c.kwargs), c.stamp] for c in calls]
        answer = self.ask("race", calls=items, schedule=schedule.to_dict())
        if not isinstance(answer, dict):
            raise ProtocolError("a race answer must be a mapping")
        errors = [e if isinstance(e, BaseException) else None for e in answer.get("errors", [])]
        steps = [(int(step[0]), str(step[1])[:100], int(step[2]), str(step[3])[:120])
                 for step in answer.get("interleaving", [])[:200]
                 if isinstance(step, list) and len(step) == 4]
        return scheduler.RaceRun(list(answer.get("results", [])), errors, steps,
                                 int(answer.get("steps", 0)), bool(answer.get("controlled")),
                                 bool(answer.get("deadlock")))

    def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "ready":
            self._ready.set()
            return
        if message.get("kind") != "log":
            return
        self._log_events += 1
        if self._log_events > MAX_LOG_EVENTS:  # a flood (a forged one, the worker caps its own)
            return
        record = (str(message.get("logger", ""))[:200], int(message.get("level", 0) or 0),
                  str(message.get("message", ""))[:2000])
        for listener in list(log_listeners):
            listener(record)


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None
