-- Kernels against a real Jupyter Server: directly at its /api (ae.jupyter_client)
-- and through the local engine's /jkg/api, which forwards to the Jupyter Server it
-- starts. Real kernels run real Python; nothing is mocked. Fails when Jupyter
-- cannot be started (Debian: python3-jupyter-server, python3-ipykernel).
local ae = require("analytics_engine")
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local loop = require("analytics_engine.loop")
local engine = require("helpers.engine")
local jh = require("helpers.jupyter")

-- Generous: kernels start and restart slowly on a loaded machine (sanitizer runs).
local EXEC = { timeout = 180 }

local function temp_dir() return engine.temp_dir("ae-kernels-spec-") end

local exists = util.exists

-- Run fn(sched, lc) as tasks on one loop; lc is `c` with that loop as its option.
local function with_loop(c, fn)
  local sched = loop.new()
  local lc = assert(c:with { loop = sched })
  fn(sched, lc)
  local ok, err = sched:loop()
  assert(ok, err)
end

-- Cell that marks `mine` and waits (up to 120 s) for `theirs`: two of them can
-- only both finish when they run at the same time.
local function rendezvous(dir, mine, theirs)
  return ([[
import os, time
open(%q, "w").close()
t = time.time()
while not os.path.exists(%q):
    assert time.time() - t < 120, "the other cell never ran"
    time.sleep(0.02)
"met"]]):format(dir .. "/" .. mine, dir .. "/" .. theirs)
end

