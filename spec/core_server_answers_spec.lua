-- core.http_server's kept answers (csrc/server_cache.c): a GET of exactly
-- the path and Authorization value Lua kept an answer for is answered by the
-- server without reaching Lua; anything else reaches Lua as before. Clients
-- are raw sockets (spec/helpers/raw_client.py: repeated headers, HEAD, bodies).
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local cjson = require("cjson")

local AUTH = "ZenApiKey dXNlcjprZXk="
local BODY = '{"state":"FINISHED"}'
local HEADERS = { ["Content-Type"] = "application/json", ["X-Kept"] = "yes" }

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Send each raw request on its own connection (all at once), answering what
-- reaches Lua with 418 and its path; -> the raw answers, the requests Lua saw.
local function exchange(server, raws)
  local conns = {}
  for i, raw in ipairs(raws) do conns[i] = { send = raw } end
  local cfg, out = os.tmpname(), os.tmpname()
  os.remove(out)
  write(cfg, cjson.encode { port = server:port(), timeout = 10, conns = conns })
  os.execute(("python3 spec/helpers/raw_client.py %s %s >/dev/null 2>&1 &"):format(cfg, out))
  local seen = {}
  local deadline = core.monotime() + 20
  while true do
    for _, req in ipairs(assert(server:poll(0.02))) do
      seen[#seen + 1] = req
      assert(server:respond(req.id, 418, { ["Content-Type"] = "text/plain" }, "lua:" .. req.path))
    end
    local s = util.read_file(out)
    if s then
      os.remove(out)
      os.remove(cfg)
      local res = cjson.decode(s)
      local answers = {}
      for i, r in ipairs(res) do answers[i] = r.data end
      return answers, seen
    end
    assert(core.monotime() < deadline, "the client did not finish")
  end
end

local function get(path, auth_lines, extra)
  return ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s\r\n"):format(path, auth_lines or "", extra or "")
end

local function auth(v) return "Authorization: " .. v .. "\r\n" end

local function kept(answer)
  return answer:find("^HTTP/1%.1 200 ") ~= nil and answer:find("\r\n\r\n" .. BODY, 1, true) ~= nil
    and answer:lower():find("x%-kept: yes") ~= nil
end

describe("core.http_server kept answers", function()
  local server
  before_each(function()
    server = assert(core.http_server{ host = "127.0.0.1", port = 0, answer_cache = 3 })
  end)
  after_each(function()
    if server then server:close() end
    server = nil
  end)

  it("are off unless answer_cache is set", function()
    local off = assert(core.http_server{ host = "127.0.0.1", port = 0 })
    local ok, err = off:answer_put("/a", AUTH, 200, HEADERS, BODY)
    assert.is_nil(ok)
    assert.matches("off", err)
    off:close()
    assert.has_error(function() core.http_server{ answer_cache = -1 } end)
  end)

  it("answer exactly the kept path and Authorization value without Lua, and count by tag", function()
    assert(server:answer_put("/apps/1/status", AUTH, 200, HEADERS, BODY, nil, "get_state"))
    local answers, seen = exchange(server, {
      get("/apps/1/status", auth(AUTH)),
      get("/apps/1/status", auth(AUTH)),
      get("/apps/1/status", auth(AUTH .. "x")),            -- another value
      get("/apps/1/status", auth("zenapikey dXNlcjprZXk=")), -- same credential, other bytes
      get("/apps/1/status"),                                -- none
      get("/apps/1/status", auth(AUTH) .. auth(AUTH)),      -- two: Lua sees them joined
      get("/apps/1/status", auth(AUTH) .. auth("Bearer x")),
      get("/apps/1/status?x=1", auth(AUTH)),                -- a query
      get("/apps/1/status/", auth(AUTH)),                   -- another path
      get("/apps/2/status", auth(AUTH)),
      ("HEAD /apps/1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"):format(auth(AUTH)),
      ("POST /apps/1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: 0\r\n\r\n")
        :format(auth(AUTH)),
      get("/apps/1/status", auth(AUTH), "Content-Length: 2\r\n\r\n{}"), -- a GET with a body
    })
    assert.is_true(kept(answers[1]), answers[1])
    assert.is_true(kept(answers[2]), answers[2])
    for i = 3, #answers do
      assert.is_false(kept(answers[i]), "answer " .. i .. " was the kept one")
      assert.matches("^HTTP/1%.1 418 ", answers[i])
    end
    assert.equal(#answers - 2, #seen) -- every other request reached Lua
    local st = server:answer_stats()
    assert.same({ get_state = 2 }, st.served)
    assert.equal(1, st.answers)
    assert.equal(3, st.limit)
  end)

  it("are dropped by path (every Authorization value) and cleared whole", function()
    assert(server:answer_put("/a", AUTH, 200, HEADERS, BODY, nil, "t"))
    assert(server:answer_put("/a", "Bearer tok", 200, HEADERS, BODY, nil, "t"))
    assert(server:answer_put("/b", AUTH, 200, HEADERS, BODY, nil, "t"))
    assert.equal(2, server:answer_drop("/a"))
    assert.equal(0, server:answer_drop("/a"))
    local answers, seen = exchange(server,
      { get("/a", auth(AUTH)), get("/a", auth("Bearer tok")), get("/b", auth(AUTH)) })
    assert.matches("^HTTP/1%.1 418 ", answers[1])
    assert.matches("^HTTP/1%.1 418 ", answers[2])
    assert.is_true(kept(answers[3]))
    assert.equal(2, #seen)
    assert.equal(1, server:answer_clear())
    answers = exchange(server, { get("/b", auth(AUTH)) })
    assert.matches("^HTTP/1%.1 418 ", answers[1])
    assert.equal(0, server:answer_stats().answers)
  end)

  it("end at their expiry (wall clock)", function()
    assert(server:answer_put("/old", AUTH, 200, HEADERS, BODY, core.time() - 1, "t"))
    assert(server:answer_put("/new", AUTH, 200, HEADERS, BODY, core.time() + 600, "t"))
    local answers = exchange(server, { get("/old", auth(AUTH)), get("/new", auth(AUTH)) })
    assert.matches("^HTTP/1%.1 418 ", answers[1])
    assert.is_true(kept(answers[2]))
    assert.equal(1, server:answer_stats().answers) -- the expired one went on its lookup
  end)

  it("replace an answer kept for the same key, and empty the cache when it is full", function()
    assert(server:answer_put("/a", AUTH, 200, HEADERS, "old"))
    local ok, emptied = server:answer_put("/a", AUTH, 200, HEADERS, BODY)
    assert.is_true(ok)
    assert.is_false(emptied)
    assert(server:answer_put("/b", AUTH, 200, HEADERS, BODY))
    assert(server:answer_put("/c", AUTH, 200, HEADERS, BODY))
    assert.equal(3, server:answer_stats().answers)
    ok, emptied = server:answer_put("/d", AUTH, 200, HEADERS, BODY)
    assert.is_true(ok)
    assert.is_true(emptied)
    local answers = exchange(server, { get("/a", auth(AUTH)), get("/d", auth(AUTH)) })
    assert.matches("^HTTP/1%.1 418 ", answers[1])
    assert.is_true(kept(answers[2]))
  end)

  it("refuse bad arguments: raised for a programmer's mistake, nil, err for a bad header", function()
    assert.has_error(function() server:answer_put("/a\0b", AUTH, 200, HEADERS, BODY) end)
    assert.has_error(function() server:answer_put("/a", "", 200, HEADERS, BODY) end)
    assert.has_error(function() server:answer_put("/a", AUTH, 99, HEADERS, BODY) end)
    assert.has_error(function() server:answer_put("/a", AUTH, 200, { [1] = "x" }, BODY) end)
    assert.has_error(function() server:answer_put("/a", AUTH, 200, HEADERS, BODY, -1) end)
    local ok, err = server:answer_put("/a", AUTH, 200, { ["X-Bad"] = "a\0b" }, BODY)
    assert.is_nil(ok)
    assert.matches("invalid header 'X%-Bad'", err)
    -- (the puts above counted under the tag "": 15 more make 16)
    for i = 1, 15 do assert(server:answer_put("/t", AUTH, 200, nil, "", nil, "tag" .. i)) end
    assert.has_error(function() server:answer_put("/t", AUTH, 200, nil, "", nil, "tag17") end)
    assert.equal(1, server:answer_stats().answers)
  end)

  it("are answered even after a half-close; one whose end-of-file is already there goes to Lua", function()
    assert(server:answer_put("/a", AUTH, 200, HEADERS, BODY, nil, "t"))
    local conns = {}
    for i = 1, 5 do conns[i] = { send = get("/a", auth(AUTH)):gsub("Connection: close\r\n", ""), shut = true } end
    local cfg, out = os.tmpname(), os.tmpname()
    os.remove(out)
    write(cfg, cjson.encode { port = server:port(), timeout = 10, conns = conns })
    os.execute(("python3 spec/helpers/raw_client.py %s %s >/dev/null 2>&1 &"):format(cfg, out))
    local deadline, res = core.monotime() + 20, nil
    repeat
      for _, req in ipairs(assert(server:poll(0.02))) do
        assert(server:respond(req.id, 200, HEADERS, BODY)) -- Lua's answer: the same one
      end
      local s = util.read_file(out)
      if s then res = cjson.decode(s) end
      assert(core.monotime() < deadline, "the client did not finish")
    until res
    os.remove(out)
    os.remove(cfg)
    for _, r in ipairs(res) do
      assert.is_true(kept(r.data), r.data)
      assert.is_true(r.eof, "the connection idled after its answer")
    end
  end)

  it("are off on a TLS server", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      .. "-subj /CN=127.0.0.1 -keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1"):format(dir, dir)))
    local tls = assert(core.http_server{ host = "127.0.0.1", port = 0, answer_cache = 10,
      tls_cert = util.read_file(dir .. "/cert.pem"), tls_key = util.read_file(dir .. "/key.pem") })
    os.execute("rm -rf " .. dir)
    local ok, err = tls:answer_put("/a", AUTH, 200, HEADERS, BODY)
    tls:close()
    assert.is_nil(ok)
    assert.matches("off", err)
  end)

  it("are gone with the server: methods on a closed one say so", function()
    assert(server:answer_put("/a", AUTH, 200, HEADERS, BODY))
    server:close()
    local ok, err = server:answer_put("/a", AUTH, 200, HEADERS, BODY)
    assert.is_nil(ok)
    assert.equal("closed", err)
    assert.is_nil((server:answer_stats()))
  end)
end)
