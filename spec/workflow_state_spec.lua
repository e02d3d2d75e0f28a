-- The state file: one runner per run (an flock beside it), a schema checked
-- on --resume, old layouts migrated. End to end with the real binary and a
-- real local engine.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local function tokens_of(apps)
  local count = {}
  for _, a in ipairs(apps) do
    local tok = a.spark_application_name:match("#(aeflow%-.*)$")
    assert(tok, "application without a run token: " .. tostring(a.spark_application_name))
    count[tok] = (count[tok] or 0) + 1
  end
  return count
end

local function submitted(path)
  local doc = state.read(path)
  local n = 0
  for _, rec in pairs(type(doc) == "table" and doc.steps or {}) do
    for _, it in pairs(rec.items or {}) do
      for _, att in ipairs(it.attempts) do if att.application_id then n = n + 1 end end
    end
  end
  return n
end

describe("state file lock", function()
  local dir
  before_each(function() dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-lock-")) end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("lets one holder in and names it (pid and host) to the next", function()
    local path = dir .. "/s.json"
    local lock = assert(state.lock(path))
    local again, err = state.lock(path)
    assert.is_nil(again)
    assert.matches("s.json is in use by another aeflow run %(pid " .. core.getpid() .. " on host [^)]+, since ", err)
    assert.matches("lock .*s.json.lock", err)
    lock:close()
    lock:close() -- twice is fine
    local third = assert(state.lock(path))
    assert.equals("lock (held)", tostring(third))
    third:close()
  end)

  it("is released by the kernel when the holder is killed with -9", function()
    local path = dir .. "/s.json"
    local holder = aeflow.write(dir, "hold.lua",
      ("local l = assert(require('analytics_engine.workflow.state').lock(%q))\n"
      .. "io.open(%q, 'w'):close()\nwhile true do require('analytics_engine.core').sleep(1) end\n")
      :format(path, dir .. "/ready"))
    local lpath = "package.path='" .. core.realpath("lua") .. "/?.lua;'..package.path;package.cpath='"
      .. core.realpath("build") .. "/?.so;'..package.cpath"
    local pid = assert(core.spawn { argv = { "lua5.4", "-e", lpath, holder } })
    engine.eventually(function() return io.open(dir .. "/ready") ~= nil end, 10)
    local l, err = state.lock(path)
    assert.is_nil(l)
    assert.matches("pid " .. pid .. " on host", err)
    core.kill(pid, "KILL")
    engine.eventually(function() return core.wait(pid) == "signaled" end, 10)
    assert(state.lock(path)):close()
  end)
end)

