--- How a run's state document is written and read back: whole (temp file,
-- fsync, rename), and between whole writes as a journal of changed items.
-- The state object (workflow/state.lua) holds what this module keeps:
--   where[item]     the item's place as a journal line says it: ["steps","fan","12"]
--   owner[attempt]  the item an attempt belongs to; step_at[step record] its place prefix
--   dirty           the items said to have changed since the last write; all: the next
--                   write is whole; journaled: a journal may be appended to
--   journal_size, bytes (the last whole text's length), skeleton (the last
--   written text of the document without its items)
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")

local _M = {}

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local function tointeger(v) return type(v) == "number" and math.tointeger(v) or nil end

-- A write of the whole document encodes every item (~60 ms of CPU and a
-- 3.5 MB fsync at 10,000 items); the group commits that submissions wait for
-- came ~0.5 s apart, and the engine sat idle meanwhile. So between whole
-- writes, a write appends only the items said to have changed (`changed`),
-- one line each, to `<state>.journal`, synced with fdatasync: a few KB.
-- The document names its journal's generation; `read` replays a journal of
-- that generation and ignores any other (one a crash left behind), and the
-- line a crash cut short. Once the journal is twice the document (and at
-- least JOURNAL_MIN), the next write is whole again and the journal goes: a
-- 10,000-item submission (~1 KB of journal an item) writes whole twice.
local PIECE, JOURNAL_MIN = 65536, 4194304

local function encode(v)
  local s, err = util.json_encode(v)
  if not s then error(err, 0) end
  return sanitize.redact_known(s)
end

local function key_text(k)
  local tk = type(k)
  if tk ~= "string" and tk ~= "number" then
    error("Cannot serialise " .. tk .. ": table key must be a number or string", 0)
  end
  return encode(tk == "number" and ("%.14g"):format(k) or k)
end

-- Where an item is, as its journal lines say it: ["steps","fan","12"].
function _M.step_place(bucket, name) return "[" .. encode(bucket) .. "," .. key_text(name) .. "," end
--- The place of item `key` of the step whose place is `step_place`.
function _M.item_place(step_place, key) return step_place .. key_text(tostring(key)) .. "]" end

function _M.note_item(self, it, place)
  self.where[it] = place
  for _, att in ipairs(type(it.attempts) == "table" and it.attempts or {}) do
    if type(att) == "table" then self.owner[att] = it end
  end
end

-- The pieces of the whole document, for core.write_file_atomic; notes where
-- every item is and whose every attempt is. self.bytes: the text's length.
local function pieces(self)
  self.bytes = 0
  return coroutine.wrap(function()
    local buf, n = {}, 0
    local function put(s)
      buf[#buf + 1] = s
      n = n + #s
      self.bytes = self.bytes + #s
      if n >= PIECE then
        local piece = table.concat(buf)
        buf, n = {}, 0
        coroutine.yield(piece)
      end
    end
    -- the fields of `obj`, each encoded whole but those `inner` names
    local function object(obj, inner, ...)
      if next(obj) == nil then return put(encode(obj)) end
      local sep = "{"
      for k, v in pairs(obj) do
        put(sep)
        sep = ","
        put(key_text(k) .. ":")
        local walk = type(v) == "table" and next(v) ~= nil and inner and inner[k]
        if walk then walk(v, k, ...) else put(encode(v)) end
      end
      put("}")
    end
    local function items(map, _, place)
      local sep = "{"
      for k, it in pairs(map) do
        put(sep)
        sep = ","
        put(key_text(k) .. ":")
        put(encode(it))
        if type(it) == "table" then _M.note_item(self, it, _M.item_place(place, k)) end
      end
      put("}")
    end
    -- a step's outputs (every item's: ~2.5 MB of text at 10,000 items) an
    -- element at a time, never one string
    local function list(v)
      local len = util.array_length(v)
      if not len then return put(encode(v)) end
      put("[")
      for i = 1, len do
        if i > 1 then put(",") end
        local e = v[i]
        put(e == nil and "null" or encode(e))
      end
      put("]")
    end
    local STEP_PARTS = { items = items, outputs = list }
    local function steps(map, bucket)
      local sep = "{"
      for name, rec in pairs(map) do
        put(sep)
        sep = ","
        put(key_text(name) .. ":")
        if type(rec) == "table" then
          local place = _M.step_place(bucket, name)
          self.step_at[rec] = place
          object(rec, STEP_PARTS, place)
        else
          put(encode(rec))
        end
      end
      put("}")
    end
    object(self.doc, { steps = steps, finally = steps })
    if n > 0 then coroutine.yield(table.concat(buf)) end
  end)
end

-- The document without its items: the run's and the steps' own fields but
-- their outputs, which a step gets only when it ends, and a step's end
-- writes the whole document.
local LEFT_OUT = { items = true, outputs = true }
local function skeleton(doc)
  local top = {}
  for k, v in pairs(doc) do top[k] = v end
  for _, bucket in ipairs { "steps", "finally" } do
    if type(doc[bucket]) == "table" then
      local recs = {}
      for name, rec in pairs(doc[bucket]) do
        local r = {}
        if type(rec) == "table" then
          for k, v in pairs(rec) do if not LEFT_OUT[k] then r[k] = v end end
        end
        recs[name] = r
      end
      top[bucket] = recs
    end
  end
  return encode(top)
