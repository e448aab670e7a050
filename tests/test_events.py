"""Observable: subscribe, emit, unsubscribe; a broken listener never breaks the call."""

import logging

from llm_patterns.events import Observable


class Thing(Observable):
    _event_source = "thing"

    def __init__(self):
        self.name = "t1"

    def do(self, n):
        self._emit("did", 1.5, n=n)


def test_subscribe_emit_unsubscribe():
    thing, seen = Thing(), []
    unsubscribe = thing.subscribe(seen.append)
    thing.do(1)
    unsubscribe()
    thing.do(2)
    assert len(seen) == 1
    ev = seen[0]
    assert (ev.source, ev.name, ev.kind, ev.time, ev.data) == ("thing", "t1", "did", 1.5, {"n": 1})


def test_subscribers_are_per_instance():
    a, b, seen = Thing(), Thing(), []
    a.subscribe(seen.append)
    b.do(1)
    assert seen == []


def test_broken_listener_is_logged_not_raised(caplog):
    thing, seen = Thing(), []

    def broken(event):
        raise RuntimeError("boom")

    thing.subscribe(broken)
    thing.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="llm_patterns.events"):
        thing.do(3)
    assert len(seen) == 1
    assert "thing.did" in caplog.text
