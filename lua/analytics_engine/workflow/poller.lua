--- One rate-aware poller for every application a run awaits: a list request
-- per round (not one request per application), an interval that grows while
-- nothing changes and shrinks when something does, jitter, and a cap on
-- requests per round for applications the list does not show. A newly
-- watched application is polled at most `interval` after the last round (not
-- after a sleep that grew while nothing changed), so the state a person sees
-- is the engine's within about one interval.
--
-- Against the local engine a round reads only what changed: the list is
-- asked with `changed_since` = the cursor of the previous answer, which
-- returns the rows changed after it (paged by `limit`, `changes.more`) and
-- the next cursor; 10,000 awaited applications that all run cost one small
-- request per round, not the whole list. A server without the parameter
-- (the vendor's service, an older engine) answers the plain list: then every
-- round reads the list in pages, as before.
--
-- What must never happen is an end missed: a row the poller read before it
-- watched the application (its create answer came after a list that showed
-- it) is gone past the cursor. So an application watched but not yet seen is
-- "fresh": the next round reads from the cursor of two rounds before it was
-- watched (a rewind), and one that read still does not show is read
-- directly (get_application_state, at most max_direct a round) until seen.
-- A full read (`changed_since=0`) every `sweep` seconds is a safety net on
-- top.
local core = require("analytics_engine.core")
local api = require("analytics_engine.api")

local _M = {}
local mt = { __index = _M }

local is_terminal = api.is_terminal

-- Rows per list request: the list is read a page at a time (`limit`,
-- `start`), so at most one page's decoded rows are alive at once (a whole
-- list of 10,000 rows decoded at once was ~15 MB of short-lived tables, the
-- largest part of the runner's peak RSS). A server that ignores `limit`
-- answers everything at once, which ends the round's paging.
_M.PAGE = 500

-- Pages read in one round at most: a server that keeps answering full pages
-- (or `more` with a new cursor) cannot hold the poller in one round; the
-- rest is read next round, after the interval. 200 pages of 500 rows cover
-- 100,000 records or changes a round.
_M.MAX_PAGES = 200

--- Seconds without one answered poll before the awaited applications fail.
_M.UNREACHABLE_TIMEOUT = 300

--- Seconds between two full reads when the server answers changes.
_M.SWEEP = 300

--- Seconds an application's direct reads keep answering 404 (the service
-- has no such application any more: removed from its records, purged after
-- it ended) before its wait ends with a failure: no list or read will ever
-- show its end.
_M.GONE_AFTER = 60

-- Cursors kept, one per round (a rewind goes back two rounds before a watch).
local KEEP = 8

function _M.new(sched, client, opts)
  opts = opts or {}
  local self = setmetatable({
    sched = sched, client = client,
    min_interval = opts.interval or 1,
    max_interval = opts.max_interval or 15,
    max_direct = opts.max_direct or 5,      -- single-status requests per round
    -- rows per list request (false: the whole list in one)
    page = opts.page == nil and _M.PAGE or opts.page or nil,
    max_pages = opts.max_pages or _M.MAX_PAGES,
    -- id → { waiters = {task...} or nil, state = last seen }, or the table
    -- given to follow() (which then carries `state` itself)
    watched = {},
    count = 0,
    on_state = opts.on_state,                -- function(id, state, app) on every change
    on_end = opts.on_end,                    -- function(entry, app, failure) for follow()ed ids
    -- The service unreachable (no list answered) for unreachable_timeout
    -- seconds: the awaited applications end with a failure (final: never
    -- submitted again; they may still run, a resume adopts them by token).
    unreachable_timeout = opts.unreachable_timeout or _M.UNREACHABLE_TIMEOUT,
    on_unreachable = opts.on_unreachable,    -- function(err): the first failed round
    on_reachable = opts.on_reachable,        -- function(seconds): a list answered again
    on_unknown = opts.on_unknown,            -- function(id, state): once per application
    unknown_warned = {},
    service = opts.service or (client and client.url) or "the service",
    rounds = 0, requests = 0, direct = 0,
    -- changed_since (see the top): nil not known yet, true answered, false
    -- not (opts.changes = false: never asked)
    changes = nil,
    cursor = nil,                            -- the last answer's changes.cursor
    cursors = {},                            -- round -> the cursor at its end (KEEP rounds)
    fresh = {},                              -- id -> the round it was watched in, until seen
    -- id -> true: a rewind did not show it, read it directly (or by a full
    -- read when more than max_direct are); or a number: a full read did not
    -- show it either (0), or the round whose direct read of it did not answer
    -- (the oldest are read first, after the true ones)
    missed = {},
    full = false,                            -- the next round reads from the start (too many missed)
    sweep = opts.sweep or _M.SWEEP,
    gone = {},                               -- id -> when a direct read of it first answered 404
    gone_after = opts.gone_after or _M.GONE_AFTER,
  }, mt)
  if opts.changes == false then self.changes = false end
  return self
