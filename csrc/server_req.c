/* The HTTP server's requests as Lua sees them. poll() hands each complete
 * request to Lua with an id (a slot in a table, and a generation, so a stale
 * or repeated id is refused, never confused with a newer request);
 * respond() and drop() answer by id, in any order, at any later time. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"
#include "server.h"

/* ------------------------------------------------------------------- slots */

/* Make sure a free slot exists; returns its index or NO_SLOT (no memory). */
static uint32_t slot_peek(server *s) {
  if (s->free_head == NO_SLOT) {
    uint32_t n = s->nslots ? s->nslots * 2 : 64, i;
    request **nr;
    uint32_t *ng, *nn;
    unsigned char *ngone;
    if (n > SLOT_MASK + 1u) n = SLOT_MASK + 1u;
    if (n <= s->nslots) return NO_SLOT;
    nr = realloc(s->slot_req, n * sizeof *nr);
    if (!nr) return NO_SLOT;
    s->slot_req = nr;
    ng = realloc(s->slot_gen, n * sizeof *ng);
    if (!ng) return NO_SLOT;
    s->slot_gen = ng;
    nn = realloc(s->slot_next, n * sizeof *nn);
    if (!nn) return NO_SLOT;
    s->slot_next = nn;
    ngone = realloc(s->slot_gone, n);
    if (!ngone) return NO_SLOT;
    s->slot_gone = ngone;
    for (i = s->nslots; i < n; i++) {
      s->slot_req[i] = NULL;
      s->slot_gen[i] = 0;
      s->slot_gone[i] = 0;
      s->slot_next[i] = i + 1 < n ? i + 1 : NO_SLOT;
    }
    s->free_head = s->nslots;
    s->free_tail = n - 1;
    s->nslots = n;
  }
  return s->free_head;
}

static lua_Integer slot_id(server *s, uint32_t i, uint32_t gen) {
  return (lua_Integer)(((uint64_t)gen << SLOT_BITS) | i);
}

static uint32_t next_gen(uint32_t g) {
  g = (g + 1) & GEN_MASK;
  return g ? g : 1;
}

/* Take the slot slot_peek returned. */
static void slot_take(server *s, request *r) {
  uint32_t i = s->free_head;
  s->free_head = s->slot_next[i];
  if (s->free_head == NO_SLOT) s->free_tail = NO_SLOT;
  s->slot_gen[i] = next_gen(s->slot_gen[i]);
  s->slot_gone[i] = 0;
  s->slot_req[i] = r;
  r->slot = i;
}

/* Release a slot to the tail of the free list (FIFO, so an id stays "gone"
 * rather than "unknown" for as long as possible). */
void srv_slot_release(server *s, request *r, int gone) {
  uint32_t i = r->slot;
  if (i == NO_SLOT) return;
  s->slot_req[i] = NULL;
  s->slot_gone[i] = (unsigned char)gone;
  s->slot_next[i] = NO_SLOT;
  if (s->free_tail == NO_SLOT) s->free_head = i;
  else s->slot_next[s->free_tail] = i;
  s->free_tail = i;
  r->slot = NO_SLOT;
}

/* The handler is done with a pending request (answered, dropped or
 * upgraded): its id is released and MHD resumes the connection. */
void srv_settle(server *s, request *r, int state) {
  r->state = state;
  srv_slot_release(s, r, 0);
  s->pending--;
  srv_unpark(r);
}

const char *srv_slot_lookup(server *s, lua_Integer id, request **out) {
  uint64_t u = (uint64_t)id;
  uint32_t i = (uint32_t)(u & SLOT_MASK);
  uint64_t gen = u >> SLOT_BITS;
  *out = NULL;
  if (id <= 0 || i >= s->nslots || gen != s->slot_gen[i]) return "unknown request";
  if (!s->slot_req[i]) return s->slot_gone[i] ? "gone" : "unknown request";
  *out = s->slot_req[i];
  return NULL;
}

