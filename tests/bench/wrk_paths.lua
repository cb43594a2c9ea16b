-- wrk script for `marketfleet bench api` (tests/bench/load.py::wrk_load).
-- wrk -s wrk_paths.lua URL -- PATHS_FILE THINK_MS
--   PATHS_FILE: one request path a line, taken in turn (each connection starts at a random one)
--   THINK_MS:   0 = closed loop (each connection sends its next request as soon as the answer is in);
--               > 0 = a user: after each answer (and before the first request) it waits a think time drawn
--               uniformly from 0 to 2 x THINK_MS, so N connections offer about N / THINK_MS requests per ms.
--               (Uniform, not exponential: an exponential think time's tail outlasts uvicorn's 5 s keep-alive,
--               and wrk would count each connection the server closed meanwhile as an error.)
-- done() prints one line starting with MFJSON that load.py reads.

local paths = {}
local n = 1
local think_ms = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  think_ms = tonumber(args[2] or "0") or 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  n = math.random(#paths)
  if think_ms > 0 then
    delay = function()
      return math.floor(math.random() * 2 * think_ms)
    end
  end
end

function request()
  n = n % #paths + 1
  return wrk.format("GET", paths[n])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MFJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
