/* analytics_engine.core WebSocket: the handle as Lua sees it, one type for
 * both ends (ws_client.c makes clients, ws_server.c server sides).
 *
 * Every operation is a non-blocking step plus an optional wait on the
 * socket, so a timeout of 0 never blocks (the Lua loop waits on ws:fd()
 * together with everything else, or on core.wait_fds) and a timeout > 0
 * blocks up to then. */
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <string.h>

#include "clock.h"
#include "ws_frame.h"

static const char *const STATE_NAMES[] = {"closed",     "connecting", "connecting", "connecting",
                                          "connecting", "open",       "ended",      "failed"};

static int is_open(ae_ws *w) {
  return w->state == WS_OPEN;
}
static int has_msg(ae_ws *w) {
  return w->head != NULL;
}
static int flushed(ae_ws *w) {
  return w->state == WS_OPEN && !wslay_event_want_write(w->ctx);
}

/* ---- results --------------------------------------------------------------------- */

static void push_err(lua_State *L, ae_ws *w) {
  lua_createtable(L, 0, 5);
  if (w->state == WS_CLOSED) {
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: closed");
    return;
  }
  if (w->state == WS_ENDED) {
    /* the peer's reason is UTF-8 it chose: keep the message on one line */
    char reason[sizeof w->close_reason];
    size_t i;
    for (i = 0; i + 1 < sizeof reason && w->close_reason[i]; i++) {
      unsigned char c = (unsigned char)w->close_reason[i];
      reason[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    reason[i] = '\0';
    ae_setstr(L, "kind", "closed");
    lua_pushfstring(L, "websocket: closed by %s with code %d%s%s",
                    w->shutdown_called ? "us" : "the peer", w->close_code, reason[0] ? ": " : "",
                    reason);
    lua_setfield(L, -2, "message");
  } else {
    ae_setstr(L, "kind", w->err_kind ? w->err_kind : "other");
    ae_setstr(L, "message", w->err_msg);
  }
  if (w->close_code) {
    ae_setint(L, "code", w->close_code);
    ae_setstr(L, "reason", w->close_reason);
  }
  if (w->err_status) ae_setint(L, "status", w->err_status);
  if (w->err_body) {
    lua_pushlstring(L, w->err_body, w->err_body_len);
    lua_setfield(L, -2, "body");
  }
}

static int fail_result(lua_State *L, ae_ws *w) {
  luaL_pushfail(L);
  push_err(L, w);
  return 2;
}

static int timeout_result(lua_State *L, const char *what) {
  luaL_pushfail(L);
  lua_createtable(L, 0, 2);
  ae_setstr(L, "kind", "timeout");
  lua_pushfstring(L, "websocket: timed out %s", what);
  lua_setfield(L, -2, "message");
  return 2;
}

static const char *opcode_name(int op) {
  switch (op) {
  case WSLAY_TEXT_FRAME: return "text";
  case WSLAY_BINARY_FRAME: return "binary";
  case WSLAY_PING: return "ping";
  case WSLAY_PONG: return "pong";
  default: return "other";
  }
}

static ae_ws *check_ws(lua_State *L) {
  return (ae_ws *)luaL_checkudata(L, 1, WS_MT);
}

static double opt_deadline(lua_State *L, int idx) {
  lua_Number t;
  if (lua_isnoneornil(L, idx)) return ae_clock_mono() + AE_LIMIT_SECONDS;
  t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "timeout must be a non-negative number");
  return ae_clock_mono() + (t > AE_LIMIT_SECONDS ? AE_LIMIT_SECONDS : t);
}

/* ws:connect([timeout]) -> true | nil, err (kind "timeout" when not yet open) */
static int w_connect(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  if (w->state == WS_OPEN) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_UPGRADING) return timeout_result(L, "waiting for the upgrade (server:poll)");
  if (w->state != WS_CONNECTING && w->state != WS_HS_SEND && w->state != WS_HS_RECV &&
      w->state != WS_UPGRADING)
    return fail_result(L, w);
  if (ws_run(w, deadline, is_open)) return lua_pushboolean(L, 1), 1;
  /* Frames that came with the 101 may already have ended the connection:
   * the connect itself succeeded, and receive() hands out what they held
   * before it reports the end (found by fuzz/fuzz_ws_client). */
  if (w->hs_done && w->state != WS_CLOSED) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_FAILED || w->state == WS_CLOSED || w->state == WS_ENDED)
    return fail_result(L, w);
  return timeout_result(L, "connecting");
}