end

-- Bring the next round forward to `last round + min_interval` when the
-- poller sleeps longer than that (its interval grew while nothing changed).
local function hurry(self)
  if not self.napping then return end
  local target = math.max(core.monotime(), (self.last_round or 0) + self.min_interval)
  if self.wake_at <= target then return end
  self.wake_at = target
  local task = self.task
  if type(task.waiting) == "function" then task.waiting() end -- drop its timer
  self.napping = false
  self.sched:wake(task, true)
end

local function ensure_running(self)
  if self.task and not self.task.done then return hurry(self) end
  self.task = self.sched:spawn("poller", function() self:run() end)
end

local function watch(self, id)
  local w = self.watched[id]
  if not w then
    w = {}
    self.watched[id] = w
    self.count = self.count + 1
    self.fresh[id] = self.rounds
  end
  return w
end

-- No longer watched.
local function drop(self, id)
  self.watched[id] = nil
  self.count = self.count - 1
  self.fresh[id], self.missed[id], self.gone[id] = nil, nil, nil
end

--- Follow application `id`'s state (on_state) until it is terminal, without
-- waiting for it: a `wait = false` submission still shows its state.
function _M.watch(self, id)
  watch(self, id)
  ensure_running(self)
end

--- Suspend the calling task until application `id` is terminal. Returns the
-- list's summary of it, or nil, err (cancelled).
function _M.await(self, id)
  local w = watch(self, id)
  local me = self.sched:current()
  w.waiters = w.waiters or {}
  w.waiters[me] = true
  self.interval = self.min_interval
  ensure_running(self)
  return self.sched:suspend(function()
    w.waiters[me] = nil
    if not next(w.waiters) and not w.follows and self.watched[id] == w then drop(self, id) end
  end)
end

--- Follow application `id` without a waiting task: when it is terminal,
-- opts.on_end(entry, summary) is called from the poller's task. `entry` is
-- the caller's own small table (it keeps the last state seen in
-- entry.state), so thousands of awaited applications cost one table each,
-- not a suspended coroutine each. Returns entry.
function _M.follow(self, id, entry)
  local w = self.watched[id]
  if w and w ~= entry then
    -- Already watched (a wait = false watch, or a task awaiting it): take its place.
    entry.state, entry.waiters = w.state, w.waiters
  elseif not w then
    self.count = self.count + 1
    self.fresh[id] = self.rounds
  end
  entry.follows = true
  self.watched[id] = entry
  self.interval = self.min_interval
  ensure_running(self)
  return entry
end

--- Stop following `id` (its follower ends otherwise, e.g. cancelled);
-- tasks awaiting it keep waiting.
function _M.unfollow(self, id)
  local w = self.watched[id]
  if not w or not w.follows then return end
  w.follows = nil
  if w.waiters and next(w.waiters) then
    self.watched[id] = { state = w.state, waiters = w.waiters }
  else
    drop(self, id)
  end
