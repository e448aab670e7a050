"""``RedisStore``: shared limiter, breaker and budget state for workers on many hosts.

``redis://[user:password@]host:6379/0`` (extra ``[redis]``). Every operation of the
``StateStore`` protocol is ONE Lua script run by the server, so it is atomic across every
process on every machine: the RPM and TPM buckets are refilled and paid all-or-nothing in one
step, the half-open probe lease is handed out at most ``half_open_max_calls`` times, and a
budget reservation checks and holds the money in the same step (no GET-then-SET: research §5,
§7). The scripts port the pure functions of ``base`` line by line; the same contract tests run
against the memory, SQLite and Redis stores.

Time: the scripts read the Redis server's ``TIME`` (wall clock, epoch seconds), so workers whose
clocks disagree still share one rate and one cooldown. A caller's ``now`` is IGNORED (the
protocol allows it). ``server_time=False`` makes the store read ``clock.now()`` instead and pass
it in: for deterministic tests and simulations only, never across hosts.

Expiry: a bucket key expires once it would have refilled to full (it is then identical to a
new one, so nothing is lost); a breaker after ``idle_ttl`` without use (never while open or
while a probe lease is live); probe leases expire after ``probe_timeout`` inside the state, so a
crashed probe cannot wedge half-open. Budget totals do not expire (a hard budget must not reset
itself); budget reservations do.

Redis down: ``on_failure="closed"`` (default) refuses calls: ``limiter_acquire``/``levels`` raise
``LimiterStateUnavailable`` (a ``RateLimitTimeout``: Airflow reschedules the task),
breaker reads/admissions raise ``BreakerStateUnavailable`` (a ``CircuitOpenError``), budget
reservations raise ``StateStoreUnavailable``; bookkeeping after a call that already happened
(settle, penalize, breaker results) is applied to a local fallback instead of failing the call.
``on_failure="open"`` falls back to a per-process ``MemoryStateStore`` (each process then
enforces the limits alone: N processes may send N times the rate) with ONE WARNING per outage.
Either way the store retries Redis after a back-off (0.25 s doubling to 1 s: once Redis is back,
calls are served again within a second, however long the outage was); between attempts it
does not touch the network, one caller makes each attempt while the others are answered at
once, and socket timeouts bound every attempt: never a hang. Budget reservations always fail
closed: with Redis down nobody can know what the others spent (the refusal says so).
Error messages and logs name the URL with its password replaced by ``***``.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._validate import boolean, choice, integer, real, text
from ..circuit_breaker import check_clock
from ..clock import Clock
from ..errors import CircuitOpenError, LLMError, RateLimitTimeout, redact
from ..machines.breaker import CLOSED, COUNTERS, OPEN, Change
from . import base
from .base import (
    Admission,
    BreakerConfig,
    BreakerOutcome,
    BreakerSnapshot,
    Demand3,
    Grant,
    Limit,
)
from .memory import MemoryStateStore

__all__ = [
    "BreakerStateUnavailable",
    "LimiterStateUnavailable",
    "RedisStore",
    "StateStoreUnavailable",
]

logger = logging.getLogger("llm_patterns.state")
T = TypeVar("T")

ON_FAILURE = ("closed", "open")
MAX_TIMEOUT = 3600.0  # seconds: the longest socket timeout or reconnect back-off accepted
MAX_IDLE_TTL = 366 * 86400.0  # seconds an unused breaker key may be kept (a year)
_BUCKET_SLACK = 60.0  # seconds a full bucket key outlives its refill (cheap; avoids churn)


class StateStoreUnavailable(LLMError):
    """The shared state store cannot be reached and the store fails closed: no call is made.

    ``url`` is the store's URL with any password replaced by ``***``; ``retry_after`` the
    seconds until the store tries the server again.
    """

    url: str = ""


class LimiterStateUnavailable(StateStoreUnavailable, RateLimitTimeout):
    """The rate limiter's shared state is unreachable (fail closed): treat as backpressure."""


class BreakerStateUnavailable(StateStoreUnavailable, CircuitOpenError):
    """The breaker's shared state is unreachable (fail closed): the call is refused."""


# --------------------------------------------------------------------------- Lua

_PRELUDE = r"""
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function clock_now(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function f(x) return string.format('%.17g', x) end
local function extend(key, seconds)
  -- never shorten a key's life: other fields may need the time already granted
  local ms = math.ceil(seconds * 1000)
  local left = redis.call('PTTL', key)
  if left < 0 or ms > left then redis.call('PEXPIRE', key, ms) end
end
"""

