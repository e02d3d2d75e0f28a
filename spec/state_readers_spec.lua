-- Every reader of a state file (--resume, aeflow report, aeflow orphans) checks
-- its schema: a malformed file is one line naming the file and the field, never
-- a traceback, `table: 0x…`, or (orphans) a run whose applications all look
-- orphaned. Found by QA: report and orphans read state files unchecked.
local util = require("analytics_engine.util")
local state = require("analytics_engine.workflow.state")
local aeflow = require("helpers.aeflow")
local engine = require("helpers.engine")

local GOOD = {
  version = 1, run_id = "abcd1234", workflow = "st", status = "succeeded", params = {}, finally = {},
  engine = { ["local"] = false, url = "http://127.0.0.1:1", instance_id = "x" },
  steps = { a = { status = "succeeded", items = { ["1"] = { status = "succeeded", attempts = {
    { n = 1, token = "aeflow-abcd1234-a-1-1", application_id = "app-1", state = "FINISHED", result = "succeeded",
      submitted_at = 1, states = { { at = 1, state = "FINISHED" } },
      log_tail = { stream = "stderr", lines = { "x" } } },
  } } } } },
}

local function with(patch)
  local d = util.json_decode(util.json_encode(GOOD))
  patch(d)
  return d
end

local function item(d) return d.steps.a.items["1"] end
local function attempt(d) return item(d).attempts[1] end

local CASES = {
  { "resumes as text", function(d) d.resumes = "3" end, "resumes: expected a whole number" },
  { "items as a number", function(d) d.steps.a.items = 7 end, "steps.a.items: expected an object, got the number 7" },
  { "items as null", function(d) d.steps.a.items = util.null end, "steps.a.items: expected an object, got null" },
  { "an item key that is not a number", function(d) d.steps.a.items.abc = item(d) end,
    "steps.a.items.abc: expected an item number (1, 2, ...), got the string \"abc\"" },
  { "an item key below 1", function(d) d.steps.a.items["-1"] = item(d) end,
    "steps.a.items.-1: expected an item number" },
  { "run_id as an object", function(d) d.run_id = { x = 1 } end, "run_id: expected a run id" },
  { "a step status as an object", function(d) d.steps.a.status = { x = 1 } end, "steps.a.status: expected one of" },
  { "an application state as an object", function(d) attempt(d).state = { x = 1 } end,
    "steps.a.items.1.attempts[1].state: expected a string, got an object" },
  { "submitted_at as text", function(d) attempt(d).submitted_at = "now" end,
    "steps.a.items.1.attempts[1].submitted_at: expected a number" },
  { "a state change without its time", function(d) attempt(d).states[1].at = "x" end,
    "steps.a.items.1.attempts[1].states[1].at: expected a number" },
  { "log lines as an object", function(d) attempt(d).log_tail.lines = { x = 1 } end,
    "steps.a.items.1.attempts[1].log_tail.lines: expected an array" },
  { "the engine as text", function(d) d.engine = "local" end, "engine: expected an object, got the string \"local\"" },
  { "finally as an array", function(d) d.finally = { 1, 2 } end, "finally: expected an object, got an array" },
  { "a negative whole number shown as written", function(d) attempt(d).n = -5 end,
    "steps.a.items.1.attempts[1].n: expected a whole number, got the number -5" },
}

describe("state.read", function()
  it("takes a well-formed state file", function()
    assert.is_nil(state.check(util.json_decode(util.json_encode(GOOD))))
  end)

  it("takes the server's null for an application's state and return code", function()
    local d = with(function(x) attempt(x).state, attempt(x).return_code = util.null, util.null end)
    assert.is_nil(state.check(util.json_decode(util.json_encode(d))))
  end)
  for _, c in ipairs(CASES) do
    it("names the field of " .. c[1], function()
      local msg, field = state.check(util.json_decode(util.json_encode(with(c[2]))))
      assert.is_string(msg)
      local line = field .. ": " .. msg
      assert.truthy(line:find(c[3], 1, true), line)
    end)
  end
end)

describe("aeflow report and orphans on a malformed state file", function()
  local dir, e
  setup(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sr-"))
    e = engine.start()
  end)
  teardown(function()
    engine.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  for _, c in ipairs(CASES) do
    it("report with " .. c[1] .. ": exit 1, one line naming the file and field", function()
      local text = util.json_encode(with(c[2]))
      aeflow.write(dir, "bad.json", text)
      local code, out, err = aeflow.run({ "report", "bad.json", "-o", "r.html" }, { dir = dir })
      assert.equals(1, code, out .. err)
      assert.matches("^aeflow: report: bad.json: ", err)
      assert.truthy(err:find(c[3], 1, true), err)
      assert.equals(1, select(2, err:gsub("\n", "")), err)
      assert.is_nil((out .. err):find("table: 0x", 1, true))
      assert.is_nil(io.open(dir .. "/r.html"))
      assert.equals(text, aeflow.read(dir .. "/bad.json"))
    end)
  end

  it("orphans with a malformed, missing or non-JSON state file: exit 2 naming it, nothing listed or stopped",
    function()
      aeflow.write(dir, "bad.json", util.json_encode(with(CASES[2][2])))
      aeflow.write(dir, "nojson.json", "{ nope")
      for _, f in ipairs { "bad.json", "nojson.json", "missing.json" } do
        local code, out, err = aeflow.run({ "orphans", "--state", f, "--stop" }, { dir = dir, engine = e })
        assert.equals(2, code, out .. err)
        assert.equals("", out)
        assert.matches("^aeflow: orphans: [^\n]*" .. f:gsub("%.", "%%."), err)
        assert.equals(1, select(2, err:gsub("\n", "")), err)
        assert.is_nil(err:find("traceback", 1, true))
      end
    end)

  it("report and orphans on /dev/zero: one line, not all the memory", function()
    local code, _, err = aeflow.run({ "report", "/dev/zero", "-o", "r.html" }, { dir = dir, timeout = 30 })
    assert.equals(1, code, err)
    assert.equals("aeflow: report: /dev/zero is not an aeflow state file (a character device, not a regular file)\n",
      err)
    code, _, err = aeflow.run({ "orphans", "--state", "/dev/zero" }, { dir = dir, engine = e, timeout = 30 })
    assert.equals(2, code, err)
    assert.matches("^aeflow: orphans: /dev/zero is not an aeflow state file", err)
  end)

  it("--resume of a malformed or missing state file: refused before any engine is started or contacted", function()
    aeflow.write(dir, "wf.lua", 'return workflow "st" { step "a" { delete_limits = true } }')
    aeflow.write(dir, "bad.json", util.json_encode(with(CASES[2][2])))
    local code, _, err = aeflow.run({ "run", "wf.lua", "--state", "bad.json", "--resume" }, { dir = dir })
    assert.equals(2, code, err)
    assert.equals("aeflow: cannot resume: bad.json: steps.a.items: expected an object, got the number 7\n", err)
    assert.is_nil(io.open(dir .. "/.aeflow/engine/engine.json"))
    code, _, err = aeflow.run({ "run", "wf.lua", "--state", "nothere.json", "--resume" }, { dir = dir })
    assert.equals(2, code, err)
    assert.equals("aeflow: cannot resume: nothere.json: No such file or directory\n", err)
  end)

  it("orphans with a good state file still lists what it does not know", function()
    aeflow.write(dir, "good.json", util.json_encode(GOOD))
    local code, out, err = aeflow.run({ "orphans", "--state", "good.json" }, { dir = dir, engine = e })
    assert.equals(0, code, out .. err)
  end)
end)
