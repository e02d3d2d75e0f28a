--- Submitting applications exactly once: the intent (with its token) is
-- saved before the POST and the id after it; an ambiguous failure or a
-- resume finds the application by its token before anything is sent again.
--
-- The functions take the run's context `ctx` (workflow/runner.lua's
-- run_context), not the runner: client, loop, run_id, dir, submit_grace,
-- poller, slots, and emit, save, save_durable (given the attempt that
-- changed), cancelled, started, forget,
-- started_step.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")
local record = require("analytics_engine.report.record")

local _M = {}

local TOKEN_CONF = "ae.lua.submission.token"

-- How long after sending a submission the service may still act on it.
_M.SUBMIT_GRACE = 120
_M.TOKEN_CONF = TOKEN_CONF

local function slug(s)
  return (s:gsub("[^%w]+", "_"):sub(1, 24))
end

function _M.token(run_id, step_name, index, attempt)
  return ("aeflow-%s-%s-%d-%d"):format(run_id, slug(step_name), index, attempt)
end

--- The token of the run that submitted an application, from a list entry.
function _M.token_of(app)
  local name = app.spark_application_name or app.name or ""
  return name:match("#(aeflow%-[%w]+%-[%w_]+%-%d+%-%d+)$")
end

--- Find an application by its token with one list request.
function _M.find(client, token)
  local list, err = client:list_applications()
  if not list then return nil, err end
  for _, app in ipairs(list.applications or {}) do
    if _M.token_of(app) == token then return app end
  end
  return false
end

--- Find out whether a submission whose answer was lost was accepted. A POST
-- may still be acted on after its client gave up (a gateway's queue, a
-- stalled server), so "not there" counts only from a list that answered
-- after `sent_at + submit_grace`; until then the token is looked up once a
-- second. Returns the application, false (surely not accepted), or nil and
-- "cancelled" / "unanswered".
function _M.settle(ctx, step, token, sent_at)
  local grace = ctx.submit_grace or _M.SUBMIT_GRACE
  local deadline = sent_at + grace
  if core.time() < deadline then
    ctx.emit { event = "log", step = step.name,
               message = ("submission %s lost its answer; looking for it for up to %.0fs before sending again")
                 :format(token, deadline - core.time()) }
  end
  local unanswered = 0
  while true do
    local found = _M.find(ctx.client, token)
    if found then return found end
    local now = core.time()
    if found == false then
      unanswered = 0
      if now >= deadline then return false end
    else
      unanswered = unanswered + 1
      if unanswered >= 20 and now >= deadline then return nil, "unanswered" end
    end
    local slept = ctx.loop:sleep(math.max(0.2, math.min(1, deadline - now)))
    if slept == nil or ctx.cancelled() then return nil, "cancelled" end
  end
end

-- Relative application paths are relative to the workflow file, when such a
-- file exists (the local engine runs it); otherwise they are sent as written.
local function resolve_application(ctx, path)
  if type(path) ~= "string" or path:sub(1, 1) == "/" or path:find("^%a[%w+.-]*://") then return path end
  local dir = ctx.dir or "."
  local real = core.realpath and core.realpath(dir .. "/" .. path)
  return real or path
end

local function outputs_of(app, id, token)
  return {
    application_id = id, state = app.state, return_code = app.return_code,
    spark_application_id = app.spark_application_id, start_time = app.start_time,
    finish_time = app.finish_time, token = token,
  }
end

