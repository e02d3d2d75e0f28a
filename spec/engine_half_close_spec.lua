-- Half-closed creates against a real engine: 40 clients each send a whole
-- create_application and then shutdown(SHUT_WR) (as some clients and proxies
-- do). Every one gets its 202, and exactly 40 applications exist: no request
-- ran unanswered, so no client had reason to retry into a duplicate.
local cjson = require("cjson")
local helper = require("helpers.engine")
local rawc = require("helpers.raw")

describe("half-closed create_application requests", function()
  local e, root
  lazy_setup(function()
    root = helper.app_root { ["ok.sh"] = "#!/bin/sh\nexit 0\n" }
    e = helper.start({ "--no-jupyter", "--quiet", "--app-root", root })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf " .. root)
  end)

  it("answers 40 of 40 and creates exactly 40", function()
    local path = helper.v4(e, "/spark_applications")
    local conns = {}
    for i = 1, 40 do
      local body = cjson.encode { application_details = { application = "ok.sh", arguments = { tostring(i) } } }
      conns[i] = { shut = true, send = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
        .. "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(path, helper.zen(e), #body, body) }
    end
    local res = rawc.exchange(rawc.port_of(e), conns, 10)
    local answered, closed = 0, 0
    for _, r in ipairs(res) do
      if r.data:find("^HTTP/1%.1 202 ") and r.data:find('"application_id"', 1, true) then answered = answered + 1 end
      if r.eof then closed = closed + 1 end
    end
    assert.equal(40, answered)
    -- and each connection closed after its answer (the engine saw the end-of-file), none idled to a timeout
    assert.equal(40, closed)
    local status, b = helper.request(e, "GET", path)
    assert.equal(200, status)
    assert.equal(40, #b.applications)
  end)
end)
