-- workflows/failing.lua: the second step fails, the third is skipped, and
-- the finally step runs all the same. `aeflow run` exits 1.
--   aeflow run workflows/failing.lua
-- luacheck: read globals workflow step finally
return workflow "failing" {
  step "first" { submit = { application = "apps/sleep.sh", arguments = { "0" } } },
  step "second" {
    after = "first",
    submit = { application = "apps/fail.sh" },   -- exits 1
  },
  step "third" {
    after = "second",   -- never runs: the step it comes after failed
    submit = { application = "apps/sleep.sh", arguments = { "0" } },
  },

  finally "cleanup" { submit = { application = "apps/sleep.sh", arguments = { "0" } } },
}
