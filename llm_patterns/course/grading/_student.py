"""Helpers for meeting student code where it is: building objects, reading state, naming bugs."""

from __future__ import annotations

import inspect
import linecache
import os
import sysconfig
import traceback
from typing import Any

__all__ = [
    "construct", "describe_exception", "fmt", "is_student_file", "norm_state", "student_location",
]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# llm_patterns/ itself (this file is llm_patterns/course/grading/_student.py)
_NOT_STUDENT = tuple(
    os.path.abspath(p) + os.sep
    for p in {
        _PACKAGE_DIR,
        *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    }
    if p
)


def is_student_file(filename: str) -> bool:
    """True for code the student wrote (a notebook cell, their module), not library code."""
    if not filename or filename.startswith(("<frozen", "<string")):
        return False
    path = os.path.abspath(filename) if not filename.startswith("<") else filename
    return not path.startswith(_NOT_STUDENT)


def student_location(exc: BaseException) -> str:
    """`` (in consume, line 7: `self.tokens -= n`)`` for the student's deepest frame, or ""."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if is_student_file(frame.filename):
            line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
            where = f"in {frame.name}, line {frame.lineno}"
            return f" ({where}: `{line}`)" if line else f" ({where})"
    return ""


def describe_exception(exc: BaseException) -> str:
    """The hint for an unexpected exception from student code, pointing at their line.

    An exception that crossed from a grading worker carries ``__remote__`` (its class name,
    text and location as the worker saw them): those are used."""
    if isinstance(exc, NotImplementedError):
        return "not implemented yet — replace the `raise NotImplementedError` with your code"
    remote = getattr(exc, "__remote__", None)
    text = str(exc) if remote is None else remote.text
    if isinstance(exc, KeyError) and exc.args:
        text = repr(exc.args[0])
    name = type(exc).__name__ if remote is None else remote.cls
    where = student_location(exc) if remote is None else remote.where
    return f"raised {name}: {text}{where}" if text else f"raised {name}{where}"


def construct(cls: Any, *args: Any, **keywords: Any) -> Any:
    """Call a student's class with ``args`` positionally and ``keywords`` by name when its
    signature has those names as keyword-only (or **kwargs), else positionally after ``args``.

    Students write ``TokenBucket(capacity, refill_rate, clock)`` in many ways: ``clock`` may be
    the third positional parameter or keyword-only; both are accepted.
    """
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return cls(*args, *keywords.values())
    var_kw = any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values())
    by_name = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional: list[Any] = list(args)
    named: dict[str, Any] = {}
    if all(
        (k in params and params[k].kind in by_name) or (k not in params and var_kw)
        for k in keywords
    ):
        named.update(keywords)
    else:  # the student named them differently: keep the documented order
        for key, value in keywords.items():
            p = params.get(key)
            if p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY:
                named[key] = value
            else:
                positional.append(value)
    return cls(*positional, **named)


def norm_state(state: Any) -> str:
    """'closed' | 'open' | 'half_open' from a str, an Enum (by value or name) or 'half-open'."""
    value = getattr(state, "value", state)
    if not isinstance(value, str):
        value = getattr(state, "name", str(state))
    text = str(value).strip().lower()
    if "." in text:  # "CircuitState.HALF_OPEN"
        text = text.rsplit(".", 1)[1]
    return text.replace("-", "_").replace(" ", "_")


def fmt(x: Any) -> str:
    """A short, deterministic number for hints (floats and Decimals alike)."""
    try:
        return f"{float(x):.6g}"
    except (TypeError, ValueError):
        return repr(x)


def alert_threshold(item: Any) -> float | None:
    """The threshold of one entry of a student's ``alerts``, whatever its shape: ``0.5``,
    ``(0.5, total)``, ``{"threshold": 0.5, ...}``; None if it holds none."""
    if isinstance(item, dict):
        item = item.get("threshold")
    elif isinstance(item, (tuple, list)) and item:
        item = item[0]
    try:
        return float(item)
    except (TypeError, ValueError):
        return None
