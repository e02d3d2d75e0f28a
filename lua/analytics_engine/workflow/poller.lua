--- One rate-aware poller for every application a run awaits: a list request
-- per round (not one request per application), an interval that grows while
-- nothing changes and shrinks when something does, jitter, and a cap on
-- requests per round for applications the list does not show. A newly
-- watched application is polled at most `interval` after the last round (not
-- after a sleep that grew while nothing changed), so the state a person sees
-- is the engine's within about one interval.
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

--- Seconds without one answered poll before the awaited applications fail.
_M.UNREACHABLE_TIMEOUT = 300

function _M.new(sched, client, opts)
  opts = opts or {}
  return setmetatable({
    sched = sched, client = client,
    min_interval = opts.interval or 1,
    max_interval = opts.max_interval or 15,
    max_direct = opts.max_direct or 5,      -- single-status requests per round
    -- rows per list request (false: the whole list in one)
    page = opts.page == nil and _M.PAGE or opts.page or nil,
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
    rounds = 0, requests = 0,
  }, mt)
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
  end
  return w
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
    if not next(w.waiters) and not w.follows and self.watched[id] == w then
      self.watched[id] = nil
      self.count = self.count - 1
    end
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
    self.watched[id] = nil
    self.count = self.count - 1
  end
end

local function resolve(self, id, app)
  local w = self.watched[id]
  if not w then return end
  self.watched[id] = nil
  self.count = self.count - 1
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

function _M.round(self)
  self.rounds = self.rounds + 1
  local round = self.rounds
  self.last_round = core.monotime()
  local changed = false
  local page, start = self.page, 0
  -- Stop paging once every application watched at the start was seen.
  local want, seen = self.count, 0
  while true do
    self.requests = self.requests + 1
    local list, err = self.client:list_applications(page and { limit = page, start = start } or nil)
    if not list then
      if start == 0 then return false, err end
      break -- a later page failed: what was seen counts, the rest next round
    end
    local rows = list.applications or {}
    list = nil -- luacheck: ignore 311 (let the page go before the next one)
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
    rows = nil -- luacheck: ignore 311
    if not page or n ~= page or seen >= want or self.count == 0 then break end
    start = start + n
  end
  -- Ask directly about a few the list did not show (a trimmed list, or one
  -- that moved between pages).
  local direct = 0
  for id, w in pairs(self.watched) do
    if direct >= self.max_direct then break end
    if w.polled ~= round then
      direct = direct + 1
      self.requests = self.requests + 1
      local st = self.client:get_application_state(id)
      if st then
        st.application_id = st.application_id or id
        changed = observe(self, id, st) or changed
      end
    end
  end
  return changed
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
  for _, id in ipairs(ids) do
    local w = self.watched[id]
    self.watched[id] = nil
    self.count = self.count - 1
    if w.waiters then
      for t in pairs(w.waiters) do self.sched:wake(t, nil, failure) end
    end
    if w.follows and self.on_end then
      w.follows = nil
      self.on_end(w, nil, failure)
    end
  end
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
