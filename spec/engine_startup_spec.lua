-- The engine refuses a damaged state database at start with one line that
-- says what is wrong and what to do, and exit code 1: never a traceback.
local core = require "analytics_engine.core"
local helper = require "helpers.engine"

-- Run `aeflow serve` on dir (it exits at once on a bad database) -> output, exit code.
local function serve(dir)
  local p = assert(io.popen(("timeout 20 %s serve --quiet --no-jupyter --port 0 --data %s 2>&1; echo \"rc=$?\"")
    :format(helper.bin(), dir)))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), rc
end

local function fresh_dir()
  local e = helper.start({ "--no-jupyter" })
  helper.stop(e, true)
  return e
end

describe("engine start-up on a damaged state.db", function()
  it("names a dropped table in one line and exits 1", function()
    local e = fresh_dir()
    local db = assert(core.sqlite_open(e.data_dir .. "/state.db"))
    assert(db:exec("DROP TABLE applications"))
    db:close()
    local out, rc = serve(e.data_dir)
    helper.cleanup(e)
    assert.equal(1, rc)
    assert.equal(1, select(2, out:gsub("\n", "")), "not one line: " .. out)
    assert.matches("state%.db: table applications is missing; restore a backup or move the file away\n$", out)
    assert.is_nil(out:find("traceback", 1, true))
  end)

  it("names a missing column", function()
    local e = fresh_dir()
    local db = assert(core.sqlite_open(e.data_dir .. "/state.db"))
    assert(db:exec("DROP TABLE kernels; CREATE TABLE kernels (seq INTEGER PRIMARY KEY, id TEXT)"))
    db:close()
    local out, rc = serve(e.data_dir)
    helper.cleanup(e)
    assert.equal(1, rc)
    assert.matches("table kernels has no column state; restore a backup or move the file away\n$", out)
  end)

  it("says a file that is not a database is not one", function()
    local e = fresh_dir()
    os.remove(e.data_dir .. "/state.db-wal")
    os.remove(e.data_dir .. "/state.db-shm")
    local f = assert(io.open(e.data_dir .. "/state.db", "wb"))
    f:write(("not a database\n"):rep(400))
    f:close()
    local out, rc = serve(e.data_dir)
    helper.cleanup(e)
    assert.equal(1, rc)
    assert.equal(1, select(2, out:gsub("\n", "")), "not one line: " .. out)
    assert.matches("state%.db: file is not a database; restore a backup or move the file away\n$", out)
  end)
end)
