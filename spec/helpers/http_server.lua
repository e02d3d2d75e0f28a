--- The loopback HTTP/1.1 test server (spec/helpers/test_http_server.py,
-- Python stdlib only) for the core.http_session specs:
--   local srv = http_server.start()   -- srv.PORT, srv.PID (and what else it greets with)
--   http_server.stop(srv)
local _M = {}

local SERVER = "spec/helpers/test_http_server.py"

--- Start it and read its greeting (three "NAME number" lines); `need` lists
-- the names the caller relies on besides PORT and PID.
function _M.start(need)
  local proc = assert(io.popen("exec python3 " .. SERVER))
  local info = {}
  for _ = 1, 3 do
    local line = proc:read("l")
    assert(line, "test server did not start")
    local k, v = line:match("^(%u+) (%d+)$")
    info[k] = tonumber(v)
  end
  assert(info.PORT and info.PID, "test server: bad greeting")
  for _, name in ipairs(need or {}) do assert(info[name], "test server: bad greeting") end
  info.proc = proc
  return info
end

function _M.stop(srv)
  if srv then
    os.execute("kill " .. srv.PID .. " 2>/dev/null")
    srv.proc:close()
  end
end

return _M
