-- A Tidings benchmark workload for wrk, written by bench/load.py (which passes the arguments):
--   prefix, header count, "Name: value" headers…, then method, path, body for each request template.
-- Requests cycle through the templates. In paths and bodies "{id}" becomes a key unique to the cycle and
-- "{t}" a key unique to the wrk thread, so every run writes fresh rows. done() prints one JSON line.
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] .. "-" .. thread_index
  local header_count = tonumber(args[2])
  headers = {}
  for i = 1, header_count do
    local name, value = string.match(args[2 + i], "^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  templates = {}
  local i = 3 + header_count
  while args[i] do
    table.insert(templates, { method = args[i], path = args[i + 1], body = args[i + 2] })
    i = i + 3
  end
  position, cycle, sent, ok, failed = 0, 0, 0, 0, 0
end

local function fill(text, id)
  return (string.gsub(string.gsub(text, "{id}", id), "{t}", prefix))
end

function request()
  position = position % #templates + 1
  if position == 1 then
    cycle = cycle + 1
  end
  local id = prefix .. "-" .. cycle
  local template = templates[position]
  local body = nil
  if template.body ~= "" then
    body = fill(template.body, id)
  end
  sent = sent + 1
  return wrk.format(template.method, fill(template.path, id), headers, body)
end

function response(status, _headers, _body)
  if status == 200 then
    ok = ok + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, _requests)
  local sent_all, ok_all, failed_all = 0, 0, 0
  for _, thread in ipairs(threads) do
    sent_all = sent_all + thread:get("sent")
    ok_all = ok_all + thread:get("ok")
    failed_all = failed_all + thread:get("failed")
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"answered":%d,"sent":%d,"ok":%d,"failed":%d,"socket_errors":%d,'
      .. '"p50_us":%d,"p99_us":%d}\n',
    summary.duration, summary.requests, sent_all, ok_all, failed_all,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
end
