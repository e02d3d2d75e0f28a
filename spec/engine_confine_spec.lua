-- Programs are confined: an application runs only from inside --app-root or
-- the bundled stand-ins for the vendor's samples, by its real path, and only
-- when it is of a known type (for non-admins). Escapes tried: /bin/sh, ".."
-- traversal, a NUL inside the path, a symlink out of the root, file: URIs.
-- Admins go further only on a loopback engine started with --allow-any-program.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local function sha256_hex(s) return util.hex(core.sha256(s)) end

local function temp_dir() return helper.temp_dir("ae-confine-spec-") end

local exists = util.exists

describe("application confinement", function()
  local e, base, root, outside, users_file
  local USER = { username = "u1", role = "user", key = "user-key-0123456789" }

  lazy_setup(function()
    base = temp_dir()
    root, outside = base .. "/root", base .. "/outside"
    assert(os.execute(("mkdir -p '%s/sub' '%s'"):format(root, outside)))
    helper.write(root .. "/ok.sh", "echo confined ok\n")
    helper.write(root .. "/sub/deep.py", "print('deep')\n")
    helper.write(root .. "/tool", "#!/bin/sh\necho tool\n")
    assert(os.execute(("chmod +x '%s/tool'"):format(root)))
    -- each escape would leave a marker if it ran
    helper.write(outside .. "/evil.sh", "touch '" .. outside .. "/ran'\n")
    assert(os.execute(("ln -s '%s/evil.sh' '%s/link.sh'"):format(outside, root)))
    assert(os.execute(("ln -s '%s' '%s/out'"):format(outside, root)))
    users_file = base .. "/users.json"
    helper.write(users_file, util.json_encode({ { username = USER.username, role = USER.role,
                                                  api_key_sha256 = sha256_hex(USER.key) } }))
    e = helper.start({ "--app-root", root, "--users", users_file, "--no-jupyter" }, { confined = true })
  end)
  lazy_teardown(function()
    -- an engine stuck opening a FIFO (a regression) is let go before it is stopped
    os.execute(("timeout 2 sh -c \": > '%s/pipe.py'; : > '%s/pipe.py'\" 2>/dev/null"):format(root, outside))
    helper.stop(e)
    os.execute("rm -rf '" .. base .. "'")
  end)

  local function submit(details, who)
    local auth = who == "admin" and helper.zen(e) or helper.zen(e, USER.username, USER.key)
    return helper.request(e, "POST", helper.v4(e, "/spark_applications"), { application_details = details },
      { Authorization = auth })
  end

  local function refused(details, status, code, who)
    local got, b = submit(details, who)
    assert.equal(status, got, util.json_encode(b))
    assert.equal(code, b.errors[1].code)
    assert.is_nil(b.errors[1].message:find("\n", 1, true))
    return b.errors[1].message
  end

  it("serve says at start where programs run from", function()
    local log = util.read_file(e.log) or ""
    assert.truthy(log:find("programs:    confined to " .. core.realpath(root), 1, true), log)
  end)

  it("runs a program inside the root, by a relative path and in a subdirectory", function()
    for _, app in ipairs({ "ok.sh", "sub/deep.py", "./sub/../ok.sh" }) do
      local status, b = submit({ application = app })
      assert.equal(202, status, util.json_encode(b))
      assert.equal("FINISHED", helper.wait_app(e, b.application_id).state)
    end
  end)

  it("refuses /bin/sh -c for a user and for an admin without --allow-any-program", function()
    local msg = refused({ application = "/bin/sh", arguments = { "-c", "touch " .. outside .. "/ran" } }, 403,
      "application_not_allowed")
    assert.truthy(msg:find("/bin/sh is outside", 1, true))
    refused({ application = "/bin/sh", arguments = { "-c", "touch " .. outside .. "/ran" } }, 403,
      "application_not_allowed", "admin")
  end)

  it("refuses .. traversal out of the root", function()
    refused({ application = "../outside/evil.sh" }, 403, "application_not_allowed")
    refused({ application = "sub/../../outside/evil.sh" }, 403, "application_not_allowed")
    refused({ application = root .. "/../outside/evil.sh" }, 403, "application_not_allowed")
  end)

  it("refuses a NUL or another control character inside the path", function()
    -- the body validation (engine/validate.lua) refuses a NUL before the confinement does
    for _, who in ipairs({ "user", "admin" }) do
      local status, b = submit({ application = "/bin/echo\0/../../x.py" }, who)
      assert.equal(400, status)
      assert.truthy(b.errors[1].message:find("application_details.application", 1, true))
      assert.truthy(b.errors[1].message:find("NUL", 1, true), b.errors[1].message)
    end
    local msg = refused({ application = "ok.sh\n" }, 400, "invalid_application")
    assert.truthy(msg:find("byte 10 at position 6", 1, true), msg)
    refused({ application = "ok.sh\27[2J" }, 400, "invalid_application", "admin")
  end)

  it("refuses a symlink (to a file or a directory) that leads out of the root", function()
    refused({ application = "link.sh" }, 403, "application_not_allowed")
    refused({ application = "out/evil.sh" }, 403, "application_not_allowed")
  end)

  it("refuses file: and local: URIs out of the root", function()
    refused({ application = "file://" .. outside .. "/evil.sh" }, 403, "application_not_allowed")
    refused({ application = "local:" .. outside .. "/evil.sh" }, 403, "application_not_allowed")
  end)

  it("refuses a program of no known type to a user, not to an admin", function()
    refused({ application = "tool" }, 403, "application_type_not_allowed")
    local status, b = submit({ application = "tool" }, "admin")
    assert.equal(202, status)
    assert.equal("FINISHED", helper.wait_app(e, b.application_id).state)
  end)

  it("still runs the seed's sample payloads (their stand-ins)", function()
    for _, d in ipairs({
      { application = "/opt/ibm/spark/examples/src/main/python/wordcount.py",
        arguments = { "/opt/ibm/spark/examples/src/main/resources/people.txt" } },
      { application = "/opt/ibm/spark/examples/jars/spark-examples_2.12-3.4.1.jar",
        class = "org.apache.spark.examples.SparkPi", arguments = { "2" } },
      { application = "/opt/ibm/spark/examples/src/main/r/dataframe.R" },
    }) do
      local status, b = submit(d)
      assert.equal(202, status, util.json_encode(b))
      local app = helper.wait_app(e, b.application_id)
      assert.equal("FINISHED", app.state, d.application .. ": " .. util.json_encode(app.state_details))
    end
  end)

  it("refuses env and conf that make the interpreter, the loader or the JVM run other code", function()
    local sparkpi = { application = "/opt/ibm/spark/examples/jars/spark-examples_2.12-3.4.1.jar",
                      class = "org.apache.spark.examples.SparkPi", arguments = { "2" } }
    local touch = "touch '" .. outside .. "/ran'"
    -- LUA_INIT is run by lua5.4 before the bundled SparkPi stand-in: a shell for any user
    for _, who in ipairs({ "user", "admin" }) do
      local d = util.copy(sparkpi)
      d.env = { LUA_INIT = "os.execute([[" .. touch .. "]])" }
      local msg = refused(d, 403, "application_env_not_allowed", who)
      assert.truthy(msg:find("application_details.env.LUA_INIT is not allowed", 1, true), msg)
    end
    for _, env in ipairs({ { PYTHONPATH = outside }, { LD_PRELOAD = outside .. "/x.so" },
                           { BASH_ENV = outside .. "/evil.sh" },
                           { LUA_INIT_5_4 = "@" .. outside .. "/x.lua" }, { PATH = outside },
                           { SPARK_SUBMIT_OPTS = "-XX:OnOutOfMemoryError=" .. touch } }) do
      refused({ application = "ok.sh", env = env }, 403, "application_env_not_allowed")
    end
    local msg = refused({ application = "sub/deep.py",
                          conf = { ["spark.driver.extraJavaOptions"] = "-XX:OnOutOfMemoryError=" .. touch } },
      403, "application_conf_not_allowed")
    assert.truthy(msg:find("application_details.conf.spark.driver.extraJavaOptions", 1, true), msg)
    refused({ application = "sub/deep.py", conf = { ["spark.pyspark.driver.python"] = "/bin/sh" } }, 403,
      "application_conf_not_allowed")
    msg = refused({ application = "sub/deep.py", conf = { ["spark.executorEnv.LD_PRELOAD"] = outside .. "/x.so" } },
      403, "application_conf_not_allowed")
    assert.truthy(msg:find("LD_PRELOAD", 1, true), msg)
    -- a library or data file spark-submit loads is confined like the program
    msg = refused({ application = "sub/deep.py", jars = root .. "/ok.sh," .. outside .. "/evil.jar" }, 403,
      "application_not_allowed")
    assert.truthy(msg:find("application_details.jars: " .. outside .. "/evil.jar is outside", 1, true), msg)
    refused({ application = "sub/deep.py", conf = { ["spark.submit.pyFiles"] = "file://" .. outside .. "/x.py" } },
      403, "application_not_allowed")
    -- what only changes output is fine
    local status, b = submit({ application = "sub/deep.py", env = { PYTHONUNBUFFERED = "1", GREETING = "hi" },
                               conf = { ["spark.executorEnv.GREETING"] = "hi" } })
    assert.equal(202, status, util.json_encode(b))
    assert.equal("FINISHED", helper.wait_app(e, b.application_id).state)
  end)

  it("the wordcount stand-in reads only files inside the roots (not the engine's credentials)", function()
    local wc = "/opt/ibm/spark/examples/src/main/python/wordcount.py"
    local msg = refused({ application = wc, arguments = { e.data_dir .. "/credentials.json" } }, 403,
      "application_not_allowed")
    assert.truthy(msg:find("application_details.arguments[1]: ", 1, true), msg)
    refused({ application = wc, arguments = { "../outside/evil.sh" } }, 403, "application_not_allowed")
    for _, arg in ipairs({ "/opt/ibm/spark/examples/src/main/resources/people.txt", "ok.sh" }) do
      local status, b = submit({ application = wc, arguments = { arg } })
      assert.equal(202, status, util.json_encode(b))
      assert.equal("FINISHED", helper.wait_app(e, b.application_id).state)
    end
  end)

  it("a FIFO, a directory or a device is no program, and never blocks the engine", function()
    assert(os.execute(("mkfifo '%s/pipe.py' '%s/pipe.py' && mkdir '%s/dir.py'"):format(root, outside, root)))
    local t0 = core.monotime()
    local msg = refused({ application = "pipe.py" }, 400, "invalid_application")
    assert.truthy(msg:find("pipe.py is a fifo, not a regular file", 1, true), msg)
    refused({ application = outside .. "/pipe.py" }, 403, "application_not_allowed")
    refused({ application = "dir.py" }, 400, "invalid_application")
    refused({ application = "/dev/zero" }, 403, "application_not_allowed", "admin")
    -- generous bound: opening the FIFO would wait for a writer, for ever
    assert.is_true(core.monotime() - t0 < 20)
    assert.equal(200, (helper.request(e, "GET", helper.v4(e, ""))))
  end)

  it("no escape ran", function()
    core.sleep(0.5)
    assert.is_false(exists(outside .. "/ran"))
  end)

  describe("--allow-any-program", function()
    local any
    lazy_setup(function()
      any = helper.start({ "--app-root", root, "--users", users_file, "--no-jupyter", "--allow-any-program" },
        { confined = true })
    end)
    lazy_teardown(function() helper.stop(any) end)

    it("lets an admin run a program anywhere, and nobody else", function()
      local status, b = helper.request(any, "POST", helper.v4(any, "/spark_applications"),
        { application_details = { application = outside .. "/evil.sh" } })
      assert.equal(202, status)
      assert.equal("FINISHED", helper.wait_app(any, b.application_id).state)
      assert.is_true(exists(outside .. "/ran"))
      os.remove(outside .. "/ran")
      status = helper.request(any, "POST", helper.v4(any, "/spark_applications"),
        { application_details = { application = outside .. "/evil.sh" } },
        { Authorization = helper.zen(any, USER.username, USER.key) })
      assert.equal(403, status)
    end)

    it("an engine beyond loopback refuses to start with / as its application root (it binds nothing)", function()
      local code, _, err = aeflow.run({ "serve", "--host", "0.0.0.0", "--app-root", "/", "--data", base .. "/d2" })
      assert.equal(1, code)
      assert.truthy(err:find("programs would run from anywhere (--app-root is /)", 1, true), err)
    end)

    it("is refused when the engine listens beyond loopback", function()
      local code, _, err = aeflow.run({ "serve", "--host", "0.0.0.0", "--allow-any-program", "--data", base .. "/d" })
      assert.equal(2, code)
      assert.truthy(err:find("--allow-any-program is only for an engine on loopback", 1, true), err)
    end)
  end)
end)
