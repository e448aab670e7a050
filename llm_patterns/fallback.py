"""``FallbackChain``: ask providers in order until one answers.

Which failures move on to the next provider:

- ``BudgetExceeded`` and ``InvalidRequestError`` stop the chain at once: the next provider would
  spend money the budget forbids, or refuse the same malformed request.
- ``ContextWindowExceeded`` moves on: a model with a larger window may answer.
- Everything else (outages, timeouts, 429s, auth, content filter, open breakers, even a provider
  that raises a plain ``Exception``) moves on. ``BaseException`` (Ctrl-C, cancellation) is never
  caught.

The answer keeps the provider's ``LLMResponse`` fields (``latency_s`` and ``attempts`` are that
provider's) with ``fallback_used=True`` when it was not the first provider that answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .clock import Clock, SystemClock
from .errors import AllProvidersFailed, BudgetExceeded, InvalidRequestError, add_note
from .events import Observable
from .response import LLMResponse, Provider, to_messages

__all__ = ["STOP_CHAIN", "FallbackChain"]

logger = logging.getLogger("llm_patterns.fallback")

STOP_CHAIN: tuple[type[BaseException], ...] = (BudgetExceeded, InvalidRequestError)
"""Errors that are raised at once instead of trying the next provider."""


class FallbackChain(Observable):
    """Try ``providers`` in order; return the first answer.

    Events (``subscribe``): ``failure`` (provider, position, error_type, error, fatal),
    ``success`` (provider, position, fallback_used) and ``exhausted`` (errors) when all failed.
    """

    _event_source = "fallback"

    def __init__(
        self, providers: Sequence[Provider], *, name: str = "", clock: Clock | None = None
    ) -> None:
        if isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence):
            raise TypeError(
                f"providers must be a list of providers, got {type(providers).__name__}"
            )
        if not providers:
            raise ValueError("providers must not be empty: a fallback chain needs at least one")
        for i, p in enumerate(providers):
            pname = getattr(p, "name", None)
            if not isinstance(pname, str) or not pname:
                raise ValueError(f"providers[{i}] needs a non-empty str name, got {pname!r}")
            if not callable(getattr(p, "complete", None)):
                raise TypeError(f"providers[{i}] ({pname!r}) has no complete() method")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.providers: list[Provider] = list(providers)
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.providers)
        label = f"name={self.name!r}, " if self.name else ""
        return f"FallbackChain({label}providers=[{names}])"

    def __len__(self) -> int:
        return len(self.providers)

    # -- the two halves of one step, shared by sync and async ----------------------------------
    @property
    def _prefix(self) -> str:
        return f"fallback [{self.name}]" if self.name else "fallback"

    def _failed(
        self, position: int, error: Exception, errors: list[tuple[str, BaseException]]
    ) -> None:
        """Record one failure; raise it at once when it must stop the chain."""
        provider = self.providers[position].name
        fatal = isinstance(error, STOP_CHAIN)
        errors.append((provider, error))
        if fatal:
            outcome = f"not falling back ({type(error).__name__} stops the chain)"
        elif position + 1 < len(self.providers):
            outcome = f"trying {self.providers[position + 1].name}"
        else:
            outcome = "no providers left"
        logger.warning(
            "%s: provider %s failed with %s: %s; %s",
            self._prefix, provider, type(error).__name__, error, outcome,
        )
        self._emit(
            "failure", self.clock.now(), provider=provider, position=position,
            error_type=type(error).__name__, error=str(error), fatal=fatal,
        )
        if fatal:
            if len(errors) > 1:
                earlier = "; ".join(f"{n}: {type(e).__name__}" for n, e in errors[:-1])
                add_note(error, f"earlier providers in the fallback chain failed: {earlier}")
            raise error

    def _answered(self, position: int, response: Any, failures: int) -> LLMResponse:
        provider = self.providers[position].name
        if position:
            response = replace(response, fallback_used=True)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s: answered by %s (provider %d/%d%s)", self._prefix, provider, position + 1,
                len(self.providers), f", after {failures} failure(s)" if failures else "",
            )
        if self._subscribers:
            self._emit(
                "success", self.clock.now(), provider=provider, position=position,
                fallback_used=bool(position),
            )
        return response

    def _exhausted(self, errors: list[tuple[str, BaseException]]) -> AllProvidersFailed:
        logger.error("%s: all %d providers failed", self._prefix, len(errors))
        self._emit(
            "exhausted", self.clock.now(),
            errors=[(n, type(e).__name__, str(e)) for n, e in errors],
        )
        return AllProvidersFailed(errors)

    def _not_a_response(self, position: int, value: Any) -> TypeError:
        return TypeError(
            f"provider {self.providers[position].name!r} returned {type(value).__name__}, "
            f"expected an LLMResponse"
        )

    # -- public ------------------------------------------------------------------------------
    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """The first provider's answer that succeeds; ``AllProvidersFailed`` when none does."""
        to_messages(prompt, messages)  # bad input is the caller's error, not a provider failure
        errors: list[tuple[str, BaseException]] = []
        for position, provider in enumerate(self.providers):
            try:
                if kw:
                    response = provider.complete(prompt, messages=messages, max_tokens=max_tokens,
                                                 **kw)
                else:  # (an empty **kw still costs a dict merge per call)
                    response = provider.complete(prompt, messages=messages, max_tokens=max_tokens)
                if not isinstance(response, LLMResponse):
                    raise self._not_a_response(position, response)
            except Exception as error:  # noqa: BLE001 - any failure moves on (see module doc)
                self._failed(position, error, errors)
                continue
            return self._answered(position, response, len(errors))
        raise self._exhausted(errors) from errors[-1][1]

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """The async twin of ``complete``; every provider needs an ``acomplete``."""
        to_messages(prompt, messages)
        missing = [p.name for p in self.providers if not callable(getattr(p, "acomplete", None))]
        if missing:
            raise TypeError(f"providers without an acomplete() method: {missing}")
        errors: list[tuple[str, BaseException]] = []
        for position, provider in enumerate(self.providers):
            try:
                response = await provider.acomplete(
                    prompt, messages=messages, max_tokens=max_tokens, **kw
                )
                if not isinstance(response, LLMResponse):
                    raise self._not_a_response(position, response)
            except Exception as error:  # noqa: BLE001
                self._failed(position, error, errors)
                continue
            return self._answered(position, response, len(errors))
        raise self._exhausted(errors) from errors[-1][1]
