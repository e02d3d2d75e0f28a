--- The engine's own logs endpoint (api.lua's engine_application_logs):
-- what an application wrote to its stdout or stderr, as plain text or, for
-- `aeflow logs --follow`, as JSON from an offset.
local reply = require("analytics_engine.engine.reply")
local apps = require("analytics_engine.engine.apps")
local util = require("analytics_engine.util")

local _M = {}
local H = {}
_M.handlers = H -- merged into the engine's handlers by name (api.lua's operations)

local tointeger = util.tointeger
local TERMINAL = apps.TERMINAL
local LOG_CHUNK = 8 * 1024 * 1024 -- the most one logs answer carries

-- An application writes bytes, a JSON answer carries text: a character the
-- chunk (or a still running application) has only begun is left for the next
-- read, unless the output ends there; bytes that are not UTF-8 become U+FFFD,
-- so the answer is strict JSON. -> text, bytes of `raw` it stands for
local function json_text(raw, complete)
  local used = #raw
  if not complete then
    for back = 1, math.min(3, #raw) do
      local b = raw:byte(#raw - back + 1)
      if b >= 0xC0 then -- a lead byte: cut it when its character is not whole yet
        if (b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2) > back then used = #raw - back end
        break
      elseif b < 0x80 then
        break
      end
    end
  end
  return reply.utf8(raw:sub(1, used), "\u{FFFD}"), used
end

--- GET /engine/v1/applications/{id}/logs?stream=stdout|stderr[&offset=N][&format=json]
-- Plain text by default; format=json answers {stream, offset, next_offset,
-- text, state, terminal} so `aeflow logs --follow` can poll from an offset.
function H.engine_application_logs(eng, ctx)
  local rec, s, b, h = apps.find(eng, ctx.params.application_id)
  if not rec then return s, b, h end
  local q = ctx.query
  local stream = q.stream or "stdout"
  if stream ~= "stdout" and stream ~= "stderr" then return reply.bad_request("stream must be stdout or stderr") end
  local offset = 0
  if q.offset and q.offset ~= "" then
    offset = math.tointeger(tointeger(q.offset)) -- 1e20 parses, but is no file offset (was a 500)
    if not offset or offset < 0 then return reply.bad_request("offset must be a non-negative integer") end
  end
  local f = io.open(rec.dir .. "/" .. stream, "rb")
  local text = ""
  if f then
    -- past the end there is nothing yet (a seek the file system refuses read from the start)
    if offset == 0 or f:seek("set", offset) then text = f:read(LOG_CHUNK) or "" end
    f:close()
  end
  if q.format == "json" then
    local terminal = TERMINAL[rec.state] or false
    local shown, used = json_text(text, terminal and #text < LOG_CHUNK)
    return 200, { stream = stream, offset = offset, next_offset = offset + used, text = shown,
                  state = rec.state, terminal = terminal }
  end
  return 200, text, { ["Content-Type"] = "text/plain; charset=utf-8" }
end

return _M
