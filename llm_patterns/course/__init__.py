"""The course kit: graded checks (``grading``), widgets and the live dashboard (``widgets``,
``live``), the traffic simulation and its charts (``simulation``, ``charts``, ``demo``).

It sits on top of the library and nothing in the library imports it: the patterns (rate limits,
retries, cost, fallback, breakers) never depend on Jupyter, widgets or plotly. Install its
dependencies with the ``[course]`` extra.
"""
