--- `aeflow call` (one API operation) and `aeflow operations` (the list).
local api = require("analytics_engine.api")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")

local _M = {}

-- A JSON argument: literal text, @file, or - for stdin.
local function read_json_arg(s)
  local src = s
  if s == "-" then
    src = io.read("a")
  elseif s:sub(1, 1) == "@" then
    -- /dev/zero would be read until memory runs out, a FIFO blocks: a regular file only
    local what = util.not_regular(s:sub(2))
    if what then return nil, ("%s is %s, not a regular file"):format(s:sub(2), what) end
    local f, ferr = io.open(s:sub(2), "rb")
    if not f then return nil, ferr end
    src = f:read("a")
    f:close()
  end
  local v, err = util.json_decode(src)
  if v == nil then return nil, ("%s is not valid JSON: %s"):format(s == src and "the argument" or s, err) end
  return v
end

_M.call = {
  options = { ["--json"] = "flag" },
  help = [[
usage: aeflow call OPERATION [ID...] [JSON|@FILE|-] [--profile NAME] [--json]

Calls one operation and prints its JSON answer (always JSON; --json is
accepted for symmetry with the other verbs). Ids come first, in the order
of the path (application_id, kernel_id, cluster_id); then the body (for PUT,
PATCH and POST operations) or query (list_applications: {"state": "RUNNING"})
as JSON text, @file.json, or - for standard input.
Exit status: 0 success, 1 the call failed (the error on stderr), 2 usage.
Run `aeflow operations` for the list.]],
  run = function(pos, opt, ctx)
    local name = pos[1]
    if not name then return out.fail(2, "call", "which operation? (see `aeflow operations`)") end
    local op = api.by_name[name]
    if not op then return out.fail(2, "call", "unknown operation '%s' (see `aeflow operations`)", name) end
    local call_args = {}
    for i = 1, #op.ids do
      local id = pos[1 + i]
      if not id then return out.fail(2, "call", "%s: missing %s", name, op.ids[i]) end
      call_args[i] = id
    end
    local extra = pos[#op.ids + 2]
    if extra then
      if not (op.body or op.query) then return out.fail(2, "call", "%s: takes no body", name) end
      local v, err = read_json_arg(extra)
      if v == nil then return out.fail(2, "call", "%s: %s", name, err) end
      call_args[#op.ids + 1] = v
    end
    if pos[#op.ids + 3] then return out.fail(2, "call", "%s: too many arguments", name) end
    local c, session = which.connect { exe = ctx.exe, profile = opt["--profile"], quiet = true }
    if not c then return out.fail(1, nil, "%s", session) end
    local res, err = c:call(name, table.unpack(call_args))
    session:release()
    -- Bad input found before anything was sent is a usage error.
    if res == nil then return out.fail(err.code == "invalid_argument" and 2 or 1, nil, "%s", tostring(err)) end
    io.stdout:write(res == true and "{}" or sanitize.json(util.json_pretty(res)), "\n")
    return 0
  end,
}

_M.operations = {
  options = { ["--json"] = "flag" },
  help = [[
usage: aeflow operations [--json]

Lists every API operation `aeflow call` knows: name, HTTP method and path.
--json prints one JSON array of {name, method, path}.]],
  run = function(_, opt)
    if opt["--json"] then
      local list = util.array()
      for _, op in ipairs(api.operations) do
        list[#list + 1] = { name = op.name, method = op.method, path = op.full_path }
      end
      out.json(list)
      return 0
    end
    for _, op in ipairs(api.operations) do
      io.stdout:write(("%-36s %-6s %s\n"):format(op.name, op.method, op.full_path))
    end
    return 0
  end,
}

return _M
