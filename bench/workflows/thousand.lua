-- Benchmark 2's workflow: BENCH_APPS (default 1000) applications from one
-- step, all at once, each sleeping BENCH_SECONDS (default 1) seconds.
--   aeflow run bench/workflows/thousand.lua
-- luacheck: read globals workflow step env
local n = tonumber(env("BENCH_APPS", "1000"))
local items = {}
for i = 1, n do items[i] = i end

return workflow "thousand" {
  params = { seconds = env("BENCH_SECONDS", "1") },

  step "sleepers" {
    description = n .. " applications at once, each sleeping ${seconds} s",
    for_each = items,
    submit = {
      application = "../../workflows/apps/sleep.sh",   -- relative to this file
      arguments = { "${seconds}" },
    },
  },
}
