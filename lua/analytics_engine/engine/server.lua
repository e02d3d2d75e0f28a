--- The engine's event loop and request dispatch. One thread: a loop over
-- server:poll(timeout), where the timeout is the time to the next timer
-- (delayed answers) capped so children are reaped and states advance
-- promptly. Nothing here blocks.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local reply = require("analytics_engine.engine.reply")
local validate = require("analytics_engine.engine.validate")
local durable = require("analytics_engine.engine.durable")
local handlers = require("analytics_engine.engine.handlers")
local apps = require("analytics_engine.engine.apps")
local clusters = require("analytics_engine.engine.clusters")
local kernels = require("analytics_engine.engine.kernels")
local page = require("analytics_engine.engine.page")
local auth = require("analytics_engine.engine.auth")
local router = require("analytics_engine.engine.router")
local guard = require("analytics_engine.engine.guard")
local answers = require("analytics_engine.engine.answers")

local _M = {}

local H = handlers.handlers
local monotime = core.monotime
local IDLE_WAIT, BUSY_WAIT = 0.2, 0.05
local KERNEL_PREFIX = kernels.PREFIX
-- ctx.query of a request without one: shared, read only (handlers only read ctx.query)
local NO_QUERY = setmetatable({}, { __newindex = function() error("ctx.query is read only", 2) end })

local function log(eng, req, status, t0, note)
  if eng.opts.quiet then return end
  -- the method and path are the client's bytes: shown, never sent to a terminal as they are
  io.stdout:write(("%s %s %d %.1fms%s\n"):format(reply.printable(req.method), reply.printable(req.path), status,
    (monotime() - t0) * 1000, note and (" " .. note) or ""))
  io.stdout:flush()
end

local function where(req)
  return req.method .. " " .. req.path
end

local function count(map, key)
  map[key] = (map[key] or 0) + 1
end

-- Answer a request once: a second answer (a handler that answered and then
-- failed) is dropped. A handler that answers later returns a function; it
-- gets `respond`, and an error it raises is that request's 500.
local send
-- (a function of its own: the closure is made only for a handler that answers later)
local function send_later(eng, req, t0, later)
  local function respond(...) return send(eng, req, t0, ...) end
  local ok, err = xpcall(later, debug.traceback, respond)
  if not ok and not req.answered then send(eng, req, t0, guard.internal_error(where(req), err)) end
end

function send(eng, req, t0, status, body, headers, note)
  if type(status) == "function" then return send_later(eng, req, t0, status) end
  if req.answered then return end
  req.answered = true
  local st, h, b = reply.encode(status, body, headers)
  eng.server:respond(req.id, st, h, b)
  if not eng.opts.quiet then log(eng, req, st, t0, note) end
end

-- Decode the body of an operation that takes one: an object, or an error triple.
local function decode_body(op, req)
  local raw = req.body or ""
  if raw:find("^%s*$") then
    if op.optional_body then return {} end
    return nil, reply.bad_request("request body is required")
  end
  local v, err = util.json_decode(raw)
  if v == nil then return nil, reply.error(400, "invalid_json", "request body is not valid JSON: " .. tostring(err)) end
  if not validate.is_object(v) or (next(v) == nil and raw:find("^%s*%[")) then
    return nil, reply.bad_request("request body must be a JSON object")
  end
  return v
end

--- The one check every door goes through, HTTP and WebSocket upgrades alike:
-- who is calling (401), and may their role pass this door (403)?
-- -> user (nil for an open door), nil, nil, expiry | nil, status, message
-- (expiry: when the Authorization header's credential stops passing, nil
-- for a key or a cookie)
local function admit(eng, req, door)
  if door.role == nil then return nil end
  local user, err, exp = eng.auth:authenticate(req.headers.authorization)
  if not user and door.cookie then user, exp = page.cookie_user(eng, req), nil end
  if not user then return nil, 401, err or "authorization required" end
  local ok, perr = auth.permits(user, door)
  if not ok then return nil, 403, perr end
  return user, nil, nil, exp