# The token-bucket machine (``machines.bucket``) and its FIFO ticket queue, ported line by line;
# ``tests/test_state_sqlite.py``'s contract tests and ``tests/test_bucket_machine.py``'s scripts
# hold it to the Python machine. KEYS[1]: hash, per bucket kind ``l:<kind>`` level and
# ``t:<kind>`` last refill, ``p`` pause-until, ``re``/``ra``/``rd`` the learned ratio's sums;
# KEYS[2]: list of tickets in arrival order, each "ticket expires requests input output".
# ARGV: op, now|'', slack, n, n x (kind, capacity, rate), then per op.
_LIMITER_LUA = _PRELUDE + r"""
local key, qkey, op = KEYS[1], KEYS[2], ARGV[1]
local now = clock_now(ARGV[2])
local slack = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local MAX_RATIO, DECAY, MIN_SAMPLE, MAX_PAUSE = 4.0, 0.9, 1.0, 86400.0
local CODE = {requests = 0, tokens = 1, input_tokens = 2, output_tokens = 3}
local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
-- load: each bucket refilled from its own last refill, capped at this shape's capacity
local B = {}
local a = 5
for i = 1, n do
  local kind, cap, rate = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local level, last = tonumber(h['l:' .. kind]), tonumber(h['t:' .. kind])
  if level == nil or last == nil then
    level = cap
  else
    if now > last then level = level + (now - last) * rate end
    if level > cap then level = cap end
  end
  B[i] = {kind = kind, cap = cap, rate = rate, eps = cap * 1e-9, code = CODE[kind], level = level}
end
local pause = tonumber(h['p'])
local re, ra, rd = tonumber(h['re']) or 0, tonumber(h['ra']) or 0, tonumber(h['rd']) or 0
local function derive()
  if ra <= re then return 1.0 end
  return math.min(MAX_RATIO, (ra + rd) / re)
end
local ratio = derive()
local function cost(code, req, scaled, out)
  if code == 0 then return req elseif code == 1 then return scaled + out
  elseif code == 2 then return scaled end
  return out
end
local function costs_of(req, inp, out, r)
  local c = {}
  for i, b in ipairs(B) do c[i] = cost(b.code, req, inp * r, out) end
  return c
end
local function admit(req, inp, out)
  local wait = 0
  if pause ~= nil and pause - now > wait then wait = pause - now end
  local c = costs_of(req, inp, out, ratio)
  for i, b in ipairs(B) do
    local need = c[i]
    if need > b.cap then need = b.cap end
    if need - b.level > b.eps then
      local d = (need - b.level) / b.rate
      if d > wait then wait = d end
    end
  end
  if wait == 0 then
    for i, b in ipairs(B) do b.level = b.level - c[i] end
  end
  return wait
end
-- FIFO projection: {t, levels}
local function catch_up(t, lv, to)
  if t >= to then return t, lv end
  local out = {}
  for i, b in ipairs(B) do out[i] = math.min(b.cap, lv[i] + (to - t) * b.rate) end
  return to, out
end
local function start()
  local lv = {}
  for i, b in ipairs(B) do lv[i] = b.level end
  local to = now
  if pause ~= nil and pause > to then to = pause end
  return catch_up(now, lv, to)
end
local function serve(t, lv, c)
  local dt = 0
  for i, b in ipairs(B) do
    local need = math.min(c[i], b.cap)
    if need - lv[i] > b.eps then dt = math.max(dt, (need - lv[i]) / b.rate) end
  end
  local t2, l2 = catch_up(t, lv, t + dt)
  local out = {}
  for i = 1, #B do out[i] = l2[i] - c[i] end
  return t2, out
end
-- the ticket queue
local q = {}
for _, line in ipairs(redis.call('LRANGE', qkey, 0, -1)) do
  local f = {}
  for w in string.gmatch(line, '%S+') do f[#f + 1] = w end
  local e = tonumber(f[2])
  if e > now then q[#q + 1] = {f[1], e, tonumber(f[3]), tonumber(f[4]), tonumber(f[5])} end
end
local function save()
  local args = {}
  local need = 0
  for _, b in ipairs(B) do
    args[#args + 1] = 'l:' .. b.kind; args[#args + 1] = f(b.level)
    args[#args + 1] = 't:' .. b.kind; args[#args + 1] = f(now)
    local full = (b.cap - b.level) / b.rate
    if full > need then need = full end
  end
  if pause ~= nil then
    args[#args + 1] = 'p'; args[#args + 1] = f(pause)
    if pause - now > need then need = pause - now end
  end
  args[#args + 1] = 're'; args[#args + 1] = f(re)
  args[#args + 1] = 'ra'; args[#args + 1] = f(ra)
  args[#args + 1] = 'rd'; args[#args + 1] = f(rd)
  redis.call('HSET', key, unpack(args))
  redis.call('DEL', qkey)
  if #q > 0 then
    local lines = {}
    for i, t in ipairs(q) do
      lines[i] = t[1] .. ' ' .. f(t[2]) .. ' ' .. f(t[3]) .. ' ' .. f(t[4]) .. ' ' .. f(t[5])
      if t[2] - now > need then need = t[2] - now end
    end
    redis.call('RPUSH', qkey, unpack(lines))
    redis.call('PEXPIRE', qkey, math.ceil((need + slack) * 1000))
  end
  extend(key, need + slack)
end
local function levels()
  local out = {}
  for _, b in ipairs(B) do out[#out + 1] = b.kind; out[#out + 1] = f(b.level) end
  local pr = 0
  if pause ~= nil and pause - now > 0 then pr = pause - now end
  out[#out + 1] = 'pause_remaining'; out[#out + 1] = f(pr)
  out[#out + 1] = 'ratio'; out[#out + 1] = f(ratio)
  out[#out + 1] = 'waiting'; out[#out + 1] = f(#q)
  return out
end

a = 5 + 3 * n
if op == 'acquire' then
  local req, inp, out = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local ticket, new_ticket = ARGV[a + 3], ARGV[a + 4]
  local lease = tonumber(ARGV[a + 5])
  local max_wait = nil
  if ARGV[a + 6] ~= '' then max_wait = tonumber(ARGV[a + 6]) end
  local r0 = ratio
  local mine = nil
  if ticket ~= '' then
    for i, t in ipairs(q) do if t[1] == ticket then mine = i; break end end
  end
  local wait
  if mine == 1 or (mine == nil and #q == 0) then
    wait = admit(req, inp, out)
    if wait == 0 then
      if mine == 1 then table.remove(q, 1) end
      save()
      return {'0', '', f(r0), f(#q), f(now)}
    end
  else
    local t, lv = start()
    local ahead = #q
    if mine ~= nil then ahead = mine - 1 end
    for i = 1, ahead do
      t, lv = serve(t, lv, costs_of(q[i][3], q[i][4], q[i][5], ratio))
    end
    t, lv = serve(t, lv, costs_of(req, inp, out, ratio))
    wait = math.max(t - now, 1e-6)
  end
  if mine == nil then
    if max_wait ~= nil and wait > max_wait + 1e-9 then
      save()
      return {f(wait), '', f(r0), f(#q), f(now)}
    end
    q[#q + 1] = {new_ticket, now + wait + lease, req, inp, out}
    save()
    return {f(wait), new_ticket, f(r0), f(#q), f(now)}
  end
  q[mine][2] = now + wait + lease
  save()
  return {f(wait), ticket, f(r0), f(#q), f(now)}
elseif op == 'leave' then
  local ticket = ARGV[a]
  for i, t in ipairs(q) do if t[1] == ticket then table.remove(q, i); break end end
  save()
  return 'OK'
elseif op == 'settle' then
  local r = tonumber(ARGV[a + 6])
  local charged = costs_of(tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), r)
  local in_e, in_a = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 4])
  local used = costs_of(tonumber(ARGV[a + 3]), in_a, tonumber(ARGV[a + 5]), 1.0)
  for i, b in ipairs(B) do
    local d = charged[i] - used[i]
    if d > 0 then b.level = math.min(b.cap, b.level + d) else b.level = b.level + d end
  end
  if in_e >= MIN_SAMPLE and in_a > 0 then
    local sample = in_a / in_e
    re = DECAY * re + in_e
    ra = DECAY * ra + in_a
    local mean = ra / re
    rd = DECAY * rd + in_e * math.abs(sample - mean)
    ratio = derive()
  end
  save()
  return levels()
elseif op == 'lower' then
  local m = tonumber(ARGV[a])
  for j = 1, m do
    local kind, ceiling = ARGV[a + 2 * j - 1], tonumber(ARGV[a + 2 * j])
    for _, b in ipairs(B) do
      if b.kind == kind and ceiling < b.level then b.level = ceiling end
    end
  end
  save()
  return levels()
elseif op == 'pause' then
  local untl = now + math.min(tonumber(ARGV[a]), MAX_PAUSE)
  if pause == nil or untl > pause then pause = untl end
  save()
  return f(math.max(0, pause - now))
elseif op == 'levels' then
  save()
  return levels()
end
return redis.error_reply('unknown limiter op ' .. tostring(op))
"""

