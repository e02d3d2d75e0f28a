-- workflows/seed_samples.lua: the three submission samples of the vendor's
-- API reference, run the way an operator would: the instance's runtime and
-- default configs first, the history server up, the three applications side
-- by side, and the history server stopped whatever happened.
--   aeflow run workflows/seed_samples.lua
-- luacheck: read globals workflow step finally
return workflow "seed samples" {
  description = "the vendor's PySpark, Scala and R samples",
  params = { spark_version = "3.4" },

  step "runtime" { set_runtime = { spark_version = "${spark_version}" } },
  step "configs" {
    set_configs = { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" },
  },
  step "history configs" {
    after = "configs",   -- set_configs replaces everything: merge after it
    update_configs = { ["ae.spark.history-server.cores"] = "1", ["ae.spark.history-server.memory"] = "4G" },
  },
  step "history" {
    after = { "runtime", "history configs" },
    start_history_server = {},   -- cores and memory from the defaults set above
  },

  step "wordcount" {
    after = "history",
    submit = {
      application = "/opt/ibm/spark/examples/src/main/python/wordcount.py",
      arguments = { "/opt/ibm/spark/examples/src/main/resources/people.txt" },
      conf = { ["spark.app.name"] = "PySpark Application", ["spark.eventLog.enabled"] = "true" },
    },
  },
  step "spark pi" {
    after = "history",
    submit = {
      application = "/opt/ibm/spark/examples/jars/spark-examples*.jar",
      class = "org.apache.spark.examples.SparkPi",
      arguments = { "1" },
      conf = { ["spark.app.name"] = "Scala Application", ["spark.eventLog.enabled"] = "true" },
    },
  },
  step "dataframe" {
    after = "history",
    submit = {
      application = "/opt/ibm/spark/examples/src/main/r/dataframe.R",
      conf = { ["spark.app.name"] = "R Application", ["spark.eventLog.enabled"] = "true" },
    },
  },

  finally "stop history" { stop_history_server = {} },
}
