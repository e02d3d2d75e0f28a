-- Bad input, end to end through the real aeflow: malformed workflow files,
-- malformed ids, hostile servers (not JSON, truncated, 100 MB, slow loris),
-- expired tokens, wrong credentials and a TLS mismatch. Each must end in one
-- clear line on stderr and exit code 2 (usage) or 1 (the run failed).
local core = require("analytics_engine.core")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local FIXTURES = "spec/fixtures/workflows/"

-- stderr is exactly one "aeflow: ..." line (and stdout has no answer).
local function assert_one_line(err, out)
  assert.is_truthy(err:find("^aeflow: "), "stderr does not start with 'aeflow: ': " .. err)
  assert.equals(1, select(2, err:gsub("\n", "\n")), "not exactly one line: " .. err)
  assert.equals("\n", err:sub(-1), "not newline-terminated: " .. err)
  assert.is_falsy(err:find("traceback", 1, true), "a traceback leaked: " .. err)
  if out then assert.equals("", out) end
end

local function start_hostile()
  local p = assert(io.popen("exec python3 spec/helpers/hostile_server.py"))
  local line = p:read("l") or ""
  local port, pid = line:match("^PORT (%d+) PID (%d+)$")
  assert(port, "the hostile server did not start: " .. line)
  return p, "http://127.0.0.1:" .. port, tonumber(pid)
end

