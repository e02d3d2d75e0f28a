-- Quota-aware admission end to end: real `aeflow run`s against a real local
-- engine with a small quota. Nothing is ever QUEUED on the engine (its own
-- records say so), both runs finish, and submissions follow their intents.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

-- Every application's state history from the engine's own store.
local function engine_records(e)
  local db = assert(core.sqlite_open(e.data_dir .. "/state.db", { readonly = true }))
  local out = {}
  for doc in db:rows("SELECT doc FROM applications ORDER BY seq") do out[#out + 1] = util.json_decode(doc) end
  db:close()
  return out
end

-- Attempts of a state file, in the order they were submitted.
local function attempts(path)
  local doc = assert(state.read(path))
  local list = {}
  for _, rec in pairs(doc.steps) do
    for _, it in pairs(rec.items or {}) do
      for _, att in ipairs(it.attempts) do list[#list + 1] = att end
    end
  end
  table.sort(list, function(a, b)
    if a.intent_at ~= b.intent_at then return a.intent_at < b.intent_at end
    return a.wanted_at < b.wanted_at
  end)
  return list
end

local function events(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = assert(util.json_decode(line), "not JSON: " .. line) end
  return list
end

describe("admission", function()
  local e, dir, turns
  before_each(function()
    -- 3 default applications (driver 1 core 1G + one executor 1 core 1G) at a time.
    e = engine.start({ "--quota-cores", "6", "--quota-memory", "24Gi" })
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-adm-"))
    turns = dir .. "/turns"
  end)
  after_each(function()
    engine.stop(e)
    if not os.getenv("KEEP") then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local function env(extra)
    local list = { "AEFLOW_ADMISSION_DIR=" .. turns }
    for _, kv in ipairs(extra or {}) do list[#list + 1] = kv end
    return aeflow.env(e, list)
  end

  -- A fan-out of n default-sized applications in its own directory.
  local function fan(name, n, extra)
    local d = dir .. "/" .. name
    assert(core.mkdir_p(d, 448))
    aeflow.write(d, "slow.sh", "sleep 0.5\necho done\n")
    aeflow.write(d, "wf.lua", ([[
local items = {}
for i = 1, %d do items[i] = i end
return workflow "%s" {
  step "fan" { for_each = items, submit = { application = "slow.sh"%s } },
}]]):format(n, name, extra or ""))
    return d
  end

  local function spawn(d, more)
    local args = { "run", "wf.lua", "--json", "--poll-interval", "0.2", "--max-poll-interval", "0.5" }
    for _, a in ipairs(more or {}) do args[#args + 1] = a end
    return aeflow.spawn(args, { dir = d, env = env() })
  end

  it("two runs at once share a small quota: both finish, nothing QUEUED, intents in order", function()
    local da, db = fan("a", 5), fan("b", 5)
    local ha, hb = spawn(da), spawn(db)
    local ca, outa, erra = aeflow.wait(ha, 120)
    local cb, outb, errb = aeflow.wait(hb, 120)
    assert.equals(0, ca, outa .. erra)
    assert.equals(0, cb, outb .. errb)

    local recs = engine_records(e)
    assert.equals(10, #recs)
    local peak, live = 0, {}
    for _, r in ipairs(recs) do
      for _, t in ipairs(r.transitions) do
        assert.is_not.equals("QUEUED", t.state, "application " .. r.id .. " was queued by the engine")
      end
      assert.equals("FINISHED", r.state)
      live[#live + 1] = { at = r.transitions[1].time, d = 1 }
      live[#live + 1] = { at = r.finish_ts, d = -1 }
    end
    table.sort(live, function(x, y) return x.at < y.at or (x.at == y.at and x.d < y.d) end)
    local n = 0
    for _, ev in ipairs(live) do
      n = n + ev.d
      peak = math.max(peak, n)
    end
    assert.is_true(peak <= 3, "more live at once than the quota holds: " .. peak)

    -- Within a run: submitted in the order of the intents.
    local held = 0
    -- Each run keeps its record under .aeflow/runs/<workflow>/<run id>/.
    local function kept(d, name)
      local p = assert(io.popen("ls " .. d .. "/.aeflow/runs/" .. name .. "/*/state.json"))
      local path = p:read("l")
      p:close()
      return (assert(path, "no kept run of " .. name))
    end
    local states = { kept(da, "a"), kept(db, "b") }
    for _, path in ipairs(states) do
      local list = attempts(path)
      assert.equals(5, #list)
      for i = 2, #list do
        assert.is_true(list[i - 1].wanted_at <= list[i].wanted_at, "submitted out of intent order in " .. path)
      end
      for _, att in ipairs(list) do if att.held_at then held = held + 1 end end
    end
    assert.is_true(held >= 4, "10 applications into room for 3, yet only " .. held .. " held")

    -- Across runs: the waiting run got the next room in intent order: the
    -- oldest intent among those held always went first.
    local all = {}
    for _, path in ipairs(states) do
      for _, att in ipairs(attempts(path)) do all[#all + 1] = att end
    end
    table.sort(all, function(x, y)
      if x.intent_at ~= y.intent_at then return x.intent_at < y.intent_at end
      return x.wanted_at < y.wanted_at
    end)
    for i = 2, #all do
      if all[i].held_at and all[i - 1].held_at then
        assert.is_true(all[i - 1].wanted_at <= all[i].wanted_at + 0.05,
          ("an intent of %.3f went before one of %.3f"):format(all[i].wanted_at, all[i - 1].wanted_at))
      end
    end

    -- The phase shows in the events with its numbers.
    local saw = 0
    for _, ev in ipairs(events(outa .. outb)) do
      if ev.event == "application_held" then
        assert.equals("held for quota", ev.phase)
        assert.matches("^needs 2 cores / 2 GiB; ", ev.message)
        saw = saw + 1
      end
    end
    assert.is_true(saw >= 4, "held events: " .. saw)
  end)
  local function queued_ever()
    local n = 0
    for _, r in ipairs(engine_records(e)) do
      for _, t in ipairs(r.transitions) do
        if t.state == "QUEUED" then
          n = n + 1
          break
        end
      end
    end
    return n
  end

  it("says what can never fit before anything is sent, with the numbers", function()
    local d = fan("big", 2)
    aeflow.write(d, "wf.lua", [[
return workflow "big" {
  params = { n = "2" },
  step "configs" { update_configs = { ["spark.executor.memory"] = "4g" } },
  step "fan" { after = "configs", for_each = { 1, 2 },
               submit = { application = "slow.sh", conf = { ["spark.executor.instances"] = "${n}" } } },
}]])
    -- With the instances the param asks for: 1 + 2 × 1 = 3 cores, 1 + 2 × 4 = 9 GiB: fits.
    local code, out = aeflow.run({ "plan", "wf.lua", "--max-cores", "6", "--max-memory", "24Gi" }, { dir = d })
    assert.equals(0, code, out)
    assert.matches("fan: needs 3 cores / 9 GiB each, 2 applications; 2 at a time in 6 cores / 24 GiB: 1 wave", out,
      1, true)
    code, out = aeflow.run({ "plan", "wf.lua", "--json", "--max-cores", "4" }, { dir = d })
    assert.equals(0, code, out)
    local doc = assert(util.json_decode(out))
    assert.same({ cores = "4" }, doc.admission.limits)
    assert.same({ "fan: needs 3 cores / 9 GiB each, 2 applications; 1 at a time in 4 cores: 2 waves" },
      doc.admission.waves)
    -- 1 + 8 = 9 cores: more than the whole quota.
    code, out = aeflow.run({ "plan", "wf.lua", "--param", "n=8", "--online" }, { dir = d, env = env() })
    assert.equals(1, code, out)
    assert.matches("fan: CANNOT FIT: needs 9 cores / 33 GiB, more than the instance's whole limits of 6 cores / "
      .. "24 GiB", out, 1, true)
    local err
    code, out, err = aeflow.run({ "run", "wf.lua", "--param", "n=8" }, { dir = d, env = env() })
    assert.equals(1, code, out .. err)
    assert.matches("needs 9 cores / 33 GiB, more than the instance's whole limits of 6 cores / 24 GiB", out, 1, true)
    assert.equals(0, #engine_records(e), "an application was sent")
    local _, conf = engine.request(e, "GET", engine.v4(e, "/default_configs"))
    assert.is_nil(conf["spark.executor.memory"], "the configs step ran")
  end)

  it("shows held for quota in the lines, the report, and follows the AIMD window on 503s", function()
    local d = fan("lines", 5)
    local code, out, err = aeflow.run({ "run", "wf.lua", "--poll-interval", "0.2", "--max-poll-interval", "0.5",
                                        "--report", "r.md" }, { dir = d, env = env() })
    assert.equals(0, code, out .. err)
    assert.matches("admission: submissions wait for room in 6 cores / 24 GiB (resource_consumption_limits)", out, 1,
      true)
    assert.matches("item %d held for quota: needs 2 cores / 2 GiB; free 0 of 6 cores", out)
    assert.matches("item %d admitted after [%d.]+s held for quota", out)
    assert.matches("held [%d.]+s for quota", aeflow.read(d .. "/r.md"))
    assert.equals(0, queued_ever())
    -- The hold is part of the checked state file: a resume takes it and sends nothing again.
    code, out, err = aeflow.run({ "run", "wf.lua", "--resume" }, { dir = d, env = env() })
    assert.equals(0, code, out .. err)
    assert.equals(5, #engine_records(e))
  end)

  it("learns limits that shrink under a held submission (from the refusal) and that grow back", function()
    local d = fan("shrink", 6)
    aeflow.write(d, "slow.sh", "sleep 1\necho done\n")
    local h = spawn(d)
    local waited = false
    finally(function()
      if not waited then
        core.kill(h.pid, "KILL")
        core.wait(h.pid)
      end
    end)
    -- once the first wave runs (3 of 6), an editor cuts the limits below one application
    -- (all three started: one accepted but not started yet would be queued by the shrink itself)
    assert(engine.eventually(function()
      local running = 0
      for _, r in ipairs(engine_records(e)) do
        if r.state == "RUNNING" then running = running + 1 end
      end
      return running == 3
    end, 30), "the first wave did not start")
    local limits = engine.v4(e, "/resource_consumption_limits")
    assert.equals(200, (engine.request(e, "PUT", limits, { max_cores = "1", max_memory = "24Gi" })))
    -- the run must find out: it reads the limits again after a 503 (its
    -- cached ones are 5 minutes fresh), and keeps reading them while the next
    -- submission cannot fit at all; then they grow back
    local function limit_reads()
      local _, st = engine.request(e, "GET", "/engine/v1/stats")
      return st.requests.get_resource_consumption_limits or 0
    end
    local before = limit_reads()
    assert(engine.eventually(function() return limit_reads() > before end, 60),
      "the run never read the limits again after they shrank")
    assert(engine.eventually(function() return limit_reads() > before + 1 end, 60),
      "the run stopped reading the limits while nothing could fit")
    assert.equals(204, (engine.request(e, "DELETE", limits)))
    local code, out, err = aeflow.wait(h, 120)
    waited = true
    assert.equals(0, code, out .. err)
    local saw_shrink = false
    for _, ev in ipairs(events(out)) do
      if ev.event == "admission" and (ev.message or ""):find("room in 1 cores", 1, true) then saw_shrink = true end
    end
    assert.is_true(saw_shrink, "the run never learned that the limits shrank to 1 core:\n" .. out)
    assert.equals(6, #engine_records(e))
    assert.equals(0, queued_ever())
  end)

  it("backs off on 429/503 from the service and still submits everything once", function()
    engine.stop(e)
    e = engine.start({ "--quota-cores", "6", "--quota-memory", "24Gi", "--faults", "0.4", "--fault-kinds",
                       "429,503", "--fault-ops", "create_application", "--fault-seed", "3" })
    local d = fan("aimd", 6)
    local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.2",
                                        "--max-poll-interval", "0.5" }, { dir = d, env = env() })
    assert.equals(0, code, out .. err)
    local cuts = 0
    for _, ev in ipairs(events(out)) do
      if ev.event == "admission_rate" then
        cuts = cuts + 1
        assert.is_true(ev.window >= 1)
        -- the engine's injected 429 carries Retry-After: 1, its 503 none
        if ev.status == 429 then assert.equals(1, ev.retry_after) else assert.is_nil(ev.retry_after) end
      end
    end
    assert.is_true(cuts >= 1, "no admission_rate event under 40% 429/503s")
    assert.equals(6, #engine_records(e))
    assert.equals(0, queued_ever())
  end)

  it("--no-admission and admission = false send as they come (and the engine queues)", function()
    local d = fan("off", 6)
    local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--no-admission", "--poll-interval", "0.2" },
      { dir = d, env = env() })
    assert.equals(0, code, out .. err)
    assert.is_nil(out:find('"application_held"', 1, true))
    assert.is_true(queued_ever() >= 1, "6 applications into room for 3 and none queued")
    local d2 = fan("step_off", 6)
    aeflow.write(d2, "wf.lua", [[
local items = {}
for i = 1, 6 do items[i] = i end
return workflow "step_off" {
  step "fan" { for_each = items, admission = false, submit = { application = "slow.sh" } },
}]])
    code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.2" }, { dir = d2, env = env() })
    assert.equals(0, code, out .. err)
    assert.is_nil(out:find('"application_held"', 1, true))
  end)

  it("with no limits set, behaves as without admission", function()
    assert.equals(204, (engine.request(e, "DELETE", engine.v4(e, "/resource_consumption_limits"))))
    local d = fan("nolimits", 4)
    local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.2" }, { dir = d, env = env() })
    assert.equals(0, code, out .. err)
    assert.is_nil(out:find('"application_held"', 1, true))
    assert.equals(4, #engine_records(e))
    local said
    for _, ev in ipairs(events(out)) do
      if ev.event == "admission" then said = ev.message end
    end
    assert.matches("^no resource consumption limits to wait for %(404 ", said)
  end)
end)
