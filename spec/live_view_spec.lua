-- The live view in a real terminal (tmux): it moves while a step waits, a
-- fan-out shows as counts, and after Ctrl-C the last frame is the truth.
local core = require("analytics_engine.core")
local aeflow = require("helpers.aeflow")
local engine = require("helpers.engine")
local launcher = require("analytics_engine.engine.launcher")
local shell = require("helpers.shell")

local SOCKET = "aeflow-live-" .. core.getpid()

local sh, q = shell.output, shell.quote

local function screen(name)
  return sh(("tmux -L %s capture-pane -p -t %s"):format(SOCKET, name))
end

-- Poll the screen until `pred(text)` holds (generous deadline: a hang, not a speed, fails).
local function wait_screen(name, pred, what)
  local deadline = core.monotime() + 60
  local text
  repeat
    text = screen(name)
    if pred(text) then return text end
    core.sleep(0.2)
  until core.monotime() > deadline
  error("the screen never showed " .. what .. ":\n" .. text)
end

local function start(name, dir, args)
  local bin = core.realpath(engine.bin()) or engine.bin()
  local cmd = ("env -i PATH=%s HOME=%s TERM=screen LANG=C.UTF-8 %s %s; echo EXITED $?; sleep 600"):format(
    q(os.getenv("PATH")), q(os.getenv("HOME") or "/tmp"), q(bin), table.concat(args, " "))
  sh(("tmux -L %s new-session -d -s %s -x 150 -y 40 -c %s %s"):format(SOCKET, name, q(dir), q(cmd)))
end

describe("the live view in a terminal", function()
  local dir
  lazy_setup(function()
    assert(sh("command -v tmux") ~= "", "tmux is missing (apt-get install tmux)")
    dir = assert(launcher.temp_dir("aeflow-live-"))
    aeflow.write(dir, "sleep.sh", 'sleep "$1"\n')
    aeflow.write(dir, "wait.lua", [[
return workflow "waits" {
  step "fan" { for_each = { 1, 2, 3, 4 }, max_parallel = 2,
               submit = { application = "sleep.sh", arguments = { "1" } } },
  step "long" { after = "fan", submit = { application = "sleep.sh", arguments = { "12" } } },
}
]])
    aeflow.write(dir, "resize.lua", [[
return workflow "resizes" {
  step "a_step_with_a_long_name" { submit = { application = "sleep.sh", arguments = { "20" } } },
}
]])
    aeflow.write(dir, "cancel.lua", [[
return workflow "cancels" {
  step "many" { for_each = { 1, 2, 3, 4, 5, 6 }, submit = { application = "sleep.sh", arguments = { "60" } } },
}
]])
  end)
  lazy_teardown(function()
    sh(("tmux -L %s kill-server"):format(SOCKET))
    local e = launcher.find_running(dir .. "/.aeflow/engine")
    if e then e:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  it("shows a waiting step, its application's state and a clock that moves", function()
    start("wait", dir, { "run", "wait.lua", "--poll-interval", "0.2" })
    -- The fan-out as counts of its items.
    wait_screen("wait", function(t) return t:find("%[.%] fan%s+%a+%s+%d/4 finished") end, "the fan-out's counts")
    -- The long step, its application RUNNING (as the engine says), the clock at 2 s...
    local first = wait_screen("wait", function(t)
      return t:find("%[>%] long%s+running%s+[2-5]s") and t:find("%x+%-[%x-]+%s+RUNNING")
    end, "long running for 2s with its application RUNNING")
    local secs = tonumber(first:match("%[>%] long%s+running%s+(%d+)s"))
    -- ...and later, with no event in between, a larger elapsed time.
    wait_screen("wait", function(t)
      local now = tonumber(t:match("%[>%] long%s+running%s+(%d+)s"))
      return now and now >= secs + 2
    end, "the elapsed time moving")
    assert.matches("%[%+%] fan%s+succeeded%s+4/4 finished", screen("wait"))
    local final = wait_screen("wait", function(t) return t:find("EXITED") end, "the end of the run")
    assert.matches("run %x+ of waits%s+%d+s%s+succeeded", final)
    assert.matches("EXITED 0", final, 1, true)
  end)

  it("redraws in place when the terminal is made narrower, with nothing copied to the scrollback", function()
    start("resize", dir, { "run", "resize.lua", "--poll-interval", "0.2" })
    wait_screen("resize", function(t) return t:find("%x+%-[%x-]+%s+RUNNING%s+%ds") end, "the application RUNNING")
    -- 40 columns: the frame's wide lines are wrapped (reflowed) by the terminal.
    sh(("tmux -L %s resize-window -t resize -x 40 -y 30"):format(SOCKET))
    local secs = tonumber(wait_screen("resize", function(t) return t:match("run %x+ of resizes%s+(%d+)s") end,
      "the frame after the resize"):match("run %x+ of resizes%s+(%d+)s"))
    wait_screen("resize", function(t)
      local now = tonumber(t:match("run %x+ of resizes%s+(%d+)s"))
      return now and secs and now >= secs + 2
    end, "the clock moving after the resize")
    -- One frame on the screen (the terminal reflowing the old frame once may push
    -- its top into the scrollback, out of reach of any redraw; no more than that).
    local visible = screen("resize")
    local _, frames = visible:gsub("run %x+ of resizes", "")
    assert.equals(1, frames, "the frame was drawn more than once:\n" .. visible)
    local all = sh(("tmux -L %s capture-pane -p -S -1000 -t resize"):format(SOCKET))
    _, frames = all:gsub("run %x+ of resizes", "")
    assert.is_true(frames <= 2, "frames copied to the scrollback:\n" .. all)
    local final = wait_screen("resize", function(t) return t:find("EXITED") end, "the end of the run")
    assert.matches("EXITED 0", final, 1, true)
  end)

  it("after Ctrl-C, the last frame and the summary are the truth", function()
    start("cancel", dir, { "run", "cancel.lua", "--poll-interval", "0.2", "--max-parallel", "2" })
    wait_screen("cancel", function(t) return t:find("0/6 finished · 2 running · 4 queued", 1, true) end,
      "two of six running")
    sh(("tmux -L %s send-keys -t cancel C-c"):format(SOCKET))
    local final = wait_screen("cancel", function(t) return t:find("EXITED") end, "the end of the run")
    assert.matches("EXITED 130", final, 1, true)
    local frame = final:sub(1, final:find("STEP%s+STATUS") or #final)
    assert.matches("run %x+ of cancels%s+%d+s%s+cancelled", frame)
    assert.matches("%[!%] many%s+cancelled%s+0/6 finished · 2 stopped · 4 not run", frame)
    -- Nothing garbled by the terminal's echo of ^C: the note and the frame start their lines.
    assert.matches("\n%d%d:%d%d:%d%d cancelling: signal INT\nrun %x+ of cancels", frame)
    assert.is_nil(frame:find("RUNNING", 1, true), frame)
    -- Attempts made and applications submitted: two, not six.
    assert.matches("\nmany%s+cancelled%s+2%s+2%s", final)
  end)
end)