/* ws:send(data [, {binary=, fragment_size=}]) -> true | nil, err */
static int w_send(lua_State *L) {
  ae_ws *w = check_ws(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int binary = 0, r;
  lua_Number step = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    binary = ae_optboolfield(L, 3, "binary", 0);
    step = ae_optnumfield(L, 3, "fragment_size", 0);
    luaL_argcheck(L, step >= 0, 3, "fragment_size must be a non-negative number");
  }
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) return fail_result(L, w);
  if (w->shutdown_called) {
    luaL_pushfail(L);
    lua_createtable(L, 0, 2);
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: send after shutdown");
    return 2;
  }
  r = ws_queue(w, data, len, binary, (size_t)step);
  if (r == WSLAY_ERR_NOMEM) return luaL_error(L, "websocket: out of memory");
  if (r != 0) {
    luaL_pushfail(L);
    lua_createtable(L, 0, 2);
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: cannot send now (closing)");
    return 2;
  }
  ws_step(w);
  if (w->state == WS_FAILED) return fail_result(L, w);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:ping([data]) -> true | nil, err */
static int w_ping(lua_State *L) {
  ae_ws *w = check_ws(L);
  size_t len;
  const char *data = luaL_optlstring(L, 2, "", &len);
  struct wslay_event_msg m;
  luaL_argcheck(L, len <= 125, 2, "a ping carries at most 125 bytes");
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) return fail_result(L, w);
  m.opcode = WSLAY_PING;
  m.msg = (const uint8_t *)data;
  m.msg_length = len;
  if (wslay_event_queue_msg(w->ctx, &m) != 0) return timeout_result(L, "queueing a ping");
  ws_step(w);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:flush([timeout]) -> true | nil, err: wait until everything queued is written */
static int w_flush(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_UPGRADING) return timeout_result(L, "waiting for the upgrade (server:poll)");
  if (w->state != WS_OPEN) return fail_result(L, w);
  if (ws_run(w, deadline, flushed)) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
  if (w->state != WS_OPEN) return fail_result(L, w);
  return timeout_result(L, "sending");
}

/* ws:receive([timeout]) -> data, opcode | nil, err */
static int w_receive(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  wsmsg *m;
  if (!w->head && w->state == WS_OPEN) ws_run(w, deadline, has_msg);
  m = w->head;
  if (!m) {
    if (w->state == WS_OPEN || w->state == WS_UPGRADING) return timeout_result(L, "receiving");
    return fail_result(L, w);
  }
  w->head = m->next;
  if (!w->head) w->tail = NULL;
  w->nmsg--;
  lua_pushlstring(L, m->data, m->len);
  lua_pushstring(L, opcode_name(m->opcode));
  free(m);
  return 2;
}

/* ws:shutdown([code [, reason]]) -> true | nil, err: start the close handshake */
static int w_shutdown(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t rl;
  const char *reason = luaL_optlstring(L, 3, "", &rl);
  luaL_argcheck(L,
                code == 0 || (code >= 1000 && code <= 4999 && code != 1004 && code != 1005 &&
                              code != 1006 && code != 1015),
                2, "close code must be 0 (none) or a valid code in 1000..4999");
  luaL_argcheck(L, rl <= 123, 3, "a close reason has at most 123 bytes");
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) {
    if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
    return fail_result(L, w);
  }
  if (!w->shutdown_called) {
    w->shutdown_called = 1;
    wslay_event_queue_close(w->ctx, (uint16_t)code, (const uint8_t *)reason, rl);
    ws_step(w);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ended(ae_ws *w) {
  return w->state != WS_OPEN;
}

/* ws:close([code [, reason [, timeout]]]) -> true: close handshake (if still
 * open, up to timeout, default 1 s), then release. Safe to call again. */
static int w_close(lua_State *L) {
  ae_ws *w = check_ws(L);
  if (w->state == WS_OPEN) {
    double deadline;
    lua_settop(L, 4);
    deadline = lua_isnil(L, 4) ? ae_clock_mono() + 1.0 : opt_deadline(L, 4);
    lua_pop(L, 1);
    w_shutdown(L);
    ws_run(w, deadline, ended);
  }
  ws_release(L, w);
  lua_pushboolean(L, 1);
  return 1;
}

static int w_gc(lua_State *L) {
  ws_release(L, check_ws(L));
  return 0;
}

/* ws:fd() -> fd, "r"|"w"|"rw" | nil: what the handle waits for now (nil:
 * nothing to wait on; step again soon) */
static int w_fd(lua_State *L) {
  ae_ws *w = check_ws(L);
  int fd;
  short ev;
  if (ae_ws_waitfd(w, &fd, &ev) != 1) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, fd);
  lua_pushstring(L, (ev & POLLIN) && (ev & POLLOUT) ? "rw" : (ev & POLLOUT) ? "w" : "r");
  return 2;
}

static int w_state(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_pushstring(L, STATE_NAMES[w->state]);
  return 1;
}

