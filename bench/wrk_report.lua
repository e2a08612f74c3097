-- Prints one JSON line with what the harness needs; headers come from WRK_HEADERS.
-- A "{n}" in WRK_BODY becomes a number unique to each request of the run (with WRK_RUN,
-- unique across runs too): e.g. a new email address per registration.
local headers = os.getenv("WRK_HEADERS")
if headers and #headers > 0 then
  for pair in string.gmatch(headers, "[^\n]+") do
    local k, v = pair:match("^([^:]+):%s*(.*)$")
    if k then wrk.headers[k] = v end
  end
end
local method = os.getenv("WRK_METHOD")
if method and #method > 0 then wrk.method = method end
local body = os.getenv("WRK_BODY")
if body and #body > 0 then wrk.body = body end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

if body and body:find("{n}", 1, true) then
  local run = os.getenv("WRK_RUN") or ""
  local counter = 0
  request = function()
    counter = counter + 1
    local n = run .. "t" .. tostring(tid) .. "n" .. tostring(counter)
    return wrk.format(nil, nil, nil, (body:gsub("{n}", n)))
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, non2xx))
end
