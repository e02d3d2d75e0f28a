--- `aeflow report`: a run's state file as one self-contained HTML page (the
-- DAG, a time line of steps and applications, durations, outputs, errors,
-- log links) or as a Markdown summary for CI job summaries.
-- @module analytics_engine.report
local core = require("analytics_engine.core")
local model = require("analytics_engine.report.model")
local sanitize = require("analytics_engine.sanitize")
local html = require("analytics_engine.report.html")
local markdown = require("analytics_engine.report.markdown")

local _M = {}

_M.FORMATS = { html = true, md = true }

--- The format a file name asks for: .md is Markdown, anything else HTML.
-- @tparam string path the report's file name
-- @treturn string "md" or "html"
function _M.format_of(path)
  return path:lower():find("%.md$") and "md" or "html"
end

--- Render a state document.
-- @tparam table doc the decoded state file
-- @tparam[opt="html"] string format "html" or "md"
-- @treturn string the report text
function _M.render(doc, format)
  format = format or "html"
  if not _M.FORMATS[format] then error(("bad argument #2 to 'render' (html or md expected, got %s)"):format(
    tostring(format)), 2) end
  local mod = format == "md" and markdown or html
  -- What servers and steps said (errors, outputs) is in the state file as
  -- they said it: shown with control characters visible and secrets masked.
  return mod.render(sanitize.deep(doc), core.time())
end

--- Write the report of `doc` to `path` (atomically).
-- @return true, or nil and a message
function _M.write(doc, path, format)
  local ok, text = pcall(_M.render, doc, format)
  if not ok then return nil, "cannot render the report: " .. tostring(text) end
  local wok, err = core.write_file_atomic(path, text, 420)
  if not wok then return nil, ("cannot write %s: %s"):format(path, tostring(err)) end
  return true
end

--- Read a state file and write its report.
-- @return true, or nil and a message
function _M.from_file(state_path, out_path, format)
  local doc, err = model.load(state_path)
  if not doc then return nil, err end
  return _M.write(doc, out_path, format)
end

_M.load = model.load

return _M
