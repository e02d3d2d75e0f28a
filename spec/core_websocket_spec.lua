-- The C core's WebSocket client against the core's own server side
-- (server:accept_websocket), both driven from this one thread.
local core = require("analytics_engine.core")

-- Step the server while cond() is false; returns what cond returned.
local function pump(srv, state, cond)
  for _ = 1, 1000 do
    local reqs = srv:poll(0.005)
    for _, r in ipairs(reqs) do
      if state.respond then
        state.respond(srv, r)
      else
        state.sws = assert(srv:accept_websocket(r.id, { max_message_size = 1000, control_frames = true }))
      end
    end
    local v = cond()
    if v then return v end
  end
  error("condition not reached", 2)
end

local function until_result(fn)
  return function()
    local a, b = fn()
    if a ~= nil or (type(b) == "table" and b.kind ~= "timeout") then return { a, b } end
  end
end

describe("core websocket", function()
  local srv, url, st, c

  before_each(function()
    srv = assert(core.http_server { port = 0 })
    url = "ws://127.0.0.1:" .. srv:port() .. "/ws"
    st = {}
  end)

  after_each(function()
    if c then c:close(nil, nil, 0) end
    if st.sws then st.sws:close(nil, nil, 0) end
    srv:close()
    c = nil
  end)

  local function open(opts)
    c = assert(core.ws_connect(url, opts))
    local r = pump(srv, st, until_result(function() return c:connect(0) end))
    assert.is_true(r[1], r[2] and r[2].message)
    return c
  end

  it("does not block in ws_connect and reports connecting", function()
    c = assert(core.ws_connect(url))
    assert.equals("connecting", c:state())
  end)

  it("opens and carries text both ways (client frames are masked: the server rejects unmasked ones)", function()
    open()
    assert(c:send("hello"))
    assert.same({ "hello", "text" }, pump(srv, st, until_result(function() return st.sws:receive(0) end)))
    assert(st.sws:send("back"))
    assert.same({ "back", "text" }, pump(srv, st, until_result(function() return c:receive(0) end)))
  end)

  it("reassembles fragmented messages in both directions", function()
    open()
    assert(c:send("abcdefghij", { fragment_size = 3 }))
    assert.same({ "abcdefghij", "text" }, pump(srv, st, until_result(function() return st.sws:receive(0) end)))
    assert(st.sws:send("0123456789", { fragment_size = 2, binary = true }))
    assert.same({ "0123456789", "binary" }, pump(srv, st, until_result(function() return c:receive(0) end)))
  end)

  it("answers a ping with a pong carrying the same data", function()
    open()
    assert(st.sws:ping("are you there"))
    -- the client reads the ping (and answers it) while receiving
    pump(srv, st, function() c:receive(0) return true end)
    assert.same({ "are you there", "pong" }, pump(srv, st, until_result(function() return st.sws:receive(0) end)))
  end)

  it("reports the peer's close code and reason", function()
    open()
    assert(st.sws:shutdown(4001, "bye"))
    local r = pump(srv, st, until_result(function() return c:receive(0) end))
    assert.same({ "closed", 4001, "bye" }, { r[2].kind, r[2].code, r[2].reason })
    assert.equals(4001, (c:close_info()))
  end)

  it("closes with 1009 when a message exceeds max_message_size", function()
    open()
    assert(c:send(string.rep("x", 2000)))
    local rc = pump(srv, st, until_result(function() return c:receive(0) end))
    assert.same({ "closed", 1009 }, { rc[2].kind, rc[2].code })
    c:close(nil, nil, 0) -- the server reads on until we go, so its close frame is not reset away
    local r = pump(srv, st, until_result(function() return st.sws:receive(0) end))
    assert.equals("too_large", r[2].kind)
  end)

  it("enforces the client's own max_message_size", function()
    open { max_message_size = 10 }
    assert(st.sws:send(string.rep("y", 100)))
    local r = pump(srv, st, until_result(function() return c:receive(0) end))
    assert.equals("too_large", r[2].kind)
  end)

  it("times out a receive with kind 'timeout'", function()
    open()
    local t0 = core.monotime()
    local data, err = c:receive(0.2)
    assert.is_nil(data)
    assert.equals("timeout", err.kind)
    assert.is_true(core.monotime() - t0 >= 0.15)
  end)

  it("refuses a 101 whose Sec-WebSocket-Accept does not match the key", function()
    st.respond = function(s, r)
      s:respond(r.id, 101, { Upgrade = "websocket", Connection = "Upgrade",
                            ["Sec-WebSocket-Accept"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" })
    end
    c = assert(core.ws_connect(url))
    local r = pump(srv, st, until_result(function() return c:connect(0) end))
    assert.equals("handshake", r[2].kind)
  end)

  it("reports a non-101 answer with its status", function()
    st.respond = function(s, r) s:respond(r.id, 401, { ["Content-Type"] = "text/plain" }, "no") end
    c = assert(core.ws_connect(url, { headers = { Authorization = "Bearer x" } }))
    local r = pump(srv, st, until_result(function() return c:connect(0) end))
    assert.same({ "handshake", 401 }, { r[2].kind, r[2].status })
  end)

  it("sends extra request headers", function()
    local seen
    st.respond = function(s, r)
      seen = r.headers.authorization
      st.sws = assert(s:accept_websocket(r.id))
    end
    open { headers = { Authorization = "Bearer t0k" } }
    assert.equals("Bearer t0k", seen)
  end)

  it("fails to connect to a closed port with kind 'connect'", function()
    local port = srv:port()
    srv:close()
    c = assert(core.ws_connect("ws://127.0.0.1:" .. port .. "/"))
    local ok, err = c:connect(5)
    assert.is_nil(ok)
    assert.equals("connect", err.kind)
    srv = assert(core.http_server { port = 0 })
  end)

  it("closes idempotently and answers closed afterwards", function()
    open()
    assert.is_true(c:close(nil, nil, 0))
    assert.is_true(c:close())
    local ok, err = c:send("x")
    assert.is_nil(ok)
    assert.equals("closed", err.kind)
  end)

  it("exposes the socket for an event loop and waits on it with wait_fds", function()
    open()
    local fd, ev = c:fd()
    assert.is_number(fd)
    assert.equals("r", ev)
    assert(st.sws:send("wake"))
    pump(srv, st, function() return core.wait_fds({ c }, 0) > 0 end)
    assert.equals("wake", c:receive(0))
  end)
end)
