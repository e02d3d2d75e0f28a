/* The HTTP server's WebSocket upgrades: accept_websocket answers a request
 * with 101, libmicrohttpd hands over the socket (on_upgrade), and the
 * handle (ws_server.c) frames on it; poll() waits on MHD and every upgraded
 * socket at once. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "server.h"

void srv_ent_free(server *s, wsent *e) {
  if (e->prev) e->prev->next = e->next;
  else s->ws = e->next;
  if (e->next) e->next->prev = e->prev;
  if (e->r) e->r->ent = NULL;
  free(e);
}

/* MHD hands over the socket (inside MHD_run: no Lua here). */
static void on_upgrade(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra,
                       size_t n, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh) {
  wsent *e = cls;
  e->urh = urh;
  if (!e->w) { /* Lua closed the handle meanwhile */
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    srv_ent_free(e->s, e);
    return;
  }
  ae_ws_upgraded(e->w, sock, extra, n, urh);
  e->news = 1;
}

/* The handle is released (ws:close or its __gc). */
static void on_ws_release(lua_State *L, void *owner, ae_ws *w, void *urh) {
  wsent *e = owner;
  e->w = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
  e->ref = LUA_NOREF;
  if (e->urh) {
    MHD_upgrade_action(e->urh, MHD_UPGRADE_ACTION_CLOSE);
    srv_ent_free(e->s, e);
  } else if (!e->r) {
    srv_ent_free(e->s, e);
  } /* else: upgrading; on_upgrade or on_completed frees it */
}

/* Pump every open WebSocket; 1 if any has news for Lua. */
int srv_pump_ws(server *s) {
  wsent *e;
  int any = 0;
  for (e = s->ws; e; e = e->next) {
    if (e->w && ae_ws_pump(e->w)) e->news = 1;
    any |= e->news;
  }
  return any;
}

static int by_idle_since(const void *a, const void *b) {
  double x = ae_ws_idle_since((*(wsent *const *)a)->w),
         y = ae_ws_idle_since((*(wsent *const *)b)->w);
  return (x > y) - (x < y);
}

/* Sessions count in the guard's connection budget: when the idle HTTP
 * connections the guard closed were not enough, close the sessions idle the
 * longest (between frames) with 1001, down to the guard's low mark. Sessions
 * that ended but Lua has not released yet count as closing already. */
void srv_evict_ws(server *s) {
  ae_guard *g = &s->guard;
  size_t live = g->n - g->nshut, n = 0, i;
  wsent **v, *e;
  if (live <= g->high || !s->ws) return;
  for (e = s->ws; e; e = e->next) {
    if (!e->w || !e->urh) continue; /* released, or not upgraded yet */
    if (ae_ws_idle_since(e->w) >= 0) n++;
    else if (ae_ws_frame_deadline(e->w) == 0 && live > 0) live--;
  }
  if (live <= g->high || n == 0) return;
  v = malloc(n * sizeof *v);
  if (!v) return;
  n = 0;
  for (e = s->ws; e; e = e->next)
    if (e->w && e->urh && ae_ws_idle_since(e->w) >= 0) v[n++] = e;
  qsort(v, n, sizeof *v, by_idle_since);
  for (i = 0; i < n && live > g->low; i++, live--) {
    ae_ws_close_for(v[i]->w, 1001, "evicted", "the server is at its connection limit");
    v[i]->news = 1;
    g->evicted++;
  }
  free(v);
}

/* Wait for the daemon and the WebSockets at once: poll() on MHD's epoll
 * descriptor plus every upgraded socket, then run MHD and the sockets. */
