"""Reading one response body within bounds: a deadline, a size cap, bounded decompression.

httpx bounds each read (the read timeout) but not the whole response: a server dripping a byte
every 20 ms never trips a 1 s read timeout, and a 50 MB body or a gzip bomb is read whole, in
memory. ``Body`` is fed the raw (still compressed) chunks as they arrive and

- raises ``ProviderTimeout`` as soon as the response's overall deadline has passed;
- raises ``MalformedResponse`` once the decoded body would pass ``limit`` bytes (or its
  ``content-length`` says it will, before reading anything);
- decompresses gzip/deflate itself with ``max_length``, so a bomb never expands past the limit.

A body an in-memory transport already read and decoded is fed whole (``decoded=True``).
Error bodies are only read for their message: ``truncate=True`` keeps the first ``limit`` bytes
and drops the rest instead of failing.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from ..clock import Clock
from ..errors import MalformedResponse, ProviderTimeout, request_id_from_headers

__all__ = ["ACCEPT_ENCODING", "Body"]

ACCEPT_ENCODING = "gzip, deflate"
"""What we ask for: the encodings ``Body`` can decompress within bounds."""

_IDENTITY = frozenset({"", "identity", "none"})


class _Inflate:
    """gzip or deflate (zlib-wrapped or raw, as servers disagree) with bounded output."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        self._first = True

    def __call__(self, data: bytes, room: int) -> tuple[bytes, bool]:
        """Up to ``room`` + 1 decoded bytes of ``data``, and whether input is left over."""
        try:
            out = self._d.decompress(data, room + 1)
        except zlib.error:
            if self._gzip or not self._first:
                raise
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
            out = self._d.decompress(data, room + 1)
        self._first = False
        return out, bool(self._d.unconsumed_tail)

    def more(self, room: int) -> tuple[bytes, bool]:
        out = self._d.decompress(self._d.unconsumed_tail, room + 1)
        return out, bool(self._d.unconsumed_tail)


class Body:
    """The decoded bytes of one response, read within ``limit`` bytes and a ``deadline``."""

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        limit: int,
        deadline: float | None,
        clock: Clock,
        provider: str,
        status: int,
        truncate: bool = False,
        decoded: bool = False,
    ) -> None:
        self.headers = headers
        self.limit = limit
        self.deadline = deadline
        self.clock = clock
        self.provider = provider
        self.status = status
        self.truncate = truncate
        self.full = False
        self._parts: list[bytes] = []
        self._size = 0
        self._inflate: _Inflate | None = None
        if decoded:  # (an httpx header lookup costs microseconds: none on this path)
            return
        encoding = (headers.get("content-encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = _Inflate(encoding)
        elif encoding not in _IDENTITY:
            raise self._malformed(
                f"unsupported content-encoding {encoding[:40]!r} (we asked for {ACCEPT_ENCODING})")
        length = headers.get("content-length")
        if (not truncate and self._inflate is None and length is not None
                and length.strip().isdigit() and int(length) > limit):
            raise self._too_large(f"content-length {int(length)}")

    def _malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(what, provider=self.provider, status_code=self.status,
                                 request_id=request_id_from_headers(self.headers))

    def _too_large(self, seen: str) -> MalformedResponse:
        return self._malformed(f"response body over the {self.limit}-byte limit ({seen})")

    def feed(self, raw: bytes) -> bool:
        """One raw chunk off the wire; False once no more is wanted (a truncated error body).
        Raises past the deadline or the size limit."""
        if self.deadline is not None and self.clock.now() > self.deadline:
            raise ProviderTimeout(
                f"the response took longer than its deadline ({self._size} bytes read)",
                provider=self.provider, status_code=self.status,
                request_id=request_id_from_headers(self.headers))
        if self.full or not raw:
            return not self.full
        if self._inflate is None:
            self._add(raw)
            return not self.full
        try:
            out, more = self._inflate(raw, self.limit - self._size)
            self._add(out)
            while more and not self.full:
                out, more = self._inflate.more(self.limit - self._size)
                self._add(out)
        except zlib.error:
            failed = True
        else:
            failed = False
        if failed:  # raised here, not in the except: the chain holds no part of the body
            raise self._malformed("body is not valid gzip/deflate data")
        return not self.full

    def _add(self, data: bytes) -> None:
        room = self.limit - self._size
        if len(data) > room:
            if not self.truncate:
                raise self._too_large(f"more than {self.limit} bytes decoded")
            data = data[:room]
            self.full = True
        self._parts.append(data)
        self._size += len(data)

    @property
    def size(self) -> int:
        return self._size

    def content(self) -> bytes:
        return b"".join(self._parts)

    def take(self) -> bytes:
        """The bytes decoded since the last ``take`` (a stream is read as it comes, not kept)."""
        parts = self._parts
        if not parts:
            return b""
        self._parts = []
        return parts[0] if len(parts) == 1 else b"".join(parts)
