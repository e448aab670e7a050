"""The grader's pipes: a worker dropped while its channel's reader is still busy never makes
that reader read the next worker's pipe (the file-descriptor number reused by ``os.pipe``).

Seen under ``grade --jobs`` on a loaded machine: a criterion overran, its worker was killed,
and a new worker of another task got the freed number: the old reader stole its messages (a
``load`` that never answered, "took over 60 s"; or a worker closed before it was ready)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from llm_patterns.course.grading.rpc import Channel, Codec
from llm_patterns.course.grading.sandbox import WorkerProcess


def _noop(channel: Channel, message: dict[str, Any]) -> None:
    return None


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_dropped_workers_reader_never_reads_the_next_workers_pipe(tmp_path: Path) -> None:
    # worker A's side of its two pipes (its own Channel); the grader reads r_a
    r_a, w_a = os.pipe()
    to_a_r, to_a_w = os.pipe()
    worker_side_a = Channel(to_a_r, w_a, _noop, Codec(), name="worker-a")
    inside = threading.Event()
    release = threading.Event()
    seen_by_a: list[dict[str, Any]] = []

    def on_event_a(message: dict[str, Any]) -> None:
        seen_by_a.append(message)
        inside.set()
        release.wait(10)  # the reader is busy between two reads

    channel_a = Channel(r_a, to_a_w, _noop, Codec(), name="a", on_event=on_event_a)
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    worker_a = WorkerProcess(proc, r_a, to_a_w, tmp_path / "a.log", "none", None)
    worker_side_a.event("first")
    assert inside.wait(10)

    # A is dropped as Session._drop does it, while its reader is still inside a dispatch (and
    # w_a still open, as a child of the worker would hold it)
    channel_a.close("worker dropped")
    worker_a.kill()
    assert _fd_open(r_a), "the read end was closed under its reader's feet"

    # worker B's pipe: were r_a free, os.pipe would hand its number out again
    r_b, w_b = os.pipe()
    to_b_r, to_b_w = os.pipe()
    worker_side_b = Channel(to_b_r, w_b, _noop, Codec(), name="worker-b")
    seen_by_b: list[dict[str, Any]] = []
    got_b = threading.Event()
    channel_b = Channel(r_b, to_b_w, _noop, Codec(), name="b",
                        on_event=lambda m: (seen_by_b.append(m), got_b.set()))
    release.set()
    worker_side_b.event("for-b")
    assert got_b.wait(10)
    assert [m["kind"] for m in seen_by_b] == ["for-b"]
    assert [m["kind"] for m in seen_by_a] == ["first"]

    # once the last writer of A's pipe is gone its reader ends and closes the read end itself
    worker_side_a.close()
    channel_a._reader.join(10)
    assert not channel_a._reader.is_alive()
    assert not _fd_open(r_a)
    for channel in (worker_side_b, channel_b):  # each reader closes its own read end
        channel.close()
