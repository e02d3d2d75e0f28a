--- What the runner writes into the state file so `aeflow report` can draw a
-- run from that file alone: the step graph, where the engine is (its base
-- URL only, never credentials), and the time of every application state the
-- poller saw. Kept apart from the runner so the report owns its own format.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local _M = {}

local function step_info(step)
  local for_each = step.for_each
  if type(for_each) == "table" then for_each = #for_each end
  return {
    name = step.name, action = step.action, after = util.array(util.copy(step.after or {})),
    finally = step.is_finally or nil, for_each = for_each, retries = step.retries,
    timeout = step.timeout, description = step.description,
    continue_on_failure = step.continue_on_failure or nil,
  }
end

--- The plan's graph as plain data: { steps = {...}, order = {...}, finally_order = {...} }.
function _M.graph(plan)
  local steps = util.array()
  for _, name in ipairs(plan.order or {}) do steps[#steps + 1] = step_info(plan.by_name[name]) end
  for _, name in ipairs(plan.finally_order or {}) do steps[#steps + 1] = step_info(plan.by_name[name]) end
  return { steps = steps, order = util.array(util.copy(plan.order or {})),
           finally_order = util.array(util.copy(plan.finally_order or {})) }
end

--- Is `url` on this machine (where a local engine would be)?
function _M.is_loopback(url)
  local host = type(url) == "string" and url:match("^%a[%w+.-]*://([^/:]+)") or ""
  if url and url:match("^%a[%w+.-]*://%[") then host = url:match("^%a[%w+.-]*://%[([^%]]+)%]") or "" end
  return host == "localhost" or host:find("^127%.") ~= nil or host == "::1"
end

--- The engine as the report needs it: base URL without any user:password@,
-- the instance id, and whether application logs can be fetched from it.
function _M.engine(client, is_local)
  if type(client) ~= "table" or type(client.url) ~= "string" then return nil end
  local url = client.url:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1")
  return { url = url, instance_id = client.instance_id, ["local"] = (is_local or _M.is_loopback(url)) and true
           or false }
end

--- Note an application state of an attempt with the time it was seen
-- (nothing when the state did not change).
function _M.state_change(att, state, at)
  if type(att) ~= "table" or type(state) ~= "string" then return end
  local list = att.states
  if not list then
    list = util.array()
    att.states = list
  end
  local last = list[#list]
  if last and last.state == state then return end
  list[#list + 1] = { state = state, at = at or core.time() }
end

--- The attempt's application was accepted by the service.
function _M.submitted(att, state)
  att.submitted_at = att.submitted_at or core.time()
  _M.state_change(att, state or "SUBMITTED", att.submitted_at)
end

return _M
