/* analytics_engine.core http_session: an HTTP client on a libcurl multi handle.
 *
 * One CURLM per session (it owns the connection cache, so keep-alive works
 * across transfers), a small pool of idle easy handles, and transfers that
 * live entirely in C: nothing calls back into Lua, so no lua_error can cross a
 * libcurl frame. Every Lua-side check of a request happens before any C
 * resource is acquired; finished transfers wait in a FIFO until request() or
 * poll() turns them into Lua tables. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"
#include "ws.h"

static void list_remove(xfer **head, xfer **last, xfer *x) {
  xfer *prev = NULL, *it;
  for (it = *head; it != NULL; prev = it, it = it->next) {
    if (it != x) continue;
    if (prev) prev->next = x->next;
    else *head = x->next;
    if (last && *last == x) *last = prev;
    x->next = NULL;
    return;
  }
}

static xfer *list_find(xfer *head, lua_Integer id) {
  for (; head != NULL; head = head->next)
    if (head->id == id) return head;
  return NULL;
}

static void xfer_free(xfer *x) {
  ae_buf_free(&x->body);
  ae_buf_free(&x->head);
  free(x->url);
  free(x->upload);
  free(x);
}

static void ehandle_free(ehandle *h) {
  if (h == NULL) return;
  curl_easy_cleanup(h->e);
  http_ehandle_untune(h);
  free(h);
}

static ehandle *pool_get(session *s) {
  ehandle *h;
  if (s->nidle > 0) return s->idle[--s->nidle];
  h = (ehandle *)calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->e = curl_easy_init();
  if (h->e == NULL) {
    free(h);
    return NULL;
  }
  return h;
}

/* An idle handle keeps its options (and through them, nothing of a finished
 * transfer but pointers it will not use before they are set again); the
 * error buffer is cleared so nothing can write into freed memory. The
 * connections themselves stay in the multi handle's cache. */
static void pool_put(session *s, ehandle *h) {
  if (s->nidle < s->max_idle) {
    curl_easy_setopt(h->e, CURLOPT_ERRORBUFFER, NULL);
    s->idle[s->nidle++] = h;
  } else {
    ehandle_free(h);
  }
}

/* Take an in-flight transfer out of the multi handle and give back its easy. */
static void xfer_detach(session *s, xfer *x) {
  list_remove(&s->active, NULL, x);
  if (x->easy) {
    curl_multi_remove_handle(s->multi, x->easy->e);
    pool_put(s, x->easy);
    x->easy = NULL;
  }
}

static void xfer_finish(session *s, xfer *x, CURLcode rc) {
  char *url = NULL;
  CURL *e = x->easy->e;
  x->result = rc;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->status);
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &x->version);
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &x->total_time);
  if (curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url)
    x->url = strdup(url); /* NULL on OOM: reported as "" */
  if (rc != CURLE_OK) {
    /* libcurl 7.88 can keep pointers into a failed transfer's freed state
     * and read them when the handle is used again (found by
     * fuzz/fuzz_http_response): a handle that failed is never reused. */
    list_remove(&s->active, NULL, x);
    curl_multi_remove_handle(s->multi, x->easy->e);
    ehandle_free(x->easy);
    x->easy = NULL;
  } else {
    xfer_detach(s, x);
  }
  x->done = 1;
  if (s->done_last) s->done_last->next = x;
  else s->done = x;
  s->done_last = x;
}

/* Move every completed transfer from the multi handle to the done list. */
static void collect(session *s) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* m dies with remove_handle */
    char *priv = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    if (priv) xfer_finish(s, (xfer *)priv, rc);
  }
}

static void session_close(session *s) {
  int i;
  while (s->active) {
    xfer *x = s->active;
    s->active = x->next;
    if (x->easy) {
      if (s->multi) curl_multi_remove_handle(s->multi, x->easy->e);
      ehandle_free(x->easy);
    }
    xfer_free(x);
  }
  while (s->done) {
    xfer *x = s->done;
    s->done = x->next;
    xfer_free(x);
  }
  s->done_last = NULL;
  for (i = 0; i < s->nidle; i++) ehandle_free(s->idle[i]);
  free(s->idle);
  s->idle = NULL;
  s->nidle = s->max_idle = 0;
  http_xopts_free(&s->defaults);
  if (s->multi) {
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
  }
}

/* Turn a finished transfer into request()'s return values and free it. A Lua
 * memory error while building leaves it owned by the session. */
static int deliver(lua_State *L, session *s, xfer *x) {
  int n = 1;
  if (x->result != CURLE_OK) {
    luaL_pushfail(L);
    n = 2;
  }
  http_push_outcome(L, x);
  list_remove(&s->done, &s->done_last, x);
  xfer_free(x);
  return n;
}

