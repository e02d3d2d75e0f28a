-- Output a server cannot forge: escapes shown, the caller's credentials
-- masked, in every view (lines, NDJSON, live, summary, report, state file),
-- unit by unit and end to end against a hostile server.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local render = require("analytics_engine.workflow.render")
local report = require("analytics_engine.report")
local aeflow = require("helpers.aeflow")

local SECRET = "s3cr3t-t0ken-xyz"
local EVIL = "boom \27]0;pwned\7 \27[31mred\27[0m \194\155 2J Bearer " .. SECRET

local function sink()
  local buf = {}
  return { write = function(_, ...) for _, s in ipairs { ... } do buf[#buf + 1] = tostring(s) end end,
           flush = function() end, text = function() return table.concat(buf) end }
end

-- no OSC, no BEL, no C1, no secret; `allow_csi`: the live view's own cursor moves
local function assert_clean(text, allow_csi)
  assert.is_nil(text:find(SECRET, 1, true), "the secret leaked: " .. text)
  assert.is_nil(text:find("\27]", 1, true), "an OSC sequence got through")
  assert.is_nil(text:find("\7", 1, true), "a BEL got through")
  assert.is_nil(text:find("\194[\128-\159]"), "a C1 control got through")
  if not allow_csi then assert.is_nil(text:find("\27", 1, true), "an ESC got through") end
end

describe("every view of a run", function()
  setup(function() sanitize.add_secret(SECRET) end)

  local events = {
    { event = "run_start", run_id = "r1", workflow = "w", time = 1 },
    { event = "step_start", step = "a", action = "submit", time = 1 },
    { event = "retry", step = "a", item = 1, attempt = 1, delay = 1, error = EVIL, time = 1 },
    { event = "log", step = "a", message = EVIL, time = 1 },
    { event = "error", message = EVIL, time = 1 },
    { event = "application_submitted", step = "a", application_id = "app\27]0;x\7", attempt = 1, time = 1 },
    { event = "application", step = "a", application_id = "app\27]0;x\7", state = "RUNNING\27[2J", time = 1 },
    { event = "step_end", step = "a", status = "failed", error = EVIL, seconds = 1, time = 1 },
    { event = "run_end", run_id = "r1", status = "failed", seconds = 1, time = 1 },
  }

  it("lines", function()
    local out = sink()
    local emit = render.lines(out)
    for _, ev in ipairs(events) do emit(ev) end
    assert_clean(out.text())
    assert.truthy(out.text():find("boom \\x1b]0;pwned\\x07", 1, true))
  end)

  it("NDJSON", function()
    local out = sink()
    local emit = render.json(out)
    for _, ev in ipairs(events) do emit(ev) end
    assert_clean(out.text())
    for line in out.text():gmatch("[^\n]+") do assert.is_table(util.json_decode(line)) end
  end)

  it("the live view", function()
    local out = sink()
    local emit, tick = render.live(out, core.monotime, { width = 100 })
    for _, ev in ipairs(events) do emit(ev) end
    if tick then tick() end
    assert_clean(out.text(), true)
  end)

  it("the summary and the reports", function()
    local doc = { version = 1, run_id = "r1", workflow = "w\27]0;x\7", status = "failed", params = {},
                  started_at = 1, finished_at = 2, finally = {},
                  steps = { a = { status = "failed", error = EVIL, started_at = 1, finished_at = 2,
                                  items = { ["1"] = { status = "failed", error = EVIL,
                                                      attempts = { { n = 1, error = EVIL, result = "failed" } } } } } }
    }
    local plan = { order = { "a" }, by_name = { a = { name = "a", after = {} } }, finally = {}, steps = {} }
    assert_clean(render.summary(plan, doc))
    assert_clean(report.render(doc, "md"))
    assert_clean(report.render(doc, "html"))
  end)
end)

describe("a run against a hostile server", function()
  local proc, base, pid, dir
  setup(function()
    proc = assert(io.popen("exec python3 spec/helpers/hostile_server.py"))
    local line = proc:read("l") or ""
    local port
    port, pid = line:match("^PORT (%d+) PID (%d+)$")
    assert(port, "the hostile server did not start: " .. line)
    base = "http://127.0.0.1:" .. port
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-hostile-run-"))
    aeflow.write(dir, "wf.lua", [[
return workflow "hostile" {
  step "runtime" { set_runtime = { spark_version = "3.5" } },
  step "check" { run = function(ctx) ctx.log("token in a log line: ]] .. SECRET .. [[ \27]0;x\7") end },
}]])
  end)
  teardown(function()
    if pid then core.kill(tonumber(pid), "TERM") end
    if proc then proc:close() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  for _, mode in ipairs { "echo", "escape" } do
    it("(" .. mode .. "): nothing raw and no token in the output, the state file or the report", function()
      local env = aeflow.env(nil, { "AE_URL=" .. base .. "/" .. mode,
        "AE_INSTANCE_ID=8d8ecf1a-2826-49c1-88a6-9388bd1debd5", "AE_TOKEN=" .. SECRET })
      for _, extra in ipairs { {}, { "--json" } } do
        local args = { "run", "wf.lua", "--state", mode .. ".json", "--report", mode .. ".md" }
        for _, a in ipairs(extra) do args[#args + 1] = a end
        os.remove(dir .. "/" .. mode .. ".json")
        local code, out, err = aeflow.run(args, { dir = dir, env = env, timeout = 120 })
        assert.equals(1, code, out .. err)
        assert_clean(out)
        assert_clean(err)
        assert_clean(aeflow.read(dir .. "/" .. mode .. ".json"))
        assert_clean(aeflow.read(dir .. "/" .. mode .. ".md"))
        if mode == "echo" then assert.truthy((out .. err):find("Bearer ***", 1, true), out .. err) end
      end
    end)
  end
end)
