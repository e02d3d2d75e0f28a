local api = require("analytics_engine.api")
local client = require("analytics_engine.client")

describe("the operations table", function()
  it("has a client method for every operation", function()
    for _, op in ipairs(api.operations) do
      assert.is_function(client[op.name], op.name)
    end
  end)
  it("names every operation of DESIGN.md's public API", function()
    local names = {
      "get_instance", "get_instance_default_runtime", "replace_instance_default_runtime",
      "get_instance_default_configs", "replace_instance_default_configs", "update_instance_default_configs",
      "get_resource_consumption_limits", "replace_resource_consumption_limits",
      "delete_resource_consumption_limits", "get_current_resource_consumption", "start_spark_history_server",
      "get_spark_history_server", "stop_spark_history_server", "create_application", "list_applications",
      "get_application", "get_application_state", "delete_application", "list_kernelspecs", "list_kernels",
      "create_kernel", "get_kernel", "delete_kernel", "interrupt_kernel", "restart_kernel", "create_cluster",
      "list_clusters", "get_cluster", "delete_cluster",
    }
    for _, n in ipairs(names) do assert.is_table(api.by_name[n], n) end
    assert.equals(#names, #api.operations)
  end)
  it("sends merge-patch for update_instance_default_configs", function()
    assert.equals("merge-patch", api.by_name.update_instance_default_configs.body)
  end)
  it("marks the requests that create something", function()
    assert.is_true(api.by_name.create_application.creates)
    assert.is_false(api.by_name.get_application.creates)
  end)
  it("lists the ids of each path in order", function()
    assert.same({ "application_id" }, api.by_name.get_application_state.ids)
    assert.same({}, api.by_name.list_applications.ids)
  end)
  it("expands a path template", function()
    assert.equals("/v4/analytics_engines/i/spark_clusters/c",
      api.expand(api.by_name.get_cluster, { instance_id = "i", cluster_id = "c" }))
  end)
  -- The engine's use of the same set is in engine_unit_spec: the engine is Lua 5.4 only, and this
  -- spec also runs on LuaJIT.
  it("holds the terminal states once, for the client and the reports", function()
    assert.equals(api.TERMINAL_STATES, client.TERMINAL_STATES)
    assert.is_true(api.is_terminal("finished"))
    assert.is_true(api.is_terminal("KILLED"))
    assert.is_false(api.is_terminal("RUNNING"))
    assert.is_false(api.is_terminal(nil))
  end)
  it("gives the kernel operations and sessions their path at a Jupyter Server", function()
    assert.equals("/base/api/kernels/k/channels",
      api.expand_jupyter(api.websocket.connect_kernel, { kernel_id = "k" }, "/base/"))
    assert.equals("/api/kernelspecs", api.expand_jupyter(api.by_name.list_kernelspecs, {}, "/"))
    assert.is_nil(api.expand_jupyter(api.by_name.list_applications, {}, "/"))
    assert.is_nil(api.websocket.connect_cluster.jupyter_path)
  end)
end)
