--- The built-in step actions, as data: which operation each one calls and
-- what argument it takes. The DSL validates against this table, `aeflow plan`
-- describes requests from it, and the runner executes it.
--
-- arg kinds:
--   body      a table sent as the operation's body (strings templated)
--   none      `{}` or `true`: the operation takes nothing
--   id        a string (usually "${outputs.step.application_id}")
--   ids       a string or an array of strings (application ids to await)
--   call      { operation = "name", ids = { ... }, body = { ... } } — any operation
--   func      a Lua function(ctx) for logic no built-in covers
local _M = {}

_M.list = {
  set_runtime = { operation = "replace_instance_default_runtime", arg = "body",
                  doc = "replace the instance's default runtime" },
  set_configs = { operation = "replace_instance_default_configs", arg = "body",
                  doc = "replace the instance's default Spark configs" },
  update_configs = { operation = "update_instance_default_configs", arg = "body",
                     doc = "merge-patch the default Spark configs (ae.null unsets)" },
  set_limits = { operation = "replace_resource_consumption_limits", arg = "body",
                 doc = "replace the resource consumption limits" },
  delete_limits = { operation = "delete_resource_consumption_limits", arg = "none",
                    doc = "delete the resource consumption limits" },
  start_history_server = { operation = "start_spark_history_server", arg = "body",
                           doc = "start the Spark history server (already started counts as done)" },
  stop_history_server = { operation = "stop_spark_history_server", arg = "none",
                          doc = "stop the Spark history server (already stopped counts as done)" },
  submit = { operation = "create_application", arg = "body", submits = true,
             doc = "submit a Spark application and, unless wait = false, await it" },
  await = { operation = "list_applications", arg = "ids",
            doc = "await applications by id until they are terminal" },
  stop_application = { operation = "delete_application", arg = "id",
                       doc = "stop (delete) an application" },
  create_cluster = { operation = "create_cluster", arg = "body", doc = "create a Spark cluster" },
  delete_cluster = { operation = "delete_cluster", arg = "id", doc = "delete a Spark cluster" },
  create_kernel = { operation = "create_kernel", arg = "body", doc = "start a kernel" },
  delete_kernel = { operation = "delete_kernel", arg = "id", doc = "delete a kernel" },
  kernel = { operation = "create_kernel", arg = "body",
             doc = "start a kernel, execute its cells in order (their outputs are the step's), always delete it" },
  call = { arg = "call", doc = "call any operation: { operation = name, ids = {...}, body = {...} }" },
  run = { arg = "func", doc = "a Lua function(ctx) for what no built-in covers" },
}

--- Action names in a stable order (for messages).
function _M.names()
  local t = {}
  for k in pairs(_M.list) do t[#t + 1] = k end
  table.sort(t)
  return t
end

return _M
