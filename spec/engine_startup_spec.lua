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

-- A data directory an engine made and left, damaged by damage(dir), then
-- served -> output, exit code.
local function serve_damaged(damage)
  local e = helper.start({ "--no-jupyter" })
  helper.stop(e, true)
  damage(e.data_dir)
  local out, rc = serve(e.data_dir)
  helper.cleanup(e)
  return out, rc
end

-- The same, damaged by running `sql` on its state.db.
local function serve_after_sql(sql)
  return serve_damaged(function(dir)
    local db = assert(core.sqlite_open(dir .. "/state.db"))
    assert(db:exec(sql))
    db:close()
  end)
end

describe("engine start-up on a damaged state.db", function()
  it("names a dropped table in one line and exits 1", function()
    local out, rc = serve_after_sql("DROP TABLE applications")
    assert.equal(1, rc)
    assert.equal(1, select(2, out:gsub("\n", "")), "not one line: " .. out)
    assert.matches("state%.db: table applications is missing; restore a backup or move the file away\n$", out)
    assert.is_nil(out:find("traceback", 1, true))
  end)

  it("names a missing column", function()
    local out, rc = serve_after_sql("DROP TABLE kernels; CREATE TABLE kernels (seq INTEGER PRIMARY KEY, id TEXT)")
    assert.equal(1, rc)
    assert.matches("table kernels has no column state; restore a backup or move the file away\n$", out)
  end)

  it("says a file that is not a database is not one", function()
    local out, rc = serve_damaged(function(dir)
      helper.remove_db(dir .. "/state.db")
      helper.write(dir .. "/state.db", ("not a database\n"):rep(400))
    end)
    assert.equal(1, rc)
    assert.equal(1, select(2, out:gsub("\n", "")), "not one line: " .. out)
    assert.matches("state%.db: file is not a database; restore a backup or move the file away\n$", out)
  end)
end)
