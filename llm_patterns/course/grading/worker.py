"""The grading worker: the one process where a student's code runs when ``grade`` scores it.

Started by :mod:`.sandbox` (``python -I -c ...``), it confines itself (:mod:`.confine`: private
mounts, no network, resource limits, an unprivileged user), loads the student's definitions
sent by the grader, and then only answers the grader's requests: call this, read that attribute,
run these calls as a race. Whatever the student's code does here (patch modules, builtins or
``sys.modules``, inspect the stack, write to the pipe, exit) it changes only what this process
answers; the checks and their verdicts live in the grader.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import inspect
import logging
import operator
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import scheduler
from ._framework import RealSleepUsed
from ._student import is_student_file, student_location
from .rpc import Channel, ChannelClosed, Codec, ProtocolError, RemoteError, _public

__all__ = ["main"]

MAX_LOG_EVENTS = 2000  # log records forwarded to the grader over the worker's life


class GraderRef:
    """This process's stand-in for one of the grader's objects (a clock, an rng, a provider)."""

    __slots__ = ("_channel", "_methods", "_rid", "_type")

    def __init__(self, channel: Channel, rid: int, methods: list[str], type_name: str) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_methods", frozenset(methods))
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **fields: Any) -> Any:
        codec = self._channel.codec
        return self._channel.request(op, obj={"$p": self._rid},
                                     **{k: codec.encode(v) for k, v in fields.items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            return _GraderMethod(self, name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the grader's {self._type} cannot be changed ({name!r})")

    def __repr__(self) -> str:
        return str(self._ask("op", name="repr", args=[]))

    def __str__(self) -> str:
        return str(self._ask("op", name="str", args=[]))

    def __bool__(self) -> bool:
        return bool(self._ask("op", name="bool", args=[]))

    def __len__(self) -> int:
        return int(self._ask("op", name="len", args=[]))

    def __iter__(self) -> Any:
        return self._ask("op", name="iter", args=[])

    def __next__(self) -> Any:
        return self._ask("op", name="next", args=[])

    def __float__(self) -> float:
        return float(self._ask("op", name="float", args=[]))

    def __int__(self) -> int:
        return int(self._ask("op", name="int", args=[]))

    def __getitem__(self, key: Any) -> Any:
        return self._ask("op", name="getitem", args=[key])

    def __contains__(self, item: Any) -> bool:
        return bool(self._ask("op", name="contains", args=[item]))


class _CallableGraderRef(GraderRef):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=list(args), kwargs=kwargs)


class _GraderMethod:
    __slots__ = ("_name", "_ref")

    def __init__(self, ref: GraderRef, name: str) -> None:
        self._ref, self._name = ref, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ref._ask("callm", name=self._name, args=list(args), kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<grader method {self._ref._type}.{self._name}>"


class WorkerCodec(Codec):
    def make_proxy(self, rid: int, is_callable: bool, type_name: str, methods: list[str]) -> Any:
        cls = _CallableGraderRef if is_callable else GraderRef
        return cls(self.channel, rid, methods, type_name)

    def proxy_id(self, obj: Any) -> int | None:
        if isinstance(obj, GraderRef):
            return int(object.__getattribute__(obj, "_rid"))
        return None

    def exception_class(self, mro: list[list[str]]) -> type[BaseException]:
        for module, qualname in mro:
            if module == "builtins" or module.startswith("llm_patterns."):
                try:
                    obj: Any = builtins if module == "builtins" else importlib.import_module(module)
                    for part in qualname.split("."):
                        obj = getattr(obj, part)
                except (ImportError, AttributeError):
                    continue
                if isinstance(obj, type) and issubclass(obj, BaseException):
                    return obj
        return RemoteError

    def where(self, exc: BaseException) -> str:
        return student_location(exc)


# --- what the grader may ask ---------------------------------------------------------------

_OPS: dict[str, Callable[..., Any]] = {
    "repr": repr, "str": str, "bool": bool, "len": len, "iter": iter, "next": next,
    "float": float, "int": int, "index": operator.index, "hash": hash,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge, "contains": operator.contains,
    "getitem": operator.getitem, "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "neg": operator.neg, "abs": abs,
}
_ALLOWED_DUNDERS = {"__name__", "__qualname__", "__doc__", "__module__"}


class Worker:
    def __init__(self, channel_fds: tuple[int, int]) -> None:
        self.codec = WorkerCodec()
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.channel = Channel(*channel_fds, self.handle, self.codec, name="worker",
                               direct=self.status)

    def status(self, message: dict[str, Any]) -> Any:
        return {"blocked": scheduler.blocked_on_lock()}

    def arg(self, message: dict[str, Any], key: str, default: Any = None) -> Any:
        return self.codec.decode(message.get(key, default))

    def handle(self, channel: Channel, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "load":
            return self.load(message)
        if op == "getattr":
            name = message.get("name")
            if not isinstance(name, str) or (
                name.startswith("__") and name not in _ALLOWED_DUNDERS
            ):
                raise AttributeError(f"attribute {name!r} is not readable by the grader")
            return getattr(self.arg(message, "obj"), name)
        if op == "callm":
            name = str(message.get("name"))
            if not _public(name):
                raise AttributeError(f"method {name!r} is not callable by the grader")
            fn = getattr(self.arg(message, "obj"), name)
            return fn(*self.arg(message, "args", []), **self._kwargs(message))
        if op == "call":
            return self.arg(message, "obj")(*self.arg(message, "args", []), **self._kwargs(message))
        if op == "op":
            fn = _OPS.get(str(message.get("name")))
            if fn is None:
                raise ProtocolError(f"unknown operation {message.get('name')!r}")
            return fn(self.arg(message, "obj"), *self.arg(message, "args", []))
        if op == "signature":
            return describe_signature(self.arg(message, "obj"))
        if op == "race":
            return self.race(message)
        raise ProtocolError(f"unknown request {op!r}")

    def _kwargs(self, message: dict[str, Any]) -> dict[str, Any]:
        kwargs = self.arg(message, "kwargs", {"$m": []})
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ProtocolError("keyword arguments must be a str-keyed mapping")
        return kwargs

    def load(self, message: dict[str, Any]) -> Any:
        """Run the student's program (chunks of cells, each under its own file name) and
        return the names the grader asked for, plus what went wrong on the way."""
        import linecache

        errors = []
        for chunk in message.get("program") or []:
            filename, source, full = chunk["filename"], chunk["source"], chunk.get("full", "")
            lines = (full or source).splitlines(keepends=True)
            linecache.cache[filename] = (len(full or source), None, lines, filename)
            try:
                code = compile(source, filename, "exec", dont_inherit=True)
                exec(code, self.namespace)
            except BaseException as exc:
                if isinstance(exc, ChannelClosed):
                    raise
                errors.append([filename, _describe(exc)])
        names = {}
        for name in message.get("names") or []:
            if name in self.namespace:
                names[name] = self.namespace[name]
        return {"names": names, "errors": errors}

    def race(self, message: dict[str, Any]) -> Any:
        calls = []
        for item in self.arg(message, "calls", []):
            target, method, args, kwargs, stamp = item
            if not _public(method):
                raise ProtocolError(f"race method {method!r} is not public")
            calls.append(scheduler.Call(target, method, tuple(args), dict(kwargs), stamp))
        schedule = scheduler.Schedule.from_dict(self.arg(message, "schedule"))
        ctx = message.get("id")
        channel = self.channel

        def bound(call: scheduler.Call) -> Callable[[], Any]:
            def op() -> Any:
                channel.bind(ctx if isinstance(ctx, int) else None)
                return call()
            return op

        run = scheduler.run_race([bound(c) for c in calls], schedule)
        return {
            "results": run.results,
            "errors": [None if e is None else _error_value(e) for e in run.errors],
            "interleaving": [list(step) for step in run.interleaving],
            "steps": run.steps,
            "controlled": run.controlled,
            "deadlock": run.deadlock,
        }


def _error_value(exc: BaseException) -> BaseException:
    return exc


def _describe(exc: BaseException) -> str:
    where = student_location(exc)
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"[:1000]


def describe_signature(obj: Any) -> Any:
    """[(name, kind, has_default)] of ``obj``'s signature, or None when it has none."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [[p.name, int(p.kind), p.default is not inspect.Parameter.empty]
            for p in sig.parameters.values()]


