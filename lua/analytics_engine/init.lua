--- analytics_engine: a client for the Analytics Engine powered by Apache
-- Spark on Cloud Pak for Data (REST API v4).
-- @module analytics_engine
local client = require("analytics_engine.client")
local util = require("analytics_engine.util")

local _M = {
  VERSION = client.VERSION,
  --- A value that encodes as JSON null: in a merge-patch it unsets a key.
  null = util.null,
  TERMINAL_STATES = client.TERMINAL_STATES,
  is_terminal = client.is_terminal,
  api = require("analytics_engine.api"),
  errors = require("analytics_engine.errors"),
}

--- Make a client (see client.new).
-- @tparam[opt] table opts settings; those not given come from AE_* variables, then the profile file
-- @treturn analytics_engine.client the client, whose methods are the API operations
-- @return nil and an error object when the configuration cannot work (no URL, bad instance id)
-- @usage local ae = require("analytics_engine")
-- local c = assert(ae.client())          -- AE_URL, AE_INSTANCE_ID, AE_API_KEY ...
-- local app = assert(c:create_application { application = "/jobs/etl.py" })
-- local done = assert(c:wait_for_application(app.application_id, { timeout = 3600 }))
function _M.client(opts)
  return client.new(opts)
end

--- Make a client for a Jupyter Server's own /api (see client.jupyter): the
-- kernel operations and sessions, with Jupyter's token.
-- @tparam table opts url, token, base_path (the server's base_url, default "/"), any client option
-- @usage local j = assert(ae.jupyter_client { url = "http://127.0.0.1:8888", token = "…" })
function _M.jupyter_client(opts)
  return client.jupyter(opts)
end

return _M
