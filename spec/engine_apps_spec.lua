-- End to end: Spark applications on the local engine run as real local
-- processes; the seed's three sample payloads run verbatim.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local LONG_TIME, ISO_TIME, MISSING = helper.LONG_TIME, helper.ISO_TIME, helper.MISSING

-- The vendor's sample payloads, verbatim.
local SEED_PAYLOADS = {
  wordcount = [[{
  "application_details": {
    "application": "/opt/ibm/spark/examples/src/main/python/wordcount.py",
    "arguments": [
      "/opt/ibm/spark/examples/src/main/resources/people.txt"
    ],
    "conf": {
      "spark.app.name": "PySpark Application",
      "spark.eventLog.enabled": "true"
    }
  }
}]],
  sparkpi = [[{
  "application_details": {
    "arguments": [
      "1"
    ],
    "application": "/opt/ibm/spark/examples/jars/spark-examples*.jar",
    "class": "org.apache.spark.examples.SparkPi",
    "conf": {
      "spark.app.name": "Scala Application",
      "spark.eventLog.enabled": "true"
    }
  }
}]],
  dataframe = [[{
  "application_details": {
    "application": "/opt/ibm/spark/examples/src/main/r/dataframe.R",
    "conf": {
      "spark.app.name": "R Application",
      "spark.eventLog.enabled": "true"
    }
  }
}]],
}

local function has_python()
  return os.execute("command -v python3 >/dev/null 2>&1") == true
end

