--- The engine's model and its persistence in SQLite, behind a narrow interface:
--   store:settings()         the instance-wide singleton table (read and mutate in place)
--   store:get(kind, id)      one record of "applications", "clusters" or "kernels", or nil
--   store:put(kind, rec)     insert or replace (rec.id is the key; keeps insertion order)
--   store:list(kind)         records in insertion order (do not mutate the array)
--   store:touch(kind, rec)   mark one record changed in place; touch("settings") the
--                            settings; touch() "something changed" (compares everything)
--   store:commit()           write every change since the last commit in one transaction
--   store:mark()             what is unsaved now; store:revert(mark) undoes in memory every
--                            change made after the mark (a change that cannot be saved)
--   store:close()
--   store.on_change          nil, or function(kind, rec) told of every change as it is
--                            made: (kind, rec) for a record, ("settings"), or (nil) for
--                            "anything may have changed" (a bare touch())
-- Reads are answered from the in-memory model loaded at open, so status polls
-- cost no disk I/O; commit() returns only after SQLite has synced the WAL
-- (synchronous=FULL), and the engine answers a request only after its commit,
-- so what was acknowledged survives kill -9 and power loss.
-- Records are plain data (strings, numbers, booleans, tables of them), kept as
-- JSON documents next to the columns worth querying.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local _M = {}
local mt = { __index = _M }

_M.KINDS = { "applications", "clusters", "kernels" }
local KIND = {}
for _, k in ipairs(_M.KINDS) do KIND[k] = true end

local function record_table(kind)
  return ([[CREATE TABLE %s (
  seq INTEGER PRIMARY KEY,          -- insertion order
  id TEXT NOT NULL UNIQUE,
  state TEXT,
  created REAL,
  doc TEXT NOT NULL                 -- the record as JSON
);
CREATE INDEX %s_state ON %s (state);
]]):format(kind, kind, kind)
end