end

local function resolve(self, id, app)
  local w = self.watched[id]
  if not w then return end
  drop(self, id)
  if w.waiters then
    for t in pairs(w.waiters) do self.sched:wake(t, app) end
  end
  if w.follows and self.on_end then
    w.follows = nil
    self.on_end(w, app)
  end
end

local function observe(self, id, app)
  local w = self.watched[id]
  if not w then return false end
  self.fresh[id], self.missed[id], self.gone[id] = nil, nil, nil -- seen
  local changed = w.state ~= app.state
  if changed then
    w.state = app.state
    if self.on_state then self.on_state(id, app.state, app) end
    -- A state outside the API's: it is not an end, so the wait goes on, but
    -- a person must know why (once per application, not once per round).
    if not api.is_known_state(app.state) and not self.unknown_warned[id] then
      self.unknown_warned[id] = true
      if self.on_unknown then self.on_unknown(id, app.state) end
    end
  end
  if is_terminal(app.state) then resolve(self, id, app) end
  return changed
end

--- Follow `ids` until the service says each ended, at most `seconds`
-- (from a task: it sleeps between checks).
function _M.settle(self, ids, seconds)
  if not ids or #ids == 0 then return end
  for _, id in ipairs(ids) do _M.watch(self, id) end
  local deadline = core.monotime() + (seconds or 10)
  while core.monotime() < deadline do
    local left = false
    for _, id in ipairs(ids) do
      if self.watched[id] then left = true end
    end
    if not left then return end
    local ok, err = self.sched:sleep(0.2)
    if ok == nil and err then return end
  end
end

