-- analytics_engine.core http_session against a real HTTP/1.1 server on loopback
-- (spec/helpers/test_http_server.py, Python stdlib only).
local core = require("analytics_engine.core")
local cjson = require("cjson")
local http_server = require("helpers.http_server")

local function wall_clock()
  local p = assert(io.popen("date +%s.%N"))
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

describe("core.http_session", function()
  local srv, base, session

  setup(function()
    srv = http_server.start { "CLOSED" }
    base = "http://127.0.0.1:" .. srv.PORT
  end)

  teardown(function()
    http_server.stop(srv)
  end)

  before_each(function()
    session = core.http_session()
  end)

  after_each(function()
    session:close()
  end)

  local function get(path, req)
    req = req or {}
    req.url = base .. path
    return session:request(req)
  end

  describe("constructor", function()
    it("returns a session whose tostring names the type", function()
      assert.matches("^analytics_engine%.HttpSession %(0x%x+%)$", tostring(session))
    end)

    it("accepts max_idle", function()
      local s = core.http_session({ max_idle = 0 })
      local res = assert(s:request({ url = base .. "/status/200" }))
      assert.equal(200, res.status)
      s:close()
    end)

    it("rejects a max_idle that is not a number", function()
      assert.has_error(function() core.http_session({ max_idle = "x" }) end)
      assert.error_matches(function() core.http_session({ max_idle = "x" }) end, "max_idle")
    end)
  end)

  describe("GET", function()
    it("returns status, body, url, http_version and total_time", function()
      local res = assert(get("/echo"))
      assert.equal(200, res.status)
      assert.equal("GET", cjson.decode(res.body).method)
      assert.equal(base .. "/echo", res.url)
      assert.equal("1.1", res.http_version)
      assert.is_number(res.total_time)
      assert.is_true(res.total_time >= 0)
    end)

    it("sends map-form headers", function()
      local res = assert(get("/echo", { headers = { ["X-Token"] = "abc", ["X-Num"] = 42 } }))
      local echo = cjson.decode(res.body)
      assert.equal("abc", echo.headers["x-token"])
      assert.equal("42", echo.headers["x-num"])
    end)

    it("sends array-form headers", function()
      local res = assert(get("/echo", { headers = { "X-One: 1", "X-Two: two" } }))
      local echo = cjson.decode(res.body)
      assert.equal("1", echo.headers["x-one"])
      assert.equal("two", echo.headers["x-two"])
    end)

    it("sends the user_agent", function()
      local res = assert(get("/echo", { user_agent = "spec-agent/1" }))
      assert.equal("spec-agent/1", cjson.decode(res.body).headers["user-agent"])
    end)

    it("does not follow redirects", function()
      local res = assert(get("/status/302"))
      assert.equal(302, res.status)
    end)
  end)

  describe("POST", function()
    it("sends the body and returns the echo", function()
      local res = assert(get("/echo", {
        method = "POST", body = '{"a":1}', headers = { ["Content-Type"] = "application/json" },
      }))
      local echo = cjson.decode(res.body)
      assert.equal("POST", echo.method)
      assert.equal('{"a":1}', echo.body)
      assert.equal("application/json", echo.headers["content-type"])
    end)

    it("sends a body with a NUL byte intact", function()
      local body = "a\0b\0c"
      local res = assert(get("/echo", { method = "POST", body = body }))
      assert.equal("6100620063", cjson.decode(res.body).body_hex)
    end)

    it("round-trips all 256 byte values in request and response bodies", function()
      local t = {}
      for i = 0, 255 do t[#t + 1] = string.char(i) end
      local body = table.concat(t)
      local res = assert(get("/raw", { method = "POST", body = body }))
      assert.equal(body, res.body)
    end)

    it("sends an empty POST without reading stdin", function()
      local res = assert(get("/echo", { method = "POST" }))
      local echo = cjson.decode(res.body)
      assert.equal("POST", echo.method)
      assert.equal("", echo.body)
      assert.equal("0", echo.headers["content-length"])
    end)

    it("sends a large body (Expect: 100-continue) and returns only the final headers", function()
      local body = string.rep("z", 2 * 1024 * 1024)
      local res = assert(get("/raw", { method = "POST", body = body }))
      assert.equal(200, res.status)
      assert.equal(#body, #res.body)
      assert.equal("application/octet-stream", res.headers["content-type"])
    end)
  end)

  describe("other methods", function()
    for _, method in ipairs({ "PUT", "PATCH", "DELETE" }) do
      it("sends " .. method .. " with a body", function()
        local res = assert(get("/echo", { method = method, body = "payload-" .. method }))
        local echo = cjson.decode(res.body)
        assert.equal(method, echo.method)
        assert.equal("payload-" .. method, echo.body)
      end)
    end

    it("sends DELETE without a body", function()
      local res = assert(get("/echo", { method = "DELETE" }))
      assert.equal("DELETE", cjson.decode(res.body).method)
    end)

    it("sends HEAD and gets no body", function()
      local res = assert(get("/big/100", { method = "HEAD" }))
      assert.equal(200, res.status)
      assert.equal("", res.body)
      assert.equal("100", res.headers["content-length"])
    end)
  end)

  describe("status codes", function()
    it("passes 404 through as a response", function()
      local res = assert(get("/status/404"))
      assert.equal(404, res.status)
      assert.equal("status 404", res.body)
    end)

    it("passes 503 through as a response", function()
      local res = assert(get("/status/503"))
      assert.equal(503, res.status)
    end)
  end)

  describe("response headers", function()
    it("joins repeated headers with ', '", function()
      local res = assert(get("/headers"))
      assert.equal("a, b", res.headers["x-multi"])
    end)

    it("lower-cases header names", function()
      local res = assert(get("/headers"))
      assert.equal("Yes", res.headers["x-mixed-case"])
      assert.is_nil(res.headers["X-Mixed-Case"])
    end)
  end)

  describe("gzip", function()
    it("decodes a gzip-encoded body by default", function()
      local res = assert(get("/gzip"))
      assert.equal(string.rep("hello gzip ", 100), res.body)
    end)

    it("leaves the body encoded when gzip = false", function()
      local res = assert(get("/gzip", { gzip = false }))
      assert.equal("\31\139", res.body:sub(1, 2))
    end)
  end)

  describe("keep-alive", function()
    it("reuses one connection across three requests", function()
      local ids = {}
      for i = 1, 3 do ids[i] = assert(get("/conn")).body end
      assert.equal(ids[1], ids[2])
      assert.equal(ids[1], ids[3])
    end)

    it("reuses the connection with max_idle = 0 too", function()
      local s = core.http_session({ max_idle = 0 })
      local a = assert(s:request({ url = base .. "/conn" })).body
      local b = assert(s:request({ url = base .. "/conn" })).body
      s:close()
      assert.equal(a, b)
    end)
  end)

  describe("transport errors", function()
    it("reports a total timeout as kind 'timeout'", function()
      local res, err = get("/slow/2", { timeout = 0.3 })
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal(28, err.curl_code)
      assert.is_string(err.message)
    end)

    it("reports a refused connection as kind 'connect'", function()
      local res, err = session:request({ url = "http://127.0.0.1:" .. srv.CLOSED .. "/" })
      assert.is_nil(res)
      assert.equal("connect", err.kind)
    end)

    it("reports a body past max_response_size (Content-Length) as 'too_large'", function()
      local res, err = get("/big/100000", { max_response_size = 1000 })
      assert.is_nil(res)
      assert.equal("too_large", err.kind)
    end)

    it("reports a chunked body past max_response_size as 'too_large'", function()
      local res, err = get("/big/100000?chunked=1", { max_response_size = 1000 })
      assert.is_nil(res)
      assert.equal("too_large", err.kind)
      assert.matches("max_response_size", err.message)
    end)

    it("accepts a body exactly at max_response_size", function()
      local res = assert(get("/big/1000?chunked=1", { max_response_size = 1000 }))
      assert.equal(1000, #res.body)
    end)

    it("fails an https URL to the plain-HTTP server with a transport error", function()
      local res, err = session:request({ url = "https://127.0.0.1:" .. srv.PORT .. "/echo", timeout = 5 })
      assert.is_nil(res)
      assert.is_table(err)
      assert.is_truthy(({ tls = true, recv = true, connect = true, send = true })[err.kind])
    end)

    it("reports an unsupported scheme as kind 'other'", function()
      local res, err = session:request({ url = "file:///etc/passwd" })
      assert.is_nil(res)
      assert.equal("other", err.kind)
    end)

    it("keeps the session usable after an error", function()
      assert.is_nil((get("/slow/1", { timeout = 0.1 })))
      assert.equal(200, assert(get("/status/200")).status)
    end)
  end)

  describe("start/poll", function()
    it("returns a positive integer id", function()
      local id = assert(session:start({ url = base .. "/status/200" }))
      assert.is_number(id)
      assert.equal(math.floor(id), id)
      assert.is_true(id > 0)
    end)

    it("runs 20 slow requests concurrently", function()
      local t0 = wall_clock()
      local ids = {}
      for _ = 1, 20 do ids[assert(session:start({ url = base .. "/slow/0.3" }))] = true end
      assert.equal(20, session:pending())
      local got = 0
      while got < 20 and wall_clock() - t0 < 10 do
        for _, item in ipairs(session:poll(1)) do
          assert.is_true(ids[item.id])
          assert.is_nil(item.err)
          assert.equal(200, item.res.status)
          ids[item.id] = nil
          got = got + 1
        end
      end
      assert.equal(20, got)
      assert.is_true(wall_clock() - t0 < 3)
      assert.equal(0, session:pending())
    end)

    it("returns an empty table from poll(0) when nothing is done", function()
      local id = session:start({ url = base .. "/slow/0.5" })
      assert.same({}, session:poll(0))
      session:cancel(id)
    end)

    it("returns an empty table at once when nothing is pending", function()
      assert.same({}, session:poll(5))
    end)

    it("waits in poll without spinning the CPU", function()
      local id = session:start({ url = base .. "/slow/1" })
      local c0 = os.clock()
      local t0 = wall_clock()
      assert.same({}, session:poll(0.3))
      assert.is_true(wall_clock() - t0 >= 0.25)
      assert.is_true(os.clock() - c0 < 0.15)
      session:cancel(id)
    end)

    it("returns transport errors as { id, err }", function()
      local id = session:start({ url = base .. "/slow/2", timeout = 0.2 })
      local items = {}
      while #items == 0 do items = session:poll(1) end
      assert.equal(id, items[1].id)
      assert.is_nil(items[1].res)
      assert.equal("timeout", items[1].err.kind)
    end)

    it("keeps results finished during request() for the next poll", function()
      local id = session:start({ url = base .. "/status/201" })
      assert(get("/slow/0.2"))
      local items = session:poll(0)
      assert.equal(1, #items)
      assert.equal(id, items[1].id)
      assert.equal(201, items[1].res.status)
    end)
  end)

  describe("cancel", function()
    it("removes an in-flight transfer", function()
      local id = session:start({ url = base .. "/slow/1" })
      session:poll(0)
      assert.is_true(session:cancel(id))
      assert.equal(0, session:pending())
      assert.same({}, session:poll(0))
    end)

    it("returns false for an unknown id", function()
      assert.is_false(session:cancel(12345))
    end)

    it("returns false the second time", function()
      local id = session:start({ url = base .. "/slow/1" })
      assert.is_true(session:cancel(id))
      assert.is_false(session:cancel(id))
    end)
  end)

  describe("close", function()
    it("is safe to call twice", function()
      assert.is_true(session:close())
      assert.is_true(session:close())
    end)

    it("aborts in-flight transfers", function()
      session:start({ url = base .. "/slow/1" })
      session:start({ url = base .. "/slow/1" })
      session:poll(0)
      session:close()
      assert.equal("analytics_engine.HttpSession (closed)", tostring(session))
    end)

    it("makes every method return nil, 'closed'", function()
      session:close()
      for _, call in ipairs({
        function() return session:request({ url = base .. "/" }) end,
        function() return session:start({ url = base .. "/" }) end,
        function() return session:poll(0) end,
        function() return session:pending() end,
        function() return session:cancel(1) end,
      }) do
        local ok, err = call()
        assert.is_nil(ok)
        assert.equal("closed", err)
      end
    end)

    it("happens on scope exit with <close>", function()
      -- `<close>` is Lua 5.4 syntax, compiled at run time so this file also
      -- loads on LuaJIT; there the __close metamethod is called as 5.4 would.
      local scope = _VERSION == "Lua 5.4" and load([[
        local core, url = ...
        local s <close> = core.http_session()
        s:start({ url = url })
        return s
      ]]) or function(c, url)
        local s = c.http_session()
        s:start({ url = url })
        getmetatable(s).__close(s)
        return s
      end
      local s2 = scope(core, base .. "/slow/1")
      assert.equal("analytics_engine.HttpSession (closed)", tostring(s2))
    end)

    it("happens on garbage collection with transfers in flight", function()
      local s = core.http_session()
      s:start({ url = base .. "/slow/1" })
      s:poll(0)
      s = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
    end)
  end)

  describe("argument checking", function()
    local function raises(req, field)
      assert.error_matches(function() session:request(req) end, field)
    end

    it("requires a table", function()
      assert.has_error(function() session:request("http://x") end)
    end)

    it("requires url", function()
      raises({}, "url")
    end)

    it("rejects a non-string url", function()
      raises({ url = 1 }, "url")
    end)

    it("rejects a non-string method", function()
      raises({ url = base, method = 5 }, "method")
    end)

    it("rejects a method that is not a token", function()
      raises({ url = base, method = "GET /x" }, "method")
    end)

    it("rejects a non-string body", function()
      raises({ url = base, body = {} }, "body")
    end)

    it("rejects headers that are not a table", function()
      raises({ url = base, headers = "X-A: 1" }, "headers")
    end)

    it("rejects a header value with CR/LF", function()
      raises({ url = base, headers = { ["X-A"] = "1\r\nX-B: 2" } }, "headers")
    end)

    it("rejects a non-number timeout", function()
      raises({ url = base, timeout = "soon" }, "timeout")
    end)

    it("rejects a negative connect_timeout", function()
      raises({ url = base, connect_timeout = -1 }, "connect_timeout")
    end)

    it("rejects a non-number max_response_size", function()
      raises({ url = base, max_response_size = true }, "max_response_size")
    end)

    it("rejects a non-boolean insecure", function()
      raises({ url = base, insecure = "yes" }, "insecure")
    end)

    it("rejects an unknown http_version", function()
      raises({ url = base, http_version = "0.9" }, "http_version")
    end)

    it("checks start() arguments the same way", function()
      assert.error_matches(function() session:start({ url = base, cafile = 1 }) end, "cafile")
    end)

    it("leaves nothing in flight after a raised error", function()
      pcall(session.start, session, { url = base, timeout = "x" })
      assert.equal(0, session:pending())
    end)
  end)
end)
