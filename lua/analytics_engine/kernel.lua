--- Kernel sessions: Jupyter messaging v5 over the Jupyter Server's single
-- multiplexed `/channels` WebSocket (JSON text messages with a `channel`
-- field), for kernels of the service, of the local engine, or of a Jupyter
-- Server the client points at directly (`ae.jupyter_client`). The client
-- makes c:connect_kernel from api.lua's row and hands `connect` the target.
--
--   local k = assert(c:connect_kernel(kernel_id))
--   local r, err = k:execute("1+1")      -- r.result == "2", r.execution_count, r.outputs, r.stdout
--   if not r then print(err.ename, err.evalue) end
--   k:close()
--
-- Replies are gathered by `parent_header.msg_id`: whatever belongs to
-- another request (or to none this session made) is never mixed in. Under
-- the client's loop a session waits without blocking other tasks; one task
-- at a time reads the socket and hands messages to whoever asked.
local util = require("analytics_engine.util")
local errors = require("analytics_engine.errors")
local connect = require("analytics_engine.connect")
local loop_mod = require("analytics_engine.loop")
local ngx_ws = require("analytics_engine.transport.ngx_ws")

local _M = {}
local Session = {}
local session_mt = { __index = Session, __name = "analytics_engine.KernelSession" }

_M.PROTOCOL_VERSION = "5.3"
_M.DEFAULT_TIMEOUT = nil -- executes wait as long as the kernel runs, unless opts.timeout
_M.CONNECT_TIMEOUT = 30

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat = table.concat

-- Loaded at first use, not at the top: the client requires this module, and
-- a client under nginx (cosockets) must not load the C core. Inside nginx,
-- where cosockets can yield, the WebSocket, clock, sleep and random bytes are
-- transport/ngx_ws.lua's, so a kernel call yields instead of blocking the
-- worker: keep every core use in this module behind core().
local function core()
  if ngx_ws.active() then return ngx_ws end
  return require("analytics_engine.core")
end

-- Jupyter counts cursor positions in code points.
local function code_points(s)
  return select(2, s:gsub("[^\128-\191]", ""))
end

local function new_id()
  return util.uuid4(core().random_bytes)
end

local function iso_now()
  local t = core().time()
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. ("%.6fZ"):format(t % 1):sub(2)
end

local function kernel_error(fields)
  fields.code = fields.code or "kernel_error"
  return errors.new(fields)
end

---------------------------------------------------------------------------
-- the WebSocket underneath: an analytics_engine.ws socket (connect.lua opens
-- it). Outside a loop its calls block up to their timeout; inside one they
-- step without blocking and the task waits until the socket is ready, so
-- other tasks run meanwhile.

-- The loop when the calling coroutine is one of its tasks.
local active = loop_mod.active

-- Send one message. Outside a loop it is written before this returns; inside
-- one it is queued and the socket's next steps write it (another task may be
-- reading the socket).
local function ws_send(sock, loop, text)
  if active(loop) then return sock:queue(text) end
  return sock:send(text)
end

--- c:connect_kernel(id [, opts]) -> session | nil, err
-- opts: { timeout = connect seconds (30), max_message_size = bytes }
-- target (from the client): id, path, url, headers, context, loop, TLS options.
function _M.connect(c, target, opts)
  local sock, err = connect.connect(c, target, { timeout = opts.timeout or _M.CONNECT_TIMEOUT,
                                                 max_message_size = opts.max_message_size })
  if not sock then return nil, err end
  return setmetatable({
    client = c, id = target.id, ws = sock, path = target.path,
    loop = target.loop,
    session_id = new_id(),
    collectors = {},   -- msg_id → collector of that request's replies
    reading = false,   -- a task is reading the socket for everybody
    waiters = {},      -- tasks waiting for their collector while another reads
    closed = false,
  }, session_mt)
end

session_mt.__tostring = function(s)
  return ("analytics_engine.KernelSession(%s%s)"):format(s.id, s.closed and ", closed" or "")
end

local function message(self, channel, msg_type, content)
  local msg_id = new_id()
  return msg_id, {
    header = { msg_id = msg_id, msg_type = msg_type, username = "analytics-engine-lua",
               session = self.session_id, date = iso_now(), version = _M.PROTOCOL_VERSION },
    parent_header = {}, -- cjson encodes an empty table as {}
    metadata = {},
    content = content,
    channel = channel,
    buffers = util.array({}),
  }
