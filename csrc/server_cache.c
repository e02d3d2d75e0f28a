/* Answers the server gives again without asking Lua: a mechanism, no policy.
 *
 * Lua decides which answer may be replayed and for whom: after answering a
 * GET it may hand the same answer to answer_put() under the request's exact
 * path and Authorization value (and a wall-clock expiry, a bearer token's).
 * When a later GET with that path, one Authorization header of exactly that
 * value, no query and no body completes, the access handler queues the kept
 * response (one MHD_Response, reference-counted by libmicrohttpd, shared by
 * every connection it is queued on) and the request never reaches Lua. Lua
 * drops entries (answer_drop by path, answer_clear) whenever what the answer
 * or the decision rests on changes; an entry past its expiry is dropped on
 * the lookup that finds it. Every replay is counted by the tag Lua gave, so
 * Lua's request counters still see every request (answer_stats).
 * Not over TLS (the server cannot tell a client's end-of-file ahead there:
 * see eof_pending). Bounded: at `limit` entries the table is emptied before the next put, and
 * answer_put says so, so Lua can forget what it tracked. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"
#include "server.h"

struct ae_answer {
  struct ae_answer *next; /* same bucket */
  uint32_t hash;          /* of the path */
  unsigned int status;
  int tag;
  double expires; /* wall clock; 0: none */
  struct MHD_Response *resp;
  size_t plen, alen;
  char key[]; /* path, NUL, Authorization value, NUL */
};

#define FIRST_BUCKETS 1024u

static uint32_t hash_path(const char *p, size_t n) { /* FNV-1a */
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 16777619u;
  }
  return h;
}

static void answer_free(ae_answer *e) {
  MHD_destroy_response(e->resp); /* connections still sending it hold their own reference */
  free(e);
}

static size_t answers_clear(ae_answers *a) {
  size_t i, n = a->n;
  for (i = 0; i < a->nb; i++) {
    ae_answer *e = a->b[i], *next;
    for (; e; e = next) {
      next = e->next;
      answer_free(e);
    }
    a->b[i] = NULL;
  }
  a->n = 0;
  return n;
}

void srv_answers_free(server *s) {
  ae_answers *a = &s->answers;
  int i;
  if (a->b) answers_clear(a);
  free(a->b);
  a->b = NULL;
  a->nb = 0;
  for (i = 0; i < a->ntags; i++) free(a->tags[i]);
  a->ntags = 0;
}

struct auth_scan {
  const char *v;
  size_t vl;
  int n;
};

static AE_MHD_RESULT scan_auth(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                               const char *v, size_t vl) {
  struct auth_scan *a = cls;
  if (kl == 13 && strncasecmp(k, "authorization", 13) == 0) {
    a->n++;
    a->v = v;
    a->vl = v ? vl : 0;
  }
  return MHD_YES;
}

/* Would a read find the client's end-of-file now? libmicrohttpd's epoll is
 * edge-triggered and it read this request without draining the socket: an
 * end-of-file that came with the request (a client that half-closed after
 * it) is seen only when something makes it look again. Lua's path does that
 * (the park and resume in server.c); an answer given here would leave the
 * connection idle until the guard's deadline. So such a request goes to Lua.
 * Also true for a reset or any other error: Lua's path handles those. */
static int eof_pending(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  char b;
  ssize_t n;
  if (!ci) return 1;
  n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* The kept answer for a complete GET of `path` on connection c (the caller
 * checked method, query and body), or NULL: none kept, expired, or not
 * exactly one Authorization header (Lua would see several joined). */
struct MHD_Response *srv_answer_lookup(server *s, struct MHD_Connection *c, const char *path,
                                       unsigned int *status) {
  ae_answers *a = &s->answers;
  size_t plen;
  uint32_t h;
  ae_answer **p, *e;
  struct auth_scan scan = {NULL, 0, 0};
  int scanned = 0;
  if (a->n == 0) return NULL;
  plen = strlen(path);
  h = hash_path(path, plen);
  for (p = &a->b[h & (a->nb - 1)]; (e = *p) != NULL; p = &e->next) {
    if (e->hash != h || e->plen != plen || memcmp(e->key, path, plen) != 0) continue;
    if (!scanned) { /* the headers are looked at only once the path has answers */
      MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_auth, &scan);
      if (scan.n != 1 || scan.vl == 0) return NULL;
      scanned = 1;
    }
    if (e->alen != scan.vl || memcmp(e->key + plen + 1, scan.v, scan.vl) != 0) continue;
    if (e->expires > 0 && ae_clock_real() >= e->expires) {
      *p = e->next;
      a->n--;
      answer_free(e);
      return NULL;
    }
    if (eof_pending(c)) return NULL;
    a->hits[e->tag]++;
    *status = e->status;
    return e->resp;
  }
  return NULL;
}

