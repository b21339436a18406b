-- bench/recommendations.py: GET a user's top-10; users 1..BENCH_USERS (ids above
-- the catalogue's users take the cold-start path). BENCH_RATE > 0 paces each
-- thread on an absolute schedule (delay()). done() prints "WRK_JSON {...}".
local users = tonumber(os.getenv("BENCH_USERS") or "1100")
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local prefix = os.getenv("BENCH_PREFIX")
local n = 0

function request()
  n = n + 1
  local user = (n * 7919) % users + 1
  return wrk.format("GET", prefix .. user .. "/items?k=10")
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } rt_timespec;
    int clock_gettime(int clk_id, rt_timespec *tp);
  ]]
  local ts = ffi.new("rt_timespec")
  local interval_ms = 1000 / rate
  local start_ms = nil
  local sent = 0
  local function now_ms()
    ffi.C.clock_gettime(1, ts)
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
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
