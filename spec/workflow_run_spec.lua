-- aeflow run end to end: the real binary against a real local engine.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

-- (with its journal, when read during a run)
local function state_of(path)
  return state.read(path)
end

local function submitted_ids(path)
  local doc = state_of(path)
  local ids = {}
  if type(doc) ~= "table" then return ids end
  for _, rec in pairs(doc.steps or {}) do
    for _, it in pairs(rec.items or {}) do
      for _, att in ipairs(it.attempts) do
        if att.application_id then ids[#ids + 1] = att.application_id end
      end
    end
  end
  return ids
end

local function tokens_unique(apps)
  local seen = {}
  for _, a in ipairs(apps) do
    local tok = a.spark_application_name:match("#(aeflow%-.*)$")
    assert(tok, "application without a run token: " .. tostring(a.spark_application_name))
    assert(not seen[tok], "token submitted twice: " .. tok)
    seen[tok] = true
  end
  return seen
end

describe("aeflow run", function()
  local e, dir
  before_each(function()
    e, dir = aeflow.workspace("aeflow-wf-", { ["ok.sh"] = "echo ok \"$@\"\n",
                                              ["fail.sh"] = "echo failing >&2; exit 1\n" })
  end)
  after_each(function() aeflow.finish(e, dir) end)

  local function run(args, opts)
    opts = opts or {}
    opts.dir, opts.engine = dir, e
    return aeflow.run(args, opts)
  end

  it("runs a pipeline of runtime, configs, history server, submit and finally", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "basic" {
  params = { who = "world" },
  step "runtime" { set_runtime = { spark_version = "3.5" } },
  step "configs" { update_configs = { ["spark.driver.memory"] = "2G" } },
  step "history" { start_history_server = { cores = "1", memory = "1G" } },
  step "job" { after = { "runtime", "configs", "history" },
               submit = { application = "ok.sh", arguments = { "${who}" } } },
  finally "stop history" { stop_history_server = {} },
}]])
    local code, out = run { "run", "wf.lua", "--param", "who=lua" }
    assert.equals(0, code, out)
    local apps = aeflow.applications(e)
    assert.equals(1, #apps)
    assert.equals("FINISHED", apps[1].state)
    local _, rt = engine.request(e, "GET", engine.v4(e, "/default_runtime"))
    assert.equals("3.5", rt.spark_version)
    assert.equals(404, (engine.request(e, "GET", engine.v4(e, "/spark_history_server"))))
    local log = engine.request(e, "GET", "/engine/v1/applications/" .. apps[1].application_id .. "/logs")
    assert.equals(200, log)
    assert.matches("job%s+succeeded", out)
  end)

  it("passes outputs between steps and templating of the item", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "outputs" {
  step "a" { submit = { application = "ok.sh" } },
  step "b" { after = { "a" }, for_each = { "x", "y" },
             submit = { application = "ok.sh", arguments = { "${item}", "${outputs.a.application_id}" } } },
  step "check" { after = { "b" }, run = function(ctx)
    assert(#ctx.outputs.b == 2, "two outputs")
    for _, o in ipairs(ctx.outputs.b) do assert(o.return_code == "0") end
    return { first = ctx.outputs.a.application_id }
  end },
}]])
    local code, out, err = run { "run", "wf.lua" }
    assert.equals(0, code, out .. err)
    assert.equals(3, #aeflow.applications(e))
  end)

  it("limits a fan-out to max_parallel applications at once", function()
    aeflow.write(dir, "slow.sh", "echo start $(date +%s.%N) >> " .. dir .. "/times\nsleep 0.4\n"
      .. "echo end $(date +%s.%N) >> " .. dir .. "/times\n")
    aeflow.write(dir, "wf.lua", [[
local items = {}
for i = 1, 12 do items[i] = i end
return workflow "fan" {
  step "fan" { for_each = items, max_parallel = 3, submit = { application = "slow.sh" } },
}]])
    local code, out = run { "run", "wf.lua", "--poll-interval", "0.1" }
    assert.equals(0, code, out)
    local events = {}
    for kind, t in aeflow.read(dir .. "/times"):gmatch("(%a+) ([%d.]+)") do
      events[#events + 1] = { t = tonumber(t), d = kind == "start" and 1 or -1 }
    end
    table.sort(events, function(a, b) return a.t < b.t end)
    local now, peak = 0, 0
    for _, ev in ipairs(events) do
      now = now + ev.d
      peak = math.max(peak, now)
    end
    assert.equals(24, #events)
    assert.is_true(peak <= 3, "peak concurrency " .. peak)
    assert.is_true(peak >= 2, "no concurrency at all")
  end)

  it("skips dependents of a failed step, still runs finally, and exits 1", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "failing" {
  step "first" { submit = { application = "ok.sh" } },
  step "second" { after = { "first" }, submit = { application = "fail.sh" } },
  step "third" { after = { "second" }, submit = { application = "ok.sh" } },
  finally "cleanup" { run = function(ctx) local f = io.open("finally-ran", "w") f:write(ctx.run_id) f:close() end },
}]])
    local code, out = run { "run", "wf.lua", "--state", "s.json" }
    assert.equals(1, code)
    local st = state_of(dir .. "/s.json")
    assert.equals("succeeded", st.steps.first.status)
    assert.equals("failed", st.steps.second.status)
    assert.equals("skipped", st.steps.third.status)
    assert.equals("succeeded", st.finally.cleanup.status)
    assert.equals(st.run_id, aeflow.read(dir .. "/finally-ran"))
    assert.matches("return code 1", out)
    assert.equals(2, #aeflow.applications(e))
  end)

  it("continues past a failure marked continue_on_failure", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "tolerant" {
  step "flaky" { submit = { application = "fail.sh" }, continue_on_failure = true },
  step "after" { after = { "flaky" }, submit = { application = "ok.sh" } },
}]])
    local code = run { "run", "wf.lua" }
    assert.equals(0, code)
    assert.equals(2, #aeflow.applications(e))
  end)

  it("retries a failed step with a new attempt", function()
    aeflow.write(dir, "once.sh", "[ -f " .. dir .. "/marker ] && exit 0; touch " .. dir .. "/marker; exit 1\n")
    aeflow.write(dir, "wf.lua", [[
return workflow "retry" {
  step "flaky" { submit = { application = "once.sh" }, retries = 2, retry_delay = 0.1 },
}]])
    local code, out = run { "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.1" }
    assert.equals(0, code, out)
    local apps = aeflow.applications(e)
    assert.equals(2, #apps)
    tokens_unique(apps)
    local item = state_of(dir .. "/s.json").steps.flaky.items["1"]
    assert.equals(2, #item.attempts)
  end)

  it("stops a timed-out attempt before the retry is created", function()
    aeflow.write(dir, "hang.sh", "[ -f " .. dir .. "/marker ] && exit 0; touch " .. dir .. "/marker; sleep 60\n")
    aeflow.write(dir, "wf.lua", [[
return workflow "timeout" {
  step "slow" { submit = { application = "hang.sh" }, timeout = "1s", retries = 1, retry_delay = 0.1 },
}]])
    local code, out = run { "run", "wf.lua", "--poll-interval", "0.1" }
    assert.equals(0, code, out)
    local apps = aeflow.applications(e)
    assert.equals(2, #apps)
    local first, second = aeflow.application(e, apps[1].application_id), aeflow.application(e, apps[2].application_id)
    if aeflow.parse_time(first.creation_time) > aeflow.parse_time(second.creation_time) then
      first, second = second, first
    end
    assert.equals("STOPPED", first.state)
    assert.equals("FINISHED", second.state)
    assert.is_true(aeflow.parse_time(first.finish_time) <= aeflow.parse_time(second.creation_time),
      "the first attempt was still running when the second was created")
  end)

  it("prints NDJSON events with --json", function()
    aeflow.write(dir, "wf.lua", [[return workflow "j" { step "a" { submit = { application = "ok.sh" } } }]])
    local code, out = run { "run", "wf.lua", "--json" }
    assert.equals(0, code)
    local kinds = {}
    for line in out:gmatch("[^\n]+") do
      local ev = assert(util.json_decode(line), "not JSON: " .. line)
      kinds[ev.event] = true
    end
    for _, k in ipairs { "run_start", "step_start", "application_submitted", "step_end", "run_end" } do
      assert.is_true(kinds[k], k)
    end
  end)

  it("draws a live view on a terminal", function()
    aeflow.write(dir, "wf.lua", [[return workflow "tty" { step "a" { submit = { application = "ok.sh" } } }]])
    local bin = core.realpath(engine.bin())
    local env = table.concat(aeflow.env(e, { "TERM=xterm" }), " ")
    local cmd = ("cd '%s' && env -i %s script -qec '%s run wf.lua --poll-interval 0.1' /dev/null"):format(dir, env, bin)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("\r\27%[%d+A"), "no cursor movement in: " .. out)
    assert.truthy(out:find("\27%[K\r?\n"), "lines not cleared to their end in: " .. out)
    assert.matches("%[%+%] a%s+succeeded", out)
  end)

  it("rejects an invalid workflow with exit 2 and its file:line", function()
    aeflow.write(dir, "wf.lua", "return workflow \"bad\" {\n  step \"a\" { submit = { application = \"ok.sh\" } },\n"
      .. "  step \"b\" { after = { \"nope\" }, submit = { application = \"ok.sh\" } },\n}\n")
    local code, _, err = run { "run", "wf.lua" }
    assert.equals(2, code)
    assert.matches("wf.lua:3:", err)
    assert.equals(0, #aeflow.applications(e))
  end)

  it("resumes after kill -9 without submitting anything twice", function()
    aeflow.write(dir, "s1.sh", "sleep 1\n")
    aeflow.write(dir, "wf.lua", [[
local items = {}
for i = 1, 6 do items[i] = i end
return workflow "resumable" {
  step "fan" { for_each = items, max_parallel = 2, submit = { application = "s1.sh" } },
}]])
    local h = aeflow.spawn({ "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.1" },
      { dir = dir, engine = e })
    engine.eventually(function() return #submitted_ids(dir .. "/s.json") >= 3 end, 30)
    core.kill(h.pid, "KILL")
    aeflow.wait(h)
    local code, out = run { "run", "wf.lua", "--state", "s.json", "--resume", "--poll-interval", "0.1" }
    assert.equals(0, code, out)
    local apps = aeflow.applications(e)
    assert.equals(6, #apps)
    tokens_unique(apps)
    for _, a in ipairs(apps) do assert.equals("FINISHED", a.state) end
  end)

  it("cancels on SIGINT: stops its applications, runs finally, exits 130", function()
    aeflow.write(dir, "long.sh", "sleep 60\n")
    aeflow.write(dir, "wf.lua", [[
return workflow "cancel" {
  step "a" { submit = { application = "long.sh" } },
  step "b" { submit = { application = "long.sh" } },
  finally "mark" { run = function() io.open("finally-ran", "w"):close() end },
}]])
    local h = aeflow.spawn({ "run", "wf.lua", "--poll-interval", "0.1" }, { dir = dir, engine = e })
    engine.eventually(function()
      local running = 0
      for _, a in ipairs(aeflow.applications(e)) do
        if a.state == "RUNNING" then running = running + 1 end
      end
      return running == 2
    end, 30)
    core.kill(h.pid, "INT")
    local code = aeflow.wait(h, 60)
    assert.equals(130, code)
    for _, a in ipairs(aeflow.applications(e)) do assert.equals("STOPPED", a.state) end
    assert.is_not_nil(io.open(dir .. "/finally-ran"))
  end)

  it("says when the service stops answering and fails the waiting step after --unreachable-timeout", function()
    aeflow.write(dir, "s5.sh", "sleep 5\n")
    aeflow.write(dir, "wf.lua", [[
return workflow "gone" {
  step "a" { submit = { application = "s5.sh" } },
}]])
    local h = aeflow.spawn({ "run", "wf.lua", "--state", "s.json", "--json", "--poll-interval", "0.1",
                             "--max-poll-interval", "0.2", "--unreachable-timeout", "1.5" }, { dir = dir, engine = e })
    engine.eventually(function() return #submitted_ids(dir .. "/s.json") >= 1 end, 30)
    core.kill(e.pid, "KILL") -- the service vanishes mid-run
    local code, out = aeflow.wait(h, 60)
    assert.equals(1, code, out)
    local unreachable, submitted, step_end = 0, 0, nil
    for line in out:gmatch("[^\n]+") do
      local ev = util.json_decode(line)
      if ev.event == "service_unreachable" then
        unreachable = unreachable + 1
        assert.matches(e.url, ev.service, 1, true)
        assert.is_string(ev.error)
      elseif ev.event == "application_submitted" then
        submitted = submitted + 1
      elseif ev.event == "step_end" and ev.step == "a" then
        step_end = ev
      end
    end
    assert.equals(1, unreachable)  -- once, not once per round
    assert.equals(1, submitted)    -- never sent again
    assert.equals("failed", step_end.status)
    assert.matches("could not reach " .. e.url, step_end.error, 1, true)
    assert.matches("last error:", step_end.error, 1, true)
    assert.is_nil(step_end.error:find("\n"))
    local att = state_of(dir .. "/s.json").steps.a.items["1"].attempts
    assert.equals(1, #att)
    -- Left open (no result), with its application: a retry awaits it again.
    assert.is_nil(att[1].result)
    assert.is_string(att[1].application_id)
  end)

  it("plans without contacting anything", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "p" {
  step "rt" { set_runtime = { spark_version = "3.4" } },
  step "job" { after = { "rt" }, submit = { application = "ok.sh" } },
}]])
    local before = select(2, engine.request(e, "GET", "/engine/v1/stats"))
    local code, out = run { "plan", "wf.lua" }
    assert.equals(0, code)
    assert.matches("PUT /v4/analytics_engines/{instance_id}/default_runtime", out, 1, true)
    assert.matches("POST /v4/analytics_engines/{instance_id}/spark_applications", out, 1, true)
    local after = select(2, engine.request(e, "GET", "/engine/v1/stats"))
    before.requests.engine_stats, after.requests.engine_stats = nil, nil
    assert.same(before.requests, after.requests)
  end)
end)

-- Kill the runner `h` once step a's first attempt has its intent saved in
-- dir/s.json and the engine `e` holds the POST. The intent is on disk before
-- the POST leaves: kill only once the engine holds it (on a loaded machine
-- the kill could otherwise land between the two).
local function kill_after_intent(h, e, dir)
  engine.eventually(function()
    local st = state_of(dir .. "/s.json")
    local it = st and st.steps.a and st.steps.a.items["1"]
    return it and it.attempts[1] and it.attempts[1].intent_at
  end, 30)
  engine.eventually(function()
    local _, stats = engine.request(e, "GET", "/engine/v1/stats")
    return stats and (stats.requests.create_application or 0) >= 1
  end, 30)
  core.kill(h.pid, "KILL")
  aeflow.wait(h)
end

describe("aeflow run against a faulty engine", function()
  it("finds an application accepted before the runner died, lists it as an orphan, and adopts it on resume", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "delay" }
    local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-wf-"))
    finally(function() engine.stop(e); os.execute("rm -rf '" .. dir .. "'") end)
    aeflow.write(dir, "ok.sh", "exit 0\n")
    aeflow.write(dir, "wf.lua", [[return workflow "orph" { step "a" { submit = { application = "ok.sh" } } }]])
    local h = aeflow.spawn({ "run", "wf.lua", "--state", "s.json" }, { dir = dir, engine = e })
    kill_after_intent(h, e, dir)
    engine.eventually(function() return #aeflow.applications(e) == 1 end, 30)
    local code, out = aeflow.run({ "orphans", "--state", "s.json" }, { dir = dir, engine = e })
    assert.equals(0, code)
    local orphan_id = aeflow.applications(e)[1].application_id
    assert.matches(orphan_id, out, 1, true)
    code, out = aeflow.run({ "run", "wf.lua", "--state", "s.json", "--resume", "--poll-interval", "0.2",
                             "--submit-grace", "5" }, { dir = dir, engine = e })
    assert.equals(0, code, out)
    assert.matches("adopted application " .. orphan_id, out, 1, true)
    assert.equals(1, #aeflow.applications(e))
    code, out = aeflow.run({ "orphans", "--state", "s.json" }, { dir = dir, engine = e })
    assert.equals(0, code)
    assert.equals("", out)
  end)

  it("waits for a stalled submission after a crash instead of sending it again", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "delay", "--fault-ops", "create_application",
                             "--fault-delay", "4" }
    local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-wf-"))
    finally(function() engine.stop(e); os.execute("rm -rf '" .. dir .. "'") end)
    aeflow.write(dir, "ok.sh", "exit 0\n")
    aeflow.write(dir, "wf.lua", [[return workflow "stall" { step "a" { submit = { application = "ok.sh" } } }]])
    local h = aeflow.spawn({ "run", "wf.lua", "--state", "s.json" }, { dir = dir, engine = e })
    kill_after_intent(h, e, dir)
    -- Resume at once, while the engine still holds the first POST.
    local code, out = aeflow.run({ "run", "wf.lua", "--state", "s.json", "--resume", "--poll-interval", "0.2",
                                   "--submit-grace", "8" }, { dir = dir, engine = e })
    assert.equals(0, code, out)
    assert.matches("adopted application", out)
    assert.equals(1, #aeflow.applications(e))
  end)

  it("completes 100 applications under 20% injected faults with no duplicates", function()
    local e = engine.start { "--faults", "0.2", "--fault-kinds", "429,500,503,reset,reset-after",
                             "--fault-seed", "7" }
    local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-wf-"))
    finally(function() engine.stop(e); os.execute("rm -rf '" .. dir .. "'") end)
    aeflow.write(dir, "ok.sh", "exit 0\n")
    aeflow.write(dir, "wf.lua", [[
local items = {}
for i = 1, 100 do items[i] = i end
return workflow "chaos" {
  step "many" { for_each = items, max_parallel = 25, submit = { application = "ok.sh" },
                retries = 6, retry_delay = 0.05 },
}]])
    local code, out, err = aeflow.run({ "run", "wf.lua", "--poll-interval", "0.2", "--submit-grace", "3", "--quiet" },
      { dir = dir, engine = e, timeout = 300 })
    assert.equals(0, code, out .. err)
    local apps = aeflow.applications(e)
    local per_item = {}
    for _, a in ipairs(apps) do
      local item = a.spark_application_name:match("%-many%-(%d+)%-%d+$")
      per_item[item] = (per_item[item] or 0) + 1
    end
    local items = 0
    for item, n in pairs(per_item) do
      items = items + 1
      assert.equals(1, n, "item " .. item .. " was submitted " .. n .. " times")
    end
    assert.equals(100, items)
  end)
end)
