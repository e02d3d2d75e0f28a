rockspec_format = "3.0"
package = "analytics-engine"
version = "scm-1"
source = {
  url = "git+https://example.invalid/analytics-engine-lua.git",
}
description = {
  summary = "Client, pipeline DSL and local engine for the Analytics Engine powered by Apache Spark (CPD v4 API)",
  detailed = [[
A Lua module with a C core (libcurl, libmicrohttpd) that drives the Analytics
Engine powered by Apache Spark on Cloud Pak for Data through its REST API v4,
plus `aeflow`, a pipeline runner, and a local engine serving the same API.
]],
  license = "Apache-2.0",
  labels = { "spark", "cloud-pak-for-data", "http", "workflow" },
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.1, <= 5.4",
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  CURL = { library = "curl" },
  MICROHTTPD = { library = "microhttpd" },
  WSLAY = { library = "wslay" },
  SQLITE = { library = "sqlite3" },
}
build = {
  type = "builtin",
  modules = {
    ["analytics_engine.core"] = {
      sources = { "csrc/core.c", "csrc/http.c", "csrc/server.c", "csrc/process.c", "csrc/fs.c",
                  "csrc/digest.c", "csrc/ws.c", "csrc/ws_frame.c", "csrc/ws_client.c",
                  "csrc/ws_server.c", "csrc/sqlite.c" },
      libraries = { "curl", "microhttpd", "wslay", "sqlite3" },
      incdirs = { "$(CURL_INCDIR)", "$(MICROHTTPD_INCDIR)", "$(WSLAY_INCDIR)", "$(SQLITE_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(MICROHTTPD_LIBDIR)", "$(WSLAY_LIBDIR)", "$(SQLITE_LIBDIR)" },
      defines = { "_GNU_SOURCE" },
    },
    ["analytics_engine"] = "lua/analytics_engine/init.lua",
    ["analytics_engine.api"] = "lua/analytics_engine/api.lua",
    ["analytics_engine.auth"] = "lua/analytics_engine/auth.lua",
    ["analytics_engine.cli"] = "lua/analytics_engine/cli.lua",
    ["analytics_engine.client"] = "lua/analytics_engine/client.lua",
    ["analytics_engine.config"] = "lua/analytics_engine/config.lua",
    ["analytics_engine.connect"] = "lua/analytics_engine/connect.lua",
    ["analytics_engine.engine.apps"] = "lua/analytics_engine/engine/apps.lua",
    ["analytics_engine.engine.auth"] = "lua/analytics_engine/engine/auth.lua",
    ["analytics_engine.engine.clusters"] = "lua/analytics_engine/engine/clusters.lua",
    ["analytics_engine.engine.faults"] = "lua/analytics_engine/engine/faults.lua",
    ["analytics_engine.engine.guard"] = "lua/analytics_engine/engine/guard.lua",
    ["analytics_engine.engine.handlers"] = "lua/analytics_engine/engine/handlers.lua",
    ["analytics_engine.engine.history"] = "lua/analytics_engine/engine/history.lua",
    ["analytics_engine.engine.jupyter"] = "lua/analytics_engine/engine/jupyter.lua",
    ["analytics_engine.engine.kernels"] = "lua/analytics_engine/engine/kernels.lua",
    ["analytics_engine.engine.launcher"] = "lua/analytics_engine/engine/launcher.lua",
    ["analytics_engine.engine.main"] = "lua/analytics_engine/engine/main.lua",
    ["analytics_engine.engine.page"] = "lua/analytics_engine/engine/page.lua",
    ["analytics_engine.engine.reply"] = "lua/analytics_engine/engine/reply.lua",
    ["analytics_engine.engine.router"] = "lua/analytics_engine/engine/router.lua",
    ["analytics_engine.engine.runner"] = "lua/analytics_engine/engine/runner.lua",
    ["analytics_engine.engine.server"] = "lua/analytics_engine/engine/server.lua",
    ["analytics_engine.engine.state"] = "lua/analytics_engine/engine/state.lua",
    ["analytics_engine.engine.usage"] = "lua/analytics_engine/engine/usage.lua",
    ["analytics_engine.errors"] = "lua/analytics_engine/errors.lua",
    ["analytics_engine.kernel"] = "lua/analytics_engine/kernel.lua",
    ["analytics_engine.logs_cli"] = "lua/analytics_engine/logs_cli.lua",
    ["analytics_engine.loop"] = "lua/analytics_engine/loop.lua",
    ["analytics_engine.report"] = "lua/analytics_engine/report/init.lua",
    ["analytics_engine.report.graphviz"] = "lua/analytics_engine/report/graphviz.lua",
    ["analytics_engine.report.html"] = "lua/analytics_engine/report/html.lua",
    ["analytics_engine.report.markdown"] = "lua/analytics_engine/report/markdown.lua",
    ["analytics_engine.report.model"] = "lua/analytics_engine/report/model.lua",
    ["analytics_engine.report.record"] = "lua/analytics_engine/report/record.lua",
    ["analytics_engine.report.svg"] = "lua/analytics_engine/report/svg.lua",
    ["analytics_engine.retry"] = "lua/analytics_engine/retry.lua",
    ["analytics_engine.transport.curl"] = "lua/analytics_engine/transport/curl.lua",
    ["analytics_engine.transport.ngx"] = "lua/analytics_engine/transport/ngx.lua",
    ["analytics_engine.util"] = "lua/analytics_engine/util.lua",
    ["analytics_engine.waiter"] = "lua/analytics_engine/waiter.lua",
    ["analytics_engine.workflow.actions"] = "lua/analytics_engine/workflow/actions.lua",
    ["analytics_engine.workflow.cli"] = "lua/analytics_engine/workflow/cli.lua",
    ["analytics_engine.workflow.dsl"] = "lua/analytics_engine/workflow/dsl.lua",
    ["analytics_engine.workflow.kernel_action"] = "lua/analytics_engine/workflow/kernel_action.lua",
    ["analytics_engine.workflow.plan"] = "lua/analytics_engine/workflow/plan.lua",
    ["analytics_engine.workflow.poller"] = "lua/analytics_engine/workflow/poller.lua",
    ["analytics_engine.workflow.render"] = "lua/analytics_engine/workflow/render.lua",
    ["analytics_engine.workflow.runner"] = "lua/analytics_engine/workflow/runner.lua",
    ["analytics_engine.workflow.schema"] = "lua/analytics_engine/workflow/schema.lua",
    ["analytics_engine.workflow.state"] = "lua/analytics_engine/workflow/state.lua",
    ["analytics_engine.workflow.submit"] = "lua/analytics_engine/workflow/submit.lua",
    ["analytics_engine.workflow.template"] = "lua/analytics_engine/workflow/template.lua",
    ["analytics_engine.ws"] = "lua/analytics_engine/ws.lua",
  },
  install = { bin = { aeflow = "bin/aeflow" } },
  copy_directories = { "workflows" },
}
test = {
  type = "busted",
}
