-- The C core's SQLite binding: open, exec, run, query, rows, prepared
-- statements, transactions, errors as nil + one line, and closing twice.
-- Runs under `make valgrind` too (spec/core_*_spec.lua).
local core = require("analytics_engine.core")

local function tmpdb()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".db"
end

local function remove(path)
  for _, s in ipairs({ "", "-wal", "-shm", "-journal" }) do os.remove(path .. s) end
end

describe("core.sqlite", function()
  local path, db
  before_each(function()
    path = tmpdb()
    db = assert(core.sqlite_open(path))
    assert(db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT)"))
  end)
  after_each(function()
    db:close()
    remove(path)
  end)

  it("reports the library version", function()
    assert.truthy(core.sqlite_version():find("^3%."))
  end)

  it("runs a statement with bound values and answers the changes", function()
    assert.equal(1, db:run("INSERT INTO t (name, score, note) VALUES (?, ?, ?)", "a", 1.5, nil))
    assert.equal(1, db:last_insert_rowid())
  end)

  it("returns rows as tables keyed by column name, with types kept", function()
    db:run("INSERT INTO t (name, score, note) VALUES (?, ?, ?)", "a", 1.5, nil)
    db:run("INSERT INTO t (name, score) VALUES (?, ?)", "b", 2)
    local rows = assert(db:query("SELECT id, name, score, note FROM t ORDER BY id"))
    assert.equal(2, #rows)
    assert.same({ id = 1, name = "a", score = 1.5 }, rows[1])
    assert.equal("integer", math.type(rows[1].id))
    assert.equal("float", math.type(rows[2].score))
  end)

  it("binds booleans as 0 and 1", function()
    db:run("INSERT INTO t (name, score) VALUES (?, ?)", "x", true)
    assert.equal(1, db:query("SELECT score FROM t")[1].score)
  end)

  it("keeps strings with NUL bytes whole", function()
    db:run("INSERT INTO t (name) VALUES (?)", "a\0b")
    assert.equal("a\0b", db:query("SELECT name FROM t")[1].name)
  end)

  it("iterates rows with a for loop", function()
    for i = 1, 5 do db:run("INSERT INTO t (name, score) VALUES (?, ?)", "n" .. i, i) end
    local names = {}
    for name, score in db:rows("SELECT name, score FROM t WHERE score > ? ORDER BY id", 2) do
      names[#names + 1] = name .. "=" .. score
    end
    assert.same({ "n3=3.0", "n4=4.0", "n5=5.0" }, names)
  end)

  it("finalizes the statement when a loop breaks early", function()
    for i = 1, 3 do db:run("INSERT INTO t (name) VALUES (?)", "n" .. i) end
    local seen = 0
    for _ in db:rows("SELECT name FROM t") do
      seen = seen + 1
      if seen == 1 then break end
    end
    assert.equal(1, seen)
    -- A pending read statement would keep the table locked against DROP.
    assert.is_true(db:exec("DROP TABLE t"))
    assert(db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT)"))
  end)

  it("prepares once and steps many times", function()
    local ins = assert(db:prepare("INSERT INTO t (name, score) VALUES (?, ?)"))
    for i = 1, 10 do
      ins:bind("n" .. i, i)
      assert.is_false(ins:step())
    end
    ins:close()
    local sel = assert(db:prepare("SELECT count(*), sum(score) FROM t"))
    assert.is_true(sel:step())
    local n, sum = sel:values()
    assert.equal(10, n)
    assert.equal(55, sum)
    assert.is_false(sel:step())
    sel:reset()
    assert.is_true(sel:step())
    sel:close()
  end)

  it("commits and rolls back transactions", function()
    assert.is_false(db:in_transaction())
    assert(db:exec("BEGIN IMMEDIATE"))
    assert.is_true(db:in_transaction())
    db:run("INSERT INTO t (name) VALUES ('kept')")
    assert(db:exec("COMMIT"))
    assert(db:exec("BEGIN"))
    db:run("INSERT INTO t (name) VALUES ('dropped')")
    assert(db:exec("ROLLBACK"))
    local rows = db:query("SELECT name FROM t")
    assert.equal(1, #rows)
    assert.equal("kept", rows[1].name)
  end)

  it("switches to WAL and sees the data after reopening", function()
    local mode = db:query("PRAGMA journal_mode=WAL")[1].journal_mode
    assert.equal("wal", mode)
    db:run("INSERT INTO t (name) VALUES ('durable')")
    db:close()
    db = assert(core.sqlite_open(path))
    assert.equal("durable", db:query("SELECT name FROM t")[1].name)
  end)

  it("answers nil and a one-line message for bad SQL", function()
    local ok, err = db:run("INSERT INTO nosuch VALUES (1)")
    assert.is_nil(ok)
    assert.truthy(err:find("^sqlite: no such table: nosuch"))
    assert.falsy(err:find("\n"))
    local rows, qerr = db:query("SELEC 1")
    assert.is_nil(rows)
    assert.truthy(qerr:find("syntax error"))
    local st, perr = db:prepare("SELECT * FROM nosuch")
    assert.is_nil(st)
    assert.truthy(perr:find("no such table"))
    local ok2, eerr = db:exec("CREATE TABLE t (x)")
    assert.is_nil(ok2)
    assert.truthy(eerr:find("already exists"))
  end)

  it("answers nil and a message for a constraint violation", function()
    db:run("INSERT INTO t (id, name) VALUES (1, 'a')")
    local ok, err = db:run("INSERT INTO t (id, name) VALUES (1, 'b')")
    assert.is_nil(ok)
    assert.truthy(err:find("UNIQUE constraint failed"))
  end)

  it("raises for a value it cannot bind", function()
    assert.has_error(function() db:run("INSERT INTO t (name) VALUES (?)", {}) end)
    assert.has_error(function() db:query("SELECT ?", function() end) end)
  end)

  it("raises for more values than the statement takes", function()
    assert.has_error(function() db:run("INSERT INTO t (name) VALUES (?)", "a", "b") end)
  end)

  it("cannot open a file in a missing directory", function()
    local d, err = core.sqlite_open("/nonexistent/dir/x.db")
    assert.is_nil(d)
    assert.truthy(err:find("cannot open /nonexistent/dir/x.db", 1, true))
  end)

  it("is safe to close twice, and answers nil, 'closed' afterwards", function()
    local st = assert(db:prepare("SELECT 1"))
    assert.is_true(db:close())
    assert.is_true(db:close())
    assert.is_false(db:is_open())
    local ok, err = db:run("SELECT 1")
    assert.is_nil(ok)
    assert.equal("closed", err)
    local sok, serr = st:step()
    assert.is_nil(sok)
    assert.equal("closed", serr)
    st:close()
    assert.truthy(tostring(db):find("closed"))
    db = assert(core.sqlite_open(path))
  end)

  it("closes a to-be-closed handle at the end of its scope", function()
    local other
    do
      local d <close> = assert(core.sqlite_open(path))
      other = d
      assert.is_true(other:is_open())
    end
    assert.is_false(other:is_open())
  end)

  it("lets statements be collected after their database", function()
    for _ = 1, 20 do
      local d = assert(core.sqlite_open(path))
      local _ = d:prepare("SELECT * FROM t")
      d:close()
    end
    collectgarbage()
    collectgarbage()
  end)
end)
