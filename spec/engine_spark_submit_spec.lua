-- spark-submit argument construction, checked against a recorder script that
-- stands in for spark-submit (Spark is not in Debian's archive): it prints
-- its argv one argument per line, which the engine keeps as the
-- application's stdout. Also: the engine's --spark-master/--deploy-mode
-- pass-through, SPARK_HOME discovery, the real history server's scripts run
-- from SPARK_HOME, and `aeflow logs`.
local helper = require("helpers.engine")
local aeflow = require("helpers.aeflow")
local runner = require("analytics_engine.engine.runner")

local RECORDER = '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n'

local function mkdir(p) assert(os.execute("mkdir -p '" .. p .. "'")) end

local function tmp()
  local p = os.tmpname()
  os.remove(p)
  mkdir(p)
  return p
end

local function argv_of(e, id)
  local final = helper.wait_app(e, id)
  assert.equal("FINISHED", final.state)
  local out = {}
  for line in ((helper.logs(e, id)) or ""):gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

describe("spark-submit on a cluster (--spark-master, --deploy-mode)", function()
  local e, root, submit
  lazy_setup(function()
    root = tmp()
    submit = helper.write(root .. "/spark-submit", RECORDER)
    assert(os.execute("chmod +x '" .. submit .. "'"))
    helper.write(root .. "/job.py", "print('not run here')\n")
    helper.write(root .. "/run.sh", "echo plain shell\n")
    e = helper.start({ "--app-root", root, "--spark-submit", submit, "--spark-master", "spark://master.example:7077",
                       "--deploy-mode", "cluster" })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("passes every flag in order, with the conf sorted and the arguments last", function()
    local id = helper.submit(e, {
      application = "job.py", class = "com.example.Main", name = "nightly",
      arguments = { "--date", "2026-11-24", "two words" },
      jars = "a.jar, b.jar", packages = "org.example:lib:1.0", repositories = "https://repo.example/maven",
      files = "data.csv", archives = "env.tar.gz",
      conf = { ["spark.executor.memory"] = "2G", ["spark.app.name"] = "Nightly run",
               ["spark.submit.pyFiles"] = "deps.zip,util.py", ["ae.local-engine.timeout"] = "1h" },
    })
    assert.same({
      "--master", "spark://master.example:7077",
      "--deploy-mode", "cluster",
      "--name", "Nightly run",
      "--class", "com.example.Main",
      "--conf", "spark.app.name=Nightly run",
      "--conf", "spark.executor.memory=2G",
      "--conf", "spark.standalone.submit.waitAppCompletion=true",
      "--jars", "a.jar,b.jar",
      "--packages", "org.example:lib:1.0",
      "--repositories", "https://repo.example/maven",
      "--files", "data.csv",
      "--archives", "env.tar.gz",
      "--py-files", "deps.zip,util.py",
      root .. "/job.py",
      "--date", "2026-11-24", "two words",
    }, argv_of(e, id))
  end)

  it("puts the instance's default configs under the application's", function()
    helper.request(e, "PUT", helper.v4(e, "/default_configs"),
      { ["spark.driver.memory"] = "4G", ["spark.executor.memory"] = "1G" })
    local id = helper.submit(e, { application = "job.py", conf = { ["spark.executor.memory"] = "3G" } })
    local argv = argv_of(e, id)
    helper.request(e, "PUT", helper.v4(e, "/default_configs"), {})
    local confs = {}
    for i, a in ipairs(argv) do if a == "--conf" then confs[#confs + 1] = argv[i + 1] end end
    assert.same({ "spark.driver.memory=4G", "spark.executor.memory=3G",
                  "spark.standalone.submit.waitAppCompletion=true" }, confs)
  end)

  it("hands a URI application to spark-submit without looking for a local file", function()
    local id = helper.submit(e, { application = "hdfs://nn/jobs/etl.py", arguments = { "x" } })
    local argv = argv_of(e, id)
    assert.equal("hdfs://nn/jobs/etl.py", argv[#argv - 1])
    assert.equal("x", argv[#argv])
  end)

  it("runs a shell script by itself, not through spark-submit", function()
    local id = helper.submit(e, { application = "run.sh" })
    assert.equal("FINISHED", helper.wait_app(e, id).state)
    assert.equal("plain shell\n", (helper.logs(e, id)))
  end)

  it("prints the application's output with `aeflow logs`", function()
    local id = helper.submit(e, { application = "run.sh" })
    helper.wait_app(e, id)
    local code, out = aeflow.run({ "logs", id }, { engine = e })
    assert.equal(0, code)
    assert.equal("plain shell\n", out)
  end)

  it("follows an application's output to its end with `aeflow logs --follow`", function()
    helper.write(root .. "/slow.sh", "echo one\nsleep 1\necho two >&2\necho three\n")
    local id = helper.submit(e, { application = "slow.sh" })
    local code, out = aeflow.run({ "logs", id, "--follow" }, { engine = e, timeout = 30 })
    assert.equal(0, code)
    assert.equal("one\nthree\n", out)
    local code2, err2 = aeflow.run({ "logs", id, "--stream", "stderr" }, { engine = e })
    assert.equal(0, code2)
    assert.equal("two\n", err2)
  end)

  it("answers usage errors of `aeflow logs` with exit status 2", function()
    local code, _, err = aeflow.run({ "logs", "not-an-id" }, { engine = e })
    assert.equal(2, code)
    assert.truthy(err:find("not an application id", 1, true))
  end)
end)

describe("spark-submit from SPARK_HOME with a local master", function()
  local e, root, home
  lazy_setup(function()
    root = tmp()
    home = root .. "/spark"
    mkdir(home .. "/bin")
    mkdir(home .. "/sbin")
    helper.write(home .. "/bin/spark-submit", RECORDER)
    -- The history server's scripts: record how they were run.
    helper.write(home .. "/sbin/start-history-server.sh",
      '#!/bin/sh\nprintf "%s\\n%s\\n" "$SPARK_HISTORY_OPTS" "$SPARK_DAEMON_MEMORY" > "$SPARK_PID_DIR/started"\n')
    helper.write(home .. "/sbin/stop-history-server.sh", '#!/bin/sh\ntouch "$SPARK_PID_DIR/stopped"\n')
    assert(os.execute("chmod +x '" .. home .. "'/bin/* '" .. home .. "'/sbin/*"))
    helper.write(root .. "/app.jar", "not really a jar\n")
    e = helper.start({ "--app-root", root }, { bin = { "/usr/bin/env", "SPARK_HOME=" .. home, helper.bin() } })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("runs $SPARK_HOME/bin/spark-submit with local[*] and the event log in the data directory", function()
    local id = helper.submit(e, { application = "app.jar", class = "org.example.App", arguments = { "1" },
                                  conf = { ["spark.app.name"] = "Jar" } })
    assert.same({
      "--master", "local[*]",
      "--name", "Jar",
      "--class", "org.example.App",
      "--conf", "spark.app.name=Jar",
      "--conf", "spark.eventLog.dir=file:" .. e.data_dir .. "/spark-events",
      "--conf", "spark.eventLog.enabled=true",
      root .. "/app.jar", "1",
    }, argv_of(e, id))
  end)

  it("starts Spark's history server over the engine's event-log directory, its memory in the JVM's terms", function()
    -- "2Gi" (the service's spelling) is no JVM size: the daemon gets 2048m
    local status, b = helper.request(e, "POST", helper.v4(e, "/spark_history_server"), { cores = "1", memory = "2Gi" })
    assert.equal(200, status)
    assert.equal("started", b.state)
    assert.equal("spark", b.mode)
    local started = helper.eventually(function()
      local f = io.open(e.data_dir .. "/history/started")
      if not f then return nil end
      local s = f:read("a")
      f:close()
      return s ~= "" and s
    end)
    assert.truthy(started:find("-Dspark.history.fs.logDirectory=file:" .. e.data_dir .. "/spark-events", 1, true))
    assert.truthy(started:find("\n2048m\n", 1, true), started)
  end)

  it("stops it with Spark's script", function()
    assert.equal(204, (helper.request(e, "DELETE", helper.v4(e, "/spark_history_server"))))
    assert.truthy(helper.eventually(function()
      local f = io.open(e.data_dir .. "/history/stopped")
      if f then f:close() end
      return f ~= nil
    end))
  end)
end)

describe("engine.runner.spark_submit", function()
  it("finds spark-submit on PATH when SPARK_HOME has none", function()
    local root = tmp()
    mkdir(root .. "/bin")
    helper.write(root .. "/bin/spark-submit", RECORDER)
    assert.equal(root .. "/bin/spark-submit",
      runner.spark_submit(root .. "/nonexistent", "/usr/bin:" .. root .. "/bin"))
    assert.equal(root .. "/bin/spark-submit", runner.spark_submit(root, "/usr/bin"))
    assert.is_nil(runner.spark_submit(root .. "/nonexistent", "/nonexistent"))
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("says the history server is state-only without Spark", function()
    local e = helper.start({}, { bin = { "/usr/bin/env", "-u", "SPARK_HOME", helper.bin() } })
    local ok, err = pcall(function()
      local _, b = helper.request(e, "POST", helper.v4(e, "/spark_history_server"), {})
      assert.equal("state-only", b.mode)
      assert.truthy(b.local_engine_note:find("state-only", 1, true))
    end)
    helper.stop(e)
    assert(ok, err)
  end)
end)
