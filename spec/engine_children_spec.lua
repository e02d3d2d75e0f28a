-- Everything the engine starts dies with it, also after `kill -9` of the
-- engine: its direct children by PR_SET_PDEATHSIG (core.spawn's
-- die_with_parent), what they started by the sweep of the next engine on the
-- same data directory (the AE_ENGINE_DATA marker), and a restarted engine
-- runs exactly one Jupyter Server. Real engine, real Jupyter Server, real kernel.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local children = require("analytics_engine.engine.children")
local helper = require("helpers.engine")

local function temp_dir() return helper.temp_dir("ae-children-spec-") end

local function alive(pid)
  -- a zombie is dead: only its parent has not reaped it yet
  local f = io.open(("/proc/%d/stat"):format(pid), "rb")
  if not f then return false end
  local s = f:read("a") or ""
  f:close()
  return s:match("%) (%S)") ~= "Z"
end

local function cmdline(pid)
  local f = io.open(("/proc/%d/cmdline"):format(pid), "rb")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return (s:gsub("%z", " "))
end

local function eventually(fn, timeout, what)
  local deadline = core.monotime() + (timeout or 20)
  while not fn() do
    assert(core.monotime() < deadline, what or "condition never held")
    core.sleep(0.1)
  end
end

-- A describe's directories: a data directory and an app root holding
-- `scripts` (made before its first test). After its last test the engine
-- that `engine()` returns is stopped, whatever still carries the directory's
-- marker killed, and both directories removed.
local function engine_dirs(scripts, engine)
  local d = {}
  lazy_setup(function()
    d.dir, d.root = temp_dir(), temp_dir()
    for name, text in pairs(scripts) do helper.write(d.root .. "/" .. name, text) end
  end)
  lazy_teardown(function()
    if engine() then helper.stop(engine()) end
    for _, pid in ipairs(children.survivors(d.dir)) do core.kill(pid, "KILL") end
    os.execute("rm -rf '" .. d.dir .. "' '" .. d.root .. "'")
  end)
  return d
end

local function jupyter_servers(data_dir)
  local n = {}
  for _, pid in ipairs(children.survivors(data_dir)) do
    if alive(pid) and cmdline(pid):find("jupyter_server", 1, true) then n[#n + 1] = pid end
  end
  return n
end

describe("core.spawn die_with_parent", function()
  it("the child gets the signal when its parent is killed with SIGKILL", function()
    local dir = temp_dir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    -- a parent (lua) that spawns a long sleep with die_with_parent, reports its pid, and waits;
    -- it loads the plain build's core (under check-asan the instrumented one needs the
    -- sanitizer runtime, which children do not get)
    local script = dir .. "/parent.lua"
    helper.write(script, ([[
package.cpath = "build/?.so;" .. package.cpath
local core = require("analytics_engine.core")
local pid = assert(core.spawn{ argv = { "sleep", "300" }, die_with_parent = "KILL" })
local f = io.open(%q, "w") f:write(pid) f:close()
core.sleep(300)
]]):format(dir .. "/pid"))
    local parent = assert(core.spawn{ argv = { "lua5.4", script } })
    local child
    eventually(function()
      child = tonumber(util.read_file(dir .. "/pid") or "")
      return child ~= nil
    end, 10, "the parent never reported its child")
    assert.is_true(alive(child))
    core.kill(parent, "KILL")
    core.wait(parent)
    eventually(function() return not alive(child) end, 10, "the child outlived its parent")
  end)

  it("refuses an unknown signal name", function()
    assert.has_error(function() core.spawn{ argv = { "true" }, die_with_parent = "NOPE" } end)
  end)
end)

