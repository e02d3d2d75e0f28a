-- Writing the state file: whole, then a journal of the items said to have
-- changed, replayed by every reader. The state module directly, then the
-- real binary killed mid-run.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local function temp_path()
  local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-writes-"))
  return dir .. "/state.json", dir
end

-- A state of `n` items, one submitted attempt each; returns it and the attempts.
local function fan_state(path, n)
  local st = state.new(path, { run_id = "r1", workflow = "w", file = "/x/w.lua", params = { p = "1" } })
  local rec = st:step("fan")
  rec.status = "running"
  local atts = {}
  for i = 1, n do
    local it = st:item(rec, i)
    it.status = "running"
    local att = { n = 1, started_at = 1000 + i, token = "aeflow-r1-fan-" .. i .. "-1" }
    st:add_attempt(it, att)
    atts[i] = att
  end
  return st, atts
end

local function on_disk(path) return assert(state.read(path)) end
local function journal(path) return util.read_file(path .. ".journal") end

describe("state file writes", function()
  local path, dir
  before_each(function() path, dir = temp_path() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("write an attempt named as changed", function()
    local st, atts = fan_state(path, 50)
    assert(st:save(true))
    atts[7].application_id = "app-7"
    st:changed(atts[7])
    assert(st:save(true))
    assert.equals("app-7", on_disk(path).steps.fan.items["7"].attempts[1].application_id)
  end)

  it("write an item record named as changed, with everything in it", function()
    local st, atts = fan_state(path, 5)
    assert(st:save(true))
    local it = st.doc.steps.fan.items["3"]
    it.status, it.outputs = "succeeded", { rc = 0 }
    atts[3].result = "succeeded"
    st:changed(it)
    assert(st:save(true))
    local got = on_disk(path).steps.fan.items["3"]
    assert.equals("succeeded", got.status)
    assert.same({ rc = 0 }, got.outputs)
    assert.equals("succeeded", got.attempts[1].result)
  end)

  it("write every item again after a change that names nothing", function()
    local st, atts = fan_state(path, 20)
    assert(st:save(true))
    for i = 1, 20 do atts[i].state = "RUNNING" end
    st:changed()
    assert(st:save(true))
    for key, it in pairs(on_disk(path).steps.fan.items) do
      assert.equals("RUNNING", it.attempts[1].state, "item " .. key)
    end
  end)

  it("write an attempt added with add_attempt", function()
    local st = fan_state(path, 3)
    assert(st:save(true))
    st:add_attempt(st.doc.steps.fan.items["2"], { n = 2, started_at = 5 })
    assert(st:save(true))
    assert.equals(2, #on_disk(path).steps.fan.items["2"].attempts)
  end)

  it("write every item again when an unknown attempt is named", function()
    local st, atts = fan_state(path, 4)
    assert(st:save(true))
    atts[4].state = "FAILED"
    st:changed({ n = 9 }) -- not an attempt of this state
    assert(st:save(true))
    assert.equals("FAILED", on_disk(path).steps.fan.items["4"].attempts[1].state)
  end)

  it("write the run's and the steps' own fields at every write", function()
    local st = fan_state(path, 3)
    assert(st:save(true))
    st.doc.status, st.doc.steps.fan.error = "failed", "boom"
    assert(st:save(true))
    local doc = on_disk(path)
    assert.equals("failed", doc.status)
    assert.equals("boom", doc.steps.fan.error)
  end)

  it("read back as the document after journal writes", function()
    local st, atts = fan_state(path, 200)
    assert(st:save(true))
    for i = 1, 200, 7 do
      atts[i].state = "RUNNING"
      st:changed(atts[i])
    end
    st.doc.finally.cleanup = { status = "pending", items = {} }
    st.doc.steps.fan.status = "failed"
    assert(st:save(true))
    assert.truthy(journal(path))
    assert.same(util.json_decode(util.json_encode(st.doc)), on_disk(path))
  end)

  it("keep a step's outputs, written whole when it ended, through later journal writes", function()
    local st, atts = fan_state(path, 3)
    local outs = util.array { { rc = 0 }, { rc = 1 }, { rc = 2 } }
    st.doc.steps.fan.status, st.doc.steps.fan.outputs = "succeeded", outs
    assert(st:save()) -- a step's end writes whole
    local later = st:step("next")
    later.status = "running"
    atts[1].state = "FINISHED"
    st:changed(atts[1])
    assert(st:save(true))
    assert.truthy(journal(path))
    local doc = on_disk(path)
    assert.same({ { rc = 0 }, { rc = 1 }, { rc = 2 } }, doc.steps.fan.outputs)
    assert.equals("running", doc.steps.next.status)
    assert.equals("FINISHED", doc.steps.fan.items["1"].attempts[1].state)
  end)

  it("append only the changed items to the journal, not the document", function()
    local st, atts = fan_state(path, 500)
    assert(st:save(true))
    local whole = #util.read_file(path)
    atts[10].state = "RUNNING"
    st:changed(atts[10])
    assert(st:save(true))
    assert.equals(whole, #util.read_file(path))
    assert.is_true(#journal(path) < 1000, #journal(path) .. " bytes")
  end)

  it("ignore a journal line a crash cut short", function()
    local st, atts = fan_state(path, 3)
    assert(st:save(true))
    atts[2].application_id = "app-2"
    st:changed(atts[2])
    assert(st:save(true))
    local f = assert(io.open(path .. ".journal", "a"))
    f:write('{"item":["steps","fan","2"],"record":{"status":"fail')
    f:close()
    assert.equals("app-2", on_disk(path).steps.fan.items["2"].attempts[1].application_id)
  end)

  it("ignore a journal of another generation (one a crash left behind)", function()
    local st, atts = fan_state(path, 3)
    assert(st:save(true))
    atts[1].application_id = "stale"
    st:changed(atts[1])
    assert(st:save(true))
    local left = journal(path)
    atts[1].application_id = "fresh"
    assert(st:save()) -- whole: a new generation, the journal removed
    assert.is_nil(journal(path))
    assert(core.write_file_atomic(path .. ".journal", left))
    assert.equals("fresh", on_disk(path).steps.fan.items["1"].attempts[1].application_id)
  end)

  it("write whole again once the journal is twice the document (at least 4 MB), and remove the journal", function()
    local st, atts = fan_state(path, 10)
    assert(st:save(true))
    local big = string.rep("x", 1000000)
    for k = 1, 6 do -- the fifth append passes 4 MB: the sixth write is whole
      atts[1].error = big .. k
      st:changed(atts[1])
      assert(st:save(true))
      assert.equals(k < 6, journal(path) ~= nil, "after write " .. k)
    end
    assert.equals(big .. "6", util.json_decode(util.read_file(path)).steps.fan.items["1"].attempts[1].error)
  end)

  it("fail a write with a value that cannot be encoded, naming it, and keep what was written", function()
    local st, atts = fan_state(path, 3)
    atts[2].application_id = "app-2"
    assert(st:save(true))
    atts[2].bad = function() end
    st:changed(atts[2])
    local ok, err = st:save(true)
    assert.is_nil(ok)
    assert.matches("^cannot write the state file's journal: .*function", err)
    assert.equals("app-2", on_disk(path).steps.fan.items["2"].attempts[1].application_id)
  end)

  it("append with async: written at once, its sync said by the handle it returns", function()
    local st, atts = fan_state(path, 5)
    assert(st:save(true, true)) -- (no journal yet: a whole write, no handle)
    atts[4].application_id = "app-4"
    st:changed(atts[4])
    local ok, what = st:save(true, true) -- the journal's first line is made with its sync
    assert.same({ true, "journal" }, { ok, what })
    atts[5].application_id = "app-5"
    st:changed(atts[5])
    local ok2, what2, sync = st:save(true, true)
    assert.same({ true, "journal" }, { ok2, what2 })
    assert.matches("^sync ", tostring(sync))
    assert.equals("app-5", on_disk(path).steps.fan.items["5"].attempts[1].application_id)
    assert.is_true(sync:wait())
  end)

  it("end an append's sync before anything else is written", function()
    local st, atts = fan_state(path, 5)
    assert(st:save(true))
    atts[1].application_id = "app-1"
    st:changed(atts[1])
    assert(st:save(true))
    atts[2].application_id = "app-2"
    st:changed(atts[2])
    local _, _, sync = st:save(true, true)
    assert(sync)
    atts[3].application_id = "app-3"
    assert(st:save()) -- whole: the journal goes, after the sync ended
    assert.is_true(sync:done())
    assert.is_nil(journal(path))
    local items = on_disk(path).steps.fan.items
    assert.same({ "app-1", "app-2", "app-3" }, { items["1"].attempts[1].application_id,
      items["2"].attempts[1].application_id, items["3"].attempts[1].application_id })
  end)

  it("mask a secret registered after an item's text was kept", function()
    local st, atts = fan_state(path, 3)
    local secret = "state-writes-secret-" .. core.getpid()
    atts[1].error = "the server said " .. secret
    assert(st:save(true))
    sanitize.add_secret(secret)
    assert(st:save(true))
    local text = util.read_file(path) .. (journal(path) or "")
    assert.is_nil(text:find(secret, 1, true))
    assert.matches("the server said %*%*%*", on_disk(path).steps.fan.items["1"].attempts[1].error)
  end)
end)

describe("a run killed with -9 after its submissions", function()
  local e, dir
  before_each(function()
    -- room for all 40 at once (each asks for 1 core and 1 GiB by default)
    e, dir = aeflow.workspace("aeflow-writes-run-", { ["s.sh"] = "sleep 30\n" },
      { "--quota-cores", "400", "--quota-memory", "400Gi" })
  end)
  after_each(function() aeflow.finish(e, dir) end)

  it("leaves every submitted application's id in the state file, and a resume submits none again", function()
    aeflow.write(dir, "wf.lua", [[
local items = {}
for i = 1, 40 do items[i] = i end
return workflow "killed" {
  step "fan" { for_each = items, submit = { application = "s.sh" } },
}]])
    local args = { "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.2", "--json" }
    local h = aeflow.spawn(args, { dir = dir, engine = e })
    local ids
    assert.truthy(engine.eventually(function()
      ids = {}
      for line in aeflow.read(h.out):gmatch("[^\n]+") do
        local ev = util.json_decode(line)
        if type(ev) == "table" and ev.event == "application_submitted" then ids[ev.item] = ev.application_id end
      end
      local n = 0
      for _ in pairs(ids) do n = n + 1 end
      return n == 40
    end, 60), "not all 40 submitted: " .. aeflow.read(h.err))
    -- the ids are saved within the writer's delay of their event
    assert.truthy(engine.eventually(function()
      local doc = state.read(dir .. "/s.json")
      if type(doc) ~= "table" then return false end
      for i = 1, 40 do
        local it = doc.steps.fan.items[tostring(i)]
        if not (it and it.attempts[1] and it.attempts[1].application_id == ids[i]) then return false end
      end
      return true
    end, 10), "the state file lacks submitted ids")
    core.kill(h.pid, "KILL")
    aeflow.wait(h)
    local listed = aeflow.applications(e)
    local states = {}
    for _, a in ipairs(listed) do states[#states + 1] = tostring(a.state) end
    assert.equals(40, #listed, table.concat(states, " ") .. "\n" .. aeflow.read(h.err))
    -- the applications end at once: the resume awaits them, sends nothing
    local c = engine.client(e)
    for _, id in pairs(ids) do c:delete_application(id) end
    args[#args + 1] = "--resume"
    local r = aeflow.spawn(args, { dir = dir, engine = e })
    aeflow.wait(r, 120)
    assert.equals(40, #aeflow.applications(e))
    assert.is_nil(aeflow.read(r.out):find('"application_submitted"', 1, true))
  end)
end)
