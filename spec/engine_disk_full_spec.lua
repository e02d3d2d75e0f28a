-- A full disk: a 5xx means nothing happened. The engine's data directory is
-- on a 2 MB tmpfs (mount needs root; CI runs as root), filled to the last
-- block: every create is refused 507 with one line and leaves no trace (not
-- listed, its process never runs, gone after a restart), reads answer from
-- memory, and service resumes by itself when space returns.
local core = require("analytics_engine.core")
local helper = require("helpers.engine")
local shell = require("helpers.shell")

local sh = shell.ok

describe("the engine on a full disk", function()
  local mnt, root, marks, e, first

  lazy_setup(function()
    mnt = os.tmpname()
    os.remove(mnt)
    assert(sh("mkdir -p " .. mnt .. " && mount -t tmpfs -o size=2m tmpfs " .. mnt), "cannot mount a tmpfs")
    root = os.tmpname()
    os.remove(root)
    marks = root .. "/marks"
    assert(sh("mkdir -p " .. marks))
    -- The application leaves a mark outside the full disk when (and only if) it runs.
    helper.write(root .. "/mark.sh", ('#!/bin/sh\ntouch "%s/$1"\n'):format(marks))
    assert(sh("chmod +x " .. root .. "/mark.sh"))
    e = helper.start({ "--app-root", root, "--no-jupyter", "--quiet" }, { data_dir = mnt .. "/data" })
    first = helper.submit(e, { application = "mark.sh", arguments = { "first" } })
    assert.equal("FINISHED", helper.wait_app(e, first).state)
    sh("dd if=/dev/zero of=" .. mnt .. "/filler bs=4k >/dev/null 2>&1")
  end)

  lazy_teardown(function()
    if e then helper.stop(e, true) end
    sh("umount " .. mnt .. " && rmdir " .. mnt)
    sh("rm -rf " .. root)
  end)

  local function submit(name)
    return helper.request(e, "POST", helper.v4(e, "/spark_applications"),
      { application_details = { application = "mark.sh", arguments = { name } } })
  end

  it("answers every create 507 with one line, and nothing of it remains", function()
    for i = 1, 10 do
      local status, b, h = submit("refused" .. i)
      assert.equal(507, status)
      assert.equal("insufficient_storage", b.errors[1].code)
      assert.equal("nothing was changed: the local engine cannot save its state (the disk is full); try again later",
        b.errors[1].message)
      assert.truthy(h["retry-after"])
    end
    local status, b = helper.request(e, "GET", helper.v4(e, "/spark_applications"))
    assert.equal(200, status)
    assert.equal(1, #b.applications)
    assert.equal(first, b.applications[1].application_id)
    core.sleep(0.5) -- a queued application would have started by now
    assert.is_nil(io.open(marks .. "/refused1"))
  end)

  it("keeps answering reads from memory", function()
    local status, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. first))
    assert.equal(200, status)
    assert.equal("FINISHED", b.state)
    status = helper.request(e, "GET", helper.v4(e, "/current_resource_consumption"))
    assert.equal(200, status)
    status = helper.request(e, "GET", helper.v4(e, "/default_configs"))
    assert.equal(200, status)
  end)

  it("refuses a settings change with 507 and keeps the old settings", function()
    local status = helper.request(e, "PUT", helper.v4(e, "/default_configs"), { ["spark.app.name"] = "new" })
    assert.equal(507, status)
    local _, b = helper.request(e, "GET", helper.v4(e, "/default_configs"))
    assert.is_nil(b["spark.app.name"])
  end)

  it("resumes by itself when space returns, and a restart finds exactly what was acknowledged", function()
    os.remove(mnt .. "/filler")
    local id = helper.submit(e, { application = "mark.sh", arguments = { "after" } })
    assert.equal("FINISHED", helper.wait_app(e, id).state)
    assert.truthy(io.open(marks .. "/after"))
    helper.stop(e, true)
    e = helper.start({ "--app-root", root, "--no-jupyter", "--quiet" }, { data_dir = mnt .. "/data" })
    local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications"))
    local ids = {}
    for _, a in ipairs(b.applications) do ids[a.application_id] = true end
    assert.equal(2, #b.applications)
    assert.is_true(ids[first] and ids[id])
    for i = 1, 10 do assert.is_nil(io.open(marks .. "/refused" .. i)) end
  end)
end)
