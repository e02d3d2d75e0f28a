-- workflows/fanout.lua: fifty applications from one step, ten at a time.
--   aeflow run workflows/fanout.lua --param seconds=2
-- luacheck: read globals workflow step finally
local items = {}
for i = 1, 50 do items[i] = i end

return workflow "fanout" {
  params = { seconds = "1" },

  step "sleepers" {
    description = "50 tiny applications, at most 10 running at once",
    for_each = items, max_parallel = 10,
    submit = {
      application = "apps/sleep.sh",   -- relative to this file's directory
      arguments = { "${seconds}" },
      conf = { ["spark.app.name"] = "sleeper ${item} of 50" },
    },
    retries = 1, timeout = "5m",
  },
}
