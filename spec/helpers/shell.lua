--- Shell commands from specs: success of a command, its output, and quoting.
--   local shell = require("helpers.shell")
--   assert(shell.ok("mkdir -p " .. shell.quote(dir)))
local _M = {}

--- Whether `cmd` exited 0 (os.execute's true on 5.2+, 0 on 5.1/LuaJIT).
function _M.ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

--- What `cmd` wrote to stdout and stderr.
function _M.output(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local s = p:read("a")
  p:close()
  return s
end

--- `s` as one single-quoted shell word.
function _M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

return _M
