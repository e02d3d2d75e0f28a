-- analytics_engine.core http_server: the libmicrohttpd server driven from Lua.
-- Clients are one-shot python3 scripts (stdlib http.client) run in the
-- background while the spec answers requests from its poll loop.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local cjson = require("cjson")

local CLIENT_PY = [=[
import http.client, json, os, sys, threading
cfg = json.load(open(sys.argv[1]))
out = sys.argv[2]
port, timeout = cfg["port"], cfg.get("timeout", 10)
reqs = cfg["requests"]
results = [None] * len(reqs)

def do(conn, i, rq):
    try:
        body = rq.get("body")
        body = body.encode("latin-1") if body is not None else None
        conn.request(rq.get("method", "GET"), rq.get("path", "/"), body=body,
                     headers=rq.get("headers", {}))
        local = conn.sock.getsockname()[1]
        r = conn.getresponse()
        data = r.read()
        results[i] = {"status": r.status, "reason": r.reason, "local_port": local,
                      "headers": {k.lower(): v for k, v in r.getheaders()},
                      "body": data.decode("latin-1")}
    except Exception as e:
        results[i] = {"error": type(e).__name__ + ": " + str(e)}

if cfg.get("parallel"):
    threads = []
    for i, rq in enumerate(reqs):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        t = threading.Thread(target=do, args=(c, i, rq))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
else:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    for i, rq in enumerate(reqs):
        do(c, i, rq)
with open(out + ".part", "w") as f:
    json.dump(results, f)
os.rename(out + ".part", out)
]=]

local script_path

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local read = util.read_file

-- Start a client in the background; returns the path its results will appear at.
local function start_client(port, cfg)
  cfg.port = port
  local cfg_path = os.tmpname()
  local out = os.tmpname()
  os.remove(out)
  write(cfg_path, cjson.encode(cfg))
  os.execute(("python3 %s %s %s >/dev/null 2>&1 &"):format(script_path, cfg_path, out))
  return { out = out, cfg = cfg_path }
end

local function client_result(client)
  local s = read(client.out)
  if not s then return nil end
  os.remove(client.out)
  os.remove(client.cfg)
  return cjson.decode(s)
end

-- Poll the server, handing each request to handler(req), until the client is done.
local function serve(server, client, handler, limit)
  local deadline = core.monotime() + (limit or 15)
  while core.monotime() < deadline do
    local reqs = assert(server:poll(0.05))
    for _, req in ipairs(reqs) do handler(req) end
    local res = client_result(client)
    if res then
      for _ = 1, 3 do server:poll(0) end
      return res
    end
  end
  error("client did not finish in time")
end

