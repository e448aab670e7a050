"""``FallbackChain``: ask providers in order until one answers.

Which failures move on to the next provider is the error taxonomy's answer
(``errors.stops_chain``), not a list kept here:

- ``BudgetExceeded`` and ``InvalidRequestError`` stop the chain at once: the next provider would
  spend money the budget forbids, or refuse the same malformed request; so do ``ValueError`` and
  ``TypeError``, the caller's own mistakes (a bad ``max_tokens``, no prompt, a request too big
  for a rate limiter's bucket), raised as themselves.
- ``ContextWindowExceeded`` moves on: a model with a larger window may answer.
- Everything else (outages, timeouts, 429s, billing, auth, content filter, open breakers, a
  provider that raises a plain ``Exception`` or returns something that is not an
  ``LLMResponse``) moves on. ``BaseException`` (Ctrl-C, cancellation) is never caught.

The request is built and checked once (``Request``), before any provider is asked. The answer
keeps the provider's ``LLMResponse`` fields (``latency_s`` and ``attempts`` are that
provider's) with ``fallback_used=True`` when it was not the first provider that answered.

``complete`` and ``acomplete`` are thin shells over one loop, ``flow`` (see ``_twin``), which
``ResilientClient`` runs over its per-provider layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from ._twin import Flow, Twin, arun, run
from .clock import Clock, SystemClock
from .errors import AllProvidersFailed, MalformedResponse, add_note, describe, stops_chain
from .events import Observable
from .request import Request
from .response import LLMResponse, Provider, asend, check_all, send

__all__ = ["FallbackChain"]

logger = logging.getLogger("llm_patterns.fallback")

_SEND: Twin = (send, asend)


class FallbackChain(Observable):
    """Try ``providers`` in order; return the first answer.

    Events (``subscribe``): ``failure`` (provider, position, error_type, error, fatal),
    ``success`` (provider, position, fallback_used) and ``exhausted`` (errors) when all failed.
    """

    _event_source = "fallback"

    def __init__(
        self, providers: Sequence[Provider], *, name: str = "", clock: Clock | None = None
    ) -> None:
        if not isinstance(providers, Sequence) or isinstance(cast(Any, providers), (str, bytes)):
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
        fatal = stops_chain(error)
        errors.append((provider, error))
        if fatal:
            outcome = f"not falling back ({type(error).__name__} stops the chain)"
        elif position + 1 < len(self.providers):
            outcome = f"trying {self.providers[position + 1].name}"
        else:
            outcome = "no providers left"
        logger.warning("%s: provider %s failed with %s; %s", self._prefix, provider,
                       describe(error), outcome)
        self._emit(
            "failure", self.clock.now(), provider=provider, position=position,
            error_type=type(error).__name__, error=str(error), fatal=fatal,
        )
        if fatal:
            if len(errors) > 1:
                earlier = "; ".join(f"{n}: {type(e).__name__}" for n, e in errors[:-1])
                add_note(error, f"earlier providers in the fallback chain failed: {earlier}")
            raise error

    def _answered(self, position: int, failures: int) -> None:
        provider = self.providers[position].name
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

    def _exhausted(self, errors: list[tuple[str, BaseException]]) -> AllProvidersFailed:
        logger.error("%s: all %d providers failed", self._prefix, len(errors))
        self._emit(
            "exhausted", self.clock.now(),
            errors=[(n, type(e).__name__, str(e)) for n, e in errors],
        )
        return AllProvidersFailed(errors)

    def _not_a_response(self, position: int, value: Any) -> MalformedResponse:
        name = self.providers[position].name
        return MalformedResponse(f"returned {type(value).__name__}, expected an LLMResponse",
                                 provider=name)

    # -- the loop ------------------------------------------------------------------------------
    def flow(
        self,
        request: Request,
        attempt: Callable[[int, Any], Flow[Any]] | None = None,
        finish: Callable[[int, Any], Any] | None = None,
        *,
        sync: bool = False,
    ) -> Flow[Any]:
        """The fallback loop as a flow (``_twin``). ``attempt(position, provider)`` makes the
        flow that asks one provider (default: ``provider.send(request)``, or its ``complete``,
        whose answer must be an ``LLMResponse``); ``finish(position, result)`` makes the answer
        from what the attempt returned (default: ``fallback_used`` set when ``position > 0``).
        Returns the first answer; raises what stops the chain, else ``AllProvidersFailed``.
        ``sync``: driven by ``_twin.run``, so the default sends are made where they stand."""
        errors: list[tuple[str, BaseException]] = []
        for position, provider in enumerate(self.providers):
            try:
                if attempt is None:
                    result = send(provider, request) if sync else (yield _SEND, (provider, request))
                    if not isinstance(result, LLMResponse):
                        raise self._not_a_response(position, result)
                else:
                    result = yield from attempt(position, provider)
            except Exception as error:
                self._failed(position, error, errors)
                continue
            if finish is not None:
                result = finish(position, result)
            elif position:
                result = replace(result, fallback_used=True)
            self._answered(position, len(errors))
            return result
        raise self._exhausted(errors) from errors[-1][1]

    # -- public ------------------------------------------------------------------------------
    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """The first provider's answer that succeeds; ``AllProvidersFailed`` when none does. A
        request one of the providers could not take is refused first (``check_all``)."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        check_all(self.providers, request)
        response: LLMResponse = run(self.flow(request, sync=True))
        return response

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """The async twin of ``complete``; every provider needs an ``asend`` or ``acomplete``."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        missing = [p.name for p in self.providers
                   if not callable(getattr(p, "asend", None))
                   and not callable(getattr(p, "acomplete", None))]
        if missing:
            raise TypeError(f"providers without an acomplete() method: {missing}")
        check_all(self.providers, request)
        response: LLMResponse = await arun(self.flow(request))
        return response
