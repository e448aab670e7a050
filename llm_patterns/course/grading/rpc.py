"""Calls between the grader and a grading worker: length-prefixed JSON over two pipes.

The grader holds the checks; the worker holds the student's code. Each side can call the other
(the grader calls ``bucket.consume(1)``; the student's code then calls ``clock.now()``, served
by the grader's own clock). Values cross by value when they are plain data (numbers, strings,
bytes, Decimal, lists, tuples, dicts, sets, exceptions) and by reference otherwise: the other
side gets a proxy whose every use is a call back. Nothing crosses by pickle, so nothing the
worker sends can run code in the grader: a malformed message closes the channel.

A call made while a thread serves a request of the other side carries that request's id
(``ctx``): the other side hands it to the thread that waits for that request, so nested calls
(a callback inside a call inside a callback) run on the right threads, as in-process calls do.
"""

from __future__ import annotations

import _thread
import base64
import contextlib
import enum
import inspect
import itertools
import json
import os
import queue
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = [
    "MAX_MESSAGE",
    "Channel",
    "ChannelClosed",
    "ProtocolError",
    "RemoteError",
]

MAX_MESSAGE = 16 << 20
"""Largest message either side accepts (bytes); a bigger one closes the channel."""

MAX_DEPTH = 40
MAX_ITEMS = 200_000
_allocate = _thread.allocate_lock  # real locks: the worker later patches threading's factories


class ChannelClosed(Exception):
    """The other side is gone (it exited, was killed, or broke the protocol)."""


class ProtocolError(Exception):
    """A message that does not follow the protocol."""


class RemoteError(Exception):
    """An exception of the other side that has no class of the same name here."""


_CLOSED = object()


class _Context(threading.local):
    def __init__(self) -> None:
        self.serving: list[tuple[Channel, int]] = []


_ctx = _Context()


