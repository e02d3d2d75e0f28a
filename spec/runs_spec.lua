-- Runs are kept and listed: each run's record in its own directory, `runs`
-- lists them, `report` and `logs` default to the latest, `orphans` knows
-- every kept run, `runs --prune` removes old ones.
local util = require("analytics_engine.util")
local aeflow = require("helpers.aeflow")
local launcher = require("analytics_engine.engine.launcher")

local WF = [[
return workflow "kept" {
  params = { app = "ok.sh" },
  step "first" { submit = { application = "ok.sh" } },
  step "second" { after = "first", submit = { application = "${app}" } },
}
]]

describe("kept runs", function()
  local dir
  local function run(args, timeout)
    return aeflow.run(args, { dir = dir, env = aeflow.env(nil), timeout = timeout or 120 })
  end

  lazy_setup(function()
    dir = assert(launcher.temp_dir("aeflow-runs-"))
    aeflow.write(dir, "wf.lua", WF)
    aeflow.write(dir, "ok.sh", "echo fine\n")
    aeflow.write(dir, "bad.sh", "echo 'bad.sh: no input' >&2\nexit 2\n")
  end)
  lazy_teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  local ok_id, bad_id

  it("keeps each run under its own id and lists them newest first", function()
    local code = run { "run", "wf.lua", "--quiet", "--poll-interval", "0.1" }
    assert.equals(0, code)
    local out
    code, out = run { "run", "wf.lua", "--param", "app=bad.sh", "--poll-interval", "0.1" }
    assert.equals(1, code)
    bad_id = out:match("run (%x+) kept in")
    assert.is_string(bad_id)
    local list
    code, out = run { "runs", "--json" }
    assert.equals(0, code)
    list = util.json_decode(out)
    assert.equals(2, #list)
    assert.equals(bad_id, list[1].run_id)
    assert.equals("failed", list[1].status)
    assert.equals("succeeded", list[2].status)
    assert.equals("kept", list[2].workflow)
    ok_id = list[2].run_id
    for _, r in ipairs(list) do
      for _, f in ipairs { "state.json", "events.ndjson", "report.html" } do
        assert.truthy(util.read_file(dir .. "/" .. r.dir .. "/" .. f), r.dir .. "/" .. f)
      end
    end
    code, out = run { "runs" }
    assert.equals(0, code)
    assert.matches("WORKFLOW%s+RUN%s+STARTED%s+TOOK%s+RESULT\nkept%s+" .. bad_id .. "%s+[%d-]+ [%d:]+%s+%S+%s+failed\n"
      .. "kept%s+" .. ok_id .. ".-succeeded\n", out)
  end)

  it("reports and shows logs of the latest run by default, of any kept run by id", function()
    local code, out = run { "report", "-o", "-", "--format", "md" }
    assert.equals(0, code)
    assert.matches("bad.sh: no input", out, 1, true)
    code, out = run { "report", ok_id:sub(1, 5), "-o", "-", "--format", "md" }
    assert.equals(0, code)
    assert.matches("succeeded", out, 1, true)
    assert.is_nil(out:find("bad.sh", 1, true))
    local err
    code, out, err = run { "logs" }
    assert.equals(0, code, err)
    assert.equals("bad.sh: no input\n", out)
    assert.matches("step second of run kept " .. bad_id, err, 1, true)
  end)

  it("says a run had no failed application rather than showing an empty output unexplained", function()
    local code, out, err = run { "logs", "--run", ok_id }
    assert.equals(0, code, err)
    assert.equals("fine\n", out)
    assert.matches("run kept " .. ok_id .. " had no failed application", err, 1, true)
    assert.matches("stdout of its last application %x+%-[%x-]+ %(step second%)", err)
    assert.matches("aeflow logs APP_ID", err, 1, true)
    assert.equals(1, select(2, err:gsub("\n", "")))
  end)

  it("names the workflow asked for when it has no kept runs, and those that have", function()
    local code, out = run { "runs", "nosuchwf" }
    assert.equals(0, code)
    assert.matches("no kept runs of workflow 'nosuchwf' under .-%(runs are kept of: kept%)", out)
  end)

  it("finds no orphans among the applications of kept runs", function()
    local code, out, err = run { "orphans", "--json" }
    assert.equals(0, code, err)
    assert.equals("[]", out:match("^%s*(.-)%s*$"))
    -- a person is told; a script reading standard output gets nothing
    code, out, err = run { "orphans" }
    assert.equals(0, code, err)
    assert.equals("", out)
    assert.equals("no orphans\n", err)
  end)

  it("prints a Markdown report without -o and writes HTML to report.html", function()
    os.remove(dir .. "/report.md")
    os.remove(dir .. "/report.html")
    local code, out, err = run { "report", "--format", "md" }
    assert.equals(0, code, err)
    assert.matches("bad.sh: no input", out, 1, true)
    assert.matches("^#", out)
    assert.is_nil(util.read_file(dir .. "/report.md"), "report.md written instead of printed")
    code, out, err = run { "report" }
    assert.equals(0, code, err)
    assert.equals("report: report.html\n", out)
    assert.matches("<!DOCTYPE html>", util.read_file(dir .. "/report.html"), 1, true)
  end)

  it("prunes all but the newest runs", function()
    local code, out = run { "runs", "--prune", "1" }
    assert.equals(0, code)
    assert.matches("removed kept " .. ok_id, out, 1, true)
    code, out = run { "runs", "--json" }
    assert.equals(0, code)
    assert.equals(1, #util.json_decode(out))
    local _, err
    code, _, err = run { "report", ok_id, "-o", "-" }
    assert.equals(2, code)
    assert.matches("no kept run '" .. ok_id .. "'", err, 1, true)
    -- The pruned run's applications are not orphans (--stop would target them).
    code, out = run { "orphans", "--json" }
    assert.equals(0, code)
    assert.same({}, util.json_decode(out))
  end)
end)

describe("aeflow retry", function()
  local dir
  local function run(args)
    return aeflow.run(args, { dir = dir, env = aeflow.env(nil), timeout = 120 })
  end
  lazy_setup(function()
    dir = assert(launcher.temp_dir("aeflow-retry-"))
    aeflow.write(dir, "ok.sh", "echo fine\n")
    aeflow.write(dir, "flaky.sh", ("[ -f '%s/fixed' ] || { echo 'flaky.sh: not yet' >&2; exit 1; }\n"):format(dir))
    aeflow.write(dir, "wf.lua", [[
return workflow "repair" {
  step "first" { submit = { application = "ok.sh" } },
  step "fan" { after = "first", for_each = { "ok.sh", "flaky.sh" }, submit = { application = "${item}" } },
  step "then" { after = "fan", submit = { application = "ok.sh" } },
  finally "cleanup" { submit = { application = "ok.sh" } },
}
]])
  end)
  lazy_teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function attempts(doc, bucket, step, item)
    return #doc[bucket][step].items[tostring(item)].attempts
  end

  it("re-runs only what did not succeed, keeping the rest, and then has nothing to retry", function()
    local code, out = run { "run", "wf.lua", "--poll-interval", "0.1" }
    assert.equals(1, code)
    local id = out:match("run (%x+) kept in")
    local _, listed = run { "runs", "--json" }
    local path = dir .. "/" .. util.json_decode(listed)[1].dir .. "/state.json"
    local before = util.read_json_file(path)
    assert.equals("skipped", before.steps["then"].status)
    local first_app = before.steps.first.outputs.application_id
    aeflow.write(dir, "fixed", "")
    local err
    code, out, err = run { "retry", "--json", "--poll-interval", "0.1" }
    assert.equals(0, code, err)
    local submitted = {}
    for line in out:gmatch("[^\n]+") do
      local ev = util.json_decode(line)
      if ev.event == "application_submitted" then
        submitted[#submitted + 1] = ev.step .. "/" .. math.tointeger(ev.item)
      end
      assert.equals(id, ev.run_id)
    end
    table.sort(submitted)
    -- The flaky item, the skipped step and the finally step; not `first`, not the ok item.
    assert.same({ "cleanup/1", "fan/2", "then/1" }, submitted)
    local after = util.read_json_file(path)
    assert.equals("succeeded", after.status)
    assert.equals(first_app, after.steps.first.outputs.application_id)
    assert.equals(1, attempts(after, "steps", "first", 1))
    assert.equals(1, attempts(after, "steps", "fan", 1))
    assert.equals(2, attempts(after, "steps", "fan", 2))
    assert.equals(2, attempts(after, "finally", "cleanup", 1))
    assert.equals(1, after.retries)
    local t1 = after.steps.fan.items["2"].attempts[1].token
    local t2 = after.steps.fan.items["2"].attempts[2].token
    assert.is_not.equals(t1, t2)
    code, _, err = run { "retry", id }
    assert.equals(2, code)
    assert.matches("succeeded: nothing to retry", err, 1, true)
  end)
end)

describe("a kept run with --json", function()
  it("writes each event once to stdout and the same line to its events.ndjson", function()
    local dir = assert(launcher.temp_dir("aeflow-runs-json-"))
    aeflow.write(dir, "wf.lua", WF)
    aeflow.write(dir, "ok.sh", "echo fine\n")
    local code, out = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.1" },
                                 { dir = dir, env = aeflow.env(nil), timeout = 120 })
    assert.equals(0, code)
    local _, listed = aeflow.run({ "runs", "--json" }, { dir = dir, env = aeflow.env(nil), timeout = 60 })
    local run = util.json_decode(listed)[1]
    local file = assert(util.read_file(dir .. "/" .. run.dir .. "/events.ndjson"))
    assert.equals(out, file)
    local kinds = {}
    for line in out:gmatch("[^\n]+") do kinds[util.json_decode(line).event] = true end
    assert.is_true(kinds.run_start and kinds.application_submitted and kinds.run_end)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
