-- Status reads the engine's server answers from answers Lua kept
-- (engine/answers.lua, csrc/server_cache.c), against a real engine: the
-- second identical read is replayed without Lua (counted in
-- /engine/v1/stats `replayed`), and every change the answer or the door's
-- decision rests on takes it back.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")
local rawc = require("helpers.raw")

local function counts(e)
  local status, b = helper.request(e, "GET", "/engine/v1/stats")
  assert.equal(200, status)
  return b.replayed.get_application_state or 0, b.requests.get_application_state or 0
end

local function status_path(e, id) return helper.v4(e, "/spark_applications/" .. id .. "/status") end

-- GET the status -> status, decoded body, raw body, headers
local function read(e, id, auth)
  local status, b, h, raw = helper.request(e, "GET", status_path(e, id), nil, auth and { Authorization = auth })
  return status, b, raw, h
end

-- Each raw request on its own connection -> the raw answers.
local function raw(e, sends, shut)
  local conns = {}
  for i, s in ipairs(sends) do conns[i] = { send = s, shut = shut } end
  return rawc.exchange(rawc.port_of(e), conns, 10)
end

local function wait_state(e, id, want)
  return helper.eventually(function()
    local _, b = read(e, id)
    return b and b.state == want
  end, 20)
end

describe("kept status answers", function()
  local e, root
  lazy_setup(function()
    root = helper.app_root { ["ok.sh"] = "exit 0\n",
                             ["wait.sh"] = 'while [ ! -e "$1" ]; do sleep 0.05; done\n' }
    e = helper.start({ "--no-jupyter", "--quiet", "--app-root", root, "--token-ttl", "3" })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf " .. root)
  end)

  it("answers a repeated read from the kept answer, byte for byte, and counts every read", function()
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    local r0, n0 = counts(e)
    local s1, b1, raw1, h1 = read(e, id)
    local s2, _, raw2, h2 = read(e, id)
    local s3, _, raw3 = read(e, id)
    assert.equal(200, s1)
    assert.equal(200, s2)
    assert.equal(200, s3)
    assert.equal("FINISHED", b1.state)
    assert.equal(raw1, raw2)
    assert.equal(raw1, raw3)
    assert.equal(h1["content-type"], h2["content-type"])
    assert.equal("application/json", h2["content-type"])
    local r1, n1 = counts(e)
    -- (wait_state's last read, Lua's, kept the FINISHED answer: these three are the server's)
    assert.equal(r0 + 3, r1)
    assert.equal(n0 + 3, n1) -- and all three are counted as requests
  end)

  it("answers pipelined reads in order, kept and Lua's answers mixed on one connection", function()
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    read(e, id)
    local r0 = counts(e)
    local function get(auth, extra)
      return ("GET %s HTTP/1.1\r\nHost: x\r\n%s%s\r\n"):format(status_path(e, id),
        auth and ("Authorization: " .. auth .. "\r\n") or "", extra or "")
    end
    local res = raw(e, { get(helper.zen(e)) .. get(helper.zen(e, "nobody", e.api_key)) .. get(nil)
                         .. get(helper.zen(e)) .. get(helper.zen(e), "Connection: close\r\n") })
    local codes = {}
    for code in res[1].data:gmatch("HTTP/1%.1 (%d%d%d) ") do codes[#codes + 1] = tonumber(code) end
    assert.same({ 200, 401, 401, 200, 200 }, codes)
    local _, finished = res[1].data:gsub('"state":"FINISHED"', "")
    assert.equal(3, finished)
    assert.equal(r0 + 3, (counts(e)))
  end)

  it("takes the kept answer back when the application changes state", function()
    local flag = os.tmpname()
    os.remove(flag)
    local id = helper.submit(e, { application = "wait.sh", arguments = { flag } })
    assert.truthy(wait_state(e, id, "RUNNING"))
    local r0 = counts(e)
    read(e, id)
    local _, b = read(e, id)
    assert.equal("RUNNING", b.state)
    assert.equal(r0 + 2, (counts(e))) -- kept while it runs (the wait's last read was Lua's)
    helper.write(flag, "")
    -- a kept RUNNING would be answered forever: the ending must show
    assert.truthy(wait_state(e, id, "FINISHED"), "the ending never showed")
    local _, f = read(e, id)
    assert.equal("FINISHED", f.state)
    assert.equal("0", f.return_code)
    assert.truthy(f.finish_time)
    os.remove(flag)
  end)

  it("answers the read right after a DELETE with the stopped state", function()
    local flag = os.tmpname()
    os.remove(flag)
    local id = helper.submit(e, { application = "wait.sh", arguments = { flag } })
    assert.truthy(wait_state(e, id, "RUNNING"))
    -- the same read by a second path (a trailing slash routes the same): kept for both paths
    local slash = status_path(e, id) .. "/"
    assert.equal("RUNNING", select(2, helper.request(e, "GET", slash)).state)
    local r0 = counts(e)
    read(e, id)
    assert.equal("RUNNING", select(2, helper.request(e, "GET", slash)).state)
    assert.equal(r0 + 2, (counts(e)))
    assert.equal(204, (helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. id))))
    local _, b = read(e, id)
    assert.equal("STOPPED", b.state)
    assert.equal("STOPPED", select(2, helper.request(e, "GET", slash)).state)
  end)

  it("gives another Authorization value Lua's own decision, never the kept answer", function()
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    read(e, id)
    local r0 = counts(e)
    -- the admin's key with another last byte, another user, garbage: 401 in the service's shape
    local cases = { helper.zen(e, nil, e.api_key .. "x"), helper.zen(e, "nobody", e.api_key), "Bearer a.b.c", "" }
    for _, a in ipairs(cases) do
      local s, b = read(e, id, a)
      assert.equal(401, s, a)
      assert.equal("unauthorized", b.errors[1].code)
      assert.truthy(b.trace)
    end
    -- the same credential in other bytes passes, decided by Lua once, then kept for those bytes too
    local other = "zenapikey " .. helper.zen(e):match("^%S+%s+(%S+)")
    assert.equal(200, (read(e, id, other)))
    assert.equal(r0, (counts(e)))
    assert.equal(200, (read(e, id, other)))
    assert.equal(r0 + 1, (counts(e)))
    -- two Authorization headers (Lua sees them joined: no scheme it knows), one of them the kept value
    local res = raw(e, {
      ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: %s\r\nAuthorization: %s\r\n\r\n")
        :format(status_path(e, id), helper.zen(e), helper.zen(e)),
      ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: %s\r\nAuthorization: Bearer x\r\n\r\n")
        :format(status_path(e, id), helper.zen(e)),
    })
    for _, r in ipairs(res) do assert.matches("^HTTP/1%.1 401 ", r.data) end
    assert.equal(r0 + 1, (counts(e)))
  end)

  it("ends the answer kept for a bearer token with the token", function()
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    local _, t = helper.request(e, "POST", "/icp4d-api/v1/authorize", { username = e.username, api_key = e.api_key })
    local claims = util.json_decode(util.b64url_decode(t.token:match("^[^.]+%.([^.]+)%.")))
    local bearer = "Bearer " .. t.token
    local r0 = counts(e)
    assert.equal(200, (read(e, id, bearer)))
    assert.equal(200, (read(e, id, bearer)))
    assert.equal(r0 + 1, (counts(e))) -- (--token-ttl 3: the token has >= 2 s to live here)
    while core.time() < claims.exp + 0.05 do core.sleep(0.1) end
    local s, b = read(e, id, bearer)
    assert.equal(401, s)
    assert.matches("expired", b.errors[1].message)
    assert.equal(r0 + 1, (counts(e)))
  end)

  it("answers HEAD, a query string, a body and other paths through Lua", function()
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    read(e, id)
    local r0, n0 = counts(e)
    assert.equal(200, (helper.request(e, "HEAD", status_path(e, id))))
    assert.equal(200, (helper.request(e, "GET", status_path(e, id) .. "?x=1")))
    assert.equal(405, (helper.request(e, "POST", status_path(e, id), {})))
    local res = raw(e, { ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: %s\r\n"
      .. "Content-Length: 2\r\n\r\n{}"):format(status_path(e, id), helper.zen(e)) })
    assert.matches("^HTTP/1%.1 200 ", res[1].data)
    local r1, n1 = counts(e)
    assert.equal(r0, r1)
    assert.equal(n0 + 3, n1) -- HEAD, the query and the body (the POST is a 405, not routed to it)
  end)

  it("answers half-closed reads and closes each connection (their end-of-file seen after the answer)", function()
    -- (a read whose end-of-file is already there goes to Lua, whose path makes the server see it)
    local id = helper.submit(e, { application = "ok.sh" })
    assert.truthy(wait_state(e, id, "FINISHED"))
    read(e, id)
    local _, n0 = counts(e)
    local sends = {}
    for i = 1, 20 do
      sends[i] = ("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"):format(status_path(e, id), helper.zen(e))
    end
    local res = raw(e, sends, true)
    for _, r in ipairs(res) do
      assert.matches("^HTTP/1%.1 200 ", r.data)
      assert.truthy(r.data:find('"state":"FINISHED"', 1, true))
      assert.is_true(r.eof, "the connection idled after its answer")
    end
    assert.equal(n0 + 20, select(2, counts(e)))
  end)
