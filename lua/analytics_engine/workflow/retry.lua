--- `aeflow retry`: what a run's record needs to run again only what did not
-- succeed (as argo retry, Airflow's clear, Databricks' repair run). Steps that
-- succeeded keep their status and outputs (later steps read them); failed,
-- skipped, cancelled and pending steps, and every `finally` step, go back to
-- pending; in a fan-out only the items that did not succeed run again. The
-- attempts already made stay in the record (the report shows them); new
-- attempts get new numbers and so new submission tokens, and each item's
-- `retries` budget starts again (retry_base). An attempt whose submission
-- was never confirmed is settled by its token first, as on --resume.
local _M = {}

local function reset_items(rec, keep_succeeded)
  local n = 0
  for _, it in pairs(rec.items or {}) do
    if not (keep_succeeded and it.status == "succeeded") then
      it.status, it.error, it.outputs = "pending", nil, nil
      it.retry_base = #(it.attempts or {})
      n = n + 1
    end
  end
  return n
end

--- prepare(doc, plan) -> number of steps to run again | nil, message
function _M.prepare(doc, plan)
  if doc.status == "succeeded" then
    return nil, ("run %s of '%s' succeeded: nothing to retry"):format(tostring(doc.run_id), tostring(doc.workflow))
  end
  local n = 0
  for _, name in ipairs(plan.order) do
    local rec = doc.steps[name]
    if rec and rec.status ~= "succeeded" then
      rec.status, rec.error, rec.outputs, rec.finished_at = "pending", nil, nil, nil
      reset_items(rec, true)
      n = n + 1
    end
  end
  for _, name in ipairs(plan.finally_order or {}) do
    local rec = doc.finally[name]
    if rec then
      rec.status, rec.error, rec.outputs, rec.finished_at = "pending", nil, nil, nil
      reset_items(rec, false)
      n = n + 1
    end
  end
  doc.retries = (doc.retries or 0) + 1
  doc.finished_at = nil
  return n
end

return _M
