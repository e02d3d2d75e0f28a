-- analytics_engine.core http_session: session defaults, prepared header sets,
-- lazily built response headers, and easy handles that keep their options
-- from one request to the next (issue 7's per-call work), against the same
-- loopback test server as core_http_spec.
local core = require("analytics_engine.core")
local cjson = require("cjson")
local http_server = require("helpers.http_server")

describe("core.http_session request path", function()
  local srv, base

  setup(function()
    srv = http_server.start()
    base = "http://127.0.0.1:" .. srv.PORT
  end)

  teardown(function()
    http_server.stop(srv)
  end)

  local function echo(s, req)
    req.url = req.url or (base .. "/echo")
    local res = assert(s:request(req))
    return cjson.decode(res.body), res
  end

  describe("session defaults", function()
    it("apply to every request", function()
      local s = core.http_session { defaults = { user_agent = "defaults-agent/1" } }
      assert.equal("defaults-agent/1", (echo(s, {})).headers["user-agent"])
      assert.equal("defaults-agent/1", (echo(s, {})).headers["user-agent"])
      s:close()
    end)

    it("give way to a request's own option", function()
      local s = core.http_session { defaults = { user_agent = "defaults-agent/1" } }
      assert.equal("own/2", (echo(s, { user_agent = "own/2" })).headers["user-agent"])
      assert.equal("defaults-agent/1", (echo(s, {})).headers["user-agent"])
      s:close()
    end)

    it("apply a default timeout", function()
      local s = core.http_session { defaults = { timeout = 0.2 } }
      local res, err = s:request { url = base .. "/slow/2" }
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      s:close()
    end)

    it("reject a per-request field", function()
      assert.error_matches(function() core.http_session { defaults = { url = base } } end, "'url'")
    end)

    it("reject a mistyped option", function()
      assert.error_matches(function() core.http_session { defaults = { timeout = "x" } } end, "timeout")
    end)
  end)

  describe("core.http_headers", function()
    it("sends a prepared header set", function()
      local s = core.http_session()
      local h = core.http_headers { ["X-Token"] = "abc", ["X-Num"] = 42, ["X-Empty"] = "" }
      local e = echo(s, { headers = h })
      assert.equal("abc", e.headers["x-token"])
      assert.equal("42", e.headers["x-num"])
      assert.equal("", e.headers["x-empty"])
      s:close()
    end)

    it("checks the headers when the set is made", function()
      assert.error_matches(function() core.http_headers { ["Bad Name"] = "x" } end, "invalid header name")
      assert.error_matches(function() core.http_headers { ["X-A"] = "a\r\nX-B: b" } end, "CR, LF or NUL")
    end)

    it("rejects another userdata as headers", function()
      local s = core.http_session()
      assert.error_matches(function() s:request { url = base .. "/echo", headers = io.stdout } end,
        "core.http_headers")
      s:close()
    end)
  end)

  describe("response headers", function()
    it("keep the raw header block", function()
      local s = core.http_session()
      local res = assert(s:request { url = base .. "/headers" })
      assert.matches("^HTTP/1%.[01] 200", res.raw_headers)
      assert.matches("X%-Mixed%-Case: Yes", res.raw_headers)
      s:close()
    end)

    it("are built on first use and then kept in the response", function()
      local s = core.http_session()
      local res = assert(s:request { url = base .. "/headers" })
      assert.is_nil(rawget(res, "headers"))
      local h = res.headers
      assert.equal("a, b", h["x-multi"])
      assert.equal(h, rawget(res, "headers"))
      local n = 0
      for _ in pairs(res.headers) do n = n + 1 end
      assert.is_true(n >= 3)
      s:close()
    end)

    it("come with the responses of start/poll too", function()
      local s = core.http_session()
      local id = assert(s:start { url = base .. "/headers" })
      local items = {}
      while #items == 0 do items = s:poll(1) end
      assert.equal(id, items[1].id)
      assert.equal("Yes", items[1].res.headers["x-mixed-case"])
      s:close()
    end)
  end)

  describe("one easy handle reused", function()
    -- max_idle = 1: every request of the session runs on the same handle.
    local s
    before_each(function() s = core.http_session { max_idle = 1 } end)
    after_each(function() s:close() end)

    it("sends each method after another one", function()
      local seq = {
        { method = "POST", body = "one" }, { method = "GET" }, { method = "PUT", body = "two" },
        { method = "DELETE" }, { method = "GET" }, { method = "POST", body = "three" }, { method = "POST" },
        { method = "PATCH", body = "four" }, { method = "GET" },
      }
      for _, r in ipairs(seq) do
        local e = echo(s, { method = r.method, body = r.body })
        assert.equal(r.method, e.method)
        assert.equal(r.body or "", e.body)
      end
    end)

    it("sends a HEAD between GETs without a body, and the GET after it with one", function()
      assert.equal("GET", (echo(s, {})).method)
      local res = assert(s:request { url = base .. "/big/100", method = "HEAD" })
      assert.equal("", res.body)
      res = assert(s:request { url = base .. "/big/100" })
      assert.equal(100, #res.body)
    end)

    it("sends the new body of the same method", function()
      for i = 1, 3 do
        assert.equal("body-" .. i, (echo(s, { method = "POST", body = "body-" .. i })).body)
      end
    end)

    it("sends changed headers, and none after some", function()
      assert.equal("1", (echo(s, { headers = { ["X-A"] = "1" } })).headers["x-a"])
      local e = echo(s, { headers = { ["X-B"] = "2" } })
      assert.is_nil(e.headers["x-a"])
      assert.equal("2", e.headers["x-b"])
      e = echo(s, {})
      assert.is_nil(e.headers["x-b"])
      assert.equal("3", (echo(s, { headers = core.http_headers { ["X-B"] = "3" } })).headers["x-b"])
    end)

    it("drops an option the previous request set", function()
      assert.equal("\31\139", assert(s:request { url = base .. "/gzip", gzip = false }).body:sub(1, 2))
      assert.equal(string.rep("hello gzip ", 100), assert(s:request { url = base .. "/gzip" }).body)
      assert.equal("agent/1", (echo(s, { user_agent = "agent/1" })).headers["user-agent"])
      assert.is_nil((echo(s, {})).headers["user-agent"])
    end)

    it("drops a timeout after a request that had one", function()
      local res, err = s:request { url = base .. "/slow/1", timeout = 0.1 }
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal(200, assert(s:request { url = base .. "/slow/0.3" }).status)
    end)

    it("asks for a fresh connection only when told, and does not keep it", function()
      local a = assert(s:request { url = base .. "/conn" }).body
      local b = assert(s:request { url = base .. "/conn", fresh_connect = true }).body
      local c = assert(s:request { url = base .. "/conn" }).body
      assert.are_not.equal(a, b)
      assert.equal(a, c) -- the kept connection again
      -- the fresh one was closed after its answer, not kept to idle (this
      -- process's end of it is no longer ESTABLISHED: state 01 in /proc/net/tcp)
      local port = ("%04X"):format(tonumber(b))
      local established = false
      for line in io.lines("/proc/net/tcp") do
        local lport, st = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)")
        if lport == port and st == "01" then established = true end
      end
      assert.is_false(established)
    end)

    it("sends a send_once body through a kept connection", function()
      local a = assert(s:request { url = base .. "/conn" }).body
      local e = echo(s, { method = "POST", body = "once\0body", send_once = true })
      assert.equal("POST", e.method)
      assert.equal("once\0body", e.body)
      assert.equal(a, assert(s:request { url = base .. "/conn" }).body) -- (no connection of its own)
      e = echo(s, { method = "PUT", body = "", send_once = true })
      assert.equal("PUT", e.method)
      assert.equal("", e.body)
      assert.equal("plain", echo(s, { method = "POST", body = "plain" }).body)
    end)

    it("does not send a send_once request again when its kept connection closes before an answer", function()
      assert(s:request { url = base .. "/conn" }) -- a connection kept for the next request
      local res, err = s:request { method = "POST", url = base .. "/drop/once", body = "{}", send_once = true }
      assert.is_nil(res)
      assert.equal("send", err.kind)
      assert.matches("not sent again", err.message)
      assert.equal("1", assert(s:request { url = base .. "/count/once" }).body)
    end)

    it("(libcurl itself sends such a request again on a new connection)", function()
      assert(s:request { url = base .. "/conn" })
      assert.is_nil(s:request { method = "POST", url = base .. "/drop/plain", body = "{}" })
      assert.equal("2", assert(s:request { url = base .. "/count/plain" }).body)
    end)

    it("returns the URL asked for", function()
      local res = assert(s:request { url = base .. "/status/200" })
      assert.equal(base .. "/status/200", res.url)
    end)
  end)

  it("reads inherited request fields through a metatable", function()
    local s = core.http_session()
    local proto = { method = "POST", body = "inherited", url = base .. "/echo" }
    local e = cjson.decode(assert(s:request(setmetatable({}, { __index = proto }))).body)
    assert.equal("POST", e.method)
    assert.equal("inherited", e.body)
    s:close()
  end)
end)