# The circuit machine (``machines.breaker``), ported line by line; tests/test_breaker_machine.py
# holds it to the Python machine. KEYS[1]: one hash: the machine's fields, a counter per
# statistic, ``last_error`` when set, and ``l:<id>`` -> expiry per live trial lease.
# ARGV: op, now|'', key ttl, failure_threshold, reset_timeout, half_open_max_calls,
#       probe_timeout, then per op. Every answer ends with the changes, 5 strings each
#       (kind, at, state, new, number).
_BREAKER_LUA = _PRELUDE + r"""
local key, op = KEYS[1], ARGV[1]
local now = clock_now(ARGV[2])
local ttl = tonumber(ARGV[3])
local threshold, reset = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_calls, probe_timeout = tonumber(ARGV[6]), tonumber(ARGV[7])
local MIN_RETRY_AFTER = 0.001
local COUNTERS = {'calls', 'successes', 'failures', 'ignored_errors', 'rejections', 'opened_count'}
local NUMS = {'consecutive', 'opened_at', 'generation', 'changed_at', 'serial'}

local s = {state = 'closed', consecutive = 0, opened_at = 0, generation = 0, changed_at = now,
           serial = 0}
for _, c in ipairs(COUNTERS) do s[c] = 0 end
local leases, nleases = {}, 0
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do
  local k, val = raw[i], raw[i + 1]
  if string.sub(k, 1, 2) == 'l:' then
    leases[string.sub(k, 3)] = tonumber(val)
    nleases = nleases + 1
  elseif k == 'state' or k == 'last_error' then s[k] = val
  else s[k] = tonumber(val) end
end

local changes = {}
local function change(kind, at, state, new, number)
  changes[#changes + 1] = {kind, at, state, new, number}
end
local function move(new, at)
  local old = s.state
  s.state = new
  s.generation = s.generation + 1
  leases, nleases = {}, 0
  s.changed_at = at
  if new == 'closed' then s.consecutive = 0
  elseif new == 'open' then s.opened_at = at; s.opened_count = s.opened_count + 1 end
  change('state_change', at, old, new, s.consecutive)
end
local function refresh()
  if s.state == 'open' and now >= s.opened_at + reset then
    move('half_open', s.opened_at + reset)
  end
  if nleases > 0 then
    local expired = 0
    for id, untl in pairs(leases) do
      if untl <= now then leases[id] = nil; expired = expired + 1 end
    end
    if expired > 0 then
      nleases = nleases - expired
      change('lease_expired', now, s.state, '', expired)
    end
  end
  return s.state
end
local function oldest()
  local first = nil
  for id, _ in pairs(leases) do
    if first == nil or tonumber(id) < tonumber(first) then first = id end
  end
  return first
end
local function save()
  redis.call('DEL', key)
  local args = {'state', s.state}
  for _, c in ipairs(NUMS) do args[#args + 1] = c; args[#args + 1] = f(s[c]) end
  for _, c in ipairs(COUNTERS) do args[#args + 1] = c; args[#args + 1] = f(s[c]) end
  if s.last_error ~= nil then args[#args + 1] = 'last_error'; args[#args + 1] = s.last_error end
  local keep = ttl
  for id, untl in pairs(leases) do
    args[#args + 1] = 'l:' .. id; args[#args + 1] = f(untl)
    if untl - now + ttl > keep then keep = untl - now + ttl end
  end
  if s.state == 'open' and s.opened_at + reset - now + probe_timeout > keep then
    keep = s.opened_at + reset - now + probe_timeout
  end
  redis.call('HSET', key, unpack(args))
  redis.call('PEXPIRE', key, math.ceil(keep * 1000))
end
local function finish(out)
  save()
  for _, c in ipairs(changes) do
    out[#out + 1] = c[1]; out[#out + 1] = f(c[2]); out[#out + 1] = c[3]; out[#out + 1] = c[4]
    out[#out + 1] = f(c[5])
  end
  return out
end
local function outcome()
  return finish({s.state, f(s.consecutive), f(now)})
end

if op == 'admit' then
  if s.state == 'closed' then
    s.calls = s.calls + 1
    return finish({'1', 'closed', f(s.generation), '', '0', f(now)})
  end
  local state = refresh()
  local retry_after
  if state == 'half_open' then
    if nleases < max_calls then
      s.serial = s.serial + 1
      local lease = f(s.serial)
      leases[lease] = now + probe_timeout
      nleases = nleases + 1
      s.calls = s.calls + 1
      return finish({'1', state, f(s.generation), lease, '0', f(now)})
    end
    for _, untl in pairs(leases) do
      if retry_after == nil or untl < retry_after then retry_after = untl end
    end
    retry_after = math.max(MIN_RETRY_AFTER, retry_after - now)
  else
    retry_after = math.max(MIN_RETRY_AFTER, s.opened_at + reset - now)
  end
  s.rejections = s.rejections + 1
  change('rejected', now, state, '', retry_after)
  return finish({'0', state, f(s.generation), '', f(retry_after), f(now)})
elseif op == 'record' then
  local result = ARGV[8]
  local generation = nil
  if ARGV[9] ~= '' then generation = tonumber(ARGV[9]) end
  local lease = nil
  if ARGV[10] ~= '' then lease = ARGV[10] end
  local state = refresh()
  if lease == nil and generation == nil and state == 'half_open' and nleases > 0 then
    lease = oldest()
  end
  local current = (generation == nil or generation == s.generation) and
    (state ~= 'half_open' or lease == nil or leases[lease] ~= nil)
  if state == 'half_open' and lease ~= nil and leases[lease] ~= nil then
    leases[lease] = nil
    nleases = nleases - 1
  end
  local deciding = current and state ~= 'open'
  if result == 'success' then
    s.successes = s.successes + 1
    if deciding then s.consecutive = 0 end
    change('success', now, state, '', s.consecutive)
    if deciding and state == 'half_open' then move('closed', now) end
  elseif result == 'ignored' then
    s.ignored_errors = s.ignored_errors + 1
    change('ignored', now, state, '', s.consecutive)
  else
    s.failures = s.failures + 1
    if ARGV[11] == '1' then s.last_error = ARGV[12] else s.last_error = nil end
    if deciding then s.consecutive = s.consecutive + 1 end
    change('failure', now, state, '', s.consecutive)
    if deciding and (state == 'half_open' or s.consecutive >= threshold) then move('open', now) end
  end
  return outcome()
elseif op == 'release' then
  refresh()
  local lease = ARGV[8]
  if leases[lease] ~= nil then leases[lease] = nil; nleases = nleases - 1 end
  return outcome()
elseif op == 'force' then
  local target = ARGV[8]
  refresh()
  if target == 'closed' then
    s.consecutive = 0
    if s.state ~= 'closed' then move('closed', now) end
  elseif s.state == 'open' then
    s.opened_at = now
    s.opened_count = s.opened_count + 1
    s.generation = s.generation + 1
  else
    move('open', now)
  end
  return outcome()
elseif op == 'read' then
  local state = refresh()
  local retry_in = 0
  if state == 'open' then retry_in = math.max(0, s.opened_at + reset - now) end
  local has_err, err = '0', ''
  if s.last_error ~= nil then has_err = '1'; err = s.last_error end
  local out = {state, f(s.consecutive), f(retry_in), f(nleases), has_err, err, f(s.changed_at),
               f(s.generation)}
  for _, c in ipairs(COUNTERS) do out[#out + 1] = f(s[c]) end
  out[#out + 1] = f(now)
  return finish(out)
end
return redis.error_reply('unknown breaker op ' .. tostring(op))
"""

