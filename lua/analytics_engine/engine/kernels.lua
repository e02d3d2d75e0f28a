--- Kernels: the Jupyter Kernel Gateway endpoints (`/jkg/api/*`) forwarded to
-- the Jupyter Server the engine runs on loopback (engine/jupyter.lua; started
-- on the first kernel request, stopped with the engine).
--
-- Handlers answer later: they return a function that receives `respond`
-- (see engine/server.lua), start the transfer on the engine's own
-- non-blocking HTTP session, and `tick` (once per engine loop turn) polls
-- it. Without Jupyter every kernel endpoint answers 503 saying what to install.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")
local reply = require("analytics_engine.engine.reply")
local jupyter = require("analytics_engine.engine.jupyter")
local router = require("analytics_engine.engine.router")
local guard = require("analytics_engine.engine.guard")

local _M = {}
_M.NAMES = { "list_kernelspecs", "list_kernels", "create_kernel", "get_kernel", "delete_kernel",
             "interrupt_kernel", "restart_kernel", "connect_kernel" }
_M.TIMEOUT = 120
_M.MAX_MESSAGE = 32 * 1024 * 1024 -- Jupyter messages carry images and tables
_M.CONNECT_TIMEOUT = 30

local null = util.null
local JKG = "^" .. api.BASE:gsub("%p", "%%%0") .. "/[^/]+/jkg(/api/.*)$"
_M.PREFIX = "^" .. api.BASE:gsub("%p", "%%%0") .. "/[^/]+/jkg/api/"

--- The row the engine routes every other /jkg/api path by (role: user).
_M.OPERATION = router.JUPYTER_API

-- The engine's kernel state, made on first use.
local function state(eng)
  local k = eng.kernels
  if not k then
    k = { jupyter = jupyter.new{ data_dir = eng.opts.data_dir, enabled = eng.opts.jupyter ~= false },
          waits = {}, meta = {},
          opening = {}, -- channels whose connection to Jupyter is being made
          links = {} }  -- engine-side handle → Jupyter-side handle
    eng.kernels = k
  end
  return k
end

local function unavailable(message)
  return reply.error(503, "kernels_unavailable", message)
end

-- Jupyter's failure answers ({"message", "reason"}) in the service's error shape.
local function translate_error(res, jpath)
  local doc = res.body and res.body:find("^%s*{") and select(2, pcall(util.json_decode, res.body))
  local msg = type(doc) == "table" and type(doc.message) == "string" and doc.message ~= "" and doc.message
    or type(doc) == "table" and type(doc.reason) == "string" and doc.reason
    or ("the Jupyter Server answered %d"):format(res.status)
  msg = msg:gsub("[\r\n]+", " "):sub(1, 500)
  local code = "jupyter_error"
  if res.status == 404 then
    code = jpath:find("^/api/kernels/") and "kernel_not_found" or "not_found"
  elseif res.status == 400 then
    code = "bad_request"
  end
  return reply.error(res.status, code, msg)
end

-- A callback that answers `respond` 500 when it fails (the request must
-- still get an answer; the engine goes on).
local function guarded(respond, fn)
  return function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then respond(guard.internal_error("a kernel request", err)) end
  end
end

-- Start one request to Jupyter; cb(res) or cb(nil, err) from a later tick.
local function jupyter_request(k, method, jpath, body, content_type, respond, cb)
  cb = guarded(respond, cb)
  k.session = k.session or core.http_session()
  local j = k.jupyter
  local headers = { Authorization = j:authorization(), Accept = "application/json" }
  if body then headers["Content-Type"] = content_type or "application/json" end
  local id, err = k.session:start{ method = method, url = j.url .. jpath, headers = headers, body = body,
                                   timeout = _M.TIMEOUT, connect_timeout = 10 }
  if not id then return cb(nil, err) end
  k.waits[id] = cb
end

local function with_engine(k, model)
  local m = type(model) == "table" and type(model.id) == "string" and k.meta[model.id]
  if m then model.engine = util.deepcopy(m.engine) end
  return model