-- The shared facts, for a client `c` that reaches some Jupyter Server.
local function kernel_facts(get_client)
  local c, id, s
  lazy_setup(function()
    c = get_client()
    id = assert(c:create_kernel { name = "python3" }).id
    s = assert(c:connect_kernel(id))
  end)
  lazy_teardown(function()
    if s then s:close() end
    if id then c:delete_kernel(id) end
  end)

  it("executes 1+1 and gets 2 with an execution count", function()
    local r = assert(s:execute("1+1", EXEC))
    assert.equals("2", r.result)
    assert.is_number(r.execution_count)
    assert.equals("execute_result", r.outputs[#r.outputs].output_type)
  end)

  it("gathers what a cell prints as stream outputs", function()
    local r = assert(s:execute("print('hello')\nimport sys\nprint('oops', file=sys.stderr)", EXEC))
    assert.equals("hello\n", r.stdout)
    assert.equals("oops\n", r.stderr)
    assert.equals("stream", r.outputs[1].output_type)
    assert.is_nil(r.result)
  end)

  it("returns an error with ename, evalue and the traceback when a cell raises", function()
    local r, err = s:execute("raise ValueError('boom')", EXEC)
    assert.is_nil(r)
    assert.equals("kernel_error", err.code)
    assert.equals("ValueError", err.ename)
    assert.equals("boom", err.evalue)
    assert.is_true(#err.traceback > 0)
    assert.matches("ValueError: boom", tostring(err), 1, true)
    assert.is_nil(err.traceback[#err.traceback]:find("\27", 1, true))
  end)

  it("completes code", function()
    local r = assert(s:complete("import o"))
    local found = false
    for _, m in ipairs(r.matches) do found = found or m == "os" end
    assert.is_true(found)
  end)

  it("never mixes replies of an abandoned execute into the next one", function()
    local _, err = s:execute("import time\nprint('late')\ntime.sleep(2)\nprint('later')\n'old'", { timeout = 0.5 })
    assert.equals("timeout", err.code)
    local r = assert(s:execute("'new'", EXEC))
    assert.equals("'new'", r.result)
    assert.equals("", r.stdout)
  end)

  it("interrupts a `while True: pass` cell from another task of the same loop", function()
    local dir = temp_dir()
    local flag = dir .. "/running"
    local r, err, interrupted, ls
    with_loop(c, function(sched, lc)
      -- A second channels connection to the kernel, from the client with the loop.
      ls = assert(lc:connect_kernel(id))
      sched:spawn("loop", function()
        r, err = ls:execute(("open(%q, 'w').close()\nwhile True: pass"):format(flag), EXEC)
      end)
      sched:spawn("interrupt", function()
        local deadline = core.monotime() + 30
        while not exists(flag) and core.monotime() < deadline do sched:sleep(0.05) end
        interrupted = ls:interrupt()
      end)
    end)
    os.execute("rm -rf '" .. dir .. "'")
    assert.is_true(interrupted)
    assert.is_nil(r)
    assert.equals("KeyboardInterrupt", err.ename)
    -- Outside the loop the same session blocks, as a client without one.
    assert.equals("2", assert(ls:execute("1+1", EXEC)).result)
    ls:close()
  end)

  it("restarts the kernel: its variables are gone, the session still works", function()
    assert(s:execute("x = 41", EXEC))
    assert(s:restart())
    local r, err = s:execute("x + 1", EXEC)
    assert.is_nil(r)
    assert.equals("NameError", err.ename)
    assert.equals("3", assert(s:execute("1+2", EXEC)).result)
  end)

  it("runs two executes at once on two kernels from one loop", function()
    local id2 = assert(c:create_kernel { name = "python3" }).id
    local dir = temp_dir()
    local r1, e1, r2, e2, s1, s2
    with_loop(c, function(sched, lc)
      s1, s2 = assert(lc:connect_kernel(id)), assert(lc:connect_kernel(id2))
      sched:spawn("one", function() r1, e1 = s1:execute(rendezvous(dir, "a", "b"), EXEC) end)
      sched:spawn("two", function() r2, e2 = s2:execute(rendezvous(dir, "b", "a"), EXEC) end)
    end)
    s1:close()
    s2:close()
    c:delete_kernel(id2)
    os.execute("rm -rf '" .. dir .. "'")
    assert.is_nil(e1)
    assert.is_nil(e2)
    assert.equals("'met'", r1.result)
    assert.equals("'met'", r2.result)
  end)

  it("deletes the kernel", function()
    local id3 = assert(c:create_kernel { name = "python3" }).id
    assert.is_true(c:delete_kernel(id3))
    local _, err = c:get_kernel(id3)
    assert.equals(404, err.status)
  end)
end

describe("kernels at a Jupyter Server's /api", function()
  local j
  lazy_setup(function() j = jh.start() end)
  lazy_teardown(function() jh.stop(j) end)

  kernel_facts(function()
    return assert(ae.jupyter_client { url = j.url, token = j.token, retries = false })
  end)

  it("refuses a wrong token", function()
    local c = assert(ae.jupyter_client { url = j.url, token = "wrong", retries = false })
    local _, err = c:list_kernels()
    assert.equals(403, err.status)
  end)

  it("refuses operations a Jupyter Server does not have", function()
    local c = assert(ae.jupyter_client { url = j.url, token = j.token })
    local _, err = c:list_applications()
    assert.equals("invalid_argument", err.code)
  end)
end)

describe("kernels through the local engine's /jkg/api", function()
  local e, c
  lazy_setup(function()
    e = engine.start()
    c = engine.client(e, { retries = false })
  end)
  lazy_teardown(function() engine.stop(e) end)

  it("lists Jupyter's kernelspecs", function()
    local specs = assert(c:list_kernelspecs())
    assert.is_table(specs.kernelspecs.python3)
  end)

  it("creates a kernel from the seed's body: the name maps to a kernelspec, engine is kept", function()
    local conf = { ["spark.eventLog.enabled"] = "true" }
    local k = assert(c:create_kernel { name = "python310", engine = { conf = conf } })
    assert.is_true(util.is_uuid(k.id))
    assert.equals("python3", k.name)
    assert.equals("true", k.engine.conf["spark.eventLog.enabled"])
    assert.equals("true", assert(c:get_kernel(k.id)).engine.conf["spark.eventLog.enabled"])
    assert.is_true(c:delete_kernel(k.id))
  end)

  it("answers 400 for a name no kernelspec matches", function()
    local _, err = c:create_kernel { name = "cobol85" }
    assert.equals(400, err.status)
    assert.matches("cobol85", err.message, 1, true)
  end)

  it("answers 426 with Sec-WebSocket-Version: 13 to a channels upgrade of another version", function()
    local status, body, headers = engine.request(e, "GET",
      engine.v4(e, "/jkg/api/kernels/00000000-0000-4000-8000-000000000000/channels"), nil,
      { Upgrade = "websocket", Connection = "Upgrade", ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==",
        ["Sec-WebSocket-Version"] = "8" })
    assert.equals(426, status)
    assert.equals("13", headers["sec-websocket-version"])
    assert.equals("unsupported_websocket_version", body.errors[1].code)
  end)

  it("answers 404 for an unknown kernel, in the service's error shape", function()
    local _, err = c:get_kernel("00000000-0000-4000-8000-000000000000")
    assert.equals(404, err.status)
    assert.equals("kernel_not_found", err.code)
    assert.is_string(err.trace)
  end)

  it("needs the engine's credentials", function()
    local status = engine.request(e, "GET", engine.v4(e, "/jkg/api/kernels"), nil, { Authorization = false })
    assert.equals(401, status)
  end)

  kernel_facts(function() return c end)

  it("stops its Jupyter Server and the kernels when the engine stops", function()
    local k = assert(c:create_kernel { name = "python3" })
    local p = assert(io.popen("ls " .. e.data_dir .. "/jupyter/runtime"))
    local pid
    for name in p:lines() do pid = pid or tonumber(name:match("^jpserver%-(%d+)%.json$")) end
    p:close()
    assert.is_number(pid)
    engine.stop(e, true)
    local gone = engine.eventually(function() return not core.kill(pid, 0) end, 10)
    assert.is_true(gone)
    local ps = assert(io.popen("ps -eo stat=,args="))
    local kernel_alive = false
    for line in ps:lines() do
      if line:find("kernel-" .. k.id, 1, true) and not line:find("^Z") then kernel_alive = true end
    end
    ps:close()
    assert.is_false(kernel_alive)
    engine.cleanup(e)
  end)
end)
