--- The local engine's answers for applications, in the vendor's v4 shapes:
-- get_application (view), one row of list_applications (list_item) and
-- get_application_state (status). Records in, plain tables out; nothing
-- here changes a record.
local util = require("analytics_engine.util")

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

-- The fields every view shows, times in the view's format `fmt`, added to
-- the view's own fields `t`.
local function with_common(rec, fmt, t)
  t.state = rec.state
  t.start_time = time_or_nil(fmt, rec.start_ts)
  t.finish_time = time_or_nil(fmt, rec.finish_ts)
  t.spark_application_id = rec.spark_application_id
  t.return_code = rec.return_code
  return t
end

--- get_application
function _M.view(rec)
  local lt = util.long_time
  return with_common(rec, lt, {
    application_details = details_view(rec),
    application_id = rec.id,
    template_id = rec.template_id,
    state_details = state_details(rec),
    creation_time = lt(rec.creation_ts),
    spark_application_name = rec.spark_application_name,
    deploy_mode = "stand-alone",
    volumes = rec.volumes and util.array(util.deepcopy(rec.volumes)) or nil,
  })
end

--- one row of list_applications. Its return_code (from with_common) is
-- beyond the vendor's list entry: a runner awaiting thousands of
-- applications learns how each ended from the list it polls anyway,
-- instead of one get_application per application.
function _M.list_item(rec)
  local lt = util.long_time
  return with_common(rec, lt, {
    application_id = rec.id,
    template_id = rec.template_id,
    spark_application_name = rec.spark_application_name,
    creation_time = lt(rec.creation_ts),
    runtime = { spark_version = rec.runtime },
  })
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
  return with_common(rec, util.iso_time, { id = rec.id, state_details = state_details(rec) })
end

return _M
