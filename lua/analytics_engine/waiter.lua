--- Waiting for applications: polling that backs off, one request per round
-- however many applications are awaited, and no limit unless one is given.
local errors = require("analytics_engine.errors")
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")

local _M = {}

local DEFAULTS = { interval = 1, max_interval = 30, factor = 1.5 }

local function options(opts, where)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument: " .. where .. " options must be a table", 3) end
  return {
    timeout = opts.timeout,
    interval = opts.interval or DEFAULTS.interval,
    max_interval = opts.max_interval or DEFAULTS.max_interval,
    factor = opts.factor or DEFAULTS.factor,
    on_poll = opts.on_poll,
  }
end

-- Sleep `delay` jittered by ±10% so many waiters do not poll in step,
-- unless the deadline comes first. Returns false when the deadline passed.
local function pause(tr, delay, deadline)
  delay = delay * (0.9 + 0.2 * math.random())
  if deadline then
    local left = deadline - tr:now()
    if left <= 0 then return false end
    if delay > left then delay = left end
  end
  tr:sleep(delay)
  return true
end

local function timeout_error(what, o)
  return errors.new { code = "wait_timeout", operation = what,
                      message = ("gave up after %gs (the timeout you set); the application keeps running")
                        :format(o.timeout) }
end

local is_terminal = api.is_terminal

--- Wait until one application reaches a terminal state; returns its
-- details (get_application), or nil, err. The client's method
-- c:wait_for_application(id [, opts]).
function _M.wait_for_application(self, id, opts)
  local o = options(opts, "wait_for_application")
  local tr = self.transport
  local deadline = o.timeout and tr:now() + o.timeout
  local delay = o.interval
  while true do
    local st, err = self:get_application_state(id)
    if not st then
      if not err.retryable then return nil, err end
    else
      if o.on_poll then o.on_poll(st) end
      if is_terminal(st.state) then return self:get_application(id) end
    end
    if not pause(tr, delay, deadline) then return nil, timeout_error("wait_for_application", o) end
    delay = math.min(delay * o.factor, o.max_interval)
  end
end

--- Wait for many applications with one list request per round. Returns a
-- map id → summary (with `state`) once all are terminal, or nil, err. The
-- client's method c:wait_for_applications(ids [, opts]).
function _M.wait_for_applications(self, ids, opts)
  if type(ids) ~= "table" then error("bad argument #1 to 'wait_for_applications' (table expected)", 2) end
  local o = options(opts, "wait_for_applications")
  local tr = self.transport
  local deadline = o.timeout and tr:now() + o.timeout
  local delay = o.interval
  local done, left = {}, {}
  for _, id in ipairs(ids) do
    if not util.is_uuid(id) then
      return nil, errors.invalid("wait_for_applications", ("application id %s is not a valid id")
        :format(type(id) == "string" and ("'" .. id .. "'") or type(id)))
    end
    left[id] = true
  end
  while next(left) do
    local list, err = self:list_applications()
    if not list then
      if not err.retryable then return nil, err end
    else
      local seen = {}
      for _, app in ipairs(list.applications or {}) do
        local id = app.application_id or app.id
        if left[id] then
          seen[id] = true
          if is_terminal(app.state) then done[id], left[id] = app, nil end
        end
      end
      -- An application missing from the list (paged out, or a list the
      -- server truncates) is asked about directly.
      for id in pairs(left) do
        if not seen[id] then
          local st, serr = self:get_application_state(id)
          if not st then
            if not serr.retryable then return nil, serr end
          elseif is_terminal(st.state) then
            st.application_id = st.application_id or id
            done[id], left[id] = st, nil
          end
        end
      end
      if o.on_poll then o.on_poll(done, left) end
    end
    if next(left) then
      if not pause(tr, delay, deadline) then return nil, timeout_error("wait_for_applications", o) end
      delay = math.min(delay * o.factor, o.max_interval)
    end
  end
  return done
end

return _M
