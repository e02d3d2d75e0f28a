--- `aeflow exec FILE [ARGS...]`: a plain Lua script with a ready client.
local ae = require("analytics_engine")
local util = require("analytics_engine.util")
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")

local _M = {}

_M.exec = {
  options = {},
  stop_at = 1, -- everything after FILE belongs to the script
  help = [[
usage: aeflow exec FILE [ARGS...] [--profile NAME]

Runs a plain Lua script with a ready client in the global `client` (and the
module in `ae`, the arguments in `arg`). With no endpoint configured, the
local engine serves it (see `aeflow help`: one rule for every verb).
Options go before FILE; everything after FILE is the script's.]],
  run = function(pos, opt, ctx)
    local file = pos[1]
    if not file then return out.fail(2, "exec", "which file?") end
    -- /dev/zero would be read until memory runs out, a FIFO blocks: a regular file only
    local what = util.not_regular(file)
    if what then return out.fail(2, "exec", "%s is %s, not a regular file", file, what) end
    local f, ferr = io.open(file, "rb")
    if not f then return out.fail(2, "exec", "%s", ferr) end
    local src = f:read("a")
    f:close()
    local env = setmetatable({ ae = ae, arg = { table.unpack(pos, 2) } }, { __index = _G })
    local chunk, lerr = load(src, "@" .. file, "t", env)
    if not chunk then return out.fail(2, nil, "%s", lerr) end
    local c, session = which.connect { exe = ctx.exe, profile = opt["--profile"] }
    if not c then return out.fail(1, nil, "%s", session) end
    env.client = c
    local ok, res = xpcall(chunk, debug.traceback)
    session:release()
    if not ok then return out.fail(1, nil, "%s", tostring(res)) end
    return res == false and 1 or 0
  end,
}

return _M