end)

describe("kept status answers and the engine's options", function()
  it("are not kept by an engine that logs its requests: each read is logged", function()
    local root = helper.app_root { ["ok.sh"] = "exit 0\n" }
    -- (the launcher always adds --quiet: drop it)
    local drop_quiet = 'for a; do shift; [ "$a" = --quiet ] || set -- "$@" "$a"; done; exec "$0" "$@"'
    local loud = helper.start({ "--no-jupyter", "--app-root", root },
      { bin = { "sh", "-c", drop_quiet, helper.bin() } })
    local ok, err = pcall(function()
      local id = helper.submit(loud, { application = "ok.sh" })
      assert.truthy(wait_state(loud, id, "FINISHED"))
      for _ = 1, 3 do assert.equal(200, (read(loud, id))) end
      local r = counts(loud)
      assert.equal(0, r)
      local log = helper.eventually(function()
        local s = util.read_file(loud.data_dir .. "/engine.log") or ""
        local n = select(2, s:gsub("GET [^\n]*/status 200", ""))
        return n >= 4 and s -- (the wait's last read and these three)
      end)
      assert.truthy(log, "not every read was logged")
    end)
    helper.stop(loud)
    os.execute("rm -rf " .. root)
    assert(ok, err)
  end)

  it("are not carried past a restart: a user removed from the users file gets 401", function()
    local keys = { viewer = "viewer-key-1" }
    local e = helper.start_with_roles(keys, { args = { "--no-jupyter", "--quiet" } })
    local ok, err = pcall(function()
      local id = helper.submit(e, { application = "ok.sh" })
      assert.truthy(wait_state(e, id, "FINISHED"))
      local viewer = helper.zen_as(e, keys, "viewer")
      assert.equal(200, (read(e, id, viewer)))
      assert.equal(200, (read(e, id, viewer)))
      assert.equal(1, (counts(e)))
      helper.stop(e, true)
      helper.write(e.made[1], "[]")
      local again = helper.start({ "--no-jupyter", "--quiet", "--users", e.made[1], "--app-root", e.made[2] },
        { data_dir = e.data_dir })
      local s = read(again, id, viewer)
      helper.stop(again, true)
      assert.equal(401, s)
    end)
    helper.stop(e)
    helper.cleanup(e)
    assert(ok, err)
  end)

  it("are kept only with --quiet, no --faults and no TLS, as many as --answer-cache says", function()
    local answers = require("analytics_engine.engine.answers")
    local main = require("analytics_engine.engine.main")
    assert.equal(answers.SIZE, answers.size({ quiet = true }, nil))
    assert.equal(0, answers.size({ quiet = false }, nil))
    assert.equal(0, answers.size({ quiet = true }, { rate = 0.1 }))
    assert.equal(0, answers.size({ quiet = true, tls = true }, nil))
    assert.equal(10, answers.size({ quiet = true, answer_cache = 10 }, nil))
    assert.equal(0, answers.size({ quiet = true, answer_cache = 0 }, nil))
    local o = assert(main.check({ ["answer-cache"] = 0 }))
    assert.equal(0, o["answer-cache"])
    local ok, err = main.check({ ["answer-cache"] = -1 })
    assert.is_nil(ok)
    assert.equal("--answer-cache must be between 0 and 1000000 answers (0: off)", err)
  end)

  it("--answer-cache 0: every read goes through Lua", function()
    local root = helper.app_root { ["ok.sh"] = "exit 0\n" }
    local e = helper.start({ "--no-jupyter", "--quiet", "--app-root", root, "--answer-cache", "0" })
    local ok, err = pcall(function()
      local id = helper.submit(e, { application = "ok.sh" })
      assert.truthy(wait_state(e, id, "FINISHED"))
      local _, n0 = counts(e)
      for _ = 1, 3 do assert.equal(200, (read(e, id))) end
      local r, n = counts(e)
      assert.equal(0, r)
      assert.equal(n0 + 3, n)
    end)
    helper.stop(e)
    os.execute("rm -rf " .. root)
    assert(ok, err)
  end)
end)
