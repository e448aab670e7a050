"""The one decorator shape the patterns share: ``@policy`` / ``@breaker`` on sync or async code."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any


def decorate(fn: Callable[..., Any], call: Callable[..., Any],
             call_async: Callable[..., Awaitable[Any]], **attributes: Any) -> Callable[..., Any]:
    """``fn`` run through ``call`` (or ``call_async`` for a coroutine function), keeping its name.

    ``attributes`` are set on the wrapper (e.g. ``retry_policy=self``) for introspection.
    """
    if not callable(fn):
        raise TypeError(f"expected a function to decorate, got {fn!r}")
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_async(fn, *args, **kwargs)

        wrapper: Callable[..., Any] = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(fn, *args, **kwargs)

        wrapper = sync_wrapper
    for name, value in attributes.items():
        setattr(wrapper, name, value)
    return wrapper
