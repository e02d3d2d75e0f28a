-- The lock beside a state file, against a hostile directory: a symlink planted
-- at NAME.lock (a shared /tmp, a checked-out repo) must not make aeflow
-- truncate and overwrite the file it points to. Found by QA: it did.
local core = require("analytics_engine.core")
local aeflow = require("helpers.aeflow")

describe("the state file's lock", function()
  local dir
  setup(function() dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-lk-")) end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("core.lock_file refuses a symlink, naming it, and leaves its target alone", function()
    aeflow.write(dir, "victim.txt", "precious\n")
    os.execute("ln -s victim.txt '" .. dir .. "/x.lock'")
    local lock, err = core.lock_file(dir .. "/x.lock")
    assert.is_nil(lock)
    assert.matches("x.lock is a symbolic link %(refused", err)
    assert.equals("precious\n", aeflow.read(dir .. "/victim.txt"))
  end)

  it("aeflow run with NAME.lock a symlink: exit 2 before anything runs, the target untouched", function()
    aeflow.write(dir, "victim2.txt", "precious\n")
    aeflow.write(dir, "wf.lua", 'return workflow "w" { step "a" { delete_limits = true } }')
    os.execute("ln -s victim2.txt '" .. dir .. "/s.json.lock'")
    local code, out, err = aeflow.run({ "run", "wf.lua", "--state", "s.json" }, { dir = dir })
    assert.equals(2, code, out .. err)
    assert.matches("s.json.lock is a symbolic link", err)
    assert.equals(1, select(2, err:gsub("\n", "")), err)
    assert.equals("precious\n", aeflow.read(dir .. "/victim2.txt"))
    assert.is_nil(io.open(dir .. "/s.json"))
  end)

  it("a plain lock file is still taken and released", function()
    local lock = assert(core.lock_file(dir .. "/plain.lock"))
    assert(lock:write("{}"))
    lock:close()
    assert(core.lock_file(dir .. "/plain.lock")):close()
  end)
end)
