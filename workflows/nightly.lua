-- workflows/nightly.lua: the pipeline of DESIGN.md, on apps shipped beside it.
--   aeflow run workflows/nightly.lua --param date=2026-11-24
-- luacheck: read globals workflow step finally
return workflow "nightly" {
  params = { date = os.date "%Y-%m-%d", spark_version = "3.4" },

  step "runtime" { set_runtime = { spark_version = "${spark_version}" } },
  step "configs" { update_configs = { ["spark.driver.memory"] = "8G" } },
  step "history" { start_history_server = { cores = "1", memory = "4G" } },

  step "ingest" {
    after = { "runtime", "configs" },
    submit = { application = "apps/ingest.py", arguments = { "${date}" } },
    retries = 2, timeout = "30m",
  },
  step "reports" {
    after = { "ingest" },
    for_each = { "eu", "us", "apac" }, max_parallel = 2,
    submit = { application = "apps/report.py", arguments = { "${item}", "${date}" } },
  },
  step "check" {
    after = { "reports" },
    run = function(ctx)            -- plain Lua for what no built-in covers
      for _, app in ipairs(ctx.outputs.reports) do
        assert(app.return_code == "0", app.application_id .. " failed")
      end
    end,
  },

  finally "stop history" { stop_history_server = {} },
}