describe("bad input", function()
  local dir
  setup(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-bad-"))
  end)
  teardown(function()
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  describe("a malformed workflow file", function()
    local cases = {
      { "a syntax error", FIXTURES .. "syntax_error.lua", "syntax_error%.lua:3: '}' expected" },
      { "a wrong type", FIXTURES .. "bad_type.lua", "bad_type%.lua:2: step \"ingest\": retries: expected" },
      { "a cycle", FIXTURES .. "cycle.lua", "cycle%.lua:3: cycle: a %-> b %-> c %-> a" },
      { "no action", FIXTURES .. "no_action.lua", "no_action%.lua:2: step \"nothing\": needs an action" },
      { "a runtime error", FIXTURES .. "runtime_error.lua", "runtime_error%.lua:3: attempt to index" },
      { "no workflow returned", FIXTURES .. "returns_nil.lua", "must return workflow" },
    }
    for _, c in ipairs(cases) do
      for _, verb in ipairs { "validate", "run", "plan" } do
        it(("with %s: %s exits 2 naming file and line"):format(c[1], verb), function()
          local code, out, err = aeflow.run({ verb, core.realpath(c[2]) }, { dir = dir, env = aeflow.env(nil) })
          assert.equals(2, code, err)
          assert_one_line(err, out)
          assert.matches(c[3], err)
        end)
      end
    end

    it("with an unknown action: exits 2 naming it", function()
      aeflow.write(dir, "unknown.lua", 'return workflow "u" {\n  step "a" { frobnicate = { x = 1 } },\n}\n')
      local code, out, err = aeflow.run({ "validate", "unknown.lua" }, { dir = dir, env = aeflow.env(nil) })
      assert.equals(2, code)
      assert_one_line(err, out)
      assert.matches("unknown%.lua:2: step \"a\": unknown key 'frobnicate'", err)
    end)

    it("that does not exist: exits 2", function()
      local code, out, err = aeflow.run({ "run", "no-such-file.lua" }, { dir = dir, env = aeflow.env(nil) })
      assert.equals(2, code)
      assert_one_line(err, out)
      assert.matches("no%-such%-file%.lua", err)
    end)

    it("made of binary garbage: exits 2", function()
      local bytes = {}
      for i = 1, 512 do bytes[i] = string.char((i * 7919) % 256) end
      aeflow.write(dir, "garbage.lua", table.concat(bytes))
      local code, out, err = aeflow.run({ "validate", "garbage.lua" }, { dir = dir, env = aeflow.env(nil) })
      assert.equals(2, code)
      assert_one_line(err, out)
    end)
  end)

  describe("a device or FIFO given as a file", function()
    -- Nothing answers here: the file must be refused before any connection.
    local function env()
      return aeflow.env(nil, { "AE_URL=http://127.0.0.1:1", "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5",
                               "AE_TOKEN=t" })
    end
    setup(function() assert(os.execute("mkfifo '" .. dir .. "/pipe'")) end)

    it("call @/dev/zero, @FIFO: exit 2 naming the file, nothing read", function()
      for _, f in ipairs { "/dev/zero", "pipe" } do
        local code, out, err = aeflow.run({ "call", "create_application", "@" .. f }, { dir = dir, env = env(),
                                                                                          timeout = 30 })
        assert.equals(2, code, err)
        assert_one_line(err, out)
        assert.matches(f .. " is a ", err, 1, true)
        assert.matches("not a regular file", err, 1, true)
      end
    end)

    it("report FIFO: exit 1 naming the file, without blocking on it", function()
      local code, out, err = aeflow.run({ "report", "pipe", "-o", "r.html" }, { dir = dir, env = env(), timeout = 30 })
      assert.equals(1, code, err)
      assert_one_line(err, out)
      assert.equals("aeflow: report: pipe is not an aeflow state file (a FIFO, not a regular file)\n", err)
    end)

    it("exec /dev/zero, exec FIFO: exit 2 naming the file, nothing read", function()
      for _, f in ipairs { "/dev/zero", "pipe" } do
        local code, out, err = aeflow.run({ "exec", f }, { dir = dir, env = env(), timeout = 30 })
        assert.equals(2, code, err)
        assert_one_line(err, out)
        assert.equals(("aeflow: exec: %s is %s, not a regular file\n"):format(f,
          f == "pipe" and "a FIFO" or "a character device"), err)
      end
    end)
  end)

  describe("against the local engine", function()
    local e
    setup(function() e = engine.start { "--token-ttl", "1" } end)
    teardown(function() engine.stop(e) end)

    local function env_with(extra)
      return aeflow.env(nil, { "AE_URL=" .. e.url, "AE_INSTANCE_ID=" .. e.instance_id, table.unpack(extra) })
    end

    it("a malformed id is refused before anything is sent, as a usage error (exit 2)", function()
      local code, out, err = aeflow.run({ "call", "get_application", "not-a-uuid" }, { dir = dir, engine = e })
      assert_one_line(err, out)
      assert.matches("'not%-a%-uuid' is not a valid id", err)
      assert.equals(2, code, err)
    end)

    it("a malformed JSON argument is a usage error (exit 2)", function()
      local code, out, err = aeflow.run({ "call", "replace_instance_default_runtime", "{nope" },
        { dir = dir, engine = e })
      assert.equals(2, code)
      assert_one_line(err, out)
      assert.matches("not valid JSON", err)
    end)

    it("an unknown operation is a usage error (exit 2)", function()
      local code, out, err = aeflow.run({ "call", "frobnicate" }, { dir = dir, engine = e })
      assert.equals(2, code)
      assert_one_line(err, out)
    end)

    it("an expired token fails the call with a 401 (exit 1)", function()
      local status, doc = engine.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = e.username, api_key = e.api_key }, { Authorization = false })
      assert.equals(200, status)
      core.sleep(2.5) -- --token-ttl 1
      local code, out, err = aeflow.run({ "call", "list_applications" },
        { dir = dir, env = env_with { "AE_TOKEN=" .. doc.token } })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("401", err)
      assert.is_falsy(err:find(doc.token, 1, true))
    end)

    it("a wrong password fails the token exchange (exit 1) without echoing it", function()
      local code, out, err = aeflow.run({ "call", "list_applications" },
        { dir = dir, env = env_with { "AE_USERNAME=" .. e.username, "AE_PASSWORD=wrong-pw-8c1f" } })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("40[13]", err)
      assert.is_falsy(err:find("wrong-pw-8c1f", 1, true))
    end)

    it("a wrong API key fails the call (exit 1) without echoing it", function()
      local code, out, err = aeflow.run({ "call", "list_applications" },
        { dir = dir, env = env_with { "AE_USERNAME=" .. e.username, "AE_API_KEY=wrong-key-77a2" } })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("40[13]", err)
      assert.is_falsy(err:find("wrong-key-77a2", 1, true))
    end)

    it("https:// to a plain-HTTP server is a TLS error (exit 1)", function()
      local code, out, err = aeflow.run({ "call", "list_applications" }, { dir = dir, env = aeflow.env(nil, {
        "AE_URL=" .. e.url:gsub("^http:", "https:"), "AE_INSTANCE_ID=" .. e.instance_id, "AE_TOKEN=tls-token-1" }) })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("tls", err:lower())
    end)
  end)

  describe("a hostile server", function()
    local proc, base, pid
    setup(function() proc, base, pid = start_hostile() end)
    teardown(function()
      if pid then core.kill(pid, "TERM") end
      if proc then proc:close() end
    end)

    local function call(mode)
      local env = aeflow.env(nil, { "AE_URL=" .. base .. "/" .. mode,
        "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_TOKEN=hostile-token-1" })
      return aeflow.run({ "call", "list_applications" }, { dir = dir, env = env, timeout = 120 })
    end

    it("answering 200 with a body that is not JSON: exit 1", function()
      local code, out, err = call("nonjson")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("JSON", err)
    end)

    it("answering 200 with truncated JSON: exit 1", function()
      local code, out, err = call("truncated")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("JSON", err)
    end)

    it("closing the connection before the promised body: exit 1", function()
      local code, out, err = call("cut")
      assert.equals(1, code)
      assert_one_line(err, out)
    end)

    it("answering 100 MB: refused past the response size limit, exit 1", function()
      local code, out, err = call("huge")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("too_large", err)
    end)

    it("sending its headers one byte at a time: the client's timeout ends it (exit 1)", function()
      aeflow.write(dir, "slow.lua", [[
local c = assert(ae.client { timeout = 2, retries = false })
local res, err = c:list_applications()
if not res then io.stderr:write("aeflow: ", tostring(err), "\n") return false end
]])
      local env = aeflow.env(nil, { "AE_URL=" .. base .. "/slow",
        "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_TOKEN=hostile-token-1" })
      local t0 = core.monotime()
      local code, out, err = aeflow.run({ "exec", "slow.lua" }, { dir = dir, env = env, timeout = 60 })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("timeout", err)
      assert.is_true(core.monotime() - t0 < 30, "the slow server was not cut off")
    end)

    it("sending terminal escapes in its message: printed visibly, never raw (exit 1)", function()
      local code, out, err = call("escape")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.is_nil(err:find("[%z\1-\9\11-\31\127]"), "a raw control character reached stderr: " .. err)
      assert.matches("boom \\x1b]0;pwned\\x07\\x1b[31mred", err, 1, true)
    end)

    it("echoing the caller's token back (401): masked in what is printed", function()
      local code, out, err = call("echo")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("bad token Bearer ***", err, 1, true)
      assert.is_nil(err:find("hostile-token-1", 1, true), err)
    end)

    it("echoing a ZenApiKey (username and API key in base64): masked too", function()
      local env = aeflow.env(nil, { "AE_URL=" .. base .. "/echo",
        "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_USERNAME=admin", "AE_API_KEY=hostile-key-2" })
      local code, out, err = aeflow.run({ "call", "list_applications" }, { dir = dir, env = env, timeout = 60 })
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("ZenApiKey ***", err, 1, true)
      assert.is_nil(err:find(require("analytics_engine.util").b64encode("admin:hostile-key-2"), 1, true), err)
    end)

    it("answering 101 Switching Protocols to a GET: a protocol error at once, not retried", function()
      local t0 = core.monotime()
      local code, out, err = call("switch")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("protocol: the server answered 101 Switching Protocols", err, 1, true)
      assert.is_nil(err:find("attempts", 1, true), err)
      assert.is_true(core.monotime() - t0 < 15, "the 101 was waited on")
    end)

    it("keeping an application in a state outside the API's: aeflow run warns once and keeps waiting", function()
      aeflow.write(dir, "odd.lua", 'return workflow "odd" {\n  step "a" { submit = { application = "x.py" } },\n}\n')
      local env = aeflow.env(nil, { "AE_URL=" .. base .. "/oddstate",
        "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_TOKEN=hostile-token-1" })
      local h = aeflow.spawn({ "run", "odd.lua", "--state", "odd.json", "--json", "--no-admission",
                               "--poll-interval", "0.1", "--max-poll-interval", "0.1", "--on-cancel", "leave" },
                             { dir = dir, env = env })
      local function count(text, what)
        return select(2, text:gsub('"event":"' .. what .. '"', ""))
      end
      assert.is_truthy(engine.eventually(function()
        return count(aeflow.read(h.out), "application_state_unknown") >= 1
      end, 30), "no application_state_unknown event")
      core.sleep(1.5) -- more rounds see the same state: the warning is not repeated
      core.kill(h.pid, "INT")
      local code, out = aeflow.wait(h, 60)
      assert.equals(130, code, out)  -- it kept waiting until cancelled
      assert.equals(1, count(out, "application_state_unknown"), out)
      assert.matches('"state":"LIMBO"', out, 1, true)
    end)

    it("sending 2 MB of headers: too_large, naming the limit", function()
      local code, out, err = call("bighead")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("too_large: response headers exceed the limit of 256 KB", err, 1, true)
    end)

    it("sending one 1 MB header line: too_large, not 'Out of memory'", function()
      local code, out, err = call("bigline")
      assert.equals(1, code)
      assert_one_line(err, out)
      assert.matches("too_large: a response header exceeds libcurl's limit", err, 1, true)
    end)
  end)

  it("with nothing listening: says refused, how many attempts over how long, once", function()
    local port = assert(core.http_server { host = "127.0.0.1", port = 0 })
    local p = port:port()
    port:close() -- a port that was just free: nothing listens there now
    local env = aeflow.env(nil, { "AE_URL=http://127.0.0.1:" .. p,
      "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_TOKEN=hostile-token-1" })
    local code, out, err = aeflow.run({ "call", "list_applications" }, { dir = dir, env = env, timeout = 120 })
    assert.equals(1, code)
    assert_one_line(err, out)
    assert.matches(("connect: 127.0.0.1:%d refused %%(5 attempts over %%d+%%.%%d s%%)\n$"):format(p), err)
    assert.is_nil(err:find(" ms", 1, true), err)
    assert.is_nil(err:find("Couldn't connect", 1, true), err)
  end)
end)