describe("two runners on one state file", function()
  local e, dir
  before_each(function()
    e, dir = aeflow.workspace("aeflow-two-", { ["s1.sh"] = "sleep 1\n" })
  end)
  after_each(function() aeflow.finish(e, dir) end)

  it("resumed twice at once: one exits 2 naming the holder, every item runs exactly once", function()
    aeflow.write(dir, "wf.lua", [[
local items = {}
for i = 1, 10 do items[i] = i end
return workflow "locked" {
  step "fan" { for_each = items, max_parallel = 2, submit = { application = "s1.sh" } },
}]])
    local args = { "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.1" }
    local h = aeflow.spawn(args, { dir = dir, engine = e })
    engine.eventually(function() return submitted(dir .. "/s.json") >= 2 end, 30)
    core.kill(h.pid, "KILL")
    aeflow.wait(h)
    args[#args + 1] = "--resume"
    local sub = dir .. "/b"
    os.execute("mkdir -p '" .. sub .. "'")
    -- the second from another directory (its own stdout/stderr files)
    local a = aeflow.spawn(args, { dir = dir, engine = e })
    local b = aeflow.spawn({ "run", "../wf.lua", "--state", "../s.json", "--poll-interval", "0.1", "--resume" },
      { dir = sub, engine = e })
    local ca, oa, ea = aeflow.wait(a, 120)
    local cb, ob, eb = aeflow.wait(b, 120)
    local codes = { ca, cb }
    table.sort(codes)
    assert.same({ 0, 2 }, codes, "exit codes " .. ca .. " " .. cb .. "\n" .. oa .. ea .. ob .. eb)
    local loser = ca == 2 and ea or eb
    assert.matches("^aeflow: run: [./]*s.json is in use by another aeflow run %(pid %d+ on host ", loser)
    assert.equals(1, select(2, loser:gsub("\n", "")), loser)
    local apps = aeflow.applications(e)
    local count = tokens_of(apps)
    local n = 0
    for tok, c in pairs(count) do
      assert.equals(1, c, "token submitted twice: " .. tok)
      n = n + 1
    end
    assert.equals(10, n)
    assert.equals(10, #apps)
  end)
end)

describe("resuming a state file", function()
  local e, dir
  setup(function()
    e, dir = aeflow.workspace("aeflow-st-", { ["ok.sh"] = "echo ok\n", ["wf.lua"] = [[
return workflow "st" {
  step "a" { for_each = { "x", "y" }, submit = { application = "ok.sh" } },
}]] })
  end)
  teardown(function() aeflow.finish(e, dir) end)

  local function resume(doc_text)
    aeflow.write(dir, "bad.json", doc_text)
    local code, out, err = aeflow.run({ "run", "wf.lua", "--state", "bad.json", "--resume" }, { dir = dir, engine = e })
    return code, out, err, aeflow.read(dir .. "/bad.json")
  end

  local GOOD = { version = 1, run_id = "abcd1234", workflow = "st", status = "running", params = {}, steps = {},
                 finally = {} }
  local function with(patch)
    local d = util.json_decode(util.json_encode(GOOD))
    patch(d)
    return util.json_encode(d)
  end

  local CASES = {
    { "an item stored as a string", function(d) d.steps.a = { status = "running", items = { ["1"] = "oops" } } end,
      "steps.a.items.1: expected an object, got the string \"oops\"" },
    { "attempts as an object", function(d)
        d.steps.a = { status = "running", items = { ["1"] = { status = "running", attempts = { x = 1 } } } }
      end, "steps.a.items.1.attempts: expected an array, got an object" },
    { "run_id as a table", function(d) d.run_id = { 1 } end, "run_id: expected a run id" },
    { "an unknown step status", function(d) d.steps.a = { status = "done", items = {} } end,
      "steps.a.status: expected one of cancelled, failed, pending, running, skipped, succeeded" },
    { "a missing steps table", function(d) d.steps = nil end, "steps: missing" },
    { "an attempt number that is text", function(d)
        d.steps.a = { status = "running", items = { ["1"] = { status = "running", attempts = { { n = "1" } } } } }
      end, "steps.a.items.1.attempts[1].n: expected a whole number" },
    { "a version from the future", function(d) d.version = 99 end, "written by a newer aeflow (state version 99" },
  }
  for _, c in ipairs(CASES) do
    it("with " .. c[1] .. ": exit 2, one line naming the field and the file, file untouched", function()
      local text = with(c[2])
      local code, out, err, after = resume(text)
      assert.equals(2, code, out .. err)
      assert.matches("^aeflow: cannot resume: bad.json", err)
      assert.truthy(err:find(c[3], 1, true), err)
      assert.equals(1, select(2, err:gsub("\n", "")), err)
      assert.is_nil(err:find("traceback", 1, true))
      assert.equals(text, after)
    end)
  end

  it("that is not JSON: exit 2 and says so", function()
    local code, _, err = resume("{ nope")
    assert.equals(2, code)
    assert.matches("^aeflow: cannot resume: bad.json is not an aeflow state file %(not JSON", err)
  end)

  it("from before versions (no version field): migrated and resumed", function()
    local code, out, err = resume(util.json_encode { run_id = "0ld0ld00", workflow = "st", status = "running",
                                                   steps = {} })
    assert.equals(0, code, out .. err)
    local doc = util.json_decode(aeflow.read(dir .. "/bad.json"))
    assert.equals(state.VERSION, doc.version)
    assert.equals("0ld0ld00", doc.run_id)
    assert.equals("succeeded", doc.steps.a.status)
  end)
end)
