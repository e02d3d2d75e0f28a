rockspec_format = "3.0"
package = "analytics-engine"
version = "scm-1"
source = {
  url = "git+https://example.invalid/analytics-engine-lua.git",
}
description = {
  summary = "Client, pipeline DSL and local engine for the Analytics Engine powered by Apache Spark (CPD v4 API)",
  detailed = [[
A Lua module with a C core (libcurl, libmicrohttpd, SQLite, wslay) that drives
the Analytics Engine powered by Apache Spark on Cloud Pak for Data through its
REST API v4, plus `aeflow`, a pipeline runner, and a local engine serving the
same API.

What gets installed depends on the Lua the rock is built for:
- Lua 5.4 (`luarocks --lua-version=5.4`): everything. The client, the C core,
  the workflow DSL and runner, the local engine, reports, `aeflow` (its
  launcher finds its own tree: no `luarocks path` needed), the man page and
  the bash/zsh completion (in the rock's directory: `luarocks show --rock-dir`).
- Lua 5.1 / LuaJIT (`luarocks --lua-version=5.1`, as OpenResty's luarocks):
  the client only (`analytics_engine`, its transports, auth, retry, kernels)
  and the C core built against that Lua's headers (for LuaJIT pass
  `LUA_INCDIR=/usr/include/luajit-2.1`). The runner, the DSL, the engine and
  reports use Lua 5.3+ operators and are not installed there.
Lua 5.2 and 5.3 get the same client-only install (untested).
]],
  license = "Apache-2.0",
  labels = { "spark", "cloud-pak-for-data", "http", "workflow", "openresty" },
}
supported_platforms = { "linux" }
dependencies = {
  -- The client and the core: 5.1 (LuaJIT) to 5.4; everything else: 5.4.
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
  -- The Makefile's rock-build / rock-install (mk/rock.mk) decide by the Lua
  -- version what to build and install; they need no list of modules or C files.
  type = "make",
  build_target = "rock-build",
  build_variables = {
    CFLAGS = "$(CFLAGS)", LIBFLAG = "$(LIBFLAG)", LUA = "$(LUA)", LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_target = "rock-install",
  install_variables = {
    PREFIX = "$(PREFIX)", LUADIR = "$(LUADIR)", LIBDIR = "$(LIBDIR)", BINDIR = "$(BINDIR)", LUA = "$(LUA)",
  },
  -- The example workflows, the man page (docs/aeflow.1, the rest of docs/)
  -- and the completions (contrib/aeflow.bash, contrib/_aeflow).
  copy_directories = { "workflows", "docs", "contrib" },
}
test = {
  type = "busted",
}
