--- analytics_engine: a client for the Analytics Engine powered by Apache
-- Spark on Cloud Pak for Data (REST API v4).
-- @module analytics_engine
local client = require "analytics_engine.client"
local util = require "analytics_engine.util"

local _M = {
  VERSION = client.VERSION,
  --- A value that encodes as JSON null: in a merge-patch it unsets a key.
  null = util.null,
  TERMINAL_STATES = client.TERMINAL_STATES,
  is_terminal = client.is_terminal,
  api = require "analytics_engine.api",
  errors = require "analytics_engine.errors",
}

--- Make a client (see client.new).
function _M.client(opts)
  return client.new(opts)
end

return _M