end

-- Pass a success answer through; kernel models get their `engine` metadata back.
local function pass(k, res, decorate)
  local ct = res.headers["content-type"] or "application/json"
  if decorate and ct:find("json", 1, true) and next(k.meta) then
    local ok, doc = pcall(util.json_decode, res.body or "")
    if ok and type(doc) == "table" then
      if decorate == "list" then
        if #doc == 0 then return res.status, res.body, { ["Content-Type"] = ct } end
        for _, m in ipairs(doc) do with_engine(k, m) end
      else
        with_engine(k, doc)
      end
      return res.status, doc
    end
  end
  if res.status == 204 or res.body == nil or res.body == "" then return res.status end
  return res.status, res.body, { ["Content-Type"] = ct }
end

local function python_like(name)
  return name:lower():find("^py") ~= nil
end

--- The kernelspec for a requested name: itself when Jupyter has it; a
-- version-tagged Python name ("python310", "python3.11", "python") → the
-- Python kernelspec; otherwise the kernelspec of the same language ("r36" → R).
function _M.map_name(specs, name)
  local all = type(specs) == "table" and type(specs.kernelspecs) == "table" and specs.kernelspecs or {}
  if all[name] then return name end
  local by_lang = {}
  local names = {}
  for n, s in pairs(all) do
    names[#names + 1] = n
    local lang = type(s) == "table" and type(s.spec) == "table" and s.spec.language
    if type(lang) == "string" then
      lang = lang:lower()
      if not by_lang[lang] or n == specs.default then by_lang[lang] = n end
    end
  end
  table.sort(names)
  if python_like(name) then
    if all.python3 then return "python3" end
    if by_lang.python then return by_lang.python end
  else
    local lang = name:lower():match("^(%a+)")
    if lang and by_lang[lang] then return by_lang[lang] end
  end
  return nil, ("no kernelspec matches '%s'; available: %s"):format(name,
    #names > 0 and table.concat(names, ", ") or "none")
end

-- POST /api/kernels with the name mapped to a kernelspec; `engine` is kept here.
-- (schemas.create_kernel has checked name and path before the handler ran)
local function create(k, ctx, respond)
  local body = ctx.body or {}
  local name = body.name
  if body.engine ~= nil and body.engine ~= null and type(body.engine) ~= "table" then
    return respond(reply.bad_request("engine must be an object"))
  end
  local function post(kname)
    local jbody = { name = kname }
    if type(body.path) == "string" then jbody.path = body.path end
    jupyter_request(k, "POST", "/api/kernels", util.json_encode(jbody), nil, respond, function(res, err)
      if not res then return respond(unavailable("the Jupyter Server did not answer: " .. tostring(err.message))) end
      if res.status >= 300 then return respond(translate_error(res, "/api/kernels")) end
      local ok, model = pcall(util.json_decode, res.body or "")
      if not ok or type(model) ~= "table" or type(model.id) ~= "string" then
        return respond(reply.error(502, "bad_gateway", "the Jupyter Server answered a kernel without an id"))
      end
      k.meta[model.id] = { engine = type(body.engine) == "table" and util.deepcopy(body.engine) or {},
                           requested_name = name }
      return respond(res.status, with_engine(k, model))
    end)
  end
  if name == nil or name == null then return post(nil) end
  local function mapped(specs)
    local kname, merr = _M.map_name(specs, name)
    if not kname then return respond(reply.bad_request(merr)) end
    return post(kname)
  end
  if k.specs and k.specs_pid == k.jupyter.pid then return mapped(k.specs) end
  jupyter_request(k, "GET", "/api/kernelspecs", nil, nil, respond, function(res, err)
    if not res then return respond(unavailable("the Jupyter Server did not answer: " .. tostring(err.message))) end
    if res.status ~= 200 then return respond(translate_error(res, "/api/kernelspecs")) end
    local ok, specs = pcall(util.json_decode, res.body or "")
    if not ok or type(specs) ~= "table" then
      return respond(reply.error(502, "bad_gateway", "the Jupyter Server's kernelspecs are not JSON"))
    end
    k.specs, k.specs_pid = specs, k.jupyter.pid
    return mapped(specs)
  end)
end

---------------------------------------------------------------------------
-- the channels WebSocket: the engine connects to Jupyter's first (so an
-- unknown kernel is a 404, not a 101 and a close), then accepts the client's
-- upgrade and relays messages both ways, opcodes kept.

-- The close one side sent is relayed to the other, except the codes that
-- must never be sent (1005 "no code", 1006, 1015): guard.close_code maps them.
local function unlink(eng, k, h, code, reason)
  local up = k.links[h]
  k.links[h] = nil
  if eng.sockets then eng.sockets[h] = nil end
  code, reason = guard.close_code(code), guard.close_reason(reason)
  if up then up:close(code, reason, 0) end
  h:close(code, reason, 0)
end

-- Relay what is waiting on `from` to `to`; false once `from` has ended.
local function relay(from, to)
  while true do
    local data, op = from:receive(0)
    if data == nil then
      if op.kind == "timeout" then return true end
      return false, op.code, op.reason
    end
    if op == "text" or op == "binary" then to:send(data, { binary = op == "binary" }) end
  end
end

-- The client's side has news (the engine loop calls this).
local function on_client_news(eng, h)
  local k = eng.kernels
  local up = k and k.links[h]
  if not up then
    if eng.sockets then eng.sockets[h] = nil end
    return h:close(1011, "", 0)
  end
  local ok, code, reason = relay(h, up)
  if not ok then unlink(eng, k, h, code, reason) end
end

local function upgrade(eng, k, o)
  local h, aerr, akind = eng.server:accept_websocket(o.req.id, { max_message_size = _M.MAX_MESSAGE })
  if not h then
    o.up:close(1000, "", 0)
    return o.respond(reply.not_upgraded("channels", aerr, akind))
  end
  k.links[h] = o.up
  eng.sockets = eng.sockets or {}
  eng.sockets[h] = on_client_news
end

local function channels(k, req, jpath, respond)
  if (req.headers.upgrade or ""):lower() ~= "websocket" then
    return respond(reply.error(400, "not_a_websocket", "channels needs a WebSocket upgrade (Upgrade: websocket)"))
  end
  if req.headers["sec-websocket-version"] ~= "13" then -- before Jupyter is dialled for nothing
    return respond(reply.not_upgraded("channels", "unsupported Sec-WebSocket-Version (13 is required)", "version"))
  end
  local url = k.jupyter.url:gsub("^http", "ws") .. jpath
  if req.query and req.query ~= "" then url = url .. "?" .. req.query end
  local up, err = core.ws_connect(url, { headers = { Authorization = k.jupyter:authorization() },
                                         max_message_size = _M.MAX_MESSAGE, connect_timeout = 10 })
  if not up then
    return respond(unavailable("cannot connect to the Jupyter Server: " .. tostring(err and err.message)))
  end
  k.opening[#k.opening + 1] = { up = up, req = req, respond = respond,
                                deadline = core.monotime() + _M.CONNECT_TIMEOUT, jpath = jpath }
end

-- Step the connections being made and relay from Jupyter to the clients.
local function tick_channels(eng, k)
  if #k.opening > 0 then
    local keep = {}
    for _, o in ipairs(k.opening) do
      guarded(o.respond, function()
        local ok, err = o.up:connect(0)
        if ok then
          upgrade(eng, k, o)
        elseif err.kind == "timeout" and core.monotime() < o.deadline then
          keep[#keep + 1] = o
        else
          o.up:close(1000, "", 0)
          if err.status then
            o.respond(translate_error({ status = err.status, body = err.body or "", headers = {} }, o.jpath))
          else
            o.respond(unavailable("cannot connect to the Jupyter Server: " .. tostring(err.message)))
          end
        end
      end)()
    end
    k.opening = keep
  end
  local links = {}
  for h, up in pairs(k.links) do links[#links + 1] = { h, up } end
  for _, l in ipairs(links) do
    local h, up = l[1], l[2]
    -- Both directions every turn: a message that came in with the upgrade
    -- (or between a poll's news and the handler's registration) would
    -- otherwise wait in the handle for news that never comes.
    local done = guard.call("a kernel channel", function()
      local ok, code, reason = relay(h, up)
      if ok then ok, code, reason = relay(up, h) end
      if not ok then
        unlink(eng, k, h, code, reason)
      else
        -- finish writes the sockets did not take at once
        up:flush(0)
        h:flush(0)
      end
      return true
    end)
    -- a failure ends this channel (1011), not the others nor the engine
    if not done then guard.call("closing a failed kernel channel", unlink, eng, k, h, 1011, "internal error") end
  end
end

local DECORATE = { list_kernels = "list", get_kernel = "one", restart_kernel = "one" }

-- Forward one request: ctx.req is the raw request (path, query, body).
local function forward(eng, ctx, name)
  local k = state(eng)
  local req = ctx.req
  local jpath = req.path:match(JKG)
  if not jpath then return reply.not_found("not_found", "no such endpoint: " .. req.path) end
  local kid = ctx.params and ctx.params.kernel_id
  if kid and not util.is_uuid(kid) then
    return reply.error(400, "invalid_kernel_id", ("kernel_id '%s' is not a valid id"):format(kid))
  end
  return function(respond)
    k.jupyter:want(guarded(respond, function(ok, err)
      if not ok then return respond(unavailable(err)) end
      if name == "create_kernel" then return create(k, ctx, respond) end
      if ctx.method == "GET" and jpath:find("^/api/kernels/[^/]+/channels$") then
        return channels(k, req, jpath, respond)
      end
      local path = jpath
      if req.query and req.query ~= "" then path = path .. "?" .. req.query end
      local body = req.body ~= "" and req.body or nil
      jupyter_request(k, ctx.method, path, body, ctx.headers["content-type"], respond, function(res, terr)
        if not res then
          return respond(unavailable("the Jupyter Server did not answer: " .. tostring(terr.message)))
        end
        if res.status >= 400 then return respond(translate_error(res, jpath)) end
        if name == "delete_kernel" and kid then k.meta[kid] = nil end
        return respond(pass(k, res, DECORATE[name]))
      end)
    end))
  end
end

--- The kernel handlers by operation name (merged into the engine's handlers):
-- every one forwards to the Jupyter Server.
_M.handlers = {}
for _, name in ipairs(_M.NAMES) do
  _M.handlers[name] = function(eng, ctx) return forward(eng, ctx, name) end
end
_M.handlers[_M.OPERATION.name] = function(eng, ctx) return forward(eng, ctx, _M.OPERATION.name) end

--- Once per engine loop turn -> the longest the loop may wait (nil: no limit).
function _M.tick(eng)
  local k = eng.kernels
  if not k then return nil end
  local starting = k.jupyter:tick()
  local waiting = next(k.waits) ~= nil
  if waiting then
    for _, r in ipairs(k.session:poll(0)) do
      local cb = k.waits[r.id]
      k.waits[r.id] = nil
      if cb then guard.call("a Jupyter answer", cb, r.res, r.err) end
    end
    waiting = next(k.waits) ~= nil
  end
  tick_channels(eng, k)
  if waiting or #k.opening > 0 then return 0.002 end
  -- Jupyter's side of a channel is not in the server's wait set: look often.
  if next(k.links) then return 0.01 end
  if starting then return 0.05 end
  return nil
end

--- At engine shutdown: stop the Jupyter Server and its kernels.
function _M.shutdown(eng)
  local k = eng.kernels
  if not k then return end
  if k.session then k.session:close() end
  k.waits = {}
  for h in pairs(k.links) do unlink(eng, k, h, 1001, "the engine is stopping") end
  for _, o in ipairs(k.opening) do o.up:close(1001, "", 0) end
  k.opening = {}
  k.jupyter:stop()
end

return _M
