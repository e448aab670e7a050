"""Prompt caching as each API bills it, so the mock can report cache reads and writes.

- OpenAI caches automatically: a prompt of at least 1,024 tokens whose prefix was seen recently
  reports ``prompt_tokens_details.cached_tokens``, the longest cached prefix in steps of 128
  tokens from 1,024 (prefixes stay cached for 5 minutes after their last use here; OpenAI says
  5-10 minutes of inactivity). Nothing is reported as written.
- Anthropic caches at the request's ``cache_control`` breakpoints: the longest breakpoint
  prefix already cached is read (``cache_read_input_tokens``); the part up to the last
  breakpoint that is not is written (``cache_creation_input_tokens``), split by the TTL of the
  breakpoint that ends each written segment (``cache_creation.ephemeral_5m_input_tokens`` /
  ``ephemeral_1h_input_tokens``). A prefix shorter than 1,024 tokens is not cached (the
  minimum of most Claude models; some need 2,048 or 4,096). A hit refreshes the entry's TTL.

Prefixes are measured with the mock's token estimate on the prompt text, and entries are keyed
by model. The cache holds at most ``max_entries`` prefixes (least recently used evicted).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .request import CacheBreakpoint

__all__ = ["CacheUse", "PromptCache"]

MIN_TOKENS = 1024
OPENAI_STEP = 128
OPENAI_TTL = 300.0
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True)
class CacheUse:
    """Prompt tokens read from the cache and written to it (by TTL)."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


NO_CACHE = CacheUse()


class PromptCache:
    """The cached prefixes, with their expiry on the server's clock."""

    def __init__(self, now: Callable[[], float], max_entries: int = 100_000) -> None:
        self._now = now
        self._entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self.max_entries = max_entries

    def _hit(self, key: str, now: float, ttl: float, commit: bool) -> bool:
        expiry = self._entries.get(key)
        if expiry is None or expiry <= now:
            return False
        if commit:  # a hit refreshes the entry
            self._entries[key] = max(expiry, now + ttl)
            self._entries.move_to_end(key)
        return True

    def _put(self, key: str, now: float, ttl: float, commit: bool) -> None:
        if not commit:
            return
        self._entries[key] = max(self._entries.get(key, 0.0), now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def openai(self, model: str, prompt: str, tokens: Callable[[str], int], *,
               chars_per_token: float, commit: bool = True) -> CacheUse:
        """OpenAI's automatic caching of ``prompt`` (see the module docstring); ``commit=False``
        only looks (the server looks before it charges, and commits once it admits);
        ``chars_per_token`` places the 128-token steps in the text."""
        total = tokens(prompt)
        if total < MIN_TOKENS:
            return NO_CACHE
        now = self._now()
        hasher = hashlib.sha1(model.encode(), usedforsecurity=False)
        done = 0
        read = 0
        keys = []
        for step in range(MIN_TOKENS, total + 1, OPENAI_STEP):
            end = min(len(prompt), math.floor(step * chars_per_token))
            hasher.update(prompt[done:end].encode("utf-8", "surrogatepass"))
            done = end
            keys.append((step, hasher.copy().hexdigest()))
        for step, key in reversed(keys):
            if self._hit(key, now, OPENAI_TTL, commit):
                read = step
                break
        for step, key in keys:
            if step > read:
                self._put(key, now, OPENAI_TTL, commit)
        return CacheUse(read=read)

    def anthropic(self, model: str, prompt: str, breakpoints: tuple[CacheBreakpoint, ...],
                  tokens: Callable[[str], int], *, commit: bool = True) -> CacheUse:
        """Anthropic's caching at ``breakpoints`` (see the module docstring)."""
        if not breakpoints:
            return NO_CACHE
        now = self._now()
        sized = [(tokens(prompt[: bp.chars]), f"{model}:{bp.key}", bp.ttl) for bp in breakpoints]
        sized = [s for s in sized if s[0] >= MIN_TOKENS]
        if not sized:
            return NO_CACHE
        read = 0
        for size, key, ttl in reversed(sized):
            if self._hit(key, now, TTL_SECONDS[ttl], commit):
                read = size
                break
        written = {"5m": 0, "1h": 0}
        start = read
        for size, key, ttl in sized:
            if size > read:
                written[ttl] += size - start
                start = size
                self._put(key, now, TTL_SECONDS[ttl], commit)
        return CacheUse(read=read, write_5m=written["5m"], write_1h=written["1h"])
