-- The engine refuses a damaged state database at start with one line that
-- says what is wrong and what to do, and exit code 1: never a traceback.
local core = require("analytics_engine.core")
local helper = require("helpers.engine")
local util = require("analytics_engine.util")

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

-- The admin's key: a damaged credentials.json or users.json made a new key
-- at start, silently, and every client of the old one got a bare 401.
describe("engine start-up on damaged credentials", function()
  local function one_line(out, rc)
    assert.equal(1, rc, out)
    assert.equal(1, select(2, out:gsub("\n", "")), "not one line: " .. out)
    assert.is_nil(out:find("traceback", 1, true))
  end

  it("names a credentials.json that is not JSON, says what to do, and leaves the file as it was", function()
    local e = helper.start({ "--no-jupyter" })
    helper.stop(e, true)
    helper.write(e.data_dir .. "/credentials.json", "{bad")
    local out, rc = serve(e.data_dir)
    local kept = util.read_file(e.data_dir .. "/credentials.json")
    helper.cleanup(e)
    one_line(out, rc)
    assert.matches("credentials%.json: damaged %(not JSON with the admin's api_key%); restore it from a backup, "
      .. "or delete it to have a new admin key made %(clients with the old key then get 401%)\n$", out)
    assert.equal("{bad", kept)
  end)

  it("refuses a credentials.json without an api_key (an empty file, an object without it)", function()
    for _, body in ipairs({ "", "{}\n", '{"api_key": ""}', "[1]" }) do
      local out, rc = serve_damaged(function(d) helper.write(d .. "/credentials.json", body) end)
      one_line(out, rc)
      assert.matches("credentials%.json: damaged", out)
    end
  end)

  it("names a users.json that is not the engine's list of users", function()
    local out, rc = serve_damaged(function(d) helper.write(d .. "/users.json", "{bad") end)
    one_line(out, rc)
    assert.matches("users%.json: damaged %(not the engine's JSON list of users%); it is made again from "
      .. "credentials%.json at start: move it away and start again\n$", out)
  end)

  it("refuses to make a new key when credentials.json is gone but users.json holds the old one", function()
    local out, rc = serve_damaged(function(d) assert(os.remove(d .. "/credentials.json")) end)
    one_line(out, rc)
    assert.matches("credentials%.json is missing but .*users%.json holds the admin's key", out)
  end)

  it("starts again with the same key once users.json is moved away (it is made from credentials.json)", function()
    local e = helper.start({ "--no-jupyter" })
    local key = e.api_key
    helper.stop(e, true)
    assert(os.remove(e.data_dir .. "/users.json"))
    local e2 = helper.start({ "--no-jupyter" }, { data_dir = e.data_dir })
    assert.equal(key, e2.api_key)
    local status = helper.request(e2, "GET", helper.v4(e2, "/default_runtime"))
    helper.stop(e2)
    helper.cleanup(e)
    assert.equal(200, status)
  end)
end)
