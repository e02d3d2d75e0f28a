--- The event loop, below the client: one thread, many coroutines. Tasks
-- suspend on HTTP transfers, WebSockets, timers and each other, and the loop
-- sleeps in the core's one wait until something is due. Every blocking
-- primitive is built on suspend/wake.
--
-- A client takes a loop as an option (`ae.client { loop = l }`): its calls
-- made from one of the loop's tasks suspend that task; made anywhere else
-- they block, as without a loop. The workflow runner makes the loop of a run.
-- @module analytics_engine.loop
local _M = {}
local mt = { __index = _M }

local create, resume, status, running, yield = coroutine.create, coroutine.resume, coroutine.status,
  coroutine.running, coroutine.yield

-- The C core is loaded by new(), not here: the client layer requires this
-- module (for `active`), and a client under nginx must not load the core.
local core, monotime

local CANCELLED = { kind = "cancelled", message = "cancelled" }
_M.CANCELLED = CANCELLED

--- The loop when the calling coroutine is one of its tasks, else nil (the
-- caller then blocks as it would without a loop).
function _M.active(loop)
  if loop and loop.tasks[running()] then return loop end
  return nil
end

--- Make a loop. opts: on_tick (called once per turn), max_wait (seconds a
-- turn sleeps at most), max_transfers (HTTP transfers in flight at once).
function _M.new(opts)
  opts = opts or {}
  if not core then
    core = require("analytics_engine.core")
    monotime = core.monotime
  end
  return setmetatable({
    tasks = {},          -- coroutine → task
    ready = {},          -- FIFO of { task, values... }: ready[head..tail]
    head = 1, tail = 0,
    timers = {},         -- sorted by `at`
    transfers = {},      -- session → { id → task }
    sockets = {},        -- WebSocket handle → task waiting for it (wait_ws)
    live = 0,
    on_tick = opts.on_tick,        -- called once per loop turn (signals, flushes)
    max_wait = opts.max_wait or 0.25,
    -- Transfers in flight at once; the rest queue in order. 1,000 concurrent
    -- POSTs would hold 1,000 easy handles and connections (tens of MB) and
    -- finish no sooner against one server.
    max_transfers = opts.max_transfers or 64,
    in_flight = 0,
    slot_queue = {}, slot_head = 1,
  }, mt)
end

--- The running task, or nil outside the loop.
function _M.current(self)
  return self.tasks[running()]
end

--- Start `fn(...)` as a task; it first runs on the next loop turn.
function _M.spawn(self, name, fn, ...)
  local args = table.pack(...)
  local task = { name = name, done = false, joiners = {} }
  task.co = create(function()
    return xpcall(fn, debug.traceback, table.unpack(args, 1, args.n))
  end)
  self.tasks[task.co] = task
  self.live = self.live + 1
  self:wake(task)
  return task
end

--- Make `task` runnable; its suspend() returns the given values.
function _M.wake(self, task, ...)
  if task.done then return end
  task.waiting = nil
  self.tail = self.tail + 1
  self.ready[self.tail] = table.pack(task, ...)
end

--- Suspend the running task. `cancel` (optional) undoes its registration
-- when the task is cancelled while waiting.
function _M.suspend(self, cancel)
  local task = self.tasks[running()]
  assert(task, "suspend called outside a loop task")
  if task.cancelled then return nil, CANCELLED end
  task.waiting = cancel or true
  return yield()
end

-- Take `v` out of the array `list` (a timer, or a waiter leaving a queue).
local function remove_value(list, v)
  for i = 1, #list do
    if list[i] == v then table.remove(list, i) return end
  end
end

local function insert_timer(timers, t)
  local i = #timers
  while i >= 1 and timers[i].at > t.at do
    timers[i + 1] = timers[i]
    i = i - 1
  end
  timers[i + 1] = t
end

function _M.sleep(self, seconds)
  local task = self.tasks[running()]
  local t = { at = monotime() + math.max(seconds, 0), task = task }
  insert_timer(self.timers, t)
  return self:suspend(function() remove_value(self.timers, t) end)
end