def _public(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and not name.startswith("_") and len(name) < 200


def method_names(obj: Any) -> list[str]:
    """Public names that are methods on ``obj``'s class (called in one round trip)."""
    cls = type(obj)
    names = []
    for name in dir(cls):
        if not _public(name):
            continue
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(attr, (staticmethod, classmethod)) or inspect.isfunction(attr) or (
            inspect.ismethoddescriptor(attr) and callable(attr)
        ):
            names.append(name)
    return names[:500]


class Channel:
    """One end of a connection: requests both ways, each answered once, nested freely.

    ``handler(channel, request) -> value`` serves the other side's requests (it may raise; the
    exception travels back). ``codec`` turns values into JSON and back (it owns this side's
    exported objects). ``on_event(message)`` receives one-way events.
    """

    def __init__(
        self,
        rfd: int,
        wfd: int,
        handler: Callable[[Channel, dict[str, Any]], Any],
        codec: Codec,
        *,
        name: str,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        direct: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._rfd, self._wfd = rfd, wfd
        self._wlock = _allocate()
        self._mutex = _allocate()
        self._ids = itertools.count(1)
        self._waiters: dict[int, queue.SimpleQueue[Any]] = {}
        self.toplevel: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.handler = handler
        self.codec = codec
        codec.channel = self
        self.on_event = on_event
        self.direct = direct  # answered by the reader thread itself (e.g. a status probe)
        self.closed = False
        self.close_reason = ""
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._reader.start()

    # --- wire ---------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), allow_nan=True).encode("utf-8")
        if len(data) > MAX_MESSAGE:
            raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE} limit")
        frame = len(data).to_bytes(4, "big") + data
        with self._wlock:
            if self.closed:
                raise ChannelClosed(self.close_reason or "channel closed")
            view = memoryview(frame)
            try:
                while view:
                    n = os.write(self._wfd, view)
                    view = view[n:]
            except OSError as exc:
                self._close(f"write failed: {exc}")
                raise ChannelClosed(self.close_reason) from None

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(self._rfd, min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_loop(self) -> None:
        reason = "the other side closed the channel"
        try:
            while True:
                size = int.from_bytes(self._read_exact(4), "big")
                if size > MAX_MESSAGE:
                    raise ProtocolError(f"a message of {size} bytes (limit {MAX_MESSAGE})")
                try:
                    message = json.loads(self._read_exact(size))
                except (ValueError, RecursionError) as exc:
                    raise ProtocolError(f"not JSON: {exc}") from None
                self._dispatch(message)
        except EOFError:
            pass
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"read failed: {exc}"
        self._close(reason)
        # the read end is closed here and only here, after the last read: closed by another
        # thread while this loop still runs, its number goes to the next pipe opened (another
        # task's new worker) and this reader would go on reading that pipe, stealing its
        # messages (seen as a load that never answers, or a worker "closed" before it started)
        fd, self._rfd = self._rfd, -1
        with contextlib.suppress(OSError):
            os.close(fd)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("id", 0), int):
            raise ProtocolError("a message must be an object with an integer id")
        kind = message.get("t")
        if kind == "res":
            with self._mutex:
                waiter = self._waiters.get(message["id"])
            if waiter is not None:
                waiter.put(message)
        elif kind == "req":
            if self.direct is not None and message.get("op") == "status":
                try:
                    self._respond(message["id"], True, self.direct(message))
                except ChannelClosed:
                    pass
                return
            ctx = message.get("ctx")
            with self._mutex:
                waiter = self._waiters.get(ctx) if isinstance(ctx, int) else None
            (waiter or self.toplevel).put(message)
        elif kind == "evt":
            if self.on_event is not None:
                self.on_event(message)
        else:
            raise ProtocolError(f"unknown message kind {kind!r}")

    def _close(self, reason: str) -> None:
        with self._mutex:
            if self.closed:
                return
            self.closed = True
            self.close_reason = reason
            waiters = list(self._waiters.values())
        for waiter in waiters:
            waiter.put(_CLOSED)
        self.toplevel.put(_CLOSED)

    def close(self, reason: str = "closed") -> None:
        """Close the channel and its write end (the peer reads EOF). Idempotent: the fd is
        closed once, as its number may belong to another pipe a moment later. The read end is
        the reader thread's to close, once the peer's side is gone (``_read_loop``)."""
        self._close(reason)
        # under the write lock, so no write is between its check and os.write; a write blocked
        # on a full pipe (a worker that stopped reading) gets EPIPE once the worker is killed,
        # so rather than wait for it, leave that one fd to the process's end
        if not self._wlock.acquire(timeout=1.0):
            return
        try:
            fd, self._wfd = self._wfd, -1
        finally:
            self._wlock.release()
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    # --- calls --------------------------------------------------------------------------
    def current_ctx(self) -> int | None:
        for channel, rid in reversed(_ctx.serving):
            if channel is self:
                return rid
        return None

    def bind(self, ctx: int | None) -> None:
        """Make this thread's calls count as made within the other side's request ``ctx``."""
        _ctx.serving = [(self, ctx)] if ctx is not None else []

    def request(self, op: str, *, timeout: float | None = None, **fields: Any) -> Any:
        """Send a request and wait for its answer, serving nested requests meanwhile
        (``TimeoutError`` after ``timeout`` seconds without a message for this request)."""
        rid = next(self._ids)
        waiter: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._mutex:
            if self.closed:
                raise ChannelClosed(self.close_reason)
            self._waiters[rid] = waiter
        try:
            self._send({"t": "req", "id": rid, "ctx": self.current_ctx(), "op": op, **fields})
            while True:
                try:
                    message = waiter.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"no answer to {op!r} within {timeout:g} s") from None
                if message is _CLOSED:
                    raise ChannelClosed(self.close_reason)
                if message.get("t") == "res":
                    if message.get("ok") is True:
                        return self.codec.decode(message.get("value"))
                    raise self.codec.decode_error(message.get("error"))
                self.serve_one(message)
        finally:
            with self._mutex:
                self._waiters.pop(rid, None)

    def event(self, kind: str, **fields: Any) -> None:
        self._send({"t": "evt", "id": 0, "kind": kind, **fields})

    def serve_one(self, message: dict[str, Any]) -> None:
        rid = message.get("id")
        if not isinstance(rid, int):
            return
        _ctx.serving.append((self, rid))
        try:
            try:
                value = self.handler(self, message)
            except BaseException as exc:
                if isinstance(exc, ChannelClosed) and self.closed:
                    return
                self._respond_error(rid, exc)
                return
            self._respond(rid, True, value)
        except ChannelClosed:
            pass
        finally:
            _ctx.serving.pop()

    def _respond(self, rid: int, ok: bool, value: Any) -> None:
        try:
            encoded = self.codec.encode(value)
            self._send({"t": "res", "id": rid, "ok": ok, "value": encoded})
        except ChannelClosed:
            raise
        except Exception as exc:
            self._respond_error(rid, exc)

    def _respond_error(self, rid: int, exc: BaseException) -> None:
        try:
            encoded = self.codec.encode_error(exc)
        except Exception as inner:
            encoded = self.codec.encode_error(RemoteError(f"{type(exc).__name__}: {inner}"))
        self._send({"t": "res", "id": rid, "ok": False, "error": encoded})

    def serve_forever(self) -> None:
        """Serve requests that belong to no waiting thread until the channel closes."""
        while True:
            message = self.toplevel.get()
            if message is _CLOSED:
                return
            self.serve_one(message)


