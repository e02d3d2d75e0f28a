--- The run's state file: intents before requests, results after, written
-- atomically (temp file, fsync, rename) so a crash leaves the last good copy.
--
-- One runner per state file: `lock` takes an flock on `<state>.lock` for the
-- run's lifetime (the kernel drops it when the process ends, even by kill -9)
-- and writes the holder's pid and host into it, so a second `run`/`--resume`
-- can say who has it.
--
-- A state file read for --resume is checked against the schema below before
-- anything trusts it; the first wrong field is named, with the file, on one
-- line. Files from before versions existed (no `version`) are migrated.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local writes = require("analytics_engine.workflow.state_writes")

local _M = {}
local mt = { __index = _M }

local VERSION = 1
_M.VERSION = VERSION

local type, pairs, ipairs, tostring, fmt = type, pairs, ipairs, tostring, string.format
-- (math.tointeger("1") is 1 on Lua 5.4.3+: numbers only here)
local function tointeger(v) return type(v) == "number" and math.tointeger(v) or nil end

-- (the fields workflow/state_writes.lua keeps: see there)
local function state_object(path, doc)
  return setmetatable({ path = path, doc = doc, where = {}, owner = {}, step_at = {}, dirty = {}, all = true }, mt)
end

function _M.new(path, fields)
  local doc = {
    version = VERSION, run_id = fields.run_id, workflow = fields.workflow, file = fields.file,
    params = fields.params, status = "running", started_at = core.time(), steps = {}, finally = {},
    resumes = 0,
  }
  return state_object(path, doc)
end

-- ---- the lock -------------------------------------------------------------

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local h = f and f:read("l")
  if f then f:close() end
  return h or os.getenv("HOSTNAME") or "?"
end

--- Lock `state_path` for this process: the lock (close it, or let the process
-- end), or nil and a one-line message naming the holder.
function _M.lock(state_path)
  local lock_path = state_path .. ".lock"
  local lock, err, why = core.lock_file(lock_path)
  if not lock then
    if why ~= "held" then return nil, "cannot lock the state file: " .. tostring(err) end
    -- The holder writes its name just after it got the lock: give it a moment.
    local holder
    for _ = 1, 50 do
      holder = util.json_decode(util.read_file(lock_path) or "")
      if type(holder) == "table" then break end
      core.sleep(0.01)
    end
    local who = type(holder) == "table" and holder.pid
      and fmt("pid %s on host %s", tostring(tointeger(holder.pid) or holder.pid), tostring(holder.host))
      or "another process"
    local since = type(holder) == "table" and tonumber(holder.started_at)
      and (", since " .. os.date("%Y-%m-%d %H:%M:%S", math.floor(holder.started_at))) or ""
    return nil, fmt("%s is in use by another aeflow run (%s%s); wait for it or stop it (lock %s)",
      state_path, sanitize.clean(who), since, lock_path)
  end
  lock:write(util.json_encode { pid = core.getpid(), host = hostname(), started_at = core.time() } .. "\n")
  return lock
end

-- ---- the schema -------------------------------------------------------------
-- A checker takes (value, field path) and returns nil or a message.

