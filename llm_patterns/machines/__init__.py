"""The pure state machines of the stateful patterns: state plus transitions, time passed in.

No clock is read, nothing sleeps, nothing is locked or stored here. Each runtime runs the same
machine: the in-process classes under their lock, the memory and SQLite stores inside one atomic
step over a JSON record, and Redis in a Lua port checked by the same contract tests.
"""
