-- analytics_engine.core process and system helpers.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local shell = require("helpers.shell")

local read, sh = util.read_file, shell.ok

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -m 700 " .. p))
  return p
end

-- Wait for a child to end; returns what core.wait returned.
local function wait_exit(pid, limit)
  local deadline = core.monotime() + (limit or 10)
  while core.monotime() < deadline do
    local how, code = core.wait(pid)
    if how ~= nil then return how, code end
    core.sleep(0.01)
  end
  error("child " .. pid .. " did not exit")
end

-- A process is gone when /proc has no entry for it or it is a zombie.
local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  if not stat then return false end
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- The next watched signal to arrive within `limit` seconds, or nil.
local function next_signal(limit)
  local deadline = core.monotime() + limit
  repeat
    local name = core.signal_pending()
    if name then return name end
    core.sleep(0.01)
  until core.monotime() >= deadline
  return nil
end

-- Spawn, wait for the child and assert it exited (not signalled) -> pid.
local function spawn_to_exit(opts)
  local pid = assert(core.spawn(opts))
  assert.equal("exited", (wait_exit(pid)))
  return pid
end

describe("core process helpers", function()
  local dir

  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  describe("spawn/wait", function()
    it("runs a program with stdout to a file and reports its exit code", function()
      local out = dir .. "/out.log"
      local pid = assert(core.spawn{ argv = { "sh", "-c", "echo hi; echo oops >&2; exit 3" },
                                     stdout = out })
      assert.is_true((math.type and math.type(pid) == "integer" or pid % 1 == 0) and pid > 0)
      local how, code = wait_exit(pid)
      assert.equal("exited", how)
      assert.equal(3, code)
      assert.equal("hi\n", read(out))
      -- reaped: a second wait knows no such child
      local ok, err = core.wait(pid)
      assert.is_false(ok)
      assert.equal("no such child", err)
    end)

    it("appends to existing output files, created with mode 0600", function()
      local out, errf = dir .. "/o", dir .. "/e"
      for i = 1, 2 do
        spawn_to_exit{ argv = { "sh", "-c", "echo out" .. i .. "; echo err" .. i .. " >&2" },
                       stdout = out, stderr = errf }
      end
      assert.equal("out1\nout2\n", read(out))
      assert.equal("err1\nerr2\n", read(errf))
      local p = io.popen("stat -c %a " .. out)
      assert.equal("600", p:read("l"))
      p:close()
    end)

    it("reports nil while the child runs", function()
      local pid = assert(core.spawn{ argv = { "sleep", "0.3" } })
      assert.is_nil(core.wait(pid))
      assert.equal("exited", (wait_exit(pid)))
    end)

    it("passes the environment given, and only that", function()
      local out = dir .. "/env"
      spawn_to_exit{ argv = { "/bin/sh", "-c", "echo \"$AE_X|$AE_Y|${HOME:-nohome}\"" },
                     env = { "AE_X=one", "AE_Y=two words" }, stdout = out }
      assert.equal("one|two words|nohome\n", read(out))
    end)

    it("inherits the environment when env is nil", function()
      local out = dir .. "/env"
      spawn_to_exit{ argv = { "sh", "-c", "echo \"$PATH\"" }, stdout = out }
      assert.equal(os.getenv("PATH") .. "\n", read(out))
    end)

    it("honours cwd, with relative output paths inside it", function()
      spawn_to_exit{ argv = { "sh", "-c", "pwd; echo x > made_here" }, cwd = dir,
                     stdout = "pwd.out" }
      local real = io.popen("cd " .. dir .. " && pwd -P"):read("l")
      assert.equal(real .. "\n", read(dir .. "/pwd.out"))
      assert.equal("x\n", read(dir .. "/made_here"))
    end)

    it("gives stdin /dev/null", function()
      local out = dir .. "/in"
      spawn_to_exit{ argv = { "sh", "-c", "cat; echo end" }, stdout = out }
      assert.equal("end\n", read(out))
    end)

    it("puts the child in its own session and process group", function()
      local out = dir .. "/ids"
      local pid = spawn_to_exit{ argv = { "sh", "-c", "cat /proc/$$/stat" }, stdout = out }
      local pgrp, sid = read(out):match("^%d+ %b() %a %d+ (%d+) (%d+)")
      assert.equal(pid, tonumber(pgrp))
      assert.equal(pid, tonumber(sid))
    end)

    it("reports a missing program by name", function()
      local pid, err = core.spawn{ argv = { "python9", "x.py" } }
      assert.is_nil(pid)
      assert.equal("spawn python9: No such file or directory", err)
      pid, err = core.spawn{ argv = { dir .. "/nope" } }
      assert.is_nil(pid)
      assert.matches("^spawn .*/nope: No such file or directory$", err)
    end)

    it("reports a bad cwd or output path", function()
      local pid, err = core.spawn{ argv = { "true" }, cwd = dir .. "/missing" }
      assert.is_nil(pid)
      assert.matches("^spawn true: cwd .*/missing: No such file or directory$", err)
      pid, err = core.spawn{ argv = { "true" }, stdout = dir .. "/no/such/file" }
      assert.is_nil(pid)
      assert.matches("^spawn true: stdout .*/no/such/file: No such file or directory$", err)
    end)

    it("keeps the child's files apart when the caller's stdin, stdout and stderr are closed", function()
      -- (a daemon started with 0-2 closed: open and pipe2 then hand out 0-2)
      sh("printf '#!/nonexistent/interpreter\\n' > '" .. dir .. "/badinterp'")
      sh("chmod 755 '" .. dir .. "/badinterp'")
      local script = dir .. "/closed.lua"
      local f = assert(io.open(script, "w"))
      f:write(([[
package.cpath = "build/?.so;" .. package.cpath
local core = require("analytics_engine.core")
local D = %q
local pid = assert(core.spawn{ argv = { "sh", "-c", "echo out; echo err >&2" },
                               stdout = D .. "/o", stderr = D .. "/e" })
local how, code
repeat how, code = core.wait(pid); core.sleep(0.01) until how ~= nil
local _, err = core.spawn{ argv = { D .. "/badinterp" } }
local f = io.open(D .. "/result", "w")
f:write(tostring(how), " ", tostring(code), "\n", tostring(err), "\n")
f:close()
]]):format(dir))
      f:close()
      assert(os.execute("lua5.4 '" .. script .. "' <&- >&- 2>&-"))
      assert.equal("out\n", read(dir .. "/o"))
      assert.equal("err\n", read(dir .. "/e"))
      local result = read(dir .. "/result")
      assert.matches("^exited 0\n", result)
      assert.matches("spawn .*/badinterp: No such file or directory\n$", result)
    end)

    it("raises on bad arguments", function()
      assert.has_error(function() core.spawn{} end)
      assert.has_error(function() core.spawn{ argv = {} } end)
      assert.has_error(function() core.spawn{ argv = { "true" }, env = { "NOEQUALS" } } end)
      assert.has_error(function() core.spawn{ argv = { {} } } end)
      assert.has_error(function() core.wait(0) end)
      assert.has_error(function() core.kill(-1, "TERM") end)
      assert.has_error(function() core.kill(1, "NOSUCHSIG") end)
    end)
  end)

  describe("kill", function()
    it("terminates a child with TERM", function()
      local pid = assert(core.spawn{ argv = { "sleep", "30" } })
      assert.is_true(core.kill(pid, "TERM"))
      local how, sig = wait_exit(pid)
      assert.equal("signaled", how)
      assert.equal(15, sig)
    end)

    it("accepts numbers and SIG-prefixed names", function()
      local pid = assert(core.spawn{ argv = { "sleep", "30" } })
      assert.is_true(core.kill(pid, 9))
      assert.same({ "signaled", 9 }, { wait_exit(pid) })
      pid = assert(core.spawn{ argv = { "sleep", "30" } })
      assert.is_true(core.kill(pid, "SIGINT"))
      assert.same({ "signaled", 2 }, { wait_exit(pid) })
    end)

    it("kills the whole process group", function()
      local pidfile = dir .. "/grandchild"
      local pid = assert(core.spawn{ argv = { "sh", "-c", "sleep 30 & echo $! > " .. pidfile .. "; wait" } })
      local deadline = core.monotime() + 5
      local gpid
      while not gpid and core.monotime() < deadline do
        gpid = tonumber((read(pidfile) or ""):match("%d+"))
        if not gpid then core.sleep(0.01) end
      end
      assert.is_number(gpid)
      assert.is_true(alive(gpid))
      assert.is_true(sh("kill -0 " .. gpid .. " 2>/dev/null"))
      assert.is_true(core.kill(pid, "TERM"))
      assert.same({ "signaled", 15 }, { wait_exit(pid) })
      deadline = core.monotime() + 5
      while alive(gpid) and core.monotime() < deadline do core.sleep(0.01) end
      assert.is_false(alive(gpid))
    end)

    it("returns nil and a message for a process that does not exist", function()
      local pid = assert(core.spawn{ argv = { "true" } })
      wait_exit(pid)
      local ok, err = core.kill(pid, "TERM")
      assert.is_nil(ok)
      assert.matches("No such process", err)
    end)
  end)

  describe("clocks and randomness", function()
    it("monotime increases and sleep sleeps", function()
      local a = core.monotime()
      core.sleep(0.05)
      local b = core.monotime()
      assert.is_true(b - a >= 0.045, "slept " .. (b - a))
      assert.is_true(b - a < 2)
    end)

    it("time is the wall clock with sub-second precision", function()
      local t = core.time()
      assert.is_true(math.abs(t - os.time()) <= 2)
      assert.is_number(t)
    end)

    it("random_bytes returns as many bytes as asked", function()
      assert.equal("", core.random_bytes(0))
      assert.equal(16, #core.random_bytes(16))
      assert.equal(100000, #core.random_bytes(100000))
      assert.not_equal(core.random_bytes(32), core.random_bytes(32))
    end)

    it("getpid is this process", function()
      local pid = core.getpid()
      local stat = read("/proc/self/stat")
      assert.equal(tonumber(stat:match("^%d+")), pid)
    end)
  end)

  describe("sha256 and hmac_sha256", function()
    it("matches the FIPS 180-2 vectors", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(core.sha256("abc")))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex(core.sha256("")))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                   hex(core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
      assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
                   hex(core.sha256(string.rep("a", 1000000))))
      assert.equal(32, #core.sha256("x"))
    end)

    it("matches RFC 4231 test cases 1, 2 and 6", function()
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                   hex(core.hmac_sha256(string.rep("\x0b", 20), "Hi There")))
      assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                   hex(core.hmac_sha256("Jefe", "what do ya want for nothing?")))
      assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                   hex(core.hmac_sha256(string.rep("\xaa", 131),
                                        "Test Using Larger Than Block-Size Key - Hash Key First")))
    end)
  end)

  describe("write_file_atomic", function()
    it("writes the content with mode 0600 and leaves no temporary file", function()
      local path = dir .. "/state.json"
      assert.is_true(core.write_file_atomic(path, "one\0two"))
      assert.equal("one\0two", read(path))
      assert.is_true(core.write_file_atomic(path, "replaced"))
      assert.equal("replaced", read(path))
      local p = io.popen("stat -c %a " .. path)
      assert.equal("600", p:read("l"))
      p:close()
      p = io.popen("ls -A " .. dir)
      assert.equal("state.json", p:read("a"):gsub("%s+$", ""))
      p:close()
    end)

    it("applies the mode given", function()
      local path = dir .. "/public"
      assert.is_true(core.write_file_atomic(path, "x", tonumber("644", 8)))
      local p = io.popen("stat -c %a " .. path)
      assert.equal("644", p:read("l"))
      p:close()
    end)

    it("writes a device or a FIFO in place instead of replacing the node", function()
      -- `aeflow report -o /dev/null` as root once turned /dev/null into a regular file
      local function kind(path)
        local p = io.popen("stat -c %F '" .. path .. "'")
        local k = p:read("l")
        p:close()
        return k
      end
      local dev, fifo = dir .. "/null", dir .. "/fifo"
      assert(sh(("mknod '%s' c 1 3 && mkfifo '%s'"):format(dev, fifo)))
      assert.is_true(core.write_file_atomic(dev, "gone"))
      assert.equal("character special file", kind(dev))
      local reader = io.popen("cat '" .. fifo .. "'")
      assert.is_true(core.write_file_atomic(fifo, "through the pipe"))
      assert.equal("through the pipe", reader:read("a"))
      reader:close()
      assert.equal("fifo", kind(fifo))
    end)

    it("writes what a producer function returns, piece by piece, until nil", function()
      local path = dir .. "/pieces"
      local left = { "one", "", "two\0", "three" }
      local i = 0
      assert.is_true(core.write_file_atomic(path, function() i = i + 1 return left[i] end))
      assert.equal("onetwo\0three", read(path))
      assert.equal(5, i)
    end)

    it("keeps the old file when the producer fails or returns a non-string", function()
      local path = dir .. "/kept"
      assert.is_true(core.write_file_atomic(path, "old"))
      local n = 0
      local ok, err = core.write_file_atomic(path, function()
        n = n + 1
        if n > 2 then error("no more pieces", 0) end
        return "new"
      end)
      assert.is_nil(ok)
      assert.matches("no more pieces", err, 1, true)
      assert.equal("old", read(path))
      ok, err = core.write_file_atomic(path, function() return {} end)
      assert.is_nil(ok)
      assert.matches("returned a table, not a string", err, 1, true)
      ok, err = core.write_file_atomic(path, function() error({}) end)
      assert.is_nil(ok)
      assert.matches("an error object", err, 1, true)
      assert.equal("old", read(path))
      local p = io.popen("ls -A " .. dir)
      assert.is_nil(p:read("a"):find("%.tmp%."))
      p:close()
    end)

    it("returns nil and a message when the directory does not exist", function()
      local ok, err = core.write_file_atomic(dir .. "/missing/file", "x")
      assert.is_nil(ok)
      assert.matches("missing/file", err)
      assert.matches("No such file or directory", err)
    end)
  end)

  describe("append_file", function()
    it("adds to the end of an existing file", function()
      local path = dir .. "/journal"
      assert.is_true(core.write_file_atomic(path, "head\n"))
      assert.is_true(core.append_file(path, "one\n"))
      assert.is_true(core.append_file(path, "two\0\n"))
      assert.equal("head\none\ntwo\0\n", read(path))
    end)

    it("does not create a missing file: nil and a message naming it", function()
      local ok, err = core.append_file(dir .. "/no-journal", "x")
      assert.is_nil(ok)
      assert.matches("no%-journal: No such file or directory", err)
      assert.is_nil(io.open(dir .. "/no-journal"))
    end)

    it("refuses a symbolic link instead of following it", function()
      local target, link = dir .. "/target", dir .. "/link"
      assert.is_true(core.write_file_atomic(target, "kept"))
      assert(sh(("ln -s '%s' '%s'"):format(target, link)))
      assert.is_nil(core.append_file(link, "x"))
      assert.equal("kept", read(target))
    end)
  end)

  describe("append_start", function()
    it("has written the data when it returns and says when the sync ended", function()
      local path = dir .. "/journal-async"
      assert.is_true(core.write_file_atomic(path, "head\n"))
      local sync = assert(core.append_start(path, "one\n"))
      assert.equal("head\none\n", read(path))
      assert.equal(1, core.wait_fds({ sync:fd() }, 10))
      assert.is_true(sync:done())
      assert.is_true(sync:done()) -- (the result is kept)
      assert.is_true(sync:wait())
      assert.matches("synced", tostring(sync))
    end)

    it("waits for a sync still running", function()
      local path = dir .. "/journal-wait"
      assert.is_true(core.write_file_atomic(path, ""))
      local sync = assert(core.append_start(path, ("x"):rep(1048576)))
      assert.is_true(sync:wait())
      assert.is_true(sync:done())
      assert.equal(1048576, #read(path))
    end)

    it("does not create a missing file: nil and a message naming it", function()
      local ok, err = core.append_start(dir .. "/no-journal-async", "x")
      assert.is_nil(ok)
      assert.matches("no%-journal%-async: No such file or directory", err)
      assert.is_nil(io.open(dir .. "/no-journal-async"))
    end)

    it("answers a write the device refuses with nil and a message, nothing left running", function()
      local ok, err = core.append_start("/dev/full", "x")
      assert.is_nil(ok)
      assert.matches("append /dev/full: No space left on device", err)
    end)

    it("can be closed or collected while its sync runs; a closed handle is an error to use", function()
      local path = dir .. "/journal-close"
      assert.is_true(core.write_file_atomic(path, ""))
      local sync = assert(core.append_start(path, "a\n"))
      sync:close()
      assert.has_error(function() sync:done() end, "sync handle is closed")
      local closing = assert(core.append_start(path, "b\n"))
      getmetatable(closing).__close(closing) -- (as a to-be-closed variable would)
      for _ = 1, 20 do assert(core.append_start(path, "c\n")) end
      collectgarbage()
      collectgarbage()
      assert.equal("a\nb\n" .. ("c\n"):rep(20), read(path))
    end)
  end)

  describe("signals", function()
    it("records a watched signal until it is read", function()
      assert.is_true(core.signal_watch{ "USR1", "SIGUSR2" })
      assert.is_nil(core.signal_pending())
      assert.is_true(sh("kill -USR2 " .. core.getpid()))
      assert.equal("USR2", next_signal(2))
      assert.is_nil(core.signal_pending())
      assert.has_error(function() core.signal_watch{ "KILL" } end)
    end)

    it("notes a child's end once (child_exited), never as a pending signal", function()
      assert.is_true(core.signal_watch{ "CHLD" })
      core.child_exited() -- whatever ended before
      assert.is_false(core.child_exited())
      local pid = assert(core.spawn { argv = { "true" } })
      local deadline = core.monotime() + 10 -- generous: only a hang fails
      local seen = false
      while not seen and core.monotime() < deadline do
        seen = core.child_exited()
        if not seen then core.sleep(0.01) end
      end
      assert.is_true(seen)
      assert.is_false(core.child_exited()) -- read once
      assert.is_nil(core.signal_pending()) -- not a stop signal for a serving loop
      assert.same({ "exited", 0 }, { wait_exit(pid, 10) })
    end)

    it("starts a child with no signal blocked and gives the parent its signals back", function()
      -- spawn blocks every signal while the child shares its memory (until
      -- exec): the child unblocks them (USR1's default action ends it), and the
      -- parent's own mask is restored (its watched USR2 still arrives).
      assert.is_true(core.signal_watch{ "USR1", "USR2" })
      local pid = assert(core.spawn { argv = { "sh", "-c", "kill -USR1 $$; sleep 5; exit 0" } })
      assert.same({ "signaled", 10 }, { wait_exit(pid, 20) })
      assert.is_nil(core.signal_pending()) -- the child's USR1 was its own
      assert.is_true(sh("kill -USR2 " .. core.getpid()))
      assert.equal("USR2", next_signal(10))
    end)
  end)
end)