-- Await via the shared poller. The local engine's list (and the status a
-- direct poll reads) carries the return code; only when the summary lacks it
-- (the vendor's list) are the details read once, after the end.
local function ended(ctx, id, token, summary)
  local app = summary
  if summary.return_code == nil then
    local details = ctx.client:get_application(id)
    if type(details) == "table" then app = details end
  end
  -- The vendor's page also shows details with the state inside
  -- application_details; take it from wherever it is.
  local inner = type(app.application_details) == "table" and app.application_details or {}
  app.state = app.state or inner.state or summary.state
  app.return_code = app.return_code or inner.return_code
  local out = outputs_of(app, id, token)
  if (out.state or ""):upper() == "FINISHED" then return true, out end
  local rc = out.return_code and (" (return code " .. out.return_code .. ")") or ""
  return false, ("application %s ended %s%s"):format(id, tostring(out.state), rc), false, out
end

local function await_one(ctx, id, token)
  local summary, cerr = ctx.poller:await(id)
  if summary == nil then return false, cerr and cerr.message or "cancelled", cerr and cerr.final end
  return ended(ctx, id, token, summary)
end

-- The attempt's result once its application ended (or nil: cancelled).
local function result(att, ok, msg, final, out)
  if ok then
    att.state, att.return_code = msg.state, msg.return_code
    return true, msg
  end
  if out then att.state, att.return_code = out.state, out.return_code end
  return false, msg, final
end

--- The end of an attempt whose item task the runner let go (ctx.detach):
-- `summary` is the poller's (nil: cancelled, or the poller's `failure`).
-- Same results as run's.
function _M.finish(ctx, att, summary, failure)
  if summary == nil then
    if failure then return false, failure.message, failure.final end
    return false, "cancelled"
  end
  return result(att, ended(ctx, att.application_id, att.token, summary))
end

function _M.run(ctx, step, body, att, index)
  local client = ctx.client
  body = util.deepcopy(body)
  body.application = resolve_application(ctx, body.application)
  local token = att.token or _M.token(ctx.run_id, step.name, index, att.n)
  att.token = token
  local conf = body.conf or {}
  conf["spark.app.name"] = (conf["spark.app.name"] or step.name) .. " #" .. token
  conf[TOKEN_CONF] = token
  body.conf = conf

  if not att.application_id and att.intent_at then
    -- A previous runner saved the intent and died before saving the id: the
    -- POST may be accepted, refused, or still on its way.
    local found, why = _M.settle(ctx, step, token, att.intent_at)
    if found == nil then
      if why == "cancelled" then return false, "cancelled" end
      return false, "could not confirm whether submission " .. token .. " was accepted; not sent again", true
    end
    if found then
      att.application_id = found.application_id or found.id
      ctx.emit { event = "application_adopted", step = step.name, item = index, attempt = att.n,
                 application_id = att.application_id, token = token }
      ctx.save(att)
    end
  end
  -- --max-parallel: a slot from before the POST until the application ends.
  local sem, holding = ctx.slots, false
  local function release()
    if holding then
      holding = false
      sem.release()
    end
  end
  -- Quota-aware admission (admission.lua): held until it fits; a race with
  -- another client is then refused (503) by the service rather than queued.
  local adm = step.admission ~= false and ctx.admission or nil
  local queuing = body.queuing_enabled
  if not att.application_id then
    if ctx.cancelled() then return false, "cancelled" end
    if sem then
      if not sem.acquire() then return false, "cancelled" end
      holding = true
    end
    local res, err
    local refusals = 0
    repeat
      local ticket, why, kind
      if adm then
        -- (a hold notes its times on the attempt, then says so)
        ticket, why, kind = adm:hold(function(ev)
          ctx.emit(ev)
          ctx.save(att)
        end, step.name, index, att, body.conf)
        if not ticket then
          release()
          return false, why, kind == "final"
        end
      end
      if ticket and adm.limits and queuing == nil then body.queuing_enabled = false end
      att.intent_at = core.time()
      local saved, serr = ctx.save_durable(att)
      if not saved then
        release()
        if ticket then adm:forget(ticket) end
        if serr == ctx.loop.CANCELLED then return false, "cancelled" end
        return false, "cannot record the submission intent; nothing was sent", true
      end
      if ticket then
        res, err = adm:send(ticket, function() return client:create_application(body) end)
        refusals = refusals + 1
      else
        res, err = client:create_application(body)
      end
    until not (ticket and adm.refused(err)) or refusals >= adm.MAX_REFUSALS
    if not res and err.cancelled then
      release()
      return false, "cancelled"
    end
    if not res and err.ambiguous then
      -- The server may have accepted it: look before anything is sent again.
      local found, why = _M.settle(ctx, step, token, att.intent_at)
      if found then
        res = { application_id = found.application_id or found.id, state = found.state }
      elseif found == nil then
        release()
        if why == "cancelled" then return false, "cancelled" end
        err.message = err.message .. "; could not confirm whether it was accepted"
        return false, tostring(err), true
      end
    end
    if not res then
      release()
      return false, tostring(err), err.status ~= nil and err.status >= 400 and err.status < 500 and err.status ~= 429
    end
    att.application_id = res.application_id or res.id
    att.state = res.state
    record.submitted(att, res.state)
    ctx.started(att.application_id, step.name, att)
    ctx.emit { event = "application_submitted", step = step.name, item = index, attempt = att.n,
               application_id = att.application_id, token = token }
    ctx.save(att)
  else
    ctx.started(att.application_id, step.name, att)
  end
  local id = att.application_id
  if step.wait == false then
    release()
    -- Not awaited, still followed: the live view and the report show its state.
    ctx.poller:watch(id)
    return true, { application_id = id, state = att.state or "SUBMITTED", token = token }
  end
  -- The item's task may end here: the runner follows the application with
  -- a small record and finishes the attempt when it ends (_M.finish), the
  -- --max-parallel slot (if held) going with it.
  local detached = ctx.detach and ctx.detach(id, holding and sem or nil)
  if detached then return detached end
  local ok, msg, final, out = await_one(ctx, id, token)
  release()
  return result(att, ok, msg, final, out)
