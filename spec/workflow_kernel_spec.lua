-- The `kernel` action end to end: the real aeflow binary runs a workflow
-- against a real local engine, which runs real kernels in the Jupyter Server
-- it starts. The kernel is deleted at the end however the step ends.
local util = require("analytics_engine.util")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

describe("aeflow run with a kernel step", function()
  local e, dir
  lazy_setup(function()
    e = engine.start()
    -- Start the engine's Jupyter Server now, so the steps below need not wait for it.
    local status = engine.request(e, "GET", engine.v4(e, "/jkg/api/kernelspecs"))
    assert(status == 200, "the engine's Jupyter Server did not start: " .. tostring(status))
  end)
  lazy_teardown(function() engine.stop(e) end)
  before_each(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-kernel-"))
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function run(args)
    return aeflow.run(args, { dir = dir, engine = e, timeout = 120 })
  end

  local function kernels_left()
    return engine.eventually(function()
      local status, list = engine.request(e, "GET", engine.v4(e, "/jkg/api/kernels"))
      return status == 200 and #list == 0
    end, 15)
  end

  local function outputs(step)
    local doc = assert(state.read(dir .. "/s.json"))
    return doc.steps[step].items["1"].outputs
  end

  it("executes the cells in order; their outputs are the step's, and later steps read them", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "explore" {
  step "compute" { kernel = { name = "python310", engine = { conf = { ["spark.eventLog.enabled"] = "true" } },
                              cells = { "x = 20", "print(x * 2)", "x + 22" } } },
  step "check" { after = { "compute" }, run = function(ctx)
    assert(ctx.outputs.compute.result == "42", "result " .. tostring(ctx.outputs.compute.result))
    return { ok = true }
  end },
}
]])
    local code, out, err = run { "run", "wf.lua", "--state", "s.json" }
    assert.equals(0, code, out .. err)
    local o = outputs("compute")
    assert.equals("42", o.result)
    assert.equals("40\n", o.stdout)
    assert.equals(3, #o.cells)
    assert.equals("40\n", o.cells[2].stdout)
    assert.is_true(util.is_uuid(o.kernel_id))
    assert.is_true(kernels_left())
  end)

  it("fails the step on a cell that raises, names the exception, and deletes the kernel", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "broken" {
  step "compute" { kernel = { name = "python3", cells = { "1 / 0", "print('never')" } } },
}
]])
    local code, out, err = run { "run", "wf.lua", "--state", "s.json" }
    assert.equals(1, code)
    assert.matches("ZeroDivisionError", out .. err, 1, true)
    assert.is_nil((out .. err):find("never", 1, true))
    assert.is_true(kernels_left())
  end)

  it("deletes the kernel when the step times out", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "stuck" {
  step "compute" { timeout = "2s", kernel = { name = "python3", cells = { "while True: pass" } } },
}
]])
    local code, out, err = run { "run", "wf.lua", "--state", "s.json" }
    assert.equals(1, code)
    assert.matches("timed out", out .. err, 1, true)
    assert.is_true(kernels_left())
  end)

  it("rejects a kernel step without cells when the file is loaded", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "nocells" {
  step "compute" { kernel = { name = "python3" } },
}
]])
    local code, out, err = run { "validate", "wf.lua" }
    assert.equals(2, code)
    assert.matches("kernel.cells", out .. err, 1, true)
  end)
end)
