--- The local engine's answers for applications, in the vendor's v4 shapes:
-- get_application (view), one row of list_applications (list_item) and
-- get_application_state (status). Records in, plain tables out; nothing
-- here changes a record.
local util = require "analytics_engine.util"

local _M = {}

local function time_or_nil(fmt, t) return t and fmt(t) or nil end

local function details_view(rec)
  local d = util.deepcopy(rec.details)
  if d.arguments then d.arguments = util.array(d.arguments) end
  d.conf = d.conf or {}
  d.instance_defaults_at_submission = { conf = util.copy(rec.instance_defaults or {}) }
  d.runtime = { spark_version = rec.runtime }
  return d
end

local function state_details(rec)
  if not rec.state_details or #rec.state_details == 0 then return nil end
  return util.array(util.deepcopy(rec.state_details))
end

--- get_application
function _M.view(rec)
  local lt = util.long_time
  return {
    application_details = details_view(rec),
    application_id = rec.id,
    template_id = rec.template_id,
    state = rec.state,
    state_details = state_details(rec),
    return_code = rec.return_code,
    creation_time = lt(rec.creation_ts),
    start_time = time_or_nil(lt, rec.start_ts),
    finish_time = time_or_nil(lt, rec.finish_ts),
    spark_application_id = rec.spark_application_id,
    spark_application_name = rec.spark_application_name,
    deploy_mode = "stand-alone",
    volumes = rec.volumes and util.array(util.deepcopy(rec.volumes)) or nil,
  }
end

--- one row of list_applications
function _M.list_item(rec)
  local lt = util.long_time
  return {
    application_id = rec.id,
    template_id = rec.template_id,
    state = rec.state,
    start_time = time_or_nil(lt, rec.start_ts),
    finish_time = time_or_nil(lt, rec.finish_ts),
    spark_application_id = rec.spark_application_id,
    spark_application_name = rec.spark_application_name,
    creation_time = lt(rec.creation_ts),
    runtime = { spark_version = rec.runtime },
    -- Beyond the vendor's list entry: a runner awaiting thousands of
    -- applications learns how each ended from the list it polls anyway,
    -- instead of one get_application per application.
    return_code = rec.return_code,
  }
end

-- get_application_state answers, encoded, by record (weak: a record the
-- store dropped goes with its answer). Polls make most of an engine's load
-- and most records do not change between two polls: the cached text is
-- reused while the fields the answer shows are the same (state_details only
-- grow, so their count stands for them).
local status_cache = setmetatable({}, { __mode = "k" })

local function details_count(rec)
  return rec.state_details and #rec.state_details or 0
end

--- get_application_state as JSON text (what reply.encode would make of
-- status(rec)), from the cache while the record did not change.
function _M.status_json(rec)
  local c = status_cache[rec]
  if c and c.state == rec.state and c.start_ts == rec.start_ts and c.finish_ts == rec.finish_ts
     and c.return_code == rec.return_code and c.spark_application_id == rec.spark_application_id
     and c.details == details_count(rec) then
    return c.json
  end
  local s, err = util.json_encode(_M.status(rec))
  if not s then return nil, err end
  -- cjson escapes every "/" (reply.encode undoes it the same way)
  s = s:gsub("\\/", "/")
  status_cache[rec] = { state = rec.state, start_ts = rec.start_ts, finish_ts = rec.finish_ts,
                        return_code = rec.return_code, spark_application_id = rec.spark_application_id,
                        details = details_count(rec), json = s }
  return s
end

--- get_application_state
function _M.status(rec)
  local it = util.iso_time
  return {
    id = rec.id,
    state = rec.state,
    start_time = time_or_nil(it, rec.start_ts),
    finish_time = time_or_nil(it, rec.finish_ts),
    spark_application_id = rec.spark_application_id,
    return_code = rec.return_code,
    state_details = state_details(rec),
  }
end

return _M