-- A transfer slot: true at once when one is free, else after a FIFO wait
-- (nil, CANCELLED when cancelled while queued). A read (`ahead`) waits
-- ahead of the queued writes: a fan-out of 10,000 creates keeps ~1,000 POSTs
-- queued, and the poller's or admission's one small read behind them took
-- seconds, while every submission waited for that admission read.
local function acquire_slot(self, ahead)
  if self.in_flight < self.max_transfers then
    self.in_flight = self.in_flight + 1
    return true
  end
  local entry = { task = self.tasks[running()], ahead = ahead }
  local q = self.slot_queue
  if ahead then
    local i = self.slot_head -- (behind the reads already waiting)
    while q[i] and q[i].ahead do i = i + 1 end
    table.insert(q, i, entry)
  else
    q[#q + 1] = entry
  end
  local ok, err = self:suspend(function() entry.cancelled = true end)
  if ok == nil then return nil, err end
  return true
end

-- Hand the slot to the next queued task, or free it.
local function release_slot(self)
  local q = self.slot_queue
  while self.slot_head <= #q do
    local entry = q[self.slot_head]
    q[self.slot_head] = false
    self.slot_head = self.slot_head + 1
    if not entry.cancelled and not entry.task.done then
      self:wake(entry.task, true)
      return
    end
  end
  self.slot_queue, self.slot_head = {}, 1
  self.in_flight = self.in_flight - 1
end

local function start_transfer(self, session, req)
  local id, err = session:start(req)
  if not id then return nil, type(err) == "table" and err or { kind = "other", message = tostring(err) } end
  local task = self.tasks[running()]
  local waits = self.transfers[session]
  if not waits then
    waits = {}
    self.transfers[session] = waits
  end
  waits[id] = task
  local done, r = self:suspend(function()
    waits[id] = nil
    session:cancel(id)
  end)
  if done == nil then return nil, r end
  if r.res then return r.res end
  return nil, r.err
end

--- Start an HTTP transfer on `session` and suspend until it completes.
-- Returns res, or nil and the core's { kind, message } error.
function _M.http(self, session, req)
  local m = req.method
  local got, cerr = acquire_slot(self, m == nil or m == "GET" or m == "HEAD")
  if not got then return nil, cerr end
  -- pcall (yieldable in 5.4) so a bad request table cannot leak the slot.
  local ok, res, err = pcall(start_transfer, self, session, req)
  release_slot(self)
  if not ok then error(res, 0) end
  return res, err
end

--- Suspend until the core WebSocket handle `ws` is ready (its `ws:fd()`),
-- or `timeout` seconds pass (nil: no limit). Returns true either way (the
-- caller retries its non-blocking call), or nil, CANCELLED. `ws` may also be
-- a file descriptor (a number) to wait for reading: wait_fd.
function _M.wait_ws(self, ws, timeout)
  local task = self.tasks[running()]
  assert(task, "wait_ws called outside a loop task")
  assert(self.sockets[ws] == nil, "another task already waits on this WebSocket")
  self.sockets[ws] = task
  local t
  if timeout then
    t = { at = monotime() + math.max(timeout, 0), task = task }
    insert_timer(self.timers, t)
  end
  local ok, err = self:suspend(function()
    self.sockets[ws] = nil
    if t then remove_value(self.timers, t) end
  end)
  self.sockets[ws] = nil
  if t then remove_value(self.timers, t) end
  if ok == nil then return nil, err end
  return true
end
_M.wait_fd = _M.wait_ws

--- Wait for another task to finish; returns its ok, results...
function _M.join(self, task)
  if not task.done then
    local me = self.tasks[running()]
    task.joiners[#task.joiners + 1] = me
    local ok, err = self:suspend(function() remove_value(task.joiners, me) end)
    if ok == nil and err == CANCELLED then return nil, CANCELLED end
  end
  return table.unpack(task.result, 1, task.result.n)
end

--- Cancel a task: whatever it waits on returns nil, CANCELLED, and every later
-- wait does too, so it unwinds through its own error paths.
function _M.cancel(self, task)
  if task.done or task.cancelled then return end
  task.cancelled = true
  if task.waiting then
    if type(task.waiting) == "function" then task.waiting() end
    self:wake(task, nil, CANCELLED)
  end
end

--- A counting semaphore (max_parallel).
function _M.semaphore(self, n)
  local sem = { free = n, queue = {} }
  function sem.acquire()
    if sem.free > 0 then
      sem.free = sem.free - 1
      return true
    end
    local me = self.tasks[running()]
    sem.queue[#sem.queue + 1] = me
    local ok, err = self:suspend(function() remove_value(sem.queue, me) end)
    if ok == nil then return nil, err end
    return true
  end
  function sem.release()
    local nxt = table.remove(sem.queue, 1)
    if nxt then self:wake(nxt, true) else sem.free = sem.free + 1 end
  end
  return sem
end

--- A condition many tasks can wait on; signal wakes them all.
function _M.condition(self)
  local cond = { waiters = {} }
  function cond.wait()
    local me = self.tasks[running()]
    cond.waiters[me] = true
    return self:suspend(function() cond.waiters[me] = nil end)
  end
  function cond.signal(...)
    local w = cond.waiters
    cond.waiters = {}
    for t in pairs(w) do self:wake(t, ...) end
  end
  return cond
end

local function finish(self, task, ok, ...)
  task.done = true
  task.result = table.pack(ok, ...)
  if not ok then task.error = (...) end
  self.tasks[task.co] = nil
  self.live = self.live - 1
  for _, j in ipairs(task.joiners) do self:wake(j, true) end
  task.joiners = {}
end

local function run_ready(self)
  local ready = self.ready
  while self.head <= self.tail do
    local entry = ready[self.head]
    ready[self.head] = nil
    self.head = self.head + 1
    local task = entry[1]
    if not task.done then
      local ok, a, b, c, d = resume(task.co, table.unpack(entry, 2, entry.n))
      if not ok then
        finish(self, task, false, a)
      elseif status(task.co) == "dead" then
        -- a is xpcall's ok flag; the rest are fn's results or the traceback.
        finish(self, task, a, b, c, d)
      end
    end
  end
  self.head, self.tail = 1, 0
end

local function pending_transfers(self)
  for _, waits in pairs(self.transfers) do
    if next(waits) then return true end
  end
  return false
end

local function wait_for_events(self)
  local now = monotime()
  local timeout = self.max_wait
  local first = self.timers[1]
  if first then timeout = math.max(0, math.min(timeout, first.at - now)) end
  -- WebSockets join the one wait: passed as extra fds to the first poll.
  local socks
  if next(self.sockets) then
    socks = {}
    for ws in pairs(self.sockets) do socks[#socks + 1] = ws end
  end
  if self.head <= self.tail then timeout = 0 end
  if pending_transfers(self) then
    local waited = false
    for session, waits in pairs(self.transfers) do
      if next(waits) then
        for _, r in ipairs(session:poll(waited and 0 or timeout, not waited and socks or nil)) do
          local task = waits[r.id]
          if task then
            waits[r.id] = nil
            self:wake(task, true, r)
          end
        end
        waited = true
      end
    end
  elseif socks then
    core.wait_fds(socks, timeout)
  elseif timeout > 0 and self.head > self.tail then
    core.sleep(timeout)
  end
  if socks then -- each waiter retries its non-blocking call (and waits again if need be)
    for _, ws in ipairs(socks) do
      local task = self.sockets[ws]
      if task then
        self.sockets[ws] = nil
        self:wake(task, true)
      end
    end
  end
  now = monotime()
  local timers = self.timers
  while timers[1] and timers[1].at <= now do
    local t = table.remove(timers, 1)
    self:wake(t.task, true)
  end
end

--- Run until every task is done (or `stop()` returns true). Returns true, or
-- false and a message when tasks are left waiting on nothing.
function _M.loop(self, stop)
  while true do
    run_ready(self)
    if self.on_tick then self.on_tick(self) end
    run_ready(self)
    if self.live == 0 or (stop and stop()) then return true end
    if self.head > self.tail and not self.timers[1] and not pending_transfers(self)
      and not next(self.sockets) then
      return false, "deadlock: tasks wait on nothing that can wake them"
    end
    wait_for_events(self)
  end
end

return _M
