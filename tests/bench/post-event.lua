-- wrk script: POST one audit event per request, each with a fresh uid so that no response comes
-- from the sidecar's verdict cache. EVENT_FILE names a file whose first line is the event.
local file = assert(io.open(os.getenv("EVENT_FILE") or "examples/events/sample.jsonl"))
local template = file:read("*l")
file:close()
local counter = 0
local thread_tag = tostring(math.random(1, 1e9))

request = function()
  counter = counter + 1
  local body = template:gsub('"uid":"[^"]*"', '"uid":"bench-' .. thread_tag .. '-' .. counter .. '"', 1)
  return wrk.format("POST", "/test.log", { ["Content-Type"] = "application/json" }, body)
end
