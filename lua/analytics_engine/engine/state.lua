--- The engine's model and its persistence, behind a narrow interface so the
-- JSON snapshot can become SQLite without touching the handlers:
--   store:settings()         the instance-wide singleton table (read and mutate in place)
--   store:get(kind, id)      one record of "applications" or "clusters", or nil
--   store:put(kind, rec)     insert or replace (rec.id is the key; keeps insertion order)
--   store:list(kind)         records in insertion order (do not mutate the array)
--   store:commit()           persist every change made since the last commit
-- Records are plain data (strings, numbers, booleans, tables of them).
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"

local _M = {}
local mt = { __index = _M }

local KINDS = { applications = true, clusters = true }

local function empty_kinds()
  return { applications = { list = {}, by_id = {} }, clusters = { list = {}, by_id = {} } }
end

--- open(path) -> store | nil, err. A missing file is an empty model.
function _M.open(path)
  local self = setmetatable({ path = path, data = empty_kinds(), conf = {}, dirty = false }, mt)
  local f = io.open(path, "rb")
  if not f then return self end
  local s = f:read("a")
  f:close()
  local snap, err = util.json_decode(s)
  if type(snap) ~= "table" then return nil, ("%s: not a valid state snapshot: %s"):format(path, tostring(err)) end
  self.conf = type(snap.settings) == "table" and snap.settings or {}
  for kind in pairs(KINDS) do
    for _, rec in ipairs(type(snap[kind]) == "table" and snap[kind] or {}) do
      if type(rec) == "table" and type(rec.id) == "string" then self:put(kind, rec) end
    end
  end
  self.dirty = false
  return self
end

function _M:settings()
  return self.conf
end

function _M:get(kind, id)
  return self.data[kind].by_id[id]
end

function _M:put(kind, rec)
  local k = self.data[kind]
  if not k then error("bad argument #1 to 'put' (unknown kind " .. tostring(kind) .. ")", 2) end
  if not k.by_id[rec.id] then k.list[#k.list + 1] = rec end
  k.by_id[rec.id] = rec
  self.dirty = true
  return rec
end

function _M:list(kind)
  return self.data[kind].list
end

--- Mark the model changed (for in-place edits of settings or records).
function _M:touch()
  self.dirty = true
end

function _M:commit()
  local snap = { version = 1, settings = self.conf,
                 applications = util.array(self.data.applications.list),
                 clusters = util.array(self.data.clusters.list) }
  local s, err = util.json_encode(snap)
  if not s then return nil, "cannot encode state: " .. tostring(err) end
  local ok, werr = core.write_file_atomic(self.path, s, 384)
  if not ok then return nil, "cannot write " .. self.path .. ": " .. tostring(werr) end
  self.dirty = false
  return true
end

return _M
