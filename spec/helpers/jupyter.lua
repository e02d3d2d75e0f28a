--- A real Jupyter Server for specs: 127.0.0.1, a port of its own, a random
-- token, a fresh directory; started the way the local engine starts its own
-- (engine/jupyter.lua). Raises when Jupyter cannot be started: specs that
-- need it fail, they never skip.
--   local jh = require("helpers.jupyter")
--   local j = jh.start()          -- j.url, j.token, j.dir
--   jh.stop(j)                    -- stops it (and its kernels), removes the directory
local core = require("analytics_engine.core")
local jupyter = require("analytics_engine.engine.jupyter")
local launcher = require("analytics_engine.engine.launcher")

local helper = {}

local function temp_dir() return assert(launcher.temp_dir("ae-jupyter-spec-")) end

--- Start a Jupyter Server -> { url, token, dir, server } (errors loudly).
function helper.start(timeout)
  local dir = temp_dir()
  local j = jupyter.new{ data_dir = dir }
  local done, ok, err = false, nil, nil
  j:want(function(a, b) done, ok, err = true, a, b end)
  local deadline = core.monotime() + (timeout or 90)
  while not done do
    j:tick()
    if core.monotime() > deadline then
      j:stop()
      error("the Jupyter Server did not start in time", 2)
    end
    core.sleep(0.05)
  end
  if not ok then
    os.execute("rm -rf '" .. dir .. "'")
    error("cannot start a Jupyter Server for the specs: " .. tostring(err)
      .. " (Debian: apt-get install python3-jupyter-server python3-ipykernel)", 2)
  end
  return { url = j.url, token = j.token, dir = dir, server = j }
end

function helper.stop(h)
  if not h then return end
  h.server:stop()
  if h.dir:find("^/tmp/ae%-jupyter%-spec") then os.execute("rm -rf '" .. h.dir .. "'") end
end

return helper
