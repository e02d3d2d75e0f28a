local dsl = require("analytics_engine.workflow.dsl")
local plan = require("analytics_engine.workflow.plan")

local FIX = "spec/fixtures/workflows/"

local function from(src)
  return dsl.load_string(src, "t.lua")
end

local function has_line(text, line)
  for l in (text .. "\n"):gmatch("(.-)\n") do
    if l == line then return true end
  end
  return false
end

describe("plan order", function()
  local p = assert(dsl.load_file(FIX .. "valid_order.lua"))

  it("is topological, keeping declaration order among ready steps", function()
    assert.same({ "x", "a", "c", "b", "d" }, p.order)
  end)

  it("orders finally steps by their own after", function()
    assert.same({ "f1", "f2" }, p.finally_order)
  end)

  it("is declaration order when nothing depends on anything", function()
    local q = assert(from([[return workflow "w" {
      step "z" { delete_limits = true }, step "m" { delete_limits = true }, step "a" { delete_limits = true } }]]))
    assert.same({ "z", "m", "a" }, q.order)
  end)

  it("does not include finally steps", function()
    for _, name in ipairs(p.order) do assert.is_false(p.by_name[name].is_finally) end
  end)
end)

describe("plan cycles", function()
  it("are reported from the first declared step in the cycle, with its line", function()
    local _, err = dsl.load_file(FIX .. "cycle.lua")
    assert.equal(FIX .. "cycle.lua:3: cycle: a -> b -> c -> a", err)
  end)

  it("are found when the cycle is declared last", function()
    local _, err = from([[return workflow "w" {
      step "a" { delete_limits = true },
      step "x" { after = "y", delete_limits = true },
      step "y" { after = "x", delete_limits = true },
    }]])
    assert.equal("t.lua:3: cycle: x -> y -> x", err)
  end)

  it("among finally steps are reported too", function()
    local _, err = from([[return workflow "w" {
      step "a" { delete_limits = true },
      finally "f" { after = "g", stop_history_server = true },
      finally "g" { after = "f", stop_history_server = true },
    }]])
    assert.equal("t.lua:3: cycle: f -> g -> f", err)
  end)

  it("are not confused by a step that only depends on a cycle", function()
    local _, err = from([[return workflow "w" {
      step "tail" { after = "p", delete_limits = true },
      step "p" { after = "q", delete_limits = true },
      step "q" { after = "p", delete_limits = true },
    }]])
    assert.equal("t.lua:3: cycle: p -> q -> p", err)
  end)
end)

describe("plan references", function()
  it("allow outputs of a transitive ancestor", function()
    assert(from([[return workflow "w" {
      step "a" { submit = { application = "x.py" } },
      step "b" { after = "a", delete_limits = true },
      step "c" { after = "b", stop_application = "${outputs.a.application_id}" },
    }]]))
  end)

  it("let finally steps use outputs of any step", function()
    assert(from([[return workflow "w" {
      step "a" { submit = { application = "x.py" } },
      finally "f" { stop_application = "${outputs.a.application_id}" },
    }]]))
  end)

  it("reject a step using its own outputs", function()
    local _, err = from([[return workflow "w" {
      step "a" { submit = { application = "x.py", arguments = { "${outputs.a.application_id}" } } },
    }]])
    assert.equal('t.lua:2: step "a": uses outputs.a but does not come after it', err)
  end)

  it("reject ${item} inside for_each itself", function()
    local _, err = from([[return workflow "w" {
      step "a" { for_each = "${item}", delete_limits = true },
    }]])
    assert.equal('t.lua:2: step "a": for_each: uses ${item}, which exists only inside the loop', err)
  end)

  it("reject a for_each naming an unknown param", function()
    local _, err = from([[return workflow "w" {
      params = { regions = "eu,us" },
      step "a" { for_each = "${region}", delete_limits = true },
    }]])
    assert.equal("t.lua:3: step \"a\": uses ${region}, but 'region' is not a parameter (did you mean 'regions'?)", err)
  end)

  it("accept params.x and run_id", function()
    assert(from([[return workflow "w" {
      params = { day = "1" },
      step "a" { submit = { application = "x.py", arguments = { "${params.day}", "${run_id}" } } },
    }]]))
  end)

  it("reject a param named like a runner name", function()
    local _, err = from([[return workflow "w" { params = { item = "x" }, step "a" { delete_limits = true } }]])
    assert.equal([[t.lua:1: workflow "w": params.item: 'item' is reserved (the runner provides it)]], err)
  end)

  it("list the ancestors of a step", function()
    local p = assert(dsl.load_file(FIX .. "valid_order.lua"))
    assert.same({ a = true, b = true, c = true }, plan.ancestors(p, "d"))
  end)
end)

