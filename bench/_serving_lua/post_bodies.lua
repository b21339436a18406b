-- wrk script for bench/serving.py: POST pre-rendered JSON bodies, optionally paced.
--
--   BENCH_BODIES=FILE [BENCH_RATE=N] [BENCH_AUTH=TOKEN] wrk -s post_bodies.lua ... URL
--
-- FILE holds one JSON body per line; each thread starts at a different line and
-- rotates through them. BENCH_RATE > 0 paces each thread to N requests/s on an
-- absolute schedule (delay() until the k-th slot, measured with CLOCK_MONOTONIC),
-- so a slow answer does not lower the offered rate until every connection is busy.
-- delay() is defined only when pacing: wrk schedules a timer per request when it
-- exists. done() prints one line "WRK_JSON {...}" (latencies in microseconds).

local bodies_file = os.getenv("BENCH_BODIES")
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0

local requests = {}
local count = 0
local next_index = 0

local threads = 0

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  local token = os.getenv("BENCH_AUTH")
  if token and #token > 0 then
    headers["Authorization"] = "Bearer " .. token
  end
  for line in io.lines(bodies_file) do
    if #line > 0 then
      count = count + 1
      requests[count] = wrk.format("POST", wrk.path, headers, line)
    end
  end
  if count == 0 then
    error("no bodies in " .. bodies_file)
  end
  next_index = ((thread_index or 0) * 7919) % count
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local CLOCK_MONOTONIC = 1
  local ts = ffi.new("bench_timespec")
  local interval_ms = 1000 / rate
  local start_ms = nil
  local sent = 0

  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end

  function delay()
    local now = now_ms()
    if start_ms == nil then
      start_ms = now
    end
    local slot = start_ms + sent * interval_ms
    sent = sent + 1
    local wait = slot - now
    if wait <= 0 then
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