static int grow(ae_answers *a) {
  size_t nb = a->nb ? a->nb * 2 : FIRST_BUCKETS, i;
  ae_answer **b = calloc(nb, sizeof *b);
  if (!b) return -1;
  for (i = 0; i < a->nb; i++) {
    ae_answer *e = a->b[i], *next;
    for (; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  free(a->b);
  a->b = b;
  a->nb = nb;
  return 0;
}

/* The index of `tag`, added if new; -1 when ANSWER_TAGS are taken, -2 out of memory. */
static int tag_index(ae_answers *a, const char *tag) {
  int i;
  for (i = 0; i < a->ntags; i++)
    if (strcmp(a->tags[i], tag) == 0) return i;
  if (a->ntags == ANSWER_TAGS) return -1;
  a->tags[a->ntags] = strdup(tag);
  if (!a->tags[a->ntags]) return -2;
  a->hits[a->ntags] = 0;
  return a->ntags++;
}

/* Remove the entry for (path, auth), if any. */
static void remove_one(ae_answers *a, uint32_t h, const char *path, size_t plen, const char *auth,
                       size_t alen) {
  ae_answer **p, *e;
  if (!a->nb) return;
  for (p = &a->b[h & (a->nb - 1)]; (e = *p) != NULL; p = &e->next) {
    if (e->hash == h && e->plen == plen && e->alen == alen && memcmp(e->key, path, plen) == 0 &&
        memcmp(e->key + plen + 1, auth, alen) == 0) {
      *p = e->next;
      a->n--;
      answer_free(e);
      return;
    }
  }
}

static int fail(lua_State *L, const char *why) {
  luaL_pushfail(L);
  lua_pushstring(L, why);
  return 2;
}

/* server:answer_put(path, authorization, status, headers, body [, expires [, tag]])
 *   -> true, emptied | nil, err
 * Keep an answer to replay for GETs of exactly `path` with one
 * Authorization header of exactly `authorization`, until `expires`
 * (core.time() seconds; nil or 0: no expiry) or a drop. `tag` (an
 * operation's name; at most 16 distinct) counts the replays. `emptied` is
 * true when the cache was full and emptied to make room. */
int srv_answer_put(lua_State *L) {
  server *s = srv_open(L);
  ae_answers *a;
  size_t plen, alen, blen;
  const char *path, *auth, *body, *tag;
  lua_Integer status;
  lua_Number expires;
  struct MHD_Response *resp;
  ae_answer *e;
  uint32_t h;
  int t, emptied = 0;
  if (!s) return 2;
  a = &s->answers;
  path = luaL_checklstring(L, 2, &plen);
  auth = luaL_checklstring(L, 3, &alen);
  status = luaL_checkinteger(L, 4);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 2, "a path without NUL bytes expected");
  luaL_argcheck(L, alen > 0 && strlen(auth) == alen, 3, "a non-empty value without NUL expected");
  luaL_argcheck(L, status >= 100 && status <= 999, 4, "HTTP status out of range");
  if (!lua_isnoneornil(L, 5)) srv_check_headers(L, 5);
  body = luaL_optlstring(L, 6, "", &blen);
  expires = luaL_optnumber(L, 7, 0);
  luaL_argcheck(L, expires >= 0, 7, "expires must be >= 0");
  tag = luaL_optstring(L, 8, "");
  if (a->limit == 0) return fail(L, "the answer cache is off (http_server's answer_cache)");
  t = tag_index(a, tag);
  if (t == -1) return luaL_argerror(L, 8, "too many distinct tags");
  if (t < 0) return fail(L, "out of memory");
  resp = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return fail(L, "out of memory");
  if (!lua_isnoneornil(L, 5) && !srv_add_headers(L, 5, resp)) {
    MHD_destroy_response(resp);
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  h = hash_path(path, plen);
  remove_one(a, h, path, plen, auth, alen);
  if (a->n >= a->limit) {
    answers_clear(a);
    emptied = 1;
  }
  e = (a->n < a->nb || grow(a) == 0) ? malloc(sizeof *e + plen + 1 + alen + 1) : NULL;
  if (!e) {
    MHD_destroy_response(resp);
    return fail(L, "out of memory");
  }
  e->hash = h;
  e->status = (unsigned int)status;
  e->tag = t;
  e->expires = expires;
  e->resp = resp;
  e->plen = plen;
  e->alen = alen;
  memcpy(e->key, path, plen + 1);
  memcpy(e->key + plen + 1, auth, alen + 1);
  e->next = a->b[h & (a->nb - 1)];
  a->b[h & (a->nb - 1)] = e;
  a->n++;
  lua_pushboolean(L, 1);
  lua_pushboolean(L, emptied);
  return 2;
}

/* server:answer_drop(path) -> how many answers were dropped (every
 * Authorization value's). */
int srv_answer_drop(lua_State *L) {
  server *s = srv_open(L);
  ae_answers *a;
  size_t plen;
  const char *path;
  uint32_t h;
  ae_answer **p, *e;
  lua_Integer n = 0;
  if (!s) return 2;
  a = &s->answers;
  path = luaL_checklstring(L, 2, &plen);
  if (a->nb) {
    h = hash_path(path, plen);
    p = &a->b[h & (a->nb - 1)];
    while ((e = *p) != NULL) {
      if (e->hash == h && e->plen == plen && memcmp(e->key, path, plen) == 0) {
        *p = e->next;
        a->n--;
        answer_free(e);
        n++;
      } else {
        p = &e->next;
      }
    }
  }
  lua_pushinteger(L, n);
  return 1;
}

/* server:answer_clear() -> how many answers were dropped. */
int srv_answer_clear(lua_State *L) {
  server *s = srv_open(L);
  if (!s) return 2;
  lua_pushinteger(L, (lua_Integer)answers_clear(&s->answers));
  return 1;
}

/* server:answer_stats() -> { answers = kept now, limit = n, served = { [tag] = replays } } */
int srv_answer_stats(lua_State *L) {
  server *s = srv_open(L);
  ae_answers *a;
  int i;
  if (!s) return 2;
  a = &s->answers;
  lua_createtable(L, 0, 3);
  ae_setint(L, "answers", (lua_Integer)a->n);
  ae_setint(L, "limit", (lua_Integer)a->limit);
  lua_createtable(L, 0, a->ntags);
  for (i = 0; i < a->ntags; i++) {
    lua_pushinteger(L, a->hits[i]);
    lua_setfield(L, -2, a->tags[i]);
  }
  lua_setfield(L, -2, "served");
  return 1;
}
