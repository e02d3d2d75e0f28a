--- `aeflow logs APP_ID [--stream stdout|stderr] [--follow] [--data DIR]`: an
-- application's output from the local engine's engine-only log endpoint.
-- The engine is the configured endpoint (AE_URL, ...) or the one serving
-- --data (default: the standard data directory). --follow prints new output
-- as it arrives until the application ends; its exit status is then 0 for
-- FINISHED and 1 otherwise.
local util = require "analytics_engine.util"
local sanitize = require "analytics_engine.sanitize"

local _M = {}

_M.HELP = [[
usage: aeflow logs APP_ID [--stream stdout|stderr] [--follow] [--data DIR]

Prints an application's stdout (or stderr) as the local engine kept it under
its data directory. --follow keeps printing until the application ends, then
exits 0 if it FINISHED and 1 otherwise. Works against the local engine only
(the endpoint is engine-only); with no endpoint configured, the engine serving
--data (default $XDG_DATA_HOME/analytics-engine/engine) is used.]]

_M.POLL_INTERVAL = 0.5

local OP = { name = "engine_application_logs", ok_set = { [200] = true } }

local function fail(code, msg)
  io.stderr:write("aeflow logs: ", sanitize.clean(msg), "\n")
  return code
end

local function parse(args)
  local o = { stream = "stdout" }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-]+)$")
    if name == "follow" or a == "-f" then
      o.follow = true
    elseif name == "stream" or name == "data" then
      local v = inline
      if v == nil then
        i = i + 1
        v = args[i]
      end
      if v == nil then return nil, "--" .. name .. " needs a value" end
      o[name] = v
    elseif name then
      return nil, ("unknown option '%s'"):format(a)
    elseif not o.id then
      o.id = a
    else
      return nil, ("unexpected argument '%s'"):format(a)
    end
    i = i + 1
  end
  if not o.id then return nil, "which application? (aeflow logs APP_ID)" end
  if not util.is_uuid(o.id) then return nil, ("'%s' is not an application id"):format(o.id) end
  if o.stream ~= "stdout" and o.stream ~= "stderr" then return nil, "--stream must be stdout or stderr" end
  return o
end

function _M.main(args, exe)
  local o, perr = parse(args)
  if not o then return fail(2, perr) end
  local cli = require "analytics_engine.cli"
  local c, cerr = cli.connect(exe, { data_dir = o.data, quiet = true })
  if not c then return fail(1, cerr) end
  local core = require "analytics_engine.core"
  local offset = 0
  while true do
    local doc, err = c:send(OP, { method = "GET", path = ("/engine/v1/applications/%s/logs?stream=%s&offset=%d"
      .. "&format=json"):format(o.id, o.stream, offset) })
    if not doc then return fail(1, tostring(err)) end
    if type(doc) ~= "table" or type(doc.text) ~= "string" then
      return fail(1, "the endpoint did not answer the local engine's log shape")
    end
    io.stdout:write(sanitize.clean(doc.text, true)) -- a log is the application's, not ours: escapes shown
    io.stdout:flush()
    offset = doc.next_offset or (offset + #doc.text)
    if not o.follow then return 0 end
    if doc.terminal and doc.text == "" then return doc.state == "FINISHED" and 0 or 1 end
    if doc.text == "" then core.sleep(_M.POLL_INTERVAL) end
  end
end

return _M