# KEYS[1] budget hash (spent, in integer units), KEYS[2] zset reservation id -> expiry,
# KEYS[3] hash reservation id -> amount. ARGV: op, now|'', then per op.
_BUDGET_LUA = _PRELUDE + r"""
local key, zkey, akey, op = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now = clock_now(ARGV[2])
local function purge()
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', f(now))
  for _, id in ipairs(gone) do
    redis.call('ZREM', zkey, id)
    redis.call('HDEL', akey, id)
  end
  local held, n = 0, 0
  for _, v in ipairs(redis.call('HVALS', akey)) do held = held + tonumber(v); n = n + 1 end
  return held, n
end
local function i(x) return string.format('%.0f', x) end
local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
local held, n = purge()
if op == 'reserve' then
  local id, amount, limit, ttl = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  if spent + held + amount > limit then
    return {'0', i(spent), i(held), i(n)}
  end
  redis.call('ZADD', zkey, f(now + ttl), id)
  redis.call('HSET', akey, id, i(amount))
  extend(zkey, ttl + 60)
  extend(akey, ttl + 60)
  if redis.call('EXISTS', key) == 0 then redis.call('HSET', key, 'spent', '0') end
  return {'1', i(spent), i(held + amount), i(n + 1)}
elseif op == 'commit' or op == 'release' then
  local id = ARGV[3]
  local amount = redis.call('HGET', akey, id)
  local was_live = '0'
  if amount then
    was_live = '1'
    held = held - tonumber(amount)
    n = n - 1
    redis.call('ZREM', zkey, id)
    redis.call('HDEL', akey, id)
  end
  if op == 'commit' then
    spent = spent + tonumber(ARGV[4])
    redis.call('HSET', key, 'spent', i(spent))
  end
  return {was_live, i(spent), i(held), i(n)}
elseif op == 'read' then
  return {'1', i(spent), i(held), i(n)}
elseif op == 'reset' then
  redis.call('DEL', key, zkey, akey)
  return {'1', '0', '0', '0'}
end
return redis.error_reply('unknown budget op ' .. tostring(op))
"""


