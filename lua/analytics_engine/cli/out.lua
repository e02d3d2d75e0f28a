--- The CLI's one way to fail and to print: `aeflow VERB: message` on stderr
-- with the exit status (0 success, 1 the operation failed, 2 usage), JSON
-- documents and NDJSON lines on stdout, and no binary on a terminal.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")

local _M = {}

_M.OK, _M.FAILED, _M.USAGE, _M.CANCELLED = 0, 1, 2, 130

--- Write "aeflow: [verb: ]message" to stderr; returns `code`.
function _M.fail(code, verb, fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  -- whatever the message quotes (a server, a file) prints safely, on one line
  io.stderr:write("aeflow: ", verb and (verb .. ": ") or "", sanitize.clean(msg), "\n")
  return code
end

--- One JSON document (pretty) on stdout.
function _M.json(v)
  io.stdout:write(sanitize.json(util.json_pretty(v)), "\n")
  io.stdout:flush()
end

--- One NDJSON line on stdout (streams: events, log chunks).
function _M.ndjson(v)
  io.stdout:write(sanitize.json(util.json_encode(v)), "\n")
  io.stdout:flush()
end

--- Is standard output a terminal (where binary output would garble it)?
function _M.stdout_is_tty()
  return core.isatty ~= nil and core.isatty(1) == true
end

return _M