local function show(v)
  if v == util.null then return "null" end
  local t = type(v)
  if t == "number" and tointeger(v) then return "the number " .. fmt("%d", tointeger(v)) end
  if t == "table" then return next(v) == nil and "an empty table" or (v[1] ~= nil and "an array" or "an object") end
  if t == "string" then return fmt("the string %q", #v > 40 and v:sub(1, 37) .. "..." or v) end
  return "the " .. t .. " " .. tostring(v)
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for k in pairs(v) do
    if not tointeger(k) or k < 1 then return false end
    n = n + 1
  end
  return n == #v
end

local function is_object(v)
  if type(v) ~= "table" then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end

local function want(pred, what)
  return function(v) if not pred(v) then return ("expected %s, got %s"):format(what, show(v)) end end
end

local string_ = want(function(v) return type(v) == "string" end, "a string")
local number_ = want(function(v) return type(v) == "number" end, "a number")
local count_ = want(function(v) return tointeger(v) ~= nil and v >= 0 end, "a whole number")
local boolean_ = want(function(v) return type(v) == "boolean" end, "true or false")
local any_ = function() end
local function one_of(set)
  local names = {}
  for k in pairs(set) do names[#names + 1] = k end
  table.sort(names)
  return want(function(v) return set[v] == true end, "one of " .. table.concat(names, ", "))
end

local STATUS = one_of { pending = true, running = true, succeeded = true, failed = true, skipped = true,
                        cancelled = true }

-- { fields = { name = checker }, required = { name, ... } } for one table.
local function record(fields, required)
  return function(v, path)
    if not is_object(v) then return ("expected an object, got %s"):format(show(v)), path end
    for _, k in ipairs(required or {}) do
      if v[k] == nil then return "missing", path .. "." .. k end
    end
    for k, check in pairs(fields) do
      if v[k] ~= nil then
        local msg, where = check(v[k], path .. "." .. k)
        if msg then return msg, where or (path .. "." .. k) end
      end
    end
  end
end

local function array_of(check)
  return function(v, path)
    if not is_array(v) and not (type(v) == "table" and next(v) == nil) then
      return ("expected an array, got %s"):format(show(v)), path
    end
    for i, x in ipairs(v) do
      local msg, where = check(x, path .. "[" .. i .. "]")
      if msg then return msg, where or (path .. "[" .. i .. "]") end
    end
  end
end

local function map_of(check)
  return function(v, path)
    if not is_object(v) then return ("expected an object, got %s"):format(show(v)), path end
    for k, x in pairs(v) do
      local msg, where = check(x, path .. "." .. k)
      if msg then return msg, where or (path .. "." .. k) end
    end
  end
end

local scalar = want(function(v) local t = type(v) return t == "string" or t == "number" or t == "boolean" end,
  "a string, number or boolean")

-- An item's key: its 1-based index as text ("1", "2", ...), as _M.item writes it.
local function items_of(check)
  local inner = map_of(check)
  return function(v, path)
    if is_object(v) then
      for k in pairs(v) do
        if not k:find("^[1-9]%d*$") or #k > 15 then
          return ("expected an item number (1, 2, ...), got %s"):format(show(k)), path .. "." .. k
        end
      end
    end
    return inner(v, path)
  end
end

local function or_null(check)
  return function(v, path)
    if v == util.null then return nil end
    return check(v, path)
  end
end

local LOG_TAIL = record({ stream = string_, pointer = string_, lines = array_of(scalar) })

local ATTEMPT = record({
  n = count_, application_id = string_, token = string_, result = one_of { succeeded = true, failed = true },
  error = scalar, started_at = number_, finished_at = number_, resumed = boolean_, stopped = boolean_,
  -- the application as last seen: its state, the state changes, return code, log tail
  -- (state and return_code are the server's words: JSON null is kept as it came)
  state = or_null(string_), submitted_at = number_, intent_at = number_, return_code = or_null(scalar),
  states = array_of(record({ at = number_, state = or_null(string_) })), log_tail = LOG_TAIL,
  -- quota-aware admission (workflow/admission.lua): when it wanted to go, was held, was let through, and why
  wanted_at = number_, held_at = number_, admitted_at = number_, held = string_,
}, { "n" })

local ITEM = record({ status = STATUS, attempts = array_of(ATTEMPT), error = scalar, outputs = any_ },
  { "status", "attempts" })

local STEP = record({ status = STATUS, items = items_of(ITEM), error = scalar, outputs = any_,
                      started_at = number_, finished_at = number_ }, { "status", "items" })

local DOC = record({
  version = count_, run_id = want(function(v) return type(v) == "string" and v:find("^[%w._-]+$") ~= nil end,
    "a run id (letters, digits, . _ -)"),
  workflow = string_, file = string_, params = map_of(scalar), status = string_, started_at = number_,
  finished_at = number_, resumes = count_, steps = map_of(STEP), finally = map_of(STEP),
  -- which engine the run used (a resume goes back to the same one)
  engine = record({ ["local"] = boolean_, url = string_, instance_id = string_ }),
  journal = count_, -- the generation of its journal (see "writing" below)
}, { "run_id", "workflow", "params", "steps" })

--- Check a decoded state document: nil, or the message and the field.
function _M.check(doc)
  local msg, where = DOC(doc, "state")
  if msg then return msg, (where or "state"):gsub("^state%.?", "") end
end

-- Older layouts brought to this version, one step at a time.
local MIGRATIONS = {
  -- 0 → 1: before versions: no `version`, `resumes`, `finally` or `params`.
  [0] = function(doc)
    doc.params = doc.params or {}
    doc.finally = doc.finally or {}
    doc.resumes = doc.resumes or 0
    doc.version = 1
  end,
}

--- Read, migrate and check a state file: the document, or nil and a
-- one-line message naming the file and the first wrong field. Every reader
-- of state files (resume, report, orphans) goes through it.
function _M.read(path)
  -- /dev/zero never ends and a FIFO blocks: only a regular file is read
  local what = util.not_regular(path)
  if what then
    return nil, sanitize.clean(("%s is not an aeflow state file (%s, not a regular file)"):format(path, what))
  end
  local src, ferr = util.read_file(path)
  if not src then return nil, sanitize.clean(tostring(ferr)) end
  local doc, jerr = util.json_decode(src)
  if type(doc) ~= "table" then
    return nil, sanitize.clean(("%s is not an aeflow state file (%s)"):format(path,
      jerr and ("not JSON: " .. jerr) or ("it holds " .. show(doc))))
  end
  if doc.run_id == nil and doc.workflow == nil and doc.steps == nil then
    return nil, sanitize.clean(("%s is not an aeflow state file (no run_id, workflow or steps)"):format(path))
  end
  local v = doc.version
  if v == nil then v = 0 end
  if not tointeger(v) or v < 0 then
    return nil, sanitize.clean(("%s: version: expected a whole number, got %s"):format(path, show(v)))
  end
  if v > VERSION then
    return nil, ("%s was written by a newer aeflow (state version %d; this one reads up to %d)")
      :format(sanitize.clean(path), v, VERSION)
  end
  for from = v, VERSION - 1 do
    if type(doc.steps) ~= "table" then break end -- reported by the check below
    MIGRATIONS[from](doc)
  end
  doc = writes.replay(path, doc)
  local msg, field = _M.check(doc)
  if msg then
    return nil, sanitize.clean(("%s: %s: %s"):format(path, field ~= "" and field or "(top)", msg))
  end
  return doc
end

--- Load a state file for --resume; nil, err when it is missing, not ours,
-- or not in the shape a run writes (the first wrong field is named).
function _M.load(path)
  local doc, err = _M.read(path)
  if not doc then return nil, "cannot resume: " .. err end
  return state_object(path, doc)
end

-- ---- writing (workflow/state_writes.lua) ----------------------------------

--- `rec` changed: an item record (state:item's), or an attempt of one; nil
-- (or an attempt the state does not know): anything may have changed.
function _M.changed(self, rec)
  if type(rec) == "table" then
    local it = rec.attempts ~= nil and rec or self.owner[rec]
    if it then
      self.dirty[it] = true
      return
    end
  end
  self.all = true
end

--- Add attempt `att` to item `it`.
function _M.add_attempt(self, it, att)
  it.attempts[#it.attempts + 1] = att
  self.owner[att] = it
  self.dirty[it] = true
end

--- Write the state: with `changed_only`, the items said to have changed
-- since the last write go to the journal when they can; otherwise (or when
-- it is due) the whole document. -> true, "journal" | "whole" | nil, err.
-- With `async` too, a journal append's sync may still run: then a third
-- result, its handle (`:done()`, `:fd()`, `:wait()`), says when it ended.
function _M.save(self, changed_only, async)
  if not self.path then return true end
  -- a secret registered since must be masked in what was written too
  local secrets = sanitize.secrets_version()
  if changed_only and not self.all and self.journaled and secrets == self.secrets_seen then
    return writes.append(self, async)
  end
  self.secrets_seen = secrets
  return writes.whole(self)
end

--- The record of a step (created on first use).
function _M.step(self, name, is_finally)
  local bucket = is_finally and self.doc.finally or self.doc.steps
  local s = bucket[name]
  if not s then
    s = { status = "pending", items = {} }
    bucket[name] = s
  end
  self.step_at[s] = self.step_at[s] or writes.step_place(is_finally and "finally" or "steps", name)
  return s
end

--- The record of one item of a step (for_each index, or 1).
function _M.item(self, step_rec, index)
  local key = tostring(index)
  local it = step_rec.items[key]
  if not it then
    it = { status = "pending", attempts = {} }
    step_rec.items[key] = it
  end
  local place = self.step_at[step_rec]
  if place and not self.where[it] then writes.note_item(self, it, writes.item_place(place, key)) end
  return it
end

--- fn(att) for every attempt of a step record, item by item (for readers of
-- a state file: the record may lack parts, nothing is created).
function _M.each_attempt_of(rec, fn)
  for _, it in pairs(type(rec) == "table" and rec.items or {}) do
    for _, att in ipairs(it.attempts or {}) do fn(att) end
  end
end

--- fn(att, step_name) for every attempt of every step and finally step of a
-- state document.
function _M.each_attempt(doc, fn)
  for _, bucket in ipairs { doc.steps or {}, doc.finally or {} } do
    for name, rec in pairs(bucket) do
      _M.each_attempt_of(rec, function(att) fn(att, name) end)
    end
  end
end

return _M