def _num(x: Any) -> str:
    """A float for an ARGV: ``repr`` is the shortest string that reads back to the same float."""
    return repr(float(x))


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# --------------------------------------------------------------------------- the store


class RedisStore:
    """The ``StateStore`` protocol on Redis (see the module docstring).

    ``url_or_client``: a ``redis://`` / ``rediss://`` / ``unix://`` URL, or a ``redis.Redis``
    client (then it is used as is: set its timeouts yourself). ``prefix`` starts every key.
    ``on_failure``: ``"closed"`` refuses calls while Redis is unreachable, ``"open"`` falls back
    to per-process memory state. ``socket_timeout`` / ``connect_timeout`` bound each attempt;
    ``reconnect_after`` .. ``max_reconnect_after`` is the back-off before Redis is tried again.
    ``idle_ttl``: seconds an unused breaker is kept. ``clock`` is what waiters sleep on (and the
    back-off's time base); with ``server_time=False`` it is also the state's time base.
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        prefix: str = "llm_patterns",
        on_failure: str = "closed",
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        reconnect_after: float = 0.25,
        max_reconnect_after: float = 1.0,
        idle_ttl: float = 86400.0,
        clock: Clock | None = None,
        server_time: bool = True,
    ) -> None:
        try:
            import redis as redis_lib
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "RedisStore needs the 'redis' package: pip install 'llm-patterns[redis]'"
            ) from exc
        self._redis = redis_lib
        self.on_failure = choice("on_failure", text("on_failure", on_failure), ON_FAILURE)
        self.prefix = text("prefix", prefix)
        if any(c in prefix for c in "{} "):
            raise ValueError(f"prefix must be a non-empty str without braces or spaces, "
                             f"got {prefix!r}")
        self.socket_timeout, self.connect_timeout, self.reconnect_after, \
            self.max_reconnect_after = (
                real(name, value, minimum=0.0, strict_min=True, maximum=MAX_TIMEOUT)
                for name, value in (("socket_timeout", socket_timeout),
                                    ("connect_timeout", connect_timeout),
                                    ("reconnect_after", reconnect_after),
                                    ("max_reconnect_after", max_reconnect_after)))
        if self.max_reconnect_after < self.reconnect_after:
            raise ValueError(f"max_reconnect_after must be >= reconnect_after "
                             f"({reconnect_after!r}), got {max_reconnect_after!r}")
        self.idle_ttl = real("idle_ttl", idle_ttl, minimum=0.0, strict_min=True,
                             maximum=MAX_IDLE_TTL)
        self.server_time = boolean("server_time", server_time)
        if not server_time and clock is None:
            raise ValueError("server_time=False needs a clock= to read the time from, "
                             "got clock=None")
        self.clock: Clock = check_clock(clock)
        if isinstance(url_or_client, str):
            if "://" not in url_or_client:
                shown = redact(url_or_client)
                if "@" in shown:  # user:password@host without a scheme: mask the credentials
                    shown = "***@" + shown.rsplit("@", 1)[1]
                raise ValueError(f"url_or_client must look like 'redis://host:6379/0', got "
                                 f"{shown!r}")
            self._url_raw: str | None = url_or_client
            self.url = redact(url_or_client)
            self.client = self._make_client(url_or_client)
        elif callable(getattr(url_or_client, "evalsha", None)):
            self._url_raw = None
            self.client = url_or_client
            kw = getattr(getattr(url_or_client, "connection_pool", None), "connection_kwargs",
                         {})
            host = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
            self.url = f"redis://{host}/{kw.get('db', 0)}"
        else:
            raise TypeError(f"url_or_client must be a redis:// URL or a redis.Redis client, "
                            f"got {url_or_client!r}")
        self._limiter_script = self.client.register_script(_LIMITER_LUA)
        self._breaker_script = self.client.register_script(_BREAKER_LUA)
        self._budget_script = self.client.register_script(_BUDGET_LUA)
        self._fallback = MemoryStateStore(clock=self.clock)
        self._lock = threading.Lock()
        self._down_until: float | None = None  # on self.clock; None = Redis believed up
        self._backoff = self.reconnect_after
        self._closed = False

    def _make_client(self, url: str) -> Any:
        r = self._redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return r.Redis.from_url(
            url, socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        )

    # -- keys
    def _key(self, key: str) -> str:
        return f"{self.prefix}:{{{base.check_key(key)}}}"

    # -- time: the caller's ``now`` is ignored (see the module docstring)
    def _now_arg(self) -> str:
        return "" if self.server_time else _num(self.clock.now())

    # -- failure handling
    @property
    def available(self) -> bool:
        """False while the store is backing off after Redis failed."""
        with self._lock:
            return self._down_until is None

    def _errors(self) -> tuple[type[BaseException], ...]:
        ex = self._redis.exceptions
        return (ex.ConnectionError, ex.TimeoutError, ex.ReadOnlyError, ConnectionError,
                TimeoutError, OSError)

    def _mark_down(self, exc: BaseException) -> float:
        with self._lock:
            first = self._down_until is None
            if first:
                self._backoff = self.reconnect_after
            else:
                self._backoff = min(self.max_reconnect_after, self._backoff * 2)
            self._down_until = self.clock.now() + self._backoff
            backoff = self._backoff
        if first:
            what = ("refusing calls (on_failure='closed')" if self.on_failure == "closed" else
                    "falling back to per-process in-memory limits and breakers "
                    "(on_failure='open': each process now enforces the limits alone)")
            logger.warning("state store %s unreachable (%s: %s); %s; retrying Redis in %.1f s",
                           self.url, type(exc).__name__, exc, what, backoff)
        else:
            logger.debug("state store %s still unreachable (%s); next try in %.1f s",
                         self.url, type(exc).__name__, backoff)
        return backoff

    def _mark_up(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
            self._backoff = self.reconnect_after
        if was_down:
            self._fallback = MemoryStateStore(clock=self.clock)  # a later outage starts afresh
            logger.info("state store %s reachable again; shared state restored "
                        "(per-process fallback state discarded)", self.url)

    def _backing_off(self) -> float:
        """Seconds left before Redis may be tried again (0 = try it now). While Redis is
        down, the one caller that finds the back-off over takes the next try (the others are
        answered from the back-off at once, never a crowd of probes)."""
        with self._lock:
            if self._down_until is None:
                return 0.0
            now = self.clock.now()
            left = self._down_until - now
            if left > 0.0:
                return left
            self._down_until = now + self._backoff  # this caller probes; others wait
            return 0.0

    def _run(self, kind: str, remote: Callable[[], T], local: Callable[[MemoryStateStore], T],
             *, gate: bool) -> T:
        """Run ``remote`` on Redis; when Redis is down: ``local`` on the fallback store
        (fail open, or bookkeeping after a call), or refuse (fail closed, ``gate`` ops)."""
        if self._closed:
            raise ValueError(f"state store {self.url} is closed")
        wait = self._backing_off()
        if wait == 0.0:
            try:
                result = remote()
            except self._errors() as exc:
                wait = self._mark_down(exc)
                cause: BaseException | None = exc
            else:
                self._mark_up()
                return result
        else:
            cause = None
        if not gate or (self.on_failure == "open" and kind != "budget"):
            return local(self._fallback)  # a hard budget never fails open
        wait = max(wait, 0.001)
        mode = (f"on_failure={self.on_failure!r}" if self.on_failure == "closed" else
                f"budget reservations fail closed whatever on_failure ({self.on_failure!r})")
        msg = (f"shared {kind} state at {self.url} is unreachable; refusing the call "
               f"({mode}); retrying Redis in {wait:.1f} s")
        cls = {"limiter": LimiterStateUnavailable, "breaker": BreakerStateUnavailable}.get(
            kind, StateStoreUnavailable)
        err = cls(msg, retry_after=wait)
        err.url = self.url
        if cause is not None:
            raise err from cause
        raise err

    # -- limiter (the Lua port of ``machines.bucket``; see ``base`` for the operations)
    blocking = True  # every operation is a network round trip: never on an event loop

    def _limiter(self, op: str, key: str, limits: Sequence[Limit], args: list[str]) -> Any:
        k = self._key(key)
        shape: list[str] = [str(len(limits))]
        for lim in limits:
            shape += [lim.kind, _num(lim.capacity), _num(lim.rate)]
        return self._limiter_script(keys=[k, f"{k}:q"], args=[
            op, self._now_arg(), _num(_BUCKET_SLACK), *shape, *args])

    @staticmethod
    def _levels(flat: Sequence[Any]) -> dict[str, float]:
        return {_s(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}

    def limiter_acquire(self, key: str, limits: Sequence[Limit], demand: Demand3, *,
                        ticket: str | None = None, lease: float = base.DEFAULT_LEASE,
                        max_wait: float | None = None, now: float | None = None) -> Grant:
        base.check_key(key)
        ls, d = base.check_limits(limits), base.check_demand("demand", demand)
        ticket = base.check_ticket(ticket)
        lease = base.check_finite("lease", lease, minimum=0.0)
        if max_wait is not None:
            max_wait = base.check_finite("max_wait", max_wait, minimum=0.0)

        def remote() -> Grant:
            r = [_s(x) for x in self._limiter("acquire", key, ls, [
                *(_num(x) for x in d), ticket or "", uuid.uuid4().hex, _num(lease),
                "" if max_wait is None else _num(max_wait)])]
            return Grant(float(r[0]), r[1] or None, float(r[2]), int(float(r[3])), float(r[4]))
        return self._run("limiter", remote, lambda m: m.limiter_acquire(
            key, ls, d, ticket=ticket, lease=lease, max_wait=max_wait), gate=True)

    def limiter_leave(self, key: str, ticket: str) -> None:
        base.check_key(key)
        t = base.check_ticket(ticket)
        self._run("limiter", lambda: self._limiter("leave", key, (), [t or ""]),
                  lambda m: m.limiter_leave(key, ticket), gate=False)

    def limiter_settle(self, key: str, limits: Sequence[Limit], estimated: Demand3,
                       actual: Demand3, ratio: float = 1.0,
                       now: float | None = None) -> dict[str, float]:
        base.check_key(key)
        ls = base.check_limits(limits)
        est, act = base.check_demand("estimated", estimated), base.check_demand("actual", actual)
        r = base.check_finite("ratio", ratio, minimum=1.0)
        return self._run("limiter", lambda: self._levels(self._limiter(
            "settle", key, ls, [*(_num(x) for x in (*est, *act)), _num(r)])),
            lambda m: m.limiter_settle(key, ls, est, act, r), gate=False)

    def limiter_lower(self, key: str, limits: Sequence[Limit], ceilings: Mapping[str, float],
                      now: float | None = None) -> dict[str, float]:
        base.check_key(key)
        ls = base.check_limits(limits)
        cs = {str(k): base.check_finite(f"ceilings[{k!r}]", c) for k, c in ceilings.items()}
        flat = [str(len(cs))]
        for k, c in cs.items():
            flat += [k, _num(c)]
        return self._run("limiter", lambda: self._levels(self._limiter("lower", key, ls, flat)),
                         lambda m: m.limiter_lower(key, ls, cs), gate=False)

    def limiter_pause(self, key: str, limits: Sequence[Limit], seconds: float,
                      now: float | None = None) -> float:
        base.check_key(key)
        ls, sec = base.check_limits(limits), base.check_finite("seconds", seconds, minimum=0.0)
        return self._run("limiter", lambda: float(self._limiter("pause", key, ls, [_num(sec)])),
                         lambda m: m.limiter_pause(key, ls, sec), gate=False)

    def limiter_levels(self, key: str, limits: Sequence[Limit],
                       now: float | None = None) -> dict[str, float]:
        base.check_key(key)
        ls = base.check_limits(limits)
        return self._run("limiter", lambda: self._levels(self._limiter("levels", key, ls, [])),
                         lambda m: m.limiter_levels(key, ls), gate=True)

    # -- breakers (the Lua port of ``machines.breaker``; see ``base`` for the operations)
    def _breaker(self, op: str, key: str, cfg: BreakerConfig, args: list[str]) -> list[str]:
        k = self._key(key)
        ttl = max(self.idle_ttl, cfg.reset_timeout + cfg.probe_timeout + 60.0)
        out = self._breaker_script(keys=[k], args=[
            op, self._now_arg(), _num(ttl), str(cfg.failure_threshold), _num(cfg.reset_timeout),
            str(cfg.half_open_max_calls), _num(cfg.probe_timeout), *args])
        return [_s(x) for x in out]

    @staticmethod
    def _changes(flat: Sequence[str]) -> tuple[Change, ...]:
        return tuple(Change(flat[i], float(flat[i + 1]), flat[i + 2], flat[i + 3],
                            float(flat[i + 4])) for i in range(0, len(flat), 5))

    def _breaker_outcome(self, op: str, key: str, cfg: BreakerConfig,
                         args: list[str]) -> BreakerOutcome:
        r = self._breaker(op, key, cfg, args)
        return BreakerOutcome(r[0], int(float(r[1])), self._changes(r[3:]), float(r[2]))

    def breaker_admit(self, key: str, config: BreakerConfig,
                      now: float | None = None) -> Admission:
        base.check_key(key)
        cfg = base.check_config(config)

        def remote() -> Admission:
            r = self._breaker("admit", key, cfg, [])
            return Admission(r[0] == "1", r[1], int(float(r[2])), r[3] or None, float(r[4]),
                             self._changes(r[6:]), float(r[5]))
        return self._run("breaker", remote, lambda m: m.breaker_admit(key, cfg), gate=True)

    def breaker_record(self, key: str, config: BreakerConfig, outcome: str,
                       generation: int | None = None, lease: str | None = None,
                       error: str | None = None, now: float | None = None) -> BreakerOutcome:
        base.check_key(key)
        cfg = base.check_config(config)
        outcome = base.check_outcome(outcome)
        lease = base.check_lease(lease, optional=True)
        gen = "" if generation is None else str(integer("generation", generation, minimum=0))
        args = [outcome, gen, lease or "", "0" if error is None else "1", error or ""]
        return self._run("breaker", lambda: self._breaker_outcome("record", key, cfg, args),
                         lambda m: m.breaker_record(key, cfg, outcome, generation, lease, error),
                         gate=False)

    def breaker_release(self, key: str, config: BreakerConfig, lease: str,
                        now: float | None = None) -> BreakerOutcome:
        base.check_key(key)
        cfg = base.check_config(config)
        lid = base.check_lease(lease) or ""
        return self._run("breaker", lambda: self._breaker_outcome("release", key, cfg, [lid]),
                         lambda m: m.breaker_release(key, cfg, lid), gate=False)

    def breaker_read(self, key: str, config: BreakerConfig,
                     now: float | None = None) -> BreakerSnapshot:
        base.check_key(key)
        cfg = base.check_config(config)

        def remote() -> BreakerSnapshot:
            r = self._breaker("read", key, cfg, [])
            counters = {name: int(float(x)) for name, x in zip(COUNTERS, r[8:14], strict=True)}
            return BreakerSnapshot(
                r[0], int(float(r[1])), float(r[2]), int(float(r[3])),
                r[5] if r[4] == "1" else None, float(r[6]), int(float(r[7])), counters,
                self._changes(r[15:]), float(r[14]))
        return self._run("breaker", remote, lambda m: m.breaker_read(key, cfg), gate=True)

    def breaker_force(self, key: str, config: BreakerConfig, state: str,
                      now: float | None = None) -> BreakerOutcome:
        base.check_key(key)
        cfg = base.check_config(config)
        if state not in (CLOSED, OPEN):
            raise ValueError(f"state must be 'open' or 'closed', got {state!r}")
        return self._run("breaker", lambda: self._breaker_outcome("force", key, cfg, [state]),
                         lambda m: m.breaker_force(key, cfg, state), gate=True)

    # -- budgets (integer amounts, e.g. nano-USD; see budget.SharedBudget)
    def _budget(self, op: str, key: str, args: list[str]) -> tuple[bool, int, int, int]:
        k = self._key(key)
        r = self._budget_script(keys=[k, f"{k}:res", f"{k}:amt"],
                                args=[op, self._now_arg(), *args])
        return (_s(r[0]) == "1", int(_s(r[1])), int(_s(r[2])), int(_s(r[3])))

    def budget_reserve(self, key: str, reservation: str, amount: int, limit: int,
                       ttl: float) -> tuple[bool, int, int, int]:
        """Atomically: drop expired reservations; if ``spent + reserved + amount <= limit``
        hold ``amount`` under ``reservation`` for ``ttl`` s. -> (ok, spent, reserved, count)."""
        from .budget import check_units, dict_budget_ops

        amount, limit = check_units("amount", amount), check_units("limit", limit)
        ttl = base.check_finite("ttl", ttl, minimum=0.001)
        answer: tuple[bool, int, int, int] = self._run("budget", lambda: self._budget(
            "reserve", key, [reservation, str(amount), str(limit), _num(ttl)]),
            lambda m: dict_budget_ops(m).budget_reserve(key, reservation, amount, limit, ttl),
            gate=True)
        return answer

    def budget_commit(self, key: str, reservation: str | None,
                      actual: int) -> tuple[bool, int, int, int]:
        """Drop ``reservation`` (if still held) and add ``actual`` to the spend.
        -> (was_live, spent, reserved, count)."""
        from .budget import check_units

        actual = check_units("actual", actual)
        return self._budget_bookkeeping("commit", key, reservation or "", [str(actual)])

    def budget_release(self, key: str, reservation: str) -> tuple[bool, int, int, int]:
        """Give a reservation back (the call did not happen or cost nothing)."""
        return self._budget_bookkeeping("release", key, reservation, [])

    def budget_read(self, key: str) -> tuple[bool, int, int, int]:
        from .budget import dict_budget_ops

        answer: tuple[bool, int, int, int] = self._run(
            "budget", lambda: self._budget("read", key, []),
            lambda m: dict_budget_ops(m).budget_read(key), gate=True)
        return answer

    def budget_reset(self, key: str) -> None:
        """Forget the budget's spend and reservations (a new budget period)."""
        self._budget("reset", key, [])

    def _budget_bookkeeping(self, op: str, key: str, rid: str,
                            extra: list[str]) -> tuple[bool, int, int, int]:
        if self._backing_off() == 0.0:
            try:
                out = self._budget(op, key, [rid, *extra])
            except self._errors() as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return out
        if op == "commit":  # money already spent: say so, loudly, with the amount
            logger.error("state store %s unreachable: spend of %s units on budget %r NOT "
                         "recorded in the shared total", self.url, extra[0], key)
        return (False, 0, 0, 0)

    # -- lifecycle
    def ping(self) -> bool:
        """True if Redis answers now (one round trip, bounded by the socket timeouts)."""
        try:
            return bool(self.client.ping())
        except self._errors():
            return False

    def close(self) -> None:
        """Close this store's connections; further use raises ``ValueError``."""
        self._closed = True
        if self._url_raw is not None:
            try:
                self.client.close()
            except self._errors() as exc:  # pragma: no cover - best effort
                logger.debug("closing %s: %s", self.url, exc)

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        if self._url_raw is None:
            raise TypeError("a RedisStore built from a client object cannot be pickled; "
                            "build it from a URL to hand it to other processes")
        return {"url": self._url_raw, "kw": {
            "prefix": self.prefix, "on_failure": self.on_failure,
            "socket_timeout": self.socket_timeout, "connect_timeout": self.connect_timeout,
            "reconnect_after": self.reconnect_after,
            "max_reconnect_after": self.max_reconnect_after, "idle_ttl": self.idle_ttl,
            "clock": self.clock, "server_time": self.server_time}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], **state["kw"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, on_failure={self.on_failure!r})"