# --- values ------------------------------------------------------------------------------


class Codec:
    """Turns values into JSON-able data and back for one side of a channel.

    ``make_proxy(id, callable, type_name, methods)`` builds this side's stand-in for an object of
    the other side; ``exception_class(mro)`` picks which local class rebuilds an exception.
    """

    channel: Channel

    def __init__(self) -> None:
        self._exports: dict[int, Any] = {}  # export id -> object
        self._export_ids: dict[int, int] = {}  # id(object) -> export id
        self._next = itertools.count(1)
        self._proxies: dict[int, Any] = {}  # the other side's id -> our proxy
        self._imported: dict[int, tuple[int, Any]] = {}  # id(value object) -> (their id, obj)
        self._mutex = _allocate()

    # --- exports ---------------------------------------------------------------------
    def export(self, obj: Any) -> int:
        with self._mutex:
            eid = self._export_ids.get(id(obj))
            if eid is not None and self._exports.get(eid) is obj:
                return eid
            eid = next(self._next)
            self._exports[eid] = obj
            self._export_ids[id(obj)] = eid
            return eid

    def exported(self, eid: Any) -> Any:
        if not isinstance(eid, int):
            raise ProtocolError(f"an object id must be an int, got {eid!r}")
        with self._mutex:
            try:
                return self._exports[eid]
            except KeyError:
                raise ProtocolError(f"no object {eid} was given to the other side") from None

    def exports_count(self) -> int:
        return len(self._exports)

    # --- hooks ---------------------------------------------------------------------
    def make_proxy(self, rid: int, is_callable: bool, type_name: str, methods: list[str]) -> Any:
        raise NotImplementedError

    def proxy_id(self, obj: Any) -> int | None:
        """The other side's id of ``obj`` when it is one of our proxies, else None."""
        return None

    def exception_class(self, mro: list[list[str]]) -> type[BaseException]:
        raise NotImplementedError

    def where(self, exc: BaseException) -> str:
        return ""

    def accept_export(self, obj: Any) -> None:
        """Raise if ``obj`` must not be handed to the other side by reference."""

    # --- encode --------------------------------------------------------------------
    def encode(self, value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
        budget = budget if budget is not None else [MAX_ITEMS]
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("a value too large to send (more than 200,000 items)")
        if depth > MAX_DEPTH:
            raise ValueError("a value nested too deep to send")
        t = type(value)
        if value is None or t is bool or t is int or t is str:
            return value
        if t is float:
            return value
        pid = self.proxy_id(value)
        if pid is not None:
            return {"$p": pid}
        with self._mutex:
            imported = self._imported.get(id(value))
        if imported is not None and imported[1] is value:
            return {"$p": imported[0]}
        d = depth + 1
        if isinstance(value, enum.Enum):
            return self._ref(value)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, (bytes, bytearray)):
            return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, Decimal):
            return {"$dec": str(value)}
        if isinstance(value, tuple):
            return {"$t": [self.encode(v, d, budget) for v in value]}
        if isinstance(value, list):
            return [self.encode(v, d, budget) for v in value]
        if isinstance(value, dict):
            return {"$m": [[self.encode(k, d, budget), self.encode(v, d, budget)]
                           for k, v in value.items()]}
        if isinstance(value, (set, frozenset)):
            return {"$s": [self.encode(v, d, budget) for v in value],
                    "f": isinstance(value, frozenset)}
        if isinstance(value, BaseException):
            return {"$e": self._exception(value, d, budget)}
        return self._ref(value)

    def _ref(self, value: Any) -> dict[str, Any]:
        self.accept_export(value)
        return {"$r": self.export(value), "c": callable(value),
                "n": type(value).__name__[:100], "m": method_names(value)}

    def _exception(self, exc: BaseException, depth: int, budget: list[int]) -> dict[str, Any]:
        mro = [[getattr(k, "__module__", "") or "", k.__qualname__] for k in type(exc).__mro__][:12]
        try:
            args = self.encode(tuple(exc.args), depth, budget)
        except Exception:
            args = {"$t": [repr(a)[:2000] for a in exc.args]}
        attrs = {}
        for name, value in list(vars(exc).items())[:30]:
            if _public(name):
                try:
                    attrs[name] = self.encode(value, depth, budget)
                except Exception:
                    continue
        try:
            text = str(exc)[:4000]
        except Exception:
            text = ""
        out = {"mro": mro, "args": args, "attrs": attrs, "str": text,
               "where": self.where(exc)[:500]}
        if getattr(exc, "__remote__", None) is None and self.exports_exceptions:
            out["ref"] = self.export(exc)
        return out

    exports_exceptions = False
    """Whether exceptions sent by value also keep their identity (the grader's do: a student's
    code that re-raises the grader's exception hands back the very same object)."""

    def encode_error(self, exc: BaseException) -> dict[str, Any]:
        """An exception as an answer: a reference when it came from the other side (re-raised:
        the same object goes back), else by value."""
        with self._mutex:
            imported = self._imported.get(id(exc))
        if imported is not None and imported[1] is exc:
            return {"$p": imported[0]}
        return {"$e": self._exception(exc, 0, [MAX_ITEMS])}

    # --- decode --------------------------------------------------------------------
    def decode(self, data: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH + 2:
            raise ProtocolError("value nested too deep")
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        d = depth + 1
        if isinstance(data, list):
            return [self.decode(v, d) for v in data]
        if not isinstance(data, dict) or len(data) > 5:
            raise ProtocolError(f"unexpected value {type(data).__name__}")
        if "$t" in data:
            return tuple(self._items(data["$t"], d))
        if "$m" in data:
            pairs = data["$m"]
            if not isinstance(pairs, list):
                raise ProtocolError("a mapping must be a list of pairs")
            out = {}
            for pair in pairs:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ProtocolError("a mapping entry must be a pair")
                key = self.decode(pair[0], d)
                try:
                    out[key] = self.decode(pair[1], d)
                except TypeError:
                    raise ProtocolError("an unhashable mapping key") from None
            return out
        if "$s" in data:
            items = self._items(data["$s"], d)
            try:
                return frozenset(items) if data.get("f") else set(items)
            except TypeError:
                raise ProtocolError("an unhashable set item") from None
        if "$b" in data:
            try:
                return base64.b64decode(str(data["$b"]), validate=True)
            except ValueError:
                raise ProtocolError("bad base64") from None
        if "$dec" in data:
            try:
                return Decimal(str(data["$dec"])[:1000])
            except ArithmeticError:
                raise ProtocolError("bad Decimal") from None
        if "$p" in data:
            return self.exported(data["$p"])
        if "$r" in data:
            rid = data["$r"]
            if not isinstance(rid, int):
                raise ProtocolError("a reference id must be an int")
            with self._mutex:
                proxy = self._proxies.get(rid)
            if proxy is None:
                methods = data.get("m") or []
                if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                    raise ProtocolError("method names must be strings")
                proxy = self.make_proxy(rid, bool(data.get("c")),
                                        str(data.get("n", "object"))[:100],
                                        [m for m in methods[:500] if _public(m)])
                with self._mutex:
                    proxy = self._proxies.setdefault(rid, proxy)
            return proxy
        if "$e" in data:
            return self.decode_error(data)
        raise ProtocolError("unknown tagged value")

    def _items(self, items: Any, depth: int) -> list[Any]:
        if not isinstance(items, list):
            raise ProtocolError("expected a list")
        return [self.decode(v, depth) for v in items]

    def decode_error(self, data: Any) -> BaseException:
        if isinstance(data, dict) and "$p" in data:
            obj = self.exported(data["$p"])
            if isinstance(obj, BaseException):
                return obj
            raise ProtocolError("a reference to an exception that is not one")
        if not isinstance(data, dict) or not isinstance(data.get("$e"), dict):
            raise ProtocolError("an error must be an encoded exception")
        info = data["$e"]
        mro = info.get("mro")
        if not isinstance(mro, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in mro
        ):
            raise ProtocolError("bad exception class path")
        cls = self.exception_class(mro)
        args = self.decode(info.get("args", {"$t": []}))
        if not isinstance(args, tuple):
            args = (args,)
        exc = cls.__new__(cls)
        exc.args = args
        attrs = info.get("attrs") or {}
        if not isinstance(attrs, dict):
            raise ProtocolError("exception attributes must be a mapping")
        for name, value in list(attrs.items())[:30]:
            if _public(name):
                try:
                    setattr(exc, name, self.decode(value))
                except (AttributeError, TypeError):
                    pass
        text, where = info.get("str", ""), info.get("where", "")
        remote = RemoteInfo(mro[0][1] if mro else cls.__name__, str(text)[:4000], str(where)[:500])
        try:
            exc.__remote__ = remote  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
        ref = info.get("ref")
        if isinstance(ref, int):
            with self._mutex:
                self._imported[id(exc)] = (ref, exc)
        return exc


class RemoteInfo:
    """What the other side said about an exception: its class name, text, and where it rose."""

    __slots__ = ("cls", "text", "where")

    def __init__(self, cls: str, text: str, where: str) -> None:
        self.cls, self.text, self.where = cls, text, where

    def __repr__(self) -> str:
        return f"RemoteInfo({self.cls!r}, {self.text!r}, {self.where!r})"
