# %% [markdown]
# # Instructor dashboard · LLM resilience, live
#
# A live pipeline sends requests through `ResilientClient` to two mock providers: a
# rate-limited **primary** and a bigger, pricier **secondary**. Turn the knobs and watch the
# patterns react: the limiter's buckets drain and refill, the primary's breaker trips and
# heals, the fallback count rises, the spend climbs toward the budget.
#
# **How to use it:** run all cells (or serve it with `make demo`, Voila). Then try:
# 1. raise *requests/s* above what *primary RPM* allows: the bucket drains, requests queue;
# 2. *take primary down*: the breaker goes **OPEN**, answers come from the secondary (fallbacks);
# 3. *bring it back*: after the cooldown the breaker goes **HALF-OPEN**, one trial call, **CLOSED**;
# 4. set *speed* to 10× to see minutes in seconds; *reset* starts over.
#
# Nothing here calls a real API: everything is in-process, and the clock is real time (or 10×).

# %%
# NBVAL_IGNORE_OUTPUT
import logging

from llm_patterns.course.live import LiveDemo
from llm_patterns.course.widgets import Dashboard

logging.getLogger("llm_patterns").setLevel(logging.ERROR)  # the dashboard shows the events

demo = LiveDemo(request_rate=4.0, primary_rpm=120, primary_tpm=60_000, budget=0.5,
                speed=1.0, breaker_threshold=3, breaker_reset=5.0)
dashboard = Dashboard(demo)
dashboard

# %%
# NBVAL_IGNORE_OUTPUT
demo.start()  # runs on the kernel's event loop; demo.stop() ends it
print("live demo running:", demo)

# %% [markdown]
# The same knobs from code, e.g. `demo.take_down()`, `demo.bring_up()`, `demo.set_rate(10)`,
# `demo.set_limits(rpm=60)`, `demo.set_speed(10)`, `demo.reset()`, `demo.stop()`.
