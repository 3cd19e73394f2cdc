-- wrk script for the suite's throughput figure: POST x += 1 to the Azure code/execute route,
-- spreading the requests over WRK_SESSIONS identifiers (WRK_PREFIX-0 .. -N-1, made and set to
-- x = 0 by the suite first), each wrk thread starting at its own offset. Prints one JSON line
-- at the end (requests, non-2xx, socket errors, latency percentiles in microseconds).
local path = os.getenv("WRK_PATH")
local prefix = os.getenv("WRK_PREFIX")
local count = tonumber(os.getenv("WRK_SESSIONS"))
local threads = {}
local counter = 0

wrk.method = "POST"
wrk.body = '{"properties":{"codeInputType":"inline","executionType":"synchronous","code":"x += 1"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_KEY")

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local n = 0
bad = 0  -- a global: done() reads it from each thread

function init(args)
  n = offset * 7919
end

function request()
  n = n + 1
  return wrk.format(nil, path .. prefix .. "-" .. (n % count))
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"Success"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do
    failed = failed + (t:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "failed_checks": %d, "non2xx": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, failed, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
