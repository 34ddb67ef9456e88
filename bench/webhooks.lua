-- wrk script for bench/inbound.py: sends each pre-signed webhook in a file once, then stops.
--
-- Signing a Twilio webhook needs HMAC-SHA1, which wrk's LuaJIT does not have, so the
-- benchmark signs every request in Python beforehand and writes them to a file as records
-- of an 8-digit length and then the raw HTTP request. Usage:
--
--   wrk -t1 -c32 -d300s -s bench/webhooks.lua http://127.0.0.1:PORT/ -- REQUESTS_FILE
--
-- The thread stops when the file runs out, so a run is a count of requests (the duration is
-- only a limit): it prints "BENCH_EXHAUSTED", and the caller sends wrk SIGINT. At the end one line "BENCH_JSON {...}" gives the counts, the wrk latency
-- percentiles and a grid of them (0.1 to 100 by 0.1), so that two wrk processes' latencies
-- can be merged by the caller.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  file = assert(io.open(args[1], "rb"))
  sent = 0
  exhausted = false
end

function request()
  local head = file:read(8)
  if head == nil then
    -- Out of webhooks: stop this thread, and tell the caller, which interrupts wrk's main
    -- thread (it sleeps for the whole -d duration otherwise). wrk still wants a request:
    -- this one repeats the last webhook, a duplicate the service would answer in kind, and
    -- the loop ends before its answer counts.
    if not exhausted then
      exhausted = true
      io.stdout:write("BENCH_EXHAUSTED\n")
      io.stdout:flush()
    end
    wrk.thread:stop()
    return last
  end
  last = file:read(tonumber(head))
  sent = sent + 1
  return last
end

function done(summary, latency, requests)
  local sent_total, out_of_requests = 0, false
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    out_of_requests = out_of_requests or thread:get("exhausted")
  end
  local grid = {}
  for i = 1, 1000 do
    grid[i] = string.format("%d", latency:percentile(i / 10))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "sent": %d, "exhausted": %s, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d, "grid_us": [%s]}\n',
    summary.requests, summary.duration, sent_total, tostring(out_of_requests),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(grid, ",")))
end
