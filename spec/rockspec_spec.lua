-- The rock as users get it: `make rock` packs the versioned rockspec with
-- `luarocks pack`, `luarocks install` of that .src.rock into a fresh tree works
-- offline, and the installed `aeflow` runs from tree/bin with a clean
-- environment (env -i: no LUA_PATH, no `luarocks path`, no PATH).
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")
local shell = require("helpers.shell")

local sh, q = shell.ok, shell.quote

-- Runs a shell command; returns its success, and its stdout+stderr.
local function run(cmd)
  local out = os.tmpname()
  local ok = sh(cmd .. " >" .. q(out) .. " 2>&1")
  local text = util.read_file(out) or ""
  os.remove(out)
  return ok, text
end

describe("the rockspecs", function()
  local scm = assert(util.read_file("analytics-engine-scm-1.rockspec"))
  local rel = assert(util.read_file("analytics-engine-0.1.0-1.rockspec"))

  local function load_spec(text)
    local env = {}
    assert(load(text, "rockspec", "t", env))()
    return env
  end

  it("differ only in version and source (the release pins a tag)", function()
    local a, b = load_spec(scm), load_spec(rel)
    assert.equals("scm-1", a.version)
    assert.equals("0.1.0-1", b.version)
    assert.equals(a.source.url, b.source.url)
    assert.equals("v0.1.0", b.source.tag)
    a.version, b.version, a.source, b.source = nil, nil, nil, nil
    assert.same(a, b)
  end)

  it("build with the Makefile, whose module set follows the Lua version", function()
    local s = load_spec(scm)
    assert.equals("make", s.build.type)
    assert.equals("rock-build", s.build.build_target)
    assert.equals("rock-install", s.build.install_target)
    -- Honest about what each Lua gets.
    assert.truthy(s.description.detailed:find("Lua 5.1 / LuaJIT", 1, true))
    assert.truthy(s.description.detailed:find("the client only", 1, true))
    assert.same({ "lua >= 5.1, <= 5.4", "lua-cjson >= 2.1.0" }, s.dependencies)
  end)
end)

describe("the zsh completion", function()
  it("knows every verb and option the bash completion knows, and is valid zsh", function()
    local bash = assert(util.read_file("contrib/aeflow.bash"))
    local zsh = assert(util.read_file("contrib/_aeflow"))
    local words = {}
    for list in bash:gmatch('%-W "([^"$]*)"') do
      for w in list:gmatch("%S+") do words[w] = true end
    end
    for list in bash:gmatch('opts="([^"]*)"') do
      for w in list:gmatch("%S+") do words[w] = true end
    end
    for w in bash:gmatch("\n%s+(%-[%w|-]+)%)") do
      for o in w:gmatch("[^|]+") do words[o] = true end
    end
    assert.truthy(words.serve and words["--fault-delay"] and words["--examples-dir"])
    for w in pairs(words) do
      assert.truthy(zsh:find(w, 1, true), "contrib/_aeflow misses " .. w)
    end
    assert(sh("zsh -n contrib/_aeflow"), "contrib/_aeflow is not valid zsh")
  end)
end)

describe("the packed rock installed into a fresh tree", function()
  local dir, tree, rockdir

  local function aeflow(args)
    return run("cd " .. q(dir) .. " && env -i " .. q(tree .. "/bin/aeflow") .. " " .. args)
  end

  lazy_setup(function()
    dir = assert(launcher.temp_dir("ae-rock-spec-"))
    tree = dir .. "/tree"
    local ok, out = run("make --no-print-directory rock BUILD=" .. q(dir .. "/build"))
    assert(ok, "make rock failed: " .. out)
    local rock = dir .. "/build/rock/analytics-engine-0.1.0-1.src.rock"
    ok, out = run(("cd %s && luarocks --lua-version=5.4 --tree %s install --deps-mode=none %s")
      :format(q(dir), q(tree), q(rock)))
    assert(ok, "luarocks install failed: " .. out)
    rockdir = tree .. "/lib/luarocks/rocks-5.4/analytics-engine/0.1.0-1"
  end)

  lazy_teardown(function()
    if dir then
      run("cd " .. q(dir) .. " && env -i " .. q(tree .. "/bin/aeflow") .. " serve --stop --data .aeflow/engine")
      sh("rm -rf " .. q(dir))
    end
  end)

  it("has aeflow in tree/bin that finds its own tree", function()
    local ok, out = aeflow("--version")
    assert(ok, out)
    assert.matches("^aeflow 0%.1%.0 %(Lua 5%.4%)", out)
  end)

  it("installs the man page and the bash and zsh completions", function()
    assert.truthy(util.read_file(rockdir .. "/docs/aeflow.1"):find(".TH AEFLOW", 1, true))
    local bash = util.read_file(rockdir .. "/contrib/aeflow.bash")
    assert.truthy(bash:find("complete -o filenames -F _aeflow aeflow", 1, true))
    assert.truthy(util.read_file(rockdir .. "/contrib/_aeflow"):find("#compdef aeflow", 1, true))
    local ok, out = run("luarocks --lua-version=5.4 --tree " .. q(tree) .. " show --rock-dir analytics-engine")
    assert(ok, out)
    assert.equals(rockdir, (out:gsub("%s+$", "")))
  end)

  it("validates, runs a pipeline on a local engine and writes its report", function()
    local wf = rockdir .. "/workflows/seed_samples.lua"
    local ok, out = aeflow("validate " .. q(wf))
    assert(ok, out)
    assert.matches("is valid", out)
    ok, out = aeflow("run --state st.json " .. q(wf))
    assert(ok, out)
    assert.matches("run %x+: succeeded", out)
    assert.matches("wordcount%s+succeeded.-FINISHED rc=0", out)
    ok, out = aeflow("report -o report.html st.json")
    assert(ok, out)
    local html = assert(util.read_file(dir .. "/report.html"))
    assert.truthy(html:find("seed samples", 1, true))
    assert.truthy(html:find("wordcount", 1, true))
  end)

  it("says in one line what is wrong with a bad workflow", function()
    local f = assert(io.open(dir .. "/bad.lua", "w"))
    f:write("steps = 42\n")
    f:close()
    local ok, out = aeflow("validate bad.lua")
    assert.is_false(ok)
    assert.is_nil(out:find("traceback", 1, true), out)
    assert.matches("bad%.lua", out)
  end)
end)
