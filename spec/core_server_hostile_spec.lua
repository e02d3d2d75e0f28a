-- analytics_engine.core http_server under hostile framing and half-closed
-- connections. Clients are raw sockets (spec/helpers/raw_client.py: Lua
-- cannot half-close a socket); the spec answers from its poll loop one
-- iteration later, as the engine does when it writes state first.
local core = require("analytics_engine.core")
local cjson = require("cjson")
local util = require("analytics_engine.util")

local HELPER = "spec/helpers/raw_client.py"

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Run the raw client against server while answering every request with
-- 200 and a body naming it (after `delay` seconds, default one poll later);
-- returns the client's results and the requests seen.
local function exchange(server, conns, timeout, delay)
  local cfg, out = os.tmpname(), os.tmpname()
  os.remove(out)
  write(cfg, cjson.encode { port = server:port(), timeout = timeout or 5, conns = conns })
  os.execute(("python3 %s %s %s >/dev/null 2>&1 &"):format(HELPER, cfg, out))
  local seen, later = {}, {}
  local deadline = core.monotime() + 30
  while core.monotime() < deadline do
    local reqs = assert(server:poll(0.02))
    local now, wait = core.monotime(), {}
    for _, a in ipairs(later) do
      if now >= a[3] then server:respond(a[1], 200, { ["Content-Type"] = "text/plain" }, a[2])
      else wait[#wait + 1] = a end
    end
    later = wait
    for _, req in ipairs(reqs) do
      seen[#seen + 1] = req
      later[#later + 1] = { req.id, req.method .. " " .. req.path .. " " .. req.body, now + (delay or 0) }
    end
    local s = util.read_file(out)
    if s then
      os.remove(out)
      os.remove(cfg)
      return cjson.decode(s), seen
    end
  end
  error("raw client did not finish in time")
end

local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

local AMBIGUOUS = {
  ["Content-Length with Transfer-Encoding: chunked"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ["two Content-Length headers that differ"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
  ["a Transfer-Encoding other than chunked"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
  ["chunked applied twice"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ["white space between a header name and the colon"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
  ["Transfer-Encoding in HTTP/1.0"] =
    "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ["a Content-Length that is not a number"] =
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
  -- RFC 9112 3.2 (found by QA: both were served)
  ["an HTTP/1.1 request without Host"] = "GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
  ["two Host headers"] = "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
}

describe("core.http_server framing", function()
  local server
  before_each(function() server = assert(core.http_server { host = "127.0.0.1", port = 0 }) end)
  after_each(function() server:close() end)

  it("answers 400 and closes on ambiguous framing; the bytes after it never become a request", function()
    local names, conns = {}, {}
    for name, head in pairs(AMBIGUOUS) do
      names[#names + 1] = name
      conns[#conns + 1] = { send = head .. SMUGGLED }
    end
    local res, seen = exchange(server, conns)
    for i, name in ipairs(names) do
      local r = res[i]
      assert.is_true(r.eof, name .. ": the connection was not closed")
      assert.matches("^HTTP/1%.1 400 ", r.data, 1, false)
      assert.is_nil(r.data:find("smuggled", 1, true), name .. ": the trailing request was served")
    end
    for _, req in ipairs(seen) do assert.are_not.equal("/smuggled", req.path) end
    assert.equal(0, #seen)
  end)

  it("names the ambiguity in the service's error shape", function()
    local res = exchange(server, { { send = AMBIGUOUS["Content-Length with Transfer-Encoding: chunked"] } })
    local body = res[1].data:match("\r\n\r\n(.*)$")
    local err = cjson.decode(body)
    assert.equal(400, err.status_code)
    assert.equal("bad_framing", err.errors[1].code)
    assert.matches("Content%-Length and Transfer%-Encoding together", err.errors[1].message)
  end)

  it("still serves well-framed pipelined requests on one connection", function()
    local res, seen = exchange(server, {
      { send = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
          .. "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
          .. "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" } })
    assert.equal(3, #seen)
    assert.matches("POST /a abc.*POST /b de.*GET /c ", res[1].data)
  end)
end)

describe("core.http_server half-closed requests", function()
  local server
  before_each(function() server = assert(core.http_server { host = "127.0.0.1", port = 0 }) end)
  after_each(function() server:close() end)

  it("answers every request whose body arrived before the client half-closed: 40 of 40", function()
    local conns = {}
    for i = 1, 40 do
      local body = ('{"i":%d}'):format(i)
      conns[i] = { shut = true, send = ("POST /apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: %d\r\n\r\n%s"):format(#body, body) }
    end
    local res, seen = exchange(server, conns, 10)
    assert.equal(40, #seen)
    local answered = 0
    for i = 1, 40 do
      if res[i].data:find("^HTTP/1%.1 200 ") and res[i].data:find(('POST /apps {"i":%d}'):format(i), 1, true) then
        answered = answered + 1
      end
    end
    assert.equal(40, answered)
  end)

  it("answers a half-closed GET and a chunked POST too", function()
    local res = exchange(server, {
      { shut = true, send = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n" },
      { shut = true, send = "POST /y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    })
    assert.matches("^HTTP/1%.1 200 .*GET /x $", res[1].data)
    assert.matches("^HTTP/1%.1 200 .*POST /y abc$", res[2].data)
    assert.is_true(res[1].eof and res[2].eof)
  end)
end)

describe("core.http_server request deadline", function()
  local server
  before_each(function()
    server = assert(core.http_server { host = "127.0.0.1", port = 0, request_timeout = 1 })
  end)
  after_each(function() server:close() end)

  it("closes a slow loris at request_timeout although it keeps sending bytes", function()
    -- 40 header bytes, one per 0.2 s: 8 s if nobody stops it.
    local res, seen = exchange(server, {
      { send = "GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ", drip = ("z"):rep(40), every = 0.2 },
      { send = "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" },
    }, 20)
    assert.is_true(res[1].dripped < 25, "dripped " .. res[1].dripped .. " bytes before the close")
    assert.equal("", res[1].data)
    assert.matches("^HTTP/1%.1 200 .*GET /ok $", res[2].data)
    assert.equal(1, #seen)
    local st = assert(server:stats())
    assert.is_true(st.expired >= 1)
  end)

  it("does not cut a request whose answer takes longer than the deadline", function()
    local res = exchange(server,
      { { send = "POST /y HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", shut = true } }, 10, 2.5)
    assert.matches("^HTTP/1%.1 200 .*POST /y abc$", res[1].data)
    assert.equal(0, server:stats().expired)
  end)
end)
