-- workflows/quickstart.lua: the client in a plain Lua script.
-- Run it with `aeflow exec workflows/quickstart.lua`: `client` is ready, for
-- the configured endpoint or a local engine when none is configured.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local runtime = assert(client:replace_instance_default_runtime { spark_version = "3.4" })
print("default runtime: Spark " .. runtime.spark_version)

local configs = assert(client:update_instance_default_configs { ["spark.driver.memory"] = "2G" })
print("default configs: spark.driver.memory=" .. tostring(configs["spark.driver.memory"]))

local sub = assert(client:create_application {
  application = here .. "apps/wordcount.py",
  arguments = { here .. "apps/people.txt" },
  conf = { ["spark.app.name"] = "quickstart wordcount" },
})
print("submitted application " .. sub.application_id)

local app, err = client:wait_for_application(sub.application_id, { interval = 0.5 })
if not app then error(tostring(err), 0) end
print(("application %s: %s (return code %s)"):format(app.application_id, app.state, tostring(app.return_code)))
return app.state == "FINISHED"
