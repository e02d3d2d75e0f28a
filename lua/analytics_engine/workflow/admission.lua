--- Quota-aware admission: a submission is sent only while what the instance
-- runs and holds pending, plus what this application asks for, fits the
-- instance's resource_consumption_limits. The service queues what does not
-- fit (QUEUED, instance_quota_exhausted) and everyone else on the instance
-- then waits behind it; holding it here instead keeps the instance's queue
-- empty and lets several runs share the room.
--
-- The limits, the default configs and the consumption are read from the
-- service (so other runs and other users count), cached, and read again at
-- the poller's pace: at most one request per round. Between two reads the
-- applications this run sent since the last read are added on top of it.
-- Waiters are admitted in the order of their intents (strict FIFO: a big
-- application is not overtaken forever by small ones). 429 and 503 answers
-- halve the number of admissions per round and add one per quiet round
-- (AIMD), honouring Retry-After.
local core = require("analytics_engine.core")
local retry = require("analytics_engine.retry")
local resources = require("analytics_engine.resources")
local quota = require("analytics_engine.workflow.quota")

local _M = {}
local mt = { __index = _M }

local floor, huge, max, min = math.floor, math.huge, math.max, math.min

-- The quota's arithmetic and texts (workflow/quota.lua) under this module's
-- name too, as admission's own (its spec reads them so).
for _, name in ipairs { "cores_text", "memory_text", "need_text", "limits_text", "held_text", "too_large",
                        "limits_of", "used_of", "at_once", "plan_demands", "waves" } do
  _M[name] = quota[name]
end

_M.LIMITS_TTL = 300        -- seconds before the limits and default configs are read again
_M.MAX_WINDOW = 64         -- admissions per round above which the rate is unlimited again
_M.FAIL_OPEN_AFTER = 5     -- failed reads in a row before submitting without admission
_M.MAX_REFUSALS = 30       -- 429/503 answers to one attempt before it fails
_M.SEND_AHEAD = 32         -- sends overlap while the free room holds this many more
_M.BACKOFF_STATUS = { [429] = true, [503] = true }
-- Answers that say the limits are not published (none set, no scheduler that
-- supports them, not for this caller): admission stands aside.
_M.UNPUBLISHED = { [400] = true, [403] = true, [404] = true, [405] = true, [501] = true }
_M.PHASE = "held for quota"
-- Actions after which the limits or default configs are read again.
_M.CHANGES = { set_configs = true, update_configs = true, set_limits = true, delete_limits = true, call = true }

---------------------------------------------------------------------------
-- AIMD: `window` admissions per round (nil: unlimited). Back-pressure halves
-- it, at most once per round (a burst of 503s is one signal, as TCP counts
-- one loss per round trip), and keeps everyone out until Retry-After (or the
-- next round); each round without back-pressure adds one.

function _M.aimd()
  return { window = nil, admitted = 0, last = 0, round = 0, cut_round = -1, not_before = -huge }
end

function _M.aimd_allows(a, now)
  return now >= a.not_before and (a.window == nil or a.admitted < a.window)
end

function _M.aimd_admit(a)
  a.admitted = a.admitted + 1
end

--- A new round: additive increase when the one before had no back-pressure.
function _M.aimd_round(a)
  if a.window and a.cut_round ~= a.round then
    a.window = a.window + 1
    if a.window > _M.MAX_WINDOW then a.window = nil end
  end
  a.last, a.admitted = a.admitted, 0
  a.round = a.round + 1
end

--- Back-pressure at `now`: multiplicative decrease. Returns the new window
-- and whether it changed.
function _M.aimd_backoff(a, now, retry_after, interval)
  local changed = false
  if a.cut_round ~= a.round then
    local base = a.window or max(a.admitted + a.last, 2)
    a.window = max(1, floor(base / 2))
    a.cut_round = a.round
    changed = true
  end
  a.not_before = max(a.not_before, now + (retry_after or interval or 1))
  return a.window, changed