/* Start a transfer, or push nil, err and return NULL. */
static xfer *xfer_start(lua_State *L, session *s, const reqopts *o) {
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  const char *why = NULL;
  CURLMcode mc;
  xfer *x = (xfer *)calloc(1, sizeof *x);
  if (x != NULL) x->easy = pool_get(s);
  if (x == NULL || x->easy == NULL) goto fail;
  x->max_size = o->x.max_size;
  ae_buf_init(&x->body, x->max_size > 0 ? (size_t)x->max_size : AE_BUF_NOLIMIT);
  ae_buf_init(&x->head, MAX_HEADER_BYTES);
  rc = http_xfer_setopts(x, o);
  if (rc != CURLE_OK) goto fail;
  mc = curl_multi_add_handle(s->multi, x->easy->e);
  if (mc != CURLM_OK) {
    rc = CURLE_FAILED_INIT;
    why = curl_multi_strerror(mc);
    goto fail;
  }
  x->id = ++s->next_id;
  x->next = s->active;
  s->active = x;
  return x;
fail:
  if (x != NULL) {
    if (x->easy) {
      http_ehandle_untune(x->easy); /* in an unknown state: reset at its next use */
      pool_put(s, x->easy);
    }
    xfer_free(x);
  }
  luaL_pushfail(L);
  http_push_error(L, "other", why ? why : curl_easy_strerror(rc), (lua_Integer)rc);
  return NULL;
}

/* ---- driving the multi handle -------------------------------------------- */

/* Perform, collect, and wait for activity until the deadline, a completion
 * (when `until` is NULL) or the completion of `until`. */
static CURLMcode drive(session *s, double deadline, xfer *until, struct curl_waitfd *extra,
                       unsigned nextra, int short_wait) {
  for (;;) {
    int running;
    double left;
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK) return mc;
    collect(s);
    if (until ? until->done : (s->done != NULL)) return CURLM_OK;
    if (s->active == NULL && nextra == 0 && !short_wait) return CURLM_OK;
    left = deadline - ae_clock_mono();
    if (left <= 0) return CURLM_OK;
    left = left * 1000 + 1;
    if (short_wait && left > 10) left = 10; /* a WebSocket with no socket to name yet */
    mc = curl_multi_poll(s->multi, extra, nextra, left > INT_MAX ? INT_MAX : (int)left, NULL);
    if (mc != CURLM_OK) return mc;
    if (short_wait) {
      mc = curl_multi_perform(s->multi, &running);
      if (mc == CURLM_OK) collect(s);
      return mc;
    }
    if (nextra > 0) { /* an extra descriptor is ready: back to the caller */
      unsigned i;
      for (i = 0; i < nextra; i++) {
        if (!extra[i].revents) continue;
        mc = curl_multi_perform(s->multi, &running);
        if (mc == CURLM_OK) collect(s);
        return mc;
      }
    }
  }
}

/* ---- methods -------------------------------------------------------------- */

static session *check_session(lua_State *L) {
  return (session *)luaL_checkudata(L, 1, SESSION_MT);
}

static int s_start(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  char hbuf[HEADER_BUF];
  xfer *x;
  if (s->multi == NULL) return http_push_closed(L);
  http_read_request(L, s, 2, &o, hbuf);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  lua_pushinteger(L, x->id);
  return 1;
}

static int s_request(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  char hbuf[HEADER_BUF];
  xfer *x;
  CURLMcode mc;
  if (s->multi == NULL) return http_push_closed(L);
  http_read_request(L, s, 2, &o, hbuf);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  x->url_idx = o.url_idx;
  do {
    mc = drive(s, ae_clock_mono() + 3600, x, NULL, 0, 0);
  } while (mc == CURLM_OK && !x->done);
  if (mc != CURLM_OK) {
    xfer_detach(s, x);
    xfer_free(x);
    return http_push_multi_error(L, mc);
  }
  return deliver(L, s, x);
}

static int s_poll(lua_State *L) {
  session *s = check_session(L);
  lua_Number t = luaL_optnumber(L, 2, 0);
  CURLMcode mc;
  int n = 0;
  struct curl_waitfd local[16], *extra = local;
  unsigned nextra = 0;
  int short_wait = 0;
  luaL_argcheck(L, t >= 0, 2, "timeout must be a non-negative number");
  if (!lua_isnoneornil(L, 3)) { /* extra fds / WebSockets to wait on as well */
    int i, n;
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (int)lua_rawlen(L, 3);
    if (n > 16) extra = lua_newuserdatauv(L, sizeof *extra * (size_t)n, 0);
    for (i = 1; i <= n; i++) {
      struct pollfd p;
      lua_rawgeti(L, 3, i);
      if (ae_waitfd_item(L, -1, &p)) { /* raises on a wrong entry: nothing held yet */
        extra[nextra].fd = p.fd;
        extra[nextra].events = (short)((p.events & POLLIN ? CURL_WAIT_POLLIN : 0) |
                                       (p.events & POLLOUT ? CURL_WAIT_POLLOUT : 0));
        extra[nextra].revents = 0;
        nextra++;
      } else {
        short_wait = 1;
      }
      lua_pop(L, 1);
    }
  }
  if (s->multi == NULL) return http_push_closed(L);
  mc = drive(s, ae_clock_mono() + (t > AE_LIMIT_SECONDS ? AE_LIMIT_SECONDS : t), NULL, extra,
             nextra, short_wait);
  if (mc != CURLM_OK) return http_push_multi_error(L, mc);
  lua_newtable(L);
  while (s->done != NULL) {
    xfer *x = s->done;
    int ok;
    lua_createtable(L, 0, 2);
    ae_setint(L, "id", x->id);
    ok = http_push_outcome(L, x);
    lua_setfield(L, -2, ok ? "res" : "err");
    lua_rawseti(L, -2, ++n);
    list_remove(&s->done, &s->done_last, x);
    xfer_free(x);
  }
  return 1;
}

