-- aeflow report: a real run (a retried step, a failure, a finally) with the
-- real binary against a real local engine, its report rendered by Debian's
-- chromium and checked by tidy.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")
local browser = require("helpers.browser")

local WORKFLOW = [[
return workflow "report-demo" {
  params = { who = "world" },
  step "runtime" { set_runtime = { spark_version = "3.5" } },
  step "flaky" { after = { "runtime" }, submit = { application = "once.sh" }, retries = 2, retry_delay = 0.1 },
  step "fan" { after = { "runtime" }, for_each = { "eu", "us" },
               submit = { application = "ok.sh", arguments = { "${item}" } } },
  step "broken" { after = { "flaky" }, submit = { application = "fail.sh" } },
  step "downstream" { after = { "broken", "fan" }, run = function() return 1 end },
  finally "cleanup" { run = function() return { cleaned = true } end },
}]]

-- The <tr> of a step (by its data-step) in a DOM dump, or nil.
local function step_row(dom, name)
  for row in dom:gmatch('<tr class="step"[^>]*>') do
    if row:find('data-step="' .. name .. '"', 1, true) then return row end
  end
end

describe("aeflow report", function()
  local e, dir, code, out, err, state
  setup(function()
    e = engine.start()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-report-"))
    aeflow.write(dir, "once.sh", "[ -f " .. dir .. "/marker ] && { echo second try; exit 0; }; touch " .. dir
      .. "/marker; echo first try fails >&2; exit 1\n")
    aeflow.write(dir, "ok.sh", "echo ok \"$@\"\n")
    aeflow.write(dir, "fail.sh", "echo failing >&2; exit 3\n")
    aeflow.write(dir, "wf.lua", WORKFLOW)
    code, out, err = aeflow.run({ "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.1",
                                   "--report", "run-report.html" }, { dir = dir, engine = e })
    state = util.json_decode(aeflow.read(dir .. "/s.json"))
  end)
  teardown(function()
    engine.stop(e)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("runs the workflow to a failure that still ran finally", function()
    assert.equals(1, code, out .. err)
    assert.equals("failed", state.steps.broken.status)
    assert.equals("succeeded", state.finally.cleanup.status)
    assert.equals(2, #state.steps.flaky.items["1"].attempts)
  end)

  it("records the graph, the engine's URL and application state times in the state file", function()
    assert.equals(6, #state.graph.steps)
    assert.equals(e.url, state.engine.url)
    assert.is_true(state.engine["local"])
    local att = state.steps.flaky.items["1"].attempts[1]
    assert.is_number(att.submitted_at)
    assert.equals("FAILED", att.states[#att.states].state)
    assert.is_nil(aeflow.read(dir .. "/s.json"):find(e.api_key, 1, true), "the API key is in the state file")
  end)

  it("writes the report at the end of the run with --report, even a failed one", function()
    local html = aeflow.read(dir .. "/run-report.html")
    assert.matches("<!DOCTYPE html>", html, 1, true)
    assert.matches('data-step="broken" data-status="failed"', html, 1, true)
  end)

  it("is self-contained: no scripts, no external references", function()
    local rc, o = aeflow.run({ "report", "s.json", "-o", "report.html" }, { dir = dir, engine = e })
    assert.equals(0, rc, o)
    local html = aeflow.read(dir .. "/report.html")
    assert.is_nil(html:find("<script", 1, true))
    assert.is_nil(html:find('src="http', 1, true))
    assert.is_nil(html:find("<link", 1, true))
    assert.is_nil(html:find(e.api_key, 1, true), "the API key is in the report")
  end)

  it("passes tidy -e without errors or warnings", function()
    aeflow.run({ "report", "s.json", "-o", "report.html" }, { dir = dir, engine = e })
    local rc, msgs = browser.tidy(dir .. "/report.html")
    assert.equals(0, rc, msgs)
  end)

  it("renders in chromium with a row and the state of every step", function()
    aeflow.run({ "report", "s.json", "-o", "report.html" }, { dir = dir, engine = e })
    local dom = browser.dump_dom("file://" .. dir .. "/report.html")
    assert.matches('data-status="succeeded"', step_row(dom, "runtime") or "", 1, true)
    assert.matches('data-status="succeeded"', step_row(dom, "flaky") or "", 1, true)
    assert.matches('data-status="succeeded"', step_row(dom, "fan") or "", 1, true)
    assert.matches('data-status="failed"', step_row(dom, "broken") or "", 1, true)
    assert.matches('data-status="skipped"', step_row(dom, "downstream") or "", 1, true)
    assert.matches('data-status="succeeded"', step_row(dom, "cleanup") or "", 1, true)
  end)

  it("shows the retried attempt, the failed application and their log links", function()
    aeflow.run({ "report", "s.json", "-o", "report.html" }, { dir = dir, engine = e })
    local dom = browser.dump_dom("file://" .. dir .. "/report.html")
    local first = state.steps.flaky.items["1"].attempts[1].application_id
    local second = state.steps.flaky.items["1"].attempts[2].application_id
    local failed = state.steps.broken.items["1"].attempts[1].application_id
    assert.matches('data-application="' .. first .. '" data-ending="failed"', dom, 1, true)
    assert.matches('data-application="' .. second .. '" data-ending="succeeded"', dom, 1, true)
    assert.matches('data-application="' .. failed .. '" data-ending="failed"', dom, 1, true)
    assert.matches('class="retry"', dom, 1, true)
    assert.matches(e.url .. "/engine/v1/applications/" .. failed .. "/logs?stream=stderr", dom, 1, true)
    -- The graph and the time line were drawn.
    assert.matches('<svg class="dag"', dom, 1, true)
    assert.matches('<svg class="timeline"', dom, 1, true)
  end)

  it("writes a screenshot under build/ for people to look at", function()
    aeflow.run({ "report", "s.json", "-o", "report.html" }, { dir = dir, engine = e })
    core.mkdir_p("build", 493)
    local path = (core.realpath("build") or "build") .. "/report.png"
    os.remove(path)
    browser.screenshot("file://" .. dir .. "/report.html", path)
    local png = aeflow.read(path)
    assert.is_true(#png > 10000, "screenshot too small: " .. #png .. " bytes")
    assert.equals("\137PNG", png:sub(1, 4))
  end)

  it("writes a Markdown summary with --format md", function()
    local rc, md = aeflow.run({ "report", "s.json", "--format", "md", "-o", "-" }, { dir = dir, engine = e })
    assert.equals(0, rc)
    assert.matches("| broken | submit | ❌ failed | 1 |", md, 1, true)
    assert.matches("| finally cleanup | run | ✅ succeeded | 1 |", md, 1, true)
    assert.matches("(retry)", md, 1, true)
  end)

  it("fails with a one-line message for a file that is not a state file", function()
    aeflow.write(dir, "nope.json", "{}")
    local rc, _, stderr = aeflow.run({ "report", "nope.json" }, { dir = dir, engine = e })
    assert.equals(1, rc)
    assert.matches("not an aeflow state file", stderr, 1, true)
  end)
end)

describe("aeflow graph --format svg|png", function()
  local dir
  setup(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-graph-"))
    aeflow.write(dir, "wf.lua", WORKFLOW)
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("renders SVG through Graphviz", function()
    local rc, svg, err = aeflow.run({ "graph", "wf.lua", "--format", "svg" }, { dir = dir })
    assert.equals(0, rc, err)
    assert.matches("<svg", svg, 1, true)
    assert.matches("downstream", svg, 1, true)
  end)

  it("renders PNG into -o FILE", function()
    local rc, _, err = aeflow.run({ "graph", "wf.lua", "--format", "png", "-o", "g.png" }, { dir = dir })
    assert.equals(0, rc, err)
    assert.equals("\137PNG", aeflow.read(dir .. "/g.png"):sub(1, 4))
  end)

  it("says in one line to install graphviz when dot is missing", function()
    local rc, _, err = aeflow.run({ "graph", "wf.lua", "--format", "svg" },
      { dir = dir, env = { "PATH=/nonexistent", "HOME=/tmp" } })
    assert.equals(1, rc)
    assert.matches("install the 'graphviz' package", err, 1, true)
    assert.equals(1, select(2, err:gsub("\n", "")))
  end)
end)
