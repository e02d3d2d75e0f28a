--- `aeflow orphans`: applications carrying an aeflow run token that no kept
-- run records with that application id.
local ae = require("analytics_engine")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")
local submit = require("analytics_engine.workflow.submit")
local runstore = require("analytics_engine.cli.runstore")
local state = require("analytics_engine.workflow.state")

local _M = {}

-- Every (token → application id) pair the given state files know, or nil
-- and the message of the first file that cannot be read: its applications
-- would all look orphaned (and --stop would stop them).
local function known_tokens(paths)
  local known = {}
  for _, p in ipairs(paths) do
    local doc, err = state.read(p)
    if not doc then return nil, err end
    state.each_attempt(doc, function(att)
      if att.token and att.application_id then known[att.token] = att.application_id end
    end)
  end
  return known
end

_M.orphans = {
  options = { ["--state"] = "multi", ["--stop"] = "flag", ["--json"] = "flag" },
  help = [[
usage: aeflow orphans [--state FILE]... [--stop] [--json] [--profile NAME]

Lists applications on the instance that carry an aeflow run token which no
kept run (default: every run under $AEFLOW_DIR/runs, else .aeflow/runs, and
older .aeflow/*.state.json files) records
with that application id: submissions whose runner died before saving the id.
--stop stops them. --json prints one JSON array of
{application_id, state, token} ([] when there are none). Without --json, one
line per orphan on standard output; none found prints nothing there (for
scripts) and "no orphans" on standard error (for a person). A state file that cannot be read or is not
in the shape a run writes is an error (exit 2), not skipped: its
applications would all look orphaned.]],
  run = function(pos, opt, ctx)
    if pos[1] then return out.fail(2, "orphans", "unexpected argument '%s'", pos[1]) end
    local paths = opt["--state"] or runstore.state_files()
    local known, kerr = known_tokens(paths)
    if not known then
      return out.fail(2, "orphans", "%s (fix or remove it: its applications cannot be told from orphans)", kerr)
    end
    local c, session = which.connect { exe = ctx.exe, profile = opt["--profile"], quiet = true }
    if not c then return out.fail(1, nil, "%s", session) end
    local list, err = c:list_applications()
    if not list then
      session:release()
      return out.fail(1, "orphans", "%s", tostring(err))
    end
    local found = util.array()
    -- Runs removed by `runs --prune` were kept, not lost: theirs are not orphans.
    local pruned = opt["--state"] and {} or runstore.pruned()
    for _, app in ipairs(list.applications or {}) do
      local id = app.application_id or app.id
      local tok = submit.token_of(app)
      if tok and known[tok] ~= id and not pruned[tok:match("^aeflow%-(%w+)%-") or ""] then
        found[#found + 1] = { application_id = id, token = tok, state = app.state }
      end
    end
    if opt["--json"] then out.json(found) end
    for _, o in ipairs(found) do
      if not opt["--json"] then
        -- ids, states and tokens as the service listed them: shown, not obeyed
        io.stdout:write(sanitize.clean(("%s  %-10s  %s"):format(o.application_id, tostring(o.state), o.token)), "\n")
      end
      if opt["--stop"] and not ae.is_terminal(o.state) then
        local _, serr = c:delete_application(o.application_id)
        if serr then out.fail(1, "orphans", "could not stop %s: %s", o.application_id, tostring(serr)) end
      end
    end
    session:release()
    if #found == 0 and not opt["--json"] then io.stderr:write("no orphans\n") end
    return 0
  end,
}

return _M