describe("kill -9 of the engine while a kernel and an application run", function()
  local e
  -- sh waits on a sleep of its own: the sleep is a grandchild of the engine
  local d = engine_dirs({ ["sleepy.sh"] = "sleep 300\necho never\n" }, function() return e end)

  it("leaves no survivor after the restart, and the new engine runs exactly one Jupyter Server", function()
    local dir, root = d.dir, d.root
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    local status, k = helper.request(e, "POST", helper.v4(e, "/jkg/api/kernels"), { name = "python3" })
    assert.equal(201, status, util.json_encode(k))
    local id = helper.submit(e, { application = "sleepy.sh" })
    local app_pids
    eventually(function()
      local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
      app_pids = {}
      for _, pid in ipairs(children.survivors(dir)) do
        if cmdline(pid):find("sleep", 1, true) then app_pids[#app_pids + 1] = pid end
      end
      return b.state == "RUNNING" and #app_pids >= 2 -- sh sleepy.sh, and its sleep
    end, 20, "the application did not start")
    local jupyters = jupyter_servers(dir)
    assert.equal(1, #jupyters)
    local before = children.survivors(dir)
    assert.is_true(#before >= 4, "jupyter, its kernel, sh and sleep carry the marker") -- ≥: jupyter helpers

    core.kill(e.pid, "KILL")
    core.wait(e.pid)
    e.stopped = "killed"
    -- the engine's direct children follow it at once (PR_SET_PDEATHSIG)
    eventually(function() return not alive(jupyters[1]) end, 20, "Jupyter outlived the engine")
    local sh
    for _, pid in ipairs(app_pids) do
      if cmdline(pid):find("sleepy.sh", 1, true) then sh = pid end
    end
    if sh then eventually(function() return not alive(sh) end, 10, "the application outlived the engine") end

    -- the restart sweeps what is left (the application's sleep, a kernel Jupyter did not stop)
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    for _, pid in ipairs(before) do
      eventually(function() return not alive(pid) end, 10, ("pid %d (%s) survived the restart"):format(pid,
        cmdline(pid)))
    end
    local left = {}
    for _, pid in ipairs(children.survivors(dir)) do
      if alive(pid) then left[#left + 1] = pid .. " " .. cmdline(pid) end
    end
    assert.same({}, left)
    local _, app = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
    assert.equal("FAILED", app.state)

    status, k = helper.request(e, "POST", helper.v4(e, "/jkg/api/kernels"), { name = "python3" })
    assert.equal(201, status, util.json_encode(k))
    assert.equal(1, #jupyter_servers(dir))
    assert.equal(204, (helper.request(e, "DELETE", helper.v4(e, "/jkg/api/kernels/" .. k.id))))

    -- and a clean stop leaves nothing either
    helper.stop(e, true)
    eventually(function()
      for _, pid in ipairs(children.survivors(dir)) do
        if alive(pid) then return false end
      end
      return true
    end, 20, "processes outlived a clean stop")
    e = nil
  end)
end)

describe("what an application leaves running", function()
  local e
  local d = engine_dirs({
    ["leave.sh"] = "sleep 297 &\necho left a sleep\n",
    -- the script waits until the sleep has left its group (setsid done), or the group's kill could catch it first
    ["detach.sh"] = "setsid sh -c 'echo $$ > detached.pid; exec sleep 296' &\n"
      .. "while [ ! -s detached.pid ]; do sleep 0.05; done\necho detached a sleep\n",
  }, function() return e end)

  local function running(pattern)
    local out = {}
    for _, pid in ipairs(children.survivors(d.dir)) do
      if alive(pid) and cmdline(pid):find(pattern, 1, true) then out[#out + 1] = pid end
    end
    return out
  end

  it("ends with the application (its process group) or at the latest with the engine (setsid)", function()
    local dir, root = d.dir, d.root
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    local id = helper.submit(e, { application = "leave.sh" })
    assert.equal("FINISHED", helper.wait_app(e, id).state)
    -- the engine kept running: the sleep in the finished application's group is gone all the same
    eventually(function() return #running("sleep 297") == 0 end, 10, "a finished application's sleep outlived it")

    id = helper.submit(e, { application = "detach.sh" })
    assert.equal("FINISHED", helper.wait_app(e, id).state)
    eventually(function() return #running("sleep 296") == 1 end, 10, "the detached sleep did not start")
    -- a clean stop ends what left the group too (it carries the engine's marker)
    helper.stop(e, true)
    e = nil
    eventually(function() return #running("sleep 296") == 0 end, 10, "a setsid'd leftover outlived a clean stop")
  end)
end)
