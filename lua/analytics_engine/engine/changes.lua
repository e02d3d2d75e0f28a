--- The local engine's change sequence for applications: every change of what
-- a list_applications row shows (a creation, a state change, and what comes
-- with one: start/finish time, spark_application_id, return_code) gets the
-- next number, so `list_applications?changed_since=CURSOR` answers only the
-- rows that changed after CURSOR, in change order. A poller awaiting 10,000
-- applications then reads a few rows per round instead of the whole list.
--
--   changes.note(eng, rec)                       after a change (apps.lua)
--   changes.parse(text) -> from | nil            a cursor (or "0") as sent
--   changes.since(eng, from, limit, want) -> records, cursor, more
--
-- A cursor is "<epoch>.<seq>". The epoch is random per engine process: the
-- sequence lives in memory only, so a cursor from an earlier process (a
-- restart) or from another engine is answered from the start (everything),
-- never with a silent nothing. "0" asks from the start too.
--
-- Kept: an append-only log of (seq, id) and each id's last seq. An entry
-- whose id changed again later is stale and skipped; the log is compacted
-- when it grows well beyond the number of records, so answering costs the
-- changes after the cursor (a binary search, then a walk), not a scan of
-- every record.
local core = require("analytics_engine.core")

local _M = {}

-- Compact when the log holds more than FACTOR times the live ids plus SLACK.
_M.FACTOR, _M.SLACK = 2, 1024

local function hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

local function new_log()
  return { epoch = hex(core.random_bytes(8)), seq = 0, ids = {}, seqs = {}, last = {}, live = 0 }
end

local function append(log, id)
  local seq = log.seq + 1
  log.seq = seq
  local n = #log.ids + 1
  log.ids[n], log.seqs[n] = id, seq
  if log.last[id] == nil then log.live = log.live + 1 end
  log.last[id] = seq
end

-- Keep only each id's last entry (and only ids still on record).
local function compact(eng, log)
  local ids, seqs, last = log.ids, log.seqs, log.last
  local nids, nseqs, live = {}, {}, 0
  for i = 1, #ids do
    local id, s = ids[i], seqs[i]
    if last[id] == s then
      if eng.store:get("applications", id) then
        nids[#nids + 1], nseqs[#nseqs + 1] = id, s
        live = live + 1
      else
        last[id] = nil -- a record a failed save undid
      end
    end
  end
  log.ids, log.seqs, log.live = nids, nseqs, live
end

-- The log, made on first use with every record on file in insertion order
-- (a fresh process knows nothing of earlier changes: all are "new").
local function log_of(eng)
  local log = eng.changes
  if not log then
    log = new_log()
    eng.changes = log
    for _, rec in ipairs(eng.store:list("applications")) do append(log, rec.id) end
  end
  return log
end

--- Record that `rec` changed what its list row shows.
function _M.note(eng, rec)
  local log = log_of(eng)
  append(log, rec.id)
  if #log.ids > _M.FACTOR * log.live + _M.SLACK then compact(eng, log) end
end

--- A `changed_since` value -> the seq to answer after (0: from the start),
-- or nil when it is neither "0" nor a cursor. A cursor of another epoch
-- (another process or engine), or one ahead of this engine's sequence, is
-- answered from the start.
function _M.parse(eng, text)
  if text == "0" then return 0 end
  local epoch, digits = text:match("^(%x+)%.(%d+)$")
  if not epoch or #epoch ~= 16 or #digits > 15 then return nil end
  local log = log_of(eng)
  local seq = tonumber(digits)
  if epoch ~= log.epoch or seq > log.seq then return 0 end
  return seq
end

-- The first log index whose seq is above `from` (seqs ascend).
local function first_after(seqs, from)
  local lo, hi = 1, #seqs + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    if seqs[mid] > from then hi = mid else lo = mid + 1 end
  end
  return lo
end

--- The records whose last change is after `from` (from parse), in change
-- order, at most `limit` (nil: all), those whose state is in `want` (nil:
-- any) -> records, the cursor to ask from next, more (rows remain after it).
function _M.since(eng, from, limit, want)
  local log = log_of(eng)
  local ids, seqs, last = log.ids, log.seqs, log.last
  local store = eng.store
  local out = {}
  local n = #ids
  local i = first_after(seqs, from)
  local upto = from
  while i <= n do
    local id, s = ids[i], seqs[i]
    if last[id] == s then
      local rec = store:get("applications", id)
      if rec and (not want or want[rec.state]) then
        if limit and #out >= limit then break end
        out[#out + 1] = rec
      end
    end
    upto = s
    i = i + 1
  end
  local more = i <= n
  if not more then upto = log.seq end
  return out, log.epoch .. "." .. upto, more
end

return _M