/* ----------------------------------------------------------------- methods */

int srv_port(lua_State *L) {
  server *s = srv_open(L);
  if (!s) return 2;
  lua_pushinteger(L, s->port);
  return 1;
}

int srv_pending(lua_State *L) {
  server *s = srv_open(L);
  if (!s) return 2;
  lua_pushinteger(L, (lua_Integer)s->pending);
  return 1;
}

static AE_MHD_RESULT collect_header(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                                    const char *v, size_t vl) {
  server *s = cls;
  if (s->nhdrs == s->hcap) {
    size_t n = s->hcap ? s->hcap * 2 : 32;
    hdr_ref *h = realloc(s->hdrs, n * sizeof *h);
    if (!h) {
      s->hdr_oom = 1;
      return MHD_NO;
    }
    s->hdrs = h;
    s->hcap = n;
  }
  s->hdrs[s->nhdrs].k = k;
  s->hdrs[s->nhdrs].kl = kl;
  s->hdrs[s->nhdrs].v = v ? v : "";
  s->hdrs[s->nhdrs].vl = v ? vl : 0;
  s->nhdrs++;
  return MHD_YES;
}

static void push_lower(lua_State *L, const char *k, size_t kl) {
  char buf[128];
  size_t i;
  if (kl <= sizeof buf) {
    for (i = 0; i < kl; i++) {
      unsigned char ch = (unsigned char)k[i];
      buf[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    lua_pushlstring(L, buf, kl);
  } else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (i = 0; i < kl; i++) {
      unsigned char ch = (unsigned char)k[i];
      luaL_addchar(&b, (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch));
    }
    luaL_pushresult(&b);
  }
}

/* Push the Lua table for request r, which will get id `id`. */
static void push_request(lua_State *L, server *s, request *r, lua_Integer id) {
  const union MHD_ConnectionInfo *ci;
  size_t i;
  lua_createtable(L, 0, 8);
  ae_setint(L, "id", id);
  ae_setstr(L, "method", r->method ? r->method : "");
  ae_setstr(L, "path", r->path ? r->path : "");
  lua_pushlstring(L, r->query, r->qlen);
  lua_setfield(L, -2, "query");
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  lua_setfield(L, -2, "body");
  if (r->too_large) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "too_large");
  }
  ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr) {
    char buf[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                sizeof buf);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                sizeof buf);
    ae_setstr(L, "remote", buf);
  }
  s->nhdrs = 0;
  s->hdr_oom = 0;
  MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, collect_header, s);
  lua_createtable(L, 0, (int)s->nhdrs);
  for (i = 0; i < s->nhdrs; i++) {
    const hdr_ref *h = &s->hdrs[i];
    push_lower(L, h->k, h->kl);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->v, h->vl);
    } else { /* a repeated header: join the values as HTTP allows */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->v, h->vl);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
}

