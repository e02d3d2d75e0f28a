--- Saving the engine's state when the disk may refuse: a 5xx means nothing
-- happened. A request's changes are committed before it is answered; when
-- the commit fails (a full disk, an I/O error) the changes of a request whose
-- effects are only in the engine's model are undone in memory and the
-- request is answered 507 (disk full) or 503 with one line saying so. Reads
-- are answered from memory meanwhile; changes made by the engine itself
-- (applications that started or ended) stay pending and are saved by a later
-- commit, so service resumes by itself when space returns.
--   local mark = durable.mark(eng)                       before the handler
--   status, body, headers = durable.finish(eng, op, mark, status, body, headers)
--   durable.flush(eng)                                   after a tick
local reply = require("analytics_engine.engine.reply")

local _M = {}

-- Operations whose whole effect is a change to the model: undone when it
-- cannot be saved. (create_application starts its process only on a later
-- tick, after the change was saved.) Others act on processes or other
-- services at once; their changes stay pending and are saved later.
_M.REVERTIBLE = {
  create_application = true, create_cluster = true,
  replace_instance_default_runtime = true, replace_instance_default_configs = true,
  update_instance_default_configs = true, replace_resource_consumption_limits = true,
  delete_resource_consumption_limits = true,
}

local function log(msg) io.stderr:write("engine: ", msg, "\n") end

--- Commit; logs the first failure of a run of failures and the recovery
-- (not every tick's retry) -> true | nil, err.
function _M.flush(eng)
  if not eng.store.dirty then return true end
  local ok, err = eng.store:commit()
  if not ok then
    if not eng.save_failing then log(err .. " (changes are kept in memory and saved when possible)") end
    eng.save_failing = err
    return nil, err
  end
  if eng.save_failing then log("state saved again") end
  eng.save_failing = nil
  return true
end

function _M.mark(eng)
  return eng.store:mark()
end

-- Drop what the engine holds for records a revert removed.
local function forget(eng, dropped)
  for _, d in ipairs(dropped) do
    local rec = d.rec
    if d.kind == "applications" then
      eng.lifecycle:retire(rec)
      if rec.dir then os.remove(rec.dir) end -- empty: nothing ran
      eng.stats.applications_created = eng.stats.applications_created - 1
    elseif d.kind == "clusters" then
      eng.clusters_pending[rec.id] = nil
    end
  end
end

--- After the handler: save, or undo and say so.
function _M.finish(eng, op, mark, status, body, headers)
  local ok, err = _M.flush(eng)
  if ok or not _M.REVERTIBLE[op.name] then return status, body, headers end
  local dropped, undone = eng.store:revert(mark)
  forget(eng, dropped)
  if undone == 0 then return status, body, headers end -- the request changed nothing
  local full = tostring(err):lower():find("full", 1, true) ~= nil
  return reply.error(full and 507 or 503, full and "insufficient_storage" or "state_not_saved",
    ("nothing was changed: the local engine cannot save its state (%s); try again later")
      :format(full and "the disk is full" or "the database refused the write"),
    { ["Retry-After"] = "5" })
end

return _M
