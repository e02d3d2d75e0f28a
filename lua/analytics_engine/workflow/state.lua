--- The run's state file: intents before requests, results after, written
-- atomically (temp file, fsync, rename) so a crash leaves the last good copy.
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"
local sanitize = require "analytics_engine.sanitize"

local _M = {}
local mt = { __index = _M }

local VERSION = 1

function _M.new(path, fields)
  local doc = {
    version = VERSION, run_id = fields.run_id, workflow = fields.workflow, file = fields.file,
    params = fields.params, status = "running", started_at = core.time(), steps = {}, finally = {},
    resumes = 0,
  }
  return setmetatable({ path = path, doc = doc }, mt)
end

--- Load a state file for --resume; nil, err when it is missing or not ours.
function _M.load(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, "cannot resume: " .. tostring(ferr) end
  local src = f:read("a")
  f:close()
  local doc, jerr = util.json_decode(src)
  if type(doc) ~= "table" or doc.version ~= VERSION or type(doc.steps) ~= "table" then
    return nil, ("cannot resume: %s is not an aeflow state file (%s)"):format(path, jerr or "wrong version")
  end
  return setmetatable({ path = path, doc = doc }, mt)
end

function _M.save(self)
  if not self.path then return true end
  local ok, err = core.write_file_atomic(self.path, sanitize.redact_known(util.json_encode(self.doc)), 384)
  if not ok then return nil, "cannot write the state file: " .. tostring(err) end
  return true
end

--- The record of a step (created on first use).
function _M.step(self, name, is_finally)
  local bucket = is_finally and self.doc.finally or self.doc.steps
  local s = bucket[name]
  if not s then
    s = { status = "pending", items = {} }
    bucket[name] = s
  end
  return s
end

--- The record of one item of a step (for_each index, or 1).
function _M.item(_, step_rec, index)
  local key = tostring(index)
  local it = step_rec.items[key]
  if not it then
    it = { status = "pending", attempts = {} }
    step_rec.items[key] = it
  end
  return it
end

return _M
