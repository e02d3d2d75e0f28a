-- list_applications?changed_since=CURSOR on a real local engine: only the
-- rows that changed after the cursor, in change order, paged by limit with
-- `more`; a bad cursor is a 400 naming the parameter; a cursor of another
-- engine or of an earlier process of this one answers everything.
local util = require("analytics_engine.util")
local state = require("analytics_engine.engine.state")
local changes = require("analytics_engine.engine.changes")
local helper = require("helpers.engine")

local function ids_of(body)
  local out = {}
  for i, row in ipairs(body.applications) do out[i] = row.application_id end
  return out
end

describe("list_applications changed_since", function()
  local e, root
  local function list(query)
    local status, body = helper.request(e, "GET", helper.v4(e, "/spark_applications" .. (query or "")))
    return status, body
  end
  local function since(cursor, extra)
    local status, body = list("?changed_since=" .. util.url_encode(cursor) .. (extra or ""))
    assert.equal(200, status)
    assert.is_table(body.changes)
    assert.is_string(body.changes.cursor)
    return body, body.changes.cursor
  end
  local function submit(script)
    return helper.submit(e, { application = root .. "/" .. script })
  end
  local function state_of(id) return helper.state_of(e, id) end

  before_each(function()
    root = helper.app_root { ["long.sh"] = "sleep 60\n", ["ok.sh"] = "exit 0\n" }
    e = helper.start { "--app-root", root, "--quiet" }
  end)
  after_each(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("answers only what changed after the cursor, in change order", function()
    local a, b = submit("long.sh"), submit("long.sh")
    assert.truthy(helper.eventually(function() return state_of(a) == "RUNNING" and state_of(b) == "RUNNING" end))
    local body, cur = since("0")
    assert.same({ a, b }, ids_of(body)) -- each once, at its last change
    assert.is_false(body.changes.more)
    assert.equal("RUNNING", body.applications[1].state)
    -- nothing changed: nothing, and the same cursor
    local body2, cur2 = since(cur)
    assert.same({}, ids_of(body2))
    assert.equal(cur, cur2)
    -- b stops, then a new one is created, then a stops: that order
    assert.equal(204, (helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. b))))
    local c = submit("long.sh")
    assert.equal(204, (helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. a))))
    local body3, cur3 = since(cur)
    local got = ids_of(body3)
    assert.equal(b, got[1])
    assert.equal(a, got[#got])
    assert.same({ b, c, a }, got)
    assert.equal("STOPPED", body3.applications[1].state)
    assert.equal("STOPPED", body3.applications[#got].state)
    -- the rows are the list's rows (return_code and all)
    local f = submit("ok.sh")
    assert.truthy(helper.eventually(function() return state_of(f) == "FINISHED" end))
    local body4 = since(cur3)
    local last = body4.applications[#body4.applications]
    assert.equal(f, last.application_id)
    assert.equal("FINISHED", last.state)
    assert.equal("0", last.return_code)
    assert.is_string(last.finish_time)
  end)

  it("pages by limit with more, and the cursor carries on", function()
    local want = {}
    for i = 1, 5 do want[i] = submit("long.sh") end
    assert.truthy(helper.eventually(function() return state_of(want[5]) == "RUNNING" end))
    local got, cur, pages = {}, "0", 0
    repeat
      local body
      body, cur = since(cur, "&limit=2")
      pages = pages + 1
      assert.truthy(#body.applications <= 2)
      for _, id in ipairs(ids_of(body)) do got[#got + 1] = id end
    until not body.changes.more
    assert.same(want, got)
    assert.equal(3, pages)
    assert.same({}, ids_of((since(cur))))
  end)

  it("refuses a bad cursor with a 400 naming changed_since, and start with it", function()
    for _, bad in ipairs { "x", "-1", "12", "0123456789abcdef", "0123456789abcdef.x", "abc.1",
                           "0123456789abcdef.1234567890123456", ("9"):rep(10000), "\255\254", "0\0", "+0",
                           "0.1", "00", "0123456789abcdef.1e5", "0123456789abcdef.0x10", "0123456789abcdef. 1",
                           "0123456789abcdef.-1" } do
      local status, body = list("?changed_since=" .. util.url_encode(bad))
      assert.equal(400, status, bad)
      assert.truthy(body.errors[1].message:find("changed_since", 1, true), bad)
    end
    local status, body = list("?changed_since=0&start=1")
    assert.equal(400, status)
    assert.truthy(body.errors[1].message:find("start", 1, true))
    -- an empty value is no cursor at all: the plain list
    local s2, b2 = list("?changed_since=")
    assert.equal(200, s2)
    assert.is_nil(b2.changes)
  end)

  it("answers everything for a cursor of another engine or of an earlier process", function()
    local a, b = submit("long.sh"), submit("ok.sh")
    assert.truthy(helper.eventually(function() return state_of(b) == "FINISHED" end))
    local _, cur = since("0")
    assert.same({}, ids_of((since(cur))))
    -- another epoch (another engine): everything, never nothing
    local foreign = ("f"):rep(16) .. "." .. cur:match("%.(%d+)$")
    local body = since(foreign)
    assert.same({ a, b }, ids_of(body))
    -- ahead of this engine's sequence: everything too
    assert.same({ a, b }, ids_of((since(cur:match("^(%x+)%.") .. ".999999"))))
    -- the engine restarted on the same data: the old cursor means everything
    helper.stop(e, true)
    e = helper.start({ "--app-root", root, "--quiet" }, { data_dir = e.data_dir })
    local after, cur2 = since(cur)
    local states = {}
    for _, row in ipairs(after.applications) do states[row.application_id] = row.state end
    assert.same({ [a] = "STOPPED", [b] = "FINISHED" }, states) -- a: stopped with the engine
    assert.not_equal(cur, cur2)
  end)

  it("ignores changed_since with --no-list-changes, as the vendor's service does", function()
    helper.stop(e)
    e = helper.start { "--app-root", root, "--quiet", "--no-list-changes" }
    local a = submit("long.sh")
    local status, body = list("?changed_since=0&limit=10")
    assert.equal(200, status)
    assert.is_nil(body.changes)
    assert.same({ a }, ids_of(body))
  end)
end)

describe("engine change log", function()
  local dir, store, eng
  before_each(function()
    dir = helper.temp_dir("changes")
    store = assert(state.open(dir .. "/state.db"))
    eng = { store = store }
  end)
  after_each(function()
    changes.FACTOR, changes.SLACK = 2, 1024
    store:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function add(i)
    local rec = { id = ("00000000-0000-4000-8000-%012d"):format(i), state = "ACCEPTED" }
    store:put("applications", rec)
    changes.note(eng, rec)
    return rec
  end

  it("answers a few changes among thousands of records without visiting the others", function()
    local recs = {}
    for i = 1, 5000 do recs[i] = add(i) end
    local _, cur = changes.since(eng, 0, nil)
    recs[17].state = "RUNNING"
    changes.note(eng, recs[17])
    recs[4000].state = "RUNNING"
    changes.note(eng, recs[4000])
    local get, visited = store.get, 0
    store.get = function(self, kind, id)
      visited = visited + 1
      return get(self, kind, id)
    end
    local out, cur2, more = changes.since(eng, assert(changes.parse(eng, cur)), nil)
    store.get = get
    assert.equal(2, #out)
    assert.equal(recs[17], out[1])
    assert.equal(recs[4000], out[2])
    assert.is_false(more)
    assert.truthy(visited <= 2, "visited " .. visited)
    assert.same({}, (changes.since(eng, changes.parse(eng, cur2), nil)))
  end)

  it("compacts stale entries and keeps each record at its last change", function()
    changes.FACTOR, changes.SLACK = 2, 0
    local recs = {}
    for i = 1, 10 do recs[i] = add(i) end
    for round = 1, 20 do
      for i = 1, 10, 3 do
        recs[i].state = "R" .. round
        changes.note(eng, recs[i])
      end
    end
    assert.truthy(#eng.changes.ids <= 2 * 10, "log of " .. #eng.changes.ids)
    local out = changes.since(eng, 0, nil)
    local order = {}
    for k, rec in ipairs(out) do order[k] = tonumber(rec.id:sub(-2)) end
    assert.same({ 2, 3, 5, 6, 8, 9, 1, 4, 7, 10 }, order)
    -- limit stops at a row, the cursor resumes after it
    local first, cur, more = changes.since(eng, 0, 7)
    assert.equal(7, #first)
    assert.is_true(more)
    local rest, _, more2 = changes.since(eng, changes.parse(eng, cur), 7)
    assert.equal(3, #rest)
    assert.is_false(more2)
    assert.equal(recs[10], rest[3])
  end)
end)