end

---------------------------------------------------------------------------
-- the admission of one run

--- opts: client, sched, emit(ev), interval (min seconds between reads: the
-- poller's), max_interval, clock (monotonic).
function _M.new(opts)
  return setmetatable({
    client = opts.client, sched = opts.sched, emit = opts.emit or function() end,
    min_interval = opts.interval or 1, max_interval = opts.max_interval or 15,
    clock = opts.clock or core.monotime,
    peers = opts.peers,  -- admission_peers: runs on this machine take turns
    waiters = {},        -- FIFO by intent time
    tickets = {},        -- admitted, not yet seen in a read of the consumption
    held_c = 0, held_m = 0, -- the tickets' demand, summed (see add_ticket)
    landings = 0,        -- answered submissions, counted
    limits = nil,        -- nil: not read; false: none set; { cores_m, memory_mib }
    defaults = nil,      -- the instance's default configs
    snap = nil,          -- { used, seq (landings when asked), at }
    stale = { limits = true, defaults = true },
    aimd = _M.aimd(),
    failures = 0, seq = 0,
  }, mt)
end

-- The tickets' demand is kept summed as they come and go: used() is asked
-- for every waiter at every pump and for every send, and a walk over the
-- tickets there was a third of the runner's CPU in a 2,000-item run. Every
-- ticket held counts (read() drops those a read of the consumption shows);
-- read() sums them afresh, so rounding cannot build up.
local function add_ticket(self, t)
  self.tickets[t] = true
  self.held_c, self.held_m = self.held_c + t.d.cores_m, self.held_m + t.d.memory_mib
end

local function drop_ticket(self, t)
  if not self.tickets[t] then return end
  self.tickets[t] = nil
  self.held_c, self.held_m = self.held_c - t.d.cores_m, self.held_m - t.d.memory_mib
end

local function resum_tickets(self)
  local c, m = 0, 0
  for t in pairs(self.tickets) do c, m = c + t.d.cores_m, m + t.d.memory_mib end
  self.held_c, self.held_m = c, m
end

local function parse_retry_after(v)
  if v == nil then return nil end
  return retry.parse_retry_after(tostring(v))
end

--- Note an answer of the service (every attempt, also those the client
-- retries by itself): 429/503 is back-pressure.
function _M.observe(self, status, retry_after)
  if not _M.BACKOFF_STATUS[status] then return end
  -- a 503 may be a refusal for room we counted on: the limits may have
  -- shrunk since they were read, so the next round reads them again
  if status == 503 then self.stale.limits = true end
  local window, changed = _M.aimd_backoff(self.aimd, self.clock(), parse_retry_after(retry_after), self:pace())
  if changed then
    self.emit { event = "admission_rate", window = window, status = status,
                retry_after = parse_retry_after(retry_after),
                message = ("the service answered %d: at most %d submission%s per round now"):format(status, window,
                  window == 1 and "" or "s") }
  end
end

-- Seconds between two reads: the poller's interval, growing while nothing changes.
function _M.pace(self)
  return self.interval or self.min_interval
end

local function failed_read(self, what, err)
  self:observe(err.status, err.retry_after)
  self.failures = self.failures + 1
  if self.failures >= _M.FAIL_OPEN_AFTER and not self.open then
    self.open = true
    self.emit { event = "log", step = "admission", message = ("cannot read the instance's %s (%s) %d times in a row; "
      .. "submitting without admission until a read succeeds"):format(what, tostring(err), self.failures) }
  end
end

--- Read one thing from the service: the limits or the default configs when
-- stale, else the consumption (none while no limits are set). Returns true
-- when something was read.
function _M.read(self)
  local now = self.clock()
  if self.learned_at and now - self.learned_at > _M.LIMITS_TTL then
    self.stale.limits, self.stale.defaults = true, true
  end
  local c = self.client
  if self.stale.limits then
    local body, err = c:get_resource_consumption_limits()
    if body or (err and _M.UNPUBLISHED[err.status]) then
      self.stale.limits, self.failures, self.open = false, 0, false
      self.learned_at = now
      local before = self.limits
      self.limits = body and quota.limits_of(body) or false
      if before == nil or (before and not self.limits) or (self.limits and not before)
         or (before and self.limits and quota.limits_text(before) ~= quota.limits_text(self.limits)) then
        self.emit { event = "admission", limits = self.limits and {
                      cores = self.limits.cores_m < huge and quota.cores_text(self.limits.cores_m) or nil,
                      memory_mib = self.limits.memory_mib < huge and floor(self.limits.memory_mib) or nil } or nil,
                    message = self.limits and ("submissions wait for room in %s (resource_consumption_limits)")
                      :format(quota.limits_text(self.limits))
                      or ("no resource consumption limits to wait for (%s): submissions go as they come")
                      :format(body and "none set" or tostring(err.status) .. " " .. tostring(err.message)) }
      end
      return true
    end
    failed_read(self, "resource consumption limits", err)
    return false
  end
  if self.stale.defaults then
    local body, err = c:get_instance_default_configs()
    if body then
      self.stale.defaults, self.failures = false, 0
      self.defaults = type(body) == "table" and body or {}
      return true
    end
    failed_read(self, "default configs", err)
    return false
  end
  if not self.limits then return false end
  local seq = self.landings
  local body, err = c:get_current_resource_consumption()
  if not body then
    if _M.UNPUBLISHED[err.status] then -- the service says the instance has no quota (or not to us)
      self.limits = false
      return true
    end
    failed_read(self, "current resource consumption", err)
    return false
  end
  self.failures, self.open = 0, false
  local used = quota.used_of(body)
  local before = self.snap and self.snap.used
  self.snap = { used = used, seq = seq, at = self.clock() }
  -- What landed before this read was asked is in it now; what landed after
  -- it was asked, or is still being sent, is not.
  for t in pairs(self.tickets) do
    if t.state == "landed" and t.seq <= seq then self.tickets[t] = nil end
  end
  resum_tickets(self)
  if before and before.cores_m == used.cores_m and before.memory_mib == used.memory_mib then
    self.interval = min((self.interval or self.min_interval) * 1.5, self.max_interval)
  else
    self.interval = self.min_interval
  end
  return true
end

--- At run start: the limits and default configs (two requests).
function _M.prepare(self)
  self:read()
  if self.stale.limits then return nil, "limits" end
  self:read()
  return true
end

--- The instance's use as this run knows it: the last read plus what this
-- run admitted or sent after it was asked (every ticket still held).
function _M.used(self)
  local u = self.snap and self.snap.used or { cores_m = 0, memory_mib = 0 }
  return { cores_m = u.cores_m + self.held_c, memory_mib = u.memory_mib + self.held_m }
end

--- What an application with `conf` asks for, over the instance's defaults:
-- { cores_m, memory_mib } or nil, "key: message".
function _M.demand(self, conf)
  return resources.demand(conf, self.defaults or {})
end

-- May `d` go now? true, or false and why ("rate", "quota", "unknown").
function _M.room_for(self, d)
  if not _M.aimd_allows(self.aimd, self.clock()) then return false, "rate" end
  if self.limits == false or self.open then return true end
  if self.limits == nil or not self.snap then return false, "unknown" end
  if not resources.fits(self.limits, self:used(), d) then return false, "quota" end
  return true
end

local function held_message(self, w, why)
  if why == "rate" then
    return quota.need_text(w.d) .. "; the service pushed back (429/503): admitting fewer per round"
  elseif why == "turn" then
    return quota.need_text(w.d) .. "; another run on this machine has waited longer"
  end
  local used = self:used()
  return quota.held_text(w.d, self.limits or { cores_m = huge, memory_mib = huge }, used)
end

--- Admit waiters in intent order while they fit.
function _M.pump(self)
  local w = self.waiters[1]
  local why
  while w do
    local ok
    ok, why = self:room_for(w.d)
    if ok and self.peers and self.limits and not self.open and self.peers:older(w.intent_at) then
      ok, why = false, "turn"
    end
    if not ok then break end
    table.remove(self.waiters, 1)
    local t = { d = w.d, state = "admitted" }
    add_ticket(self, t)
    _M.aimd_admit(self.aimd)
    w.ticket = t
    if w.suspended then self.sched:wake(w.task, t) end
    w = self.waiters[1]
  end
  if self.peers then self.peers:note(self.waiters[1] and self.waiters[1].intent_at) end
  -- The first in line cannot fit even an idle instance (the limits shrank
  -- under it): read the limits each round until they grow, not every LIMITS_TTL.
  if why == "quota" and w and quota.too_large(w.d, self.limits) then self.stale.limits = true end
  if why == "rate" or why == "quota" or why == "turn" then
    for _, h in ipairs(self.waiters) do
      if not h.held then
        h.held = true
        h.on_held(held_message(self, h, why), why, self:used())
      end
    end
  end
end

-- One round: a read of the service (one request at most), then the
-- admissions it allows. Never two reads at once.
local function round(self)
  if self.reading then return end
  self.reading = true
  self.round_at = self.clock()
  _M.aimd_round(self.aimd)
  self:read()
  self.reading = false
  self:pump()
end

-- Rounds while anything waits: a read when the pace says so; the task looks
-- every min_interval.
local function ensure_rounds(self)
  if self.rounds and not self.rounds.done then return end
  self.rounds = self.sched:spawn("admission", function()
    while #self.waiters > 0 do
      local ok, err = self.sched:sleep(self.min_interval * (0.85 + 0.3 * math.random()))
      if ok == nil and err then return end
      local now = self.clock()
      if now >= self.aimd.not_before and (not self.round_at or now - self.round_at >= self:pace()) then
        round(self)
      end
    end
  end)
end

--- One of this run's applications changed state (the poller saw it): room
-- may have freed, so a round runs now rather than at the pace.
function _M.nudge(self)
  self.interval = self.min_interval
  if #self.waiters == 0 or self.reading or self.clock() < self.aimd.not_before then return end
  self.sched:spawn("admission read", function() round(self) end)
end

--- Wait until an application asking for `d` may be sent. `w`: { intent_at,
-- on_held(message, why, used) }. Returns a ticket, or nil, "cancelled", or
-- nil, message, "final" (it can never fit).
function _M.acquire(self, d, w)
  local big = quota.too_large(d, self.limits)
  if big then return nil, big, "final" end
  w.d = d
  w.task = self.sched:current()
  self.seq = self.seq + 1
  w.seq = self.seq
  w.on_held = w.on_held or function() end
  local at = w.intent_at or core.time()
  w.intent_at = at
  local i = #self.waiters
  while i >= 1 and (self.waiters[i].intent_at > at) do i = i - 1 end
  table.insert(self.waiters, i + 1, w)
  -- No read yet, or an old one: this task makes this round's read.
  if self.limits ~= false and (not self.snap or self.clock() - self.snap.at >= self:pace() or self.stale.limits) then
    round(self)
  else
    self:pump()
  end
  if w.ticket then return w.ticket end
  ensure_rounds(self)
  w.suspended = true
  local t = self.sched:suspend(function()
    for j, x in ipairs(self.waiters) do
      if x == w then table.remove(self.waiters, j) break end
    end
  end)
  if not t then return nil, "cancelled" end
  return t
end

--- The runner's side of acquire: wait for room for an application with
-- `conf`, noting the hold on the attempt `att` (state file, report) and in
-- events ("held for quota" with the numbers). Returns a ticket, or nil,
-- message and "final" | nil, "cancelled".
function _M.hold(self, emit, step_name, index, att, conf)
  local d, derr = self:demand(conf)
  if not d then return nil, "conf: " .. derr .. "; nothing was sent", "final" end
  att.wanted_at = att.wanted_at or core.time()
  att.admitted_at = nil
  local needs = { cores = quota.cores_text(d.cores_m), memory_mib = floor(d.memory_mib) }
  local t, err, kind = self:acquire(d, { intent_at = att.wanted_at, on_held = function(msg, why, used)
    att.held_at = att.held_at or core.time()
    att.held = msg
    local lim = self.limits or {}
    emit { event = "application_held", phase = _M.PHASE, step = step_name, item = index, attempt = att.n,
           token = att.token, reason = why, message = msg, needs = needs,
           free = lim.cores_m and { cores = quota.cores_text(max(0, lim.cores_m - used.cores_m)),
                                    memory_mib = lim.memory_mib < huge
                                      and floor(max(0, lim.memory_mib - used.memory_mib)) or nil } or nil,
           limits = lim.cores_m and { cores = quota.cores_text(lim.cores_m),
                                      memory_mib = lim.memory_mib < huge and floor(lim.memory_mib) or nil } or nil }
  end })
  if t and att.held_at then
    att.admitted_at = core.time()
    emit { event = "application_admitted", step = step_name, item = index, attempt = att.n, token = att.token,
           held_seconds = att.admitted_at - att.held_at }
  end
  return t, err, kind
end

--- Send a submission under a ticket (one at a time, so the service counts
-- each before it sees the next) and account for the answer.
function _M.send(self, t, fn)
  -- One at a time only where the quota is in play and close to used up:
  -- while what is free after everything admitted still holds SEND_AHEAD
  -- more like this one, the sends overlap (the service cannot refuse them
  -- for the quota; one at a time held a 10,000-item run to the engine's
  -- speed for a single connection). Without limits as before.
  local lock = self.limits and not self.open and not self:ample(t.d)
  if lock then
    if not self.sending then self.sending = self.sched:semaphore(1) end
    if not self.sending.acquire() then
      drop_ticket(self, t)
      return nil, { message = "cancelled", cancelled = true }
    end
  end
  local res, err = fn()
  if lock then self.sending.release() end
  if res or (err and err.ambiguous) then
    -- Accepted (or maybe): counted until a read of the consumption shows it.
    self.landings = self.landings + 1
    t.state, t.seq = "landed", self.landings
  else
    drop_ticket(self, t)
    if err then self:observe(err.status, err.retry_after) end
  end
  return res, err
end

--- Does the room left after everything admitted hold SEND_AHEAD more of `d`?
function _M.ample(self, d)
  if not d or not self.limits then return false end
  local k = _M.SEND_AHEAD
  return (resources.fits(self.limits, self:used(), { cores_m = d.cores_m * k, memory_mib = d.memory_mib * k }))
end

--- A ticket that will not be used (nothing was sent).
function _M.forget(self, t)
  drop_ticket(self, t)
end

--- Is `err` (a failed submission) one to wait for admission again for?
function _M.refused(err)
  return err ~= nil and not err.ambiguous and _M.BACKOFF_STATUS[err.status] == true
end

--- The run ends: its turn is given up.
function _M.close(self)
  if self.peers then self.peers:close() end
end

--- The limits or default configs changed (a step set them): read them again.
function _M.invalidate(self)
  self.stale.limits, self.stale.defaults = true, true
end

---------------------------------------------------------------------------
-- before anything is sent: the start of `aeflow run`

--- At run start: read the limits and default configs, and find a submit
-- step whose application can never fit (`done(name)`: a step a resumed run
-- finished already, left alone). Returns nil, or { step = name, message }
-- (the run then sends nothing).
function _M.preflight(self, plan, scope, done)
  if not self:prepare() or not self.limits then return nil end
  for _, p in ipairs(quota.plan_demands(plan, self.defaults, scope)) do
    local big = quota.too_large(p.d, self.limits)
    if big and not (done and done(p.step.name)) then
      return { step = p.step.name, message = big .. "; nothing was sent" }
    end
  end
  return nil
end

return _M
