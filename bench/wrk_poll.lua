-- wrk script of bench/load_wrk.py: one route, with the headers of a polling client, and one
-- machine-readable line at the end (wrk prints its own human summary too).
--   WRK_KEY            the API key (Authorization: Bearer), when auth is on
--   WRK_IF_NONE_MATCH  an ETag sent as If-None-Match (a conditional poll)
-- wrk comes from Debian's `wrk` package (apt-get install wrk): a compiled load generator that
-- is not the bottleneck on the machine it measures, as an httpx client in Python was.

local key = os.getenv("WRK_KEY")
local tag = os.getenv("WRK_IF_NONE_MATCH")
wrk.headers["Accept"] = "application/json"
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
if tag and tag ~= "" then wrk.headers["If-None-Match"] = tag end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- counted per thread (each has its own Lua state), summed in done()
ok, not_modified, other = 0, 0, 0

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 304 then
    not_modified = not_modified + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local sums = { ok = 0, not_modified = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(sums) do
      sums[name] = sums[name] + thread:get(name)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"socket_errors": %d, "ok": %d, "not_modified": %d, "other": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, sums.ok, sums.not_modified, sums.other))
end