-- Migrations: MIGRATIONS[n] takes the schema from version n-1 to n. Each
-- runs in the transaction that records its version, so a crash mid-way
-- leaves the previous version whole.
local MIGRATIONS = {
  -- 1: settings, applications, clusters, kernels.
  function(db)
    local ok, err = db:exec("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      .. record_table("applications") .. record_table("clusters") .. record_table("kernels"))
    return ok, err
  end,
}
_M.SCHEMA_VERSION = #MIGRATIONS

local read_file = util.read_file

-- Insert a record or replace its state and document (its seq and creation stay).
local UPSERT = "INSERT INTO %s (seq, id, state, created, doc) VALUES (?, ?, ?, ?, ?) "
  .. "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc"

local function rollback(db, err)
  if db:in_transaction() then db:exec("ROLLBACK") end
  return nil, err
end

-- Run the migrations the database lacks; import a JSON snapshot (the format
-- before SQLite) into a fresh database.
local function migrate(self, legacy)
  local db = self.db
  local ok, err = db:exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
  if not ok then return nil, err end
  local rows
  rows, err = db:query("SELECT max(version) AS v FROM schema_version")
  if not rows then return nil, err end
  local have = rows[1].v or 0
  if have > _M.SCHEMA_VERSION then
    return nil, ("%s has schema version %d, newer than this engine's %d; use a newer aeflow")
      :format(self.path, have, _M.SCHEMA_VERSION)
  end
  local imported
  for v = have + 1, _M.SCHEMA_VERSION do
    ok, err = db:exec("BEGIN IMMEDIATE")
    if not ok then return nil, err end
    ok, err = MIGRATIONS[v](db)
    if not ok then return rollback(db, ("migration to schema %d failed: %s"):format(v, err)) end
    ok, err = db:run("INSERT INTO schema_version (version) VALUES (?)", v)
    if not ok then return rollback(db, err) end
    if v == 1 and legacy then
      local s = read_file(legacy)
      if s then
        local snap, derr = util.json_decode(s)
        if type(snap) ~= "table" then
          return rollback(db, ("%s: not a valid state snapshot: %s"):format(legacy, tostring(derr)))
        end
        self.conf = type(snap.settings) == "table" and snap.settings or {}
        for _, kind in ipairs(_M.KINDS) do
          for _, rec in ipairs(type(snap[kind]) == "table" and snap[kind] or {}) do
            if type(rec) == "table" and type(rec.id) == "string" then self:put(kind, rec) end
          end
        end
        self.dirty_settings = true
        ok, err = self:write()
        if not ok then return rollback(db, err) end
        imported = legacy
      end
    end
    ok, err = db:exec("COMMIT")
    if not ok then return rollback(db, err) end
  end
  if imported then os.rename(imported, imported .. ".migrated") end
  return true
end

-- The tables and columns this engine reads; a database that lacks one was
-- damaged or edited by hand, and the engine says so in one line instead of
-- failing on the first query.
local EXPECTED = { settings = { "key", "value" } }
for _, k in ipairs(_M.KINDS) do EXPECTED[k] = { "seq", "id", "state", "created", "doc" } end
local ADVICE = "restore a backup or move the file away"

local function check_schema(self)
  local db = self.db
  for _, name in ipairs({ "settings", table.unpack(_M.KINDS) }) do
    local rows, err = db:query("SELECT name FROM pragma_table_info(?)", name)
    if not rows then return nil, err end
    if #rows == 0 then return nil, ("table %s is missing; %s"):format(name, ADVICE) end
    local have = {}
    for _, r in ipairs(rows) do have[r.name] = true end
    for _, col in ipairs(EXPECTED[name]) do
      if not have[col] then return nil, ("table %s has no column %s; %s"):format(name, col, ADVICE) end
    end
  end
  return true
end

local function load(self)
  local db = self.db
  local rows, err = db:query("SELECT key, value FROM settings")
  if not rows then return nil, err end
  for _, r in ipairs(rows) do
    local v = util.json_decode(r.value)
    if v == nil then return nil, ("%s: setting %s is not valid JSON"):format(self.path, r.key) end
    self.conf[r.key] = v
    self.written.settings[r.key] = r.value
  end
  for _, kind in ipairs(_M.KINDS) do
    local k, written = self.data[kind], self.written[kind]
    for seq, id, doc in db:rows("SELECT seq, id, doc FROM " .. kind .. " ORDER BY seq") do
      local rec = util.json_decode(doc)
      if type(rec) ~= "table" then return nil, ("%s: %s record %s is not valid JSON"):format(self.path, kind, id) end
      k.list[#k.list + 1] = rec
      k.by_id[id] = rec
      k.seq[id] = seq
      written[id] = doc
      if seq >= self.next_seq then self.next_seq = seq + 1 end
    end
  end
  return true
end

--- open(path, { json = legacy_snapshot_path }) -> store | nil, err
-- A missing database is created; a JSON snapshot from an older engine is
-- imported into a fresh one (and renamed to *.migrated).
-- An empty model: nothing held, nothing written.
local function empty(self)
  self.conf, self.next_seq = {}, 1
  self.data, self.written = {}, { settings = {} }
  for _, kind in ipairs(_M.KINDS) do
    self.data[kind] = { list = {}, by_id = {}, seq = {} }
    self.written[kind] = {}
  end
end

function _M.open(path, opts)
  opts = opts or {}
  local self = setmetatable({ path = path, dirty = false, dirty_recs = {}, dirty_settings = false,
                              dirty_all = false }, mt)
  empty(self)
  local db, err = core.sqlite_open(path)
  if not db then return nil, err end
  self.db = db
  local function bail(e)
    db:close()
    return nil, ("%s: %s"):format(path, tostring(e))
  end
  -- WAL: readers never block the writer and a commit is one append + fsync.
  -- synchronous=FULL: with NORMAL a WAL commit is not synced, so a power cut
  -- could lose a change the engine already acknowledged.
  local rows, qerr = db:query("PRAGMA journal_mode=WAL")
  if not rows then return bail(tostring(qerr):gsub("^sqlite: ", "") .. "; " .. ADVICE) end
  if not rows[1] or rows[1].journal_mode ~= "wal" then return bail("cannot switch to WAL mode") end
  local ok, perr = db:exec("PRAGMA synchronous=FULL")
  if not ok then return bail(perr) end
  ok, perr = migrate(self, opts.json)
  if not ok then return bail(perr) end
  ok, perr = check_schema(self)
  if not ok then return bail(perr) end
  -- Start from what the database holds (an import above is in it now).
  empty(self)
  -- db:rows raises on a damaged page: that too is one line, not a traceback.
  local lok, lres, lerr = pcall(load, self)
  if not lok then return bail(tostring(lres):gsub("^[^:]*:%d+: ", "") .. "; " .. ADVICE) end
  if not lres then return bail(lerr) end
  self.upsert = {}
  for _, kind in ipairs(_M.KINDS) do
    local st, serr = db:prepare(UPSERT:format(kind))
    if not st then return bail(serr) end
    self.upsert[kind] = st
  end
  self.dirty, self.dirty_recs, self.dirty_settings, self.dirty_all = false, {}, false, false
  return self
end

function _M:settings()
  return self.conf
end

-- Tell the engine's listener (answers kept from the model) of a change.
local function changed(self, kind, rec)
  local f = self.on_change
  if f then f(kind, rec) end
end

function _M:get(kind, id)
  return self.data[kind].by_id[id]
end

function _M:put(kind, rec)
  local k = self.data[kind]
  if not k then error("bad argument #1 to 'put' (unknown kind " .. tostring(kind) .. ")", 2) end
  if type(rec) ~= "table" or type(rec.id) ~= "string" then
    error("bad argument #2 to 'put' (a record with a string id expected)", 2)
  end
  local old = k.by_id[rec.id]
  if not old then
    k.list[#k.list + 1] = rec
    k.seq[rec.id] = self.next_seq
    self.next_seq = self.next_seq + 1
  elseif old ~= rec then
    for i, r in ipairs(k.list) do if r == old then k.list[i] = rec break end end
    self.dirty_recs[old] = nil
  end
  k.by_id[rec.id] = rec
  self.dirty_recs[rec] = kind
  self.dirty = true
  changed(self, kind, rec)
  return rec
end

function _M:list(kind)
  return self.data[kind].list
end

--- Mark the model changed after in-place edits (see the header).
function _M:touch(kind, rec)
  if kind == nil then
    self.dirty_all = true
  elseif kind == "settings" then
    self.dirty_settings = true
  else
    if not KIND[kind] or type(rec) ~= "table" then
      error("bad argument to 'touch' (kind and record, \"settings\" or nothing expected)", 2)
    end
    self.dirty_recs[rec] = kind
  end
  self.dirty = true
  changed(self, kind, rec)
end

-- Write one record if its JSON differs from what the database holds.
local function write_record(self, kind, rec)
  local doc, err = util.json_encode(rec)
  if not doc then return nil, ("cannot encode %s record %s: %s"):format(kind, tostring(rec.id), tostring(err)) end
  if self.written[kind][rec.id] == doc then return true end
  -- prepared once open() is done; the import in migrate() runs before that
  local st = self.upsert and self.upsert[kind]
  local ok
  if st then
    st:bind(self.data[kind].seq[rec.id], rec.id, rec.state, rec.creation_ts, doc)
    ok, err = st:step()
    st:reset()
  else
    ok, err = self.db:run(UPSERT:format(kind), self.data[kind].seq[rec.id], rec.id, rec.state, rec.creation_ts, doc)
  end
  if ok == nil then return nil, err end
  self.pending[#self.pending + 1] = { kind, rec.id, doc }
  return true
end

-- Every pending change, inside the caller's transaction.
function _M:write()
  self.pending = {}
  if self.dirty_settings or self.dirty_all then
    for key, v in pairs(self.conf) do
      local s, err = util.json_encode(v)
      if not s then return nil, ("cannot encode setting %s: %s"):format(key, tostring(err)) end
      if self.written.settings[key] ~= s then
        local ok, rerr = self.db:run("INSERT INTO settings (key, value) VALUES (?, ?) "
          .. "ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, s)
        if not ok then return nil, rerr end
        self.pending[#self.pending + 1] = { "settings", key, s }
      end
    end
    for key in pairs(self.written.settings) do
      if self.conf[key] == nil then
        local ok, rerr = self.db:run("DELETE FROM settings WHERE key = ?", key)
        if not ok then return nil, rerr end
        self.pending[#self.pending + 1] = { "settings", key, nil }
      end
    end
  end
  if self.dirty_all then
    for _, kind in ipairs(_M.KINDS) do
      for _, rec in ipairs(self.data[kind].list) do
        local ok, err = write_record(self, kind, rec)
        if not ok then return nil, err end
      end
    end
  else
    for rec, kind in pairs(self.dirty_recs) do
      local ok, err = write_record(self, kind, rec)
      if not ok then return nil, err end
    end
  end
  return true
end

--- Persist every change since the last commit -> true | nil, err.
-- On failure nothing is written and the changes stay pending.
function _M:commit()
  if not self.dirty then return true end
  local db = self.db
  if not db then return nil, "closed" end
  local ok, err = db:exec("BEGIN IMMEDIATE")
  if not ok then return nil, ("cannot save state in %s: %s"):format(self.path, err) end
  ok, err = self:write()
  if ok then ok, err = db:exec("COMMIT") end
  if not ok then
    rollback(db)
    return nil, ("cannot save state in %s: %s"):format(self.path, tostring(err))
  end
  for _, p in ipairs(self.pending) do self.written[p[1]][p[2]] = p[3] end
  self.pending = nil
  self.dirty, self.dirty_recs, self.dirty_settings, self.dirty_all = false, {}, false, false
  return true
end

--- What is unsaved now, for revert(): changes made after it can be undone.
function _M:mark()
  local recs = {}
  for rec in pairs(self.dirty_recs) do recs[rec] = true end
  return { recs = recs, settings = self.dirty_settings or self.dirty_all }
end

-- Put a record back as the database holds it, in place (others hold it).
local function restore(rec, doc)
  local old = util.json_decode(doc)
  for k in pairs(rec) do rec[k] = nil end
  for k, v in pairs(old) do rec[k] = v end
end

local function forget(self, kind, rec)
  local k = self.data[kind]
  for i, r in ipairs(k.list) do if r == rec then table.remove(k.list, i) break end end
  k.by_id[rec.id] = nil
  k.seq[rec.id] = nil
end

--- Undo in memory every change made after mark (from mark()) and never
-- saved: a record first put after it is dropped, one changed after it is
-- restored in place as last saved, and so are the settings. Changes that
-- were already unsaved at the mark stay pending. -> the dropped records,
-- { { kind = k, rec = r }, ... }, and how many changes were undone
function _M:revert(mark)
  local dropped, n = {}, 0
  local function undo(kind, rec)
    n = n + 1
    local doc = self.written[kind][rec.id]
    if doc == nil then
      forget(self, kind, rec)
      dropped[#dropped + 1] = { kind = kind, rec = rec }
    else
      restore(rec, doc)
    end
    self.dirty_recs[rec] = nil
    changed(self, kind, rec)
  end
  for rec, kind in pairs(self.dirty_recs) do
    if not mark.recs[rec] then undo(kind, rec) end
  end
  if self.dirty_all then -- a bare touch(): find what differs from the database
    for _, kind in ipairs(_M.KINDS) do
      local list = self.data[kind].list
      for i = #list, 1, -1 do
        local rec = list[i]
        if not mark.recs[rec] and util.json_encode(rec) ~= self.written[kind][rec.id] then undo(kind, rec) end
      end
    end
    self.dirty_all = false
  end
  if self.dirty_settings and not mark.settings then
    for k in pairs(self.conf) do self.conf[k] = nil end
    for k, v in pairs(self.written.settings) do self.conf[k] = util.json_decode(v) end
    self.dirty_settings = false
    n = n + 1
    changed(self, "settings")
  end
  self.dirty = next(self.dirty_recs) ~= nil or self.dirty_settings or self.dirty_all
  return dropped, n
end

function _M:close()
  if not self.db then return true end
  for _, st in pairs(self.upsert or {}) do st:close() end
  self.db:close()
  self.db = nil
  return true
end

return _M
