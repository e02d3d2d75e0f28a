-- Secret hygiene: every aeflow command and every example workflow, run with
-- distinctive credentials, and every output, log, state file and event
-- stream searched for them (raw and base64). A profile file others can read
-- is refused.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local BAD_KEY = "apikey-MARKER-5f1e9c2d"
local BAD_PASSWORD = "password-MARKER-a83b61f0"
local BAD_TOKEN = "token-MARKER-0c4d7e19"

local function realpath(p) return core.realpath(p) or p end

local function read_all(paths)
  local parts = {}
  for _, p in ipairs(paths) do parts[#parts + 1] = aeflow.read(p) end
  return table.concat(parts, "\n")
end

-- Every file under dir (state files, event logs, copies of stdout/stderr).
local function files_under(dir)
  local list = {}
  local p = assert(io.popen("find '" .. dir .. "' -type f 2>/dev/null"))
  for line in p:lines() do list[#list + 1] = line end
  p:close()
  return list
end

describe("secret hygiene", function()
  local e, dir, secrets, outputs

  -- The forms a secret could leak in: as is, base64 alone, and inside a
  -- ZenApiKey or Basic header value.
  local function forms(user, secret)
    return { secret, util.b64encode(secret), util.b64encode(user .. ":" .. secret),
             util.b64url_encode(secret) }
  end

  local function record(name, code, out, err)
    outputs[#outputs + 1] = { name = name, code = code, text = out .. "\n" .. err }
  end

  local function run(name, args, env, opts)
    opts = opts or {}
    local code, out, err = aeflow.run(args, { dir = dir, env = env, timeout = opts.timeout or 120 })
    record(name, code, out, err)
    return code, out, err
  end

  setup(function()
    outputs = {}
    e = engine.start()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-secrets-"))
    secrets = {}
    for _, f in ipairs(forms(e.username, e.api_key)) do secrets[#secrets + 1] = f end
    for _, s in ipairs { BAD_KEY, BAD_PASSWORD, BAD_TOKEN } do
      for _, f in ipairs(forms(e.username, s)) do secrets[#secrets + 1] = f end
    end
    -- A token the engine really issued.
    local status, doc = engine.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = e.username, api_key = e.api_key }, { Authorization = false })
    assert(status == 200 and doc.token, "token exchange failed")
    secrets[#secrets + 1] = doc.token
    local good = aeflow.env(e, { "AE_DEBUG=1", "AE_TRACE=1" })
    local with_token = aeflow.env(nil, { "AE_URL=" .. e.url, "AE_INSTANCE_ID=" .. e.instance_id,
                                         "AE_TOKEN=" .. doc.token, "AE_DEBUG=1" })
    local base = { "AE_URL=" .. e.url, "AE_INSTANCE_ID=" .. e.instance_id, "AE_DEBUG=1" }
    local bad_key = aeflow.env(nil, { "AE_USERNAME=" .. e.username, "AE_API_KEY=" .. BAD_KEY, table.unpack(base) })
    local bad_pw = aeflow.env(nil, { "AE_USERNAME=" .. e.username, "AE_PASSWORD=" .. BAD_PASSWORD,
                                     table.unpack(base) })
    local bad_token = aeflow.env(nil, { "AE_TOKEN=" .. BAD_TOKEN, table.unpack(base) })

    aeflow.write(dir, "ok.sh", "echo ok\n")
    aeflow.write(dir, "wf.lua", [[
return workflow "secrets" {
  step "rt" { set_runtime = { spark_version = "3.4" } },
  step "job" { after = { "rt" }, submit = { application = "ok.sh", env = { A = "b" } } },
  step "look" { after = { "job" }, run = function(ctx) print(ctx.outputs.job.application_id) end },
}]])
    aeflow.write(dir, "script.lua", [[
print(client)
local list = assert(client:list_applications())
print(#list.applications)
local ok, err = client:get_application("00000000-0000-4000-8000-000000000000")
print(ok, err)
]])

    for name, env in pairs { good = good, token = with_token, bad_key = bad_key, bad_pw = bad_pw,
                             bad_token = bad_token } do
      run("call list_applications/" .. name, { "call", "list_applications" }, env)
      run("call get_instance_default_runtime/" .. name, { "call", "get_instance_default_runtime" }, env)
      run("call get_application/" .. name,
        { "call", "get_application", "00000000-0000-4000-8000-000000000000" }, env)
      run("run/" .. name, { "run", "wf.lua", "--json", "--state", name .. ".state.json" }, env)
      run("exec/" .. name, { "exec", "script.lua" }, env)
      run("orphans/" .. name, { "orphans", "--state", name .. ".state.json" }, env)
    end
    for _, verb in ipairs { "validate", "plan", "graph" } do
      run(verb, { verb, "wf.lua" }, good)
    end
    run("operations", { "operations" }, good)
    -- The example workflows, each against the engine.
    for _, wf in ipairs { "quickstart.lua", "failing.lua", "seed_samples.lua", "nightly.lua", "fanout.lua" } do
      local path = realpath("workflows/" .. wf)
      if wf == "quickstart.lua" then
        run("example " .. wf, { "exec", path }, good)
      else
        local args = { "run", path, "--json", "--state", wf .. ".state.json", "--poll-interval", "0.2" }
        if wf == "fanout.lua" then args[#args + 1] = "--param"; args[#args + 1] = "seconds=0" end
        run("example " .. wf, args, good, { timeout = 240 })
      end
    end
  end)

  teardown(function()
    engine.stop(e)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("ran the commands it searches (the good ones succeeded)", function()
    local by_name = {}
    for _, o in ipairs(outputs) do by_name[o.name] = o end
    assert.equals(0, by_name["call list_applications/good"].code, by_name["call list_applications/good"].text)
    assert.equals(0, by_name["run/good"].code, by_name["run/good"].text)
    assert.equals(0, by_name["run/token"].code, by_name["run/token"].text)
    assert.equals(0, by_name["exec/good"].code, by_name["exec/good"].text)
    assert.equals(0, by_name["example seed_samples.lua"].code, by_name["example seed_samples.lua"].text)
    assert.equals(1, by_name["example failing.lua"].code, by_name["example failing.lua"].text)
    assert.are_not.equal(0, by_name["run/bad_key"].code)
    assert.are_not.equal(0, by_name["call list_applications/bad_pw"].code)
  end)

  it("prints no secret in any command's stdout or stderr (NDJSON events included)", function()
    for _, o in ipairs(outputs) do
      for _, s in ipairs(secrets) do
        assert.is_falsy(o.text:find(s, 1, true), o.name .. " printed a secret: " .. s:sub(1, 6) .. "…")
      end
    end
  end)

  it("prints no Authorization header value, even with AE_DEBUG/AE_TRACE set", function()
    -- Messages may name the scheme ("invalid ZenApiKey credentials"); a header
    -- value is base64 of user:key after ZenApiKey, or a long token after Bearer.
    for _, o in ipairs(outputs) do
      for v in o.text:gmatch("ZenApiKey%s+([%w+/=]+)") do
        local decoded = util.b64decode(v)
        assert.is_falsy(decoded and decoded:find(":", 1, true), o.name .. " printed a ZenApiKey header value")
      end
      for v in o.text:gmatch("Bearer%s+(%S+)") do
        assert.is_true(#v < 16, o.name .. " printed a Bearer header value")
      end
      assert.is_falsy(o.text:lower():find("authorization:%s*%S"), o.name .. " printed an Authorization header")
    end
  end)

  it("writes no secret into any state file or other file of the runs", function()
    local files = files_under(dir)
    local states = 0
    for _, f in ipairs(files) do
      if f:find("%.state%.json$") then states = states + 1 end
      local text = aeflow.read(f)
      for _, s in ipairs(secrets) do
        assert.is_falsy(text:find(s, 1, true), f .. " holds a secret: " .. s:sub(1, 6) .. "…")
      end
    end
    assert.is_true(states >= 5, "expected the runs' state files, found " .. states)
  end)

  it("writes no secret into the engine's log", function()
    local log = read_all { e.log }
    assert.is_true(#log > 0)
    for _, s in ipairs(secrets) do
      assert.is_falsy(log:find(s, 1, true), "engine.log holds a secret: " .. s:sub(1, 6) .. "…")
    end
  end)

  describe("a profile file", function()
    local function profile_env(path)
      return aeflow.env(nil, { "AE_CONFIG=" .. path })
    end

    it("readable by others is refused with a message naming the fix", function()
      local p = aeflow.write(dir, "open-profile.json", util.json_encode {
        url = e.url, instance_id = e.instance_id, username = e.username, api_key = e.api_key })
      assert(os.execute("chmod 644 '" .. p .. "'"))
      local code, out, err = aeflow.run({ "call", "list_applications" }, { dir = dir, env = profile_env(p) })
      assert.is_true(code == 1 or code == 2, "exit code " .. tostring(code))
      assert.equals("", out)
      assert.matches("readable by others", err)
      assert.matches("chmod 600", err, 1, true)
      assert.is_falsy(err:find(e.api_key, 1, true))
    end)

    it("readable only by its owner is used", function()
      local p = aeflow.write(dir, "private-profile.json", util.json_encode {
        url = e.url, instance_id = e.instance_id, username = e.username, api_key = e.api_key })
      assert(os.execute("chmod 600 '" .. p .. "'"))
      local code, out, err = aeflow.run({ "call", "list_applications" }, { dir = dir, env = profile_env(p) })
      assert.equals(0, code, err)
      assert.matches("applications", out)
      assert.is_falsy((out .. err):find(e.api_key, 1, true))
    end)
  end)
end)
