-- A deliberately broken server for the client's bad-answer specs: it speaks
-- HTTP correctly but answers nonsense. Prints "PORT n" and serves until
-- killed. Run with: lua5.4 spec/helpers/bad_server.lua
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require("analytics_engine.core")

local srv = assert(core.http_server { host = "127.0.0.1", port = 0 })
io.stdout:write("PORT ", srv:port(), "\n")
io.stdout:flush()

local JSON = { ["Content-Type"] = "application/json" }
local answers = {
  default_runtime = function() return 200, JSON, '{"spark_version": "3.' end,              -- truncated
  default_configs = function()
    return 502, { ["Content-Type"] = "text/html" }, "<html><body>Bad Gateway</body></html>"
  end,
  ["^/v4/analytics_engines/[%x-]+$"] = function()
    return 200, JSON, '"' .. string.rep("x", 4 * 1024 * 1024) .. '"'
  end,
  resource_consumption_limits = function() return 200, { ["Content-Type"] = "text/plain" }, "hello" end,
}

while true do
  for _, req in ipairs(srv:poll(1)) do
    local status, headers, body = 404, JSON, '{"message":"no such thing"}'
    for key, fn in pairs(answers) do
      if (key:sub(1, 1) == "^" and req.path:find(key)) or req.path:sub(-#key - 1) == "/" .. key then
        status, headers, body = fn(req)
      end
    end
    srv:respond(req.id, status, headers, body)
  end
end