# --- the process's own guards ------------------------------------------------------------


def _refuse_sleep(seconds: float) -> None:
    raise RealSleepUsed(f"time.sleep({seconds!r}) called inside a check")


def _refuse_tracing(*args: Any, **kwargs: Any) -> None:
    raise PermissionError("tracing and profiling are reserved for the grader here")


def _forward_logging(channel: Channel) -> None:
    """Send every logging call made by student code to the grader, whatever its level,
    handlers or propagation; the student's own handlers still see what they would have."""
    sent = [0]
    enabled_for = logging.Logger.isEnabledFor
    handle = logging.Logger.handle

    def is_enabled_for(self: logging.Logger, level: int) -> bool:
        return True

    def forwarding_handle(self: logging.Logger, record: logging.LogRecord) -> None:
        if is_student_file(record.pathname) and sent[0] < MAX_LOG_EVENTS:
            sent[0] += 1
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            try:
                channel.event("log", logger=str(self.name)[:200], level=int(record.levelno),
                              message=text[:2000], ctx=channel.current_ctx())
            except (ChannelClosed, ValueError):
                pass
        if enabled_for(self, record.levelno):
            handle(self, record)

    logging.Logger.isEnabledFor = is_enabled_for  # type: ignore[method-assign]
    logging.Logger.handle = forwarding_handle  # type: ignore[method-assign]


def _guard(channel: Channel) -> None:
    scheduler.install_sched_locks()
    time.sleep = _refuse_sleep  # type: ignore[assignment]
    sys.settrace = _refuse_tracing
    sys.setprofile = _refuse_tracing
    threading.settrace = _refuse_tracing
    threading.setprofile = _refuse_tracing
    _forward_logging(channel)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grading-worker")
    parser.add_argument("--rfd", type=int, required=True)
    parser.add_argument("--wfd", type=int, required=True)
    parser.add_argument("--confine", default="{}", help="JSON: what to confine (see confine.py)")
    args = parser.parse_args(argv)
    from . import confine

    try:
        cwd = confine.apply(args.confine)
    except Exception:
        traceback.print_exc()
        os._exit(70)
    os.chdir(cwd)
    sys.path.insert(0, cwd)
    worker = Worker((args.rfd, args.wfd))
    _guard(worker.channel)
    worker.channel.event("ready")  # confined: from here on, what happens is the student's doing
    try:
        worker.channel.serve_forever()
    finally:
        os._exit(0)