end

-- Route one incoming message to the collector of its request.
local function dispatch(self, data, opcode)
  if opcode ~= "text" then return end -- binary frames carry buffers of widget messages: not ours
  local ok, msg = pcall(util.json_decode, data)
  if not ok or type(msg) ~= "table" then return end
  local parent = type(msg.parent_header) == "table" and msg.parent_header.msg_id
  local col = parent and self.collectors[parent]
  if col then col:add(msg) end
end

-- Jupyter drops iopub messages while a kernel's subscription reconnects
-- (after a restart, under load): once the shell reply is in, the idle status
-- is awaited this long, then the request counts as complete and the result
-- says `incomplete` (outputs published in that gap may be missing).
_M.IDLE_GRACE = 5

local function effective_deadline(col, deadline)
  if col.reply_at and not col.done then
    local grace = col.reply_at + _M.IDLE_GRACE
    if not deadline or grace < deadline then return grace, true end
  end
  return deadline, false
end

-- Read until `col.done`, the deadline, or a failure; one reader at a time.
local function wait_for(self, col, deadline)
  local final_deadline = deadline
  local ws = self.ws
  local loop = active(self.loop) -- nil: this call blocks (no loop, or not one of its tasks)
  while not col.done do
    deadline = effective_deadline(col, final_deadline)
    if self.closed then return nil, kernel_error { code = "closed", message = "the kernel session is closed" } end
    if self.reading and loop then
      -- Another task reads for us; it wakes us after each message.
      local me = loop:current()
      self.waiters[me] = true
      local left = deadline and math.max(0, deadline - core().monotime()) or nil
      local timer
      if left then
        timer = loop:spawn("kernel wait", function()
          -- Wake it only if nobody did yet: a task must be woken once per wait.
          if loop:sleep(left) ~= nil and self.waiters[me] then
            self.waiters[me] = nil
            loop:wake(me, "timeout")
          end
        end)
      end
      local r, cerr = loop:suspend(function() self.waiters[me] = nil end)
      self.waiters[me] = nil
      if timer then loop:cancel(timer) end
      if r == nil and cerr then return nil, cerr end
    else
      local left = deadline and math.max(0, deadline - core().monotime()) or nil
      if left and left <= 0 then break end
      self.reading = true
      local data, opcode = ws:receive(left)
      self.reading = false
      if data ~= nil then dispatch(self, data, opcode) end
      -- Whoever waits looks at its collector again (and one of them reads next).
      for t in pairs(self.waiters) do
        self.waiters[t] = nil
        self.loop:wake(t, true)
      end
      if data == nil then
        local err = opcode
        if type(err) == "table" and err.kind == "timeout" then break end
        if loop and err == loop.CANCELLED then return nil, err end
        return nil, kernel_error { code = type(err) == "table" and err.kind or "recv",
          message = "the kernel's channels connection failed: "
            .. tostring(type(err) == "table" and err.message or err) }
      end
    end
    deadline = effective_deadline(col, final_deadline)
    if deadline and core().monotime() >= deadline and not col.done then break end
  end
  local _, by_grace = effective_deadline(col, final_deadline)
  if not col.done and by_grace and core().monotime() >= col.reply_at + _M.IDLE_GRACE then
    col.done, col.incomplete = true, true
  end
  if col.done then return true end
  return nil, kernel_error { code = "timeout", message = ("no reply from kernel %s in time"):format(self.id),
                             operation = col.operation }
end

-- Send a request and make its collector; `kind` says when it is complete.
local function request(self, channel, msg_type, content, col)
  if self.closed then return nil, kernel_error { code = "closed", message = "the kernel session is closed" } end
  local msg_id, msg = message(self, channel, msg_type, content)
  local text, jerr = util.json_encode(msg)
  if not text then return nil, errors.invalid(msg_type, "cannot encode the request: " .. tostring(jerr)) end
  col.msg_id = msg_id
  self.collectors[msg_id] = col
  local ok, err = ws_send(self.ws, self.loop, text)
  if not ok then
    self.collectors[msg_id] = nil
    return nil, kernel_error { code = type(err) == "table" and err.kind or "send",
      message = "cannot send to the kernel: " .. tostring(type(err) == "table" and err.message or err) }
  end
  return msg_id
end

