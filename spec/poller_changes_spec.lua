-- The poller against a real local engine that answers changed_since: a round
-- reads only what changed, and no watched application's end is missed in the
-- races of a cursor (its rows went by before it was watched, it was adopted
-- long after it ended, the engine restarted, a page failed). Rounds are
-- driven by hand (the poller's own task is never run), with a blocking
-- client, so each step is deterministic.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local loop = require("analytics_engine.loop")
local poller_mod = require("analytics_engine.workflow.poller")
local helper = require("helpers.engine")
local aeflow = require("helpers.aeflow")

describe("poller with change cursors", function()
  local e, root, c, ended, failures, p
  local function submit(script)
    return helper.submit(e, { application = root .. "/" .. script })
  end
  local function state_of(id) return helper.state_of(e, id) end
  local function until_state(id, s)
    assert(helper.eventually(function() return state_of(id) == s end, 20), id .. " never " .. s)
  end
  -- A poller whose list requests go through `wrap` (to see or break them).
  local function new_poller(opts, wrap)
    opts = opts or {}
    ended, failures = {}, {}
    local client = c
    if wrap then
      client = setmetatable({ list_applications = function(_, q) return wrap(q, c:list_applications(q)) end },
                            { __index = function(_, k)
                              local v = c[k]
                              if type(v) == "function" then return function(_, ...) return v(c, ...) end end
                              return v
                            end })
    end
    opts.on_end = function(entry, app, failure)
      ended[entry.id] = app and app.state or "none"
      failures[entry.id] = failure
    end
    p = poller_mod.new(loop.new(), client, opts)
    return p
  end
  local function follow(id) return p:follow(id, { id = id }) end
  local function rounds(n) for _ = 1, n do assert(p:round() ~= nil) end end
  -- A new poller following one long application, `n` rounds read -> its id.
  local function watching_one(n)
    new_poller()
    local a = submit("long.sh")
    follow(a)
    rounds(n or 1)
    return a
  end
  -- Applications of `script` that reach `state` while the poller reads
  -- `n` rounds without watching them (their rows go by) -> their ids.
  local function ended_unwatched(script, state, count, n)
    local ids = {}
    for i = 1, count do ids[i] = submit(script) end
    for i = 1, count do until_state(ids[i], state) end
    rounds(n or 4)
    return ids
  end

  before_each(function()
    root = helper.app_root { ["long.sh"] = "sleep 60\n", ["ok.sh"] = "exit 0\n", ["bad.sh"] = "exit 4\n" }
    e = helper.start { "--app-root", root, "--quiet" }
    c = helper.client(e)
  end)
  after_each(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("reads only changes: one small request per round while nothing changes", function()
    local asked = {}
    new_poller(nil, function(q, list, err)
      asked[#asked + 1] = { since = q and q.changed_since, rows = list and #list.applications }
      return list, err
    end)
    local ids = {}
    for i = 1, 6 do ids[i] = submit("long.sh") end
    for i = 1, 6 do until_state(ids[i], "RUNNING") end
    for i = 1, 6 do follow(ids[i]) end
    rounds(1)
    assert.equal("0", asked[1].since)            -- the first round reads everything
    assert.equal(6, asked[1].rows)
    assert.is_true(p.changes)
    rounds(4)
    assert.equal(5, #asked)                      -- one request a round
    assert.equal(0, asked[5].rows)               -- nothing changed: nothing read
    assert.equal(0, p.direct)
    assert.is_nil(next(p.fresh))
    -- one ends: the next round shows it (and only it), and resolves it
    helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. ids[3]))
    rounds(1)
    assert.equal(1, asked[6].rows)
    assert.equal("STOPPED", ended[ids[3]])
    assert.equal(5, p.count)
  end)

  it("resolves an application that ended before it was watched, the cursor already past it", function()
    local a = watching_one()
    -- b starts and ends while the poller reads rounds without watching it:
    -- its rows go by, dropped, and the cursor moves past them.
    local b = ended_unwatched("bad.sh", "FAILED", 1)[1]
    assert.is_nil(ended[b])
    -- watched now (an answer that came late, an adoption): the rewind reads
    -- from two rounds before the watch, which is past b's rows, so it is
    -- read directly once.
    follow(b)
    rounds(1)
    assert.equal("FAILED", ended[b])
    assert.equal(1, p.direct)
    rounds(3)
    assert.equal(1, p.direct) -- once, not once a round
    assert.is_nil(ended[a])
  end)

  it("resolves many applications watched long after they ended with a full read, not max_direct a round", function()
    -- (an `await` fan-out of ids a wait = false step started, an adoption by
    -- `aeflow retry`: more ids than a round reads directly, all ended long ago)
    local a = watching_one()
    local ids = ended_unwatched("ok.sh", "FINISHED", 12)
    for i = 1, 12 do follow(ids[i]) end
    rounds(2)
    for i = 1, 12 do assert.equal("FINISHED", ended[ids[i]], "item " .. i) end
    assert.is_true(p.direct <= p.max_direct, "direct reads: " .. p.direct)
    assert.is_nil(next(p.missed))
    rounds(2)
    assert.is_nil(ended[a])
    assert.equal(1, p.count)
  end)

  it("does not let ids no read finds (gone from the records) hold back one that ended", function()
    local a = watching_one()
    local b = ended_unwatched("ok.sh", "FINISHED", 1)[1]
    -- 60 ids the engine has no record of: every direct read of them is a 404
    for i = 1, 60 do follow(("00000000-0000-4000-8000-%012d"):format(i)) end
    rounds(3)
    assert.equal(61, p.count)
    local lists = p.requests - p.direct
    follow(b) -- ended long ago: a direct read finds it, ahead of the 404s
    rounds(1)
    assert.equal("FINISHED", ended[b])
    assert.equal(lists + 1, p.requests - p.direct) -- one list, no full read for the 60
    assert.is_nil(ended[a])
  end)

  it("finds a create answered after a list that already showed it by rewinding, without a direct read", function()
    watching_one(3)
    local b = ended_unwatched("ok.sh", "FINISHED", 1, 1)[1] -- one round shows b's rows, unwatched
    follow(b) -- the create's answer, processed late
    rounds(1)
    assert.equal("FINISHED", ended[b])
    assert.equal(0, p.direct)
  end)

  it("reads everything again after the engine restarted (a new epoch), and nothing is missed", function()
    new_poller()
    local a, b = submit("long.sh"), submit("long.sh")
    until_state(b, "RUNNING")
    follow(a)
    follow(b)
    rounds(3)
    local cursor = p.cursor
    helper.stop(e, true)
    e = helper.start({ "--app-root", root, "--quiet" }, { data_dir = e.data_dir })
    c = helper.client(e)
    p.client = c
    rounds(1)
    -- the old cursor meant "everything": both are seen ended by the engine's stop
    assert.equal("STOPPED", ended[a])
    assert.equal("STOPPED", ended[b])
    assert.not_equal(cursor, p.cursor)
  end)

  it("keeps what a page read when a later page fails, and misses nothing after", function()
    local fail_next = false
    new_poller({ page = 2 }, function(q, list, err)
      if fail_next and q.changed_since ~= "0" and q.changed_since ~= p.cursor_before then
        fail_next = false
        return nil, { message = "injected failure of a later page" }
      end
      return list, err
    end)
    local ids = {}
    for i = 1, 5 do ids[i] = submit("long.sh") end
    until_state(ids[5], "RUNNING")
    for i = 1, 5 do follow(ids[i]) end
    rounds(2)
    -- all five end; the round's second page fails
    for i = 1, 5 do helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. ids[i])) end
    p.cursor_before = p.cursor
    fail_next = true
    assert(p:round() ~= nil)
    local n = 0
    for _ in pairs(ended) do n = n + 1 end
    assert.equal(2, n) -- the first page's two
    rounds(1)
    for i = 1, 5 do assert.equal("STOPPED", ended[ids[i]], "item " .. i) end
    assert.equal(0, p.direct)
  end)

  it("reads the plain list from a server that refuses changed_since (400), asking it once", function()
    local asked = {}
    new_poller({ page = 2 }, function(q, list, err)
      asked[#asked + 1] = q
      if q and q.changed_since then
        return nil, { status = 400, message = "unknown query parameter changed_since" }
      end
      return list, err
    end)
    local ids = {}
    for i = 1, 3 do ids[i] = submit("long.sh") end
    until_state(ids[3], "RUNNING")
    for i = 1, 3 do follow(ids[i]) end
    rounds(2)
    assert.is_false(p.changes)
    assert.equal("0", asked[1].changed_since)
    for i = 2, #asked do assert.is_nil(asked[i].changed_since) end
    helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. ids[2]))
    rounds(1)
    assert.equal("STOPPED", ended[ids[2]])
  end)

  it("ends the wait for an application removed from the engine's records (404 for gone_after), not forever", function()
    -- (its absence shows in a full read: the 300 s safety net, short here)
    new_poller({ gone_after = 0.5, sweep = 0.3 })
    local a, b = submit("long.sh"), submit("long.sh")
    until_state(b, "RUNNING")
    follow(a)
    follow(b)
    rounds(2)
    assert.equal(2, p.count)
    -- the engine restarts without b's record (a purge, an older backup)
    helper.stop(e, true)
    -- (through the core's own SQLite: no sqlite3 program on a fresh machine)
    local db = assert(core.sqlite_open(e.data_dir .. "/state.db"))
    assert(db:exec(("DELETE FROM applications WHERE id = '%s'"):format(b)))
    db:close()
    e = helper.start({ "--app-root", root, "--quiet" }, { data_dir = e.data_dir })
    c = helper.client(e)
    p.client = c
    rounds(1) -- everything again (a new epoch): a shows its end, b is not there
    assert.equal("STOPPED", ended[a])
    assert.is_nil(ended[b])
    assert(helper.eventually(function()
      rounds(1)
      return ended[b] ~= nil
    end, 10), "still waiting for an application the engine has no record of")
    assert.equal("none", ended[b])
    assert.is_true(failures[b].final)
    assert.matches("no application " .. b:gsub("%-", "%%-") .. " any more %(404", failures[b].message)
    assert.equal(0, p.count)
  end)

  it("keeps its safety net of full reads when the first full read was cut short", function()
    local asked, fail_second = {}, true
    new_poller({ page = 2, sweep = 0.3 }, function(q, list, err)
      if fail_second and q.changed_since ~= "0" then
        fail_second = false
        return nil, { message = "injected failure of the first read's second page" }
      end
      asked[#asked + 1] = q.changed_since
      return list, err
    end)
    local ids = {}
    for i = 1, 3 do ids[i] = submit("long.sh") end
    until_state(ids[3], "RUNNING")
    follow(ids[1])
    follow(ids[2]) -- (both on the first page: rows come in change order)
    rounds(1) -- "0": its first page read, the second failed
    assert.equal("0", asked[1])
    assert.is_nil(next(p.fresh))
    assert(helper.eventually(function()
      local n = #asked
      rounds(1)
      return asked[n + 1] == "0"
    end, 10), "no full read after the sweep interval")
  end)

  it("reads at most max_pages pages a round from a server that always says there is more", function()
    local asked, n = 0, 0
    new_poller({ page = 2, max_pages = 7 }, function(q)
      asked = asked + 1
      n = n + 1
      -- a hostile server: a fresh cursor, a full page of strangers, `more` for ever
      return { applications = { { application_id = "x" .. n, state = "RUNNING" },
                                { application_id = "y" .. n, state = "RUNNING" } },
               changes = { cursor = q.changed_since .. "+" .. n, more = true } }
    end)
    local id = submit("long.sh")
    follow(id)
    rounds(1)
    assert.equal(7, asked)
    rounds(1) -- the next round goes on from the cursor the last page gave
    assert.equal(14, asked)
  end)

  it("reads at most max_pages pages a round of a plain list that never ends", function()
    local asked = 0
    new_poller({ page = 2, max_pages = 5 }, function(q)
      asked = asked + 1
      if q and q.changed_since then return nil, { status = 400, message = "unknown parameter" } end
      return { applications = { { application_id = "s" .. asked, state = "RUNNING" },
                                { application_id = "t" .. asked, state = "RUNNING" } } }
    end)
    follow(submit("long.sh"))
    rounds(1)
    assert.equal(1 + 5, asked) -- the refused cursor, then five pages
  end)

  it("reads the plain list from a server that ignores changed_since", function()
    helper.stop(e)
    e = helper.start { "--app-root", root, "--quiet", "--no-list-changes" }
    c = helper.client(e)
    local asked = {}
    new_poller({ page = 2 }, function(q, list, err)
      asked[#asked + 1] = q
      return list, err
    end)
    local ids = {}
    for i = 1, 5 do ids[i] = submit("long.sh") end
    until_state(ids[5], "RUNNING")
    for i = 1, 5 do follow(ids[i]) end
    rounds(1)
    assert.is_false(p.changes)
    assert.equal("0", asked[1].changed_since) -- asked once
    for i = 2, #asked do assert.is_nil(asked[i].changed_since) end
    assert.equal(3, #asked)                   -- pages of 2 by start
    helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. ids[4]))
    rounds(1)
    assert.equal("STOPPED", ended[ids[4]])
    assert.equal(0, p.direct)
  end)
end)

-- One `aeflow run --json` of a fan-out of `n` items of `app` (files: the
-- workspace's scripts) against an engine started with `engine_args` ->
-- exit code, stderr, the ids of its FINISHED events (one entry per event),
-- its run_end event, and the engine's request counts.
local function fan_run(prefix, files, app, n, engine_args, poll)
  files["wf.lua"] = ([[
local items = {}
for i = 1, %d do items[i] = i end
return workflow "fan" {
  step "many" { for_each = items, submit = %s },
}
]]):format(n, app)
  local e, dir = aeflow.workspace(prefix, files, engine_args)
  local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", poll },
                                    { dir = dir, env = aeflow.env(e), timeout = 120 })
  local _, stats = helper.request(e, "GET", "/engine/v1/stats")
  aeflow.finish(e, dir)
  local finished, run_end = {}, nil
  for line in out:gmatch("[^\n]+") do
    local ev = util.json_decode(line)
    if ev.event == "application" and ev.state == "FINISHED" then finished[#finished + 1] = ev.application_id end
    if ev.event == "run_end" then run_end = ev end
  end
  return code, err, finished, run_end, stats.requests
end

describe("aeflow run against the engine's change cursors", function()
  -- (a whole run: the races themselves are driven by hand above, a run hits
  -- them only now and then)
  it("awaits a fan-out of applications that end at once, ≤ 2 requests each beyond the polls", function()
    local code, err, finished, run_end, r = fan_run("aeflow-changes-", { ["quick.sh"] = "exit 0\n" },
      '{ application = "quick.sh" }', 40, { "--quiet" }, "0.05")
    assert.equal(0, code, err)
    local distinct, n = {}, 0
    for _, id in ipairs(finished) do distinct[id] = true end
    for _ in pairs(distinct) do n = n + 1 end
    assert.equal(40, n)
    assert.equal("succeeded", run_end.status)
    assert.equal(40, r.create_application)
    assert.equal(0, r.get_application or 0)
    -- polls are list requests plus the direct reads, at most one per application
    assert.equal(run_end.poll_requests, (r.list_applications or 0) + (r.get_application_state or 0))
    assert.truthy(run_end.poll_direct <= 40)
  end)
end)

describe("aeflow run against an engine that ignores changed_since", function()
  it("awaits every application to its end, ≤ 2 requests each", function()
    local code, err, finished, run_end, r = fan_run("aeflow-nochanges-", { ["sleep.sh"] = 'sleep "$1"\n' },
      '{ application = "sleep.sh", arguments = { "1" } }', 12, { "--no-list-changes", "--quiet" }, "0.3")
    assert.equal(0, code, err)
    assert.equal(12, #finished)
    assert.equal("succeeded", run_end.status)
    assert.equal(12, r.create_application)
    assert.equal(run_end.poll_requests, (r.list_applications or 0) + (r.get_application_state or 0))
    assert.truthy((r.get_application or 0) == 0)
  end)
end)