end

local function journal_path(self) return self.path .. ".journal" end

-- A journal append whose sync still runs (append with `async`) ends before
-- anything else is written: appends never overlap, so a sync that fails can
-- cut its own record off without touching a later one. Its result is also
-- kept by its handle for whoever waits on it.
local function settle(self)
  local sync = self.syncing
  if not sync then return end
  self.syncing = nil
  if not sync:wait() then self.journaled = false end -- (the next write is whole)
end
_M.settle = settle

function _M.whole(self)
  settle(self)
  local before = self.doc.journal
  self.doc.journal = (tointeger(before) or 0) + 1
  local ok, err = core.write_file_atomic(self.path, pieces(self), 384)
  if not ok then
    self.doc.journal = before
    return nil, "cannot write the state file: " .. tostring(err)
  end
  os.remove(journal_path(self)) -- (one left behind names an older generation)
  self.dirty, self.all, self.journal_size = {}, false, nil
  self.skeleton = skeleton(self.doc)
  -- a journal only beside a regular file (not --state /dev/stdout)
  self.journaled = util.not_regular(self.path) == nil
  return true, "whole"
end

-- The journal lines of what changed, and the document line's text; nil
-- when an item's place is not known (the write must be whole).
local function changes(self)
  local lines = {}
  for it in pairs(self.dirty) do
    local place = self.where[it]
    if not place then return nil end
    lines[#lines + 1] = '{"item":' .. place .. ',"record":' .. encode(it) .. "}\n"
  end
  local top = skeleton(self.doc)
  if top ~= self.skeleton then lines[#lines + 1] = '{"doc":' .. top .. "}\n" end
  return table.concat(lines), top
end

--- Append what changed to the journal -> true, "journal" | true, "whole"
-- (nothing to say where an item goes) | nil, err. With `async`, an append
-- to an existing journal returns once written and its sync runs on its own
-- thread: the third result, a core.append_start handle, says when it ends
-- (the items count as written only then; see settle).
function _M.append(self, async)
  settle(self)
  -- (a value that cannot be encoded fails the write, as in a whole write)
  local okx, text, top = pcall(changes, self)
  if not okx then return nil, "cannot write the state file's journal: " .. tostring(text) end
  if not text then return _M.whole(self) end
  if text == "" then return true, "journal" end
  local ok, err, sync
  if self.journal_size and async then
    sync, err = core.append_start(journal_path(self), text)
    ok = sync ~= nil
    self.syncing = sync
  elseif self.journal_size then
    ok, err = core.append_file(journal_path(self), text)
  else
    text = encode { journal = self.doc.journal, run_id = self.doc.run_id } .. "\n" .. text
    ok, err = core.write_file_atomic(journal_path(self), text, 384)
  end
  if not ok then
    self.journaled = false -- the next write is whole
    return nil, "cannot write the state file's journal: " .. tostring(err)
  end
  self.dirty, self.skeleton = {}, top
  self.journal_size = (self.journal_size or 0) + #text
  if self.journal_size > math.max(JOURNAL_MIN, 2 * (self.bytes or 0)) then self.all = true end
  return true, "journal", sync
end

-- Replay the journal of a document just read (see above): items and the
-- document's own fields as they were last written.
function _M.replay(path, doc)
  local gen = tointeger(doc.journal)
  if not gen or util.not_regular(path .. ".journal") then return doc end
  local text = util.read_file(path .. ".journal")
  if not text then return doc end
  local first = true
  -- complete lines only: a crash may cut the last one short
  for line in text:gmatch("([^\n]*)\n") do
    local ok, rec = pcall(util.json_decode, line)
    if not ok or type(rec) ~= "table" then break end
    if first then
      if rec.journal ~= gen then break end
      first = false
    elseif type(rec.item) == "table" and type(rec.record) == "table" then
      local bucket, name, key = rec.item[1], rec.item[2], rec.item[3]
      if (bucket == "steps" or bucket == "finally") and type(doc[bucket]) == "table" then
        local srec = doc[bucket][name]
        if type(srec) ~= "table" then
          srec = { status = "pending", items = {} }
          doc[bucket][name] = srec
        end
        if type(srec.items) ~= "table" then srec.items = {} end
        srec.items[key] = rec.record
      end
    elseif type(rec.doc) == "table" then
      local top = rec.doc
      for _, bucket in ipairs { "steps", "finally" } do
        local old, new = doc[bucket], top[bucket]
        if type(old) == "table" and type(new) == "table" then
          for name, srec in pairs(old) do
            if type(new[name]) ~= "table" then new[name] = srec
            elseif type(srec) == "table" then
              new[name].items, new[name].outputs = srec.items, srec.outputs
            end
          end
          for _, srec in pairs(new) do
            if type(srec) == "table" and srec.items == nil then srec.items = {} end
          end
        elseif type(old) == "table" then
          top[bucket] = old
        end
      end
      doc = top
    end
  end
  return doc
end

return _M