int srv_poll(lua_State *L) {
  server *s = srv_open(L);
  double timeout, deadline;
  lua_Integer n = 0;
  int sigs, news = 0;
  if (!s) return 2;
  timeout = luaL_optnumber(L, 2, 0);
  if (!(timeout > 0)) timeout = 0; /* also NaN */
  if (timeout > 86400.0 * 365) timeout = 86400.0 * 365;
  deadline = ae_clock_mono() + timeout;
  sigs = ae_signal_count();
  for (;;) {
    double rem = s->ready_head ? 0 : deadline - ae_clock_mono();
    int32_t ms = rem > 0 ? (int32_t)ceil(rem * 1000.0) : 0;
    ae_guard_sweep(&s->guard, ae_clock_mono());
    srv_evict_ws(s);
    if (s->ws) {
      if (!srv_wait_all(s, ms)) break;
      news = srv_pump_ws(s);
    } else if (MHD_run_wait(s->d, ms) != MHD_YES) {
      break;
    }
    if (s->ready_head || news || ms == 0 || ae_clock_mono() >= deadline) break;
    if (ae_signal_count() != sigs) break; /* let Lua see core.signal_pending() */
  }
  lua_newtable(L);
  while (s->ready_head) {
    request *r = s->ready_head;
    uint32_t i = slot_peek(s);
    if (i == NO_SLOT) break; /* out of memory: the rest stays queued */
    push_request(L, s, r, slot_id(s, i, next_gen(s->slot_gen[i])));
    lua_rawseti(L, -2, (int)++n);
    s->ready_head = r->next;
    if (!s->ready_head) s->ready_tail = NULL;
    r->next = NULL;
    r->state = RQ_PENDING;
    slot_take(s, r);
    s->pending++;
  }
  if (s->ws) news = srv_pump_ws(s);
  if (news) { /* second result: the WebSockets with news (messages, or ended) */
    wsent *e;
    lua_Integer k = 0;
    lua_newtable(L);
    for (e = s->ws; e; e = e->next) {
      if (!e->news || !e->w) continue;
      e->news = 0;
      lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
      lua_rawseti(L, -2, (int)++k);
    }
    return 2;
  }
  return 1;
}

static int is_content_length(const char *k) {
  return strcasecmp(k, "content-length") == 0;
}

/* Raise unless the table at idx maps strings to strings or numbers: checked
 * before anything is acquired, so nothing after it raises. */
int srv_check_headers(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int vt = lua_type(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
      luaL_argerror(L, idx, "header names and values must be strings");
    lua_pop(L, 1);
  }
  return 1;
}

/* Add the headers of the (checked) table at idx to resp, Content-Length
 * aside (MHD sets it from the body) -> 1, or 0 with a message pushed. */
int srv_add_headers(lua_State *L, int idx, struct MHD_Response *resp) {
  int top = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kl, vl;
    const char *k = lua_tolstring(L, -2, &kl), *v;
    char num[64];
    if (lua_type(L, -1) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, -1))
        snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, -1));
      else
#endif
        snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, -1));
      v = num;
      vl = strlen(num);
    } else {
      v = lua_tolstring(L, -1, &vl);
    }
    if (is_content_length(k)) {
      lua_pop(L, 1);
      continue;
    }
    if (kl != strlen(k) || vl != strlen(v) || kl == 0 ||
        MHD_add_response_header(resp, k, v) != MHD_YES) {
      lua_pushfstring(L, "invalid header '%s'", k);
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      return 0;
    }
    lua_pop(L, 1);
  }
  return 1;
}

int srv_respond(lua_State *L) {
  server *s = srv_open(L);
  lua_Integer id, status;
  const char *body, *err;
  size_t blen;
  request *r;
  struct MHD_Response *resp;
  int has_headers;
  if (!s) return 2;
  id = luaL_checkinteger(L, 2);
  status = luaL_checkinteger(L, 3);
  luaL_argcheck(L, status >= 100 && status <= 999, 3, "HTTP status out of range");
  has_headers = !lua_isnoneornil(L, 4);
  if (has_headers) srv_check_headers(L, 4); /* nothing below may raise */
  body = luaL_optlstring(L, 5, "", &blen);
  err = srv_slot_lookup(s, id, &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  resp = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) {
    luaL_pushfail(L);
    lua_pushliteral(L, "out of memory");
    return 2;
  }
  if (has_headers && !srv_add_headers(L, 4, resp)) {
    MHD_destroy_response(resp);
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  r->resp = resp;
  r->status = (unsigned int)status;
  srv_settle(s, r, RQ_ANSWERED);
  lua_pushboolean(L, 1);
  return 1;
}

int srv_drop(lua_State *L) {
  server *s = srv_open(L);
  const char *err;
  request *r;
  if (!s) return 2;
  err = srv_slot_lookup(s, luaL_checkinteger(L, 2), &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  srv_settle(s, r, RQ_DROPPED);
  lua_pushboolean(L, 1);
  return 1;
}