-- The wait for `id` ends without its end: its waiters get nil, failure (as
-- a cancel's), its follower on_end(entry, nil, failure).
local function fail_one(self, id, failure)
  local w = self.watched[id]
  if not w then return end
  drop(self, id)
  if w.waiters then
    for t in pairs(w.waiters) do self.sched:wake(t, nil, failure) end
  end
  if w.follows and self.on_end then
    w.follows = nil
    self.on_end(w, nil, failure)
  end
end

-- Read `id` directly -> changed. Answered 404 from gone_after seconds on,
-- its wait ends with a final failure (never submitted again: it may have
-- run to its end before it was removed).
local function read_one(self, id, changed)
  self.requests, self.direct = self.requests + 1, self.direct + 1
  local st, err = self.client:get_application_state(id)
  if st then
    st.application_id = st.application_id or id
    return observe(self, id, st) or changed
  end
  if self.watched[id] and type(err) == "table" and err.status == 404 then
    local now = core.monotime()
    local since = self.gone[id]
    if not since then
      self.gone[id] = now
    elseif now - since >= self.gone_after then
      fail_one(self, id, { final = true, message = ("%s has no application %s any more (404 for %d s): it was "
        .. "removed from its records and its end is unknown; this run does not submit it again")
        :format(self.service, id, math.floor(now - since)) })
      return true
    end
  end
  return changed
end

-- Read the watched ids the list did not show this round directly, at most
-- max_direct a round.
local function direct_reads(self, round, changed)
  local n = 0
  for id, w in pairs(self.watched) do
    if n >= self.max_direct then break end
    if w.polled ~= round then
      n = n + 1
      changed = read_one(self, id, changed)
    end
  end
  return changed
end

-- A round of the plain list, read in pages; `list` is its first page when
-- already read.
local function list_round(self, round, list)
  local changed = false
  local page, start = self.page, 0
  -- Stop paging once every application watched at the start was seen.
  local want, seen = self.count, 0
  while true do
    if not list then
      self.requests = self.requests + 1
      local err
      list, err = self.client:list_applications(page and { limit = page, start = start } or nil)
      if not list then
        if start == 0 then return false, err end
        break -- a later page failed: what was seen counts, the rest next round
      end
    end
    local rows = list.applications or {}
    list = nil
    for i = 1, #rows do
      local app = rows[i]
      local id = app.application_id or app.id
      local w = id and self.watched[id]
      if w then
        w.polled = round
        seen = seen + 1
        changed = observe(self, id, app) or changed
      end
    end
    local n = #rows
    rows = nil -- luacheck: ignore 311 (let the page go before the next one)
    if not page or n ~= page or seen >= want or self.count == 0 then break end
    start = start + n
    if start >= page * self.max_pages then break end
  end
  -- Ask directly about a few the list did not show (a trimmed list, or one
  -- that moved between pages).
  return direct_reads(self, round, changed)
end

-- Read up to max_direct missed ids directly: those no read looked for yet
-- first, then the ones whose last direct read is oldest (one that does not
-- answer, a record gone, cannot hold the others back round after round).
-- More never looked for than a round reads (many ids watched long after they
-- ended: an `await` fan-out, an adoption by `aeflow retry`) make the next
-- round a full read: one list shows them all, where max_direct a round would
-- take n/max_direct rounds.
local function missed_reads(self, round, changed)
  local missed, max = self.missed, self.max_direct
  local pick, tried, unread = {}, nil, 0
  for id, m in pairs(missed) do
    if m == true then
      unread = unread + 1
      if #pick < max then pick[#pick + 1] = id end
    else
      tried = tried or {}
      tried[#tried + 1] = id
    end
  end
  if tried and #pick < max then
    table.sort(tried, function(a, b) return missed[a] < missed[b] end)
    for i = 1, math.min(#tried, max - #pick) do pick[#pick + 1] = tried[i] end
  end
  if unread - max > max then self.full = true end
  for _, id in ipairs(pick) do
    if not self.watched[id] then
      missed[id] = nil
    else
      changed = read_one(self, id, changed)
      if missed[id] ~= nil then missed[id] = round end -- no answer: after the others next time
    end
  end
  return changed
end

-- The server does not answer changed_since: plain lists from now on.
local function no_changes(self)
  self.changes, self.cursor, self.cursors = false, nil, {}
  self.fresh, self.missed, self.full = {}, {}, false
end

-- A round of changes (see the top of the file).
local function changes_round(self, round, now)
  -- From the last cursor, or from two rounds before the oldest fresh
  -- watch (a rewind), or from the start (the first round, a sweep).
  local from_round = round - 1
  for id, r in pairs(self.fresh) do
    if not self.watched[id] then
      self.fresh[id] = nil
    elseif r - 2 < from_round then
      from_round = r - 2
    end
  end
  local from
  -- (no full read completed yet, the first cut short by a failed page: the
  -- safety net counts from the first round)
  self.first_round = self.first_round or now
  if not self.cursor or self.full or now - (self.last_sweep or self.first_round) >= self.sweep then
    from = "0"
  elseif from_round >= round - 1 then
    from = self.cursor
  else
    from = from_round >= 1 and self.cursors[from_round] or "0" -- (older than kept: all)
  end
  local changed, complete = false, false
  local q = { changed_since = from, limit = self.page or nil }
  local first, pages = true, 0
  while true do
    self.requests = self.requests + 1
    pages = pages + 1
    local list, err = self.client:list_applications(q)
    if not list then
      if first and type(err) == "table" and err.status == 400 then
        -- A server that refuses the parameter, or this cursor: the plain
        -- list this round; from the start next round, or never again.
        if from == "0" then no_changes(self) else self.cursor, self.cursors = nil, {} end
        return list_round(self, round)
      end
      if first then return false, err end
      break -- a later page failed: its cursor is kept, the rest next round
    end
    local ch = list.changes
    if type(ch) ~= "table" or type(ch.cursor) ~= "string" then
      -- The plain list (the server ignores changed_since): this is its first page.
      no_changes(self)
      return list_round(self, round, first and list or nil)
    end
    self.changes = true
    local rows = list.applications or {}
    list = nil -- luacheck: ignore 311
    local watched = self.watched
    for i = 1, #rows do
      local app = rows[i]
      local id = app.application_id or app.id
      local w = id and watched[id]
      if w then
        w.polled = round
        changed = observe(self, id, app) or changed
      end
    end
    local more = ch.more == true and #rows > 0 and ch.cursor ~= q.changed_since
    self.cursor = ch.cursor
    if not more then
      complete = true
      break
    end
    if pages >= self.max_pages then break end -- the rest from this cursor next round
    q = { changed_since = ch.cursor, limit = self.page or nil }
    first = false
  end
  self.cursors[round] = self.cursor
  self.cursors[round - KEEP] = nil
  local missed = self.missed
  if complete then
    if from == "0" then
      self.last_sweep, self.full = now, false
      -- Still missed after a read of everything: not on the list at all.
      for id, m in pairs(missed) do
        if m == true then missed[id] = 0 end
      end
      -- And ids seen before that it did not show (their records went):
      -- only a direct read can tell (a 404 for long ends their wait).
      for id, w in pairs(self.watched) do
        if w.polled ~= round and not self.fresh[id] and missed[id] == nil then missed[id] = 0 end
      end
    end
    -- Fresh ids this read covered (watched before the round, read from two
    -- rounds before their watch or from the start) that it did not show:
    -- their rows went by before they were watched. Read them directly.
    for id, r in pairs(self.fresh) do
      if r < round and (from == "0" or r - 2 >= from_round) then
        self.fresh[id] = nil
        missed[id] = from == "0" and 0 or true
      end
    end
  end
  return missed_reads(self, round, changed)
end

function _M.round(self)
  self.rounds = self.rounds + 1
  local round = self.rounds
  local now = core.monotime()
  self.last_round = now
  if self.changes == false then return list_round(self, round) end
  return changes_round(self, round, now)
end

local function err_text(err)
  if type(err) == "table" then return tostring(err.message or err.code or "error") end
  return tostring(err)
end

-- Nobody could be told an application's end for too long: every awaited
-- application ends with `failure` (waiters get nil, failure as a cancel does).
local function give_up(self, msg)
  -- final = "unreachable": not retried, and the attempt stays open (runner.run_item)
  local failure = { message = msg, final = "unreachable" }
  local ids = {}
  for id in pairs(self.watched) do ids[#ids + 1] = id end
  for _, id in ipairs(ids) do fail_one(self, id, failure) end
end

-- A round whose list failed (err) or answered (nil): say so once when the
-- service stops answering and once when it answers again; give up after
-- unreachable_timeout seconds without an answer.
local function reachability(self, err)
  local now = core.monotime()
  if not err then
    if self.down_since then
      local seconds = now - self.down_since
      self.down_since = nil
      if self.on_reachable then self.on_reachable(seconds) end
    end
    return
  end
  self.last_error = err_text(err)
  if not self.down_since then
    self.down_since = now
    if self.on_unreachable then self.on_unreachable(self.last_error) end
  end
  local down = now - self.down_since
  if down >= self.unreachable_timeout then
    give_up(self, ("could not reach %s for %d s (last error: %s); not submitted again "
      .. "(the application may still run: aeflow retry awaits it again)")
      :format(self.service, math.floor(down), self.last_error))
  end
end

function _M.run(self)
  self.interval = self.min_interval
  while self.count > 0 do
    local changed, rerr = self:round()
    reachability(self, rerr)
    if self.count == 0 then break end
    if changed then
      self.interval = self.min_interval
    else
      self.interval = math.min(self.interval * 1.5, self.max_interval)
    end
    -- hurry() may bring wake_at forward and wake this sleep early.
    self.wake_at = core.monotime() + self.interval * (0.85 + 0.3 * math.random())
    repeat
      self.napping = true
      local ok, err = self.sched:sleep(self.wake_at - core.monotime())
      self.napping = false
      if ok == nil and err then return end
    until core.monotime() >= self.wake_at - 0.001
  end
end

return _M