end
_M.admit = admit

--- Run the operation for a routed request -> status, body, headers.
local function process(eng, req, op, params)
  local user, status, message, exp = admit(eng, req, op)
  if status then return reply.error(status, status == 401 and "unauthorized" or "forbidden", message) end
  local iid = params.instance_id
  if iid and iid ~= eng.instance_id then -- (the instance's own id is a valid one: no pattern to run)
    if not util.is_uuid(iid) then
      return reply.error(400, "invalid_instance_id", ("instance_id '%s' is not a valid id"):format(iid))
    end
    return reply.error(404, "instance_not_found", ("instance %s does not exist"):format(iid))
  end
  local body
  if op.body then
    local s, b, h
    body, s, b, h = decode_body(op, req)
    if body == nil then return s, b, h end
    local vok, verr = validate.body(op.name, body)
    if not vok then return reply.bad_request(verr) end
  end
  local handler = H[op.name]
  if not handler then
    return reply.error(501, "not_implemented", op.name .. " is not implemented by the local engine")
  end
  local q = req.query
  q = (q == nil or q == "") and NO_QUERY or util.parse_query(q)
  local ctx = { method = req.method, params = params, query = q, body = body,
                headers = req.headers, user = user, req = req }
  guard.fail_point(op.name)
  -- Only a revertible operation is ever rolled back: the reads that make
  -- most of the load skip the mark (two tables per request).
  local mark = durable.REVERTIBLE[op.name] and durable.mark(eng) or nil
  local rstatus, rbody, rheaders = handler(eng, ctx)
  rstatus, rbody, rheaders = durable.finish(eng, op, mark, rstatus, rbody, rheaders)
  if eng.answers and answers.CACHEABLE[op.name] and rstatus == 200 then
    -- (what send() will send: encoding an encoded answer leaves it as it is)
    rstatus, rheaders, rbody = reply.encode(rstatus, rbody, rheaders)
    answers.keep(eng, req, op, params, exp, rstatus, rheaders, rbody)
  end
  return rstatus, rbody, rheaders
end

--- The answer to a routed (or unrouted) request -> status, body, headers.
local function run(eng, req, op, params, allowed)
  if not op then
    if params == 405 then
      return reply.error(405, "method_not_allowed", ("%s is not allowed on %s"):format(req.method, req.path),
        { Allow = allowed })
    elseif req.path:find(KERNEL_PREFIX) then
      return process(eng, req, kernels.OPERATION, { instance_id = req.path:match("^/v4/[^/]+/([^/]+)/") })
    end
    return reply.error(404, "not_found", ("no such endpoint: %s %s"):format(req.method, req.path))
  end
  return process(eng, req, op, params)
end

local dispatch_faulty

local function dispatch(eng, req, t0)
  if req.too_large then
    return send(eng, req, t0, reply.error(413, "request_too_large",
      ("request body is larger than %d bytes"):format(eng.opts.max_body)))
  end
  -- The engine's own read-only page (/ and /login), with its cookie login.
  if page.handles(req.path) then
    local door = router.page_door(req.method, req.path)
    local user, status, message
    if door then user, status, message = admit(eng, req, door) end
    return send(eng, req, t0, page.handle(eng, req, user, status, message))
  end
  local op, params, allowed = eng.router:match(req.method, req.path)
  count(eng.stats.requests, op and op.name or "unrouted")
  if not eng.faults then return send(eng, req, t0, run(eng, req, op, params, allowed)) end
  return dispatch_faulty(eng, req, t0, op, params, allowed)
end

-- dispatch with --faults on: a fault may be injected instead of (or around) the answer.
function dispatch_faulty(eng, req, t0, op, params, allowed)
  local kind = req.path:sub(1, 4) == "/v4/" and eng.faults:decide(op and op.name)
  if kind then
    count(eng.stats.faults, kind)
    if kind == "reset" then
      eng.server:drop(req.id)
      return log(eng, req, 0, t0, "fault=reset")
    elseif kind == "429" then
      return send(eng, req, t0, reply.error(429, "too_many_requests", "injected fault: too many requests",
        { ["Retry-After"] = "1" }))
    elseif kind == "500" then
      return send(eng, req, t0, reply.error(500, "internal_error", "injected fault: internal server error"))
    elseif kind == "503" then
      return send(eng, req, t0, reply.error(503, "service_unavailable", "injected fault: service unavailable"))
    end
  end

  if kind == "delay" then
    eng.timers[#eng.timers + 1] = { at = monotime() + eng.faults.delay, fn = function()
      local ok, err = xpcall(function()
        guard.fail_point("timer")
        send(eng, req, t0, run(eng, req, op, params, allowed))
      end, debug.traceback)
      if not ok and not req.answered then send(eng, req, t0, guard.internal_error(where(req), err)) end
    end }
    return
  elseif kind == "reset-after" then
    local status = run(eng, req, op, params, allowed)
    eng.server:drop(req.id)
    return log(eng, req, status, t0, "fault=reset-after")
  end
  return send(eng, req, t0, run(eng, req, op, params, allowed))
end

--- Handle one request. Whatever fails inside is this request's 500; the
-- engine goes on serving.
local function handle(eng, req)
  local t0 = monotime()
  local ok, err = xpcall(dispatch, debug.traceback, eng, req, t0)
  if not ok and not req.answered then
    local sok, serr = pcall(send, eng, req, t0, guard.internal_error(where(req), err))
    if not sok then
      guard.log("answering a failed request", serr)
      pcall(eng.server.drop, eng.server, req.id)
    end
  elseif not ok then
    guard.log(where(req) .. " (after its answer)", err)
  end
end
_M.handle = handle

local function fire_timers(eng)
  if eng.timers[1] == nil then return end -- (the usual case: no table made per poll)
  local now, due, keep = monotime(), {}, {}
  for _, t in ipairs(eng.timers) do
    if t.at <= now then due[#due + 1] = t else keep[#keep + 1] = t end
  end
  if #due == 0 then return end
  eng.timers = keep
  for _, t in ipairs(due) do guard.call("a timer", t.fn) end
end

local function busy(eng)
  return eng.lifecycle:busy() or next(eng.clusters_pending) ~= nil
end

local function tick(eng)
  guard.call("the applications' tick", function()
    guard.fail_point("tick")
    apps.tick(eng)
  end)
  guard.call("the clusters' tick", clusters.tick, eng)
  durable.flush(eng)
end

--- Serve until SIGINT/SIGTERM; returns the signal's name.
function _M.run(eng)
  while true do
    local sig = core.signal_pending()
    if sig then return sig end
    local timeout = busy(eng) and BUSY_WAIT or IDLE_WAIT
    local _, kwait = guard.call("the kernels' tick", kernels.tick, eng)
    if kwait and kwait < timeout then timeout = kwait end
    local now = monotime()
    for _, t in ipairs(eng.timers) do
      if t.at - now < timeout then timeout = math.max(0, t.at - now) end
    end
    local reqs, err = eng.server:poll(timeout)
    if not reqs then
      io.stderr:write("engine: poll failed: ", tostring(err), "\n")
      core.sleep(timeout)
    else
      for _, req in ipairs(reqs) do handle(eng, req) end
      -- on success the second result lists WebSockets with news (eng.sockets[ws] handles them)
      if err then guard.call("the WebSocket dispatch", clusters.dispatch, eng, err) end
    end
    fire_timers(eng)
    tick(eng)
  end
end

--- Stop what runs, give it a moment to go, save.
function _M.shutdown(eng)
  kernels.shutdown(eng)
  for _, rec in eng.lifecycle:live() do
    apps.stop(eng, rec, "engine_stopped", "the local engine shut down while the application was live")
  end
  eng.lifecycle:drain(2)
  local ok, err = eng.store:commit()
  if not ok then io.stderr:write("engine: ", err, "\n") end
end

return _M