describe("plan.describe", function()
  local p = assert(dsl.load_file("workflows/nightly.lua", { date = "2026-11-24" }))
  local text = plan.describe(p)

  it("names the workflow and its params", function()
    assert.truthy(has_line(text, 'workflow "nightly" (workflows/nightly.lua:4)'))
    assert.truthy(has_line(text, 'params: date = "2026-11-24", spark_version = "3.4"'))
  end)

  it("lists the steps in order with their dependencies", function()
    assert.truthy(has_line(text,
      "  4. ingest (submit) after runtime, configs; retries 2 (backoff from 5s); timeout 30m"))
    assert.truthy(has_line(text, "  6. check (run) after reports"))
  end)

  it("shows the request a built-in action makes", function()
    assert.truthy(has_line(text, "       PUT /v4/analytics_engines/{instance_id}/default_runtime"))
    assert.truthy(has_line(text, "       PATCH /v4/analytics_engines/{instance_id}/default_configs"))
  end)

  it("shows a submit's POST then its polling", function()
    assert.matches("ingest %(submit%)[^\n]*\n       POST /v4/analytics_engines/{instance_id}/spark_applications\n"
      .. "       GET /v4/analytics_engines/{instance_id}/spark_applications %(poll until terminal%)", text)
  end)

  it("shows for_each as × N", function()
    assert.truthy(has_line(text, "  5. reports (submit × 3, at most 2 at a time) after ingest"))
  end)

  it("says a run step's requests are unknown", function()
    assert.truthy(has_line(text, "       Lua function (requests unknown until run)"))
  end)

  it("lists the finally steps after the steps", function()
    assert.matches("finally, after the steps whatever their outcome %(1%):\n"
      .. "  1%. stop history %(stop_history_server%)\n"
      .. "       DELETE /v4/analytics_engines/{instance_id}/spark_history_server", text)
  end)

  it("fills in the instance id and names the endpoint when given", function()
    local t = plan.describe(p, { url = "https://cpd.example.com", instance_id = "abc" })
    assert.truthy(has_line(t, "endpoint: https://cpd.example.com (instance abc)"))
    assert.truthy(has_line(t, "       PUT /v4/analytics_engines/abc/default_runtime"))
  end)

  it("shows for_each over a param, call paths and no polling for wait = false", function()
    local q = assert(dsl.load_file(FIX .. "valid_full.lua"))
    local t = plan.describe(q)
    assert.truthy(has_line(t, "  5. by param (submit × per item of ${regions}) after runtime"))
    assert.truthy(has_line(t, "       GET /v4/analytics_engines/{instance_id}/spark_applications/"
      .. "${outputs.ingest.application_id}"))
    assert.matches("does not await the application — load the day\n       POST [^\n]*\n  3%.", t)
    assert.truthy(has_line(t,
      "       GET /v4/analytics_engines/{instance_id}/spark_applications (poll until terminal)"))
  end)

  it("formats durations", function()
    assert.equal("1m30s", plan.format_duration(90))
    assert.equal("1h30m", plan.format_duration(5400))
    assert.equal("1d", plan.format_duration(86400))
    assert.equal("0s", plan.format_duration(0))
    assert.equal("2.5s", plan.format_duration(2.5))
  end)
end)

describe("plan.graph", function()
  local p = assert(dsl.load_file("workflows/nightly.lua"))

  it("draws a Graphviz digraph with the dependency edges", function()
    local dot = plan.graph(p, "dot")
    assert.matches('^digraph "nightly" {', dot)
    assert.truthy(has_line(dot, '  "runtime" -> "ingest";'))
    assert.truthy(has_line(dot, '  "configs" -> "ingest";'))
    assert.truthy(has_line(dot, '  "ingest" -> "reports";'))
    assert.truthy(has_line(dot, '  "reports" -> "check";'))
  end)

  it("labels nodes with name and action", function()
    local dot = plan.graph(p, "dot")
    -- A fan-out: one node with its count, drawn as a stack.
    assert.truthy(has_line(dot, '  "reports" [label=<<b>reports</b><br/><font point-size="9" color="#52606d">'
      .. 'submit × 3</font>>, peripheries=2];'))
  end)

  it("puts finally steps in a dashed cluster, after the last steps", function()
    local dot = plan.graph(p, "dot")
    assert.matches('subgraph cluster_finally {\n    label=<<i>finally</i>>; style="dashed,rounded"; color="#9aa5ab"; '
      .. 'fontcolor="#7b8794";\n    "stop history"', dot, 1, true)
    assert.truthy(has_line(dot, '  "check" -> "stop history" [style=dashed];'))
  end)

  it("draws in the report's palette and fonts", function()
    local dot = plan.graph(p, "dot")
    local css = require("analytics_engine.report.html").CSS
    local n = 0
    for color in dot:gmatch('"(#%x%x%x%x%x%x)"') do
      n = n + 1
      assert.truthy(css:find(color, 1, true), color .. " is not one of the report's colours")
    end
    assert.is_true(n >= 5)
    assert.truthy(css:find("Helvetica", 1, true) and dot:find('fontname="Helvetica"', 1, true))
    assert.truthy(has_line(dot, "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=11, nodesep=0.25, ranksep=0.5, "
      .. "pad=0.2, bgcolor=\"white\"];"), "left to right, as the report's DAG")
  end)

  it("draws Mermaid flowchart text", function()
    local m = plan.graph(p, "mermaid")
    assert.matches("^flowchart TD\n", m)
    -- ids follow sorted names: check, configs, history, ingest, reports, runtime, then stop history
    assert.truthy(has_line(m, '  s1["check<br/>run"]'))
    assert.truthy(has_line(m, "  s6 --> s4"))
    assert.truthy(has_line(m, "  s4 --> s5"))
    assert.truthy(has_line(m, "  s5 --> s1"))
    assert.truthy(has_line(m, "  s1 -.-> s7"))
  end)

  it("is deterministic whatever the declaration order", function()
    local a = assert(from([[return workflow "w" {
      step "a" { delete_limits = true }, step "b" { after = "a", delete_limits = true },
      step "c" { after = "a", delete_limits = true } }]]))
    local b = assert(from([[return workflow "w" {
      step "c" { after = "a", delete_limits = true }, step "b" { after = "a", delete_limits = true },
      step "a" { delete_limits = true } }]]))
    assert.equal(plan.graph(a, "dot"), plan.graph(b, "dot"))
    assert.equal(plan.graph(a, "mermaid"), plan.graph(b, "mermaid"))
  end)

  it("rejects an unknown format", function()
    local g, err = plan.graph(p, "svg")
    assert.is_nil(g)
    assert.equal("unknown graph format 'svg' (expected dot or mermaid)", err)
  end)
end)
