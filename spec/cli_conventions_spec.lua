-- aeflow's conventions: help after any verb, --json, no binary on a terminal,
-- and one local engine found by one rule, never left running unless asked.
local util = require("analytics_engine.util")
local core = require("analytics_engine.core")
local aeflow = require("helpers.aeflow")
local launcher = require("analytics_engine.engine.launcher")

local function tmpdir()
  return assert(launcher.temp_dir("aeflow-conv-"))
end

local function noenv(extra) return aeflow.env(nil, extra) end

local WF = [[
return workflow "conv" {
  step "ok" { submit = { application = "ok.sh" } },
  step "bad" { after = "ok", submit = { application = "bad.sh" } },
}
]]

describe("aeflow conventions", function()
  local dir
  lazy_setup(function()
    dir = tmpdir()
    aeflow.write(dir, "wf.lua", WF)
    aeflow.write(dir, "ok.sh", "echo fine\n")
    aeflow.write(dir, "bad.sh", "printf 'title \\033]0;pwned\\007 \\033[31mred\\n' >&2\n"
      .. "echo 'bad.sh: failing on purpose' >&2\nexit 3\n")
  end)
  lazy_teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("prints a verb's help with -h or --help anywhere after it", function()
    for _, verb in ipairs { "run", "logs", "call", "serve", "exec", "graph", "report", "orphans" } do
      local code, out = aeflow.run({ verb, "-h" }, { dir = dir, env = noenv() })
      assert.equals(0, code, verb)
      assert.matches("^usage: aeflow " .. verb, out)
    end
    local code, out = aeflow.run({ "run", "wf.lua", "--help" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.matches("^usage: aeflow run", out)
  end)

  it("names an unknown option and the verb, with a did-you-mean", function()
    local code, _, err = aeflow.run({ "plan", "wf.lua", "--frob" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.matches("aeflow: plan: unknown option '--frob'", err, 1, true)
    code, _, err = aeflow.run({ "run", "wf.lua", "--reprot", "r.html" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.matches("aeflow: run: unknown option '--reprot' (did you mean '--report'?)", err, 1, true)
    code, _, err = aeflow.run({ "rnu", "wf.lua" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.equals("aeflow: unknown command 'rnu' (did you mean 'run'?)\n", err)
  end)

  it("names an unknown global of a workflow file with a did-you-mean, at its line", function()
    aeflow.write(dir, "typo.lua", 'return workflow "t" {\n  stpe "a" { set_runtime = {} },\n}\n')
    local code, _, err = aeflow.run({ "validate", "typo.lua" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.equals("aeflow: typo.lua:2: unknown name 'stpe' (did you mean 'step'?)\n", err)
    aeflow.write(dir, "typo2.lua",
      'return workflow "t" {\n  step "a" { set_runtime = { spark_version = zzyzx } },\n}\n')
    code, _, err = aeflow.run({ "validate", "typo2.lua" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.equals("aeflow: typo2.lua:2: unknown name 'zzyzx'\n", err)
  end)

  it("prints data as one JSON document with --json", function()
    local code, out = aeflow.run({ "operations", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.equals(#require("analytics_engine.api").operations, #util.json_decode(out))
    code, out = aeflow.run({ "validate", "wf.lua", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.same({ file = "wf.lua", workflow = "conv", valid = true, steps = 2, finally = 0 },
      util.json_decode(out))
    code, out = aeflow.run({ "plan", "wf.lua", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    local doc = util.json_decode(out)
    assert.same({ "ok", "bad" }, doc.order)
    assert.matches("POST", doc.steps[1].requests[1], 1, true)
    code, out = aeflow.run({ "graph", "wf.lua", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.equals("bad", util.json_decode(out).steps[2].name)
  end)

  it("refuses to write PNG to a terminal", function()
    -- script(1) gives aeflow a real pseudo-terminal as standard output.
    local cmd = ("cd '%s' && script -qec \"'%s' graph wf.lua --format png\" /dev/null 2>&1"):format(dir,
      core.realpath(require("helpers.engine").bin()))
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    assert.matches("refusing to write PNG to a terminal", out, 1, true)
  end)

  it("uses one local engine for run, logs and call, and leaves none running", function()
    local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.1" },
      { dir = dir, env = noenv(), timeout = 120 })
    assert.equals(1, code, err)
    local bad, log_ev, bad_end
    for line in out:gmatch("[^\n]+") do
      local ev = util.json_decode(line)
      if ev.event == "application_submitted" and ev.step == "bad" then bad = ev.application_id end
      if ev.event == "application_log" then log_ev = ev end
      if ev.event == "step_end" and ev.step == "bad" then bad_end = ev end
    end
    assert.is_string(bad)
    -- Failure context: the end of its stderr in the events and in the step's error.
    assert.equals(bad, log_ev.application_id)
    assert.same({ "title \\x1b]0;pwned\\x07 \\x1b[31mred", "bad.sh: failing on purpose" }, log_ev.lines)
    assert.matches("ended FAILED %(return code 3%): bad%.sh: failing on purpose$", bad_end.error)
    -- The run's engine is gone...
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
    -- ...and `aeflow logs` right after the run reads the same engine's records.
    code, out, err = aeflow.run({ "logs", bad, "--stream", "stderr" }, { dir = dir, env = noenv() })
    assert.equals(0, code, err)
    assert.matches("bad.sh: failing on purpose\n$", out)
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
  end)

  it("shows why an application failed: in run's lines and in the report, escaped, with the engine gone", function()
    local code, out = aeflow.run({ "run", "wf.lua", "--poll-interval", "0.1", "--state", "lines.json",
                                   "--report", "r.md" }, { dir = dir, env = noenv(), timeout = 120 })
    assert.equals(1, code)
    assert.matches("\n    | bad.sh: failing on purpose\n", out, 1, true)
    assert.matches("title \\x1b]0;pwned\\x07 \\x1b[31mred", out, 1, true)
    assert.is_nil(out:find("\27", 1, true), "a raw escape reached the terminal")
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
    local md = aeflow.read(dir .. "/r.md")
    assert.matches("bad.sh: failing on purpose", md, 1, true)
    -- The report made again from the record alone (no engine running) still has it.
    local rc, html = aeflow.run({ "report", "lines.json", "-o", "-" }, { dir = dir, env = noenv() })
    assert.equals(0, rc)
    assert.matches('<tr class="attempt-log"', html, 1, true)
    assert.matches("bad.sh: failing on purpose", html, 1, true)
    assert.matches("title \\x1b]0;pwned\\x07", html, 1, true)
    assert.is_nil(html:find("\27", 1, true))
  end)

  it("keeps an engine only when asked: serve --background says so, serve --stop ends it", function()
    local code, out, err = aeflow.run({ "serve", "--background", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code, err)
    local info = util.json_decode(out)
    local running = launcher.find_running(dir .. "/.aeflow/engine")
    assert.is_table(running)
    assert.equals(info.url, running.url)
    -- Other verbs use it and leave it running.
    code, out = aeflow.run({ "call", "get_instance_default_runtime" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.equals("3.4", util.json_decode(out).spark_version)
    assert.is_table(launcher.find_running(dir .. "/.aeflow/engine"))
    code, out = aeflow.run({ "serve", "--stop", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code)
    assert.same({ stopped = true, url = info.url, pid = info.pid, data_dir = ".aeflow/engine" },
      util.json_decode(out))
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
  end)

  it("checks logs' --stream before looking anything up: one line, exit 2", function()
    local code, out, err = aeflow.run({ "logs", "--stream", "stdout2" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.equals("", out)
    assert.equals("aeflow: logs: --stream must be stdout or stderr, got 'stdout2'\n", err)
  end)

  it("prints help's own help with help -h, and help as JSON with help --json", function()
    for _, flag in ipairs { "-h", "--help" } do
      local code, out = aeflow.run({ "help", flag }, { dir = dir, env = noenv() })
      assert.equals(0, code, flag)
      assert.matches("^usage: aeflow help", out)
    end
    local code, out = aeflow.run({ "help", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code, out)
    local doc = util.json_decode(out)
    assert.matches("^usage: aeflow", doc.usage)
    local names = table.concat(doc.commands, " ")
    for _, verb in ipairs { "run", "runs", "logs", "help" } do assert.matches("%f[%w]" .. verb .. "%f[%W]", names) end
    code, out = aeflow.run({ "help", "runs", "--json" }, { dir = dir, env = noenv() })
    assert.equals(0, code, out)
    doc = util.json_decode(out)
    assert.equals("runs", doc.command)
    assert.matches("^usage: aeflow runs", doc.help)
    local err
    code, out, err = aeflow.run({ "help", "nope" }, { dir = dir, env = noenv() })
    assert.equals(2, code)
    assert.equals("", out)
    assert.matches("no command 'nope'", err, 1, true)
  end)

  it("takes --profile before the verb as after it", function()
    local env = noenv { "AE_CONFIG=" .. dir .. "/none.json" }
    for _, argv in ipairs { { "--profile", "nope", "call", "get_instance" },
                            { "--profile=nope", "call", "get_instance" } } do
      local code, _, err = aeflow.run(argv, { dir = dir, env = env })
      assert.equals(1, code, err)
      assert.is_nil(err:find("unknown command", 1, true), err)
      assert.truthy(err:find("nope", 1, true) or err:find("no service URL", 1, true), err)
    end
    local code, out = aeflow.run({ "--profile", "nope", "runs", "--json" }, { dir = dir, env = env })
    assert.equals(0, code, out)
    assert.is_table(util.json_decode(out))
    local err
    code, out, err = aeflow.run({ "--profile" }, { dir = dir, env = env })
    assert.equals("", out)
    assert.equals(2, code)
    assert.matches("--profile needs a value", err, 1, true)
  end)

  it("loads a verb's module only when that verb runs: --version and validate load no client or engine", function()
    -- Every verb a cli/ module defines is in the verb table (else it could not be run).
    local cli = require("analytics_engine.cli")
    local all = cli.commands()
    for _, m in ipairs { "call", "serve", "logs", "offline", "run", "report", "orphans", "exec", "runs", "retry" } do
      for verb, def in pairs(require("analytics_engine.cli." .. m)) do
        if type(def) == "table" and def.run then assert.equals(def, all[verb], verb) end
      end
    end
    -- In a fresh Lua: what main() loaded for each command.
    local script = dir .. "/loaded.lua"
    aeflow.write(dir, "loaded.lua", [[
local argv = { ... }
io.stdout:setvbuf("no")
local real = io.stdout
io.stdout = io.open("/dev/null", "w")
require("analytics_engine.cli").main(argv, "aeflow")
io.stdout = real
local names = {}
for name in pairs(package.loaded) do
  if name:find("^analytics_engine") then names[#names + 1] = name end
end
table.sort(names)
print(table.concat(names, " "))
]])
    local function loaded(...)
      local args = { ... }
      for i, a in ipairs(args) do args[i] = "'" .. a .. "'" end
      -- the plain build's core first: under check-asan the instrumented one needs the sanitizer
      -- runtime, which a child lua5.4 does not get
      local p = assert(io.popen(("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 %s %s 2>&1"):format(package.path,
        "build/?.so;" .. package.cpath, script, table.concat(args, " "))))
      local text = p:read("a")
      p:close()
      return " " .. text:gsub("\n", "") .. " "
    end
    local v = loaded("--version")
    for _, m in ipairs { "analytics_engine.client", "analytics_engine.engine.main", "analytics_engine.cli.run",
                         "analytics_engine.cli.offline", "analytics_engine.workflow.runner" } do
      assert.is_nil(v:find(" " .. m .. " ", 1, true), m .. " loaded by --version:" .. v)
    end
    local val = loaded("validate", dir .. "/wf.lua")
    assert.truthy(val:find(" analytics_engine.cli.offline ", 1, true), val)
    for _, m in ipairs { "analytics_engine.engine.main", "analytics_engine.cli.run", "analytics_engine.cli.serve",
                         "analytics_engine.workflow.runner", "analytics_engine.cli.logs" } do
      assert.is_nil(val:find(" " .. m .. " ", 1, true), m .. " loaded by validate:" .. val)
    end
  end)

  it("refuses a --profile that does not exist rather than falling back", function()
    local code, _, err = aeflow.run({ "call", "get_instance", "--profile", "nope" }, { dir = dir,
      env = noenv { "AE_CONFIG=" .. dir .. "/none.json" } })
    assert.equals(1, code)
    assert.truthy(err:find("nope", 1, true) or err:find("no service URL", 1, true), err)
  end)
end)