describe("core.http_server", function()
  local server

  setup(function()
    script_path = os.tmpname()
    write(script_path, CLIENT_PY)
  end)

  teardown(function()
    os.remove(script_path)
  end)

  before_each(function()
    server = assert(core.http_server{ host = "127.0.0.1", port = 0, max_body = 4096 })
  end)

  after_each(function()
    if server then server:close() end
    server = nil
  end)

  it("binds an ephemeral port and reports it", function()
    local port = server:port()
    assert.is_number(port)
    assert.is_true(port > 0 and port < 65536)
    assert.matches("HttpServer", tostring(server))
    assert.equal(0, server:pending())
  end)

  it("poll with no traffic waits about the timeout and returns an empty list", function()
    local t0 = core.monotime()
    local reqs = server:poll(0.2)
    local dt = core.monotime() - t0
    assert.same({}, reqs)
    assert.is_true(dt >= 0.15 and dt < 2, "waited " .. dt)
    assert.same({}, server:poll(0))
  end)

  it("delivers method, raw path and query, lower-cased headers and remote address", function()
    local seen
    local client = start_client(server:port(), {
      requests = { { method = "GET", path = "/v4/things/a%2Fb?a=1&b=%20x",
                     headers = { ["X-Custom-Header"] = "Some Value", Accept = "application/json" } } },
    })
    local res = serve(server, client, function(req)
      seen = req
      assert.equal(1, server:pending())
      assert.is_true(server:respond(req.id, 200, { ["Content-Type"] = "text/plain" }, "ok"))
      assert.equal(0, server:pending())
    end)
    assert.is_table(seen)
    assert.is_number(seen.id)
    assert.equal("GET", seen.method)
    assert.equal("/v4/things/a%2Fb", seen.path)
    assert.equal("a=1&b=%20x", seen.query)
    assert.equal("Some Value", seen.headers["x-custom-header"])
    assert.equal("application/json", seen.headers["accept"])
    assert.is_string(seen.headers["host"])
    assert.is_nil(seen.headers["X-Custom-Header"])
    assert.equal("", seen.body)
    assert.equal("127.0.0.1", seen.remote)
    assert.is_nil(seen.too_large)
    assert.equal(200, res[1].status)
    assert.equal("ok", res[1].body)
  end)

  it("gives an empty query string when there is none", function()
    local seen
    local client = start_client(server:port(), { requests = { { path = "/plain" } } })
    serve(server, client, function(req)
      seen = req
      server:respond(req.id, 204)
    end)
    assert.equal("/plain", seen.path)
    assert.equal("", seen.query)
  end)

  it("receives a POST body intact, NUL bytes included", function()
    local body = "first\0second\r\n\1\127{\"json\":true}" -- ASCII only: it travels as JSON
    local seen
    local client = start_client(server:port(), {
      requests = { { method = "POST", path = "/upload", body = body,
                     headers = { ["Content-Type"] = "application/octet-stream" } } },
    })
    local res = serve(server, client, function(req)
      seen = req
      server:respond(req.id, 201, nil, req.body)
    end)
    assert.equal("POST", seen.method)
    assert.equal(body, seen.body)
    assert.equal(tostring(#body), seen.headers["content-length"])
    assert.equal(201, res[1].status)
    assert.equal(body, res[1].body)
  end)

  it("sends the status, headers and body given to respond", function()
    local client = start_client(server:port(), { requests = { { path = "/x" } } })
    local res = serve(server, client, function(req)
      assert.is_true(server:respond(req.id, 418, {
        ["Content-Type"] = "application/json", ["X-Request-Id"] = "abc-123", ["Retry-After"] = 7,
        ["Content-Length"] = "999", -- ignored: the server computes it
      }, '{"teapot":true}'))
    end)
    local r = res[1]
    assert.equal(418, r.status)
    assert.equal("application/json", r.headers["content-type"])
    assert.equal("abc-123", r.headers["x-request-id"])
    assert.equal("7", r.headers["retry-after"])
    assert.equal(tostring(#'{"teapot":true}'), r.headers["content-length"])
    assert.equal('{"teapot":true}', r.body)
  end)

  it("answers later and in any order (deferred responses)", function()
    local held = {}
    local client = start_client(server:port(), {
      parallel = true,
      requests = { { path = "/one" }, { path = "/two" } },
    })
    local res = serve(server, client, function(req)
      held[#held + 1] = req
      if #held == 2 then
        assert.equal(2, server:pending())
        -- both parked for a while, then answered newest first
        for _ = 1, 4 do assert.same({}, server:poll(0.02)) end
        assert.is_true(server:respond(held[2].id, 200, nil, "answer " .. held[2].path))
        server:poll(0.02)
        assert.is_true(server:respond(held[1].id, 200, nil, "answer " .. held[1].path))
        assert.equal(0, server:pending())
      end
    end)
    assert.equal(2, #held)
    assert.equal("answer /one", res[1].body)
    assert.equal("answer /two", res[2].body)
  end)

  it("keeps the connection alive across requests", function()
    local n = 0
    local client = start_client(server:port(), {
      requests = { { path = "/k1" }, { method = "POST", path = "/k2", body = "x" }, { path = "/k3" } },
    })
    local res = serve(server, client, function(req)
      n = n + 1
      server:respond(req.id, 200, nil, req.path)
    end)
    assert.equal(3, n)
    for i = 1, 3 do
      assert.equal(200, res[i].status)
      assert.equal("/k" .. i, res[i].body)
    end
    assert.equal(res[1].local_port, res[2].local_port)
    assert.equal(res[1].local_port, res[3].local_port)
  end)

  it("drop closes the connection without an answer", function()
    local client = start_client(server:port(), { requests = { { path = "/fault" } } })
    local res = serve(server, client, function(req)
      assert.is_true(server:drop(req.id))
      assert.equal(0, server:pending())
      local ok, err = server:respond(req.id, 200)
      assert.is_nil(ok)
      assert.equal("unknown request", err)
    end)
    assert.is_nil(res[1].status)
    assert.is_string(res[1].error)
  end)

  it("flags a body over max_body as too_large and drops the body", function()
    local seen
    local client = start_client(server:port(), {
      requests = { { method = "PUT", path = "/big", body = string.rep("z", 10000) } },
    })
    local res = serve(server, client, function(req)
      seen = req
      server:respond(req.id, 413, nil, "too large")
    end)
    assert.is_true(seen.too_large)
    assert.equal("", seen.body)
    assert.equal(413, res[1].status)
    assert.equal("too large", res[1].body)
  end)

  it("accepts a body of exactly max_body", function()
    local seen
    local client = start_client(server:port(), {
      requests = { { method = "PUT", path = "/fits", body = string.rep("y", 4096) } },
    })
    serve(server, client, function(req)
      seen = req
      server:respond(req.id, 204)
    end)
    assert.is_nil(seen.too_large)
    assert.equal(4096, #seen.body)
  end)

  it("refuses unknown ids and answers each request once", function()
    local ok, err = server:respond(123456789, 200)
    assert.is_nil(ok)
    assert.equal("unknown request", err)
    ok, err = server:drop(42)
    assert.is_nil(ok)
    assert.equal("unknown request", err)
    local client = start_client(server:port(), { requests = { { path = "/once" } } })
    serve(server, client, function(req)
      assert.is_true(server:respond(req.id, 200))
      local ok2, err2 = server:respond(req.id, 200)
      assert.is_nil(ok2)
      assert.equal("unknown request", err2)
    end)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() server:respond(1, 42) end)
    assert.has_error(function() server:respond(1, 200, { [1] = "x" }) end)
    assert.has_error(function() server:respond("x", 200) end)
    assert.has_error(function() core.http_server{ port = 70000 } end)
  end)

  it("stays safe when the client went away before the answer", function()
    local held
    local client = start_client(server:port(), { timeout = 0.3, requests = { { path = "/slow" } } })
    local res = serve(server, client, function(req) held = req end)
    assert.is_string(res[1].error) -- timed out
    for _ = 1, 5 do server:poll(0.02) end
    local ok, err = server:respond(held.id, 200, nil, "late")
    assert.is_true(ok == true or (ok == nil and err == "gone"))
    for _ = 1, 5 do server:poll(0.02) end
    assert.equal(0, server:pending())
    -- and the server still works
    client = start_client(server:port(), { requests = { { path = "/after" } } })
    res = serve(server, client, function(req) server:respond(req.id, 200, nil, "fine") end)
    assert.equal("fine", res[1].body)
  end)

  it("closes with requests still parked, and close is idempotent", function()
    local client = start_client(server:port(), {
      parallel = true, requests = { { path = "/a" }, { path = "/b" } },
    })
    local got = 0
    local deadline = core.monotime() + 10
    while got < 2 and core.monotime() < deadline do
      got = got + #server:poll(0.05)
    end
    assert.equal(2, got)
    assert.equal(2, server:pending())
    assert.is_true(server:close())
    assert.is_true(server:close())
    local ok, err = server:poll(0)
    assert.is_nil(ok)
    assert.equal("closed", err)
    ok, err = server:respond(1, 200)
    assert.is_nil(ok)
    assert.equal("closed", err)
    assert.same({ nil, "closed" }, { server:port() })
    assert.same({ nil, "closed" }, { server:pending() })
    assert.same({ nil, "closed" }, { server:drop(1) })
    assert.matches("closed", tostring(server))
    -- the clients see their connections closed
    local res
    while not res and core.monotime() < deadline do
      core.sleep(0.05)
      res = client_result(client)
    end
    assert.is_table(res)
    assert.is_string(res[1].error)
    assert.is_string(res[2].error)
  end)

  it("fails with a message naming the address when the port is taken", function()
    local port = server:port()
    local other, err = core.http_server{ host = "127.0.0.1", port = port }
    assert.is_nil(other)
    assert.equal(("bind 127.0.0.1:%d: Address already in use"):format(port), err)
  end)

  it("reports an unusable host", function()
    local other, err = core.http_server{ host = "203.0.113.1", port = 0 }
    assert.is_nil(other)
    assert.matches("^bind 203%.0%.113%.1:0: ", err)
  end)

  it("is closed by the garbage collector and by <close>", function()
    -- `<close>` is Lua 5.4 syntax, compiled at run time so this file also
    -- loads on LuaJIT; there the __close metamethod is called as 5.4 would.
    local scope = _VERSION == "Lua 5.4" and load([[
      local core = ...
      local s <close> = assert(core.http_server{ port = 0 })
      return s:port()
    ]]) or function(c)
      local s = assert(c.http_server{ port = 0 })
      local p = s:port()
      getmetatable(s).__close(s)
      return p
    end
    local port = scope(core)
    local again = assert(core.http_server{ port = port })
    again:close()
    local s2 = assert(core.http_server{ port = 0 })
    port = s2:port()
    s2 = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    again = assert(core.http_server{ port = port })
    again:close()
  end)
end)