/* ws:close_info() -> code received (or nil), reason, code sent (or nil) */
static int w_close_info(lua_State *L) {
  ae_ws *w = check_ws(L);
  uint16_t sent = w->ctx ? wslay_event_get_status_code_sent(w->ctx) : 0;
  if (w->close_code) lua_pushinteger(L, w->close_code);
  else lua_pushnil(L);
  lua_pushstring(L, w->close_reason);
  if (sent) lua_pushinteger(L, sent);
  else lua_pushnil(L);
  return 3;
}

static int w_tostring(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_pushfstring(L, WS_MT " (%s, %s)", w->is_server ? "server" : "client", STATE_NAMES[w->state]);
  return 1;
}

/* ---- constructors ---------------------------------------------------------------- */

ae_ws *ws_new_handle(lua_State *L, uint64_t max_msg, int control) {
  ae_ws *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w); /* closed until its resources exist */
  w->fd = -1;
  ae_buf_init(&w->in, AE_BUF_NOLIMIT);
  ae_buf_init(&w->out, AE_BUF_NOLIMIT);
  w->max_msg = max_msg;
  w->control = control;
  luaL_getmetatable(L, WS_MT);
  lua_setmetatable(L, -2);
  return w;
}

uint64_t ws_opt_max_msg(lua_State *L, int idx) {
  lua_Number m = ae_optnumfield(L, idx, "max_message_size", DEFAULT_MAX_MESSAGE);
  if (!(m >= 1 && m <= 2147483647.0))
    luaL_error(L, "field 'max_message_size' must be a number in 1..2147483647");
  return (uint64_t)m;
}

/* Fill p from item at idx (an fd, or a WebSocket); returns 1 if p is set,
 * 0 if the item waits on nothing nameable (the caller caps its wait). */
int ae_waitfd_item(lua_State *L, int idx, struct pollfd *p) {
  ae_ws *w;
  int fd;
  short ev;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    p->fd = (int)lua_tointeger(L, idx);
    p->events = POLLIN;
    p->revents = 0;
    return 1;
  }
  if (!ae_ws_is_ws(L, idx, &w))
    luaL_error(L, "wait list entries must be file descriptors or WebSockets");
  if (ae_ws_waitfd(w, &fd, &ev) != 1 || ev == 0) return 0;
  p->fd = fd;
  p->events = ev;
  p->revents = 0;
  return 1;
}

#define SHORT_WAIT_MS 10 /* for waits with no socket to name yet (connecting) */

/* core.wait_fds(list, timeout) -> number of ready entries: sleep until one of
 * the fds/WebSockets in list is ready or the timeout passes. */
static int l_wait_fds(lua_State *L) {
  struct pollfd local[16], *p = local;
  int n, i, k = 0, shortw = 0, r;
  lua_Number t;
  luaL_checktype(L, 1, LUA_TTABLE);
  t = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, t >= 0, 2, "timeout must be a non-negative number");
  n = (int)lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) { /* check first: nothing below raises */
    ae_ws *w;
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) != LUA_TNUMBER && !ae_ws_is_ws(L, -1, &w))
      luaL_error(L, "wait list entries must be file descriptors or WebSockets");
    lua_pop(L, 1);
  }
  if (n > 16) p = lua_newuserdatauv(L, sizeof *p * (size_t)n, 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (ae_waitfd_item(L, -1, &p[k])) k++;
    else shortw = 1;
    lua_pop(L, 1);
  }
  {
    double ms = t > AE_LIMIT_SECONDS ? AE_LIMIT_SECONDS * 1000 : t * 1000;
    int msi = ms > INT_MAX ? INT_MAX : (int)ceil(ms);
    if (shortw && msi > SHORT_WAIT_MS) msi = SHORT_WAIT_MS;
    r = poll(p, (nfds_t)k, msi);
  }
  lua_pushinteger(L, r < 0 ? 0 : r + shortw);
  return 1;
}

void ae_open_websocket(lua_State *L) {
  static const luaL_Reg methods[] = {{"connect", w_connect},
                                     {"send", w_send},
                                     {"receive", w_receive},
                                     {"ping", w_ping},
                                     {"flush", w_flush},
                                     {"shutdown", w_shutdown},
                                     {"close", w_close},
                                     {"fd", w_fd},
                                     {"state", w_state},
                                     {"close_info", w_close_info},
                                     {NULL, NULL}};
  ae_newclass(L, WS_MT, methods, w_gc, w_tostring);
  lua_pushcfunction(L, ws_l_connect);
  lua_setfield(L, -2, "ws_connect");
  lua_pushcfunction(L, l_wait_fds);
  lua_setfield(L, -2, "wait_fds");
}