describe("local engine applications", function()
  local e, root
  local function req(method, suffix, body, headers)
    return helper.request(e, method, helper.v4(e, suffix), body, headers)
  end
  local function app_path(id, suffix) return "/spark_applications/" .. id .. (suffix or "") end

  lazy_setup(function()
    root = helper.app_root {
      ["fail3.sh"] = "echo hello from sh\necho to stderr >&2\nexit 3\n",
      ["ok.py"] = "import os, sys\nprint('python says', sys.argv[1:])\n"
        .. "print('app id', os.environ['AE_APPLICATION_ID'])\nprint('greeting', os.environ.get('GREETING'))\n",
      ["sleepy.sh"] = "echo $$\nsleep 30\necho never\n",
      ["env.sh"] = 'echo "id=$AE_APPLICATION_ID greeting=$GREETING"\n',
    }
    e = helper.start({ "--app-root", root })
  end)
  lazy_teardown(function()
    helper.stop(e)
    helper.cleanup(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  describe("POST spark_applications", function()
    it("answers 202 with application_id, state ACCEPTED and start_time", function()
      local status, b = req("POST", "/spark_applications", { application_details = { application = "env.sh" } })
      assert.equal(202, status)
      assert.truthy(util.is_uuid(b.application_id))
      assert.equal("ACCEPTED", b.state)
      assert.truthy(b.start_time:find(LONG_TIME))
    end)

    local bad = {
      { "no application_details", {}, "application_details is required" },
      { "no application", { application_details = { arguments = {} } },
        "application_details.application is required" },
      { "arguments not an array", { application_details = { application = "a.sh", arguments = "x" } },
        "application_details.arguments must be an array of strings" },
      { "a non-string argument", { application_details = { application = "a.sh", arguments = { 1 } } },
        "application_details.arguments must be an array of strings" },
      { "a non-string conf value", { application_details = { application = "a.sh", conf = { a = 1 } } },
        "application_details.conf.a must be a string" },
      { "an unknown runtime", { application_details = { application = "a.sh", runtime = { spark_version = "1.6" } } },
        "application_details.runtime.spark_version" },
      { "a non-boolean queuing_enabled", { application_details = { application = "a.sh" }, queuing_enabled = "yes" },
        "queuing_enabled must be a boolean" },
    }
    for _, c in ipairs(bad) do
      it("with " .. c[1] .. " is a 400 naming the field", function()
        local status, b = req("POST", "/spark_applications", c[2])
        assert.equal(400, status)
        assert.truthy(b.errors[1].message:find(c[3], 1, true), b.errors[1].message)
      end)
    end
  end)

  describe("a .sh application that exits 3", function()
    local id, final
    lazy_setup(function()
      id = helper.submit(e, { application = "fail3.sh", conf = { ["spark.app.name"] = "failing" } })
      final = helper.wait_app(e, id)
    end)

    it("ends FAILED", function() assert.equal("FAILED", final.state) end)
    it("has return_code \"3\"", function() assert.equal("3", final.return_code) end)
    it("has its stdout at the logs endpoint", function()
      local text, status = helper.logs(e, id)
      assert.equal(200, status)
      assert.equal("hello from sh\n", text)
    end)
    it("has its stderr at the logs endpoint", function()
      assert.equal("to stderr\n", (helper.logs(e, id, "stderr")))
    end)
    it("is named from spark.app.name", function() assert.equal("failing", final.spark_application_name) end)
  end)

  describe("a .py application", function()
    local id, final
    lazy_setup(function()
      id = helper.submit(e, { application = "ok.py", arguments = { "a", "b" }, env = { GREETING = "hi" } })
      final = helper.wait_app(e, id)
    end)

    it("ends FINISHED with return_code \"0\"", function()
      if not has_python() then pending("python3 is not installed") return end
      assert.equal("FINISHED", final.state)
      assert.equal("0", final.return_code)
    end)

    it("gets its arguments, env and AE_APPLICATION_ID", function()
      if not has_python() then pending("python3 is not installed") return end
      local out = helper.logs(e, id)
      assert.truthy(out:find("python says ['a', 'b']", 1, true))
      assert.truthy(out:find("app id " .. id, 1, true))
      assert.truthy(out:find("greeting hi", 1, true))
    end)

    it("GET answers the seed's application shape", function()
      local status, b = req("GET", app_path(id))
      assert.equal(200, status)
      local d = b.application_details
      assert.equal("ok.py", d.application)
      assert.same({ "a", "b" }, d.arguments)
      assert.is_table(d.conf)
      assert.is_table(d.instance_defaults_at_submission.conf)
      assert.equal("3.4", d.runtime.spark_version)
      assert.equal(id, b.application_id)
      assert.equal("stand-alone", b.deploy_mode)
      assert.equal("spark-3.4-local-engine-template", b.template_id)
      assert.truthy(b.spark_application_id:find("^app%-%d%d%d%d%d%d%d%d%d%d%d%d%d%d%-%d%d%d%d$"))
      assert.equal("ok.py", b.spark_application_name)
      for _, k in ipairs({ "creation_time", "start_time", "finish_time" }) do
        assert.truthy(b[k]:find(LONG_TIME), k)
      end
    end)

    it("GET .../status answers the seed's status shape", function()
      local status, b = req("GET", app_path(id, "/status"))
      assert.equal(200, status)
      assert.equal(id, b.id)
      assert.equal(final.state, b.state)
      assert.truthy(b.start_time:find(ISO_TIME))
      assert.truthy(b.finish_time:find(ISO_TIME))
      assert.equal(final.spark_application_id, b.spark_application_id)
    end)
  end)

  describe("a missing application file", function()
    it("ends FAILED with state_details application_not_found", function()
      local id = helper.submit(e, { application = "no/such/file.py" })
      local b = helper.wait_app(e, id)
      assert.equal("FAILED", b.state)
      assert.equal("error", b.state_details[1].type)
      assert.equal("application_not_found", b.state_details[1].code)
      assert.is_string(b.state_details[1].message)
    end)
  end)

  describe("the seed's sample payloads, verbatim", function()
    local function run(name)
      local status, b = req("POST", "/spark_applications", SEED_PAYLOADS[name])
      assert.equal(202, status)
      return b.application_id, helper.wait_app(e, b.application_id)
    end

    it("SparkPi runs the stand-in and prints Pi", function()
      local id, b = run("sparkpi")
      assert.equal("FINISHED", b.state)
      assert.equal("Scala Application", b.spark_application_name)
      assert.truthy(helper.logs(e, id):find("Pi is roughly 3.1", 1, true))
      assert.equal("local_stand_in", b.state_details[1].code)
      assert.equal("info", b.state_details[1].type)
    end)

    it("wordcount runs the stand-in over people.txt", function()
      if not has_python() then pending("python3 is not installed") return end
      local id, b = run("wordcount")
      assert.equal("FINISHED", b.state)
      assert.truthy(helper.logs(e, id):find("Michael,: 1", 1, true))
    end)

    it("dataframe.R runs the stand-in and prints the data frame", function()
      local id, b = run("dataframe")
      assert.equal("FINISHED", b.state)
      local out = helper.logs(e, id)
      assert.truthy(out:find("Michael", 1, true))
      assert.truthy(out:find("age", 1, true))
      assert.truthy(b.state_details[1].message:find("stand-in", 1, true))
    end)
  end)

  describe("DELETE", function()
    it("of a running application kills its process group and marks it STOPPED", function()
      local id = helper.submit(e, { application = "sleepy.sh" })
      local pid = helper.eventually(function() return tonumber((helper.logs(e, id) or ""):match("^(%d+)")) end)
      assert.is_number(pid)
      assert.is_true(helper.group_alive(pid))
      local _, running = req("GET", app_path(id))
      assert.equal("RUNNING", running.state)
      local cons_status, cons = req("GET", "/current_resource_consumption")
      assert.equal(200, cons_status)
      assert.equal("2000m", cons.running.cores)
      assert.equal("2048Mi", cons.running.memory)

      assert.equal(204, (req("DELETE", app_path(id))))
      local _, b = req("GET", app_path(id))
      assert.equal("STOPPED", b.state)
      assert.truthy(b.finish_time:find(LONG_TIME))
      assert.truthy(helper.eventually(function() return not helper.group_alive(pid) end, 8))
      assert.falsy(helper.logs(e, id):find("never", 1, true))
    end)

    it("of a finished application answers 204 and changes nothing", function()
      local id = helper.submit(e, { application = "env.sh" })
      local before = helper.wait_app(e, id)
      assert.equal(204, (req("DELETE", app_path(id))))
      local _, after = req("GET", app_path(id))
      assert.same(before, after)
    end)

    it("of an unknown id is a 404", function()
      local status, b = req("DELETE", app_path(MISSING))
      assert.equal(404, status)
      assert.equal(404, b.status_code)
    end)
  end)

  describe("GET by id", function()
    it("of an unknown id is a 404", function()
      local status, b = req("GET", app_path(MISSING))
      assert.equal(404, status)
      assert.equal("application_not_found", b.errors[1].code)
    end)

    it("of a malformed id is a 400 naming it", function()
      local status, b = req("GET", app_path("x"))
      assert.equal(400, status)
      assert.equal("application_id 'x' is not a valid id", b.errors[1].message)
    end)
  end)

  describe("list", function()
    local finished, failed
    lazy_setup(function()
      finished = helper.submit(e, { application = "env.sh" })
      failed = helper.submit(e, { application = "fail3.sh" })
      helper.wait_app(e, finished)
      helper.wait_app(e, failed)
    end)

    it("answers {applications:[...]} with the seed's row shape", function()
      local status, b = req("GET", "/spark_applications")
      assert.equal(200, status)
      local row
      for _, r in ipairs(b.applications) do if r.application_id == finished then row = r end end
      assert.is_table(row)
      assert.equal("FINISHED", row.state)
      assert.equal("spark-3.4-local-engine-template", row.template_id)
      assert.truthy(row.creation_time:find(LONG_TIME))
      assert.truthy(row.finish_time:find(LONG_TIME))
      assert.is_string(row.spark_application_id)
      assert.is_string(row.spark_application_name)
      assert.same({ spark_version = "3.4" }, row.runtime)
    end)

    it("filters by ?state= case-insensitively", function()
      local _, b = req("GET", "/spark_applications?state=failed")
      assert.is_true(#b.applications > 0)
      for _, r in ipairs(b.applications) do assert.equal("FAILED", r.state) end
    end)

    it("filters by several states", function()
      local _, b = req("GET", "/spark_applications?state=FINISHED,failed")
      for _, r in ipairs(b.applications) do assert.truthy(r.state == "FINISHED" or r.state == "FAILED") end
    end)

    it("pages with ?limit=&start=", function()
      local _, all = req("GET", "/spark_applications")
      local _, page = req("GET", "/spark_applications?limit=2&start=1")
      assert.equal(2, #page.applications)
      assert.equal(all.applications[2].application_id, page.applications[1].application_id)
      assert.equal(all.applications[3].application_id, page.applications[2].application_id)
    end)

    it("an unmatched filter answers an empty array", function()
      local _, _, _, raw = req("GET", "/spark_applications?state=WAITING")
      assert.equal('{"applications":[]}', raw)
    end)

    it("a bad limit is a 400", function()
      assert.equal(400, (req("GET", "/spark_applications?limit=zero")))
    end)
  end)
end)

describe("local engine restarts", function()
  local e, dir, root, finished_id, killed_id, orphan
  lazy_setup(function()
    root = helper.app_root {
      ["quick.sh"] = "echo quick\n",
      ["sleepy.sh"] = "echo $$\nsleep 30\n",
    }
    e = helper.start({ "--app-root", root })
    dir = e.data_dir
  end)
  lazy_teardown(function()
    if orphan then core.kill(orphan, "KILL") end
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("keeps applications, configs, credentials and instance id across a stop and start", function()
    finished_id = helper.submit(e, { application = "quick.sh" })
    helper.wait_app(e, finished_id)
    helper.request(e, "PUT", helper.v4(e, "/default_configs"), { ["spark.driver.memory"] = "2G" })
    local old = e
    helper.stop(e, true)
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    assert.equal(old.instance_id, e.instance_id)
    assert.equal(old.api_key, e.api_key)
    local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. finished_id))
    assert.equal("FINISHED", b.state)
    assert.equal("quick\n", (helper.logs(e, finished_id)))
    local _, conf = helper.request(e, "GET", helper.v4(e, "/default_configs"))
    assert.same({ ["spark.driver.memory"] = "2G" }, conf)
  end)

  it("marks a running application STOPPED when the engine is stopped", function()
    local id = helper.submit(e, { application = "sleepy.sh" })
    local pid = helper.eventually(function() return tonumber((helper.logs(e, id) or ""):match("^(%d+)")) end)
    assert.is_number(pid)
    helper.stop(e, true)
    assert.is_false(helper.group_alive(pid))
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
    assert.equal("STOPPED", b.state)
    assert.equal("engine_stopped", b.state_details[#b.state_details].code)
  end)

  it("marks an application FAILED with engine_restarted when the engine died under it", function()
    killed_id = helper.submit(e, { application = "sleepy.sh" })
    orphan = helper.eventually(function() return tonumber((helper.logs(e, killed_id) or ""):match("^(%d+)")) end)
    core.kill(e.pid, "KILL")
    helper.eventually(function() return core.wait(e.pid) ~= nil end)
    e = helper.start({ "--app-root", root }, { data_dir = dir })
    local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. killed_id))
    assert.equal("FAILED", b.state)
    assert.equal("engine_restarted", b.state_details[#b.state_details].code)
  end)
end)
