"""Server-sent events from raw bytes, without I/O (the WHATWG event-stream format).

``SSEDecoder.feed(data)`` takes the decoded body bytes as they arrive, in chunks cut anywhere
(inside a line, between ``\\r`` and ``\\n``, inside a UTF-8 character), and returns the events
completed by them. Lines end with ``\\n``, ``\\r\\n`` or ``\\r``; ``data:`` lines of one event
are joined by ``\\n``; ``event:`` names it; comments (``:`` lines, the keep-alives some proxies
send), ``id:`` and ``retry:`` are skipped; a blank line ends an event, and an event without data
is no event. ``end()`` reads what is left once the body ends.

Bounds: the body's size is capped by the caller (``Body``); a single line is capped here
(``max_line``), so a server that never sends a newline cannot make us buffer without end.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MAX_LINE_BYTES", "SSEDecoder", "ServerEvent"]

MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line we buffer: a chunk of an answer is a few hundred bytes."""


class ServerEvent(NamedTuple):
    """One event: its name (``event:``, ``"message"`` when none) and its ``data``."""

    event: str
    data: str


class SSEDecoder:
    """Bytes in, ``ServerEvent`` out (see the module docstring)."""

    __slots__ = ("_cr", "_data", "_event", "_first", "_tail", "max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._tail = b""  # an unfinished line
        self._cr = False  # the last chunk ended with \r: a \n opening the next one is its pair
        self._data: list[str] = []
        self._event = ""
        self._first = True

    def feed(self, data: bytes) -> list[ServerEvent]:
        """The events completed by ``data``."""
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._tail:
            data = self._tail + data
        if self._first and data:
            if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark may open the stream
                data = data[3:]
            elif len(data) < 3 and b"\xef\xbb\xbf".startswith(data):
                self._tail = data
                return []
            self._first = False
        if b"\r" in data:
            held = data.endswith(b"\r")  # may be the first half of a \r\n
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = data.split(b"\n")
            tail = lines.pop()
            self._cr = held
        else:
            lines = data.split(b"\n")
            tail = lines.pop()
        if len(tail) > self.max_line:
            raise ValueError(f"an event-stream line is longer than {self.max_line} bytes")
        self._tail = tail
        events: list[ServerEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def end(self) -> list[ServerEvent]:
        """The body ended: an event whose lines are complete but which the server did not close
        with a blank line is dispatched; an unfinished line (a cut body) is dropped."""
        events: list[ServerEvent] = []
        self._tail = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[ServerEvent]) -> None:
        if not line:  # a blank line dispatches the event
            if self._data:
                events.append(ServerEvent(self._event or "message", "\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        if line[0] == 58:  # b":" a comment
            return
        text = line.decode("utf-8", "replace")
        field, colon, value = text.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        # id, retry and unknown fields are ignored, as the standard says
