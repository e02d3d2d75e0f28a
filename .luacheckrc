-- luacheck configuration: the library is plain Lua 5.4 with no globals.
std = "lua54"
max_line_length = 120
codes = true

files["spec/"] = { std = "+busted" }
files["bin/aeflow"] = { std = "lua54" }
-- Workflow files are loaded into the DSL's environment.
files["workflows/"] = { read_globals = { "workflow", "step", "finally", "ae", "client", "params" } }
files["spec/fixtures/"] = { read_globals = { "workflow", "step", "finally", "ae" } }
exclude_files = { "build/", ".aeflow/", "spec/fixtures/workflows/syntax_error.lua" }
