-- wrk script for infra/scripts/bench: every request is POST /v1/jobs with a `demo` job of
-- zero steps, WITHOUT an Idempotency-Key (a key costs one more SQLite write per job; the bench
-- measures the plain accept path).
--
-- Argument (after `--` on wrk's command line): requests per second for EACH wrk thread; 0 or
-- absent: closed loop (every connection sends its next request as soon as it has an answer).
--
-- A fixed rate: Debian's wrk 4.1 has no -R (that is wrk2), so this script paces requests itself
-- with wrk's delay() hook, which wrk calls before each request of a connection. Each thread
-- keeps a schedule of send times, one every 1000/rate ms on LuaJIT's monotonic clock (through
-- its ffi), and delays each request until the next free slot: the thread's connections together
-- send at the rate as long as fewer than all of them are waiting for an answer. A schedule that
-- fell behind catches up by at most one second of requests. wrk starts a request's latency clock
-- when it writes it, after the delay, so a stall that holds every connection of a thread is not
-- counted in full (wrk2 would count it from the scheduled time): the bench prints the rate
-- achieved beside the percentiles.
--
-- done() prints one line that infra/scripts/bench reads:
--   wrk: requests=N accepted=N other=N errors=N duration_s=F rps=F accepted_per_s=F
--        p50_ms=F p90_ms=F p99_ms=F max_ms=F mean_ms=F

wrk.method = "POST"
wrk.body = '{"kind":"demo","input":{"steps":0}}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local interval_ms = 0
local next_slot = nil
local now_ms = nil

function init(args)
  local rate = tonumber(args[1]) or 0
  accepted = 0
  other = 0
  if rate > 0 then
    interval_ms = 1000 / rate
    local ffi = require("ffi")
    ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clock_id, bench_timespec *tp);
    ]]
    local spec = ffi.new("bench_timespec")
    local CLOCK_MONOTONIC = 1
    now_ms = function()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, spec)
      return tonumber(spec.tv_sec) * 1000 + tonumber(spec.tv_nsec) / 1e6
    end
  end
end

function delay()
  if interval_ms == 0 then
    return 0
  end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  if slot <= now then
    return 0
  end
  return math.floor(slot - now + 0.5)
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  else
    other = other + 1
    if other <= 3 then
      io.stderr:write("unexpected status " .. status .. ": " .. tostring(body) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("accepted") or 0)
    bad = bad + (thread:get("other") or 0)
  end
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "wrk: requests=%d accepted=%d other=%d errors=%d duration_s=%.2f rps=%.1f accepted_per_s=%.1f " ..
    "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f\n",
    summary.requests, ok, bad, errors, seconds, summary.requests / seconds, ok / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