---------------------------------------------------------------------------
-- execute

-- A message's type and its content ({} where the kernel sent no table).
local function type_and_content(msg)
  return type(msg.header) == "table" and msg.header.msg_type or nil,
         type(msg.content) == "table" and msg.content or {}
end

local Exec = {}
Exec.__index = Exec

function Exec.add(col, msg)
  local t, c = type_and_content(msg)
  if t == "status" then
    if c.execution_state == "idle" then col.idle = true end
  elseif t == "stream" then
    col.outputs[#col.outputs + 1] = { output_type = "stream", name = c.name, text = c.text }
    if c.name == "stderr" then col.stderr[#col.stderr + 1] = c.text
    else col.stdout[#col.stdout + 1] = c.text end
  elseif t == "execute_result" then
    col.outputs[#col.outputs + 1] = { output_type = "execute_result", data = c.data, metadata = c.metadata,
                                      execution_count = c.execution_count }
    col.result = type(c.data) == "table" and c.data["text/plain"] or nil
    if type(c.execution_count) == "number" then
      col.execution_count = col.execution_count or math.floor(c.execution_count)
    end
  elseif t == "display_data" then
    col.outputs[#col.outputs + 1] = { output_type = "display_data", data = c.data, metadata = c.metadata }
  elseif t == "error" then
    col.outputs[#col.outputs + 1] = { output_type = "error", ename = c.ename, evalue = c.evalue,
                                      traceback = c.traceback }
    col.error = c
  elseif t == "execute_reply" then
    col.reply = c
    col.reply_at = col.reply_at or core().monotime()
    if type(c.execution_count) == "number" then col.execution_count = math.floor(c.execution_count) end
  end
  -- Complete once the kernel is idle for this request and the shell reply is in.
  -- An aborted request ran nothing, and ipykernel's idle after an abort may
  -- name another parent: its reply alone completes it.
  col.done = (col.idle and col.reply ~= nil) or (col.reply ~= nil and col.reply.status == "aborted")
end

-- ANSI colour codes out of a traceback line.
local function plain(s)
  return (tostring(s):gsub("\27%[[%d;]*m", ""))
end

-- Pause without blocking other tasks when under a loop.
local function pause(self, seconds)
  local loop = active(self.loop)
  if loop then return loop:sleep(seconds) end
  core().sleep(seconds)
  return true
end

-- One execute_request and its replies -> col | nil, err
local function execute_once(self, content, deadline)
  local col = setmetatable({ outputs = {}, stdout = {}, stderr = {} }, Exec)
  local msg_id, err = request(self, "shell", "execute_request", content, col)
  if not msg_id then return nil, err end
  local ok, werr = wait_for(self, col, deadline)
  self.collectors[msg_id] = nil
  if not ok then
    werr.outputs, werr.operation = col.outputs, "execute"
    return nil, werr
  end
  return col
end

_M.ABORT_RETRIES = 5

--- session:execute(code [, opts]) -> result | nil, err
-- opts: { timeout = seconds (default: none), silent, store_history (true),
--         user_expressions, stop_on_error (true) }
-- result: { outputs = {...}, execution_count, stdout, stderr, result (text/plain) }
-- err (an analytics_engine error): code "kernel_error" with ename, evalue,
-- traceback, outputs, execution_count; or "timeout", "closed", a transport code.
function Session.execute(self, code, opts)
  if type(code) ~= "string" then
    error("bad argument #1 to 'execute' (string expected, got " .. type(code) .. ")", 2)
  end
  opts = opts or {}
  local content = {
    code = code, silent = opts.silent == true, store_history = opts.store_history ~= false,
    user_expressions = opts.user_expressions or {},
    allow_stdin = false, stop_on_error = opts.stop_on_error ~= false,
  }
  local deadline = opts.timeout and (core().monotime() + opts.timeout) or nil
  local col, err
  for attempt = 1, _M.ABORT_RETRIES + 1 do
    -- ipykernel aborts execute requests for a moment after a cell fails
    -- (stop_on_error), also ones sent after that failure's reply arrived.
    -- Such a request never ran, so it is sent again; one that was queued
    -- behind the failing cell (sent before its reply came) stays aborted.
    local after_error = self.failed_at ~= nil
    col, err = execute_once(self, content, deadline)
    if not col then return nil, err end
    if col.reply.status ~= "aborted" or not after_error or attempt > _M.ABORT_RETRIES then break end
    local ok, perr = pause(self, 0.05 * attempt)
    if ok == nil and perr then return nil, perr end
  end
  self.failed_at = nil
  local out = { outputs = col.outputs, execution_count = col.execution_count,
                stdout = concat(col.stdout), stderr = concat(col.stderr), result = col.result,
                status = col.reply.status, incomplete = col.incomplete }
  local e = col.error or (col.reply.status == "error" and col.reply) or nil
  if e then
    self.failed_at = core().monotime()
    local tb = {}
    for i, line in ipairs(type(e.traceback) == "table" and e.traceback or {}) do tb[i] = plain(line) end
    return nil, kernel_error {
      ename = e.ename, evalue = e.evalue, traceback = tb, outputs = col.outputs,
      execution_count = col.execution_count, stdout = out.stdout, stderr = out.stderr,
      message = ("%s: %s"):format(tostring(e.ename), plain(e.evalue or "")),
      operation = "execute",
    }
  end
  if col.reply.status == "aborted" then
    return nil, kernel_error { code = "aborted", message = "the kernel aborted the execution",
                               outputs = col.outputs, operation = "execute" }
  end
  return out
end

---------------------------------------------------------------------------
-- complete, interrupt, restart, close

local Reply = {}
Reply.__index = Reply
function Reply.add(col, msg)
  local t, c = type_and_content(msg)
  if t == col.want then
    col.reply = msg.content
  elseif t == "status" and c.execution_state == "idle" then
    col.idle = true
  end
  col.done = col.reply ~= nil and col.idle == true
end

--- session:complete(code [, cursor_pos [, opts]]) -> { matches, cursor_start, cursor_end, metadata }
function Session.complete(self, code, pos, opts)
  if type(code) ~= "string" then
    error("bad argument #1 to 'complete' (string expected, got " .. type(code) .. ")", 2)
  end
  opts = opts or {}
  local col = setmetatable({ want = "complete_reply" }, Reply)
  local msg_id, err = request(self, "shell", "complete_request",
    { code = code, cursor_pos = pos or code_points(code) }, col)
  if not msg_id then return nil, err end
  local ok, werr = wait_for(self, col, core().monotime() + (opts.timeout or 30))
  self.collectors[msg_id] = nil
  if not ok then return nil, werr end
  return col.reply
end

--- session:interrupt() -> true | nil, err (the REST endpoint)
function Session.interrupt(self)
  return self.client:interrupt_kernel(self.id)
end

--- session:wait_ready([timeout]) -> true | nil, err: ask kernel_info until
-- both its reply (shell) and the kernel's idle status (iopub) come back.
-- After a restart Jupyter's iopub subscription reconnects a little later
-- than the shell: output published before then is lost, so wait for it.
function Session.wait_ready(self, timeout)
  local deadline = core().monotime() + (timeout or 30)
  repeat
    local col = setmetatable({ want = "kernel_info_reply" }, Reply)
    local msg_id, err = request(self, "shell", "kernel_info_request", {}, col)
    if not msg_id then return nil, err end
    local ok, werr = wait_for(self, col, math.min(deadline, core().monotime() + 1))
    self.collectors[msg_id] = nil
    if ok then return true end
    if werr.code ~= "timeout" then return nil, werr end
  until core().monotime() >= deadline
  return nil, kernel_error { code = "timeout", operation = "wait_ready",
                             message = ("kernel %s did not become ready in time"):format(self.id) }
end

--- session:restart() -> the kernel's model | nil, err (the REST endpoint;
-- the channels connection stays open, and this returns once the restarted
-- kernel answers on it)
function Session.restart(self, opts)
  local model, err = self.client:restart_kernel(self.id)
  if not model then return nil, err end
  local ok, rerr = self:wait_ready(opts and opts.timeout or 60)
  if not ok then return nil, rerr end
  self.failed_at = nil
  return model
end

--- session:close() -> true; safe to call twice. The kernel keeps running
-- (delete it with c:delete_kernel(id)).
function Session.close(self)
  if self.closed then return true end
  self.closed = true
  self.collectors = {}
  -- Under a loop the close handshake is not awaited (it would block the loop).
  self.ws:close(1000, "bye", active(self.loop) and 0 or 1)
  return true
end
session_mt.__close = Session.close

return _M
