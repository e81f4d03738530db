-- POST one JSON body, with an optional credential header; report as one JSON line,
-- with how many answers had each HTTP status.
--
-- Environment (set by bench/run.py):
--   BENCH_BODY_FILE        file holding the request body (sent as application/json)
--   BENCH_HEADER_NAME      optional header to send, e.g. "Authorization" or "X-API-Key"
--   BENCH_HEADER_VALUE     its value
--   BENCH_DECLARED_LENGTH  optional Content-Length to declare instead of the body's own
--                          (the oversize scenario: a large length, a small body sent)
--
-- The request is formatted once per thread; request() hands back the same string and
-- response() counts statuses (every scenario runs this same script, so the load
-- generator's cost is the same everywhere). wrk checks the request of its first thread
-- once with an HTTP parser before the run and refuses one whose body is shorter than
-- its declared length, so that one check is given the honest request; nothing sends it.

local function read_file(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local data = file:read("*a")
  file:close()
  return data
end

wrk.method = "POST"
wrk.body = read_file(os.getenv("BENCH_BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
local name = os.getenv("BENCH_HEADER_NAME")
if name and name ~= "" then
  wrk.headers[name] = os.getenv("BENCH_HEADER_VALUE")
end
local declared = os.getenv("BENCH_DECLARED_LENGTH")
if declared == "" then
  declared = nil
end

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  honest = wrk.format()
  sent = honest
  if declared then
    sent = honest:gsub("Content%-Length: %d+", "Content-Length: " .. declared, 1)
  end
  checked = id ~= 1 -- only the first thread's first request is wrk's check
end

function request()
  if not checked then
    checked = true
    return honest
  end
  return sent
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.status, e.timeout))
end
