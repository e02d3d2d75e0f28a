--- The `kernel` step action:
--   step "explore" { kernel = { name = "python3", engine = { conf = {…} }, cells = { "x = 1", "print(x)" } } }
-- starts a kernel, executes the cells in order over its channels WebSocket,
-- and always deletes the kernel at the end: after success, a failing cell,
-- a Lua error, the step's timeout or the run's cancel. The step's output:
--   { kernel_id, kernel_name, cells = { { execution_count, result, stdout, stderr, outputs }, … },
--     stdout (all cells), result (the last cell's text/plain value) }
-- It takes the run's context (see workflow/submit.lua): client and emit.
local _M = {}

-- Delete the kernel. A cancelled task (the step's timeout, the run's
-- cancel) gets CANCELLED from every wait, so then the request is made
-- outside the loop, in a coroutine of its own: it blocks the loop for
-- that one short DELETE.
local function delete(ctx, kernel_id, step_name)
  local c = ctx.client
  local ok, err = c:delete_kernel(kernel_id)
  if not ok and err.code == "cancelled" then
    ok, err = coroutine.wrap(function() return c:delete_kernel(kernel_id) end)()
  end
  if not ok and err.status ~= 404 then
    ctx.emit { event = "log", step = step_name,
               message = ("could not delete kernel %s: %s"):format(kernel_id, tostring(err)) }
  end
end

local function run_cells(session, cells, out)
  local stdout = {}
  for i, code in ipairs(cells) do
    local r, err = session:execute(code)
    if not r then
      if err.ename then
        return nil, ("cell %d raised %s"):format(i, tostring(err.message)), true
      end
      return nil, ("cell %d: %s"):format(i, tostring(err)), err.code == "kernel_error"
    end
    out.cells[i] = { execution_count = r.execution_count, result = r.result, stdout = r.stdout,
                     stderr = r.stderr, outputs = r.outputs }
    stdout[#stdout + 1] = r.stdout
    out.result = r.result
  end
  out.stdout = table.concat(stdout)
  return true
end

--- run(ctx, step, args) -> true, outputs | false, message, final
function _M.run(ctx, step, args)
  local c = ctx.client
  local body = { name = args.name, engine = args.engine }
  local k, err = c:create_kernel(body)
  if not k then return false, "cannot start a kernel: " .. tostring(err), err.status ~= nil and not err.retryable end
  local id = k.id
  ctx.emit { event = "log", step = step.name, message = ("kernel %s (%s) started"):format(id, tostring(k.name)) }
  local out = { kernel_id = id, kernel_name = k.name, cells = {} }
  local ok, res, msg, final = pcall(function()
    local session, cerr = c:connect_kernel(id)
    if not session then return nil, "cannot connect to kernel " .. id .. ": " .. tostring(cerr) end
    local r, m, f = run_cells(session, args.cells, out)
    session:close()
    return r, m, f
  end)
  delete(ctx, id, step.name)
  if not ok then return false, "the kernel step raised an error: " .. tostring(res), true end
  if not res then return false, msg, final end
  return true, out
end

return _M