int srv_wait_all(server *s, int32_t ms) {
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
  MHD_UNSIGNED_LONG_LONG mto;
  size_t n = 1, cap = 1;
  wsent *e;
  for (e = s->ws; e; e = e->next) cap++;
  if (cap > s->npfds) {
    struct pollfd *p = realloc(s->pfds, cap * sizeof *p);
    if (!p) return MHD_run_wait(s->d, ms > 10 ? 10 : ms) == MHD_YES;
    s->pfds = p;
    s->npfds = cap;
  }
  if (!di) return MHD_run_wait(s->d, ms > 10 ? 10 : ms) == MHD_YES; /* no epoll: short waits */
  s->pfds[0].fd = di->epoll_fd;
  s->pfds[0].events = POLLIN;
  for (e = s->ws; e; e = e->next) {
    int fd, r;
    short ev;
    double dl;
    if (!e->w) continue;
    if (e->news) ms = 0;
    dl = ae_ws_frame_deadline(e->w); /* wake for a stalled frame's deadline */
    if (dl > 0 && ae_clock_ms_until(dl) < ms) ms = ae_clock_ms_until(dl);
    r = ae_ws_waitfd(e->w, &fd, &ev);
    if (r == 0) ms = 0; /* buffered bytes to process */
    if (r != 1 || ev == 0) continue;
    s->pfds[n].fd = fd;
    s->pfds[n].events = ev;
    n++;
  }
  if (MHD_get_timeout(s->d, &mto) == MHD_YES && (MHD_UNSIGNED_LONG_LONG)ms > mto) ms = (int32_t)mto;
  poll(s->pfds, (nfds_t)n, ms);
  if (MHD_run(s->d) != MHD_YES) return 0;
  srv_pump_ws(s);
  return 1;
}

/* server:accept_websocket(id [, opts]) -> ws | nil, err: answer request id
 * with 101 Switching Protocols. opts: headers (extra response headers),
 * max_message_size, control_frames; nil, err, "version" for a version other
 * than 13 (answer 426). The handle is usable once the upgrade
 * is done (its state turns "open" in a later poll); poll's second result
 * lists handles with news. */
int srv_accept_websocket(lua_State *L) {
  server *s = srv_open(L);
  const char *err, *key, *v;
  char accept[29];
  request *r;
  struct MHD_Response *resp;
  wsent *e;
  ae_ws *w;
  if (!s) return 2;
  luaL_checkinteger(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  if (!lua_isnil(L, 3)) { /* check types first: nothing below may raise */
    lua_getfield(L, 3, "headers");
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_istable(L, -1), 3, "headers must be a table");
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
          luaL_argerror(L, 3, "header names and values must be strings");
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  err = srv_slot_lookup(s, lua_tointeger(L, 2), &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
  v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Upgrade");
  if (!key || !v || strcasecmp(v, "websocket") != 0 || strcmp(r->method, "GET") != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not a WebSocket upgrade request");
    return 2;
  }
  v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
  if (!v || strcmp(v, "13") != 0) { /* the third result: RFC 6455 4.4 wants a 426 for this */
    luaL_pushfail(L);
    lua_pushliteral(L, "unsupported Sec-WebSocket-Version (13 is required)");
    lua_pushliteral(L, "version");
    return 3;
  }
  ae_ws_accept_key(key, strlen(key), accept);
  w = ae_ws_new_server(L, lua_isnil(L, 3) ? 0 : 3); /* may raise: nothing acquired yet */
  e = calloc(1, sizeof *e);
  if (!e) return luaL_error(L, "out of memory");
  resp = MHD_create_response_for_upgrade(on_upgrade, e);
  if (!resp) {
    free(e);
    return luaL_error(L, "out of memory");
  }
  if (MHD_add_response_header(resp, "Upgrade", "websocket") != MHD_YES ||
      MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES)
    goto oom;
  if (!lua_isnil(L, 3)) {
    lua_getfield(L, 3, "headers");
    if (!lua_isnil(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (MHD_add_response_header(resp, lua_tostring(L, -2), lua_tostring(L, -1)) != MHD_YES) {
          lua_pop(L, 3);
          goto oom;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  e->s = s;
  e->w = w;
  e->r = r;
  lua_pushvalue(L, -1);
  e->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  e->next = s->ws;
  if (s->ws) s->ws->prev = e;
  s->ws = e;
  r->ent = e;
  ae_ws_set_owner(w, e, on_ws_release);
  ae_ws_set_frame_timeout(w, s->guard.request_timeout);
  ae_guard_upgraded(r->conn);
  r->resp = resp;
  r->status = 101;
  srv_settle(s, r, RQ_ANSWERED);
  return 1;
oom:
  MHD_destroy_response(resp);
  free(e);
  return luaL_error(L, "out of memory");
}
