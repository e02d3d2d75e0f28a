-- Restart survival: the engine is killed with SIGKILL in the middle of a
-- 300-application run (a separate client process submitting, applications
-- running and queued), restarted on the same --data, and every record it had
-- acknowledged is there; what was live is FAILED with engine_restarted.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

-- The client: submits `n` applications one after another and appends each
-- acknowledged id to `out` (flushed), so the file holds exactly what the
-- engine answered 202 to. Stops at the first failure (the engine died).
local SUBMITTER = [[
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local url, iid, auth, out, n = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
local f = assert(io.open(out, "a"))
f:setvbuf("no")
local s = core.http_session()
for i = 1, n do
  local app = (i % 3 == 0) and "quick.sh" or "sleepy.sh"
  local res = s:request{ method = "POST", url = url .. "/v4/analytics_engines/" .. iid .. "/spark_applications",
    headers = { Authorization = auth, ["Content-Type"] = "application/json" },
    body = util.json_encode({ application_details = { application = app, arguments = { tostring(i) } } }),
    timeout = 10 }
  if not res or res.status ~= 202 then break end
  f:write(util.json_decode(res.body).application_id, " ", app, "\n")
end
f:close()
]]

local function lines(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then return out end
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

describe("local engine killed during a 300-application run", function()
  local e, dir, root, acked, before, settings_before
  local function req(method, suffix, body)
    return helper.request(e, method, helper.v4(e, suffix), body)
  end

  lazy_setup(function()
    root = helper.app_root {
      ["quick.sh"] = "echo quick $1\n",
      ["sleepy.sh"] = "echo $$\nsleep 60\n",
      ["submit.lua"] = SUBMITTER,
    }
    e = helper.start({ "--app-root", root })
    dir = e.data_dir
    assert.equal(200, (req("PUT", "/default_configs", { ["spark.driver.memory"] = "2G" })))
    assert.equal(200, (req("PUT", "/resource_consumption_limits", { max_cores = "12", max_memory = "48Gi" })))
    settings_before = select(2, req("GET", "/default_configs"))

    local out = root .. "/acked.txt"
    -- The submitter runs in aeflow (core linked in), so it works with any
    -- build the suite runs against, the sanitizer one included.
    local env = { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin"), "AE_URL=" .. e.url,
                  "AE_INSTANCE_ID=" .. e.instance_id, "AE_USERNAME=" .. e.username, "AE_API_KEY=" .. e.api_key }
    local pid = assert(core.spawn{ argv = { core.realpath(helper.bin()) or helper.bin(), "exec", root .. "/submit.lua",
      e.url, e.instance_id, helper.zen(e), out, "300" }, env = env,
      stdout = root .. "/submit.log", stderr = root .. "/submit.log" })
    -- Kill the engine once 60 submissions were acknowledged: the client is
    -- mid-run (300, so that a loaded machine's slow check cannot miss it).
    assert.truthy(helper.eventually(function() return #lines(out) >= 60 end, 60),
      "the client did not get 60 acknowledgements: " .. table.concat(lines(root .. "/submit.log"), " | "))
    core.kill(e.pid, "KILL")
    helper.eventually(function() return core.wait(e.pid) ~= nil end)
    helper.eventually(function() return core.wait(pid) ~= nil end, 30)
    acked = {}
    for _, l in ipairs(lines(out)) do
      local id, app = l:match("^(%S+) (%S+)$")
      acked[#acked + 1] = { id = id, app = app }
    end
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    before = #acked
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("acknowledged at least 60 and fewer than 300 submissions before the kill", function()
    assert.truthy(before >= 60, before)
    assert.truthy(before < 300, before)
  end)

  it("has every acknowledged application after the restart", function()
    local missing = {}
    for _, a in ipairs(acked) do
      local status = req("GET", "/spark_applications/" .. a.id)
      if status ~= 200 then missing[#missing + 1] = a.id end
    end
    assert.same({}, missing)
  end)

  it("keeps each application's request", function()
    for i, a in ipairs(acked) do
      local _, b = req("GET", "/spark_applications/" .. a.id)
      assert.equal(a.app, b.application_details.application)
      assert.same({ tostring(i) }, b.application_details.arguments)
    end
  end)

  it("leaves nothing live: running, queued and accepted ones are FAILED with engine_restarted", function()
    local restarted = 0
    for _, a in ipairs(acked) do
      local _, b = req("GET", "/spark_applications/" .. a.id)
      assert.truthy(b.state == "FINISHED" or b.state == "FAILED", b.state)
      if b.state == "FAILED" then
        assert.equal("engine_restarted", b.state_details[#b.state_details].code)
        restarted = restarted + 1
      end
      if a.app == "sleepy.sh" then assert.equal("FAILED", b.state) end
    end
    assert.truthy(restarted >= 40, restarted)
  end)

  it("kills the application processes the dead engine left behind", function()
    for _, a in ipairs(acked) do
      local pid = a.app == "sleepy.sh" and tonumber((helper.logs(e, a.id) or ""):match("^(%d+)"))
      if pid then
        assert.truthy(helper.eventually(function() return not helper.group_alive(pid) end, 10), pid)
      end
    end
  end)

  it("keeps the acknowledged settings", function()
    local _, conf = req("GET", "/default_configs")
    assert.same(settings_before, conf)
    local _, lim = req("GET", "/resource_consumption_limits")
    assert.same({ max_cores = "12", max_memory = "48Gi" }, lim)
  end)

  it("keeps the instance id and the admin's key", function()
    local f = assert(io.open(dir .. "/credentials.json"))
    local c = util.json_decode(f:read("a"))
    f:close()
    assert.equal(e.instance_id, c.instance_id)
  end)

  it("records the transitions with their times", function()
    local _, b = req("GET", "/spark_applications/" .. acked[1].id)
    assert.equal("FAILED", b.state)
    assert.is_string(b.finish_time)
  end)

  it("keeps its records in SQLite with a schema version", function()
    local db = assert(core.sqlite_open(dir .. "/state.db", { readonly = true }))
    local v = db:query("SELECT max(version) AS v FROM schema_version")[1].v
    local n = db:query("SELECT count(*) AS n FROM applications")[1].n
    db:close()
    assert.equal(require("analytics_engine.engine.state").SCHEMA_VERSION, v)
    assert.truthy(n >= before)
  end)
end)

describe("local engine state migration", function()
  it("imports a state.json from an older engine into SQLite", function()
    local dir = assert(require("analytics_engine.engine.launcher").temp_dir())
    local id = "11111111-2222-4333-8444-555555555555"
    local iid = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    helper.write(dir .. "/state.json", util.json_encode({ version = 1,
      settings = { instance = { instance_id = iid, creation_ts = 1, state_change_ts = 1 },
                   default_runtime = { spark_version = "3.3" }, default_configs = { a = "b" } },
      applications = { { id = id, state = "FINISHED", details = { application = "x.sh" }, runtime = "3.3",
                         creation_ts = 1, start_ts = 1, finish_ts = 2, return_code = "0",
                         dir = dir .. "/apps/" .. id } },
      clusters = {} }))
    local e = helper.start({}, { data_dir = dir })
    local ok, err = pcall(function()
      assert.equal(iid, e.instance_id)
      local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
      assert.equal("FINISHED", b.state)
      local _, rt = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
      assert.equal("3.3", rt.spark_version)
      assert.is_nil(io.open(dir .. "/state.json"))
      assert.truthy(io.open(dir .. "/state.json.migrated"))
    end)
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
    assert(ok, err)
  end)
end)

describe("engine.state", function()
  local state = require("analytics_engine.engine.state")
  local path
  before_each(function()
    path = helper.db_path()
  end)
  after_each(function() helper.remove_db(path) end)

  it("gives back what a commit wrote, in insertion order", function()
    local s = assert(state.open(path))
    s:put("applications", { id = "b", state = "RUNNING", n = 1 })
    s:put("applications", { id = "a", state = "FINISHED", n = 2 })
    s:settings().x = { y = "z" }
    s:touch("settings")
    assert(s:commit())
    s:close()
    s = assert(state.open(path))
    assert.same({ "b", "a" }, { s:list("applications")[1].id, s:list("applications")[2].id })
    assert.same({ y = "z" }, s:settings().x)
    s:close()
  end)

  it("loses a change that was not committed", function()
    local s = assert(state.open(path))
    local rec = s:put("applications", { id = "a", state = "RUNNING" })
    assert(s:commit())
    rec.state = "FINISHED"
    s:touch("applications", rec)
    s:close()
    s = assert(state.open(path))
    assert.equal("RUNNING", s:get("applications", "a").state)
    s:close()
  end)

  it("writes in-place edits marked with touch(kind, rec)", function()
    local s = assert(state.open(path))
    local rec = s:put("clusters", { id = "c", state = "ACCEPTED" })
    assert(s:commit())
    rec.state = "ACTIVE"
    s:touch("clusters", rec)
    assert.is_true(s.dirty)
    assert(s:commit())
    assert.is_false(s.dirty)
    s:close()
    s = assert(state.open(path))
    assert.equal("ACTIVE", s:get("clusters", "c").state)
    s:close()
  end)

  it("finds in-place edits after a bare touch()", function()
    local s = assert(state.open(path))
    local rec = s:put("kernels", { id = "k", state = "idle" })
    assert(s:commit())
    rec.state = "busy"
    s:touch()
    assert(s:commit())
    s:close()
    s = assert(state.open(path))
    assert.equal("busy", s:get("kernels", "k").state)
    s:close()
  end)

  it("raises for an unknown kind", function()
    local s = assert(state.open(path))
    assert.has_error(function() s:put("nope", { id = "x" }) end)
    s:close()
  end)

  it("refuses a database with a newer schema", function()
    local s = assert(state.open(path))
    s:close()
    local db = assert(core.sqlite_open(path))
    assert(db:run("INSERT INTO schema_version (version) VALUES (?)", state.SCHEMA_VERSION + 1))
    db:close()
    local s2, err = state.open(path)
    assert.is_nil(s2)
    assert.truthy(err:find("newer than this engine", 1, true))
  end)

  it("store:revert drops what was put after the mark, restores what changed, keeps earlier pending changes", function()
    local s = assert(state.open(path))
    local saved = s:put("applications", { id = "a", state = "RUNNING" })
    s:settings().x = "old"
    s:touch("settings")
    assert(s:commit())
    local pending = s:put("applications", { id = "b", state = "ACCEPTED" }) -- unsaved before the mark
    local mark = s:mark()
    s:put("applications", { id = "c", state = "ACCEPTED" })
    saved.state = "STOPPED"
    s:touch("applications", saved)
    s:settings().x = "new"
    s:touch("settings")
    local dropped, n = s:revert(mark)
    assert.equal(3, n)
    assert.equal(1, #dropped)
    assert.equal("c", dropped[1].rec.id)
    assert.is_nil(s:get("applications", "c"))
    assert.equal(saved, s:get("applications", "a"))
    assert.equal("RUNNING", saved.state)
    assert.equal("old", s:settings().x)
    assert.equal(pending, s:get("applications", "b"))
    assert.is_true(s.dirty)
    assert(s:commit())
    s:close()
    s = assert(state.open(path))
    assert.equal(2, #s:list("applications"))
    s:close()
  end)
end)

describe("aeflow serve's parse of the engine's options", function()
  local main = require("analytics_engine.cli.serve") -- the CLI parses the engine's options
  it("takes the quota, timeout and Spark options", function()
    local o = assert(main.parse({ "--quota-cores", "8", "--quota-memory", "32Gi", "--app-timeout", "15m",
      "--spark-master", "yarn", "--deploy-mode", "cluster" }))
    assert.equal("8", o["quota-cores"])
    assert.equal("yarn", o["spark-master"])
  end)
  it("rejects a bad deploy mode, quota or timeout", function()
    assert.is_nil(main.parse({ "--deploy-mode", "remote" }))
    assert.is_nil(main.parse({ "--quota-memory", "lots" }))
    assert.is_nil(main.parse({ "--app-timeout", "soon" }))
  end)
end)
