--- Answers the engine lets its server give again without entering Lua (the
-- policy; csrc/server_cache.c is the mechanism). Status polls make most of an
-- engine's load and most records do not change between two polls, so the
-- 200 of a get_application_state is handed to the server keyed by the
-- request's exact path and Authorization value; a later GET with both the
-- same (one Authorization header, no query, no body) is answered from it in
-- C. Lua made the decision for that exact header value and path once (the
-- same authentication and role check as every request), and takes it back:
--   * the record changes (the store tells: put, touch, revert): its answers go;
--   * a bearer token expires: the answer kept for it carries the expiry;
--   * anything else the answers rest on (a bare store:touch(), the users or
--     their roles: fixed for an engine's life today) clears them all.
-- Only while the engine logs no requests (--quiet: the log line is written
-- per request, in Lua) and injects no faults (decided per request). The
-- replays are counted by operation name into /engine/v1/stats.
local _M = {}

-- Most answers the server keeps (--answer-cache); it is emptied whole when full.
_M.SIZE = 16384

-- Operations whose 200 the server may replay -> the path parameter naming
-- the one record the answer shows (nothing else but the caller's role).
_M.CACHEABLE = { get_application_state = "application_id" }

--- The http_server option for an engine with options `opts` (and its
-- fault injector) -> number of answers (0: off). Not over TLS either: the
-- server cannot see a TLS client's end-of-file ahead (csrc/server_cache.c).
function _M.size(opts, faults)
  if not opts.quiet or faults or opts.tls then return 0 end
  return opts.answer_cache or _M.SIZE
end

--- Start keeping answers on `server` for `eng` (its store reports changes).
function _M.attach(eng, server)
  eng.answers = { server = server, paths = {} }
  eng.store.on_change = function(kind, rec) _M.changed(eng, kind, rec) end
end

--- After a request was answered: keep its answer when the policy allows.
-- req: the request; op: its operation; params: its path parameters; exp:
-- when the caller's credential expires (nil: never); status, headers, body:
-- exactly what the server sent.
function _M.keep(eng, req, op, params, exp, status, headers, body)
  local a = eng.answers
  local param = _M.CACHEABLE[op.name]
  if not a or not param or status ~= 200 or req.method ~= "GET" or op.cookie then return end
  local q, auth = req.query, req.headers.authorization
  if (q ~= nil and q ~= "") or (req.body or "") ~= "" or req.too_large or type(auth) ~= "string" or auth == "" then
    return
  end
  local id = params[param]
  if type(id) ~= "string" then return end
  local ok, emptied = a.server:answer_put(req.path, auth, status, headers, body, exp, op.name)
  if not ok then return end
  if emptied then a.paths = {} end
  local have = a.paths[id]
  if have == nil then
    a.paths[id] = req.path
  elseif type(have) == "string" then
    if have ~= req.path then a.paths[id] = { [have] = true, [req.path] = true } end
  else
    have[req.path] = true
  end
end

--- The store changed (kind, rec); kind nil: anything may have changed.
function _M.changed(eng, kind, rec)
  local a = eng.answers
  if not a then return end
  if kind == nil then return _M.clear(eng) end
  if not rec then return end -- the settings: no kept answer shows them
  local have = a.paths[rec.id]
  if have == nil then return end
  a.paths[rec.id] = nil
  if type(have) == "string" then
    a.server:answer_drop(have)
  else
    for p in pairs(have) do a.server:answer_drop(p) end
  end
end

--- Drop every kept answer.
function _M.clear(eng)
  local a = eng.answers
  if not a then return end
  a.server:answer_clear()
  a.paths = {}
end

--- Add the server's replays to `requests` (counts by operation name) -> requests, replays
function _M.count(eng, requests)
  local a = eng.answers
  if not a then return requests, {} end
  local st = a.server:answer_stats()
  if not st then return requests, {} end
  for name, n in pairs(st.served) do requests[name] = (requests[name] or 0) + n end
  return requests, st.served
end

return _M
