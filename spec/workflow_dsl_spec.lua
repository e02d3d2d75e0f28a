local dsl = require("analytics_engine.workflow.dsl")
local util = require("analytics_engine.util")

local FIX = "spec/fixtures/workflows/"

local function load(name, overrides)
  return dsl.load_file(FIX .. name .. ".lua", overrides)
end

local function names(steps)
  local t = {}
  for i, s in ipairs(steps) do t[i] = s.name end
  return t
end

describe("workflow examples in workflows/", function()
  it("nightly.lua loads", function()
    local p = assert(dsl.load_file("workflows/nightly.lua"))
    assert.equal("nightly", p.name)
    assert.same({ "runtime", "configs", "history", "ingest", "reports", "check" }, p.order)
    assert.equal("apps/ingest.py", p.by_name.ingest.args.application)
    assert.equal("function", type(p.by_name.check.args))
  end)

  it("seed_samples.lua sets the instance up before the three samples and stops the history server last", function()
    local p = assert(dsl.load_file("workflows/seed_samples.lua"))
    assert.same({ "runtime", "configs", "history configs", "history", "wordcount", "spark pi", "dataframe" },
      p.order)
    assert.same({ "history" }, p.by_name.wordcount.after)
    assert.equal("/opt/ibm/spark/examples/src/main/python/wordcount.py", p.by_name.wordcount.args.application)
    assert.same({ "/opt/ibm/spark/examples/src/main/resources/people.txt" }, p.by_name.wordcount.args.arguments)
    assert.equal("org.apache.spark.examples.SparkPi", p.by_name["spark pi"].args.class)
    assert.equal("/opt/ibm/spark/examples/jars/spark-examples*.jar", p.by_name["spark pi"].args.application)
    assert.same({ "1" }, p.by_name["spark pi"].args.arguments)
    assert.equal("/opt/ibm/spark/examples/src/main/r/dataframe.R", p.by_name.dataframe.args.application)
    assert.same({ ["spark.app.name"] = "R Application", ["spark.eventLog.enabled"] = "true" },
      p.by_name.dataframe.args.conf)
    assert.same({ "stop history" }, names(p.finally))
    assert.equal("stop_history_server", p.finally[1].action)
  end)

  it("fanout.lua runs 50 applications, 10 at a time", function()
    local p = assert(dsl.load_file("workflows/fanout.lua"))
    local s = p.by_name.sleepers
    assert.equal(50, #s.for_each)
    assert.equal(10, s.max_parallel)
    assert.equal("apps/sleep.sh", s.args.application)
    assert.equal("workflows", p.dir)
  end)

  it("failing.lua has a failing second step and a finally step", function()
    local p = assert(dsl.load_file("workflows/failing.lua"))
    assert.same({ "first", "second", "third" }, p.order)
    assert.equal("apps/fail.sh", p.by_name.second.args.application)
    assert.same({ "cleanup" }, names(p.finally))
  end)

  it("ships the apps the examples run", function()
    for _, f in ipairs({ "sleep.sh", "fail.sh", "ingest.py", "report.py" }) do
      assert.truthy(io.open("workflows/apps/" .. f), f)
    end
  end)
end)

describe("the plan shape", function()
  local p = assert(load("valid_full"))

  it("has the workflow's identity and options", function()
    assert.equal("full", p.name)
    assert.equal(FIX .. "valid_full.lua:4", p.where)
    assert.equal(FIX .. "valid_full.lua", p.file)
    assert.equal("spec/fixtures/workflows", p.dir)
    assert.equal(20, p.max_parallel)
    assert.equal("leave", p.on_cancel)
    assert.equal("all the options", p.description)
  end)

  it("keeps params with their types", function()
    assert.same({ date = "2026-11-24", spark_version = "3.4", days = 7, dry = false, regions = "eu,us" }, p.params)
  end)

  it("lists steps and finally steps apart, in declaration order", function()
    assert.same({ "runtime", "ingest", "wait ingest", "reports", "by param", "get", "check", "unset" }, names(p.steps))
    assert.same({ "stop history", "report" }, names(p.finally))
  end)

  it("indexes both kinds by name", function()
    assert.equal(p.steps[2], p.by_name.ingest)
    assert.equal(p.finally[1], p.by_name["stop history"])
  end)

  it("normalises every option of a step", function()
    local s = p.by_name.ingest
    assert.same({
      name = "ingest", where = FIX .. "valid_full.lua:9", is_finally = false, action = "submit",
      args = { application = "apps/ingest.py", arguments = { "${date}", "${params.days}" } },
      after = { "runtime" }, retries = 2, retry_delay = 10, timeout = 5400, on_timeout = "leave",
      continue_on_failure = true, wait = false, description = "load the day",
    }, s)
  end)

  it("fills in defaults", function()
    local s = p.by_name.runtime
    assert.same({
      name = "runtime", where = FIX .. "valid_full.lua:8", is_finally = false, action = "set_runtime",
      args = { spark_version = "${spark_version}" }, after = {}, retries = 0, retry_delay = 5,
      on_timeout = "stop", continue_on_failure = false, wait = true,
    }, s)
  end)

  it("leaves arguments untemplated", function()
    assert.same({ "${item}", "${index}", "${date}" }, p.by_name.reports.args.arguments)
  end)

  it("keeps for_each arrays and ${param} strings", function()
    assert.same({ "eu", "us", "apac" }, p.by_name.reports.for_each)
    assert.equal(2, p.by_name.reports.max_parallel)
    assert.equal("${regions}", p.by_name["by param"].for_each)
  end)

  it("keeps a run step's function as args", function()
    assert.equal("run", p.by_name.check.action)
    assert.equal("function", type(p.by_name.check.args))
  end)

  it("marks finally steps and parses numeric timeouts", function()
    local f = p.by_name.report
    assert.is_true(f.is_finally)
    assert.same({ "stop history" }, f.after)
    assert.equal(90, f.timeout)
  end)

  it("gives the file ae.null", function()
    assert.equal(util.null, p.by_name.unset.args["spark.driver.cores"])
  end)
end)

describe("invalid workflow files", function()
  local cases = {
    { "unknown_key", 3, [[step "ingest": unknown key 'retires' (did you mean 'retries'?)]] },
    { "no_action", 2, [[step "nothing": needs an action: one of await, create_cluster, create_kernel, ]]
      .. [[delete_cluster, delete_kernel, delete_limits, kernel, set_configs, set_limits, set_runtime, ]]
      .. [[start_history_server, stop_application, stop_history_server, submit, update_configs, call, run]] },
    { "two_actions", 3, [[step "both": has two actions: submit and run]] },
    { "bad_type", 2, [[step "ingest": retries: expected a non-negative integer, got "two"]] },
    { "bad_timeout", 2,
      [[step "slow": timeout: expected seconds or a duration like "30m" or "1h30m", got "soon"]] },
    { "bad_enum", 2, [[step "slow": on_timeout: expected one of "stop", "leave", got "kill"]] },
    { "submit_no_application", 2, [[step "ingest": submit.application: missing (expected a string)]] },
    { "submit_unknown_key", 2, [[step "ingest": submit: unknown key 'argument' (did you mean 'arguments'?)]] },
    { "bad_none", 2,
      [[step "stop": stop_history_server: expected {} or true (it takes no arguments), got a table]] },
    { "bad_id", 2, [[step "stop": stop_application: expected a string, got 42]] },
    { "run_not_function", 2, [[step "check": run: expected a function, got "print('hi')"]] },
    { "call_unknown_operation", 2,
      [[step "get": call.operation: expected the name of an operation in api.lua, got "get_instnace"]] },
    { "call_ids", 2, [[step "get": call.ids: get_application takes 1 id (application_id), got 0]] },
    { "duplicate", 4, [[step "a": duplicate name (first declared at ]] .. FIX .. [[duplicate.lua:2)]] },
    { "unknown_after", 3, [[step "ingest": after: no step named "runtim" (did you mean 'runtime'?)]] },
    { "cycle", 3, [[cycle: a -> b -> c -> a]] },
    { "self_cycle", 2, [[cycle: loop -> loop]] },
    { "finally_after_step", 3, [[finally "cleanup": after: "work" is not a finally step (a finally step may ]]
      .. [[only come after other finally steps; all steps run before any of them)]] },
    { "step_after_finally", 3,
      [[step "work": after: "cleanup" is a finally step (finally steps run after all steps)]] },
    { "workflow_unknown_key", 2, [[workflow "w": unknown key 'max_paralel' (did you mean 'max_parallel'?)]] },
    { "workflow_max_parallel", 1, [[workflow "w": max_parallel: expected a positive integer, got 0]] },
    { "bad_param", 1, [[workflow "w": params.regions: expected a string, number or boolean, got a table]] },
    { "bad_step_name", 3, [[step "a/b": the name must start with a letter or digit and hold only letters, ]]
      .. [[digits, spaces, _ . -]] },
    { "no_body", 3, [[step "b": has no body (write step "b" { ... })]] },
    { "not_a_step", 1, [[workflow "w": item 2 is not a step (write step "name" { ... }), got "b"]] },
    { "outputs_not_after", 4, [[step "stop": uses outputs.report but does not come after it]] },
    { "outputs_unknown_step", 2, [[step "stop": uses outputs.nope but there is no step "nope"]] },
    { "item_without_for_each", 2, [[step "report": uses ${item} but has no for_each]] },
    { "unknown_template_name", 3,
      [[step "report": uses ${dtae}, but 'dtae' is not a parameter (did you mean 'date'?)]] },
    { "max_parallel_without_for_each", 2, [[step "report": max_parallel: only meaningful with for_each]] },
    { "wait_not_submit", 2, [[step "limits": wait: only for submit steps]] },
    -- Lua's own messages for errors while loading
    { "syntax_error", 3, [['}' expected (to close '{' at line 1) near 'step']] },
    { "runtime_error", 3, [[attempt to index a nil value (local 'regions')]] },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. ".lua: " .. c[3]:sub(1, 50), function()
      local p, err = load(c[1])
      assert.is_nil(p)
      assert.equal(("%s%s.lua:%d: %s"):format(FIX, c[1], c[2], c[3]), err)
    end)
  end

  it("returns_nil.lua: says what the file must return", function()
    local _, err = load("returns_nil")
    assert.equal(FIX .. [[returns_nil.lua: the file must return workflow "name" { ... } (it returned nil)]], err)
  end)

  it("returns_table.lua: says what it returned instead", function()
    local _, err = load("returns_table")
    assert.equal(FIX .. [[returns_table.lua: the file must return workflow "name" { ... } (it returned a table)]],
      err)
  end)

  it("reports a missing file", function()
    local p, err = dsl.load_file(FIX .. "no_such_file.lua")
    assert.is_nil(p)
    assert.matches("no_such_file.lua: No such file", err, 1, true)
  end)

  it("keeps every message on one line", function()
    for _, c in ipairs(cases) do
      local _, err = load(c[1])
      assert.is_nil(err:find("\n"), c[1])
    end
  end)
end)

describe("params overrides", function()
  it("replace defaults", function()
    local p = assert(load("valid_full", { date = "2027-01-01" }))
    assert.equal("2027-01-01", p.params.date)
    assert.equal("3.4", p.params.spark_version)
  end)

  it("become numbers when the default is a number", function()
    local p = assert(load("valid_full", { days = "30" }))
    assert.equal(30, p.params.days)
  end)

  it("become booleans when the default is a boolean", function()
    local p = assert(load("valid_full", { dry = "true" }))
    assert.is_true(p.params.dry)
  end)

  it("reject a non-number for a number param", function()
    local _, err = load("valid_full", { days = "week" })
    assert.equal([[parameter 'days': expected a number, got "week"]], err)
  end)

  it("reject an undeclared param, listing the declared ones", function()
    local _, err = load("valid_full", { x = "1" })
    assert.equal("unknown parameter 'x' (the workflow declares: date, days, dry, regions, spark_version)", err)
  end)

  it("suggest the closest declared param", function()
    local _, err = load("valid_full", { dtae = "1" })
    assert.equal("unknown parameter 'dtae' (the workflow declares: date, days, dry, regions, spark_version) "
      .. "(did you mean 'date'?)", err)
  end)

  it("say when the workflow declares none", function()
    local _, err = dsl.load_string('return workflow "w" { step "a" { delete_limits = true } }', "w.lua", { x = "1" })
    assert.equal("unknown parameter 'x' (the workflow declares none)", err)
  end)
end)

describe("dsl.load_string", function()
  it("names errors after the chunk name", function()
    local _, err = dsl.load_string('return workflow "w" {\n  step "a" { retries = 1 },\n}', "inline.lua")
    assert.matches('^inline%.lua:2: step "a": needs an action', err)
  end)

  it("records file:line of each step, workflow and finally", function()
    local p = assert(dsl.load_string(table.concat({
      "",
      'return workflow "w" {',
      '  step "a" { delete_limits = true },',
      "",
      '  finally "z" { stop_history_server = true },',
      "}",
    }, "\n"), "dir/x.lua"))
    assert.equal("dir/x.lua:2", p.where)
    assert.equal("dir/x.lua:3", p.by_name.a.where)
    assert.equal("dir/x.lua:5", p.by_name.z.where)
    assert.equal("dir", p.dir)
  end)

  it("uses . as the directory of a bare file name", function()
    local p = assert(dsl.load_string('return workflow "w" { step "a" { delete_limits = true } }', "x.lua"))
    assert.equal(".", p.dir)
  end)

  it("accepts after as one string", function()
    local p = assert(dsl.load_string(
      'return workflow "w" { step "a" { delete_limits = true }, step "b" { after = "a", delete_limits = true } }',
      "x.lua"))
    assert.same({ "a" }, p.by_name.b.after)
  end)

  it("accepts durations in several forms", function()
    for text, secs in pairs({ ["90s"] = 90, ["30m"] = 1800, ["2h"] = 7200, ["1h30m"] = 5400, ["45"] = 45 }) do
      local p = assert(dsl.load_string(('return workflow "w" { step "a" { delete_limits = true, timeout = %q } }')
        :format(text), "x.lua"))
      assert.equal(secs, p.by_name.a.timeout, text)
    end
  end)

  it("loads the file without io, require or os.execute, but gives its run functions the standard library", function()
    local p = assert(dsl.load_string([[
      return workflow "w" { description = type(io) .. type(require) .. type(os.execute),
                            step "a" { run = function() return type(io) .. type(require) .. type(os.execute) end } }]],
      "x.lua"))
    assert.equal("nilnilnil", p.description)
    assert.equal("tablefunctionfunction", p.by_name.a.args())
  end)

  it("keeps the file's own globals out of the real ones", function()
    assert(dsl.load_string([[leaked_name = 1
      return workflow "w" { step "a" { delete_limits = true } }]], "x.lua"))
    assert.is_nil(rawget(_G, "leaked_name"))
  end)

  it("does not let the file change the real string library", function()
    assert(dsl.load_string([[string.upper = nil
      return workflow "w" { step "a" { delete_limits = true } }]], "x.lua"))
    assert.equal("function", type(string.upper))
  end)

  it("says when the workflow call lacks its body", function()
    local _, err = dsl.load_string('return workflow "w"', "x.lua")
    assert.equal([[x.lua: the file must return workflow "name" { ... } (it returned workflow "w" without its { ... })]],
      err)
  end)

  it("rejects a non-string workflow name", function()
    local _, err = dsl.load_string('return workflow(42) { step "a" { delete_limits = true } }', "x.lua")
    assert.equal([[x.lua:1: workflow "42": the name must be a string, got 42]], err)
  end)
end)