/* Transfers not yet returned: in flight plus finished-but-not-polled. */
static int s_pending(lua_State *L) {
  session *s = check_session(L);
  lua_Integer n = 0;
  xfer *x;
  if (s->multi == NULL) return http_push_closed(L);
  for (x = s->active; x; x = x->next) n++;
  for (x = s->done; x; x = x->next) n++;
  lua_pushinteger(L, n);
  return 1;
}

static int s_cancel(lua_State *L) {
  session *s = check_session(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  xfer *x;
  if (s->multi == NULL) return http_push_closed(L);
  if ((x = list_find(s->active, id)) != NULL) {
    xfer_detach(s, x);
    xfer_free(x);
  } else if ((x = list_find(s->done, id)) != NULL) {
    list_remove(&s->done, &s->done_last, x);
    xfer_free(x);
  }
  lua_pushboolean(L, x != NULL);
  return 1;
}

static int s_close(lua_State *L) {
  session_close(check_session(L));
  lua_pushboolean(L, 1);
  return 1;
}

static int s_gc(lua_State *L) {
  session_close(check_session(L));
  return 0;
}

static int s_tostring(lua_State *L) {
  session *s = check_session(L);
  if (s->multi == NULL) lua_pushliteral(L, SESSION_MT " (closed)");
  else lua_pushfstring(L, SESSION_MT " (%p)", (void *)s);
  return 1;
}

/* core.http_session(opts?): opts.max_idle, opts.defaults (request options
 * every request of the session gets unless it sets its own). */
/* Easy handles are pooled only on a libcurl that unfolds headers before
 * keeping them (8.18.0): older ones keep a pointer to a freed header across
 * transfers on one handle and read it when the next answer starts with a
 * folded line (a heap use-after-free that fuzz/fuzz_http_response found on
 * Debian 12's 7.88.1). Connections are kept alive by the multi handle either
 * way; only curl_easy_init per request is lost. */
static int default_max_idle(void) {
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  return (v && v->version_num >= 0x081200) ? DEFAULT_MAX_IDLE : 0;
}

static int l_http_session(lua_State *L) {
  lua_Number max_idle = default_max_idle();
  xopts d;
  session *s;
  http_xopts_init(&d);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    max_idle = ae_optnumfield(L, 1, "max_idle", max_idle);
    if (!(max_idle >= 0 && max_idle <= LIMIT_MAX_IDLE) || max_idle != (lua_Number)(int)max_idle)
      luaL_error(L, "field 'max_idle' must be an integer between 0 and %d", LIMIT_MAX_IDLE);
    lua_getfield(L, 1, "defaults");
    if (!lua_isnil(L, -1)) http_read_defaults(L, lua_gettop(L), &d);
  }
  s = (session *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s); /* closed until the multi handle exists */
  luaL_getmetatable(L, SESSION_MT);
  lua_setmetatable(L, -2);
  if (http_xopts_copy(&s->defaults, &d) != 0) goto fail;
  if (max_idle > 0) {
    s->idle = (ehandle **)calloc((size_t)max_idle, sizeof *s->idle);
    if (s->idle == NULL) goto fail;
    s->max_idle = (int)max_idle;
  }
  s->multi = curl_multi_init();
  if (s->multi == NULL) goto fail;
  return 1;
fail:
  session_close(s);
  luaL_pushfail(L);
  lua_pushliteral(L, "cannot create an HTTP session (out of memory)");
  return 2;
}

static const luaL_Reg session_methods[] = {
    {"request", s_request}, {"start", s_start}, {"poll", s_poll}, {"pending", s_pending},
    {"cancel", s_cancel},   {"close", s_close}, {NULL, NULL},
};

void ae_open_http(lua_State *L) {
  static int curl_ready = 0;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "curl_global_init failed");
    curl_ready = 1;
  }
  ae_newclass(L, SESSION_MT, session_methods, s_gc, s_tostring);
  if (luaL_newmetatable(L, HEADERS_MT)) {
    lua_pushliteral(L, "analytics_engine.HttpHeaders");
    lua_setfield(L, -2, "__metatable"); /* no getmetatable games with a checked value */
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, http_l_headers);
  lua_setfield(L, -2, "http_headers");
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    lua_pushcfunction(L, http_res_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_session);
  lua_setfield(L, -2, "http_session");
}