end

--- The await action: one id or a list of ids.
function _M.await(ctx, ids)
  if type(ids) == "string" then ids = { ids } end
  local outs = {}
  for i, id in ipairs(ids) do
    if not util.is_uuid(id) then return false, ("await: '%s' is not an application id"):format(tostring(id)), true end
    local ok, out = await_one(ctx, id)
    if not ok then return false, out end
    outs[i] = out
  end
  return true, #outs == 1 and outs[1] or util.array(outs)
end

--- Stop one application and wait until the service says it is terminal,
-- so a retry never runs next to the attempt before it.
function _M.stop_and_wait(ctx, id)
  ctx.emit { event = "application_stop", application_id = id }
  local client = ctx.client
  local _, err = client:delete_application(id)
  if err and err.status ~= 404 then
    ctx.emit { event = "error", message = "could not stop application " .. id .. ": " .. tostring(err) }
  end
  -- Wait outside the cancelled task's own waits: poll directly.
  for _ = 1, 60 do
    local st = client:get_application_state(id)
    if not st then break end
    if api.is_terminal(st.state) then
      ctx.emit { event = "application", application_id = id, state = st.state, step = ctx.started_step(id) }
      break
    end
    ctx.loop:sleep(0.5)
  end
  ctx.forget(id)
end

--- On cancel: stop every application this run started that still runs,
-- including any accepted by a request the cancel interrupted. Returns the
-- ids it asked to stop.
function _M.stop_started(ctx)
  local client = ctx.client
  local stopped = {}
  local list = client:list_applications()
  for _, app in ipairs(list and list.applications or {}) do
    local id = app.application_id or app.id
    local tok = _M.token_of(app)
    local ours = ctx.started_step(id) or (tok and tok:find("aeflow-" .. ctx.run_id .. "-", 1, true) == 1)
    if ours and not api.is_terminal(app.state) then
      ctx.emit { event = "application_stop", application_id = id, reason = "cancel" }
      client:delete_application(id)
      stopped[#stopped + 1] = id
    end
  end
  return stopped
end

return _M
