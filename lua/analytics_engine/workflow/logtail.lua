--- The last lines of a failed application's stderr, copied into the run's
-- record so the run's output, its events and its report can say why, also
-- after the engine is gone. The local engine serves them (its engine-only
-- log endpoint); the vendor's service has no log endpoint, so there the
-- record carries a pointer to where the logs live instead.
local sanitize = require("analytics_engine.sanitize")
local util = require("analytics_engine.util")

local _M = {}

_M.LINES = 20          -- lines kept
_M.BYTES = 16 * 1024   -- of at most this much of the stream's end
_M.MAX_CHUNKS = 256    -- reads of the engine's chunks (a runaway log is cut)

_M.POINTER = "this service has no log endpoint: see the application's logs on the instance "
  .. "(its Spark history server, or the instance's storage volume under <instance_id>/<application_id>/logs)"

-- The last `n` non-empty-at-end lines of `text`.
local function last_lines(text, n)
  local lines = {}
  for line in (text:gsub("%s+$", "") .. "\n"):gmatch("([^\n]*)\n") do
    -- Redacted before it is stored: the record is a file, too.
    lines[#lines + 1] = sanitize.redact((line:gsub("\r$", "")))
    if #lines > n then table.remove(lines, 1) end
  end
  if #lines == 1 and lines[1] == "" then return {} end
  return lines
end
_M.last_lines = last_lines

--- fetch(client, id, is_local) -> { stream = "stderr", lines = {...} }
-- | { pointer = "..." } | nil, message
function _M.fetch(client, id, is_local)
  if not is_local then return { pointer = _M.POINTER } end
  local text, offset = "", 0
  for _ = 1, _M.MAX_CHUNKS do
    local doc, err = client:engine_application_logs(id, { stream = "stderr", offset = offset, format = "json" })
    if not doc then return nil, tostring(err) end
    if type(doc) ~= "table" or type(doc.text) ~= "string" then return nil, "not the local engine's log shape" end
    text = (text .. doc.text):sub(-_M.BYTES)
    local next_offset = tonumber(doc.next_offset) or (offset + #doc.text)
    if doc.text == "" or next_offset <= offset then break end
    offset = next_offset
  end
  return { stream = "stderr", lines = last_lines(text, _M.LINES) }
end

--- The one line a step's error carries: the last line of the tail.
function _M.summary(tail)
  if type(tail) ~= "table" then return nil end
  if tail.lines and #tail.lines > 0 then return tail.lines[#tail.lines] end
  return nil
end

--- An attempt whose application ended badly: copy the end of its stderr
-- into the attempt's record (the report reads it after the engine is gone),
-- tell the views (application_log), and add its last line to the error.
-- ctx: the run's context (client, emit, save). Returns the error to use.
function _M.attach(ctx, step, att, index, err, is_local)
  local id = att.application_id
  if not id or att.stopped or att.log_tail or not att.state or att.state:upper() == "FINISHED" then return err end
  local tail, terr = _M.fetch(ctx.client, id, is_local)
  if not tail then
    ctx.emit { event = "error", message = ("could not read the logs of %s: %s"):format(id, terr) }
    return err
  end
  att.log_tail = tail
  ctx.emit { event = "application_log", step = step.name, item = index, attempt = att.n, application_id = id,
             stream = tail.stream, lines = tail.lines and util.array(tail.lines) or nil, pointer = tail.pointer }
  local last = _M.summary(tail)
  if last and type(err) == "string" then err = err .. ": " .. last end
  att.error = err
  ctx.save(att)
  return err
end

return _M