_URL_TEXT = ("on_failure", "prefix")
_URL_SECONDS = ("socket_timeout", "connect_timeout", "reconnect_after", "max_reconnect_after",
                "idle_ttl")


def from_redis_url(url: str, *, clock: Any = None) -> RedisStore:
    """``RedisStore`` for ``url``; query items ``on_failure``, ``prefix``, ``socket_timeout``,
    ``connect_timeout``, ``reconnect_after``, ``max_reconnect_after``, ``idle_ttl`` configure
    the store (they are removed before redis-py sees the URL)."""
    parts = urlsplit(url)
    texts: dict[str, str] = {}
    seconds: dict[str, float] = {}
    theirs = []
    for k, value in parse_qsl(parts.query, keep_blank_values=True):
        if k in _URL_TEXT:
            texts[k] = value
        elif k in _URL_SECONDS:
            try:
                seconds[k] = float(value)
            except ValueError:
                raise ValueError(f"url item {k} must be a number of seconds, got "
                                 f"{redact(value)!r}") from None
        else:
            theirs.append((k, value))
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(theirs),
                        parts.fragment))
    env_mode = os.environ.get("LLM_PATTERNS_STATE_ON_FAILURE")
    if env_mode and "on_failure" not in texts:
        texts["on_failure"] = env_mode
    return RedisStore(clean, clock=clock, **texts, **seconds)  # type: ignore[arg-type]
